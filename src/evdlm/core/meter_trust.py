"""Never trust one meter: cross-check every grid and circuit meter against what flows below it.

Pure. Each cycle, before the problem is built, :func:`assess` looks at each metered node's
reading next to what the chargers below that node report drawing (their OCPP meter values)
and what may feed the node from below (PV, battery), and marks a reading that cannot be true
SUSPECT, with the numbers in its reason:

* **downstream:** on some phase the meter reads less than the chargers below it draw, minus
  what generation below it can supply, minus a tolerance, for ``hold_s`` on end (the chargers'
  samples lag the meter, so a car that just stopped looks like this for one sample interval);
  on a node with no generation below, negative load is the same fault;
* **frozen:** the meter's values stay bit-identical for ``frozen_after_s`` while the chargers'
  load below it moved by ``frozen_step_a`` or more (counted from ``hold_s`` after the meter's
  last change, since the chargers' samples lag): real meters jitter, a frozen one does not;
* **physics** (from the device layer, :func:`evdlm.devices.quality.physics_doubt`): a reading
  already SUSPECT on its own.

A meter that failed stays SUSPECT until it has been consistent for ``trust_after_s``. The
problem builder treats a SUSPECT reading like a stale one (circuit: fully loaded; grid: the
fallback import limit). The assessment is state in, state out; the controller keeps the state
and records the readings as assessed, so a replay sees exactly what the decision saw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from evdlm.config.models import MeterChecks, SiteConfig
from evdlm.core.topology import GRID_NODE, Topology
from evdlm.core.types import Quality, Reading

PhaseTriple = tuple[float, float, float]

DOWNSTREAM = "downstream"
FROZEN = "frozen"
PHYSICS = "physics"


def meter_phase_a(reading: Reading, voltage_v: float) -> PhaseTriple | None:
    """Signed per-phase current of a meter (+ = towards the loads), None if it has none.

    Phase powers are preferred (they carry the direction); unsigned phase currents take the
    sign of the total power; a total alone is spread evenly over the three phases.
    """
    if reading.phase_power_w is not None and None not in reading.phase_power_w:
        p1, p2, p3 = (float(value or 0.0) / voltage_v for value in reading.phase_power_w)
        return (p1, p2, p3)
    if reading.phase_current_a is not None and None not in reading.phase_current_a:
        sign = -1.0 if (reading.power_w or 0.0) < 0 else 1.0
        a1, a2, a3 = (sign * float(value or 0.0) for value in reading.phase_current_a)
        return (a1, a2, a3)
    if reading.power_w is not None:
        per_phase = reading.power_w / (3.0 * voltage_v)
        return (per_phase, per_phase, per_phase)
    return None


def _has_phases(reading: Reading) -> bool:
    return any(values is not None and None not in values for values in (reading.phase_power_w, reading.phase_current_a))


@dataclass(frozen=True)
class NodeFlow:
    """What evdlm knows flows below one metered node this cycle, per site phase (A).

    ``chargers_a``: what the chargers surely draw (their samples, capped by their limits;
    unreported phases count 0): the lower bound a meter cannot read below;
    ``generation_a``: the most that PV and batteries below the node may feed in (inf: unknown);
    ``reported_sum_a``: the chargers' samples as reported, summed over the phases: a change in
    them is a physical change a live meter shows too (their limits may move without one).
    """

    chargers_a: PhaseTriple
    generation_a: float = 0.0
    reported_sum_a: float = 0.0


@dataclass(frozen=True)
class MeterEstimate:
    """The estimator view of one metered node: measured, the chargers' share, and the rest (A)."""

    node: str
    device: str
    measured_a: PhaseTriple
    chargers_a: PhaseTriple

    @property
    def residual_a(self) -> PhaseTriple:
        """Measured minus the chargers: building load, PV, and any error of either side."""
        m, c = self.measured_a, self.chargers_a
        return (m[0] - c[0], m[1] - c[1], m[2] - c[2])


