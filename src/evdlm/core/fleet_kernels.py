"""The per-EVSE loops of a cycle, compiled with numba (one call each instead of dozens of array operations).

Each kernel is the plain per-EVSE rule written once, as a loop; :mod:`evdlm.core.problem_builder`
and :mod:`evdlm.core.dispatch` explain the rules and call these. Sums run EVSE by EVSE in
topology order and no fast-math is used, so results are bit for bit those of the same loop in
Python: a replay reproduces the decisions of any gateway that ran this code.

The numbers the kernels index and compare with are defined here, next to the kernels, as
``IntEnum`` s: the columns of the ``state`` and ``memory`` matrices (:class:`StateColumn`,
:class:`MemoryColumn`; NaN = None), the EVSE modes (:class:`Mode`) and the reasons for them
(:class:`Reason`). numba compiles an ``IntEnum`` member as an integer constant, and its on-disk
cache (``cache=True``) is keyed by the source file of the kernel: with the numbers in the same
file, changing one invalidates every cached kernel, so a stale kernel cannot run with a new
numbering. :mod:`evdlm.core.fleet` and :mod:`evdlm.core.problem_builder` import them from here
(``tests/core/test_fleet_kernels.py`` checks that no kernel reads a number from another module).
"""

from __future__ import annotations

import math
import time
from enum import IntEnum

import numpy as np
from numba import njit


class StateColumn(IntEnum):
    """Columns of :class:`evdlm.core.fleet.StateColumns` ``.values`` (what the chargers report)."""

    PRESENT = 0
    ONLINE = 1
    CONNECTED = 2
    CHARGING = 3
    CONTROLLABLE = 4
    COMPLIANT = 5
    SAMPLED_AT = 6  # the charger's last meter sample (updated_at_s for states that do not say)
    HAS_PHASE_CURRENT = 7
    I1 = 8
    I2 = 9
    I3 = 10
    POWER = 11
    EV_MAX_A = 12
    ENERGY_NEEDED = 13
    DEPARTURE = 14
    PRIORITY = 15  # the session's priority class (NaN: the charger's)
    PAUSED = 16  # 1: held at 0 by a session command
    PLANNED_W = 17  # the horizon plan's power for the session now, W (NaN: none)
    # The operator CSMS's limit now (Local Controller mode), in EvseState.csms_limit_unit (NaN: none).
    CSMS_LIMIT = 18


class MemoryColumn(IntEnum):
    """Columns of :class:`evdlm.core.fleet.MemoryColumns` ``.values`` (the control memory)."""

    SETPOINT = 0
    ADMITTED = 1
    WANTING = 2
    PAUSED = 3
    CHANGED = 4
    CUT_FROM = 5
    CUT_AT = 6
    PHASES = 7
    DEMAND_CAP = 8


class Mode(IntEnum):
    """An EVSE's mode code (``FleetView.mode``); ``problem_builder.MODES[code]`` is its ``EvseMode``."""

    IDLE = 0
    OFFLINE = 1
    ACTIVE = 2
    HELD = 3
    UNCONTROLLED = 4


class Reason(IntEnum):
    """Why an EVSE is in its mode (``FleetView.reason``); the text is ``problem_builder.reason_text``."""

    NO_SESSION = 0
    CONNECTED_NOT_CHARGING = 1
    OFFLINE = 2
    OFFLINE_WITH_SESSION = 3
    REFUSES_PROFILES = 4
    DOES_NOT_FOLLOW = 5
    SETTLING = 6
    DRAWS_ABOVE_LIMIT = 7
    CHARGING = 8


STATE_FIELDS = len(StateColumn)
MEMORY_FIELDS = len(MemoryColumn)

