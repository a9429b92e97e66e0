"""The horizon plan as per-car power targets for the cycle (pure: no I/O, no clock).

Every few minutes the planner (:mod:`evdlm.horizon_planner`, off the cycle's path) takes the
last cycle's problem and the cars' session inputs, plans every car's power over the coming
hours (:func:`evdlm_solvers.plan_horizon`: prices, departures, energy) and keeps the first
step as each session's target. The cycle lays the targets on the EVSE states
(``EvseState.planned_power_w``, so recordings carry them and replay is exact); the builder
turns them into ``Problem.planned_share`` and the heuristic's admission by fill takes them as
the cars' shares: a car planned below its minimum waits (no longer than the maximum wait), one
planned above it runs. The plan sees the site as one capacity (the grid import limit and the
main fuse's phases, net of the load the controller does not command, as the last cycle
measured it, held over the horizon); the cycle still enforces every row of the tree.

Under demand-charge control the plan prices the peak itself: its capacity is the site's physical
room (the window's cap of the moment left out: it swings above and below the target within each
window, as the window's energy so far allows, which says nothing of the hours ahead), and every
step's import stays under
the window's target (the month's peak, or the raise the departures need), net of the load the
controller does not command as the demand keeper estimates it; the LP raises it further only
where a departure cannot be met otherwise, and by the least amount. So the cars' energy goes to
the cheap hours under the target, never above it for a cheaper price. Each car is planned done a
window before it leaves, as the keeper's target allows for: a plan that used that window would
raise the keeper's need, and so the target, in the cycles that follow it. And a target is then
only a deferral (a car the plan holds below its minimum waits); the cars the plan runs share the
room by the cycle's fill, which follows the window's cap as it moves within each window: a planned
share above the fill's fits in one cycle and not in the next, and cars stepping up and down at
each turn doubled the current changes on the workplace day (and the uncontrolled-load estimate,
which lags the cars' own samples, read high with them and raised the target).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from evdlm_solvers import HorizonProblem, HorizonStatus, first_step_power_kw, plan_horizon
from evdlm_solvers.problem import FloatArray

from evdlm.config.models import HorizonPlanning, SiteConfig
from evdlm.core.demand_window import DemandDecision
from evdlm.core.fleet_kernels import DEFAULT_DWELL_S, DEFAULT_ENERGY_WH
from evdlm.core.memory import EvseKey
from evdlm.core.problem_builder import BuiltProblem
from evdlm.core.tariff import PriceSchedule, import_prices
from evdlm.core.topology import GRID_NODE, RowKind, Topology
from evdlm.core.types import EvseState

UNMET_ENERGY_PENALTY_PER_KWH = 10.0  # above any price: energy is bought whenever it can be


@dataclass(frozen=True)
class PlanTargets:
    """One plan's first step per session, and when it was made."""

    planned_at_s: float
    valid_until_s: float
    power_w: Mapping[EvseKey, tuple[str | None, float]]  # EVSE -> (transaction id, W now)
    status: str  # HorizonStatus value
    solve_time_s: float
    unmet_energy_kwh: float  # what the plan expects to leave undelivered at departures


NO_TARGETS = PlanTargets(-math.inf, -math.inf, {}, "none", 0.0, 0.0)


@dataclass(frozen=True)
class PlanSnapshot:
    """What a plan is made from: the last cycle's problem, the states it was built from and the
    demand window's decision of that cycle (None: no demand-charge control)."""

    now_s: float
    built: BuiltProblem
    states: Mapping[EvseKey, EvseState]
    demand: DemandDecision | None = None
    prices: PriceSchedule | None = None  # the prices in force (a feed over the table); None: the table


