"""One cycle's allocation problem and its answer, as plain arrays (no ids, no names).

The gateway's problem builder turns the site tree and the meter snapshot into a
:class:`Problem` every cycle; every solver returns an :class:`Allocation`. The encoding is
described for builders in ``solvers/README.md``.

Sign conventions: grid + = import, battery + = discharge, EV + = consumption.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

UNIT_CURRENT_A: Final = 0
"""Unit code of a current row (A per phase) or of an AC EVSE's setpoint (A per phase)."""
UNIT_POWER_W: Final = 1
"""Unit code of a power row (W) or of a DC EVSE's setpoint (W)."""

PRIORITY_WEIGHT_BASE: Final = 100.0
"""Weight ratio between neighbouring priority classes in the weighted objective.

Large enough that one W of a class outweighs anything the urgency spread (normalised near
1) can do in the next class, small enough that four classes in use keep the LP's costs
within 1e6 of each other.
"""
PRIORITY_CLASS_COUNT: Final = 10
"""Priority classes run from 0 (highest) to 9, as in the site configuration."""

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
UnitArray = NDArray[np.int8]


def _float_array(values: object) -> FloatArray:
    return np.ascontiguousarray(values, dtype=np.float64)


def _int_array(values: object) -> IntArray:
    return np.ascontiguousarray(values, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Problem:
    """One cycle's allocation problem: ``A @ setpoint + battery_coef * battery_w <= headroom``.

    Arrays are coerced to contiguous float64 / int64 / int8 / bool on construction and must
    be treated as immutable. ``n_rows`` rows, ``n_evse`` columns, ``nnz`` coefficients.

    Parameters
    ----------
    row_headroom : ndarray, shape (n_rows,)
        What the row can still take from the controlled EVSEs and battery, in the row's unit
        (A for current rows, W for power rows). May be negative: the row is already over its
        limit through load the controller does not command.
    row_unit : ndarray of int8, shape (n_rows,)
        ``UNIT_CURRENT_A`` or ``UNIT_POWER_W``; selects the checker's tolerance and is kept
        for reporting. Row names stay with the builder (index -> name).
    row_parent : ndarray of int64, shape (n_rows,)
        Index of the row's parent in the site tree (same unit, same phase), -1 at a root.
        A hint for reporting and heuristics; the checker relies only on the sparse rows.
    coef_indptr, coef_row, coef_value : ndarray
        The incidence matrix in CSC form, shapes (n_evse + 1,), (nnz,), (nnz,): column ``j``
        has coefficients ``coef_value[coef_indptr[j]:coef_indptr[j + 1]]`` on rows
        ``coef_row[...]``. A coefficient converts the EVSE's setpoint unit into the row's
        unit (row unit per setpoint unit).
    evse_unit : ndarray of int8, shape (n_evse,)
        Unit of each setpoint: ``UNIT_CURRENT_A`` (AC, A per phase) or ``UNIT_POWER_W`` (DC).
    power_per_unit_w : ndarray, shape (n_evse,)
        Nominal W delivered per setpoint unit (V * phases for AC, 1 for DC); used for the
        objective and for reporting delivered power only.
    setpoint_min, setpoint_max : ndarray, shape (n_evse,)
        Own unit. A setpoint is 0 (paused) or in ``[setpoint_min, setpoint_max]``.
    setpoint_previous : ndarray, shape (n_evse,)
        Setpoint dispatched last cycle, own unit.
    ramp_up_max : ndarray, shape (n_evse,)
        Largest increase over ``setpoint_previous`` in one cycle, own unit; ``inf`` for none.
        Going down is never limited, and starting at ``setpoint_min`` is always allowed.
    charging : ndarray of bool, shape (n_evse,)
        Admitted last cycle (kept at its minimum while it fits: no flapping).
    priority : ndarray of int64, shape (n_evse,)
        Priority class 0 (highest) to 9; classes are strict.
    urgency : ndarray, shape (n_evse,)
        Weight > 0 for sharing within a class, larger for a car with less slack. The gateway
        derives it from laxity (time to departure minus time needed at the car's maximum
        power; ``evdlm.core.fleet_kernels._laxity_weight``), ranging 0.1 to 10.
    waiting_s : ndarray, shape (n_evse,)
        How long the car has wanted power while paused, s (0 when admitted).
    on_time_s : ndarray, shape (n_evse,)
        How long the car has been admitted without a break, s (0 when paused).
    rotation_period_s : float
        A paused car waiting longer than this displaces an admitted car (no starvation), s.
    min_on_time_s : float
        An admitted car is not displaced by rotation before this, s.
    battery_discharge_max_w, battery_charge_max_w : float
        Battery bounds, W, both >= 0: ``-charge_max <= battery_w <= discharge_max``. The
        builder folds the SoC window and any battery policy into them; 0 and 0 = no battery.
    battery_coef_row, battery_coef_value : ndarray
        Rows and coefficients (row unit per W) of the battery column: -1 on grid-import
        power rows (discharge adds headroom), +1 on the export row.
    planned_share : ndarray, shape (n_evse,), optional
        Setpoint a horizon plan gives the car now, own unit; NaN (the default) where there is
        none. Admission by fill takes it as the car's share in place of its fill from 0 A: a
        car planned below its minimum waits (within the maximum wait), one planned above it
        runs and holds its planned share where the rows allow.
    """

    row_headroom: FloatArray
    row_unit: UnitArray
    row_parent: IntArray
    coef_indptr: IntArray
    coef_row: IntArray
    coef_value: FloatArray
    evse_unit: UnitArray
    power_per_unit_w: FloatArray
    setpoint_min: FloatArray
    setpoint_max: FloatArray
    setpoint_previous: FloatArray
    ramp_up_max: FloatArray
    charging: BoolArray
    priority: IntArray
    urgency: FloatArray
    waiting_s: FloatArray
    on_time_s: FloatArray
    rotation_period_s: float = 900.0
    min_on_time_s: float = 300.0
    battery_discharge_max_w: float = 0.0
    battery_charge_max_w: float = 0.0
    battery_coef_row: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    battery_coef_value: FloatArray = field(default_factory=lambda: np.zeros(0, np.float64))
    planned_share: FloatArray | None = None

    def __post_init__(self) -> None:
        coerce = object.__setattr__
        if self.planned_share is None:
            coerce(self, "planned_share", np.full(np.shape(self.coef_indptr)[0] - 1, np.nan))
        for name in (
            "row_headroom",
            "coef_value",
            "power_per_unit_w",
            "setpoint_min",
            "setpoint_max",
            "setpoint_previous",
            "ramp_up_max",
            "urgency",
            "waiting_s",
            "on_time_s",
            "battery_coef_value",
            "planned_share",
        ):
            coerce(self, name, _float_array(getattr(self, name)))
        for name in ("row_parent", "coef_indptr", "coef_row", "priority", "battery_coef_row"):
            coerce(self, name, _int_array(getattr(self, name)))
        coerce(self, "row_unit", np.ascontiguousarray(self.row_unit, dtype=np.int8))
        coerce(self, "evse_unit", np.ascontiguousarray(self.evse_unit, dtype=np.int8))
        coerce(self, "charging", np.ascontiguousarray(self.charging, dtype=np.bool_))
        coerce(self, "rotation_period_s", float(self.rotation_period_s))
        coerce(self, "min_on_time_s", float(self.min_on_time_s))
        coerce(self, "battery_discharge_max_w", float(self.battery_discharge_max_w))
        coerce(self, "battery_charge_max_w", float(self.battery_charge_max_w))
        self._validate_shapes()

    def _validate_shapes(self) -> None:
        n_rows = self.row_headroom.shape[0]
        n_evse = self.coef_indptr.shape[0] - 1
        if n_evse < 0:
            raise ValueError("coef_indptr needs n_evse + 1 entries")
        for name in ("row_unit", "row_parent"):
            if getattr(self, name).shape != (n_rows,):
                raise ValueError(f"{name} must have shape ({n_rows},)")
        for name in (
            "evse_unit",
            "power_per_unit_w",
            "setpoint_min",
            "setpoint_max",
            "setpoint_previous",
            "ramp_up_max",
            "charging",
            "priority",
            "urgency",
            "waiting_s",
            "on_time_s",
            "planned_share",
        ):
            if getattr(self, name).shape != (n_evse,):
                raise ValueError(f"{name} must have shape ({n_evse},)")
        nnz = int(self.coef_indptr[-1])
        if self.coef_indptr[0] != 0 or np.any(np.diff(self.coef_indptr) < 0):
            raise ValueError("coef_indptr must start at 0 and never decrease")
        if self.coef_row.shape != (nnz,) or self.coef_value.shape != (nnz,):
            raise ValueError(f"coef_row and coef_value must have shape ({nnz},)")
        if nnz and (self.coef_row.min() < 0 or self.coef_row.max() >= n_rows):
            raise ValueError("coef_row holds a row index out of range")
        if self.battery_coef_row.shape != self.battery_coef_value.shape:
            raise ValueError("battery_coef_row and battery_coef_value differ in shape")
        if self.battery_coef_row.size and (self.battery_coef_row.min() < 0 or self.battery_coef_row.max() >= n_rows):
            raise ValueError("battery_coef_row holds a row index out of range")
        # A NaN would compare false everywhere and slip through sizing and checking alike.
        for name in ("row_headroom", "setpoint_max", "ramp_up_max"):
            if np.isnan(getattr(self, name)).any():
                raise ValueError(f"{name} holds NaN")
        for name in (
            "coef_value",
            "setpoint_min",
            "setpoint_previous",
            "waiting_s",
            "on_time_s",
            "battery_coef_value",
        ):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"{name} must be finite")
        planned = self.planned[~np.isnan(self.planned)]
        if not (np.isfinite(planned).all() and (planned >= 0.0).all()):
            raise ValueError("planned_share must be NaN (none) or finite and >= 0")
        if np.any(self.setpoint_min < 0.0) or np.any(self.ramp_up_max < 0.0):
            raise ValueError("setpoint_min and ramp_up_max must be >= 0")
        if np.any((self.priority < 0) | (self.priority >= PRIORITY_CLASS_COUNT)):
            raise ValueError(f"priority classes run from 0 to {PRIORITY_CLASS_COUNT - 1}")
        if np.any(~(self.power_per_unit_w > 0.0)) or np.any(~(self.urgency > 0.0)):
            raise ValueError("power_per_unit_w and urgency must be > 0")
        if self.battery_discharge_max_w < 0.0 or self.battery_charge_max_w < 0.0:
            raise ValueError("battery limits are magnitudes and must be >= 0")

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return int(self.row_headroom.shape[0])

    @property
    def n_evse(self) -> int:
        """Number of EVSE columns."""
        return int(self.coef_indptr.shape[0] - 1)

    @property
    def setpoint_upper(self) -> FloatArray:
        """Highest setpoint allowed this cycle (max and ramp-up), own unit.

        Starting at the minimum is always allowed, so the ramp never keeps a car from
        being admitted; a car whose ``setpoint_max`` is below its minimum can only be 0.
        """
        ramp_cap = np.maximum(self.setpoint_previous + self.ramp_up_max, self.setpoint_min)
        return np.minimum(self.setpoint_max, ramp_cap)

    @property
    def planned(self) -> FloatArray:
        """``planned_share`` as an array (NaN: no plan for the car)."""
        assert self.planned_share is not None  # filled in by __post_init__
        return self.planned_share

    def with_headroom(self, row_headroom: FloatArray) -> Problem:
        """Return a copy with other headroom (the topology and the EVSEs unchanged)."""
        return dataclasses.replace(self, row_headroom=row_headroom)


