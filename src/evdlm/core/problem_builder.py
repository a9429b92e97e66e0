"""Build one cycle's :class:`~evdlm_solvers.problem.Problem` from a snapshot (pure).

Closed loop: the measured grid and circuit meters are the truth. A row's headroom is its limit
minus the safety margin minus the load the controller does not command this cycle:

* metered node, fresh reading: measured load minus the measured draw of the EVSEs in the
  problem (what remains is building load, PV, chargers outside the problem), plus what the
  chargers outside the problem may still draw above their measured value;
* metered circuit, stale or invalid reading: counted as fully loaded (headroom 0);
* node without a meter: only the chargers outside the problem, at what they may draw.

Chargers outside the problem are *held* (told to come down, meter not yet showing it: counted
at their old limit until it does, for at most the settle time), *uncontrolled* (refuse profiles
or do not follow them: counted at their maximum) or *offline* with a session (counted at the
higher of their last limit and the fail-safe limit). A stale grid meter puts the import row on
the configured fallback limit. Demand-response caps lower the import and export limits.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from evdlm_solvers.problem import UNIT_CURRENT_A, UNIT_POWER_W, Problem

from evdlm.config.models import Battery, Control
from evdlm.core.memory import ControlMemory, EvseMemory
from evdlm.core.topology import GRID_NODE, EvseSlot, RowKind, Topology
from evdlm.core.types import EvseState, Reading

# Above its limit by more than this, a charger has not come down yet (meter noise, rounding).
FOLLOW_TOLERANCE_A = 1.0
# A 3-phase charger whose car draws on L1 only: L1 above DRAWING, L2 and L3 below IDLE.
PHASE_IDLE_A = 0.5
PHASE_DRAWING_A = 2.0
# A car drawing this much below its limit for a settle time is capped near what it draws,
# so the unused current goes to other cars; the cap creeps up by the same step.
DEMAND_SLACK_A = 2.0
URGENCY_MIN, URGENCY_MAX = 0.1, 10.0
# A paused car starts only when it fits this much above its minimum, so the lag of the next
# charger sample behind the meters (the car ramping up) cannot push it straight back out.
ADMISSION_HYSTERESIS_A = 2.0

PhaseTriple = tuple[float, float, float]


class EvseMode(StrEnum):
    IDLE = "idle"  # no session: commanded 0
    OFFLINE = "offline"  # charger not connected: nothing can be sent
    ACTIVE = "active"  # a column of the problem
    HELD = "held"  # settling after a cut: keeps its limit, counted at its old one
    UNCONTROLLED = "uncontrolled"  # refuses profiles or does not follow: counted at its maximum


@dataclass(frozen=True)
class DemandLimits:
    """Caps in force from demand response, W (None = no cap)."""

    import_limit_w: float | None = None
    export_limit_w: float | None = None


@dataclass(frozen=True)
class EvseView:
    """One EVSE this cycle: its mode, what it draws and what it may draw, per site phase (A)."""

    mode: EvseMode
    reason: str
    phases_used: int
    measured_a: PhaseTriple
    assumed_a: PhaseTriple
    measured_power_w: float


@dataclass(frozen=True)
class BuildInputs:
    """Everything a cycle's problem depends on (the snapshot plus memory)."""

    now_s: float
    readings: dict[str, Reading]  # already aged by each device's max age
    evse_states: dict[tuple[str, int], EvseState]
    memory: ControlMemory
    demand: DemandLimits
    battery_reading: Reading | None = None


@dataclass(frozen=True)
class BuiltProblem:
    problem: Problem
    columns: tuple[int, ...]  # topology EVSE index of each problem column
    views: tuple[EvseView, ...]  # one per topology EVSE
    row_limit: tuple[float, ...]  # effective limit per row after DR and fallback, row unit
    row_uncontrolled: tuple[float, ...]  # load the controller does not command, row unit
    grid_fallback: bool  # the grid meter is stale: the fallback import limit is in force
    stale_devices: tuple[str, ...]
    overloaded_nodes: frozenset[str]  # nodes whose measured load is above their limit right now
    notes: tuple[str, ...]
    demand_caps: dict[int, float]  # topology EVSE index -> cap (A) for cars that take less than offered


