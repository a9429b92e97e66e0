"""Stage an allocation's raises so the transition to it never overloads a row (numba).

The solvers move every car at once; the cars do not: a cut takes effect seconds later, so for
a while a cut car still draws its previous setpoint while a raised car may already draw its new
one. Where that transition load (``max(previous, new)`` per car) would exceed a row, some raises
must wait for the cuts to land. Deferring every raise on such a row is safe but, on a large
site where some car on the main fuse is cut nearly every cycle, it defers every start there
again and again: a car past its maximum wait never starts. So the raises go back one at a time
in turn order (priority class, then cars past the maximum wait by longest wait, then weight)
while the transition still fits every row; the rest wait a cycle.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from evdlm_solvers.heuristic import _add_load, _fits
from evdlm_solvers.problem import Allocation, BoolArray, FloatArray, IntArray, Problem


@njit(cache=True)
def _stage_raises_kernel(
    indptr: IntArray,
    rows: IntArray,
    coefs: FloatArray,
    capacity: FloatArray,
    previous: FloatArray,
    setpoint: FloatArray,
    order: IntArray,
) -> tuple[FloatArray, int]:
    """(staged setpoints, raises deferred): ``setpoint`` with raises that do not fit held at
    ``previous``; ``capacity`` is each row's room for the EVs (row unit)."""
    staged = np.minimum(previous, setpoint)
    load = np.zeros(capacity.shape[0], dtype=np.float64)
    for j in range(setpoint.shape[0]):
        _add_load(j, previous[j] if previous[j] > staged[j] else staged[j], indptr, rows, coefs, load)
    deferred = 0
    for j in order:
        raise_by = setpoint[j] - previous[j]
        if raise_by <= 1e-9:
            staged[j] = setpoint[j]  # no raise to speak of: the new setpoint as it is
            continue
        if _fits(j, raise_by, indptr, rows, coefs, load, capacity):
            staged[j] = setpoint[j]
            _add_load(j, raise_by, indptr, rows, coefs, load)
        else:
            deferred += 1
    return staged, deferred


def raise_order(problem: Problem) -> IntArray:
    """Turn order of the raises: priority class, then past the maximum wait (longest first),
    then weight (urgency), stable by column."""
    overdue_wait_s = np.where(problem.waiting_s >= problem.rotation_period_s, problem.waiting_s, 0.0)
    order: IntArray = np.lexsort((-problem.urgency, -overdue_wait_s, problem.priority))
    return order


def stage_raises(problem: Problem, allocation: Allocation) -> tuple[Allocation, int]:
    """``allocation`` with the raises the transition from ``problem.setpoint_previous`` cannot
    hold deferred (kept at the previous setpoint), and how many were deferred.

    Rows already over their limit with every raise deferred (uncontrolled load) take no raise.
    """
    capacity = problem.row_headroom.astype(np.float64).copy()
    np.subtract.at(capacity, problem.battery_coef_row, problem.battery_coef_value * allocation.battery_w)
    staged, deferred = _stage_raises_kernel(
        problem.coef_indptr,
        problem.coef_row,
        problem.coef_value,
        capacity + 1e-6,
        problem.setpoint_previous.astype(np.float64),
        allocation.setpoint.astype(np.float64),
        raise_order(problem),
    )
    if deferred == 0:
        return allocation, 0
    admitted: BoolArray = staged > 0.0
    return Allocation(setpoint=staged, battery_w=allocation.battery_w, admitted=admitted), deferred
