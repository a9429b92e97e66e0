"""HiGHS in one place: a column-wise model from CSC arrays, solved with options, status mapped.

The cycle LP (:mod:`~evdlm_solvers.lp`), the horizon LP (:mod:`~evdlm_solvers.horizon`) and the
benchmark's MILP all fill a ``highspy.HighsLp`` column by column from CSC arrays (``start``
of length ``n_cols + 1``, row ``index`` and ``value`` per nonzero) and read back the column
values; this module is that fill, the run and the status, so each caller keeps only its model.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np

from evdlm_solvers.problem import FloatArray

INF = float(highspy.kHighsInf)
"""HiGHS's infinity, for a free row or column bound."""


class HighsStatus(enum.Enum):
    """What a run ended with, in the callers' terms."""

    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    TIME_LIMIT = "time_limit"
    ERROR = "error"


@dataclass(frozen=True, eq=False)
class HighsSolution:
    """One run's outcome.

    Parameters
    ----------
    status : HighsStatus
        ``OPTIMAL``, ``INFEASIBLE``, ``TIME_LIMIT``; anything else is ``ERROR``.
    detail : str
        HiGHS's own model status text.
    col_value : ndarray or None
        The column values, only when ``status`` is ``OPTIMAL``.
    """

    status: HighsStatus
    detail: str
    col_value: FloatArray | None


_STATUS = {
    highspy.HighsModelStatus.kOptimal: HighsStatus.OPTIMAL,
    highspy.HighsModelStatus.kInfeasible: HighsStatus.INFEASIBLE,
    highspy.HighsModelStatus.kTimeLimit: HighsStatus.TIME_LIMIT,
}


def colwise_model(
    *,
    maximize: bool,
    col_cost: Any,
    col_lower: Any,
    col_upper: Any,
    row_lower: Any,
    row_upper: Any,
    start: Any,
    index: Any,
    value: Any,
    integer: Sequence[bool] | None = None,
) -> highspy.HighsLp:
    """A HiGHS model whose constraint matrix is given column-wise (CSC).

    Parameters
    ----------
    maximize : bool
        Objective sense.
    col_cost, col_lower, col_upper : array_like, shape (n_cols,)
        Objective coefficients and column bounds.
    row_lower, row_upper : array_like, shape (n_rows,)
        Row bounds (:data:`INF` for none).
    start : array_like of int, shape (n_cols + 1,)
        Where each column's nonzeros begin in ``index`` / ``value``.
    index : array_like of int, shape (nnz,)
        Row of each nonzero.
    value : array_like, shape (nnz,)
        The nonzeros.
    integer : sequence of bool, optional
        Per column, whether it is integer (a MIP); all continuous when omitted.
    """
    n_cols = len(col_cost)
    n_rows = len(row_upper)
    model = highspy.HighsLp()
    model.num_col_ = n_cols
    model.num_row_ = n_rows
    model.sense_ = highspy.ObjSense.kMaximize if maximize else highspy.ObjSense.kMinimize
    model.col_cost_ = col_cost
    model.col_lower_ = col_lower
    model.col_upper_ = col_upper
    model.row_lower_ = row_lower
    model.row_upper_ = row_upper
    if integer is not None:
        model.integrality_ = [
            highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous for flag in integer
        ]
    matrix = model.a_matrix_
    matrix.format_ = highspy.MatrixFormat.kColwise
    matrix.num_col_ = n_cols
    matrix.num_row_ = n_rows
    matrix.start_ = np.asarray(start).astype(np.int32)
    matrix.index_ = np.asarray(index).astype(np.int32)
    matrix.value_ = value
    return model


def run(model: highspy.HighsLp, *, time_limit_s: float, **options: Any) -> HighsSolution:
    """Solve ``model`` quietly within ``time_limit_s`` with further HiGHS ``options``.

    ``options`` are HiGHS option names and values (``presolve="off"``, ``mip_rel_gap=1e-6``).
    """
    highs = highspy.Highs()  # type: ignore[no-untyped-call]
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("time_limit", float(time_limit_s))
    for name, setting in options.items():
        highs.setOptionValue(name, setting)
    highs.passModel(model)
    highs.run()
    model_status = highs.getModelStatus()
    status = _STATUS.get(model_status, HighsStatus.ERROR)
    col_value: FloatArray | None = None
    if status is HighsStatus.OPTIMAL:
        col_value = np.asarray(highs.getSolution().col_value, dtype=np.float64)
    return HighsSolution(status, highs.modelStatusToString(model_status), col_value)