@dataclass(frozen=True)
class SiteSettings:
    """The slice of the config the builder needs, resolved once per config."""

    control: Control
    battery: Battery | None
    fallback_import_limit_w: float
    failsafe_current_a: float


def setpoint_per_phase_a(slot: EvseSlot, setpoint: float, voltage_v: float) -> float:
    """A setpoint in its own unit as A per phase (DC W spread evenly over three phases)."""
    return setpoint / (3.0 * voltage_v) if slot.is_dc else setpoint


def max_setpoint(slot: EvseSlot) -> float:
    charger = slot.charger
    if slot.is_dc:
        assert charger.max_power_kw is not None  # validated in the config
        return charger.max_power_kw * 1000.0
    return charger.max_current_a


def min_setpoint(slot: EvseSlot) -> float:
    return slot.charger.min_power_kw * 1000.0 if slot.is_dc else slot.charger.min_current_a


def learn_phases(slot: EvseSlot, state: EvseState | None, memory: EvseMemory) -> int:
    """Phases the car uses: 1 on 1-phase chargers; learned from currents; else the worst case 3."""
    if slot.wired_phase_count == 1:
        return 1
    if slot.is_dc:
        return 3
    if memory.phases_used is not None and state is not None and memory.transaction_id == state.transaction_id:
        return memory.phases_used
    if state is not None and state.phase_current_a is not None and None not in state.phase_current_a:
        # Only phases actually reported count: a sample with L1 alone (some chargers before
        # their sampled data is configured) says nothing about L2 and L3.
        l1, l2, l3 = (float(value or 0.0) for value in state.phase_current_a)
        if l1 >= PHASE_DRAWING_A and l2 < PHASE_IDLE_A and l3 < PHASE_IDLE_A:
            return 1
    return 3


def _spread(slot: EvseSlot, per_phase_a: float, phases_used: int) -> PhaseTriple:
    out = [0.0, 0.0, 0.0]
    for charger_phase in range(phases_used):
        out[slot.site_phases[charger_phase] - 1] += per_phase_a
    return (out[0], out[1], out[2])


def _measured(slot: EvseSlot, state: EvseState | None, voltage_v: float) -> PhaseTriple:
    """Measured current per site phase; 0 where the charger reports none.

    Never a guess: the problem builder subtracts this from meter readings, so overstating it
    would overstate headroom. What the meter carries unexplained stays counted as other load.
    """
    if state is not None and state.phase_current_a is None and slot.is_dc and state.power_w is not None:
        return _spread(slot, max(0.0, state.power_w) / (3.0 * voltage_v), 3)
    if state is None or state.phase_current_a is None:
        return (0.0, 0.0, 0.0)
    out = [0.0, 0.0, 0.0]
    for charger_phase, value in enumerate(state.phase_current_a):
        if value is not None and charger_phase < slot.wired_phase_count:
            out[slot.site_phases[charger_phase] - 1] += max(0.0, value)
    return (out[0], out[1], out[2])