# Short names for the kernels and the column code (the same enum members).
S_PRESENT = StateColumn.PRESENT
S_ONLINE = StateColumn.ONLINE
S_CONNECTED = StateColumn.CONNECTED
S_CHARGING = StateColumn.CHARGING
S_CONTROLLABLE = StateColumn.CONTROLLABLE
S_COMPLIANT = StateColumn.COMPLIANT
S_SAMPLED_AT = StateColumn.SAMPLED_AT
S_HAS_PHASE_CURRENT = StateColumn.HAS_PHASE_CURRENT
S_I1 = StateColumn.I1
S_I2 = StateColumn.I2
S_I3 = StateColumn.I3
S_POWER = StateColumn.POWER
S_EV_MAX_A = StateColumn.EV_MAX_A
S_ENERGY_NEEDED = StateColumn.ENERGY_NEEDED
S_DEPARTURE = StateColumn.DEPARTURE
S_PRIORITY = StateColumn.PRIORITY
S_PAUSED = StateColumn.PAUSED
S_PLANNED_W = StateColumn.PLANNED_W
S_CSMS_LIMIT = StateColumn.CSMS_LIMIT
M_SETPOINT = MemoryColumn.SETPOINT
M_ADMITTED = MemoryColumn.ADMITTED
M_WANTING = MemoryColumn.WANTING
M_PAUSED = MemoryColumn.PAUSED
M_CHANGED = MemoryColumn.CHANGED
M_CUT_FROM = MemoryColumn.CUT_FROM
M_CUT_AT = MemoryColumn.CUT_AT
M_PHASES = MemoryColumn.PHASES
M_DEMAND_CAP = MemoryColumn.DEMAND_CAP
IDLE, OFFLINE, ACTIVE, HELD, UNCONTROLLED = Mode.IDLE, Mode.OFFLINE, Mode.ACTIVE, Mode.HELD, Mode.UNCONTROLLED


@njit(cache=True)
def _per_phase_a(value: float, is_dc: bool, voltage_v: float) -> float:
    """A setpoint in its own unit as A per phase (DC W spread evenly over three phases)."""
    return value / (3.0 * voltage_v) if is_dc else value


@njit(cache=True)
def _max_a(measured: np.ndarray, e: int) -> float:
    """The highest of an EVSE's three site-phase currents."""
    return float(max(measured[e, 0], max(measured[e, 1], measured[e, 2])))


