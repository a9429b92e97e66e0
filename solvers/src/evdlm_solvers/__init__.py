"""Pure numeric power allocation for evdlm (no I/O, no asyncio, no protocol library).

Build a :class:`Problem` each cycle, call :func:`solve` (heuristic -> LP -> safe
allocation, every answer judged by :func:`check`), dispatch the :class:`Allocation`.
Call :func:`warm_up` once before the first cycle so numba compiles outside the loop.
"""

from evdlm_solvers.chain import SolveResult, SolverName, SolveStatus, StageTimings, solve
from evdlm_solvers.check import (
    DEFAULT_TOLERANCE,
    BatteryViolation,
    BatteryViolationKind,
    CheckReport,
    EvseViolation,
    EvseViolationKind,
    RowViolation,
    Tolerance,
    check,
    row_load,
)
from evdlm_solvers.heuristic import admit, solve_heuristic, warm_up
from evdlm_solvers.horizon import (
    HorizonPlan,
    HorizonProblem,
    HorizonStatus,
    first_step_power_kw,
    plan_horizon,
)
from evdlm_solvers.lp import LpResult, LpStatus, solve_lp
from evdlm_solvers.problem import (
    PRIORITY_CLASS_COUNT,
    UNIT_CURRENT_A,
    UNIT_POWER_W,
    Allocation,
    Problem,
    delivered_power_w,
    objective_weight,
    paused,
    weighted_power,
)
from evdlm_solvers.transition import stage_raises

__all__ = [
    "DEFAULT_TOLERANCE",
    "PRIORITY_CLASS_COUNT",
    "UNIT_CURRENT_A",
    "UNIT_POWER_W",
    "Allocation",
    "BatteryViolation",
    "BatteryViolationKind",
    "CheckReport",
    "EvseViolation",
    "EvseViolationKind",
    "HorizonPlan",
    "HorizonProblem",
    "HorizonStatus",
    "LpResult",
    "LpStatus",
    "Problem",
    "RowViolation",
    "SolveResult",
    "SolveStatus",
    "SolverName",
    "StageTimings",
    "Tolerance",
    "admit",
    "check",
    "delivered_power_w",
    "first_step_power_kw",
    "objective_weight",
    "paused",
    "plan_horizon",
    "row_load",
    "solve",
    "solve_heuristic",
    "solve_lp",
    "stage_raises",
    "warm_up",
    "weighted_power",
]
