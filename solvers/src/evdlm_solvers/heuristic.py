"""Greedy admission at the minimum, rotation, then weighted max-min water-filling (numba).

One cycle costs O(nnz log nnz) plus the rotation search, which the event cap bounds:

1. Battery: discharge as far as the rows with a positive battery coefficient (export) allow,
   so the EVs see the most import headroom; it is settled back towards 0 at the end.
2. Admission: eligible EVSEs in order of priority class, then already charging first (no
   flapping), then urgency, each admitted at its minimum if every row still fits.
3. Rotation: a paused car waiting longer than the rotation period displaces the admitted
   car of the same or a lower priority class with the longest on-time past the minimum
   on-time, if that makes room (when no single car does: such cars on the rows that block
   it, longest on-time first, until together they make room); then the leftover room is
   offered again in admission order. A car never displaces a higher class: classes are
   strict, so rotation guarantees turns within a class, not across classes.
4. Water-filling per priority class (0 first): every admitted car of the class rises from
   its base at a rate proportional to its urgency in W, until its own upper bound (max,
   ramp-up) or a row saturates; an event heap keeps this O(nnz log nnz) instead of
   O(events x nnz).
5. Whole amps: AC setpoints are floored to whole amps and the amps this frees go back one
   at a time in weight order (priority class, then urgency), or start a deferred car at its
   minimum, while every row fits; the checker sees exactly what is dispatched.
6. Battery settled to the value nearest 0 that keeps every row feasible.

Admission by fill (issue 14; ``defer_by_share``, on by default): before step 2, a pass A
fills every eligible car from 0 A with the same weights (about 2x the cost of one fill).
A car whose share is below its minimum (which the builder raises by the admission
hysteresis for a paused AC car; a charging car only below half its minimum) is deferred,
unless inside its minimum on-time or waiting past ``rotation_period_s`` (the maximum wait:
such cars are admitted with the charging cars, longest wait first, ahead of newcomers).
Step 2 then admits among the kept cars, which hold their pass-A share where it fits, and
the fill starts from there; a deferred car starts only in room left beside those shares
(late admission, charging cars first). Without it (``defer_by_share=False``) every car is
a candidate for step 2 and the fill starts from the minimums, as before issue 14.

Negative coefficients (EVs on an export row) only relax a row; they are ignored when
sizing, which is conservative. Rows with negative headroom give the EVs on them no room.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

import numpy as np
from numba import njit
from numpy.typing import NDArray

from evdlm_solvers.problem import (
    UNIT_CURRENT_A,
    Allocation,
    BoolArray,
    FloatArray,
    IntArray,
    Problem,
)

DEFAULT_MAX_EVENTS: Final = 1_000_000
"""Default cap on water-filling events and rotation probes per cycle.