@njit(cache=True)
def view_kernel(
    is_dc: np.ndarray,
    wired_phases: np.ndarray,
    site_phase: np.ndarray,
    max_setpoint: np.ndarray,
    pair_node: np.ndarray,
    pair_evse: np.ndarray,
    n_nodes: int,
    voltage_v: float,
    state: np.ndarray,
    memory: np.ndarray,
    same_session: np.ndarray,
    now_s: float,
    settle_time_s: float,
    failsafe_current_a: float,
    follow_tolerance_a: float,
    phase_drawing_a: float,
    phase_idle_a: float,
) -> tuple[np.ndarray, ...]:
    """Each EVSE's mode, reason, phases used, measured, drawn and assumed current, and the per-node sums."""
    size = is_dc.shape[0]
    mode = np.zeros(size, np.int8)
    reason = np.zeros(size, np.int8)
    phases_used = np.zeros(size, np.int64)
    measured = np.zeros((size, 3))
    drawn = np.zeros((size, 3))
    drawn_power_w = np.zeros(size)
    assumed = np.zeros((size, 3))
    measured_power_w = np.zeros(size)
    for e in range(size):
        present = state[e, S_PRESENT] > 0
        has_currents = present and state[e, S_HAS_PHASE_CURRENT] > 0
        setpoint = memory[e, M_SETPOINT]
        previous_a = _per_phase_a(setpoint, is_dc[e], voltage_v)
        i1, i2, i3 = state[e, S_I1], state[e, S_I2], state[e, S_I3]

        # Phases the car uses.
        if wired_phases[e] == 1:
            phases = 1
        elif is_dc[e]:
            phases = 3
        elif same_session[e] and not math.isnan(memory[e, M_PHASES]):
            phases = int(memory[e, M_PHASES])
        elif (
            has_currents
            and not (math.isnan(i1) or math.isnan(i2) or math.isnan(i3))
            and i1 >= phase_drawing_a
            and i2 < phase_idle_a
            and i3 < phase_idle_a
        ):
            phases = 1
        else:
            phases = 3
        phases_used[e] = phases

        # Measured current per site phase (never a guess); its power.
        power_w = state[e, S_POWER]
        if present and not has_currents and is_dc[e] and not math.isnan(power_w):
            spread_a = max(0.0, power_w) / (3.0 * voltage_v)
            for j in range(3):
                measured[e, site_phase[e, j]] += spread_a
        elif has_currents:
            for j in range(min(3, wired_phases[e])):
                value = state[e, S_I1 + j]
                if not math.isnan(value):
                    measured[e, site_phase[e, j]] += max(0.0, value)
        if present and not math.isnan(power_w):
            measured_power_w[e] = max(0.0, power_w)
        else:
            measured_power_w[e] = (measured[e, 0] + measured[e, 1] + measured[e, 2]) * voltage_v
        measured_max_a = _max_a(measured, e)
        # A lower bound of what it draws now: its last sample, but never more than the limit this
        # session holds (a sample up to one interval old may predate a cut). Subtracting this
        # from a meter, a slow sample interval delays raises only, never hides load.
        limit_a = math.inf
        if same_session[e] and not math.isnan(setpoint):
            limit_a = previous_a
        for p in range(3):
            drawn[e, p] = min(measured[e, p], limit_a)
        drawn_power_w[e] = min(measured_power_w[e], limit_a * voltage_v * phases)

        # Mode and reason, in order of precedence, and the floor of what it may draw.
        floor_a = -1.0  # none
        floor_phases = wired_phases[e]
        maximum_a = _per_phase_a(max_setpoint[e], is_dc[e], voltage_v)
        cut_from, cut_at_s = memory[e, M_CUT_FROM], memory[e, M_CUT_AT]
        changed_at_s = memory[e, M_CHANGED]
        sampled_at_s = state[e, S_SAMPLED_AT]
        above_limit = measured_max_a > previous_a + follow_tolerance_a
        if not present or state[e, S_ONLINE] == 0:
            mode[e] = OFFLINE
            if setpoint > 0 or (present and state[e, S_CHARGING] > 0):
                reason[e] = Reason.OFFLINE_WITH_SESSION
                floor_a = max(previous_a, failsafe_current_a)
            else:
                reason[e] = Reason.OFFLINE
        elif state[e, S_CHARGING] == 0:
            mode[e] = IDLE
            reason[e] = Reason.CONNECTED_NOT_CHARGING if state[e, S_CONNECTED] > 0 else Reason.NO_SESSION
        elif state[e, S_CONTROLLABLE] == 0:
            mode[e], reason[e], floor_a = UNCONTROLLED, Reason.REFUSES_PROFILES, maximum_a
        elif state[e, S_COMPLIANT] == 0:
            mode[e], reason[e], floor_a = UNCONTROLLED, Reason.DOES_NOT_FOLLOW, maximum_a
        elif not math.isnan(cut_from) and not math.isnan(cut_at_s) and now_s - cut_at_s < settle_time_s and above_limit:
            mode[e], reason[e] = HELD, Reason.SETTLING
            bound_a = measured_max_a if sampled_at_s > cut_at_s else _per_phase_a(cut_from, is_dc[e], voltage_v)
            floor_a = max(bound_a, previous_a)
            floor_phases = phases
        elif not math.isnan(changed_at_s) and sampled_at_s - changed_at_s >= settle_time_s and above_limit:
            mode[e], reason[e], floor_a = UNCONTROLLED, Reason.DRAWS_ABOVE_LIMIT, maximum_a
        else:
            mode[e], reason[e] = ACTIVE, Reason.CHARGING

        for p in range(3):
            assumed[e, p] = measured[e, p]
        if floor_a >= 0.0:
            floor = np.zeros(3)
            for j in range(min(3, floor_phases)):
                floor[site_phase[e, j]] += floor_a
            for p in range(3):
                assumed[e, p] = max(measured[e, p], floor[p])

    # Per node, EVSE by EVSE: the draw of EVSEs in the problem, and of those outside it.
    active_a = np.zeros((n_nodes, 3))
    outside_a = np.zeros((n_nodes, 3))
    outside_extra_a = np.zeros((n_nodes, 3))
    active_w = np.zeros(n_nodes)
    outside_w = np.zeros(n_nodes)
    outside_extra_w = np.zeros(n_nodes)
    for pair in range(pair_node.shape[0]):
        node, e = pair_node[pair], pair_evse[pair]
        if mode[e] == ACTIVE:
            for p in range(3):
                active_a[node, p] += drawn[e, p]
            active_w[node] += drawn_power_w[e]
        else:
            extra_w = 0.0
            for p in range(3):
                outside_a[node, p] += assumed[e, p]
                extra = max(0.0, assumed[e, p] - measured[e, p])
                outside_extra_a[node, p] += extra
                extra_w += extra * voltage_v
            outside_w[node] += measured_power_w[e] + extra_w
            outside_extra_w[node] += extra_w
    return (
        mode,
        reason,
        phases_used,
        measured,
        drawn,
        assumed,
        measured_power_w,
        active_a,
        outside_a,
        outside_extra_a,
        active_w,
        outside_w,
        outside_extra_w,
    )