def site_capacity_w(topology: Topology, built: BuiltProblem, *, window_cap: bool = True) -> float:
    """Power the cars may take at the connection now, W: the import row's room (without the demand
    window's cap when not ``window_cap``), and the main fuse's phases' room (A x nominal V, summed)
    where the grid node has current rows."""
    problem = built.problem
    capacity_w = float(problem.row_headroom[topology.import_row])
    if not window_cap:
        capacity_w += built.window_cut_w
    grid_rows = [
        index for index, row in enumerate(topology.rows) if row.kind is RowKind.PHASE_CURRENT and row.node == GRID_NODE
    ]
    if grid_rows:
        phases_w = float(np.maximum(problem.row_headroom[grid_rows], 0.0).sum()) * topology.nominal_voltage_v
        capacity_w = min(capacity_w, phases_w)
    return max(capacity_w, 0.0)


def plannable_max_kw(topology: Topology, built: BuiltProblem, states: list[EvseState | None]) -> FloatArray:
    """Each problem column's most power over the horizon, kW: the cycle's bound, except for a car
    the cycle holds at 0 for now only (its minimum off time after a pause), which counts at what its
    EVSE and the car take. Planned at 0 for the whole horizon it would be deferred on a moment's
    state: at a demand window's turn many cars rest at once, and on the workplace day the plans made
    then expected 200-480 kWh unmet and deferred most cars. A paused session, or a car under a CSMS
    limit, keeps the cycle's bound."""
    problem = built.problem
    slots = topology.slots
    columns = np.asarray(built.columns, dtype=np.int64)
    capability = slots.max_setpoint[columns].copy()
    ev_max_a = np.array(
        [math.inf if state is None or state.ev_max_current_a is None else state.ev_max_current_a for state in states]
    )
    capability = np.where(slots.is_dc[columns], capability, np.minimum(capability, ev_max_a))
    resting = (problem.setpoint_max <= 0.0) & np.array(
        [state is not None and not state.paused and state.csms_limit is None for state in states], dtype=np.bool_
    )
    highest = np.where(resting, capability, problem.setpoint_max)
    max_power_kw: FloatArray = np.maximum(highest * problem.power_per_unit_w / 1000.0, 0.0)
    return max_power_kw


def horizon_problem(
    topology: Topology, config: SiteConfig, snapshot: PlanSnapshot
) -> tuple[HorizonProblem, tuple[EvseKey, ...], tuple[str | None, ...]]:
    """The planning problem for the cars of ``snapshot`` (one per problem column), their keys and
    transactions. A car's departure and energy are what its session says (ISO 15118, a session
    command, an idTag profile), else the built-in defaults."""
    settings = config.control.horizon
    built, now_s = snapshot.built, snapshot.now_s
    n_steps = max(1, math.ceil(settings.hours * 3600.0 / settings.step_s))
    keys = tuple(topology.evses[index].key for index in built.columns)
    states = [snapshot.states.get(key) for key in keys]
    transactions = tuple(state.transaction_id if state is not None else None for state in states)
    max_power_kw = plannable_max_kw(topology, built, states)
    energy_kwh = np.array(
        [
            (DEFAULT_ENERGY_WH if state is None or state.energy_needed_wh is None else state.energy_needed_wh) / 1000.0
            for state in states
        ]
    )
    departure_s = np.array(
        [
            now_s + DEFAULT_DWELL_S if state is None or state.departure_at_s is None else state.departure_at_s
            for state in states
        ]
    )
    demand = snapshot.demand
    # Under demand control each car is planned done a window before it leaves, as the keeper's
    # target allows for (see the module docstring).
    reserve_s = demand.window_end_s - demand.window_start_s if demand is not None else 0.0
    # A car past its announced departure that is still plugged in charges in the first step.
    departure_step = np.clip(np.floor((departure_s - reserve_s - now_s) / settings.step_s), 1, n_steps)
    departure_step = departure_step.astype(np.int64)
    capacity_kw = site_capacity_w(topology, built, window_cap=demand is None) / 1000.0
    if snapshot.prices is not None:
        prices = snapshot.prices.import_prices(now_s, settings.step_s, n_steps)
        export_prices = snapshot.prices.export_prices(now_s, settings.step_s, n_steps)
    else:
        prices = import_prices(config.tariffs, config.site.timezone, now_s, settings.step_s, n_steps)
        export_prices = np.full(n_steps, config.tariffs.export_price_per_kwh if config.tariffs is not None else 0.0)
    target_kw, rate_per_kw, penalty_per_kwh = None, 0.0, UNMET_ENERGY_PENALTY_PER_KWH
    if demand is not None:
        # The window's target is the site's import; the plan's import is the cars' alone.
        target_kw = max(0.0, demand.target_w - demand.uncontrolled_w) / 1000.0
        rate_per_kw = config.demand.rate_per_kw if config.demand is not None else 0.0
        # A 1 kW raise buys at least one step's kWh: a kWh left unmet must cost more than that, so
        # the plan raises the peak rather than miss a departure (as the window's own target does).
        penalty_per_kwh += rate_per_kw * 3600.0 / settings.step_s
    horizon = HorizonProblem(
        step_duration_s=settings.step_s,
        import_price_per_kwh=prices,
        export_price_per_kwh=export_prices,
        pv_forecast_kw=np.zeros(n_steps),
        base_load_forecast_kw=np.zeros(n_steps),  # already net in the capacity
        grid_import_limit_kw=np.full(n_steps, capacity_kw),
        grid_export_limit_kw=np.zeros(n_steps),
        energy_needed_kwh=np.maximum(energy_kwh, 0.0),
        departure_step=departure_step,
        max_power_kw=max_power_kw,
        unmet_energy_penalty_per_kwh=penalty_per_kwh,
        demand_target_kw=target_kw,
        demand_rate_per_kw=rate_per_kw,
    )
    return horizon, keys, transactions