def view_evse(
    slot: EvseSlot,
    state: EvseState | None,
    memory: EvseMemory,
    inputs_now_s: float,
    settings: SiteSettings,
    voltage_v: float,
) -> EvseView:
    phases_used = learn_phases(slot, state, memory)
    previous_a = setpoint_per_phase_a(slot, memory.setpoint, voltage_v)
    measured = _measured(slot, state, voltage_v)
    if state is not None and state.power_w is not None:
        measured_power_w = max(0.0, state.power_w)
    else:
        measured_power_w = sum(measured) * voltage_v

    def view(mode: EvseMode, reason: str, assumed_per_phase_a: float | None = None) -> EvseView:
        assumed = measured
        if assumed_per_phase_a is not None:
            floor = _spread(slot, assumed_per_phase_a, phases_used if mode is EvseMode.HELD else slot.wired_phase_count)
            assumed = (max(measured[0], floor[0]), max(measured[1], floor[1]), max(measured[2], floor[2]))
        return EvseView(mode, reason, phases_used, measured, assumed, measured_power_w)

    if state is None or not state.online:
        if memory.setpoint > 0 or (state is not None and state.charging):
            # Keeps its last lease until it expires, then the fail-safe profile.
            return view(EvseMode.OFFLINE, "offline with a session", max(previous_a, settings.failsafe_current_a))
        return view(EvseMode.OFFLINE, "offline")
    if not state.charging:
        return view(EvseMode.IDLE, "connected, not charging" if state.connected else "no session")
    if not state.controllable:
        return view(
            EvseMode.UNCONTROLLED,
            "refuses charging profiles",
            setpoint_per_phase_a(slot, max_setpoint(slot), voltage_v),
        )
    if not state.compliant:
        return view(
            EvseMode.UNCONTROLLED,
            "does not follow its limit",
            setpoint_per_phase_a(slot, max_setpoint(slot), voltage_v),
        )
    if memory.cut_from is not None and memory.cut_at_s is not None:
        settling = inputs_now_s - memory.cut_at_s < settings.control.settle_time_s
        if settling and max(measured) > previous_a + FOLLOW_TOLERANCE_A:
            # Since the cut its draw can only fall: a sample taken after the cut bounds it. An
            # older sample bounds nothing, so it counts at the old limit until one arrives.
            sampled_after_cut = state.updated_at_s > memory.cut_at_s
            bound_a = max(measured) if sampled_after_cut else setpoint_per_phase_a(slot, memory.cut_from, voltage_v)
            return view(EvseMode.HELD, f"settling after a cut from {memory.cut_from:g}", max(bound_a, previous_a))
    # Past its settle time, sampled after it, and still above its limit: it does not follow,
    # whatever the OCPP link has concluded yet (its grace period is longer than a settle time).
    changed_at_s = memory.changed_at_s
    settled_sample = changed_at_s is not None and state.updated_at_s - changed_at_s >= settings.control.settle_time_s
    if settled_sample and max(measured) > previous_a + FOLLOW_TOLERANCE_A:
        return view(
            EvseMode.UNCONTROLLED, "draws above its limit", setpoint_per_phase_a(slot, max_setpoint(slot), voltage_v)
        )
    return view(EvseMode.ACTIVE, "charging")


def _demand_cap(
    slot: EvseSlot,
    state: EvseState,
    memory: EvseMemory,
    now_s: float,
    settle_time_s: float,
    drawn_a: float,
    previous_a: float,
    lowest: float,
) -> float | None:
    """The most a car will take, when it takes clearly less than it is offered (full, tapering,
    or limited by its own charger): offering more only strands headroom other cars could use.

    Set from a steady sample (a settle time after the last change), remembered across cycles, and
    lifted once the car draws what the cap allows (it may want more again).
    """
    if slot.is_dc or state.phase_current_a is None:
        return None
    cap = memory.demand_cap_a if memory.transaction_id == state.transaction_id else None
    if cap is not None and drawn_a >= cap - FOLLOW_TOLERANCE_A:
        cap = None
    steady = memory.changed_at_s is not None and now_s - memory.changed_at_s >= settle_time_s
    if cap is None and steady and drawn_a + DEMAND_SLACK_A < previous_a:
        cap = float(math.floor(drawn_a + DEMAND_SLACK_A))
    return None if cap is None else max(lowest, cap)


def _urgency(slot: EvseSlot, state: EvseState, now_s: float, max_power_w: float) -> float:
    """Energy still needed over time left, relative to the EVSE's maximum power (1 = unknown)."""
    if state.energy_needed_wh is None or state.departure_at_s is None or max_power_w <= 0:
        return 1.0
    hours_left = (state.departure_at_s - now_s) / 3600.0
    if hours_left <= 0:
        return URGENCY_MAX
    needed_w = max(0.0, state.energy_needed_wh) / hours_left
    return float(min(URGENCY_MAX, max(URGENCY_MIN, needed_w / max_power_w)))


class _NodeSums:
    """Per node and site phase: the draw of EVSEs in the problem, and of those outside it."""

    def __init__(self) -> None:
        self.active_a: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        self.outside_a: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        self.outside_extra_a: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        self.active_w: dict[str, float] = defaultdict(float)
        self.outside_w: dict[str, float] = defaultdict(float)
        self.outside_extra_w: dict[str, float] = defaultdict(float)

    def add(self, path: tuple[str, ...], view: EvseView, voltage_v: float) -> None:
        if view.measured_power_w == 0.0 and not any(view.measured_a) and not any(view.assumed_a):
            return  # an idle EVSE adds nothing anywhere (most of a site, most of the time)
        for node in path:
            if view.mode is EvseMode.ACTIVE:
                for phase in range(3):
                    self.active_a[node][phase] += view.measured_a[phase]
                self.active_w[node] += view.measured_power_w
            else:
                extra_w = 0.0
                for phase in range(3):
                    self.outside_a[node][phase] += view.assumed_a[phase]
                    extra = max(0.0, view.assumed_a[phase] - view.measured_a[phase])
                    self.outside_extra_a[node][phase] += extra
                    extra_w += extra * voltage_v
                self.outside_w[node] += view.measured_power_w + extra_w
                self.outside_extra_w[node] += extra_w


