"""The one definition of a feasible allocation.

Written against the generic sparse rows of :class:`~evdlm_solvers.problem.Problem` only and
independently of every solver (it imports none of them): an allocation that fails here is
never dispatched.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from evdlm_solvers.problem import UNIT_CURRENT_A, Allocation, FloatArray, Problem


@dataclass(frozen=True)
class Tolerance:
    """Absolute slack the checker allows, per unit.

    Parameters
    ----------
    current_a : float
        For current rows and AC setpoints, A. 1 mA is far below what a charger resolves
        (0.1 A in OCPP profiles) and far above the LP's floating-point noise.
    power_w : float
        For power rows and DC setpoints, W.
    """

    current_a: float = 1e-3
    power_w: float = 0.1


DEFAULT_TOLERANCE = Tolerance()


class EvseViolationKind(enum.Enum):
    """What is wrong with one EVSE's setpoint."""

    NOT_FINITE = "not_finite"
    """NaN or infinite setpoint."""
    NEGATIVE = "negative"
    """Below 0 (an EV setpoint never discharges)."""
    BELOW_MIN = "below_min"
    """Non-zero but below the minimum (0-or-at-least-min)."""
    ABOVE_MAX = "above_max"
    """Above the maximum."""
    RAMP_EXCEEDED = "ramp_exceeded"
    """Rose by more than the ramp-up limit allows (and above the minimum)."""
    NOT_ADMITTED = "not_admitted"
    """Non-zero while the allocation marks the EVSE as paused."""


class BatteryViolationKind(enum.Enum):
    """What is wrong with the battery setpoint."""

    NOT_FINITE = "not_finite"
    ABOVE_DISCHARGE_MAX = "above_discharge_max"
    ABOVE_CHARGE_MAX = "above_charge_max"


@dataclass(frozen=True)
class RowViolation:
    """A row whose load exceeds its headroom.

    Parameters
    ----------
    row : int
        Row index.
    excess : float
        Load minus headroom, in the row's unit (> tolerance).
    allocation_load : float
        What the allocation itself puts on the row (EVSEs and battery), row unit. When it is
        <= tolerance the excess comes from load the controller does not command.
    """

    row: int
    excess: float
    allocation_load: float


@dataclass(frozen=True)
class EvseViolation:
    """An EVSE setpoint outside what the EVSE may take this cycle.

    ``amount`` is how far outside, in the EVSE's own unit (NaN for ``NOT_FINITE``).
    """

    evse: int
    kind: EvseViolationKind
    amount: float


@dataclass(frozen=True)
class BatteryViolation:
    """The battery setpoint outside its bounds, ``amount`` in W (NaN for ``NOT_FINITE``)."""

    kind: BatteryViolationKind
    amount_w: float


@dataclass(frozen=True)
class CheckReport:
    """Every violation found, with the tolerance used."""

    rows: tuple[RowViolation, ...]
    evses: tuple[EvseViolation, ...]
    battery: tuple[BatteryViolation, ...]
    tolerance: Tolerance
    only_uncontrolled_excess: bool
    """True when the only violations are rows the allocation adds nothing to.

    Then the site is over a limit through uncontrolled load and the allocation cannot fix
    it; the chain dispatches it with an over-limit status.
    """

    @property
    def ok(self) -> bool:
        """True when nothing is violated."""
        return not (self.rows or self.evses or self.battery)

    @property
    def violation_count(self) -> int:
        """Number of violated rows, EVSEs and battery bounds."""
        return len(self.rows) + len(self.evses) + len(self.battery)

    def summary(self) -> str:
        """One line for logs and reasons."""
        if self.ok:
            return "feasible"
        parts = []
        if self.rows:
            worst = max(self.rows, key=lambda violation: violation.excess)
            parts.append(f"{len(self.rows)} rows over (worst row {worst.row} by {worst.excess:g})")
        if self.evses:
            kinds = sorted({violation.kind.value for violation in self.evses})
            parts.append(f"{len(self.evses)} EVSE violations ({', '.join(kinds)})")
        if self.battery:
            parts.append(f"battery {self.battery[0].kind.value}")
        return "; ".join(parts)


