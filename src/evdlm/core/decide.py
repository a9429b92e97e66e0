"""One cycle's decision, from a snapshot and the memory to commands (pure, deterministic).

The live controller and ``evdlm replay`` both call :func:`decide`, so a replay with the same
config reproduces the gateway's commands exactly, and a replay with another config or solver
is the counterfactual.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from evdlm_solvers.chain import SolveResult, SolverName, SolveStatus, StageTimings, solve
from evdlm_solvers.check import check
from evdlm_solvers.heuristic import admit
from evdlm_solvers.lp import solve_lp
from evdlm_solvers.problem import paused

from evdlm.config.models import SiteConfig
from evdlm.core.dispatch import Plan, plan_commands
from evdlm.core.problem_builder import BuildInputs, BuiltProblem, SiteSettings, build_problem
from evdlm.core.topology import Topology, build_topology


class SolverChoice(StrEnum):
    CHAIN = "heuristic"  # heuristic, LP fallback, safe allocation (production)
    LP = "lp"  # LP first, then the safe allocation (the yardstick, for replays)


@dataclass(frozen=True)
class DecisionContext:
    """What stays fixed between cycles for one config."""

    topology: Topology
    settings: SiteSettings
    solve_budget_s: float
    solver: SolverChoice = SolverChoice.CHAIN

    @staticmethod
    def from_config(config: SiteConfig, solver: SolverChoice = SolverChoice.CHAIN) -> DecisionContext:
        return DecisionContext(
            topology=build_topology(config),
            settings=SiteSettings(
                control=config.control,
                battery=config.battery,
                fallback_import_limit_w=config.control.fallback_import_limit_kw * 1000.0,
                failsafe_current_a=config.ocpp.failsafe_current_a,
            ),
            solve_budget_s=config.control.solve_budget_s,
            solver=solver,
        )


@dataclass(frozen=True)
class Decision:
    built: BuiltProblem
    result: SolveResult
    plan: Plan


def _solve_lp_first(built: BuiltProblem, budget_s: float) -> SolveResult:
    problem = built.problem
    lp = solve_lp(problem, admit(problem), time_limit_s=budget_s)
    if lp.allocation is not None:
        report = check(problem, lp.allocation)
        if report.ok or report.only_uncontrolled_excess:
            status = SolveStatus.OK if report.ok else SolveStatus.OVER_LIMIT
            return SolveResult(lp.allocation, status, SolverName.LP, report, "", StageTimings())
    safe = paused(problem)
    report = check(problem, safe)
    status = SolveStatus.SAFE if report.ok else SolveStatus.OVER_LIMIT
    return SolveResult(
        safe, status, SolverName.SAFE_PAUSED, report, f"LP {lp.status.value}: {lp.detail}", StageTimings()
    )


def decide(context: DecisionContext, inputs: BuildInputs) -> Decision:
    built = build_problem(context.topology, context.settings, inputs)
    if context.solver is SolverChoice.LP:
        result = _solve_lp_first(built, context.solve_budget_s)
    else:
        result = solve(built.problem, time_budget_s=context.solve_budget_s)
    plan = plan_commands(
        context.topology,
        built,
        result.allocation,
        inputs.memory,
        inputs.evse_states,
        inputs.now_s,
        context.settings.control.settle_time_s,
    )
    return Decision(built=built, result=result, plan=plan)
