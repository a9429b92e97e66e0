"""The numba heuristic: feasibility, admission policy, rotation, parity with Python."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from evdlm_solvers import (
    UNIT_CURRENT_A,
    Problem,
    admit,
    check,
    heuristic,
    solve_heuristic,
    warm_up,
)
from evdlm_solvers.synthetic import SiteShape, random_site
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import random_sites

SITES = random_sites()


def one_feeder(
    capacity_a: float,
    *,
    n_evse: int = 3,
    priority: list[int] | None = None,
    urgency: list[float] | None = None,
    charging: list[bool] | None = None,
    waiting_s: list[float] | None = None,
    on_time_s: list[float] | None = None,
) -> Problem:
    """``n_evse`` 1-phase cars (6..32 A) on one current row of ``capacity_a``."""
    return Problem(
        row_headroom=np.array([capacity_a]),
        row_unit=np.array([UNIT_CURRENT_A]),
        row_parent=np.array([-1]),
        coef_indptr=np.arange(n_evse + 1),
        coef_row=np.zeros(n_evse, dtype=np.int64),
        coef_value=np.ones(n_evse),
        evse_unit=np.full(n_evse, UNIT_CURRENT_A),
        power_per_unit_w=np.full(n_evse, 230.0),
        setpoint_min=np.full(n_evse, 6.0),
        setpoint_max=np.full(n_evse, 32.0),
        setpoint_previous=np.zeros(n_evse),
        ramp_up_max=np.full(n_evse, np.inf),
        charging=np.array(charging or [False] * n_evse),
        priority=np.array(priority or [1] * n_evse),
        urgency=np.array(urgency or [1.0] * n_evse),
        waiting_s=np.array(waiting_s or [0.0] * n_evse),
        on_time_s=np.array(on_time_s or [0.0] * n_evse),
        rotation_period_s=900.0,
        min_on_time_s=300.0,
    )


@settings(max_examples=2000, deadline=None)
@given(SITES)
def test_heuristic_output_always_passes_the_checker(problem: Problem) -> None:
    allocation = solve_heuristic(problem)
    report = check(problem, allocation)
    # Only rows already over their limit through uncontrolled load may remain over.
    assert report.ok or report.only_uncontrolled_excess, report.summary()
    below_min = (allocation.setpoint > 0) & (allocation.setpoint < problem.setpoint_min)
    assert not below_min.any()
    np.testing.assert_array_equal(allocation.setpoint[~allocation.admitted], 0.0)


@settings(max_examples=200, deadline=None)
@given(SITES)
def test_jitted_heuristic_equals_its_python_function(problem: Problem) -> None:
    arguments = heuristic.kernel_arguments(problem)
    jitted = heuristic._allocate_kernel(*arguments)
    python = heuristic._allocate_kernel.py_func(*arguments)
    for jitted_part, python_part in zip(jitted, python, strict=True):
        np.testing.assert_array_equal(jitted_part, python_part)


@settings(max_examples=150, deadline=None)
@given(SITES)
def test_jitted_admission_and_fill_equal_their_python_functions(problem: Problem) -> None:
    capacity, _ = heuristic._capacity_kernel(
        problem.row_headroom,
        problem.battery_coef_row,
        problem.battery_coef_value,
        problem.battery_discharge_max_w,
        problem.battery_charge_max_w,
    )
    row_ptr, row_evse = heuristic._row_lists(problem.coef_indptr, problem.coef_row, problem.coef_value, problem.n_rows)
    structure = (problem.coef_indptr, problem.coef_row, problem.coef_value, row_ptr, row_evse)
    admit_arguments = (
        *structure,
        capacity,
        problem.setpoint_min,
        problem.setpoint_upper,
        problem.charging,
        problem.priority,
        problem.urgency,
        problem.waiting_s,
        problem.on_time_s,
        problem.rotation_period_s,
        problem.min_on_time_s,
        10_000,
    )
    admitted = heuristic._admit_kernel(*admit_arguments)
    np.testing.assert_array_equal(admitted, heuristic._admit_kernel.py_func(*admit_arguments))
    fill_arguments = (
        *structure,
        capacity,
        np.where(admitted, problem.setpoint_min, 0.0),
        problem.setpoint_upper,
        admitted,
        problem.priority,
        problem.urgency / problem.power_per_unit_w,
        10_000,
    )
    jitted_setpoint, jitted_events = heuristic._fill_kernel(*fill_arguments)
    python_setpoint, python_events = heuristic._fill_kernel.py_func(*fill_arguments)
    np.testing.assert_array_equal(jitted_setpoint, python_setpoint)
    assert jitted_events == python_events


def test_water_filling_shares_in_proportion_to_urgency() -> None:
    problem = one_feeder(60.0, urgency=[1.0, 2.0, 1.0])
    allocation = solve_heuristic(problem, defer_by_share=False)
    # Without pass A: 18 A of minimums, 42 A shared 1:2:1 above them (16.5, 27, 16.5 A);
    # floored to whole amps, the freed amp goes to the most urgent car.
    np.testing.assert_allclose(allocation.setpoint, [16.0, 28.0, 16.0])
    # With pass A everyone's share starts from 0 A: 60 A shared 1:2:1.
    np.testing.assert_allclose(solve_heuristic(problem, defer_by_share=True).setpoint, [15.0, 30.0, 15.0])


def test_water_filling_stops_each_car_at_its_maximum_and_ramp() -> None:
    problem = dataclasses.replace(
        one_feeder(200.0),
        setpoint_previous=np.array([10.0, 10.0, 0.0]),
        ramp_up_max=np.array([4.0, np.inf, 1.0]),
    )
    allocation = solve_heuristic(problem)
    np.testing.assert_allclose(allocation.setpoint, [14.0, 32.0, 6.0])


def test_higher_priority_class_is_filled_first() -> None:
    allocation = solve_heuristic(one_feeder(50.0, priority=[1, 0, 1]))
    # Class 0 takes its maximum first; the 6 A left are shared by class 1 above its minimums.
    np.testing.assert_allclose(allocation.setpoint, [9.0, 32.0, 9.0])


def test_charging_car_keeps_its_place_against_a_more_urgent_newcomer() -> None:
    problem = one_feeder(13.0, urgency=[0.5, 3.0, 3.0], charging=[True, False, False])
    allocation = solve_heuristic(problem)
    np.testing.assert_array_equal(allocation.admitted, [True, True, False])


def test_newcomers_are_admitted_by_priority_then_urgency() -> None:
    problem = one_feeder(12.0, priority=[1, 1, 0], urgency=[1.0, 2.0, 0.1])
    np.testing.assert_array_equal(solve_heuristic(problem, defer_by_share=False).admitted, [False, True, True])
    # With pass A classes are strict for the share too: the class-0 car's share (all 12 A)
    # comes before a class-1 car's minimum.
    np.testing.assert_array_equal(solve_heuristic(problem, defer_by_share=True).admitted, [False, False, True])


def test_overdue_car_displaces_the_longest_running_car_of_its_class_or_lower() -> None:
    problem = one_feeder(
        12.0,
        n_evse=4,
        priority=[1, 1, 1, 1],
        charging=[True, True, False, False],
        on_time_s=[400.0, 2_000.0, 0.0, 0.0],
        waiting_s=[0.0, 0.0, 100.0, 1_000.0],
    )
    allocation = solve_heuristic(problem)
    # Car 3 is overdue: it takes the place of car 1 (longest on-time past 300 s); car 2
    # has not waited a rotation period yet.
    np.testing.assert_array_equal(allocation.admitted, [True, False, False, True])


def test_rotation_spares_higher_priority_and_recently_started_cars() -> None:
    problem = one_feeder(
        12.0,
        n_evse=3,
        priority=[0, 1, 1],
        charging=[True, True, False],
        on_time_s=[5_000.0, 100.0, 0.0],
        waiting_s=[0.0, 0.0, 1_000.0],
    )
    np.testing.assert_array_equal(solve_heuristic(problem).admitted, [True, True, False])


def test_rows_with_negative_headroom_pause_their_cars_only() -> None:
    problem = random_site(30, 3, SiteShape(overloaded_row_probability=0.3))
    allocation = solve_heuristic(problem)
    report = check(problem, allocation)
    assert report.only_uncontrolled_excess
    over_rows = np.flatnonzero(problem.row_headroom < 0)
    column = np.repeat(np.arange(problem.n_evse), np.diff(problem.coef_indptr))
    on_over_rows = np.unique(column[np.isin(problem.coef_row, over_rows)])
    assert on_over_rows.size > 0
    np.testing.assert_array_equal(allocation.setpoint[on_over_rows], 0.0)


@pytest.mark.parametrize("max_events", [1, 3])
def test_event_cap_keeps_the_allocation_feasible(max_events: int) -> None:
    problem = random_site(200, 5)
    allocation = solve_heuristic(problem, max_events=max_events)
    assert check(problem, allocation).ok
    assert (allocation.setpoint.sum()) <= solve_heuristic(problem).setpoint.sum()


def test_battery_discharges_only_as_far_as_the_cars_need() -> None:
    problem = random_site(60, 11, SiteShape(tightness=1.0, battery_probability=1.0))
    allocation = solve_heuristic(problem)
    assert check(problem, allocation).ok
    assert 0.0 <= allocation.battery_w <= problem.battery_discharge_max_w
    idle = dataclasses.replace(problem, battery_discharge_max_w=0.0, battery_charge_max_w=0.0)
    assert solve_heuristic(idle).setpoint.sum() <= allocation.setpoint.sum() + 1e-9


def test_admission_alone_matches_the_full_heuristic() -> None:
    problem = random_site(100, 2, SiteShape(tightness=0.9))
    np.testing.assert_array_equal(admit(problem), solve_heuristic(problem).admitted)


def test_warm_up_reports_seconds() -> None:
    assert 0.0 <= warm_up() < 60.0


def test_large_site_is_feasible() -> None:
    problem = random_site(3000, 9, SiteShape(tightness=0.7))
    assert check(problem, solve_heuristic(problem)).ok


_PURE_PYTHON_RUN = """
import json, sys
from evdlm_solvers import solve_heuristic
from evdlm_solvers.synthetic import SiteShape, random_site