def _meter_phase_a(reading: Reading, voltage_v: float) -> PhaseTriple | None:
    """Signed per-phase current of a meter (+ = towards the loads), None if it has none."""
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


def build_problem(topology: Topology, settings: SiteSettings, inputs: BuildInputs) -> BuiltProblem:
    """The allocation problem of this cycle, with the bookkeeping to plan commands from it."""
    control = settings.control
    voltage_v = topology.nominal_voltage_v
    now_s = inputs.now_s
    notes: list[str] = []
    stale: set[str] = set()

    views: list[EvseView] = []
    sums = _NodeSums()
    for slot in topology.evses:
        view = view_evse(
            slot, inputs.evse_states.get(slot.key), inputs.memory.evse(slot.key), now_s, settings, voltage_v
        )
        views.append(view)
        sums.add(topology.nodes[slot.node].path, view, voltage_v)

    def usable(meter: str | None) -> Reading | None:
        if meter is None:
            return None
        reading = inputs.readings.get(meter)
        if reading is None or not reading.usable:
            stale.add(meter)
            return None
        return reading

    n_rows = len(topology.rows)
    limit = np.array([row.limit for row in topology.rows], dtype=np.float64)
    uncontrolled = np.zeros(n_rows)
    fully_loaded = np.zeros(n_rows, dtype=np.bool_)
    margin = np.array(
        [
            control.safety_margin_a if row.kind is RowKind.PHASE_CURRENT else control.safety_margin_kw * 1000.0
            for row in topology.rows
        ]
    )

    overloaded: set[str] = set()
    # Current and node power rows.
    for node in topology.nodes.values():
        reading = usable(node.meter)
        meter_broken = node.meter is not None and reading is None
        phase_a = _meter_phase_a(reading, voltage_v) if reading is not None else None
        if reading is not None and phase_a is None:
            meter_broken = True
            stale.add(node.meter or "")
            notes.append(f"meter {node.meter} of {node.id} gives no phase values")
        for (row_node, phase), index in topology.current_row.items():
            if row_node != node.id:
                continue
            if phase_a is not None:
                value = (
                    phase_a[phase - 1] - sums.active_a[node.id][phase - 1] + sums.outside_extra_a[node.id][phase - 1]
                )
                # PV behind the grid meter legitimately makes it negative; on a circuit it is noise.
                uncontrolled[index] = value if node.id == GRID_NODE else max(0.0, value)
            elif meter_broken and node.id != GRID_NODE:
                fully_loaded[index] = True
            else:
                uncontrolled[index] = sums.outside_a[node.id][phase - 1]
        if node.id in topology.power_row:
            index = topology.power_row[node.id]
            if reading is not None and reading.power_w is not None:
                uncontrolled[index] = max(0.0, reading.power_w - sums.active_w[node.id] + sums.outside_extra_w[node.id])
            elif meter_broken:
                fully_loaded[index] = True
            else:
                uncontrolled[index] = sums.outside_w[node.id]
        if meter_broken and node.id != GRID_NODE:
            notes.append(f"circuit {node.id}: meter {node.meter} not usable, counted as fully loaded")
        drawn_a = (
            phase_a
            if phase_a is not None
            else [sums.active_a[node.id][p] + sums.outside_a[node.id][p] for p in range(3)]
        )
        if max(drawn_a) > node.phase_current_limit_a:
            overloaded.add(node.id)

    # Grid connection power rows.
    grid_reading = usable(topology.nodes[GRID_NODE].meter)
    grid_fallback = topology.nodes[GRID_NODE].meter is not None and (
        grid_reading is None or grid_reading.power_w is None
    )
    battery_reading = (
        inputs.battery_reading if inputs.battery_reading is not None and inputs.battery_reading.usable else None
    )
    import_limit = limit[topology.import_row]
    if inputs.demand.import_limit_w is not None:
        import_limit = min(import_limit, inputs.demand.import_limit_w)
    export_limit = limit[topology.export_row]
    if inputs.demand.export_limit_w is not None:
        export_limit = min(export_limit, inputs.demand.export_limit_w)
    if grid_reading is not None and grid_reading.power_w is not None:
        battery_w = (
            battery_reading.power_w
            if battery_reading is not None and battery_reading.power_w is not None
            else max(0.0, inputs.memory.battery_w)
        )
        base_net_w = grid_reading.power_w - sums.active_w[GRID_NODE] + battery_w
        uncontrolled[topology.import_row] = base_net_w + sums.outside_extra_w[GRID_NODE]
        uncontrolled[topology.export_row] = -base_net_w
    else:
        if grid_fallback:
            import_limit = min(import_limit, settings.fallback_import_limit_w)
            notes.append(f"grid meter not usable: fallback import limit {import_limit / 1000:g} kW")
        uncontrolled[topology.import_row] = sums.outside_w[GRID_NODE]
    limit[topology.import_row] = import_limit
    limit[topology.export_row] = export_limit

    headroom = np.where(fully_loaded, 0.0, limit - margin - uncontrolled)
    if headroom[topology.export_row] < 0:
        # Only PV curtailment could fix this; EV load can only help, so never block it.
        notes.append(
            f"export above its limit by {-headroom[topology.export_row] / 1000:.1f} kW (PV curtailment is not evdlm's)"
        )
        headroom[topology.export_row] = 0.0
    uncontrolled = np.where(fully_loaded, limit, uncontrolled)

    problem, columns, demand_caps = _columns(
        topology, settings, inputs, views, headroom, battery_reading, grid_fallback
    )
    return BuiltProblem(
        problem=problem,
        columns=columns,
        views=tuple(views),
        row_limit=tuple(float(value) for value in limit),
        row_uncontrolled=tuple(float(value) for value in uncontrolled),
        grid_fallback=grid_fallback,
        stale_devices=tuple(sorted(stale)),
        overloaded_nodes=frozenset(overloaded),
        notes=tuple(notes),
        demand_caps=demand_caps,
    )


