"""Build one cycle's :class:`~evdlm_solvers.problem.Problem` from a snapshot (pure).

Closed loop: the measured grid and circuit meters are the truth. A row's headroom is its limit
minus the safety margin minus the load the controller does not command this cycle:

* metered node, fresh reading: measured load minus the measured draw of the EVSEs in the
  problem (what remains is building load, PV, chargers outside the problem), plus what the
  chargers outside the problem may still draw above their measured value;
* metered circuit, stale or invalid reading: counted as fully loaded (headroom 0);
* node without a meter: only the chargers outside the problem, at what they may draw.

A stale or SUSPECT grid meter also caps each phase of the main fuse at the fallback limit spread
evenly over the phases (the building load it cannot see would otherwise come on top).

Chargers outside the problem are *held* (told to come down, meter not yet showing it: counted
at their old limit until it does, for at most the settle time), *uncontrolled* (refuse profiles
or do not follow them: counted at their maximum) or *offline* with a session (counted at the
higher of their last limit and the fail-safe limit). A stale grid meter puts the import row on
the configured fallback limit. Demand-response caps lower the import and export limits; the
demand window's cap lowers the import limit, never below the load evdlm does not command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import numpy as np
from evdlm_solvers import UNIT_CURRENT_A, UNIT_POWER_W, Problem

from evdlm.core.fleet import FleetCache, MemoryColumns, StateColumns
from evdlm.core.fleet_kernels import (
    M_CUT_FROM,
    S_CSMS_LIMIT,
    S_PAUSED,
    S_PLANNED_W,
    S_PRESENT,
    S_PRIORITY,
    Mode,
    columns_kernel,
    view_kernel,
)
from evdlm.core.fleet_kernels import Reason as Reason
from evdlm.core.memory import ControlMemory
from evdlm.core.meter_trust import meter_phase_a
from evdlm.core.site_settings import SiteSettings as SiteSettings
from evdlm.core.topology import GRID_NODE, SlotTable, Topology
from evdlm.core.types import EvseKey, EvseState, Reading

# Above its limit by more than this, a charger has not come down yet (meter noise, rounding).
FOLLOW_TOLERANCE_A = 1.0
# A 3-phase charger whose car draws on L1 only: L1 above DRAWING, L2 and L3 below IDLE.
PHASE_IDLE_A = 0.5
PHASE_DRAWING_A = 2.0
# A car drawing this much below its limit for a settle time is capped near what it draws,
# so the unused current goes to other cars; the cap creeps up by the same step.
DEMAND_SLACK_A = 2.0
# Range of the laxity-based sharing weight (fleet_kernels._laxity_weight): 10 h of slack or more
# weighs URGENCY_MIN, 6 min or less URGENCY_MAX; the 100x spread matches PRIORITY_WEIGHT_BASE.
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
    """Caps in force from demand response and the demand window, W (None = no cap)."""

    import_limit_w: float | None = None
    export_limit_w: float | None = None
    # The demand window's import cap now (evdlm.core.demand_window), W; None: no demand control.
    window_import_limit_w: float | None = None


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
    evse_states: dict[EvseKey, EvseState]
    memory: ControlMemory
    demand: DemandLimits
    battery_reading: Reading | None = None


# FleetView.mode holds the kernels' mode codes (fleet_kernels.Mode); MODES[code] is the EvseMode.
MODES: tuple[EvseMode, ...] = tuple(EvseMode[code.name] for code in Mode)


_REASON_TEXT = {
    Reason.NO_SESSION: "no session",
    Reason.CONNECTED_NOT_CHARGING: "connected, not charging",
    Reason.OFFLINE: "offline",
    Reason.OFFLINE_WITH_SESSION: "offline with a session",
    Reason.REFUSES_PROFILES: "refuses charging profiles",
    Reason.DOES_NOT_FOLLOW: "does not follow its limit",
    Reason.DRAWS_ABOVE_LIMIT: "draws above its limit",
    Reason.CHARGING: "charging",
}


def reason_text(reason: int, cut_from: float) -> str:
    if reason == Reason.SETTLING:
        return f"settling after a cut from {cut_from:g}"
    return _REASON_TEXT[Reason(reason)]


@dataclass(frozen=True)
class FleetView:
    """Every EVSE this cycle, as arrays in topology order: its mode, why, what it draws and may draw."""

    mode: np.ndarray  # MODES index
    reason: np.ndarray  # Reason
    phases_used: np.ndarray  # phases the car uses (1 or 3)
    measured_a: np.ndarray  # (EVSEs, 3) measured current per site phase
    drawn_a: np.ndarray  # (EVSEs, 3) what it surely draws now: measured, capped by the session's limit
    assumed_a: np.ndarray  # (EVSEs, 3) what it may draw, per site phase
    measured_power_w: np.ndarray
    cut_from: np.ndarray  # the remembered setpoint before the last cut (NaN = none), for the reason text
    same_session: np.ndarray  # the memory belongs to the EVSE's current transaction

    def view(self, index: int) -> EvseView:
        a1, a2, a3 = self.measured_a[index].tolist()
        b1, b2, b3 = self.assumed_a[index].tolist()
        return EvseView(
            MODES[int(self.mode[index])],
            reason_text(int(self.reason[index]), float(self.cut_from[index])),
            int(self.phases_used[index]),
            (a1, a2, a3),
            (b1, b2, b3),
            float(self.measured_power_w[index]),
        )


@dataclass(frozen=True)
class BuiltProblem:
    problem: Problem
    columns: tuple[int, ...]  # topology EVSE index of each problem column
    fleet: FleetView
    row_limit: tuple[float, ...]  # effective limit per row after DR and fallback, row unit
    row_uncontrolled: tuple[float, ...]  # load the controller does not command, row unit
    grid_fallback: bool  # the grid meter is stale: the fallback import limit is in force
    stale_devices: tuple[str, ...]
    overloaded_nodes: frozenset[str]  # nodes whose measured load is above their limit right now
    notes: tuple[str, ...]
    demand_caps: dict[int, float]  # topology EVSE index -> cap (A) for cars that take less than offered
    states: StateColumns  # the EVSE states the problem was built from
    memory: MemoryColumns  # the memory it was built from
    # How far the demand window lowered the import row's limit, W (0: it did not bind): that cap
    # is money, not the site's room, which a plan that prices the peak itself needs (horizon_targets).
    window_cut_w: float = 0.0

    @cached_property
    def views(self) -> tuple[EvseView, ...]:
        """One :class:`EvseView` per topology EVSE (made on first use)."""
        return tuple(self.fleet.view(index) for index in range(len(self.fleet.mode)))

    def mode_counts(self) -> dict[str, int]:
        counts = np.bincount(self.fleet.mode, minlength=len(MODES))
        return {MODES[code].value: int(count) for code, count in enumerate(counts) if count}


def view_fleet(
    slots: SlotTable, states: StateColumns, memory: MemoryColumns, now_s: float, settings: SiteSettings
) -> tuple[FleetView, _NodeSums]:
    """Each EVSE's mode and what it draws and may draw, and their sums per node.

    Phases used: 1 on 1-phase chargers; remembered for the session; learned from the currents
    when all three are reported (a sample with L1 alone says nothing of L2 and L3); else the
    worst case 3. Measured current is never a guess: it is subtracted from meter readings, so
    overstating it would overstate headroom (unreported phases count 0).

    Modes, in order: offline; idle (no charging session); uncontrolled (refuses profiles, or the
    link says it does not follow); held (cut, still above its limit within the settle time);
    uncontrolled again when a sample a settle time after the last change is still above the
    limit (whatever the OCPP link has concluded yet: its grace period is longer); else active.
    What an EVSE outside the problem may draw is at least a floor spread over its phases: offline
    with a session, its last lease until it expires, then the fail-safe profile; uncontrolled,
    its maximum; held, since the cut its draw can only fall, so a sample taken after the cut
    bounds it (an older sample bounds nothing and it counts at the old limit).
    """
    same_session = (states.values[:, S_PRESENT] > 0) & (states.transaction_id == memory.transaction_id)
    (
        mode,
        reason,
        phases_used,
        measured,
        drawn,
        assumed,
        measured_power_w,
        *node_sums,
    ) = view_kernel(
        slots.is_dc,
        slots.wired_phases,
        slots.site_phase,
        slots.max_setpoint,
        slots.pair_node,
        slots.pair_evse,
        len(slots.node_ids),
        slots.voltage_v,
        states.values,
        memory.values,
        same_session,
        now_s,
        settings.control.settle_time_s,
        settings.failsafe_current_a,
        FOLLOW_TOLERANCE_A,
        PHASE_DRAWING_A,
        PHASE_IDLE_A,
    )
    fleet = FleetView(
        mode,
        reason,
        phases_used,
        measured,
        drawn,
        assumed,
        measured_power_w,
        memory.values[:, M_CUT_FROM],
        same_session,
    )
    return fleet, _NodeSums(*node_sums)


@dataclass(frozen=True)
class _NodeSums:
    """Per node (SlotTable.node_ids order) and site phase: the draw of EVSEs in the problem, and of those outside it."""

    active_a: np.ndarray  # (nodes, 3)
    outside_a: np.ndarray
    outside_extra_a: np.ndarray
    active_w: np.ndarray  # (nodes,)
    outside_w: np.ndarray
    outside_extra_w: np.ndarray


def build_problem(
    topology: Topology, settings: SiteSettings, inputs: BuildInputs, cache: FleetCache | None = None
) -> BuiltProblem:
    """The allocation problem of this cycle, with the bookkeeping to plan commands from it.

    ``cache`` (one per decision context) lets unchanged EVSE states be reused from the previous
    cycle instead of read again; the result is the same with or without it.
    """
    control = settings.control
    slots = topology.slots
    voltage_v = topology.nominal_voltage_v
    notes: list[str] = []
    stale: set[str] = set()

    if cache is not None:
        states = cache.states(slots, inputs.evse_states)
    else:
        states = StateColumns.read(slots, inputs.evse_states, None)
    memory = MemoryColumns.read(slots, inputs.memory)
    fleet, sums = view_fleet(slots, states, memory, inputs.now_s, settings)

    def usable(meter: str | None) -> Reading | None:
        if meter is None:
            return None
        reading = inputs.readings.get(meter)
        if reading is None or not reading.usable:
            stale.add(meter)
            return None
        return reading

    limit = slots.row_limit.copy()
    uncontrolled = np.zeros(len(limit))
    fully_loaded = np.zeros(len(limit), dtype=np.bool_)
    margin = np.where(slots.row_is_current, control.safety_margin_a, settings.safety_margin_w)

    # Nodes without a usable meter: only the EVSEs outside the problem, at what they may draw.
    uncontrolled[slots.current_row] = sums.outside_a[slots.current_row_node, slots.current_row_phase]
    uncontrolled[slots.power_row] = sums.outside_w[slots.power_row_node]
    over_limit = (sums.active_a + sums.outside_a).max(axis=1) > slots.node_limit_a
    # Metered nodes: the meter is the truth.
    nodes = topology.nodes
    for position in slots.metered_nodes:
        node = nodes[slots.node_ids[position]]
        reading = usable(node.meter)
        meter_broken = reading is None
        phase_a = meter_phase_a(reading, voltage_v) if reading is not None else None
        if reading is not None and phase_a is None:
            meter_broken = True
            stale.add(node.meter or "")
            notes.append(f"meter {node.meter} of {node.id} gives no phase values")
        grid = node.id == GRID_NODE
        if phase_a is not None:
            active_a, outside_extra_a = sums.active_a[position].tolist(), sums.outside_extra_a[position].tolist()
            for phase, index in slots.node_current_rows[position]:
                value = phase_a[phase] - active_a[phase] + outside_extra_a[phase]
                # PV behind the grid meter legitimately makes it negative; elsewhere negative load is
                # noise or a lying meter (the meter checks catch the latter), never headroom.
                uncontrolled[index] = value if grid and settings.grid_generation else max(0.0, value)
            over_limit[position] = max(phase_a) > node.phase_current_limit_a
        elif meter_broken and not grid:
            for _, index in slots.node_current_rows[position]:
                fully_loaded[index] = True
        if node.id in topology.power_row:
            index = topology.power_row[node.id]
            if reading is not None and reading.power_w is not None:
                uncontrolled[index] = max(
                    0.0, reading.power_w - float(sums.active_w[position]) + float(sums.outside_extra_w[position])
                )
            elif meter_broken:
                fully_loaded[index] = True
        if meter_broken and not grid:
            notes.append(f"circuit {node.id}: meter {node.meter} not usable, counted as fully loaded")
    overloaded = {slots.node_ids[position] for position in over_limit.nonzero()[0].tolist()}

    # Grid connection power rows.
    grid_position = slots.node_ids.index(GRID_NODE)
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
        base_net_w = grid_reading.power_w - float(sums.active_w[grid_position]) + battery_w
        uncontrolled[topology.import_row] = base_net_w + float(sums.outside_extra_w[grid_position])
        if not settings.grid_generation:
            uncontrolled[topology.import_row] = max(0.0, uncontrolled[topology.import_row])
        uncontrolled[topology.export_row] = -base_net_w
    else:
        if grid_fallback:
            import_limit = min(import_limit, settings.fallback_import_limit_w)
            notes.append(f"grid meter not usable: fallback import limit {import_limit / 1000:g} kW")
            # Blind at the connection, the main fuse's phases would carry the unseen building load
            # on top of whatever the cars get: they get the fallback spread evenly, never more,
            # however the cars sit on the phases.
            grid_rows = slots.node_current_rows[grid_position]
            phase_cap_a = settings.fallback_import_limit_w / (len(grid_rows) * voltage_v)
            for _, index in grid_rows:
                limit[index] = min(limit[index], phase_cap_a)
        uncontrolled[topology.import_row] = float(sums.outside_w[grid_position])
    window_w = inputs.demand.window_import_limit_w
    window_cut_w = 0.0
    if window_w is not None and math.isfinite(window_w):
        # The demand window is money, never safety: it may hold every car at 0, never put the
        # import row over its limit through load evdlm does not command (which would stop and
        # block uncontrollable stations as a fuse overload does).
        window_cap_w = max(window_w, float(uncontrolled[topology.import_row]) + float(margin[topology.import_row]))
        if window_cap_w < import_limit:
            window_cut_w = float(import_limit - window_cap_w)
            import_limit = window_cap_w
            notes.append(f"demand window: import held at {import_limit / 1000:.1f} kW")
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
        topology, settings, inputs.now_s, fleet, states, memory, headroom, battery_reading, grid_fallback
    )
    return BuiltProblem(
        problem=problem,
        columns=columns,
        fleet=fleet,
        row_limit=tuple(limit.tolist()),
        row_uncontrolled=tuple(uncontrolled.tolist()),
        grid_fallback=grid_fallback,
        stale_devices=tuple(sorted(stale)),
        overloaded_nodes=frozenset(overloaded),
        notes=tuple(notes),
        demand_caps=demand_caps,
        states=states,
        memory=memory,
        window_cut_w=window_cut_w,
    )


def _csms_bound(
    highest: np.ndarray,
    csms: np.ndarray,
    columns: np.ndarray,
    is_dc: np.ndarray,
    phases_used: np.ndarray,
    voltage_v: float,
    states: StateColumns,
) -> np.ndarray:
    """``highest`` capped by each column's CSMS limit (NaN: none) in the column's own unit.

    AC columns are A per phase (a limit in W is divided by V × the phases the car uses); DC
    columns are W (a limit in A counts V × 3, as the charger link converts). The unit comes from
    the EVSE state itself; only the few EVSEs with a CSMS limit are looked at one by one.
    """
    limited = np.flatnonzero(~np.isnan(csms))
    if not limited.size:
        return highest
    highest = highest.copy()
    for position in limited.tolist():
        source = states.sources[int(columns[position])]
        unit = source.csms_limit_unit if source is not None else None
        value = max(0.0, float(csms[position]))  # a negative limit is a pause, never a raise
        phases = int(phases_used[position])
        if is_dc[position]:
            bound = value * voltage_v * 3 if unit == "A" else value
        else:
            bound = value / (voltage_v * phases) if unit == "W" else value
        highest[position] = min(float(highest[position]), bound)
    return highest


def _columns(
    topology: Topology,
    settings: SiteSettings,
    now_s: float,
    fleet: FleetView,
    states: StateColumns,
    memory: MemoryColumns,
    headroom: np.ndarray,
    battery_reading: Reading | None,
    grid_fallback: bool,
) -> tuple[Problem, tuple[int, ...], dict[int, float]]:
    control = settings.control
    slots = topology.slots
    voltage_v = slots.voltage_v
    columns = (fleet.mode == Mode.ACTIVE).nonzero()[0]
    phases_used = fleet.phases_used[columns]
    indptr, coef_row, coef_value = slots.column_coefficients(columns, phases_used)
    is_dc = slots.is_dc[columns]
    # A paused car starts only with ADMISSION_HYSTERESIS_A to spare; within its minimum off time
    # it can only stay paused; a car taking clearly less than offered is capped near its draw.
    power_per_unit_w, lowest, highest, previous, ramp, urgency, waiting_s, on_time_s, caps = columns_kernel(
        columns,
        slots.is_dc,
        slots.min_setpoint,
        slots.max_setpoint,
        voltage_v,
        states.values,
        memory.values,
        fleet.same_session,
        fleet.phases_used,
        fleet.measured_a,
        now_s,
        control.settle_time_s,
        control.min_off_time_s,
        control.ramp_up_a_per_s * control.cycle_period_s,
        FOLLOW_TOLERANCE_A,
        DEMAND_SLACK_A,
        ADMISSION_HYSTERESIS_A,
        URGENCY_MIN,
        URGENCY_MAX,
    )
    # Session inputs (evdlm.core.session_inputs): a paused car may only stay at 0, and a session
    # may have a priority class of its own.
    session = states.values[columns]
    highest = np.where(session[:, S_PAUSED] > 0, 0.0, highest)
    # Local Controller mode: the operator CSMS's limit now bounds the EVSE from above.
    highest = _csms_bound(highest, session[:, S_CSMS_LIMIT], columns, is_dc, phases_used, voltage_v, states)
    priority = np.where(np.isnan(session[:, S_PRIORITY]), slots.priority[columns], session[:, S_PRIORITY])
    # The horizon plan's power now, in each column's own unit (NaN: no plan for the car).
    planned_w = session[:, S_PLANNED_W]
    planned_share = np.where(np.isfinite(planned_w) & (planned_w >= 0.0), planned_w, np.nan) / power_per_unit_w

    discharge_max_w = charge_max_w = 0.0
    battery = settings.battery
    battery_rows, battery_coefs = [topology.import_row, topology.export_row], [-1.0, 1.0]
    if battery is not None and battery_reading is not None and battery_reading.soc_pct is not None:
        soc = battery_reading.soc_pct
        discharge_max_w = settings.battery_max_discharge_w if soc > battery.reserve_soc_pct else 0.0
        charge_max_w = settings.battery_max_charge_w if soc < battery.soc_max_pct else 0.0
        if grid_fallback:
            # Blind at the connection, nothing shows the battery's effect there: it earns the cars
            # no import headroom, and may only keep what it discharges now (held while the cars it
            # covered come down, then wound down); no charging from a grid we cannot see.
            discharge_max_w = min(discharge_max_w, max(0.0, battery_reading.power_w or 0.0))
            charge_max_w = 0.0
            battery_rows, battery_coefs = [topology.export_row], [1.0]

    problem = Problem(
        row_headroom=headroom,
        # Copies: the cached arrays are read-only, and numba types a read-only array apart (the
        # solver kernels would be compiled a second time, in the first cycle).
        row_unit=slots.row_unit.copy(),
        row_parent=slots.row_parent.copy(),
        coef_indptr=indptr.copy(),
        coef_row=coef_row.copy(),
        coef_value=coef_value.copy(),
        evse_unit=np.where(is_dc, UNIT_POWER_W, UNIT_CURRENT_A).astype(np.int8),
        power_per_unit_w=power_per_unit_w,
        setpoint_min=lowest,
        setpoint_max=highest,
        setpoint_previous=previous,
        ramp_up_max=ramp,
        charging=previous > 0,
        priority=priority.astype(np.int64),
        planned_share=planned_share,
        urgency=urgency,
        waiting_s=waiting_s,
        on_time_s=on_time_s,
        rotation_period_s=control.rotation_period_s,
        min_on_time_s=control.min_on_time_s,
        battery_discharge_max_w=discharge_max_w,
        battery_charge_max_w=charge_max_w,
        battery_coef_row=np.array(battery_rows, dtype=np.int64),
        battery_coef_value=np.array(battery_coefs),
    )
    capped = ~np.isnan(caps)
    demand_caps = dict(zip(columns[capped].tolist(), caps[capped].tolist(), strict=True))
    return problem, tuple(columns.tolist()), demand_caps