def row_load(problem: Problem, setpoint: FloatArray, battery_w: float) -> FloatArray:
    """What the setpoints and battery put on every row, row unit, shape (n_rows,). O(nnz)."""
    column_of_entry = np.repeat(np.arange(problem.n_evse), np.diff(problem.coef_indptr))
    load: FloatArray = np.bincount(
        problem.coef_row,
        weights=problem.coef_value * setpoint[column_of_entry],
        minlength=problem.n_rows,
    ).astype(np.float64)
    if problem.battery_coef_row.size:
        load += np.bincount(
            problem.battery_coef_row,
            weights=problem.battery_coef_value * battery_w,
            minlength=problem.n_rows,
        )
    return load


def check(problem: Problem, allocation: Allocation, tol: Tolerance = DEFAULT_TOLERANCE) -> CheckReport:
    """Report every way ``allocation`` breaks ``problem``.

    Parameters
    ----------
    problem : Problem
        The cycle's problem.
    allocation : Allocation
        Setpoints (own unit), battery (W) and admission to judge.
    tol : Tolerance
        Absolute slack per unit (A for current rows and AC setpoints, W otherwise).

    Returns
    -------
    CheckReport
        ``.ok`` is True only when every row and every bound holds within ``tol``.
    """
    if allocation.setpoint.shape != (problem.n_evse,):
        raise ValueError(f"allocation has {allocation.setpoint.shape} setpoints, problem {problem.n_evse}")
    setpoint = allocation.setpoint
    evse_tol = np.where(problem.evse_unit == UNIT_CURRENT_A, tol.current_a, tol.power_w)
    evses = _evse_violations(problem, allocation, evse_tol)
    battery = _battery_violations(problem, allocation.battery_w, tol.power_w)

    # Non-finite inputs would poison every row they touch; they are reported per EVSE.
    finite_setpoint = np.where(np.isfinite(setpoint), setpoint, 0.0)
    finite_battery_w = allocation.battery_w if np.isfinite(allocation.battery_w) else 0.0
    load = row_load(problem, finite_setpoint, finite_battery_w)
    row_tol = np.where(problem.row_unit == UNIT_CURRENT_A, tol.current_a, tol.power_w)
    excess = load - problem.row_headroom
    # Written so that a NaN counts as a violation rather than passing every comparison.
    over = np.flatnonzero(~(excess <= row_tol))
    rows = tuple(
        RowViolation(row=int(row), excess=float(excess[row]), allocation_load=float(load[row])) for row in over
    )
    only_uncontrolled = not evses and not battery and bool(np.all(load[over] <= row_tol[over]))
    return CheckReport(
        rows=rows,
        evses=evses,
        battery=battery,
        tolerance=tol,
        only_uncontrolled_excess=only_uncontrolled,
    )


def _evse_violations(problem: Problem, allocation: Allocation, evse_tol: FloatArray) -> tuple[EvseViolation, ...]:
    setpoint = allocation.setpoint
    finite = np.isfinite(setpoint)
    value = np.where(finite, setpoint, 0.0)
    running = value > evse_tol
    ramp_cap = np.maximum(problem.setpoint_previous + problem.ramp_up_max, problem.setpoint_min)
    amounts = {
        EvseViolationKind.NOT_FINITE: np.where(finite, 0.0, np.nan),
        EvseViolationKind.NEGATIVE: -value,
        EvseViolationKind.BELOW_MIN: np.where(running, problem.setpoint_min - value, 0.0),
        EvseViolationKind.ABOVE_MAX: value - problem.setpoint_max,
        EvseViolationKind.RAMP_EXCEEDED: value - ramp_cap,
        EvseViolationKind.NOT_ADMITTED: np.where(allocation.admitted, 0.0, value),
    }
    found: list[EvseViolation] = []
    for kind, amount in amounts.items():
        bad = ~finite if kind is EvseViolationKind.NOT_FINITE else amount > evse_tol
        found.extend(
            EvseViolation(evse=int(evse), kind=kind, amount=float(amount[evse])) for evse in np.flatnonzero(bad)
        )
    return tuple(found)


def _battery_violations(problem: Problem, battery_w: float, tol_w: float) -> tuple[BatteryViolation, ...]:
    if not np.isfinite(battery_w):
        return (BatteryViolation(BatteryViolationKind.NOT_FINITE, float("nan")),)
    if battery_w - problem.battery_discharge_max_w > tol_w:
        return (
            BatteryViolation(
                BatteryViolationKind.ABOVE_DISCHARGE_MAX,
                battery_w - problem.battery_discharge_max_w,
            ),
        )
    if -battery_w - problem.battery_charge_max_w > tol_w:
        return (BatteryViolation(BatteryViolationKind.ABOVE_CHARGE_MAX, -battery_w - problem.battery_charge_max_w),)
    return ()