DEFAULT_DWELL_S = 8.0 * 3600.0
"""Time left assumed for a car whose departure is unknown, s (a workplace day)."""
DEFAULT_ENERGY_WH = 20_000.0
"""Energy assumed still needed by a car that does not report it, Wh."""
LAXITY_REFERENCE_H = 1.0
"""Laxity that weighs 1: the weight is ``LAXITY_REFERENCE_H / laxity_h``, clipped."""
UNKNOWN_SESSION_POWER_W = 7_400.0
"""Charging power at which a car that tells nothing is weighed (32 A on one phase)."""
UNKNOWN_SESSION_WEIGHT = LAXITY_REFERENCE_H / (DEFAULT_DWELL_S / 3600.0 - DEFAULT_ENERGY_WH / UNKNOWN_SESSION_POWER_W)
"""Weight of a car whose departure and energy are both unknown: the defaults' laxity at
``UNKNOWN_SESSION_POWER_W`` (about 0.19), the same for every such car whatever its maximum,
so a site without session data shares power evenly in W, as before laxity weights; a car that
announces its needs is weighed against it."""


@njit(cache=True)
def _laxity_weight(
    needed_wh: float,
    departure_at_s: float,
    max_power_w: float,
    now_s: float,
    urgency_min: float,
    urgency_max: float,
) -> float:
    """Sharing weight from laxity: time left minus the time needed at the car's maximum power.

    ``LAXITY_REFERENCE_H / laxity_h`` clipped to ``[urgency_min, urgency_max]``: 1 h of slack
    weighs 1, 6 min or less (or a car that can no longer finish) ``urgency_max``, 10 h or more
    ``urgency_min`` (with the defaults 0.1 and 10). A car that needs nothing more weighs
    ``urgency_min``. A car that tells neither weighs ``UNKNOWN_SESSION_WEIGHT`` (so a site
    without session data shares evenly in W, as before laxity weights: on the quality bench's
    unknown-departure day this delivers 0.5–1 point more than weighing such cars by the
    defaults' laxity at their own maximum); one that tells only one of the two is weighed with
    ``DEFAULT_DWELL_S`` from now or ``DEFAULT_ENERGY_WH`` for the other. A car that cannot take
    power (maximum 0) weighs 1.
    """
    if max_power_w <= 0.0:
        return 1.0
    if math.isnan(needed_wh) and math.isnan(departure_at_s):
        return UNKNOWN_SESSION_WEIGHT
    if math.isnan(needed_wh):
        needed_wh = DEFAULT_ENERGY_WH
    if needed_wh <= 0.0:
        return urgency_min
    hours_left = (DEFAULT_DWELL_S if math.isnan(departure_at_s) else departure_at_s - now_s) / 3600.0
    laxity_h = hours_left - needed_wh / max_power_w
    if laxity_h * urgency_max <= LAXITY_REFERENCE_H:
        return urgency_max
    return min(urgency_max, max(urgency_min, LAXITY_REFERENCE_H / laxity_h))


