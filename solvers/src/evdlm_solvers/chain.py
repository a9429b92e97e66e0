"""The fallback chain: heuristic -> check -> LP -> check -> safe allocation.

Nothing leaves :func:`solve` without passing :func:`~evdlm_solvers.check.check`, except
when the site is over a limit through load the controller does not command: then no
allocation can pass, and the one returned adds nothing to the rows that are over (status
``OVER_LIMIT``).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import numpy as np

from evdlm_solvers.check import DEFAULT_TOLERANCE, CheckReport, Tolerance, check
from evdlm_solvers.heuristic import DEFAULT_MAX_EVENTS, admit, solve_heuristic
from evdlm_solvers.lp import solve_lp
from evdlm_solvers.problem import Allocation, Problem, paused


class SolveStatus(enum.Enum):
    """How the cycle's allocation came about."""

    OK = "ok"
    """A solver's allocation passed the check."""
    OVER_LIMIT = "over_limit"
    """Some row is over its limit through uncontrolled load; the allocation adds nothing to
    those rows and honours everything else."""
    SAFE = "safe"
    """Both solvers failed; everyone paused, or the charging cars held at their minimum."""


class SolverName(enum.Enum):
    """Which stage produced the allocation."""

    HEURISTIC = "heuristic"
    LP = "lp"
    SAFE_MINIMUM = "safe_minimum"
    """Cars charging last cycle at their minimum, everyone else paused."""
    SAFE_PAUSED = "safe_paused"
    """Everyone paused, battery idle."""


@dataclass(frozen=True)
class StageTimings:
    """Wall time per stage, s (0 for a stage that did not run)."""

    heuristic_s: float = 0.0
    lp_s: float = 0.0
    check_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True)
class SolveResult:
    """The chain's answer for one cycle.

    Parameters
    ----------
    allocation : Allocation
        What to dispatch.
    status : SolveStatus
        ``OK``, ``OVER_LIMIT`` or ``SAFE``.
    solver : SolverName
        The stage that produced ``allocation``.
    report : CheckReport
        The check of ``allocation``.
    reason : str
        Why earlier stages were rejected ("" when the heuristic's answer was taken).
    timings : StageTimings
        Wall time per stage, s.
    """

    allocation: Allocation
    status: SolveStatus
    solver: SolverName
    report: CheckReport
    reason: str
    timings: StageTimings


def solve(
    problem: Problem,
    time_budget_s: float = 0.5,
    tol: Tolerance = DEFAULT_TOLERANCE,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> SolveResult:
    """Allocate one cycle through the fallback chain.

    Parameters
    ----------
    problem : Problem
        The cycle's problem.
    time_budget_s : float
        Wall time the chain may use, s; the LP gets what the heuristic left.
    tol : Tolerance
        Checker tolerance.
    max_events : int
        The heuristic's event cap.

    Returns
    -------
    SolveResult
        Never an allocation that fails the check, except the ``OVER_LIMIT`` case.
    """
    started = time.perf_counter()
    reasons: list[str] = []
    heuristic_s = lp_s = check_s = 0.0

    def timings() -> StageTimings:
        return StageTimings(heuristic_s, lp_s, check_s, time.perf_counter() - started)

    admitted = None
    try:
        stage_started = time.perf_counter()
        allocation = solve_heuristic(problem, max_events)
        heuristic_s = time.perf_counter() - stage_started
        admitted = allocation.admitted
        stage_started = time.perf_counter()
        report = check(problem, allocation, tol)
        check_s += time.perf_counter() - stage_started
        accepted = _accept(report)
        if accepted is not None:
            return SolveResult(allocation, accepted, SolverName.HEURISTIC, report, "", timings())
        reasons.append(f"heuristic failed check: {report.summary()}")
    # A solver bug must cost this cycle its optimum, never the site its protection.
    except Exception as error:
        reasons.append(f"heuristic raised {type(error).__name__}: {error}")

    try:
        stage_started = time.perf_counter()
        if admitted is None:
            admitted = admit(problem)
        remaining_s = time_budget_s - (time.perf_counter() - started)
        lp_result = solve_lp(problem, admitted, time_limit_s=max(remaining_s, 1e-3))
        lp_s = time.perf_counter() - stage_started
        if lp_result.allocation is None:
            reasons.append(f"LP {lp_result.status.value}: {lp_result.detail}")
        else:
            stage_started = time.perf_counter()
            report = check(problem, lp_result.allocation, tol)
            check_s += time.perf_counter() - stage_started
            accepted = _accept(report)
            if accepted is not None:
                return SolveResult(
                    lp_result.allocation,
                    accepted,
                    SolverName.LP,
                    report,
                    "; ".join(reasons),
                    timings(),
                )
            reasons.append(f"LP failed check: {report.summary()}")
    except Exception as error:
        reasons.append(f"LP raised {type(error).__name__}: {error}")

    stage_started = time.perf_counter()
    holding = _charging_at_minimum(problem)
    report = check(problem, holding, tol)
    solver = SolverName.SAFE_MINIMUM
    if not (report.ok or report.only_uncontrolled_excess):
        holding = paused(problem)
        report = check(problem, holding, tol)
        solver = SolverName.SAFE_PAUSED
    check_s += time.perf_counter() - stage_started
    status = SolveStatus.SAFE if report.ok else SolveStatus.OVER_LIMIT
    return SolveResult(holding, status, solver, report, "; ".join(reasons), timings())


def _accept(report: CheckReport) -> SolveStatus | None:
    if report.ok:
        return SolveStatus.OK
    if report.only_uncontrolled_excess:
        return SolveStatus.OVER_LIMIT
    return None


def _charging_at_minimum(problem: Problem) -> Allocation:
    """Cars admitted last cycle held at their minimum (when it is within their maximum)."""
    holding = problem.charging & (problem.setpoint_min <= problem.setpoint_max)
    return Allocation(
        setpoint=np.where(holding, problem.setpoint_min, 0.0),
        battery_w=0.0,
        admitted=holding,
    )