@dataclass(frozen=True)
class DeviceTrust:
    """What the assessment remembers of one meter between cycles."""

    downstream_since_s: float | None = None  # failing the downstream check continuously since
    values: tuple[object, ...] | None = None  # the values last seen changing
    values_since_s: float = 0.0
    chargers_low_a: float = math.inf  # range of the chargers' load below since the values last changed
    chargers_high_a: float = -math.inf
    last_bad_s: float | None = None  # last cycle a check failed
    check: str = ""  # which check failed last (DOWNSTREAM, FROZEN, PHYSICS)
    reason: str = ""


@dataclass(frozen=True)
class MeterTrust:
    """The assessment's state: one :class:`DeviceTrust` per metered device."""

    devices: Mapping[str, DeviceTrust] = field(default_factory=dict)


@dataclass(frozen=True)
class TrustChange:
    """A meter's trust changed this cycle (for one log line and the metrics)."""

    device: str
    suspect: bool
    check: str
    reason: str


@dataclass(frozen=True)
class Assessment:
    readings: dict[str, Reading]  # every reading, SUSPECT where a check failed or a hold runs
    state: MeterTrust
    changes: tuple[TrustChange, ...]
    estimates: tuple[MeterEstimate, ...]

    @property
    def suspect(self) -> dict[str, str]:
        """Device → reason for every reading this assessment marked (or found) SUSPECT."""
        return {name: r.reason or "" for name, r in self.readings.items() if r.quality is Quality.SUSPECT}


def node_charger_current_a(topology: Topology, drawn_a: np.ndarray) -> dict[str, PhaseTriple]:
    """Per metered node: the chargers' currents per site phase, summed over the EVSEs below.

    ``drawn_a`` is (EVSEs, 3) in topology order, e.g. :attr:`FleetView.drawn_a` (each EVSE's
    last sample capped by its session's limit: a sample that predates a cut counts no more than
    the car may draw now) or :attr:`FleetView.measured_a`.
    """
    slots = topology.slots
    sums = np.zeros((len(slots.node_ids), 3))
    if len(drawn_a) == slots.size and slots.size:
        np.add.at(sums, slots.pair_node, drawn_a[slots.pair_evse])
    out: dict[str, PhaseTriple] = {}
    for position in slots.metered_nodes:
        a1, a2, a3 = sums[position].tolist()
        out[slots.node_ids[position]] = (a1, a2, a3)
    return out


def generation_a(
    readings: Mapping[str, Reading],
    pv_devices: tuple[str, ...],
    battery_device: str | None,
    battery_max_w: float,
    voltage_v: float,
) -> float:
    """The most PV and the battery may feed per phase now (A; inf when a PV reading is missing).

    Both are behind the grid meter and three-phase balanced (as the site simulation and
    most commercial inverters are).
    """
    total_w = 0.0
    for name in pv_devices:
        reading = readings.get(name)
        if reading is None or not reading.usable or reading.power_w is None:
            return math.inf
        total_w += max(0.0, reading.power_w)
    if battery_device is not None:
        reading = readings.get(battery_device)
        if reading is not None and reading.usable and reading.power_w is not None:
            total_w += max(0.0, reading.power_w)
        else:
            total_w += battery_max_w
    return total_w / (3.0 * voltage_v)


@dataclass(frozen=True)
class _Gap:
    what: str  # "L1".."L3" or "in total"
    meter_a: float
    chargers_a: float
    allowance_a: float

    @property
    def shortfall_a(self) -> float:
        return self.chargers_a - self.allowance_a - self.meter_a