@njit(cache=True)
def columns_kernel(
    columns: np.ndarray,
    is_dc: np.ndarray,
    min_setpoint: np.ndarray,
    max_setpoint: np.ndarray,
    voltage_v: float,
    state: np.ndarray,
    memory: np.ndarray,
    same_session: np.ndarray,
    phases_used: np.ndarray,
    measured: np.ndarray,
    now_s: float,
    settle_time_s: float,
    min_off_time_s: float,
    ramp_a: float,
    follow_tolerance_a: float,
    demand_slack_a: float,
    admission_hysteresis_a: float,
    urgency_min: float,
    urgency_max: float,
) -> tuple[np.ndarray, ...]:
    """Per problem column: power per unit, bounds, previous setpoint, ramp, urgency, waiting and
    on-time, and the demand cap (NaN: none).

    The urgency is laxity-based (see ``_laxity_weight``): the less slack a car has before its
    departure at its maximum power, the larger its share.
    """
    n = columns.shape[0]
    power_per_unit_w = np.zeros(n)
    lowest = np.zeros(n)
    highest = np.zeros(n)
    previous = np.zeros(n)
    ramp = np.zeros(n)
    urgency = np.ones(n)
    waiting_s = np.zeros(n)
    on_time_s = np.zeros(n)
    demand_cap = np.full(n, np.nan)
    for c in range(n):
        e = columns[c]
        dc = is_dc[e]
        power_per_unit_w[c] = 1.0 if dc else voltage_v * phases_used[e]
        low, high = min_setpoint[e], max_setpoint[e]
        ev_max_a = state[e, S_EV_MAX_A]
        if not dc and not math.isnan(ev_max_a):
            high = min(high, ev_max_a)
        setpoint = memory[e, M_SETPOINT]
        previous_a = _per_phase_a(setpoint, dc, voltage_v)
        drawn_a = _max_a(measured, e)

        # The most the car will take, when it takes clearly less than offered.
        if not dc and state[e, S_HAS_PHASE_CURRENT] > 0:
            cap = memory[e, M_DEMAND_CAP] if same_session[e] else np.nan
            if not math.isnan(cap) and drawn_a >= cap - follow_tolerance_a:
                cap = np.nan
            changed_at_s = memory[e, M_CHANGED]
            steady = not math.isnan(changed_at_s) and now_s - changed_at_s >= settle_time_s
            if math.isnan(cap) and steady and drawn_a + demand_slack_a < previous_a:
                cap = float(math.floor(drawn_a + demand_slack_a))
            if not math.isnan(cap):
                cap = max(min_setpoint[e], cap)
                demand_cap[c] = cap
                high = min(high, cap)

        paused_at_s = memory[e, M_PAUSED]
        if setpoint == 0 and not math.isnan(paused_at_s) and now_s - paused_at_s < min_off_time_s:
            high = 0.0  # below the minimum off time: the solvers can only keep it paused
        elif setpoint == 0 and not dc and high >= low + admission_hysteresis_a:
            low += admission_hysteresis_a
        lowest[c], highest[c], previous[c] = low, high, setpoint
        ramp[c] = ramp_a * 3.0 * voltage_v if dc else ramp_a

        urgency[c] = _laxity_weight(
            state[e, S_ENERGY_NEEDED], state[e, S_DEPARTURE], high * power_per_unit_w[c], now_s,
            urgency_min, urgency_max,
        )  # fmt: skip
        wanting_since_s, admitted_since_s = memory[e, M_WANTING], memory[e, M_ADMITTED]
        waiting_s[c] = 0.0 if math.isnan(wanting_since_s) else now_s - wanting_since_s
        on_time_s[c] = 0.0 if math.isnan(admitted_since_s) else now_s - admitted_since_s
    return power_per_unit_w, lowest, highest, previous, ramp, urgency, waiting_s, on_time_s, demand_cap


