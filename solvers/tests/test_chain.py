"""The fallback chain never dispatches an allocation the checker rejects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from evdlm_solvers import (
    Allocation,
    LpResult,
    LpStatus,
    Problem,
    SolverName,
    SolveStatus,
    chain,
    check,
    solve,
)
from evdlm_solvers.synthetic import SiteShape, random_site
from hypothesis import given, settings

from .conftest import random_sites

SITES = random_sites(0.2, mixed_chargers=False)


@settings(max_examples=1500, deadline=None)
@given(SITES)
def test_chain_output_always_passes_or_only_uncontrolled_load_is_over(problem: Problem) -> None:
    result = solve(problem, time_budget_s=2.0)
    report = check(problem, result.allocation)
    if result.status is SolveStatus.OVER_LIMIT:
        assert report.only_uncontrolled_excess
        assert (problem.row_headroom < 0).any()
    else:
        assert report.ok, report.summary()
    assert result.report.violation_count == report.violation_count
    assert result.timings.total_s >= result.timings.heuristic_s


def test_healthy_site_is_served_by_the_heuristic() -> None:
    result = solve(random_site(100, 0))
    assert (result.status, result.solver, result.reason) == (
        SolveStatus.OK,
        SolverName.HEURISTIC,
        "",
    )


def test_site_over_its_limit_pauses_the_cars_on_the_over_rows() -> None:
    problem = random_site(40, 2, SiteShape(overloaded_row_probability=0.5))
    result = solve(problem)
    assert result.status is SolveStatus.OVER_LIMIT
    assert all(violation.allocation_load <= 1e-3 for violation in result.report.rows)


def _broken_heuristic(problem: Problem, max_events: int) -> Allocation:
    return Allocation(setpoint=problem.setpoint_max * 10, battery_w=0.0, admitted=np.ones(problem.n_evse, bool))


def _crashing(*_: object, **__: object) -> LpResult:
    raise RuntimeError("solver bug")


def test_heuristic_failing_the_check_falls_back_to_the_lp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chain, "solve_heuristic", _broken_heuristic)
    result = solve(random_site(50, 6))
    assert result.solver is SolverName.LP
    assert result.status is SolveStatus.OK
    assert "heuristic failed check" in result.reason
    assert result.timings.lp_s > 0.0


def test_crashing_heuristic_falls_back_to_the_lp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chain, "solve_heuristic", _crashing)
    result = solve(random_site(50, 6))
    assert result.solver is SolverName.LP
    assert "heuristic raised RuntimeError: solver bug" in result.reason


def test_both_solvers_failing_holds_charging_cars_at_their_minimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chain, "solve_heuristic", _crashing)
    monkeypatch.setattr(chain, "solve_lp", _crashing)
    problem = random_site(10, 1, SiteShape(tightness=0.0))
    result = solve(problem)
    assert (result.status, result.solver) == (SolveStatus.SAFE, SolverName.SAFE_MINIMUM)
    np.testing.assert_array_equal(result.allocation.admitted, problem.charging)
    assert "LP raised" in result.reason


def test_both_solvers_failing_on_a_full_site_pauses_everyone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chain, "solve_heuristic", _crashing)
    monkeypatch.setattr(
        chain,
        "solve_lp",
        lambda *_, **__: LpResult(LpStatus.TIME_LIMIT, None, float("nan"), 0.1, "Time limit"),
    )
    problem = random_site(10, 1)
    problem = dataclasses.replace(problem, row_headroom=np.full(problem.n_rows, 1.0))
    result = solve(problem)
    assert (result.status, result.solver) == (SolveStatus.SAFE, SolverName.SAFE_PAUSED)
    assert not result.allocation.setpoint.any()
    assert "LP time_limit" in result.reason


def test_battery_shrinks_an_import_overload_it_cannot_remove() -> None:
    # Rows: grid import (W, 5 kW over its limit), export (W, 3 kW of room). One DC EVSE.
    problem = Problem(
        row_headroom=np.array([-5_000.0, 3_000.0]),
        row_unit=np.array([1, 1]),
        row_parent=np.array([-1, -1]),
        coef_indptr=np.array([0, 2]),
        coef_row=np.array([0, 1]),
        coef_value=np.array([1.0, -1.0]),
        evse_unit=np.array([1]),
        power_per_unit_w=np.array([1.0]),
        setpoint_min=np.array([0.0]),
        setpoint_max=np.array([50_000.0]),
        setpoint_previous=np.array([0.0]),
        ramp_up_max=np.array([np.inf]),
        charging=np.array([False]),
        priority=np.array([1]),
        urgency=np.array([1.0]),
        waiting_s=np.array([0.0]),
        on_time_s=np.array([0.0]),
        battery_discharge_max_w=10_000.0,
        battery_charge_max_w=10_000.0,
        battery_coef_row=np.array([0, 1]),
        battery_coef_value=np.array([-1.0, 1.0]),
    )
    result = solve(problem)
    assert (result.status, result.solver) == (SolveStatus.OVER_LIMIT, SolverName.HEURISTIC)
    assert result.allocation.setpoint[0] == 0.0
    assert result.allocation.battery_w == 3_000.0
    assert result.report.rows[0].excess == 2_000.0