results = []
for seed in range(40):
    problem = random_site(5 + seed, seed, SiteShape(tightness=seed / 40, battery_probability=0.5))
    allocation = solve_heuristic(problem)
    results.append([allocation.setpoint.tolist(), allocation.battery_w, allocation.admitted.tolist()])
json.dump(results, sys.stdout)
"""


def test_every_kernel_and_helper_equals_pure_python() -> None:
    # py_func parity above still calls jitted helpers; with the JIT off nothing is compiled.
    completed = subprocess.run(
        [sys.executable, "-c", _PURE_PYTHON_RUN],
        env={**os.environ, "NUMBA_DISABLE_JIT": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    for seed, (setpoint, battery_w, admitted) in enumerate(json.loads(completed.stdout)):
        problem = random_site(5 + seed, seed, SiteShape(tightness=seed / 40, battery_probability=0.5))
        allocation = solve_heuristic(problem)
        np.testing.assert_array_equal(allocation.setpoint, setpoint)
        assert allocation.battery_w == battery_w
        np.testing.assert_array_equal(allocation.admitted, admitted)


@settings(max_examples=500, deadline=None)
@given(SITES, st.booleans())
def test_setpoints_are_whole_amps_within_bounds_and_pass_the_checker(problem: Problem, defer: bool) -> None:
    allocation = solve_heuristic(problem, defer_by_share=defer)
    report = check(problem, allocation)
    assert report.ok or report.only_uncontrolled_excess, report.summary()
    setpoint = allocation.setpoint
    running = setpoint > 0
    assert np.all(setpoint >= 0.0)
    assert np.all(setpoint[running] >= problem.setpoint_min[running] - 1e-9)
    assert np.all(setpoint[running] <= problem.setpoint_upper[running] + 1e-9)
    ac = problem.evse_unit == UNIT_CURRENT_A
    np.testing.assert_array_equal(setpoint[ac], np.floor(setpoint[ac]))
    np.testing.assert_array_equal(setpoint[~allocation.admitted], 0.0)


@settings(max_examples=150, deadline=None)
@given(SITES)
def test_jitted_admission_by_fill_equals_its_python_function(problem: Problem) -> None:
    arguments = heuristic.kernel_arguments(problem, defer_by_share=True)
    jitted = heuristic._allocate_kernel(*arguments)
    python = heuristic._allocate_kernel.py_func(*arguments)
    for jitted_part, python_part in zip(jitted, python, strict=True):
        np.testing.assert_array_equal(jitted_part, python_part)


def test_admission_by_fill_defers_the_car_with_slack() -> None:
    # 20 A for three cars at 6 A minimums: all three minimums fit, but the urgent car's
    # share from 0 A leaves the two relaxed ones below their minimum.
    problem = one_feeder(20.0, urgency=[10.0, 0.1, 0.1])
    assert solve_heuristic(problem, defer_by_share=False).admitted.all()
    allocation = solve_heuristic(problem, defer_by_share=True)
    np.testing.assert_array_equal(allocation.admitted, [True, False, False])
    np.testing.assert_allclose(allocation.setpoint, [20.0, 0.0, 0.0])


@settings(max_examples=150, deadline=None)
@given(SITES)
def test_jitted_whole_amps_and_keep_equal_their_python_functions(problem: Problem) -> None:
    capacity, _ = heuristic._capacity_kernel(
        problem.row_headroom,
        problem.battery_coef_row,
        problem.battery_coef_value,
        problem.battery_discharge_max_w,
        problem.battery_charge_max_w,
    )
    share = solve_heuristic(problem, defer_by_share=False).setpoint * 0.7
    keep_arguments = (
        share,
        problem.setpoint_min,
        problem.setpoint_upper,
        problem.charging,
        problem.waiting_s,
        problem.on_time_s,
        problem.rotation_period_s,
        problem.min_on_time_s,
    )
    keep = heuristic._keep_kernel(*keep_arguments)
    np.testing.assert_array_equal(keep, heuristic._keep_kernel.py_func(*keep_arguments))
    # Fractional setpoints that fit: 0.7 of a feasible allocation (those still at their minimum).
    start = np.where(share >= problem.setpoint_min, share, 0.0)
    order = np.argsort(-problem.urgency, kind="mergesort")
    results = []
    for kernel in (heuristic._whole_amps_kernel, heuristic._whole_amps_kernel.py_func):
        setpoint, admitted = start.copy(), start > 0
        kernel(
            problem.coef_indptr,
            problem.coef_row,
            problem.coef_value,
            capacity,
            problem.evse_unit,
            setpoint,
            problem.setpoint_min,
            problem.setpoint_upper,
            admitted,
            ~keep,
            order,
        )
        results.append((setpoint, admitted))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    setpoint = results[0][0]
    ac = problem.evse_unit == UNIT_CURRENT_A
    np.testing.assert_array_equal(setpoint[ac], np.floor(setpoint[ac]))
    running = setpoint > 0
    assert np.all(setpoint[running] >= problem.setpoint_min[running] - 1e-9)
    assert np.all(setpoint[running] <= problem.setpoint_upper[running] + 1e-9)


def test_a_planned_share_decides_who_waits_but_never_stops_a_running_car() -> None:
    # 20 A for three cars: the fill alone keeps the urgent car 0 and defers the relaxed ones.
    base = one_feeder(20.0, urgency=[10.0, 0.1, 0.1])
    # A plan that gives car 2 the feeder instead: car 2 runs, car 0 (not yet charging) waits.
    planned = dataclasses.replace(base, planned_share=np.array([0.0, np.nan, 20.0]))
    np.testing.assert_array_equal(solve_heuristic(planned).admitted, [False, False, True])
    # A car already charging keeps at least its own fill share whatever the plan says.
    running = dataclasses.replace(
        planned, charging=np.array([True, False, False]), setpoint_previous=np.array([20.0, 0.0, 0.0])
    )
    assert solve_heuristic(running).admitted[0]


@pytest.mark.parametrize("bad", [-1.0, np.inf])
def test_a_planned_share_must_be_nan_or_finite_and_not_negative(bad: float) -> None:
    with pytest.raises(ValueError, match="planned_share"):
        dataclasses.replace(one_feeder(20.0), planned_share=np.array([bad, np.nan, np.nan]))