def _columns(
    topology: Topology,
    settings: SiteSettings,
    inputs: BuildInputs,
    views: list[EvseView],
    headroom: np.ndarray,
    battery_reading: Reading | None,
    grid_fallback: bool,
) -> tuple[Problem, tuple[int, ...], dict[int, float]]:
    control = settings.control
    voltage_v = topology.nominal_voltage_v
    now_s = inputs.now_s
    columns = [index for index, view in enumerate(views) if view.mode is EvseMode.ACTIVE]
    n = len(columns)
    indptr = [0]
    coef_row: list[int] = []
    coef_value: list[float] = []
    arrays = {
        name: np.zeros(n) for name in ("unit_w", "min", "max", "previous", "ramp", "urgency", "waiting", "on_time")
    }
    evse_unit = np.zeros(n, dtype=np.int8)
    charging = np.zeros(n, dtype=np.bool_)
    priority = np.zeros(n, dtype=np.int64)
    demand_caps: dict[int, float] = {}

    for column, index in enumerate(columns):
        slot = topology.evses[index]
        view = views[index]
        state = inputs.evse_states[slot.key]
        memory = inputs.memory.evse(slot.key)
        path = topology.nodes[slot.node].path
        coefs: dict[int, float] = defaultdict(float)
        if slot.is_dc:
            evse_unit[column] = UNIT_POWER_W
            per_phase, power_per_unit = 1.0 / (3.0 * voltage_v), 1.0
            used_phases: tuple[int, ...] = (1, 2, 3)
        else:
            evse_unit[column] = UNIT_CURRENT_A
            per_phase, power_per_unit = 1.0, voltage_v * view.phases_used
            used_phases = slot.site_phases[: view.phases_used]
        for node in path:
            for phase in used_phases:
                row = topology.current_row.get((node, phase))
                if row is not None:
                    coefs[row] += per_phase
            if node in topology.power_row:
                coefs[topology.power_row[node]] += power_per_unit
        coefs[topology.import_row] += power_per_unit
        coefs[topology.export_row] -= power_per_unit
        for row in sorted(coefs):
            coef_row.append(row)
            coef_value.append(coefs[row])
        indptr.append(len(coef_row))

        lowest, highest = min_setpoint(slot), max_setpoint(slot)
        if not slot.is_dc and state.ev_max_current_a is not None:
            highest = min(highest, state.ev_max_current_a)
        drawn_a = max(view.measured_a)
        previous_a = setpoint_per_phase_a(slot, memory.setpoint, voltage_v)
        cap = _demand_cap(slot, state, memory, now_s, control.settle_time_s, drawn_a, previous_a, lowest)
        if cap is not None:
            demand_caps[index] = cap
            highest = min(highest, cap)
        if (
            memory.setpoint == 0
            and memory.paused_at_s is not None
            and now_s - memory.paused_at_s < control.min_off_time_s
        ):
            highest = 0.0  # below the minimum: the solvers can only keep it paused
        elif memory.setpoint == 0 and not slot.is_dc and highest >= lowest + ADMISSION_HYSTERESIS_A:
            lowest += ADMISSION_HYSTERESIS_A
        ramp = control.ramp_up_a_per_s * control.cycle_period_s
        arrays["unit_w"][column] = power_per_unit
        arrays["min"][column] = lowest
        arrays["max"][column] = highest
        arrays["previous"][column] = memory.setpoint
        arrays["ramp"][column] = ramp * 3.0 * voltage_v if slot.is_dc else ramp
        arrays["urgency"][column] = _urgency(slot, state, now_s, highest * power_per_unit)
        arrays["waiting"][column] = now_s - memory.wanting_since_s if memory.wanting_since_s is not None else 0.0
        arrays["on_time"][column] = now_s - memory.admitted_since_s if memory.admitted_since_s is not None else 0.0
        charging[column] = memory.setpoint > 0
        priority[column] = slot.charger.priority

    discharge_max_w = charge_max_w = 0.0
    battery = settings.battery
    battery_rows, battery_coefs = [topology.import_row, topology.export_row], [-1.0, 1.0]
    if battery is not None and battery_reading is not None and battery_reading.soc_pct is not None:
        soc = battery_reading.soc_pct
        discharge_max_w = battery.max_discharge_kw * 1000.0 if soc > battery.reserve_soc_pct else 0.0
        charge_max_w = battery.max_charge_kw * 1000.0 if soc < battery.soc_max_pct else 0.0
        if grid_fallback:
            # Blind at the connection, nothing shows the battery's effect there: it earns the cars
            # no import headroom, and may only keep what it discharges now (held while the cars it
            # covered come down, then wound down); no charging from a grid we cannot see.
            discharge_max_w = min(discharge_max_w, max(0.0, battery_reading.power_w or 0.0))
            charge_max_w = 0.0
            battery_rows, battery_coefs = [topology.export_row], [1.0]

    problem = Problem(
        row_headroom=headroom,
        row_unit=np.array(
            [UNIT_CURRENT_A if row.kind is RowKind.PHASE_CURRENT else UNIT_POWER_W for row in topology.rows],
            dtype=np.int8,
        ),
        row_parent=np.array([row.parent for row in topology.rows], dtype=np.int64),
        coef_indptr=np.array(indptr, dtype=np.int64),
        coef_row=np.array(coef_row, dtype=np.int64),
        coef_value=np.array(coef_value, dtype=np.float64),
        evse_unit=evse_unit,
        power_per_unit_w=arrays["unit_w"],
        setpoint_min=arrays["min"],
        setpoint_max=arrays["max"],
        setpoint_previous=arrays["previous"],
        ramp_up_max=arrays["ramp"],
        charging=charging,
        priority=priority,
        urgency=arrays["urgency"],
        waiting_s=arrays["waiting"],
        on_time_s=arrays["on_time"],
        rotation_period_s=control.rotation_period_s,
        min_on_time_s=control.min_on_time_s,
        battery_discharge_max_w=discharge_max_w,
        battery_charge_max_w=charge_max_w,
        battery_coef_row=np.array(battery_rows, dtype=np.int64),
        battery_coef_value=np.array(battery_coefs),
    )
    return problem, tuple(columns), demand_caps