def plan_targets(topology: Topology, config: SiteConfig, snapshot: PlanSnapshot) -> PlanTargets:
    """Plan and keep the first step per session (CPU: 10 ms to 1 s; run it off the cycle)."""
    settings: HorizonPlanning = config.control.horizon
    horizon, keys, transactions = horizon_problem(topology, config, snapshot)
    valid_until_s = snapshot.now_s + settings.valid_for_s
    if horizon.n_evse == 0:
        return PlanTargets(snapshot.now_s, valid_until_s, {}, HorizonStatus.OPTIMAL.value, 0.0, 0.0)
    plan = plan_horizon(horizon, time_limit_s=settings.time_limit_s)
    if plan.status is not HorizonStatus.OPTIMAL:
        return PlanTargets(snapshot.now_s, snapshot.now_s, {}, plan.status.value, plan.solve_time_s, math.nan)
    now_w = first_step_power_kw(plan) * 1000.0
    # Cars that told nothing are planned with the defaults, so the others' plan leaves them their
    # part of the site, but get no target: a plan built on guesses would defer them on guesses
    # (the quality bench's unknown-departure day loses 5 points that way); their fill decides.
    told = [
        state is not None and (state.departure_at_s is not None or state.energy_needed_wh is not None)
        for state in (snapshot.states.get(key) for key in keys)
    ]
    if snapshot.demand is not None:  # only deferrals (module docstring): the others' fill decides
        problem = snapshot.built.problem
        min_w = problem.setpoint_min * problem.power_per_unit_w
        told = [known and bool(watts < low - 1.0) for known, watts, low in zip(told, now_w, min_w, strict=True)]
    power_w = {
        key: (transaction, round(float(watts), 1))
        for key, transaction, watts, known in zip(keys, transactions, now_w, told, strict=True)
        if known
    }
    return PlanTargets(
        snapshot.now_s,
        valid_until_s,
        power_w,
        plan.status.value,
        plan.solve_time_s,
        float(plan.unmet_energy_kwh.sum()),
    )


def overlay_targets(
    states: Mapping[EvseKey, EvseState], targets: PlanTargets, now_s: float
) -> dict[EvseKey, EvseState]:
    """``states`` with each planned session's target laid on (``planned_power_w``); a target of
    another session (a car left, another came) or of an expired plan is not used."""
    if now_s >= targets.valid_until_s or not targets.power_w:
        return dict(states)
    out = dict(states)
    for key, (transaction, watts) in targets.power_w.items():
        state = out.get(key)
        if state is not None and state.transaction_id == transaction and state.charging:
            out[key] = dataclasses.replace(state, planned_power_w=watts)
    return out
