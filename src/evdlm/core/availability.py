"""Per-port availability: what each EVSE was, second by second, and its uptime % (pure, no I/O).

US NEVI (23 CFR 680.116(b)) asks for more than 97 % uptime per charging port, computed monthly
over the trailing 12 months, with outage durations and causes; a port is *up* only when "its
hardware and software are both online and available for use, or in use, and the charging port
successfully dispenses electricity in accordance with requirements for minimum power level".
Load management that holds a port below that minimum must therefore show as its own cause.

Classes, one per EVSE per cycle (:func:`classify`), first match wins:

1. ``excluded``: a configured exclusion window (maintenance, utility outage, ...) covers the
   port, or the grid meter shows the grid gone. NEVI lets these causes be excluded whatever else
   the port did meanwhile (a utility outage also takes the chargers offline), so it comes first.
2. ``offline``: the charge point's websocket is not connected (or evdlm itself was down:
   cause ``controller down``). Nothing it reported before still holds, so a fault it had is no
   evidence any more.
3. ``fault``: connected and reporting itself unable to charge (StatusNotification Faulted or
   Unavailable; cause: the error code, ``:vendorErrorCode`` appended when given). A faulted port
   delivers nothing whatever its limit.
4. ``dr_curtailed``: working, with a car that wants power, held below its floor, and the grid
   connection's import row, lowered by a demand-response limit, is what has no room for the
   floor: an external cause the operator may want to report apart (or exclude, config).
5. ``below_floor``: the same without DR being the binding cap: the controller held the port
   below its configured ``min_power_floor_kw`` because of the site's own limits.
6. ``up``: everything else. A port with no floor configured is up whenever it is online and not
   faulted; with a floor, a port without a session is up too (available for the next car), as is
   one held below its floor by its own bounds (charger or cable maximum, the car's maximum, a car
   taking less than offered, a session paused by the driver, the operator CSMS's limit in Local
   Controller mode): those are not the controller's doing.

Uptime (:func:`uptime_pct`), per NEVI's equation ``μ = (T − (T_outage − T_excluded)) / T × 100``:
``(up + excluded) / total``, where ``total`` is the time the ledger covers in the period (every
second from the port's first observation on, gaps while evdlm was down included as ``offline``).
Excluded time counts as up, exactly as NEVI adds excluded outage minutes back; classes named in
``excluded_classes`` (e.g. ``dr_curtailed`` where a utility's DR is an excluded cause) count
like ``excluded``. Each class's own seconds stay visible in the ledger either way.

Ledger (:class:`AvailabilityLedger`): sample and hold. An observation at ``t`` classifies the
time from ``t`` to the port's next observation, but never more than ``max_hold_s``: a longer gap
(evdlm stopped, crashed, or its cycle stuck) is ``offline`` with cause ``controller down`` —
the honest answer, since nothing watched the port then. Seconds are kept per EVSE, per class
(and per class and cause) and per UTC month, split exactly at month boundaries; outage intervals
(start, end, class, cause) are kept per port, the newest ``max_outages`` of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np

from evdlm.core.decide import Decision
from evdlm.core.problem_builder import MODES, EvseMode
from evdlm.core.topology import Topology
from evdlm.core.types import EvseKey, EvseState, Reading


class Availability(StrEnum):
    UP = "up"
    FAULT = "fault"
    OFFLINE = "offline"
    BELOW_FLOOR = "below_floor"
    DR_CURTAILED = "dr_curtailed"
    EXCLUDED = "excluded"


CLASSES: tuple[Availability, ...] = tuple(Availability)
CONTROLLER_DOWN = "controller down"
NO_CONNECTION = "no connection"
SITE_LIMIT = "site limit"
DR_LIMIT = "dr import limit"
GRID_OUTAGE = "grid outage"
# A grid meter whose every phase voltage is below this share of nominal: the grid is gone.
GRID_OUTAGE_VOLTAGE_SHARE = 0.5
# Below its floor by less than this, a port is at its floor (float noise of the unit conversions).
FLOOR_TOLERANCE_W = 1.0
DEFAULT_MAX_HOLD_S = 120.0
DEFAULT_MAX_OUTAGES = 100
# Months of totals kept per port: the trailing 12 months need 12, the rest is for reports.
MONTHS_KEPT = 25


# ---------------------------------------------------------------- one port, one cycle


@dataclass(frozen=True)
class PortSample:
    """What one EVSE is this cycle, in plain values (see :func:`classify`).

    ``offered_w`` and ``wanted_w`` are what its commanded limit lets it deliver and the most its
    own bounds (charger, cable, car, driver pause, operator CSMS) let it take, both at the port's
    wired phases (A × nominal V × phases for AC), so a car using fewer phases does not make the
    port look throttled.
    """

    online: bool
    fault: str | None = None  # why the EVSE says it cannot charge; None: working
    floor_w: float | None = None  # min_power_floor_kw in W; None: no floor configured
    session: bool = False  # a car that wants power, commanded by the controller (active or held)
    offered_w: float | None = None
    wanted_w: float | None = None
    dr_held: bool = False  # the DR-lowered import row is what has no room for its floor
    excluded: str | None = None  # the reason of the exclusion window or outage covering it


def classify(sample: PortSample) -> tuple[Availability, str]:
    """The class and cause of one EVSE in one cycle (precedence in the module docstring)."""
    if sample.excluded is not None:
        return Availability.EXCLUDED, sample.excluded
    if not sample.online:
        return Availability.OFFLINE, NO_CONNECTION
    if sample.fault is not None:
        return Availability.FAULT, sample.fault
    if below_floor(sample):
        return (Availability.DR_CURTAILED, DR_LIMIT) if sample.dr_held else (Availability.BELOW_FLOOR, SITE_LIMIT)
    return Availability.UP, ""


def below_floor(sample: PortSample) -> bool:
    """Held below ``min(floor, what it would take)`` by the controller while a car wants power."""
    if sample.floor_w is None or not sample.session or sample.offered_w is None:
        return False
    target_w = sample.floor_w if sample.wanted_w is None else min(sample.floor_w, sample.wanted_w)
    return sample.offered_w < target_w - FLOOR_TOLERANCE_W


# ---------------------------------------------------------------- exclusions


@dataclass(frozen=True)
class ExclusionWindow:
    """``[start_s, end_s)`` excluded for ``chargers`` (None: every charger), with its reason."""

    start_s: float
    end_s: float
    reason: str = "maintenance"
    chargers: frozenset[str] | None = None

    def covers(self, charger_id: str, now_s: float) -> bool:
        return self.start_s <= now_s < self.end_s and (self.chargers is None or charger_id in self.chargers)


def exclusion(windows: Iterable[ExclusionWindow], charger_id: str, now_s: float) -> str | None:
    """The reason of the first window covering ``charger_id`` at ``now_s``, or None."""
    for window in windows:
        if window.covers(charger_id, now_s):
            return window.reason
    return None


def grid_outage(reading: Reading | None, nominal_voltage_v: float) -> bool:
    """The grid meter reads (OK) every phase voltage below half the nominal: the grid is gone.

    A meter that went dark with the grid reads MISSING and says nothing: such an outage shows as
    the chargers ``offline`` unless an exclusion window is configured for it.
    """
    if reading is None or not reading.usable or reading.phase_voltage_v is None:
        return False
    voltages = [v for v in reading.phase_voltage_v if v is not None]
    return bool(voltages) and all(v < GRID_OUTAGE_VOLTAGE_SHARE * nominal_voltage_v for v in voltages)


# ---------------------------------------------------------------- from a cycle's decision


def _watts(value: float, is_dc: bool, phases: int, voltage_v: float, unit: str | None = None) -> float:
    """A limit in the EVSE's unit (A per phase for AC, W for DC) as W at the port's wired phases."""
    if unit == "W" or (unit is None and is_dc):
        return value
    return value * voltage_v * (3 if is_dc else phases)


def port_samples(
    topology: Topology,
    decision: Decision,
    now_s: float,
    *,
    dr_import_limit_w: float | None,
    windows: Iterable[ExclusionWindow] = (),
    grid_out: bool = False,
) -> dict[EvseKey, PortSample]:
    """Every configured EVSE's :class:`PortSample` of one decided cycle.

    The EVSE states are the ones the decision was built from (with the session overlay: a driver's
    pause is known). ``dr_import_limit_w`` is the DR import cap in force (None: none).
    """
    slots = topology.slots
    built = decision.built
    fleet = built.fleet
    voltage_v = topology.nominal_voltage_v
    limits = decision.plan.limits
    sources = built.states.sources
    windows = tuple(windows)
    # Room left on the import row after the allocation (W), and how much DR took off it.
    problem = built.problem
    setpoints = decision.result.allocation.setpoint
    import_row = topology.import_row
    row_load_w = float(np.dot(problem.power_per_unit_w, setpoints)) - decision.result.allocation.battery_w
    import_slack_w = float(problem.row_headroom[import_row]) - row_load_w
    dr_cut_w = 0.0
    if dr_import_limit_w is not None:
        dr_cut_w = max(0.0, float(slots.row_limit[import_row]) - dr_import_limit_w)
    samples: dict[EvseKey, PortSample] = {}
    for index, key in enumerate(slots.keys):
        slot = topology.evses[index]
        state: EvseState | None = sources[index] if index < len(sources) else None
        excluded = GRID_OUTAGE if grid_out else exclusion(windows, key[0], now_s)
        floor_kw = slot.charger.min_power_floor_kw
        online = state is not None and state.online
        fault = state.fault if state is not None else None
        if floor_kw is None or state is None:
            samples[key] = PortSample(online=online, fault=fault, excluded=excluded)
            continue
        floor_w = floor_kw * 1000.0
        mode = MODES[int(fleet.mode[index])]
        session = mode in (EvseMode.ACTIVE, EvseMode.HELD) and not state.paused
        is_dc, phases = bool(slots.is_dc[index]), int(slots.wired_phases[index])
        limit = limits.get(key)
        offered_w = _watts(limit, is_dc, phases, voltage_v) if limit is not None else None
        wanted_w = _watts(float(slots.max_setpoint[index]), is_dc, phases, voltage_v)
        if not is_dc and state.ev_max_current_a is not None:
            wanted_w = min(wanted_w, _watts(state.ev_max_current_a, False, phases, voltage_v))
        if index in built.demand_caps:
            wanted_w = min(wanted_w, _watts(built.demand_caps[index], is_dc, phases, voltage_v))
        if state.csms_limit is not None:
            csms_w = _watts(max(0.0, state.csms_limit), is_dc, phases, voltage_v, state.csms_limit_unit or None)
            wanted_w = min(wanted_w, csms_w)
        dr_held = False
        if dr_cut_w > 0 and session and offered_w is not None:
            # What it lacks to its floor, as load on the import row (at the phases the car uses).
            per_unit_w = 1.0 if is_dc else voltage_v * int(fleet.phases_used[index])
            per_wired_unit_w = _watts(1.0, is_dc, phases, voltage_v)
            lacking_w = max(0.0, min(floor_w, wanted_w) - offered_w) / per_wired_unit_w * per_unit_w
            dr_held = lacking_w > import_slack_w + FLOOR_TOLERANCE_W
        samples[key] = PortSample(
            online=online,
            fault=fault,
            floor_w=floor_w,
            session=session,
            offered_w=offered_w,
            wanted_w=wanted_w,
            dr_held=dr_held,
            excluded=excluded,
        )
    return samples


# ---------------------------------------------------------------- the ledger


def month_of(t_s: float) -> str:
    """The UTC month of ``t_s`` as ``YYYY-MM``."""
    moment = datetime.fromtimestamp(t_s, UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


def month_bounds(month: str) -> tuple[float, float]:
    """``[start, end)`` of the UTC month ``YYYY-MM`` in epoch seconds."""
    year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def previous_months(month: str, count: int) -> list[str]:
    """``month`` and the ``count - 1`` before it, oldest first."""
    year, number = (int(part) for part in month.split("-"))
    out = []
    for back in range(count - 1, -1, -1):
        total = year * 12 + (number - 1) - back
        out.append(f"{total // 12:04d}-{total % 12 + 1:02d}")
    return out


def uptime_pct(seconds: Mapping[str, float], excluded_classes: Iterable[str] = ()) -> float | None:
    """NEVI uptime ``(T − (T_outage − T_excluded)) / T × 100`` of these seconds per class; None: no time."""
    total = sum(seconds.values())
    if total <= 0:
        return None
    counted_up = seconds.get(Availability.UP, 0.0) + seconds.get(Availability.EXCLUDED, 0.0)
    counted_up += sum(seconds.get(name, 0.0) for name in set(excluded_classes) - {"up", "excluded"})
    return 100.0 * counted_up / total


@dataclass
class MonthTotals:
    seconds: dict[str, float] = field(default_factory=dict)  # class -> s
    causes: dict[str, float] = field(default_factory=dict)  # "class:cause" -> s (not up)
    outages: int = 0  # outage intervals that began this month (excluded time is no outage)


@dataclass
class Outage:
    start_s: float
    end_s: float
    kind: Availability
    cause: str

    def as_list(self) -> list[object]:
        return [self.start_s, self.end_s, self.kind.value, self.cause]


@dataclass
class PortLedger:
    months: dict[str, MonthTotals] = field(default_factory=dict)
    outages: deque[Outage] = field(default_factory=deque)  # closed ones, oldest first
    open: Outage | None = None  # the outage going on (its end: the last second credited)
    last_s: float | None = None  # the last observation
    last_kind: Availability = Availability.OFFLINE
    last_cause: str = CONTROLLER_DOWN

    def month(self, month: str) -> MonthTotals:
        return self.months.get(month) or MonthTotals()

    def recent_outages(self) -> list[Outage]:
        return [*self.outages, *([self.open] if self.open is not None else [])]


Credit = tuple[EvseKey, Availability, float]


class AvailabilityLedger:
    """Seconds per EVSE, class and UTC month, and outage intervals (module docstring)."""

    def __init__(self, *, max_hold_s: float = DEFAULT_MAX_HOLD_S, max_outages: int = DEFAULT_MAX_OUTAGES) -> None:
        self.max_hold_s = max_hold_s
        self.max_outages = max_outages
        self.ports: dict[EvseKey, PortLedger] = {}
        self._month: tuple[float, float, str] = (0.0, 0.0, "")  # the last month looked up: start, end, key

    def _month_at(self, t_s: float) -> tuple[str, float]:
        """The UTC month of ``t_s`` and its end (one datetime per month, not per port and cycle)."""
        start_s, end_s, month = self._month
        if not start_s <= t_s < end_s:
            month = month_of(t_s)
            start_s, end_s = month_bounds(month)
            self._month = (start_s, end_s, month)
        return month, end_s

    def observe(self, now_s: float, classes: Mapping[EvseKey, tuple[Availability, str]]) -> list[Credit]:
        """Credit each port the time since its last observation, then hold its new class.

        Returns what was credited (EVSE, class, seconds), for counters.
        """
        credits: list[Credit] = []
        for key, (kind, cause) in classes.items():
            port = self.ports.get(key)
            if port is None:
                port = self.ports[key] = PortLedger(outages=deque(maxlen=self.max_outages))
            if port.last_s is not None and now_s > port.last_s:
                held_until_s = min(now_s, port.last_s + self.max_hold_s)
                credits += self._credit(key, port, port.last_s, held_until_s, port.last_kind, port.last_cause)
                if held_until_s < now_s:
                    credits += self._credit(key, port, held_until_s, now_s, Availability.OFFLINE, CONTROLLER_DOWN)
            if port.last_s is None or now_s >= port.last_s:
                port.last_s = now_s
            port.last_kind, port.last_cause = kind, cause
        return credits

    def close(self, now_s: float) -> list[Credit]:
        """evdlm stops at ``now_s``: credit every port up to now; from here it is ``controller down``."""
        credits: list[Credit] = []
        for key, port in self.ports.items():
            if port.last_s is not None and now_s > port.last_s:
                held_until_s = min(now_s, port.last_s + self.max_hold_s)
                credits += self._credit(key, port, port.last_s, held_until_s, port.last_kind, port.last_cause)
                if held_until_s < now_s:
                    credits += self._credit(key, port, held_until_s, now_s, Availability.OFFLINE, CONTROLLER_DOWN)
                port.last_s = now_s
            port.last_kind, port.last_cause = Availability.OFFLINE, CONTROLLER_DOWN
        return credits

    def _credit(
        self, key: EvseKey, port: PortLedger, start_s: float, end_s: float, kind: Availability, cause: str
    ) -> list[Credit]:
        credits: list[Credit] = []
        at_s = start_s
        while at_s < end_s:
            month, month_end_s = self._month_at(at_s)
            until_s = min(end_s, month_end_s)
            totals = port.months.get(month)
            if totals is None:
                totals = port.months[month] = MonthTotals()
                self._prune(port, month)
            seconds = until_s - at_s
            totals.seconds[kind.value] = totals.seconds.get(kind.value, 0.0) + seconds
            if kind is not Availability.UP:
                label = f"{kind.value}:{cause}"
                totals.causes[label] = totals.causes.get(label, 0.0) + seconds
            credits.append((key, kind, seconds))
            at_s = until_s
        self._interval(port, start_s, end_s, kind, cause)
        return credits

    def _interval(self, port: PortLedger, start_s: float, end_s: float, kind: Availability, cause: str) -> None:
        current = port.open
        if current is not None and current.kind is kind and current.cause == cause and current.end_s == start_s:
            current.end_s = end_s
            return
        if current is not None:
            port.outages.append(current)
            port.open = None
        if kind is Availability.UP:
            return
        port.open = Outage(start_s, end_s, kind, cause)
        if kind is not Availability.EXCLUDED:
            totals = port.months.get(self._month_at(start_s)[0])
            if totals is not None:
                totals.outages += 1

    @staticmethod
    def _prune(port: PortLedger, newest: str) -> None:
        keep = set(previous_months(newest, MONTHS_KEPT))
        for month in [m for m in port.months if m not in keep and m < newest]:
            del port.months[month]

    # ------------------------------------------------------------ reading it

    def seconds(self, key: EvseKey, month: str, now_s: float | None = None) -> dict[str, float]:
        """Seconds per class of ``key`` in ``month`` (every class present), including the time
        held since its last observation up to ``now_s`` when given (not credited yet)."""
        port = self.ports.get(key)
        out = {kind.value: 0.0 for kind in CLASSES}
        if port is None:
            return out
        for name, value in port.month(month).seconds.items():
            out[name] = out.get(name, 0.0) + value
        if now_s is not None and port.last_s is not None and now_s > port.last_s:
            start, end = month_bounds(month)
            held_until_s = min(now_s, port.last_s + self.max_hold_s)
            for a, b, kind in (
                (port.last_s, held_until_s, port.last_kind),
                (held_until_s, now_s, Availability.OFFLINE),
            ):
                overlap = min(b, end) - max(a, start)
                if overlap > 0:
                    out[kind.value] += overlap
        return out

    def uptime(
        self, key: EvseKey, month: str, now_s: float | None = None, excluded_classes: Iterable[str] = ()
    ) -> tuple[float | None, float | None]:
        """(the month's uptime %, the trailing 12 months' uptime % ending with that month)."""
        excluded = tuple(excluded_classes)
        trailing: dict[str, float] = {}
        for each in previous_months(month, 12):
            for name, value in self.seconds(key, each, now_s).items():
                trailing[name] = trailing.get(name, 0.0) + value
        return uptime_pct(self.seconds(key, month, now_s), excluded), uptime_pct(trailing, excluded)

    def outages(self, key: EvseKey, now_s: float | None = None) -> list[Outage]:
        """The port's kept outage intervals, oldest first; with ``now_s``, the one going on
        since its last observation too (up to ``now_s``, within the hold)."""
        port = self.ports.get(key)
        if port is None:
            return []
        out = [Outage(o.start_s, o.end_s, o.kind, o.cause) for o in port.recent_outages()]
        last_s = port.last_s
        if now_s is None or last_s is None or now_s <= last_s or port.last_kind is Availability.UP:
            return out
        end_s = min(now_s, last_s + self.max_hold_s)
        tail = out[-1] if out and port.open is not None else None
        if tail is not None and (tail.kind, tail.cause, tail.end_s) == (port.last_kind, port.last_cause, last_s):
            tail.end_s = end_s
        else:
            out.append(Outage(last_s, end_s, port.last_kind, port.last_cause))
        return out

    def outage_count(self, key: EvseKey, month: str) -> int:
        port = self.ports.get(key)
        return port.month(month).outages if port is not None else 0
