"""The checker on hand-made problems: each violation kind is detected, nothing else is."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from evdlm_solvers import (
    UNIT_CURRENT_A,
    UNIT_POWER_W,
    Allocation,
    BatteryViolationKind,
    EvseViolation,
    EvseViolationKind,
    Problem,
    Tolerance,
    check,
    paused,
)


def two_evse_site(headroom: tuple[float, ...] = (32.0, 32.0, 32.0, 30_000.0, 5_000.0)) -> Problem:
    """A 3-phase AC car (A) and a DC charger (W) behind one connection.

    Rows: L1, L2, L3 current (A), grid import (W), export (W).
    """
    return Problem(
        row_headroom=np.array(headroom),
        row_unit=np.array([UNIT_CURRENT_A] * 3 + [UNIT_POWER_W] * 2),
        row_parent=np.full(5, -1),
        coef_indptr=np.array([0, 5, 10]),
        coef_row=np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4]),
        coef_value=np.array([1.0, 1.0, 1.0, 690.0, -690.0, 1 / 690, 1 / 690, 1 / 690, 1.0, -1.0]),
        evse_unit=np.array([UNIT_CURRENT_A, UNIT_POWER_W]),
        power_per_unit_w=np.array([690.0, 1.0]),
        setpoint_min=np.array([6.0, 1_000.0]),
        setpoint_max=np.array([16.0, 20_000.0]),
        setpoint_previous=np.array([8.0, 0.0]),
        ramp_up_max=np.array([2.0, np.inf]),
        charging=np.array([True, False]),
        priority=np.array([0, 1]),
        urgency=np.array([1.0, 1.0]),
        waiting_s=np.array([0.0, 0.0]),
        on_time_s=np.array([60.0, 0.0]),
        battery_discharge_max_w=4_000.0,
        battery_charge_max_w=3_000.0,
        battery_coef_row=np.array([3, 4]),
        battery_coef_value=np.array([-1.0, 1.0]),
    )


def allocate(ac_a: float, dc_w: float, battery_w: float = 0.0) -> Allocation:
    return Allocation(
        setpoint=np.array([ac_a, dc_w]),
        battery_w=battery_w,
        admitted=np.array([ac_a != 0.0, dc_w != 0.0]),
    )


def kinds(violations: tuple[EvseViolation, ...]) -> set[EvseViolationKind]:
    return {violation.kind for violation in violations}


def test_paused_is_feasible_with_non_negative_headroom() -> None:
    report = check(two_evse_site(), paused(two_evse_site()))
    assert report.ok
    assert report.violation_count == 0
    assert report.summary() == "feasible"


def test_feasible_allocation_passes() -> None:
    assert check(two_evse_site(), allocate(10.0, 6_900.0, battery_w=-500.0)).ok


def test_row_over_headroom_is_reported_with_excess_and_own_load() -> None:
    problem = two_evse_site(headroom=(32.0, 32.0, 12.0, 30_000.0, 5_000.0))
    report = check(problem, allocate(10.0, 6_900.0))
    assert [violation.row for violation in report.rows] == [2]
    assert report.rows[0].excess == pytest.approx(10.0 + 10.0 - 12.0)
    assert report.rows[0].allocation_load == pytest.approx(20.0)
    assert not report.only_uncontrolled_excess
    assert not report.ok


def test_power_row_counts_battery_discharge_as_headroom() -> None:
    problem = two_evse_site(headroom=(32.0, 32.0, 32.0, 10_000.0, 5_000.0))
    assert not check(problem, allocate(10.0, 6_000.0)).ok
    assert check(problem, allocate(10.0, 6_000.0, battery_w=3_000.0)).ok


def test_below_minimum_but_running_is_reported() -> None:
    report = check(two_evse_site(), allocate(3.0, 0.0))
    assert kinds(report.evses) == {EvseViolationKind.BELOW_MIN}
    assert report.evses[0].amount == pytest.approx(3.0)


def test_above_maximum_is_reported() -> None:
    report = check(two_evse_site(), allocate(0.0, 25_000.0))
    assert kinds(report.evses) == {EvseViolationKind.ABOVE_MAX}
    assert report.evses[0].evse == 1
    assert report.evses[0].amount == pytest.approx(5_000.0)


def test_ramp_up_beyond_limit_is_reported_but_cuts_are_free() -> None:
    report = check(two_evse_site(), allocate(12.0, 0.0))
    assert kinds(report.evses) == {EvseViolationKind.RAMP_EXCEEDED}
    assert report.evses[0].amount == pytest.approx(12.0 - (8.0 + 2.0))
    assert check(two_evse_site(), allocate(6.0, 0.0)).ok


def test_starting_at_minimum_is_allowed_whatever_the_ramp() -> None:
    problem = dataclasses.replace(two_evse_site(), setpoint_previous=np.zeros(2))
    assert check(problem, allocate(6.0, 0.0)).ok
    assert kinds(check(problem, allocate(8.5, 0.0)).evses) == {EvseViolationKind.RAMP_EXCEEDED}


def test_nan_and_negative_setpoints_are_reported() -> None:
    report = check(two_evse_site(), allocate(float("nan"), -5.0))
    assert kinds(report.evses) == {EvseViolationKind.NOT_FINITE, EvseViolationKind.NEGATIVE}


def test_running_while_not_admitted_is_reported() -> None:
    allocation = Allocation(setpoint=np.array([8.0, 0.0]), battery_w=0.0, admitted=np.array([False, False]))
    report = check(two_evse_site(), allocation)
    assert kinds(report.evses) == {EvseViolationKind.NOT_ADMITTED}


@pytest.mark.parametrize(
    ("battery_w", "kind"),
    [
        (4_500.0, BatteryViolationKind.ABOVE_DISCHARGE_MAX),
        (-3_500.0, BatteryViolationKind.ABOVE_CHARGE_MAX),
        (float("inf"), BatteryViolationKind.NOT_FINITE),
    ],
)
def test_battery_outside_bounds_is_reported(battery_w: float, kind: BatteryViolationKind) -> None:
    report = check(two_evse_site(), allocate(0.0, 0.0, battery_w=battery_w))
    assert [violation.kind for violation in report.battery] == [kind]
    assert not report.only_uncontrolled_excess


def test_negative_headroom_with_nothing_on_the_row_is_uncontrolled() -> None:
    problem = two_evse_site(headroom=(-3.0, 32.0, 32.0, 30_000.0, 5_000.0))
    report = check(problem, paused(problem))
    assert not report.ok
    assert report.only_uncontrolled_excess
    assert report.rows[0].excess == pytest.approx(3.0)
    # Adding load to the over-limit row makes it the allocation's fault too.
    assert not check(problem, allocate(6.0, 0.0)).only_uncontrolled_excess


def test_tolerance_is_per_unit() -> None:
    problem = two_evse_site(headroom=(10.0, 32.0, 32.0, 30_000.0, 5_000.0))
    slightly_over = allocate(10.0005, 0.0)
    assert check(problem, slightly_over).ok
    assert not check(problem, slightly_over, Tolerance(current_a=1e-4)).ok
    assert check(two_evse_site(), allocate(0.0, 20_000.05)).ok
    assert not check(two_evse_site(), allocate(0.0, 20_000.05), Tolerance(power_w=0.01)).ok


def test_allocation_of_wrong_length_is_refused() -> None:
    allocation = Allocation(setpoint=np.zeros(3), battery_w=0.0, admitted=np.zeros(3, bool))
    with pytest.raises(ValueError, match="setpoints"):
        check(two_evse_site(), allocation)


def test_nan_headroom_counts_as_violated() -> None:
    problem = two_evse_site()
    # Construction refuses NaN; an array corrupted afterwards must still not pass.
    problem.row_headroom[0] = np.nan
    assert [violation.row for violation in check(problem, paused(problem)).rows] == [0]
