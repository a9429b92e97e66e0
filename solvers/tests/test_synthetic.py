"""The synthetic site generator is seeded, well-formed and realistic enough to be tight."""

from __future__ import annotations

import numpy as np
from evdlm_solvers import UNIT_CURRENT_A, UNIT_POWER_W, row_load, solve_heuristic
from evdlm_solvers.synthetic import SiteShape, next_cycle, random_site


def test_same_seed_same_site() -> None:
    first, second = random_site(300, 42), random_site(300, 42)
    for name in ("row_headroom", "coef_row", "coef_value", "setpoint_max", "urgency"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert not np.array_equal(random_site(300, 43).row_headroom, first.row_headroom)


def test_tree_rows_and_mix_of_chargers() -> None:
    problem = random_site(500, 1, SiteShape(battery_probability=1.0))
    current_rows = problem.row_unit == UNIT_CURRENT_A
    assert current_rows.sum() % 3 == 0
    assert (problem.row_unit == UNIT_POWER_W).sum() == 2  # import and export
    roots = np.flatnonzero(current_rows & (problem.row_parent < 0))
    np.testing.assert_array_equal(roots, [0, 1, 2])
    # 1-phase on a known phase, 3-phase / unknown phase, and DC all occur.
    per_column = np.diff(problem.coef_indptr)
    assert {5, 11} <= set(per_column.tolist())
    assert (problem.evse_unit == UNIT_POWER_W).any()
    assert problem.battery_coef_row.size == 2


def test_tight_sites_cannot_give_everyone_their_maximum() -> None:
    problem = random_site(200, 3, SiteShape(tightness=1.0))
    load_at_max = row_load(problem, problem.setpoint_max, 0.0)
    assert (load_at_max > problem.row_headroom).any()


def test_overloaded_rows_have_negative_headroom() -> None:
    problem = random_site(200, 3, SiteShape(overloaded_row_probability=0.2))
    assert (problem.row_headroom < 0).any()


def test_next_cycle_feeds_back_the_allocation() -> None:
    problem = random_site(50, 5, SiteShape(tightness=1.0))
    problem = problem.with_headroom(problem.row_headroom * 0.3)
    allocation = solve_heuristic(problem)
    following = next_cycle(problem, allocation, 30.0)
    np.testing.assert_array_equal(following.charging, allocation.admitted)
    np.testing.assert_array_equal(following.setpoint_previous, allocation.setpoint)
    paused = ~allocation.admitted
    np.testing.assert_allclose(following.waiting_s[paused], problem.waiting_s[paused] + 30.0)
    np.testing.assert_allclose(following.on_time_s[paused], 0.0)