def _downstream_gap(measured: PhaseTriple, flow: NodeFlow, phases: bool, checks: MeterChecks) -> _Gap | None:
    """The phase on which the meter reads furthest below what the chargers draw, or None."""
    if phases:
        gaps = [
            _Gap(
                f"L{k + 1}",
                measured[k],
                flow.chargers_a[k],
                flow.generation_a + max(checks.tolerance_a, checks.tolerance_fraction * flow.chargers_a[k]),
            )
            for k in range(3)
        ]
    else:  # a total spread evenly says nothing per phase: compare the sums
        chargers_a = sum(flow.chargers_a)
        allowance_a = 3.0 * (flow.generation_a + checks.tolerance_a)
        gaps = [_Gap("in total", sum(measured), chargers_a, max(allowance_a, checks.tolerance_fraction * chargers_a))]
    worst = max(gaps, key=lambda gap: gap.shortfall_a)
    return worst if worst.shortfall_a > 0 else None


def _assess_one(
    reading: Reading, flow: NodeFlow | None, before: DeviceTrust, now_s: float, checks: MeterChecks, voltage_v: float
) -> tuple[DeviceTrust, str, str, PhaseTriple | None]:
    """One meter: its next trust state, why it fails now ("" if it does not), which check, its A."""
    if reading.quality is Quality.SUSPECT:  # the device layer's physics check
        return replace(before, downstream_since_s=None), reading.reason or "physics", PHYSICS, None
    if reading.quality is not Quality.OK:
        # Stale, invalid or missing: unusable anyway; the cross-checks start afresh when it returns.
        return replace(before, downstream_since_s=None, values=None), "", "", None
    measured = meter_phase_a(reading, voltage_v)
    if measured is None or flow is None:
        return before, "", "", measured
    trust = before
    failure = check = ""
    gap = _downstream_gap(measured, flow, _has_phases(reading), checks)
    if gap is None:
        trust = replace(trust, downstream_since_s=None)
    else:
        since_s = trust.downstream_since_s if trust.downstream_since_s is not None else now_s
        trust = replace(trust, downstream_since_s=since_s)
        if now_s - since_s >= checks.hold_s:
            failure = (
                f"reads {gap.meter_a:.1f} A {gap.what} but the chargers below it draw {gap.chargers_a:.1f} A "
                f"(allowance {gap.allowance_a:.1f} A) for {now_s - since_s:.0f} s"
            )
            check = DOWNSTREAM
    chargers_sum_a = flow.reported_sum_a
    values = (reading.power_w, reading.phase_power_w, reading.phase_current_a)
    if values != trust.values:
        return (
            replace(
                trust,
                values=values,
                values_since_s=now_s,
                chargers_low_a=chargers_sum_a,
                chargers_high_a=chargers_sum_a,
            ),
            failure,
            check,
            measured,
        )
    if now_s - trust.values_since_s < checks.hold_s:
        # The chargers' samples lag the meter by up to a sample interval: a move they report
        # this soon after the meter's last change may be the change the meter already showed.
        low = high = chargers_sum_a
    else:
        low, high = min(trust.chargers_low_a, chargers_sum_a), max(trust.chargers_high_a, chargers_sum_a)
    trust = replace(trust, chargers_low_a=low, chargers_high_a=high)
    unchanged_s = now_s - trust.values_since_s
    if not failure and unchanged_s >= checks.frozen_after_s and high - low >= checks.frozen_step_a:
        failure = (
            f"frozen: values unchanged for {unchanged_s:.0f} s while the chargers below it "
            f"moved between {low:.1f} and {high:.1f} A"
        )
        check = FROZEN
    return trust, failure, check, measured


