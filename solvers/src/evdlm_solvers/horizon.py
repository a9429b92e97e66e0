"""Horizon mode: an LP over the coming hours (MPC) on HiGHS.

Plans every EV's power per step against departures, energy needs, a time-of-use price, PV
and base-load forecasts and the grid import limit; minimises import cost minus export
revenue plus a penalty per kWh left undelivered at departure and, with a demand charge, the
charge on raising the peak import above its target. Only the site's grid
connection is modelled (the per-cycle solvers enforce the tree); the first step of the
plan becomes the heuristic's urgency weights through :func:`urgency_from_plan`.

Units: kW and kWh here (plans are hours long), currency per kWh for prices.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass

import numpy as np

from evdlm_solvers.highs import INF, HighsStatus, colwise_model, run
from evdlm_solvers.problem import FloatArray, IntArray

EARLINESS_COST_PER_KWH = 1e-6
"""Cost per kWh per step of delay for a car with no slack, so that among equally cheap plans
the earliest wins (a car that leaves early is better off charged). Each car's cost is this
over (1 + its laxity in steps): among equally cheap plans the car with the least slack charges
first, which makes the optimum unique where prices tie, so consecutive plans agree instead of
HiGHS picking another vertex of the same face each time."""


@dataclass(frozen=True, eq=False)
class HorizonProblem:
    """The planning problem.

    Parameters
    ----------
    step_duration_s : float
        Length of one step, s (900 for 15 min).
    import_price_per_kwh : ndarray, shape (n_steps,)
        Price of imported energy per step, currency/kWh.
    export_price_per_kwh : ndarray, shape (n_steps,)
        Revenue per exported kWh per step, currency/kWh (0 without feed-in tariff).
    pv_forecast_kw : ndarray, shape (n_steps,)
        PV production per step, kW (+ = production).
    base_load_forecast_kw : ndarray, shape (n_steps,)
        Uncontrolled consumption per step, kW.
    grid_import_limit_kw : ndarray, shape (n_steps,)
        Import limit per step (contract, DR events), kW.
    grid_export_limit_kw : ndarray, shape (n_steps,)
        Export limit per step, kW; PV beyond it is curtailed.
    energy_needed_kwh : ndarray, shape (n_evse,)
        Energy each car still needs by departure, kWh.
    departure_step : ndarray of int, shape (n_evse,)
        Steps until departure: the car can charge in steps ``0 .. departure_step - 1``.
    max_power_kw : ndarray, shape (n_evse,)
        Highest power each car takes, kW.
    unmet_energy_penalty_per_kwh : float
        Cost of a kWh not delivered by departure, currency/kWh; above any price so energy
        is bought whenever it can be.
    demand_target_kw : float or None
        Demand charge: the peak import already paid for (the month's peak, a floor), kW. Every
        step's import (with overload) stays at or under the plan's peak, which is at least this;
        None: no demand charge (the import limit alone bounds the import).
    demand_rate_per_kw : float
        Demand charge per kW the plan's peak rises above ``demand_target_kw``, currency/kW. A raise
        of 1 kW delivers at least ``step_h`` kWh more (one step), so with the unmet-energy penalty
        above ``demand_rate_per_kw / step_h`` plus the price the plan raises the peak whenever a
        departure cannot be met otherwise, and by the least amount; below it, it may leave
        energy unmet rather than raise.
    """

    step_duration_s: float
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray
    pv_forecast_kw: FloatArray
    base_load_forecast_kw: FloatArray
    grid_import_limit_kw: FloatArray
    grid_export_limit_kw: FloatArray
    energy_needed_kwh: FloatArray
    departure_step: IntArray
    max_power_kw: FloatArray
    unmet_energy_penalty_per_kwh: float = 10.0
    demand_target_kw: float | None = None
    demand_rate_per_kw: float = 0.0

    def __post_init__(self) -> None:
        n_steps = np.shape(self.import_price_per_kwh)[0]
        n_evse = np.shape(self.energy_needed_kwh)[0]
        for name in (
            "import_price_per_kwh",
            "export_price_per_kwh",
            "pv_forecast_kw",
            "base_load_forecast_kw",
            "grid_import_limit_kw",
            "grid_export_limit_kw",
        ):
            value = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            if value.shape != (n_steps,):
                raise ValueError(f"{name} must have shape ({n_steps},)")
            object.__setattr__(self, name, value)
        for name in ("energy_needed_kwh", "max_power_kw"):
            value = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            if value.shape != (n_evse,):
                raise ValueError(f"{name} must have shape ({n_evse},)")
            object.__setattr__(self, name, value)
        departure = np.ascontiguousarray(self.departure_step, dtype=np.int64)
        if departure.shape != (n_evse,):
            raise ValueError(f"departure_step must have shape ({n_evse},)")
        object.__setattr__(self, "departure_step", departure)
        if self.step_duration_s <= 0.0:
            raise ValueError("step_duration_s must be > 0")
        target = self.demand_target_kw
        if target is not None and not (math.isfinite(target) and target >= 0.0):
            raise ValueError(f"demand_target_kw must be finite and >= 0, not {target!r}")
        rate = self.demand_rate_per_kw
        if not (math.isfinite(rate) and rate >= 0.0):
            raise ValueError(f"demand_rate_per_kw must be finite and >= 0, not {rate!r}")
        if target is None and rate > 0.0:
            raise ValueError("demand_rate_per_kw needs demand_target_kw (the peak it charges above)")

    @property
    def n_steps(self) -> int:
        """Number of steps."""
        return int(self.import_price_per_kwh.shape[0])

    @property
    def n_evse(self) -> int:
        """Number of cars."""
        return int(self.energy_needed_kwh.shape[0])


class HorizonStatus(enum.Enum):
    """Outcome of a horizon solve."""

    OPTIMAL = "optimal"
    TIME_LIMIT = "time_limit"
    ERROR = "error"


@dataclass(frozen=True, eq=False)
class HorizonPlan:
    """The plan; arrays are empty unless ``status`` is ``OPTIMAL``.

    Parameters
    ----------
    status : HorizonStatus
        Solve outcome.
    power_kw : ndarray, shape (n_evse, n_steps)
        Planned power per car and step, kW.
    grid_import_kw, grid_export_kw, curtailment_kw : ndarray, shape (n_steps,)
        Planned grid import, export and PV curtailment per step, kW.
    overload_kw : ndarray, shape (n_steps,)
        Import beyond the limit the base load alone forces, kW (0 when the forecast fits).
    unmet_energy_kwh : ndarray, shape (n_evse,)
        Energy each car misses at departure, kWh.
    cost : float
        Import cost minus export revenue, currency (penalties and demand charge excluded).
    solve_time_s : float
        Wall time, s.
    peak_kw : float
        The plan's peak import with a demand charge (``demand_target_kw`` or above), kW; NaN
        without one.
    """

    status: HorizonStatus
    power_kw: FloatArray
    grid_import_kw: FloatArray
    grid_export_kw: FloatArray
    curtailment_kw: FloatArray
    overload_kw: FloatArray
    unmet_energy_kwh: FloatArray
    cost: float
    solve_time_s: float
    peak_kw: float = math.nan


def plan_horizon(problem: HorizonProblem, time_limit_s: float = 10.0) -> HorizonPlan:
    """Solve the horizon LP.

    Columns: power per car and step (kW), unmet energy per car (kWh), then per step grid
    import, export, curtailment and overload (kW), and with a demand charge the peak (kW, at
    least ``demand_target_kw``, ``demand_rate_per_kw`` per kW). Rows: one energy balance per car
    (``sum(power) * step_h + unmet = needed``), one power balance per step
    (``sum(power) + curtailment - import - overload + export = pv - base``) and with a demand
    charge one peak row per step (``import + overload - peak <= 0``).

    Parameters
    ----------
    problem : HorizonProblem
        Forecasts, prices and the cars.
    time_limit_s : float
        HiGHS time limit, s.

    Returns
    -------
    HorizonPlan
        The optimal plan, or an empty plan with the failure status.
    """
    started = time.perf_counter()
    n_evse, n_steps = problem.n_evse, problem.n_steps
    step_h = problem.step_duration_s / 3600.0
    n_power = n_evse * n_steps
    first_step_col = n_power + n_evse
    step = np.arange(n_steps)
    # A demand charge adds one peak column and one peak row per step; without one, none.
    n_peak = 0 if problem.demand_target_kw is None else 1
    n_cols = first_step_col + 4 * n_steps + n_peak
    peak_rows = n_evse + n_steps + step[: n_steps * n_peak]

    # Car j's power in step t is column j * n_steps + t.
    can_charge = step[None, :] < problem.departure_step[:, None]
    power_upper = np.where(can_charge, problem.max_power_kw[:, None], 0.0).ravel()
    # Energy is paid for at the grid columns; the power columns carry only the tie-break:
    # least laxity (departure minus the steps needed at full power) first, per car.
    needed_steps = problem.energy_needed_kwh / np.maximum(problem.max_power_kw * step_h, 1e-9)
    laxity_steps = np.maximum(problem.departure_step - needed_steps, 0.0)
    # A small index term splits exact ties the same way every time.
    tie_break = 1.0 / (1.0 + laxity_steps) * (1.0 + 1e-3 * np.arange(n_evse) / max(n_evse, 1))
    power_cost = (EARLINESS_COST_PER_KWH * tie_break[:, None] * (step * step_h)[None, :]).ravel()
    col_cost = np.concatenate(
        [
            power_cost,
            np.full(n_evse, problem.unmet_energy_penalty_per_kwh),
            problem.import_price_per_kwh * step_h,
            -problem.export_price_per_kwh * step_h,
            np.zeros(n_steps),
            np.full(n_steps, 10.0 * problem.unmet_energy_penalty_per_kwh * step_h),
            # The peak's charge counts from the target up; the constant below it changes no plan.
            np.full(n_peak, problem.demand_rate_per_kw),
        ]
    )
    col_lower = np.concatenate([np.zeros(n_cols - n_peak), np.full(n_peak, problem.demand_target_kw or 0.0)])
    col_upper = np.concatenate(
        [
            power_upper,
            np.full(n_evse, INF),
            np.maximum(problem.grid_import_limit_kw, 0.0),
            np.maximum(problem.grid_export_limit_kw, 0.0),
            np.maximum(problem.pv_forecast_kw, 0.0),
            np.full(n_steps, INF),
            np.full(n_peak, INF),
        ]
    )
    balance = problem.pv_forecast_kw - problem.base_load_forecast_kw
    row_lower = np.concatenate([problem.energy_needed_kwh, balance, np.full(peak_rows.size, -INF)])
    row_upper = np.concatenate([problem.energy_needed_kwh, balance, np.zeros(peak_rows.size)])

    energy_row = np.repeat(np.arange(n_evse), n_steps)
    balance_row = n_evse + np.tile(step, n_evse)
    power_index = np.stack([energy_row, balance_row], axis=1).ravel()
    power_value = np.tile([step_h, 1.0], n_power)
    step_rows = n_evse + step
    # Import and overload are what the meter sees: in their step's balance and, with a demand
    # charge, under the peak (import + overload - peak <= 0).
    if n_peak:
        metered_index = np.stack([step_rows, peak_rows], axis=1).ravel()
        metered_value = np.tile([-1.0, 1.0], n_steps)
    else:
        metered_index, metered_value = step_rows, np.full(n_steps, -1.0)
    index = np.concatenate(
        [
            power_index,
            np.arange(n_evse),
            metered_index,
            step_rows,
            step_rows,
            metered_index,
            peak_rows,
        ]
    )
    value = np.concatenate(
        [
            power_value,
            np.ones(n_evse),
            metered_value,
            np.full(n_steps, 1.0),
            np.full(n_steps, 1.0),
            metered_value,
            np.full(peak_rows.size, -1.0),
        ]
    )
    nnz_per_col = np.concatenate(
        [
            np.full(n_power, 2),
            np.ones(n_evse, dtype=np.int64),
            np.full(n_steps, 1 + n_peak),
            np.ones(2 * n_steps, dtype=np.int64),
            np.full(n_steps, 1 + n_peak),
            np.full(n_peak, n_steps),
        ]
    )
    start = np.concatenate([[0], np.cumsum(nnz_per_col)])

    model = colwise_model(
        maximize=False,
        col_cost=col_cost,
        col_lower=col_lower,
        col_upper=col_upper,
        row_lower=row_lower,
        row_upper=row_upper,
        start=start,
        index=index,
        value=value,
    )
    solution = run(model, time_limit_s=time_limit_s)
    if solution.col_value is None:
        empty = np.zeros(0)
        status = HorizonStatus.TIME_LIMIT if solution.status is HighsStatus.TIME_LIMIT else HorizonStatus.ERROR
        return HorizonPlan(
            status,
            empty.reshape(0, 0),
            empty,
            empty,
            empty,
            empty,
            empty,
            float("nan"),
            time.perf_counter() - started,
        )
    values = np.maximum(solution.col_value, 0.0)
    by_step = values[first_step_col : first_step_col + 4 * n_steps].reshape(4, n_steps)
    grid_import_kw, grid_export_kw = by_step[0], by_step[1]
    cost = float(
        step_h
        * (problem.import_price_per_kwh @ (grid_import_kw + by_step[3]) - problem.export_price_per_kwh @ grid_export_kw)
    )
    return HorizonPlan(
        status=HorizonStatus.OPTIMAL,
        power_kw=values[:n_power].reshape(n_evse, n_steps),
        grid_import_kw=grid_import_kw,
        grid_export_kw=grid_export_kw,
        curtailment_kw=by_step[2],
        overload_kw=by_step[3],
        unmet_energy_kwh=values[n_power:first_step_col],
        cost=cost,
        solve_time_s=time.perf_counter() - started,
        peak_kw=float(values[-1]) if n_peak else math.nan,
    )


def first_step_power_kw(plan: HorizonPlan) -> FloatArray:
    """Each car's planned power for the plan's first step, kW (what it should draw now).

    Raises
    ------
    ValueError
        When ``plan`` is not optimal (it has no power to read).
    """
    if plan.status is not HorizonStatus.OPTIMAL:
        raise ValueError(f"no plan to read (status {plan.status.value})")
    power: FloatArray = plan.power_kw[:, 0].copy()
    return power