@njit(cache=True)
def _since(began: float, holds: bool, now_s: float) -> float:
    """When a condition began: kept while it holds (an unset or zero time starts now), else unset."""
    if not holds:
        return np.nan
    return now_s if math.isnan(began) or began == 0 else began


@njit(cache=True)
def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@njit(cache=True)
def memory_kernel(
    is_dc: np.ndarray,
    voltage_v: float,
    memory: np.ndarray,
    new_session: np.ndarray,
    mode: np.ndarray,
    phases_used: np.ndarray,
    measured: np.ndarray,
    target: np.ndarray,
    demand_cap: np.ndarray,
    now_s: float,
    settle_time_s: float,
    follow_tolerance_a: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each EVSE's memory after this cycle's targets, and whether it differs from ``memory``."""
    size = is_dc.shape[0]
    out = memory.copy()
    changed = np.zeros(size, np.bool_)
    for e in range(size):
        old = memory[e].copy()
        if new_session[e]:
            # A new session: forget the last one's history, but the charger still holds its limit.
            for field in (M_ADMITTED, M_WANTING, M_PAUSED, M_CHANGED, M_PHASES, M_DEMAND_CAP):
                old[field] = np.nan
        previous, value = old[M_SETPOINT], target[e]
        active = mode[e] == ACTIVE
        new = out[e]
        new[M_SETPOINT] = value
        cut_from, cut_at_s = old[M_CUT_FROM], old[M_CUT_AT]
        if value < previous:
            # Remembered from the highest setpoint since, until the meter shows it or a settle time passed.
            new[M_CUT_FROM] = max(previous, 0.0 if math.isnan(cut_from) else cut_from)
            new[M_CUT_AT] = now_s
        elif not math.isnan(cut_at_s):
            value_a = _per_phase_a(value, is_dc[e], voltage_v)
            drawn_a = _max_a(measured, e)
            if drawn_a <= value_a + follow_tolerance_a or now_s - cut_at_s >= settle_time_s:
                new[M_CUT_FROM], new[M_CUT_AT] = np.nan, np.nan
        new[M_ADMITTED] = _since(old[M_ADMITTED], value > 0, now_s)
        new[M_WANTING] = _since(old[M_WANTING], active and value == 0, now_s)
        new[M_PAUSED] = now_s if previous > 0 and value == 0 else old[M_PAUSED]
        new[M_CHANGED] = now_s if value != previous else old[M_CHANGED]
        new[M_PHASES] = phases_used[e] if active else old[M_PHASES]
        new[M_DEMAND_CAP] = demand_cap[e] if active else old[M_DEMAND_CAP]
        for column in range(memory.shape[1]):
            if not _same(new[column], memory[e, column]):
                changed[e] = True
    return out, changed


def warm_up() -> float:
    """Compile (or load from numba's cache) the kernels on a one-EVSE fleet; returns the seconds spent."""
    started = time.perf_counter()
    one_bool, one_int = np.zeros(1, np.bool_), np.ones(1, np.int64)
    state, memory = np.zeros((1, STATE_FIELDS)), np.zeros((1, MEMORY_FIELDS))
    viewed = view_kernel(
        one_bool, one_int * 3, np.zeros((1, 3), np.int64), np.ones(1), np.zeros(1, np.int64),
        np.zeros(1, np.int64), 1, 230.0, state, memory, one_bool, 0.0, 1.0, 6.0, 1.0, 2.0, 0.5,
    )  # fmt: skip
    columns_kernel(
        np.zeros(1, np.int64), one_bool, np.ones(1), np.ones(1), 230.0, state, memory, one_bool, one_int,
        viewed[3], 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.1, 10.0,
    )  # fmt: skip
    memory_kernel(
        one_bool, 230.0, memory, one_bool, viewed[0], one_int, viewed[3], np.zeros(1), np.zeros(1), 0.0, 1.0, 1.0
    )
    return time.perf_counter() - started
