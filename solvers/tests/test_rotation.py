"""Repeated cycles with the allocation fed back: no flapping, no starvation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from evdlm_solvers import Problem, check, row_load, solve_heuristic
from evdlm_solvers.synthetic import SiteShape, next_cycle, random_site
from hypothesis import given, settings
from hypothesis import strategies as st

CYCLE_S = 30.0


def fits_alone(problem: Problem) -> np.ndarray:
    """EVSEs whose minimum fits on the site with nobody else charging."""
    room = np.maximum(problem.row_headroom, 0.0)
    alone = np.diag(problem.setpoint_min)
    return np.array([np.all(row_load(problem, alone[j], 0.0) <= room) for j in range(len(alone))])


@settings(max_examples=300, deadline=None)
@given(
    n_evse=st.integers(1, 30),
    seed=st.integers(0, 2**32 - 1),
    jitter=st.floats(1.0, 1.5),
)
def test_everyone_charges_every_cycle_when_the_minimums_fit(n_evse: int, seed: int, jitter: float) -> None:
    problem = random_site(n_evse, seed, SiteShape(tightness=1.0))
    rng = np.random.default_rng(seed)
    load_at_min = row_load(problem, problem.setpoint_min, 0.0)
    for _ in range(20):
        # Headroom moves every cycle but always leaves room for every minimum.
        headroom = np.maximum(problem.row_headroom, load_at_min * rng.uniform(1.0, jitter))
        problem = problem.with_headroom(headroom)
        allocation = solve_heuristic(problem, defer_by_share=False)
        assert check(problem, allocation).ok
        assert allocation.admitted.all()
        problem = next_cycle(problem, allocation, CYCLE_S)
    assert not problem.waiting_s.any()


@settings(max_examples=300, deadline=None)
@given(
    n_evse=st.integers(1, 30),
    seed=st.integers(0, 2**32 - 1),
    jitter=st.floats(1.0, 1.5),
)
def test_a_deferred_car_waits_only_for_room_others_use(n_evse: int, seed: int, jitter: float) -> None:
    """Admission by fill (pass A) may defer a car whose minimum fits, but only while its
    room goes to cars with less slack: started at its minimum beside the allocation, it would
    break a row. And no car waits past the maximum wait plus a minimum on-time."""
    problem = random_site(n_evse, seed, SiteShape(tightness=1.0, battery_probability=0.0))
    rng = np.random.default_rng(seed)
    load_at_min = row_load(problem, problem.setpoint_min, 0.0)
    for _ in range(40):
        headroom = np.maximum(problem.row_headroom, load_at_min * rng.uniform(1.0, jitter))
        problem = problem.with_headroom(headroom)
        allocation = solve_heuristic(problem, defer_by_share=True)
        assert check(problem, allocation).ok
        upper = problem.setpoint_upper
        for j in np.flatnonzero(~allocation.admitted & (upper >= problem.setpoint_min) & (upper > 0)):
            started = allocation.setpoint.copy()
            started[j] = problem.setpoint_min[j]
            admitted = allocation.admitted.copy()
            admitted[j] = True
            tried = dataclasses.replace(allocation, setpoint=started, admitted=admitted)
            assert not check(problem, tried).ok, f"car {j} paused beside room for its minimum"
        problem = next_cycle(problem, allocation, CYCLE_S)
        assert problem.waiting_s.max(initial=0.0) <= problem.rotation_period_s + problem.min_on_time_s + CYCLE_S


@pytest.mark.parametrize("seed", range(60))
def test_nobody_in_a_class_waits_much_longer_than_the_rotation_period(seed: int) -> None:
    rng = np.random.default_rng(seed)
    problem = random_site(
        int(rng.integers(5, 40)),
        seed,
        SiteShape(tightness=1.0, battery_probability=0.0, rotation_period_s=600.0, min_on_time_s=300.0),
    )
    problem = dataclasses.replace(problem, priority=np.ones(problem.n_evse, dtype=np.int64))
    # Only 30-80 % of the minimums fit: cars must take turns.
    load_at_min = row_load(problem, problem.setpoint_min, 0.0)
    problem = problem.with_headroom(np.minimum(problem.row_headroom, load_at_min * rng.uniform(0.3, 0.8)))
    can_ever_run = fits_alone(problem)
    longest_wait_s = 0.0
    admitted_once = np.zeros(problem.n_evse, dtype=np.bool_)
    for _ in range(200):
        allocation = solve_heuristic(problem)
        report = check(problem, allocation)
        assert report.ok or report.only_uncontrolled_excess
        admitted_once |= allocation.admitted
        problem = next_cycle(problem, allocation, CYCLE_S)
        longest_wait_s = max(longest_wait_s, problem.waiting_s[can_ever_run].max(initial=0.0))
    assert admitted_once[can_ever_run].all()
    # A due car waits for a car past its minimum on-time; with more cars queued than
    # places some wait a few such turns (observed at most 1680 s over 200 seeds).
    assert longest_wait_s <= problem.rotation_period_s + 4 * problem.min_on_time_s
