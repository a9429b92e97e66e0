"""Horizon LP: cheap hours, PV, limits, unmet energy, urgency for the heuristic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from evdlm_solvers import HorizonPlan, HorizonProblem, HorizonStatus, first_step_power_kw, plan_horizon

STEP_S = 900.0
N_STEPS = 96


def day(
    *,
    energy_kwh: list[float],
    departure_step: list[int],
    max_power_kw: list[float],
    import_limit_kw: float = 100.0,
    pv_peak_kw: float = 0.0,
    base_kw: float = 5.0,
    export_limit_kw: float = 0.0,
) -> HorizonProblem:
    hour = np.arange(N_STEPS) * STEP_S / 3600.0
    # Expensive 07:00-21:00, cheap at night; PV a half sine between 06:00 and 18:00.
    price = np.where((hour >= 7) & (hour < 21), 0.40, 0.15)
    pv = pv_peak_kw * np.clip(np.sin((hour - 6.0) / 12.0 * np.pi), 0.0, None)
    return HorizonProblem(
        step_duration_s=STEP_S,
        import_price_per_kwh=price,
        export_price_per_kwh=np.full(N_STEPS, 0.05),
        pv_forecast_kw=pv,
        base_load_forecast_kw=np.full(N_STEPS, base_kw),
        grid_import_limit_kw=np.full(N_STEPS, import_limit_kw),
        grid_export_limit_kw=np.full(N_STEPS, export_limit_kw),
        energy_needed_kwh=np.array(energy_kwh),
        departure_step=np.array(departure_step),
        max_power_kw=np.array(max_power_kw),
    )


def delivered_kwh(plan: HorizonPlan) -> np.ndarray:
    return plan.power_kw.sum(axis=1) * STEP_S / 3600.0


def test_energy_is_bought_in_the_cheap_hours_when_departure_allows() -> None:
    # Starting at midnight, leaving at 23:00: 20 kWh fit in the cheap night hours.
    plan = plan_horizon(day(energy_kwh=[20.0], departure_step=[92], max_power_kw=[11.0]))
    assert plan.status is HorizonStatus.OPTIMAL
    np.testing.assert_allclose(delivered_kwh(plan), [20.0], atol=1e-6)
    cheap = np.r_[0:28, 84:96]
    assert plan.power_kw[0, cheap].sum() == pytest.approx(plan.power_kw[0].sum())
    assert plan.cost == pytest.approx(20.0 * 0.15 + 5.0 * 24 * np.mean(np.r_[[0.15] * 10, [0.40] * 14]), rel=1e-6)


def test_pv_surplus_is_used_before_grid_energy() -> None:
    plan = plan_horizon(day(energy_kwh=[15.0], departure_step=[72], max_power_kw=[11.0], pv_peak_kw=30.0))
    assert plan.status is HorizonStatus.OPTIMAL
    surplus = plan.power_kw[0] > 1e-6
    # Charged only while PV exceeds the base load, i.e. with no extra import.
    assert np.all(plan.grid_import_kw[surplus] <= 1e-6)


def test_pv_beyond_the_export_limit_is_curtailed() -> None:
    plan = plan_horizon(day(energy_kwh=[0.0], departure_step=[0], max_power_kw=[11.0], pv_peak_kw=50.0))
    assert plan.curtailment_kw.max() == pytest.approx(50.0 - 5.0, rel=1e-3)
    assert plan.grid_export_kw.max() <= 1e-6


def test_import_limit_and_departures_leave_energy_unmet() -> None:
    plan = plan_horizon(
        day(
            energy_kwh=[30.0, 30.0],
            departure_step=[8, 96],
            max_power_kw=[22.0, 22.0],
            import_limit_kw=15.0,
        )
    )
    assert plan.status is HorizonStatus.OPTIMAL
    assert np.all(plan.grid_import_kw <= 15.0 + 1e-6)
    # Car 0 has 2 h at most 10 kW: 20 kWh, the rest unmet; car 1 is served later.
    np.testing.assert_allclose(plan.unmet_energy_kwh, [10.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(plan.power_kw[0, 8:], 0.0)
    np.testing.assert_allclose(delivered_kwh(plan) + plan.unmet_energy_kwh, [30.0, 30.0])


def test_base_load_above_the_limit_shows_as_overload_not_failure() -> None:
    plan = plan_horizon(day(energy_kwh=[5.0], departure_step=[96], max_power_kw=[11.0], import_limit_kw=3.0))
    assert plan.status is HorizonStatus.OPTIMAL
    np.testing.assert_allclose(plan.overload_kw, 2.0, atol=1e-6)
    assert plan.unmet_energy_kwh[0] == pytest.approx(5.0)


def test_first_step_charges_the_car_that_cannot_wait() -> None:
    # Expensive now, cheap from 04:00: car 0 leaves in 2 h and must charge now anyway,
    # car 1 waits for the cheap hours.
    problem = dataclasses.replace(
        day(energy_kwh=[20.0, 20.0], departure_step=[8, 96], max_power_kw=[11.0, 11.0]),
        import_price_per_kwh=np.where(np.arange(N_STEPS) < 16, 0.40, 0.15),
    )
    now_kw = first_step_power_kw(plan_horizon(problem))
    assert now_kw[0] == pytest.approx(11.0, abs=1e-6)
    assert now_kw[1] == pytest.approx(0.0, abs=1e-6)


def test_least_slack_charges_first_where_prices_tie_and_plans_agree() -> None:
    # A flat price and room for one car at a time: the car that leaves first charges first,
    # and solving again (as the live planner does every few minutes) gives the same plan.
    problem = dataclasses.replace(
        day(
            energy_kwh=[11.0, 11.0, 11.0],
            departure_step=[40, 12, 24],
            max_power_kw=[11.0, 11.0, 11.0],
            import_limit_kw=16.0,  # 11 kW beside the 5 kW base load
        ),
        import_price_per_kwh=np.full(N_STEPS, 0.25),
    )
    first = plan_horizon(problem)
    np.testing.assert_allclose(first_step_power_kw(first), [0.0, 11.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(plan_horizon(problem).power_kw, first.power_kw, atol=1e-9)


def test_first_step_needs_a_plan() -> None:
    empty = HorizonPlan(HorizonStatus.ERROR, *(np.zeros(0),) * 6, float("nan"), 0.0)
    with pytest.raises(ValueError, match="no plan"):
        first_step_power_kw(empty)


def test_inconsistent_shapes_are_refused() -> None:
    problem = day(energy_kwh=[1.0], departure_step=[4], max_power_kw=[11.0])
    with pytest.raises(ValueError, match="pv_forecast_kw"):
        dataclasses.replace(problem, pv_forecast_kw=np.zeros(3))


# Demand charge: a monthly rate per kW of peak; 12/kW over 15-min steps asks a penalty above 48/kWh.
DEMAND_RATE_PER_KW = 12.0
PENALTY_ABOVE_THE_RAISE_PER_KWH = 100.0


def with_demand(problem: HorizonProblem, target_kw: float) -> HorizonProblem:
    return dataclasses.replace(
        problem,
        demand_target_kw=target_kw,
        demand_rate_per_kw=DEMAND_RATE_PER_KW,
        unmet_energy_penalty_per_kwh=PENALTY_ABOVE_THE_RAISE_PER_KWH,
    )


def test_a_flat_price_keeps_the_peak_at_the_target_when_the_departures_allow() -> None:
    # 16 kW paid for beside a 5 kW base load: two cars of 11 kWh each, leaving in 10 h, fit one
    # after the other. Without the demand charge they would run together (27 kW).
    problem = dataclasses.replace(
        day(energy_kwh=[11.0, 11.0], departure_step=[40, 40], max_power_kw=[11.0, 11.0]),
        import_price_per_kwh=np.full(N_STEPS, 0.25),
    )
    assert plan_horizon(problem).grid_import_kw.max() == pytest.approx(27.0, abs=1e-6)
    plan = plan_horizon(with_demand(problem, 16.0))
    assert plan.status is HorizonStatus.OPTIMAL
    assert plan.peak_kw == pytest.approx(16.0, abs=1e-6)
    assert plan.grid_import_kw.max() <= 16.0 + 1e-6
    np.testing.assert_allclose(plan.unmet_energy_kwh, 0.0, atol=1e-6)


def test_the_peak_rises_only_as_far_as_a_departure_needs() -> None:
    # 10 kW paid for, 5 kW of it base load: car 0 needs 20 kWh in 2 h (10 kW on average), car 1
    # has all day. The peak rises to 15 kW, not to the 27 kW both cars could draw together.
    problem = with_demand(
        dataclasses.replace(
            day(energy_kwh=[20.0, 30.0], departure_step=[8, 96], max_power_kw=[11.0, 11.0]),
            import_price_per_kwh=np.full(N_STEPS, 0.25),
        ),
        10.0,
    )
    plan = plan_horizon(problem)
    assert plan.status is HorizonStatus.OPTIMAL
    np.testing.assert_allclose(plan.unmet_energy_kwh, 0.0, atol=1e-6)
    assert plan.peak_kw == pytest.approx(15.0, abs=1e-6)
    assert plan.grid_import_kw.max() == pytest.approx(15.0, abs=1e-6)
    assert plan.cost == pytest.approx(0.25 * (50.0 + 5.0 * 24), rel=1e-6)  # the demand charge is apart


def test_energy_moves_to_the_cheap_hours_under_the_target() -> None:
    # 9 kW paid for beside 5 kW of base load: 4 kW for the car, in the night hours (00:00-07:00).
    plan = plan_horizon(with_demand(day(energy_kwh=[20.0], departure_step=[92], max_power_kw=[11.0]), 9.0))
    assert plan.status is HorizonStatus.OPTIMAL
    assert plan.peak_kw == pytest.approx(9.0, abs=1e-6)
    np.testing.assert_allclose(delivered_kwh(plan), [20.0], atol=1e-6)
    assert plan.power_kw.max() <= 4.0 + 1e-6
    cheap = np.r_[0:28, 84:96]
    assert plan.power_kw[0, cheap].sum() == pytest.approx(plan.power_kw[0].sum())


def test_without_a_demand_charge_the_plan_has_no_peak() -> None:
    plan = plan_horizon(day(energy_kwh=[5.0], departure_step=[40], max_power_kw=[11.0]))
    assert np.isnan(plan.peak_kw)


@pytest.mark.parametrize(
    ("target_kw", "rate_per_kw", "match"),
    [
        (float("nan"), 1.0, "demand_target_kw"),
        (-1.0, 1.0, "demand_target_kw"),
        (10.0, float("inf"), "demand_rate_per_kw"),
        (10.0, -1.0, "demand_rate_per_kw"),
        (None, 1.0, "needs demand_target_kw"),
    ],
)
def test_bad_demand_terms_are_refused(target_kw: float | None, rate_per_kw: float, match: str) -> None:
    problem = day(energy_kwh=[1.0], departure_step=[4], max_power_kw=[11.0])
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(problem, demand_target_kw=target_kw, demand_rate_per_kw=rate_per_kw)