def assess(
    state: MeterTrust,
    readings: dict[str, Reading],
    meters: Mapping[str, str],
    flows: Mapping[str, NodeFlow],
    now_s: float,
    checks: MeterChecks,
    voltage_v: float,
) -> Assessment:
    """Cross-check the metered nodes' readings (pure).

    Parameters
    ----------
    state : MeterTrust
        The previous cycle's state (``MeterTrust()`` at start).
    readings : dict of str to Reading
        The snapshot, aged.
    meters : Mapping of str to str
        Metered node id → its meter's device name.
    flows : Mapping of str to NodeFlow
        Metered node id → what flows below it (missing: not known this cycle, downstream and
        frozen checks skipped).
    now_s : float
        This cycle's time, s.
    checks : MeterChecks
        Tolerances and times.
    voltage_v : float
        Nominal phase voltage, V.
    """
    out = dict(readings)
    devices = dict(state.devices)
    changes: list[TrustChange] = []
    estimates: list[MeterEstimate] = []
    for node, device in meters.items():
        reading = readings.get(device)
        if reading is None:
            continue
        before = devices.get(device, DeviceTrust())
        flow = flows.get(node)
        if not checks.enabled:
            if reading.quality is Quality.SUSPECT:  # physics alone: a scale factor is wrong regardless
                out[device] = reading
            devices[device] = DeviceTrust()
            continue
        trust, failure, check, measured = _assess_one(reading, flow, before, now_s, checks, voltage_v)
        if measured is not None and flow is not None:
            estimates.append(MeterEstimate(node, device, measured, flow.chargers_a))
        was_suspect = before.last_bad_s is not None
        if failure:
            trust = replace(trust, last_bad_s=now_s, check=check, reason=failure)
            if not was_suspect or before.check != check:
                changes.append(TrustChange(device, True, check, failure))
            out[device] = replace(reading, quality=Quality.SUSPECT, reason=failure)
        elif was_suspect and before.last_bad_s is not None:
            consistent_s = now_s - before.last_bad_s
            if consistent_s >= checks.trust_after_s:
                trust = replace(trust, last_bad_s=None, check="", reason="")
                changes.append(TrustChange(device, False, before.check, f"consistent for {consistent_s:.0f} s"))
            elif reading.quality is Quality.OK:
                out[device] = replace(
                    reading,
                    quality=Quality.SUSPECT,
                    reason=f"{before.reason}; consistent again for {consistent_s:.0f} of {checks.trust_after_s:g} s",
                )
        devices[device] = trust
    return Assessment(out, MeterTrust(devices), tuple(changes), tuple(estimates))


def checks_for(config: SiteConfig) -> MeterChecks:
    """The config's meter checks, the hold time raised to two sample intervals of the chargers.

    A charger reports its draw once per ``meter_sample_interval_s``: a car that stops right after
    a sample still counts below the meter until the next one, and one coming down over a few
    seconds until the one after, so a shorter hold would mistake every stopping car for a lying
    meter.
    """
    checks = config.control.meter_checks
    hold_s = max(checks.hold_s, 2.0 * config.ocpp.meter_sample_interval_s)
    return checks if hold_s == checks.hold_s else checks.model_copy(update={"hold_s": hold_s})


def metered_nodes(topology: Topology) -> dict[str, str]:
    """Metered node id → meter device name, the grid connection first."""
    return {node.id: node.meter for node in topology.nodes.values() if node.meter is not None}


def flows_for(
    topology: Topology,
    chargers: tuple[np.ndarray, np.ndarray] | None,
    readings: Mapping[str, Reading],
    pv_devices: tuple[str, ...],
    battery_device: str | None,
    battery_max_w: float,
) -> dict[str, NodeFlow]:
    """What flows below each metered node (empty when the chargers are not known yet).

    ``chargers`` is (:attr:`FleetView.drawn_a`, :attr:`FleetView.measured_a`) of a decision.
    """
    if chargers is None:
        return {}
    drawn_a, measured_a = chargers
    drawn = node_charger_current_a(topology, drawn_a)
    reported = node_charger_current_a(topology, measured_a)
    grid_generation_a = generation_a(readings, pv_devices, battery_device, battery_max_w, topology.nominal_voltage_v)
    return {
        node: NodeFlow(value, grid_generation_a if node == GRID_NODE else 0.0, sum(reported[node]))
        for node, value in drawn.items()
    }