@dataclass(frozen=True, eq=False)
class Allocation:
    """A solver's answer for one cycle.

    Parameters
    ----------
    setpoint : ndarray, shape (n_evse,)
        Setpoint per EVSE in its own unit (A per phase for AC, W for DC); 0 = paused.
    battery_w : float
        Battery setpoint, W, + = discharge.
    admitted : ndarray of bool, shape (n_evse,)
        EVSEs allowed to draw power this cycle (at least their minimum, or 0 when their
        minimum is 0); a paused EVSE has ``admitted`` False and setpoint 0.
    """

    setpoint: FloatArray
    battery_w: float
    admitted: BoolArray

    def __post_init__(self) -> None:
        object.__setattr__(self, "setpoint", _float_array(self.setpoint))
        object.__setattr__(self, "admitted", np.ascontiguousarray(self.admitted, np.bool_))
        object.__setattr__(self, "battery_w", float(self.battery_w))
        if self.setpoint.shape != self.admitted.shape or self.setpoint.ndim != 1:
            raise ValueError("setpoint and admitted must be 1-D arrays of one length")


def paused(problem: Problem) -> Allocation:
    """Everyone paused and the battery idle: feasible whenever every headroom is >= 0."""
    return Allocation(
        setpoint=np.zeros(problem.n_evse),
        battery_w=0.0,
        admitted=np.zeros(problem.n_evse, dtype=np.bool_),
    )


def objective_weight(problem: Problem) -> FloatArray:
    """Weight per setpoint unit in the delivered-power objective, shape (n_evse,).

    ``PRIORITY_WEIGHT_BASE ** -rank * urgency * power_per_unit_w``: weighted W per setpoint
    unit, so classes dominate and urgency shares within a class. ``rank`` is the class's
    position among the classes present in the problem (classes 0, 5 and 9 in use weigh
    1, 1e-2 and 1e-4): the numbers in a site's configuration do not stretch the LP's costs.
    """
    _, rank = np.unique(problem.priority, return_inverse=True)
    class_weight = PRIORITY_WEIGHT_BASE ** (-rank.astype(np.float64))
    return class_weight * problem.urgency * problem.power_per_unit_w


def weighted_power(problem: Problem, allocation: Allocation) -> float:
    """The objective both solvers are judged by: priority/urgency-weighted W."""
    return float(objective_weight(problem) @ allocation.setpoint)


def delivered_power_w(problem: Problem, allocation: Allocation) -> float:
    """Nominal power delivered to the EVs, W (unweighted)."""
    return float(problem.power_per_unit_w @ allocation.setpoint)