Each event freezes a car or saturates a row, so a full solve needs at most
``n_evse + n_rows`` events; the cap only bounds pathological inputs. When it is hit the
cars still rising stop where they are, which keeps every row feasible.
"""

DEFER_BY_SHARE: Final = True
"""Admission by fill (pass A) by default; False gives the admission at the minimum of before
issue 14 (every car that fits runs at its minimum at least), kept for comparison."""

_WHOLE_AMP_ROUNDS: Final = 4
"""Rounds of handing out whole amps after flooring (each gives every car at most 1 A)."""

_KEEP_SHARE_FRACTION: Final = 0.5
"""A charging car stays kept while its pass-A share is at least this fraction of its minimum."""

_SHORT_ROW: Final = 64
"""Rows with at most this many EVSEs are searched directly for a rotation victim."""


@njit(cache=True)
def _battery_fill_w(
    headroom: FloatArray,
    battery_row: IntArray,
    battery_coef: FloatArray,
    discharge_max_w: float,
    charge_max_w: float,
) -> float:
    """Battery setpoint the EVs are sized against, W (as much discharge as rows allow)."""
    lower = -charge_max_w
    upper = discharge_max_w
    for k in range(battery_row.shape[0]):
        coef = battery_coef[k]
        slack = headroom[battery_row[k]]
        if coef > 0.0:
            upper = min(upper, slack / coef)
        elif coef < 0.0:
            lower = max(lower, slack / coef)
    if lower > upper:
        # No battery setpoint satisfies every battery row even with the EVs paused: the
        # import side is over its limit by uncontrolled load. Discharge as far as the export
        # rows allow, which shrinks the overload without breaking another row.
        return max(upper, -charge_max_w)
    return upper


@njit(cache=True)
def _capacity_kernel(
    headroom: FloatArray,
    battery_row: IntArray,
    battery_coef: FloatArray,
    discharge_max_w: float,
    charge_max_w: float,
) -> tuple[FloatArray, float]:
    """Room for the EVs per row (>= 0, row unit) and the battery setpoint it assumes (W)."""
    battery_fill_w = _battery_fill_w(headroom, battery_row, battery_coef, discharge_max_w, charge_max_w)
    capacity = headroom.copy()
    for k in range(battery_row.shape[0]):
        capacity[battery_row[k]] -= battery_coef[k] * battery_fill_w
    for r in range(capacity.shape[0]):
        capacity[r] = max(capacity[r], 0.0)
    return capacity, battery_fill_w


@njit(cache=True)
def _settle_battery_w(
    headroom: FloatArray,
    ev_load: FloatArray,
    battery_row: IntArray,
    battery_coef: FloatArray,
    discharge_max_w: float,
    charge_max_w: float,
    battery_fill_w: float,
) -> float:
    """Battery setpoint nearest 0 that keeps every battery row feasible given the EV load, W."""
    lower = -charge_max_w
    upper = discharge_max_w
    for k in range(battery_row.shape[0]):
        coef = battery_coef[k]
        slack = headroom[battery_row[k]] - ev_load[battery_row[k]]
        if coef > 0.0:
            upper = min(upper, slack / coef)
        elif coef < 0.0:
            lower = max(lower, slack / coef)
    if lower > upper:
        return battery_fill_w
    return min(max(0.0, lower), upper)


@njit(cache=True)
def _row_lists(indptr: IntArray, rows: IntArray, coefs: FloatArray, n_rows: int) -> tuple[IntArray, IntArray]:
    """Transpose of the positive coefficients: row ``r``'s EVSEs are
    ``row_evse[row_ptr[r]:row_ptr[r + 1]]``, in index order."""
    row_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    for k in range(rows.shape[0]):
        if coefs[k] > 0.0:
            row_ptr[rows[k] + 1] += 1
    for r in range(n_rows):
        row_ptr[r + 1] += row_ptr[r]
    fill = row_ptr[:-1].copy()
    row_evse = np.empty(row_ptr[n_rows], dtype=np.int64)
    for j in range(indptr.shape[0] - 1):
        for k in range(indptr[j], indptr[j + 1]):
            if coefs[k] > 0.0:
                row_evse[fill[rows[k]]] = j
                fill[rows[k]] += 1
    return row_ptr, row_evse


@njit(cache=True)
def _fits(
    j: int,
    amount: float,
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    load: FloatArray,
    capacity: FloatArray,
) -> bool:
    for k in range(indptr[j], indptr[j + 1]):
        if coefs[k] > 0.0 and load[rows[k]] + coefs[k] * amount > capacity[rows[k]]:
            return False
    return True


@njit(cache=True)
def _add_load(
    j: int,
    amount: float,
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    load: FloatArray,
) -> None:
    for k in range(indptr[j], indptr[j + 1]):
        if coefs[k] > 0.0:
            load[rows[k]] += coefs[k] * amount


@njit(cache=True)
def _class_count(priority: IntArray) -> int:
    """Number of priority classes to bucket (highest class number + 1).

    Taken from the data rather than from ``problem.PRIORITY_CLASS_COUNT``: numba freezes
    globals into its cache, which only notices edits to this file.
    """
    return int(priority.max()) + 1 if priority.shape[0] > 0 else 1


@njit(cache=True)
def _stable_by_class(order: IntArray, group: IntArray, n_groups: int) -> IntArray:
    """``order`` regrouped by ``group[order]`` (0 first), keeping order within a group."""
    start = np.zeros(n_groups + 1, dtype=np.int64)
    for j in order:
        start[group[j] + 1] += 1
    for g in range(n_groups):
        start[g + 1] += start[g]
    result = np.empty(order.shape[0], dtype=np.int64)
    for j in order:
        result[start[group[j]]] = j
        start[group[j]] += 1
    return result


@njit(cache=True)
def _admission_order(priority: IntArray, charging: BoolArray, urgency: FloatArray) -> IntArray:
    """EVSE indices by priority class, then charging first, then urgency (descending).

    One stable float sort plus a counting sort: ties keep index order, so the jitted
    kernel and its ``py_func`` agree exactly.
    """
    group = 2 * priority + np.where(charging, 0, 1)
    by_urgency = np.argsort(-urgency, kind="mergesort")
    return _stable_by_class(by_urgency, group, 2 * _class_count(priority))


@njit(cache=True)
def _find_victim(
    d: int,
    blocking_row: int,
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    row_ptr: IntArray,
    row_evse: IntArray,
    by_on_time: IntArray,
    load: FloatArray,
    capacity: FloatArray,
    setpoint_min: FloatArray,
    admitted: BoolArray,
    charging: BoolArray,
    priority: IntArray,
    on_time_s: FloatArray,
    min_on_time_s: float,
) -> tuple[int, int]:
    """The longest-on car whose removal lets ``d`` in at its minimum; (victim or -1, probes).

    Candidates must carry load on ``d``'s most selective blocking row. A short row's
    list is scanned whole; for a long row (the grid connection) ``by_on_time`` (the
    displaceable cars, longest on-time first) is searched, and the first car that makes
    room is the answer.
    """
    probes = 0
    victim = -1
    row_size = row_ptr[blocking_row + 1] - row_ptr[blocking_row]
    scan_row = row_size <= _SHORT_ROW
    n_candidates = row_size if scan_row else by_on_time.shape[0]
    for i in range(n_candidates):
        v = row_evse[row_ptr[blocking_row] + i] if scan_row else by_on_time[i]
        probes += 1
        if not (
            admitted[v]
            and charging[v]
            and setpoint_min[v] > 0.0
            and priority[v] >= priority[d]
            and on_time_s[v] >= min_on_time_s
        ):
            continue
        if victim >= 0 and on_time_s[v] <= on_time_s[victim]:
            continue
        if not scan_row:
            on_row = False
            for k in range(indptr[v], indptr[v + 1]):
                if rows[k] == blocking_row and coefs[k] > 0.0:
                    on_row = True
            if not on_row:
                continue
        _add_load(v, -setpoint_min[v], indptr, rows, coefs, load)
        makes_room = _fits(d, setpoint_min[d], indptr, rows, coefs, load, capacity)
        _add_load(v, setpoint_min[v], indptr, rows, coefs, load)
        if makes_room:
            victim = v
            if not scan_row:
                break
    return victim, probes


@njit(cache=True)
def _relieves(
    v: int,
    d: int,
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    load: FloatArray,
    capacity: FloatArray,
    setpoint_min: FloatArray,
) -> bool:
    """True if ``v`` carries load on a row that still keeps ``d`` from its minimum."""
    for k in range(indptr[d], indptr[d + 1]):
        r = rows[k]
        if coefs[k] <= 0.0 or load[r] + coefs[k] * setpoint_min[d] <= capacity[r]:
            continue
        for m in range(indptr[v], indptr[v + 1]):
            if rows[m] == r and coefs[m] > 0.0:
                return True
    return False


@njit(cache=True)
def _find_victims(
    d: int,
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    by_on_time: IntArray,
    load: FloatArray,
    capacity: FloatArray,
    setpoint_min: FloatArray,
    admitted: BoolArray,
    charging: BoolArray,
    priority: IntArray,
    on_time_s: FloatArray,
    min_on_time_s: float,
    victims: IntArray,
) -> tuple[int, int]:
    """Longest-on cars, each on a row still blocking ``d``, whose removal together lets it in.

    Used when no single car makes room (a 3-phase car behind 1-phase cars on different
    phases); without it such a car could wait forever. Fills ``victims`` and returns
    (count or 0, probes); the load is left without the victims only when they suffice.
    """
    count = 0
    probes = 0
    for i in range(by_on_time.shape[0]):
        v = by_on_time[i]
        probes += 1
        if not (
            admitted[v]
            and charging[v]
            and setpoint_min[v] > 0.0
            and priority[v] >= priority[d]
            and on_time_s[v] >= min_on_time_s
        ):
            continue
        if not _relieves(v, d, indptr, rows, coefs, load, capacity, setpoint_min):
            continue
        _add_load(v, -setpoint_min[v], indptr, rows, coefs, load)
        victims[count] = v
        count += 1
        if _fits(d, setpoint_min[d], indptr, rows, coefs, load, capacity):
            return count, probes
    for i in range(count):
        _add_load(victims[i], setpoint_min[victims[i]], indptr, rows, coefs, load)
    return 0, probes


@njit(cache=True)
def _add_displaceable(
    v: int,
    amount: float,
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    priority: IntArray,
    displaceable_load: FloatArray,
) -> None:
    for k in range(indptr[v], indptr[v + 1]):
        if coefs[k] > 0.0:
            displaceable_load[priority[v], rows[k]] += coefs[k] * amount


@njit(cache=True)
def _room_possible(
    d: int,
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    load: FloatArray,
    capacity: FloatArray,
    setpoint_min: FloatArray,
    priority: IntArray,
    displaceable_load: FloatArray,
) -> bool:
    """False when ``d`` would not fit even with every car it may displace gone."""
    for k in range(indptr[d], indptr[d + 1]):
        if coefs[k] <= 0.0:
            continue
        r = rows[k]
        lowest = load[r]
        for c in range(priority[d], displaceable_load.shape[0]):
            lowest -= displaceable_load[c, r]
        if lowest + coefs[k] * setpoint_min[d] > capacity[r]:
            return False
    return True


@njit(cache=True)
def _admit_kernel(
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    row_ptr: IntArray,
    row_evse: IntArray,
    capacity: FloatArray,
    setpoint_min: FloatArray,
    setpoint_upper: FloatArray,
    charging: BoolArray,
    priority: IntArray,
    urgency: FloatArray,
    waiting_s: FloatArray,
    on_time_s: FloatArray,
    rotation_period_s: float,
    min_on_time_s: float,
    max_probes: int,
) -> BoolArray:
    """Admission at the minimum with rotation over every EVSE (no pass A)."""
    return _admit_among_kernel(
        indptr,
        rows,
        coefs,
        row_ptr,
        row_evse,
        capacity,
        setpoint_min,
        setpoint_upper,
        charging,
        priority,
        urgency,
        waiting_s,
        on_time_s,
        rotation_period_s,
        min_on_time_s,
        max_probes,
        np.ones(setpoint_min.shape[0], dtype=np.bool_),
    )


@njit(cache=True)
def _admit_among_kernel(
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    row_ptr: IntArray,
    row_evse: IntArray,
    capacity: FloatArray,
    setpoint_min: FloatArray,
    setpoint_upper: FloatArray,
    charging: BoolArray,
    priority: IntArray,
    urgency: FloatArray,
    waiting_s: FloatArray,
    on_time_s: FloatArray,
    rotation_period_s: float,
    min_on_time_s: float,
    max_probes: int,
    candidate: BoolArray,
) -> BoolArray:
    """Admission at the minimum with rotation among ``candidate``; module docstring, step 3.

    ``capacity`` is each row's room for the EVs (>= 0, row unit). Returns the admitted mask.
    """
    n_evse = setpoint_min.shape[0]
    eligible = candidate & (setpoint_upper >= setpoint_min) & (setpoint_upper > 0.0)
    admitted = np.zeros(n_evse, dtype=np.bool_)
    load = np.zeros(capacity.shape[0], dtype=np.float64)
    order = _admission_order(priority, charging, urgency)
    for j in order:
        if eligible[j] and _fits(j, setpoint_min[j], indptr, rows, coefs, load, capacity):
            admitted[j] = True
            _add_load(j, setpoint_min[j], indptr, rows, coefs, load)

    displaced = np.zeros(n_evse, dtype=np.bool_)
    due = np.flatnonzero(eligible & ~admitted & (waiting_s >= rotation_period_s) & (setpoint_min > 0.0))
    if due.shape[0] == 0:
        return admitted
    # Longest-waiting first within a class.
    due = _stable_by_class(due[np.argsort(-waiting_s[due], kind="mergesort")], priority, _class_count(priority))
    # Cars that may be displaced at all, longest on-time first; displacing one only ever
    # removes it, so the list stays valid (with an admitted check) for the whole cycle.
    displaceable = np.flatnonzero(admitted & charging & (setpoint_min > 0.0) & (on_time_s >= min_on_time_s))
    by_on_time = displaceable[np.argsort(-on_time_s[displaceable], kind="mergesort")]
    # Minimum load of the displaceable cars per class and row: a due car that would not
    # fit even with all of them gone is skipped without a search (most overdue cars on a
    # full site), which keeps rotation near O(nnz) per cycle.
    displaceable_load = np.zeros((_class_count(priority), capacity.shape[0]), dtype=np.float64)
    for v in by_on_time:
        _add_displaceable(v, setpoint_min[v], indptr, rows, coefs, priority, displaceable_load)
    victims = np.empty(n_evse, dtype=np.int64)
    probes = 0
    for due_index in range(due.shape[0]):
        d = int(due[due_index])
        if probes >= max_probes:
            break
        probes += 1
        if not _room_possible(d, indptr, rows, coefs, load, capacity, setpoint_min, priority, displaceable_load):
            continue
        # Only a victim on the blocking row with the fewest EVSEs can make room there.
        blocking_row = -1
        for k in range(indptr[d], indptr[d + 1]):
            r = rows[k]
            if coefs[k] > 0.0 and load[r] + coefs[k] * setpoint_min[d] > capacity[r]:
                count = row_ptr[r + 1] - row_ptr[r]
                if blocking_row < 0 or count < row_ptr[blocking_row + 1] - row_ptr[blocking_row]:
                    blocking_row = r
        if blocking_row < 0:
            admitted[d] = True
            _add_load(d, setpoint_min[d], indptr, rows, coefs, load)
            continue
        victim, used = _find_victim(
            d,
            blocking_row,
            indptr,
            rows,
            coefs,
            row_ptr,
            row_evse,
            by_on_time,
            load,
            capacity,
            setpoint_min,
            admitted,
            charging,
            priority,
            on_time_s,
            min_on_time_s,
        )
        probes += used
        if victim >= 0:
            admitted[victim] = False
            displaced[victim] = True
            _add_load(victim, -setpoint_min[victim], indptr, rows, coefs, load)
            _add_displaceable(victim, -setpoint_min[victim], indptr, rows, coefs, priority, displaceable_load)
            admitted[d] = True
            _add_load(d, setpoint_min[d], indptr, rows, coefs, load)
            continue
        n_victims, used = _find_victims(
            d,
            indptr,
            rows,
            coefs,
            by_on_time,
            load,
            capacity,
            setpoint_min,
            admitted,
            charging,
            priority,
            on_time_s,
            min_on_time_s,
            victims,
        )
        probes += used
        for i in range(n_victims):
            v = victims[i]
            admitted[v] = False
            displaced[v] = True
            _add_displaceable(v, -setpoint_min[v], indptr, rows, coefs, priority, displaceable_load)
        if n_victims > 0:
            admitted[d] = True
            _add_load(d, setpoint_min[d], indptr, rows, coefs, load)

    # Room a displaced car left beyond what its successor needs goes to the next in line.
    for j in order:
        if (
            eligible[j]
            and not admitted[j]
            and not displaced[j]
            and _fits(j, setpoint_min[j], indptr, rows, coefs, load, capacity)
        ):
            admitted[j] = True
            _add_load(j, setpoint_min[j], indptr, rows, coefs, load)
    return admitted


@njit(cache=True)
def _heap_push(
    heap_time: FloatArray,
    heap_id: IntArray,
    heap_version: IntArray,
    size: int,
    event_time: float,
    event_id: int,
    version: int,
) -> int:
    i = size
    heap_time[i] = event_time
    heap_id[i] = event_id
    heap_version[i] = version
    while i > 0:
        parent = (i - 1) // 2
        if heap_time[parent] <= heap_time[i]:
            break
        heap_time[parent], heap_time[i] = heap_time[i], heap_time[parent]
        heap_id[parent], heap_id[i] = heap_id[i], heap_id[parent]
        heap_version[parent], heap_version[i] = heap_version[i], heap_version[parent]
        i = parent
    return size + 1


@njit(cache=True)
def _sift_down(heap_time: FloatArray, heap_id: IntArray, heap_version: IntArray, size: int, i: int) -> None:
    while True:
        left = 2 * i + 1
        smallest = i
        if left < size and heap_time[left] < heap_time[smallest]:
            smallest = left
        if left + 1 < size and heap_time[left + 1] < heap_time[smallest]:
            smallest = left + 1
        if smallest == i:
            return
        heap_time[smallest], heap_time[i] = heap_time[i], heap_time[smallest]
        heap_id[smallest], heap_id[i] = heap_id[i], heap_id[smallest]
        heap_version[smallest], heap_version[i] = heap_version[i], heap_version[smallest]
        i = smallest


@njit(cache=True)
def _heap_pop(
    heap_time: FloatArray, heap_id: IntArray, heap_version: IntArray, size: int
) -> tuple[float, int, int, int]:
    """Remove the earliest event; returns (time, id, version, new size)."""
    top_time = heap_time[0]
    top_id = heap_id[0]
    top_version = heap_version[0]
    size -= 1
    heap_time[0] = heap_time[size]
    heap_id[0] = heap_id[size]
    heap_version[0] = heap_version[size]
    _sift_down(heap_time, heap_id, heap_version, size, 0)
    return top_time, top_id, top_version, size


@njit(cache=True)
def _freeze(
    j: int,
    level: float,
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    setpoint: FloatArray,
    base: FloatArray,
    setpoint_upper: FloatArray,
    rise_rate: FloatArray,
    active: BoolArray,
    remaining: FloatArray,
    row_rate: FloatArray,
    row_active: IntArray,
    row_since: FloatArray,
    dirty: BoolArray,
    dirty_rows: IntArray,
    n_dirty: int,
) -> int:
    """Stop EVSE ``j`` at fill ``level``; its rows become dirty. Returns the dirty count."""
    active[j] = False
    setpoint[j] = min(base[j] + rise_rate[j] * level, setpoint_upper[j])
    for k in range(indptr[j], indptr[j + 1]):
        if coefs[k] <= 0.0:
            continue
        r = rows[k]
        remaining[r] = max(remaining[r] - row_rate[r] * (level - row_since[r]), 0.0)
        row_since[r] = level
        row_rate[r] -= coefs[k] * rise_rate[j]
        row_active[r] -= 1
        if row_active[r] == 0:
            # Exactly 0: repeated subtraction would leave rounding noise.
            row_rate[r] = 0.0
        if not dirty[r]:
            dirty[r] = True
            dirty_rows[n_dirty] = r
            n_dirty += 1
    return n_dirty


@njit(cache=True)
def _fill_kernel(
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    row_ptr: IntArray,
    row_evse: IntArray,
    capacity: FloatArray,
    setpoint_base: FloatArray,
    setpoint_upper: FloatArray,
    admitted: BoolArray,
    priority: IntArray,
    rise_rate: FloatArray,
    max_events: int,
) -> tuple[FloatArray, int]:
    """Weighted max-min water-filling, one priority class after another.

    ``rise_rate`` is each EVSE's setpoint-unit increase per unit of the fill level (urgency
    per W of the setpoint unit), so within a class power rises in proportion to urgency.
    Returns the setpoints and the number of events used.
    """
    n_evse = setpoint_base.shape[0]
    n_rows = capacity.shape[0]
    setpoint = setpoint_base.copy()
    remaining = capacity.copy()
    for j in range(n_evse):
        for k in range(indptr[j], indptr[j + 1]):
            if coefs[k] > 0.0:
                remaining[rows[k]] -= coefs[k] * setpoint[j]
    for r in range(n_rows):
        remaining[r] = max(remaining[r], 0.0)

    heap_capacity = n_evse + n_rows + indptr[n_evse] + 1
    heap_time = np.empty(heap_capacity, dtype=np.float64)
    heap_id = np.empty(heap_capacity, dtype=np.int64)
    heap_version = np.empty(heap_capacity, dtype=np.int64)
    row_rate = np.zeros(n_rows, dtype=np.float64)
    row_active = np.zeros(n_rows, dtype=np.int64)
    row_since = np.zeros(n_rows, dtype=np.float64)
    row_version = np.zeros(n_rows, dtype=np.int64)
    active = np.zeros(n_evse, dtype=np.bool_)
    events = 0

    dirty = np.zeros(n_rows, dtype=np.bool_)
    dirty_rows = np.empty(n_rows, dtype=np.int64)

    candidates = np.flatnonzero(admitted & (setpoint_upper > setpoint) & (rise_rate > 0.0))
    by_class = _stable_by_class(candidates, priority, _class_count(priority))
    start = 0
    while start < by_class.shape[0]:
        stop = start
        while stop < by_class.shape[0] and priority[by_class[stop]] == priority[by_class[start]]:
            stop += 1
        members = by_class[start:stop]
        start = stop

        # The class's first events are written unordered and heapified in O(n).
        size = 0
        for j in members:
            active[j] = True
            heap_time[size] = (setpoint_upper[j] - setpoint[j]) / rise_rate[j]
            heap_id[size] = j
            heap_version[size] = 0
            size += 1
            for k in range(indptr[j], indptr[j + 1]):
                if coefs[k] > 0.0:
                    row_rate[rows[k]] += coefs[k] * rise_rate[j]
                    row_active[rows[k]] += 1
        for r in range(n_rows):
            row_since[r] = 0.0
            if row_active[r] > 0:
                row_version[r] += 1
                heap_time[size] = remaining[r] / row_rate[r]
                heap_id[size] = n_evse + r
                heap_version[size] = row_version[r]
                size += 1
        for i in range(size // 2 - 1, -1, -1):
            _sift_down(heap_time, heap_id, heap_version, size, i)
        base = setpoint.copy()
        level = 0.0
        while size > 0:
            level, event_id, version, size = _heap_pop(heap_time, heap_id, heap_version, size)
            n_dirty = 0
            if event_id < n_evse:
                if not active[event_id]:
                    continue
                n_dirty = _freeze(
                    event_id,
                    level,
                    indptr,
                    rows,
                    coefs,
                    setpoint,
                    base,
                    setpoint_upper,
                    rise_rate,
                    active,
                    remaining,
                    row_rate,
                    row_active,
                    row_since,
                    dirty,
                    dirty_rows,
                    n_dirty,
                )
            else:
                r = event_id - n_evse
                if version != row_version[r] or row_active[r] == 0:
                    continue
                for i in range(row_ptr[r], row_ptr[r + 1]):
                    if active[row_evse[i]]:
                        n_dirty = _freeze(
                            row_evse[i],
                            level,
                            indptr,
                            rows,
                            coefs,
                            setpoint,
                            base,
                            setpoint_upper,
                            rise_rate,
                            active,
                            remaining,
                            row_rate,
                            row_active,
                            row_since,
                            dirty,
                            dirty_rows,
                            n_dirty,
                        )
            # One new saturation time per touched row, however many of its cars stopped.
            for i in range(n_dirty):
                r = dirty_rows[i]
                dirty[r] = False
                if row_active[r] > 0:
                    row_version[r] += 1
                    size = _heap_push(
                        heap_time,
                        heap_id,
                        heap_version,
                        size,
                        level + remaining[r] / row_rate[r],
                        n_evse + r,
                        row_version[r],
                    )
            events += 1
            if events >= max_events:
                # Every pending event lies at or after `level`, so stopping here is feasible.
                for j in members:
                    if active[j]:
                        active[j] = False
                        setpoint[j] = min(base[j] + rise_rate[j] * level, setpoint_upper[j])
                return setpoint, events
    return setpoint, events


@njit(cache=True)
def _keep_kernel(
    share: FloatArray,
    setpoint_min: FloatArray,
    setpoint_upper: FloatArray,
    charging: BoolArray,
    waiting_s: FloatArray,
    on_time_s: FloatArray,
    rotation_period_s: float,
    min_on_time_s: float,
) -> BoolArray:
    """Pass A's verdict: the EVSEs that run this cycle if they fit at their minimum.

    Kept: a fair share (the fill from 0 A) at or above the minimum (for a paused AC car the
    builder has already added the admission hysteresis to its minimum); or a car inside its
    minimum on-time; or a paused car that has waited ``rotation_period_s`` or longer (the
    maximum wait). Everyone else is deferred: started or kept only with room left over.
    """
    n_evse = share.shape[0]
    keep = np.zeros(n_evse, dtype=np.bool_)
    for j in range(n_evse):
        if not (setpoint_upper[j] >= setpoint_min[j] and setpoint_upper[j] > 0.0):
            continue
        # A charging car stops only when its share falls well below its minimum: the
        # stopping side of the hysteresis (the builder adds the starting side).
        needed = setpoint_min[j] * (_KEEP_SHARE_FRACTION if charging[j] else 1.0)
        if (
            share[j] >= needed * (1.0 - 1e-9) - 1e-9
            or (charging[j] and on_time_s[j] < min_on_time_s)
            or (not charging[j] and waiting_s[j] >= rotation_period_s)
        ):
            keep[j] = True
    return keep


@njit(cache=True)
def _whole_amps_kernel(
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    capacity: FloatArray,
    evse_unit: NDArray[np.int8],
    setpoint: FloatArray,
    setpoint_min: FloatArray,
    setpoint_upper: FloatArray,
    admitted: BoolArray,
    startable: BoolArray,
    order: IntArray,
) -> None:
    """Floor AC setpoints to whole amps, then hand the freed amps back in ``order``.

    In place. An AC setpoint (A per phase) becomes a whole number of amps at or below it and
    still in ``[min, upper]`` (a setpoint whose floor falls below its minimum pauses the car).
    The amps this frees on every row go back one at a time, in ``order`` (priority class,
    then weight), to admitted cars below their upper bound, or start a ``startable`` paused
    car at its minimum, while every row still fits. DC setpoints are left as they are.
    """
    load = np.zeros(capacity.shape[0], dtype=np.float64)
    for j in range(setpoint.shape[0]):
        if evse_unit[j] == UNIT_CURRENT_A and setpoint[j] > 0.0:
            whole = math.floor(setpoint[j] + 1e-9)
            if whole < setpoint_min[j] - 1e-9 or whole <= 0.0:
                setpoint[j] = 0.0
                admitted[j] = False
            else:
                setpoint[j] = whole
        _add_load(j, setpoint[j], indptr, rows, coefs, load)
    # Each round gives every car at most 1 A; the flooring freed less than 1 A per car on a
    # row, so a few rounds use what can be used.
    for _ in range(_WHOLE_AMP_ROUNDS):
        changed = False
        for j in order:
            if evse_unit[j] != UNIT_CURRENT_A:
                # A DC car keeps its setpoint; a paused startable one may start at its minimum
                # in what the flooring freed (room no kept car uses any more).
                if setpoint[j] > 0.0 or not startable[j] or setpoint_min[j] <= 0.0:
                    continue
                step = setpoint_min[j]
            elif setpoint[j] > 0.0 or (admitted[j] and setpoint_min[j] <= 0.0):
                step = 1.0
            elif startable[j]:
                step = math.ceil(setpoint_min[j] - 1e-9)
                if step <= 0.0:
                    step = 1.0
            else:
                continue
            if setpoint[j] + step > setpoint_upper[j] + 1e-9:
                continue
            if not _fits(j, step, indptr, rows, coefs, load, capacity):
                continue
            setpoint[j] += step
            admitted[j] = True
            _add_load(j, step, indptr, rows, coefs, load)
            changed = True
        if not changed:
            break


@njit(cache=True)
def _allocate_kernel(
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    headroom: FloatArray,
    evse_unit: NDArray[np.int8],
    setpoint_min: FloatArray,
    setpoint_upper: FloatArray,
    charging: BoolArray,
    priority: IntArray,
    urgency: FloatArray,
    power_per_unit_w: FloatArray,
    waiting_s: FloatArray,
    on_time_s: FloatArray,
    rotation_period_s: float,
    min_on_time_s: float,
    battery_row: IntArray,
    battery_coef: FloatArray,
    battery_discharge_max_w: float,
    battery_charge_max_w: float,
    max_events: int,
    defer_by_share: bool,
    planned_share: FloatArray,
) -> tuple[FloatArray, float, BoolArray, int]:
    """The whole heuristic on plain arrays: (setpoint, battery W, admitted, events used).

    With ``defer_by_share`` False, pass A is skipped: everyone is a candidate for the
    admission at the minimum (the behaviour before issue 14's admission by fill).
    """
    n_rows = headroom.shape[0]
    n_evse = setpoint_min.shape[0]
    capacity, battery_fill_w = _capacity_kernel(
        headroom, battery_row, battery_coef, battery_discharge_max_w, battery_charge_max_w
    )
    row_ptr, row_evse = _row_lists(indptr, rows, coefs, n_rows)
    rise_rate = urgency / power_per_unit_w
    eligible = (setpoint_upper >= setpoint_min) & (setpoint_upper > 0.0)

    if defer_by_share:
        # Pass A: everyone's fair share from 0; who falls short of the minimum waits.
        share, events_a = _fill_kernel(
            indptr,
            rows,
            coefs,
            row_ptr,
            row_evse,
            capacity,
            np.zeros(n_evse),
            setpoint_upper,
            eligible,
            priority,
            rise_rate,
            max_events,
        )
        # A horizon plan's share replaces the fill's for the cars it covers: the plan sees the
        # hours ahead (prices, departures), the fill only this cycle.
        for j in range(n_evse):
            if not math.isnan(planned_share[j]) and eligible[j]:
                planned = min(planned_share[j], setpoint_upper[j])
                share[j] = max(share[j], planned) if charging[j] else planned
        keep = _keep_kernel(
            share,
            setpoint_min,
            setpoint_upper,
            charging,
            waiting_s,
            on_time_s,
            rotation_period_s,
            min_on_time_s,
        )
        overdue = ~charging & (waiting_s >= rotation_period_s)
        # Admission order inside the charging group: cars inside their minimum on-time,
        # then overdue cars by longest wait, then the rest by urgency (always < 1e12).
        order_key = np.where(
            charging & (on_time_s < min_on_time_s),
            2e12,
            np.where(overdue, 1e12 + waiting_s, urgency),
        )
    else:
        share = np.zeros(n_evse)
        events_a = 0
        keep = eligible.copy()
        overdue = np.zeros(n_evse, dtype=np.bool_)
        order_key = urgency
    # Pass B: admission at the minimum (with rotation) among the kept cars. A car past the
    # maximum wait goes in with the charging cars, longest wait first and ahead of
    # newcomers whose share made them kept: otherwise a newcomer, protected by its minimum
    # on-time, could take its place again and again.
    admitted = _admit_among_kernel(
        indptr,
        rows,
        coefs,
        row_ptr,
        row_evse,
        capacity,
        setpoint_min,
        setpoint_upper,
        charging | overdue,
        priority,
        order_key,
        waiting_s,
        on_time_s,
        rotation_period_s,
        min_on_time_s,
        max_events,
        keep,
    )
    # The kept cars hold their pass-A share where it still fits (a car forced in at its
    # minimum may have taken some); deferred cars start only in the room left beside those
    # shares, so they never take a kept car's share.
    by_urgency = np.argsort(-urgency, kind="mergesort")
    n_classes = _class_count(priority)
    by_weight = _stable_by_class(by_urgency, priority, n_classes)
    base = np.where(admitted, setpoint_min, 0.0)
    load = np.zeros(n_rows, dtype=np.float64)
    for j in range(n_evse):
        _add_load(j, base[j], indptr, rows, coefs, load)
    for j in by_weight:
        extra = share[j] - base[j]
        if admitted[j] and extra > 0.0 and _fits(j, extra, indptr, rows, coefs, load, capacity):
            base[j] = share[j]
            _add_load(j, extra, indptr, rows, coefs, load)
    deferred = eligible & ~keep
    if deferred.any():
        # Same order as the admission (_admission_order), from the one urgency sort.
        order = _stable_by_class(by_urgency, 2 * priority + np.where(charging, 0, 1), 2 * n_classes)
        for j in order:
            if deferred[j] and _fits(j, setpoint_min[j], indptr, rows, coefs, load, capacity):
                admitted[j] = True
                base[j] = setpoint_min[j]
                _add_load(j, setpoint_min[j], indptr, rows, coefs, load)
    setpoint, events = _fill_kernel(
        indptr,
        rows,
        coefs,
        row_ptr,
        row_evse,
        capacity,
        base,
        setpoint_upper,
        admitted,
        priority,
        rise_rate,
        max_events,
    )
    events += events_a

    _whole_amps_kernel(
        indptr,
        rows,
        coefs,
        capacity,
        evse_unit,
        setpoint,
        setpoint_min,
        setpoint_upper,
        admitted,
        deferred,
        by_weight,
    )
    ev_load = np.zeros(n_rows, dtype=np.float64)
    for j in range(n_evse):
        for k in range(indptr[j], indptr[j + 1]):
            ev_load[rows[k]] += coefs[k] * setpoint[j]
    battery_w = _settle_battery_w(
        headroom,
        ev_load,
        battery_row,
        battery_coef,
        battery_discharge_max_w,
        battery_charge_max_w,
        battery_fill_w,
    )
    return setpoint, battery_w, admitted, events


def kernel_arguments(
    problem: Problem, max_events: int = DEFAULT_MAX_EVENTS, defer_by_share: bool = DEFER_BY_SHARE
) -> tuple[Any, ...]:
    """Arguments of ``_allocate_kernel`` for ``problem`` (for parity tests and benchmarks)."""
    return (
        problem.coef_indptr,
        problem.coef_row,
        problem.coef_value,
        problem.row_headroom,
        problem.evse_unit,
        problem.setpoint_min,
        problem.setpoint_upper,
        problem.charging,
        problem.priority,
        problem.urgency,
        problem.power_per_unit_w,
        problem.waiting_s,
        problem.on_time_s,
        problem.rotation_period_s,
        problem.min_on_time_s,
        problem.battery_coef_row,
        problem.battery_coef_value,
        problem.battery_discharge_max_w,
        problem.battery_charge_max_w,
        int(max_events),
        bool(defer_by_share),
        problem.planned,
    )


def solve_heuristic(
    problem: Problem, max_events: int = DEFAULT_MAX_EVENTS, defer_by_share: bool = DEFER_BY_SHARE
) -> Allocation:
    """Allocate one cycle with the numba heuristic.

    Parameters
    ----------
    problem : Problem
        The cycle's problem.
    max_events : int
        Cap on water-filling events and rotation probes; when hit, the allocation stays
        feasible but may leave room unused.
    defer_by_share : bool
        Admission by fill (issue 14, pass A): cars whose fair share from 0 A is below their
        minimum wait, unless inside their minimum on-time or past the maximum wait (see the
        module docstring). False gives the admission at the minimum of before issue 14.

    Returns
    -------
    Allocation
        Setpoints (own unit), battery (W, + = discharge) and the admitted set.
    """
    setpoint, battery_w, admitted, _ = _allocate_kernel(*kernel_arguments(problem, max_events, defer_by_share))
    return Allocation(setpoint=setpoint, battery_w=battery_w, admitted=admitted)


def admit(problem: Problem, max_probes: int = DEFAULT_MAX_EVENTS, defer_by_share: bool = DEFER_BY_SHARE) -> BoolArray:
    """The heuristic's admitted set (pass A, admission, late starts), for the LP to fix.

    The whole heuristic runs: which cars run this cycle depends on pass A's fill and on the
    room the kept cars leave, so there is no cheaper step to take it from.
    """
    arguments = kernel_arguments(problem, max_probes, defer_by_share)
    admitted: BoolArray = _allocate_kernel(*arguments)[2]
    return admitted


def warm_up() -> float:
    """Compile (or load from the numba cache) every kernel before the first cycle.

    Returns
    -------
    float
        Wall time spent, s.
    """
    started = time.perf_counter()
    problem = Problem(
        row_headroom=np.array([32.0, 32.0, 32.0, 20000.0]),
        row_unit=np.array([0, 0, 0, 1]),
        row_parent=np.array([-1, -1, -1, -1]),
        coef_indptr=np.array([0, 4, 5, 9]),
        coef_row=np.array([0, 1, 2, 3, 0, 0, 1, 2, 3]),
        coef_value=np.array([1.0, 1.0, 1.0, 690.0, 1.0, 1 / 690, 1 / 690, 1 / 690, 1.0]),
        evse_unit=np.array([0, 0, 1]),
        power_per_unit_w=np.array([690.0, 230.0, 1.0]),
        setpoint_min=np.array([6.0, 6.0, 0.0]),
        setpoint_max=np.array([16.0, 32.0, 10000.0]),
        setpoint_previous=np.array([6.0, 0.0, 0.0]),
        ramp_up_max=np.array([np.inf, 4.0, 5000.0]),
        charging=np.array([True, False, False]),
        priority=np.array([0, 1, 1]),
        urgency=np.array([1.0, 2.0, 0.5]),
        waiting_s=np.array([0.0, 1000.0, 0.0]),
        on_time_s=np.array([600.0, 0.0, 0.0]),
        rotation_period_s=900.0,
        min_on_time_s=300.0,
        battery_discharge_max_w=5000.0,
        battery_charge_max_w=5000.0,
        battery_coef_row=np.array([3]),
        battery_coef_value=np.array([-1.0]),
    )
    solve_heuristic(problem)
    solve_heuristic(problem, defer_by_share=True)
    admit(problem)
    return time.perf_counter() - started
