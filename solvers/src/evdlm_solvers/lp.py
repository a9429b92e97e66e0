"""The cycle's LP on HiGHS (highspy, filled through evdlm_solvers.highs): the fallback and the heuristic's yardstick.

Same rows, bounds and admitted set as the heuristic; maximises priority/urgency-weighted
delivered power (:func:`~evdlm_solvers.problem.objective_weight`). The 0-or-at-least-min
semantics are handled by fixing the admitted set (the heuristic's admitted set by
default, so both solvers run the same cars; weights are the problem's laxity-based
urgency): admitted EVSEs are bounded to ``[min, upper]``, the others to 0. A MILP would
re-decide admission every cycle, which is a policy (no flapping, rotation, priority order)
rather than a throughput question, and its solve time has no useful bound (measured at
30-55x this LP up to 1000 EVSEs; benchmarks/README.md).

The battery is two non-negative columns (discharge, charge) with a cost of a thousandth of
the least valuable EV watt that can move, so it moves only when that lets the EVs take
more power.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import numpy as np

from evdlm_solvers.heuristic import admit
from evdlm_solvers.highs import INF, colwise_model, run
from evdlm_solvers.problem import Allocation, BoolArray, FloatArray, Problem, objective_weight

BATTERY_COST_FRACTION = 1e-3
"""Battery cost per W as a fraction of the least valuable EV W in the objective."""


class LpStatus(enum.Enum):
    """Outcome of one LP solve."""

    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    TIME_LIMIT = "time_limit"
    ERROR = "error"


@dataclass(frozen=True)
class LpResult:
    """What :func:`solve_lp` found.

    Parameters
    ----------
    status : LpStatus
        Only ``OPTIMAL`` carries an allocation.
    allocation : Allocation or None
        The optimum (setpoints in own units, battery W), None otherwise.
    objective : float
        Weighted delivered power at the optimum (see ``objective_weight``), NaN otherwise.
    solve_time_s : float
        Wall time building and solving the model, s.
    detail : str
        HiGHS's model status text.
    """

    status: LpStatus
    allocation: Allocation | None
    objective: float
    solve_time_s: float
    detail: str


def row_upper_bounds(problem: Problem) -> FloatArray:
    """Row bounds the LP enforces, row unit.

    A row the battery does not touch and that is already over its limit (negative
    headroom) cannot be helped by any setpoint: it is bounded at 0, so the EVSEs on it stay
    at 0 and the rest of the site still gets an optimum. Rows the battery touches keep
    their headroom, since discharging may bring them back.
    """
    upper = np.maximum(problem.row_headroom, 0.0)
    battery_rows = problem.battery_coef_row
    upper[battery_rows] = problem.row_headroom[battery_rows]
    return upper


def solve_lp(
    problem: Problem,
    admitted: BoolArray | None = None,
    time_limit_s: float = 1.0,
) -> LpResult:
    """Solve the cycle's LP with the admitted set fixed.

    Parameters
    ----------
    problem : Problem
        The cycle's problem.
    admitted : ndarray of bool, optional
        EVSEs allowed to run, shape (n_evse,); the heuristic's admitted set by default.
        An admitted EVSE is bounded to ``[setpoint_min, setpoint_upper]``.
    time_limit_s : float
        HiGHS time limit, s.

    Returns
    -------
    LpResult
        Status, allocation at the optimum, objective (weighted W) and timing.
    """
    started = time.perf_counter()
    if admitted is None:
        admitted = admit(problem)
    n_evse = problem.n_evse
    upper = problem.setpoint_upper
    runnable = admitted & (upper >= problem.setpoint_min)
    col_lower = np.where(runnable, problem.setpoint_min, 0.0)
    col_upper = np.where(runnable, upper, 0.0)

    weight = objective_weight(problem)
    # Costs scaled to at most 1 over the columns that can move keep HiGHS's optimality
    # tolerance meaningful; a paused class-0 car must not shrink everyone else's cost.
    movable = col_upper > col_lower
    scale = float(weight[movable].max()) if movable.any() else 1.0
    battery_cost = BATTERY_COST_FRACTION * float(
        (weight / problem.power_per_unit_w)[movable].min() if movable.any() else 1.0
    )
    battery_nnz = problem.battery_coef_row.size
    nnz = problem.coef_indptr[-1]
    model = colwise_model(
        maximize=True,
        col_cost=np.concatenate([weight, [-battery_cost, -battery_cost]]) / scale,
        col_lower=np.concatenate([col_lower, [0.0, 0.0]]),
        col_upper=np.concatenate([col_upper, [problem.battery_discharge_max_w, problem.battery_charge_max_w]]),
        row_lower=np.full(problem.n_rows, -INF),
        row_upper=row_upper_bounds(problem),
        start=np.concatenate([problem.coef_indptr, [nnz + battery_nnz, nnz + 2 * battery_nnz]]),
        index=np.concatenate([problem.coef_row, problem.battery_coef_row, problem.battery_coef_row]),
        # Discharge column carries the battery coefficients, the charge column their negation.
        value=np.concatenate([problem.coef_value, problem.battery_coef_value, -problem.battery_coef_value]),
    )
    solution = run(
        model,
        time_limit_s=max(time_limit_s, 1e-3),
        # Presolve costs more than it saves here (7x at 1000 EVSEs, 1.7x at 5000; see
        # benchmarks/README.md): the rows are few and already tight, the bounds explicit.
        presolve="off",
        # Weights span classes (100x each) and urgencies; at the default 1e-7 a cheap class-3
        # column could be left short of its optimum by more than the heuristic gets from it.
        dual_feasibility_tolerance=1e-9,
    )
    if solution.col_value is None:
        status = LpStatus(solution.status.value)
        return LpResult(status, None, float("nan"), time.perf_counter() - started, solution.detail)

    values = solution.col_value
    # HiGHS honours bounds to its feasibility tolerance; snap to them exactly.
    setpoint = np.clip(values[:n_evse], col_lower, col_upper)
    battery_w = float(
        np.clip(values[n_evse], 0.0, problem.battery_discharge_max_w)
        - np.clip(values[n_evse + 1], 0.0, problem.battery_charge_max_w)
    )
    allocation = Allocation(setpoint=setpoint, battery_w=battery_w, admitted=runnable)
    return LpResult(
        LpStatus.OPTIMAL,
        allocation,
        float(weight @ setpoint),
        time.perf_counter() - started,
        solution.detail,
    )
