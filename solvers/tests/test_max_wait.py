"""The maximum wait (``rotation_period_s``) and the staged raises that carry it to the wire."""

from __future__ import annotations

import dataclasses

import numpy as np
from evdlm_solvers import Problem, check, row_load, solve_heuristic, stage_raises
from evdlm_solvers.synthetic import SiteShape, random_site
from evdlm_solvers.transition import _stage_raises_kernel, raise_order
from hypothesis import given, settings
from hypothesis import strategies as st


def _overdue_car_among_displaceable_ones(n_evse: int, seed: int, pick: int, tightness: float) -> tuple[Problem, int]:
    """A site where car ``j`` has waited past the maximum wait and everyone else charges past
    their minimum on-time in the same class (so any of them may be displaced)."""
    problem = random_site(n_evse, seed, SiteShape(tightness=tightness, battery_probability=0.0))
    j = pick % problem.n_evse
    charging = np.ones(problem.n_evse, dtype=np.bool_)
    charging[j] = False
    waiting_s = np.zeros(problem.n_evse)
    waiting_s[j] = problem.rotation_period_s + 1.0
    on_time_s = np.where(charging, problem.min_on_time_s + 60.0, 0.0)
    problem = dataclasses.replace(
        problem,
        priority=np.zeros(problem.n_evse, dtype=np.int64),
        charging=charging,
        waiting_s=waiting_s,
        on_time_s=on_time_s,
        setpoint_previous=np.where(charging, problem.setpoint_min, 0.0),
    )
    return problem, j


@settings(max_examples=400, deadline=None)
@given(
    n_evse=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    pick=st.integers(0, 39),
    tightness=st.floats(0.0, 1.0),
)
def test_a_car_past_the_maximum_wait_restarts_when_it_fits(n_evse: int, seed: int, pick: int, tightness: float) -> None:
    """Fits: its minimum fits on every row of its own once the cars that may be displaced
    (same class, past their minimum on-time) make room; then it runs in this very cycle."""
    problem, j = _overdue_car_among_displaceable_ones(n_evse, seed, pick, tightness)
    minimum = problem.setpoint_min[j]
    if not (minimum > 0.0 and problem.setpoint_upper[j] >= minimum):
        return  # nothing to start (a car that takes no power, or below its minimum off time)
    alone = np.zeros(problem.n_evse)
    alone[j] = minimum
    if not np.all(row_load(problem, alone, 0.0) <= np.maximum(problem.row_headroom, 0.0) + 1e-9):
        return  # does not fit even with the site to itself
    allocation = solve_heuristic(problem)
    report = check(problem, allocation)
    assert report.ok or report.only_uncontrolled_excess, report.summary()
    assert allocation.admitted[j]
    assert allocation.setpoint[j] >= minimum - 1e-9


@settings(max_examples=300, deadline=None)
@given(n_evse=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), cut_share=st.floats(0.0, 1.0))
def test_staged_raises_keep_the_transition_within_every_row(n_evse: int, seed: int, cut_share: float) -> None:
    """Cut cars still draw their previous setpoint while raised ones may draw the new one:
    that transition load stays within every row that held the previous one, each car gets
    either its new setpoint or its previous one, and a cut is never held back."""
    problem = random_site(
        n_evse, seed, SiteShape(tightness=1.0, battery_probability=0.0, overloaded_row_probability=0.0)
    )
    rng = np.random.default_rng(seed)
    first = solve_heuristic(problem)
    # The next cycle moves every car: some cut, some raised or started.
    previous = first.setpoint
    following = dataclasses.replace(
        problem,
        setpoint_previous=previous,
        urgency=problem.urgency * rng.uniform(0.1, 10.0, problem.n_evse) ** cut_share,
    )
    allocation = solve_heuristic(following)
    staged, deferred = stage_raises(following, allocation)
    new, held = allocation.setpoint, staged.setpoint
    assert np.all((held == new) | (held == previous))
    assert np.all(held[new < previous] == new[new < previous])
    transition = row_load(following, np.maximum(previous, held), staged.battery_w)
    held_before = row_load(following, previous, 0.0) <= following.row_headroom + 1e-6
    assert np.all(transition[held_before] <= following.row_headroom[held_before] + 1e-6)
    assert deferred == int(np.count_nonzero(held != new))


def test_the_longest_waiting_start_goes_first_when_only_one_fits() -> None:
    # One 30 A row: car 0 is being cut 20 -> 6 A (its cut has not landed), cars 1 and 2
    # start at 6 A; the transition has room for one start only: the one past the maximum wait.
    problem = Problem(
        row_headroom=np.array([30.0]),
        row_unit=np.array([0]),
        row_parent=np.array([-1]),
        coef_indptr=np.array([0, 1, 2, 3]),
        coef_row=np.array([0, 0, 0]),
        coef_value=np.array([1.0, 1.0, 1.0]),
        evse_unit=np.array([0, 0, 0]),
        power_per_unit_w=np.full(3, 230.0),
        setpoint_min=np.full(3, 6.0),
        setpoint_max=np.full(3, 32.0),
        setpoint_previous=np.array([20.0, 0.0, 0.0]),
        ramp_up_max=np.full(3, np.inf),
        charging=np.array([True, False, False]),
        priority=np.zeros(3, dtype=np.int64),
        urgency=np.array([1.0, 5.0, 0.2]),
        waiting_s=np.array([0.0, 100.0, 1000.0]),
        on_time_s=np.array([3000.0, 0.0, 0.0]),
        rotation_period_s=900.0,
        min_on_time_s=120.0,
    )
    target = np.array([6.0, 6.0, 6.0])
    allocation = dataclasses.replace(solve_heuristic(problem), setpoint=target, admitted=target > 0)
    staged, deferred = stage_raises(problem, allocation)
    np.testing.assert_array_equal(staged.setpoint, [6.0, 0.0, 6.0])
    assert deferred == 1
    np.testing.assert_array_equal(raise_order(problem), [2, 1, 0])


@settings(max_examples=100, deadline=None)
@given(n_evse=st.integers(1, 30), seed=st.integers(0, 2**32 - 1))
def test_jitted_stage_raises_equals_its_python_function(n_evse: int, seed: int) -> None:
    problem = random_site(n_evse, seed, SiteShape(tightness=1.0))
    setpoint = solve_heuristic(problem).setpoint
    previous = np.random.default_rng(seed).permutation(setpoint)
    arguments = (
        problem.coef_indptr,
        problem.coef_row,
        problem.coef_value,
        problem.row_headroom.astype(np.float64),
        previous,
        setpoint,
        raise_order(problem),
    )
    jitted = _stage_raises_kernel(*arguments)
    python = _stage_raises_kernel.py_func(*arguments)
    np.testing.assert_array_equal(jitted[0], python[0])
    assert jitted[1] == python[1]
