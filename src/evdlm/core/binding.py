"""Why each EVSE gets the limit it gets: the binding constraint and its source (pure).

For the operator ("why is this car limited?"): one :class:`Binding` per EVSE of the topology,
from the cycle's problem, the allocation the solver found and the limits dispatched. The kinds:

- ``fuse``: a circuit's phase current (``garage/L2 fuse``) or its kW limit is full;
- ``grid_import``: the connection's import limit is full (its configured limit, or the fallback
  limit while the grid meter is not usable, said in the source);
- ``dr``: the import limit is full and a demand-response event set it (event ids in the source);
- ``demand``: the import limit is full and the demand window set it (the month's peak kept);
- ``csms``: the operator CSMS's profile (Local Controller mode) caps the EVSE;
- ``car_max``: the car takes less than it is offered (capped near its draw);
- ``evse_max``: the charger's own maximum;
- ``ramp``: the raise is staged (dispatched below the solver's value, which it reaches in steps);
- ``share``: no row is full: the EVSE holds its share (deadline weights, plan, minimum on-time);
- ``rotation``: paused, waiting for room (the fullest row it hangs on is named);
- ``session``: paused by a session command;
- ``no_session``, ``offline``, ``settling``, ``charger``: not in the problem this cycle (no car,
  the charger unreachable, settling after a cut, a charger that refuses or ignores profiles).

A row counts as full when one more step of the EVSE (1 A, or 100 W DC) would not fit in what it
has left after every dispatched limit: whole-amp dispatch leaves up to a step unused anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from evdlm_solvers import Allocation

from evdlm.core.fleet_kernels import S_CSMS_LIMIT, S_PAUSED, Mode, Reason
from evdlm.core.topology import GRID_NODE, RowKind, Topology

DC_STEP_W = 100.0  # dispatch's DC step (evdlm.core.dispatch.DC_STEP_W)
AC_STEP_A = 1.0


class BindingKind(StrEnum):
    FUSE = "fuse"
    GRID_IMPORT = "grid_import"
    DR = "dr"
    DEMAND = "demand"
    CSMS = "csms"
    CAR_MAX = "car_max"
    EVSE_MAX = "evse_max"
    RAMP = "ramp"
    SHARE = "share"
    ROTATION = "rotation"
    SESSION = "session"
    NO_SESSION = "no_session"
    OFFLINE = "offline"
    SETTLING = "settling"
    CHARGER = "charger"


@dataclass(frozen=True)
class Binding:
    kind: BindingKind
    source: str  # shown to the operator as is: "garage/L2 fuse", "grid import (DR event dr-7)"


@dataclass(frozen=True)
class RowUse:
    """Each row after this cycle's dispatch, in the row's unit (A or W)."""

    limit: np.ndarray  # effective limit (after DR and fallback)
    load: np.ndarray  # the load the controller does not command plus the dispatched limits
    slack: np.ndarray  # what the controller could still give: limit - safety margin - load

    @property
    def headroom(self) -> np.ndarray:
        out: np.ndarray = self.limit - self.load
        return out

    def full(self, row: int, step: float = AC_STEP_A) -> bool:
        return bool(self.slack[row] < step)


_NOT_IN_PROBLEM = {
    Reason.NO_SESSION: (BindingKind.NO_SESSION, "no car"),
    Reason.CONNECTED_NOT_CHARGING: (BindingKind.NO_SESSION, "car connected, not asking for power"),
    Reason.OFFLINE: (BindingKind.OFFLINE, "charger offline"),
    Reason.OFFLINE_WITH_SESSION: (BindingKind.OFFLINE, "charger offline during a session"),
    Reason.REFUSES_PROFILES: (BindingKind.CHARGER, "charger refuses charging profiles"),
    Reason.DOES_NOT_FOLLOW: (BindingKind.CHARGER, "charger does not follow its limit"),
    Reason.SETTLING: (BindingKind.SETTLING, "settling after a cut"),
    Reason.DRAWS_ABOVE_LIMIT: (BindingKind.SETTLING, "draws above its limit"),
    Reason.CHARGING: (BindingKind.SHARE, "charging"),
}


def row_use(
    limit: np.ndarray,
    uncontrolled: np.ndarray,
    headroom: np.ndarray,
    coef_indptr: np.ndarray,
    coef_row: np.ndarray,
    coef_value: np.ndarray,
    column_limit: np.ndarray,
    battery_coef_row: np.ndarray,
    battery_coef_value: np.ndarray,
    battery_w: float,
) -> RowUse:
    """Rows after dispatching ``column_limit`` (own unit per problem column) and the battery.

    ``headroom`` is the problem's (limit - margin - uncontrolled, 0 on a row already full).
    """
    used = np.zeros(len(headroom))
    per_entry = np.repeat(column_limit, np.diff(coef_indptr)) * coef_value
    np.add.at(used, coef_row, per_entry)
    np.add.at(used, battery_coef_row, battery_coef_value * battery_w)
    return RowUse(limit=limit, load=uncontrolled + used, slack=headroom - used)


def row_source(
    topology: Topology,
    row: int,
    *,
    grid_fallback: bool,
    dr_events: tuple[str, ...],
    dr_limited: bool,
    window_target_w: float | None = None,
) -> Binding:
    """What a full row is, in the operator's words. ``window_target_w``: the demand window sets
    the import limit now, aiming at this average."""
    spec = topology.rows[row]
    if spec.kind is RowKind.PHASE_CURRENT:
        where = "grid connection" if spec.node == GRID_NODE else spec.node
        return Binding(BindingKind.FUSE, f"{where}/L{spec.phase} fuse")
    if spec.kind is RowKind.NODE_POWER:
        return Binding(BindingKind.FUSE, f"{spec.node} kW limit")
    if grid_fallback:
        return Binding(BindingKind.GRID_IMPORT, "grid import (fallback limit: grid meter not usable)")
    if window_target_w is not None and spec.kind is RowKind.GRID_IMPORT:
        return Binding(BindingKind.DEMAND, f"demand window (average import ≤ {window_target_w / 1000:.1f} kW)")
    if dr_limited:
        events = ", ".join(dr_events) if dr_events else "no event id"
        return Binding(BindingKind.DR, f"grid import (DR event {events})")
    if spec.kind is RowKind.GRID_EXPORT:
        return Binding(BindingKind.GRID_IMPORT, "grid export limit")
    return Binding(BindingKind.GRID_IMPORT, "grid import limit")


def explain(
    topology: Topology,
    *,
    mode: np.ndarray,
    reason: np.ndarray,
    states: np.ndarray,
    columns: tuple[int, ...],
    problem_max: np.ndarray,
    problem_previous: np.ndarray,
    coef_indptr: np.ndarray,
    coef_row: np.ndarray,
    coef_value: np.ndarray,
    allocation: Allocation,
    issued_limit: np.ndarray,
    demand_caps: dict[int, float],
    rows: RowUse,
    grid_fallback: bool,
    dr_events: tuple[str, ...],
    dr_limited: bool,
    window_target_w: float | None = None,
) -> list[Binding]:
    """One :class:`Binding` per topology EVSE.

    ``mode``, ``reason``, ``states`` (the state columns) and ``issued_limit`` (what each EVSE is
    told, own unit) are in topology order; ``columns`` maps problem columns to topology EVSEs and
    ``problem_max`` / ``problem_previous`` are per problem column. ``dr_limited``: the import
    row's limit is DR's, below the configured one.
    """
    slots = topology.slots
    out: list[Binding] = []
    for index in range(slots.size):
        if int(mode[index]) != Mode.ACTIVE:
            kind, text = _NOT_IN_PROBLEM[Reason(int(reason[index]))]
            out.append(Binding(kind, text))
            continue
        out.append(Binding(BindingKind.SHARE, "its share"))  # replaced below
    if not columns:
        return out

    step = np.where(slots.is_dc, DC_STEP_W, AC_STEP_A)
    for column, index in enumerate(columns):
        limit = float(issued_limit[index])
        upper = float(problem_max[column])
        unit = slots.units[index]
        own_step = float(step[index])
        tight = _fullest(rows.slack, coef_row, coef_value, int(coef_indptr[column]), int(coef_indptr[column + 1]))

        def named(row: int) -> Binding:
            return row_source(
                topology,
                row,
                grid_fallback=grid_fallback,
                dr_events=dr_events,
                dr_limited=dr_limited,
                window_target_w=window_target_w,
            )

        if limit <= 0.0:
            if states[index, S_PAUSED] > 0:
                out[index] = Binding(BindingKind.SESSION, "paused by its session")
                continue
            csms = float(states[index, S_CSMS_LIMIT])
            if np.isfinite(csms) and csms <= 0.0:
                out[index] = Binding(BindingKind.CSMS, "CSMS profile: 0")
                continue
            where = f": {named(tight[0]).source} has {max(0.0, tight[1]):.1f} {unit} left" if tight else ""
            out[index] = Binding(BindingKind.ROTATION, f"waiting for room{where}")
            continue
        if limit >= upper - own_step + 1e-9:
            out[index] = _upper_bound(index, upper, unit, slots.max_setpoint, states, demand_caps)
            continue
        solved = float(allocation.setpoint[column])
        if solved >= limit + own_step - 1e-9 and limit > float(problem_previous[column]) - 1e-9:
            out[index] = Binding(BindingKind.RAMP, f"raised in steps toward {solved:g} {unit}")
            continue
        if tight is not None and tight[1] < own_step:
            out[index] = named(tight[0])
        else:
            out[index] = Binding(BindingKind.SHARE, "its share (deadline weights; no limit full)")
    return out


def _fullest(
    slack: np.ndarray, coef_row: np.ndarray, coef_value: np.ndarray, start: int, end: int
) -> tuple[int, float] | None:
    """The row of a column (its entries ``start:end``) with the least room left, in the column's unit."""
    best: tuple[int, float] | None = None
    for entry in range(start, end):
        coefficient = float(coef_value[entry])
        if coefficient <= 0.0:
            continue
        row = int(coef_row[entry])
        room = float(slack[row]) / coefficient
        if best is None or room < best[1]:
            best = (row, room)
    return best


def _upper_bound(
    index: int,
    upper: float,
    unit: str,
    evse_max: np.ndarray,
    states: np.ndarray,
    demand_caps: dict[int, float],
) -> Binding:
    """Which of the EVSE's own bounds is its maximum this cycle."""
    csms = float(states[index, S_CSMS_LIMIT])
    if np.isfinite(csms) and upper < float(evse_max[index]) - 1e-9 and index not in demand_caps:
        return Binding(BindingKind.CSMS, f"CSMS profile ({upper:g} {unit})")
    cap = demand_caps.get(index)
    if cap is not None and cap <= upper + 1e-9:
        return Binding(BindingKind.CAR_MAX, f"the car takes {cap:.1f} {unit}")
    if upper >= float(evse_max[index]) - 1e-9:
        return Binding(BindingKind.EVSE_MAX, f"charger maximum ({upper:g} {unit})")
    return Binding(BindingKind.CAR_MAX, f"the car's maximum ({upper:g} {unit})")
