"""Problem construction: coercion, validation, derived bounds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from evdlm_solvers import Allocation, delivered_power_w, objective_weight
from evdlm_solvers.synthetic import random_site


def test_arrays_are_coerced_to_solver_dtypes() -> None:
    problem = random_site(5, 0)
    rebuilt = dataclasses.replace(problem, priority=problem.priority.tolist())
    assert rebuilt.priority.dtype == np.int64
    assert rebuilt.coef_value.dtype == np.float64
    assert rebuilt.n_evse == 5


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("setpoint_min", np.zeros(4), "setpoint_min"),
        ("coef_row", None, "out of range"),
        ("priority", np.full(5, 10), "priority"),
        ("urgency", np.zeros(5), "urgency"),
        ("row_unit", np.zeros(1), "row_unit"),
        ("row_headroom", "nan", "row_headroom holds NaN"),
        ("setpoint_previous", "nan", "setpoint_previous must be finite"),
        ("setpoint_min", "negative", "setpoint_min and ramp_up_max"),
    ],
)
def test_inconsistent_problems_are_refused(field: str, value: object, message: str) -> None:
    problem = random_site(5, 0)
    if value is None:
        value = problem.coef_row + problem.n_rows
    elif isinstance(value, str) and value == "nan":
        value = np.where(np.arange(getattr(problem, field).size) == 0, np.nan, getattr(problem, field))
    elif isinstance(value, str):
        value = -getattr(problem, field)
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(problem, **{field: value})


def test_battery_limits_are_magnitudes() -> None:
    with pytest.raises(ValueError, match="battery"):
        dataclasses.replace(random_site(5, 0), battery_charge_max_w=-1.0)


def test_upper_bound_combines_max_and_ramp_but_always_allows_the_minimum() -> None:
    problem = dataclasses.replace(
        random_site(3, 0),
        setpoint_min=np.array([6.0, 6.0, 6.0]),
        setpoint_max=np.array([16.0, 16.0, 4.0]),
        setpoint_previous=np.array([0.0, 10.0, 0.0]),
        ramp_up_max=np.array([2.0, 2.0, np.inf]),
    )
    np.testing.assert_allclose(problem.setpoint_upper, [6.0, 12.0, 4.0])


def test_objective_weights_classes_above_urgency() -> None:
    problem = dataclasses.replace(
        random_site(2, 0),
        priority=np.array([0, 1]),
        urgency=np.array([0.5, 2.0]),
        power_per_unit_w=np.array([1.0, 1.0]),
    )
    weight = objective_weight(problem)
    assert weight[0] > 10 * weight[1]
    allocation = Allocation(np.array([2.0, 3.0]), 0.0, np.array([True, True]))
    assert delivered_power_w(problem, allocation) == pytest.approx(5.0)
