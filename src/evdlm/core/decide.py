"""One cycle's decision, from a snapshot and the memory to commands (pure, deterministic).

The live controller and ``evdlm replay`` both call :func:`decide`, so a replay with the same
config reproduces the gateway's commands exactly, and a replay with another config or solver
is the counterfactual.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
from evdlm_solvers import (
    SolveResult,
    SolverName,
    SolveStatus,
    StageTimings,
    admit,
    check,
    paused,
    solve,
    solve_lp,
    stage_raises,
)

from evdlm.config.models import SiteConfig
from evdlm.core.dispatch import Plan, plan_commands
from evdlm.core.fleet import FleetCache, MemoryMapping
from evdlm.core.fleet_kernels import HELD
from evdlm.core.memory import ControlMemory, EvseMemory
from evdlm.core.problem_builder import BuildInputs, BuiltProblem, build_problem
from evdlm.core.site_settings import SiteSettings
from evdlm.core.topology import Topology, build_topology
from evdlm.core.types import EvseKey, EvseState


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
    cache: FleetCache = field(default_factory=FleetCache, compare=False, repr=False)  # last cycle's columns

    @staticmethod
    def from_config(config: SiteConfig, solver: SolverChoice = SolverChoice.CHAIN) -> DecisionContext:
        return DecisionContext(
            topology=build_topology(config),
            settings=SiteSettings.from_config(config),
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


def hold_battery_while_cutting(
    built: BuiltProblem, result: SolveResult, memory: ControlMemory, step_down_w: float = float("inf")
) -> SolveResult:
    """Take discharge off the battery no faster than the cars it covers can come down.

    Less discharge is more import, at once: a battery follows a setpoint within a cycle, cars take
    seconds. While cars are being cut or still coming down the discharge is held; otherwise it
    falls by at most ``step_down_w`` per cycle (its maximum over one settle time). The held
    allocation is dispatched only if the checker accepts it too.
    """
    allocation = result.allocation
    problem = built.problem
    previous_w = min(memory.battery_w, problem.battery_discharge_max_w)
    if previous_w <= allocation.battery_w:
        return result
    cutting = bool(np.any(allocation.setpoint < problem.setpoint_previous - 0.5))
    settling = bool(np.any(built.fleet.mode == HELD))
    held_w = previous_w if cutting or settling else max(allocation.battery_w, previous_w - step_down_w)
    if held_w <= allocation.battery_w:
        return result
    candidate = replace(allocation, battery_w=held_w)
    report = check(problem, candidate)
    if report.ok or (report.only_uncontrolled_excess and result.status is SolveStatus.OVER_LIMIT):
        return replace(result, allocation=candidate, report=report)
    return result


def defer_raises_until_cuts_land(built: BuiltProblem, result: SolveResult) -> SolveResult:
    """Raise on a row only as far as its cut cars, not yet come down, leave room.

    The solvers move every car at once; the cars do not: a cut takes effect seconds later.
    Where the transition (cut cars still at their old setpoint, raised cars already at their
    new one) would overload a row, raises go in turn (priority class, cars past the maximum
    wait, weight) while it fits and the rest wait for a later cycle
    (:func:`evdlm_solvers.stage_raises`). The staged allocation is dispatched only if the
    checker accepts it.
    """
    problem = built.problem
    allocation = result.allocation
    setpoint, previous = allocation.setpoint, problem.setpoint_previous
    if not (setpoint > previous + 1e-9).any() or not (setpoint < previous - 1e-9).any():
        return result
    candidate, deferred = stage_raises(problem, allocation)
    if deferred == 0:
        return result
    report = check(problem, candidate)
    if report.ok or (report.only_uncontrolled_excess and result.status is SolveStatus.OVER_LIMIT):
        reason = "; ".join(part for part in (result.reason, f"{deferred} raises deferred until cuts land") if part)
        return replace(result, allocation=candidate, report=report, reason=reason)
    return result


def _starting_current_a(state: EvseState) -> float:
    """Where a restarted controller takes a charging car from: what the charger offers it, or,
    from chargers that report no offered current, what it measurably draws (whole A, down)."""
    if state.offered_current_a is not None and state.offered_current_a > 0.0:
        return float(state.offered_current_a)
    drawn = [value for value in state.phase_current_a or () if value is not None and math.isfinite(value)]
    return float(math.floor(max(drawn))) if drawn else 0.0


def _session_of(memory: Mapping[EvseKey, EvseMemory], key: EvseKey) -> str | None:
    if isinstance(memory, MemoryMapping):
        return memory.transaction_of(key)  # no memory object made: every cycle after a restart asks
    return memory[key].transaction_id


def seed_memory(context: DecisionContext, inputs: BuildInputs) -> BuildInputs:
    """Start from what chargers offer when there is no memory of them (a restarted controller).

    Without this, a restart would treat every charging car as starting from 0 A: it would be cut
    to its minimum and ramped up again, for nothing. A charger that reports no offered current
    gives its measured draw instead. The same holds for a session this process did not see
    start (``EvseState.resumed``: a charger that reconnects after the first cycle) while its
    memory still belongs to another session.
    """
    known = inputs.memory.evses
    every_evse_known = known.keys() >= context.topology.slots.key_set
    missing = {
        key: state
        for key, state in inputs.evse_states.items()
        if (state.resumed or not every_evse_known)
        and state.charging
        and (
            key not in known
            or (state.resumed and state.transaction_id is not None and _session_of(known, key) != state.transaction_id)
        )
        and key in context.topology.slots.key_set
        and not context.topology.evses[context.topology.evse_index[key]].is_dc
        and _starting_current_a(state) > 0.0
    }
    battery = inputs.battery_reading
    battery_w = inputs.memory.battery_w
    if not inputs.memory.evses and battery is not None and battery.usable and battery.power_w is not None:
        battery_w = max(0.0, battery.power_w)  # a fresh start holds what the battery does now
    if not missing:
        if battery_w == inputs.memory.battery_w:
            return inputs
        return replace(inputs, memory=replace(inputs.memory, battery_w=battery_w))
    evses = dict(inputs.memory.evses)
    for key, state in missing.items():
        evses[key] = EvseMemory(
            setpoint=_starting_current_a(state),
            transaction_id=state.transaction_id,
            admitted_since_s=inputs.now_s,
            changed_at_s=inputs.now_s,
        )
    return replace(inputs, memory=replace(inputs.memory, evses=evses, battery_w=battery_w))


def decide(context: DecisionContext, inputs: BuildInputs) -> Decision:
    cache = context.cache
    if not cache.lock.acquire(blocking=False):
        return _decide(context, inputs, None)  # an overrun decision still holds it: read everything afresh
    try:
        return _decide(context, inputs, cache)
    finally:
        cache.lock.release()


def _decide(context: DecisionContext, inputs: BuildInputs, cache: FleetCache | None) -> Decision:
    inputs = seed_memory(context, inputs)
    built = build_problem(context.topology, context.settings, inputs, cache)
    if context.solver is SolverChoice.LP:
        result = _solve_lp_first(built, context.solve_budget_s)
    else:
        result = solve(built.problem, time_budget_s=context.solve_budget_s)
    result = defer_raises_until_cuts_land(built, result)
    result = hold_battery_while_cutting(built, result, inputs.memory, context.settings.battery_step_down_w)
    plan = plan_commands(
        context.topology,
        built,
        result.allocation,
        inputs.memory,
        inputs.now_s,
        context.settings.control.settle_time_s,
        cache,
        raise_step_a=context.settings.control.raise_step_a,
        raise_wait_s=context.settings.control.raise_wait_s,
    )
    return Decision(built=built, result=result, plan=plan)
