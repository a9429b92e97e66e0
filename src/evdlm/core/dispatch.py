"""Turn a checked allocation into charger commands and the next cycle's memory (pure).

Rounding only ever goes down (a lower limit never overloads a row): whole amps for AC, 100 W
steps for DC, and 0 when the rounded value falls below the EVSE's minimum. Held and
uncontrolled chargers keep their last limit; idle EVSEs are told 0. Deadband and lease
refresh are the charger link's job: it knows what each charger last accepted.

Everything is computed on arrays (see :mod:`evdlm.core.fleet`); memory and command objects are
made only for the EVSEs whose values changed, the others are the previous cycle's objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from evdlm_solvers import Allocation

from evdlm.core.fleet import FleetCache, MemoryColumns, MemoryMapping, first_match
from evdlm.core.fleet_kernels import (
    ACTIVE,
    HELD,
    IDLE,
    M_CHANGED,
    M_SETPOINT,
    OFFLINE,
    S_CHARGING,
    S_PRESENT,
    memory_kernel,
)
from evdlm.core.memory import ControlMemory
from evdlm.core.problem_builder import (
    FOLLOW_TOLERANCE_A,
    BuiltProblem,
    Reason,
    reason_text,
)
from evdlm.core.topology import SlotTable, Topology
from evdlm.core.types import ChargingCommand, EvseKey

DC_STEP_W = 100.0

# Command reasons beyond the view's own (problem_builder.Reason).
ALLOCATED, PAUSED_BY_ALLOCATION, EMERGENCY_CUT = 100, 101, 102
_COMMAND_REASON_TEXT = {
    ALLOCATED: "allocated",
    PAUSED_BY_ALLOCATION: "paused by the allocation",
    EMERGENCY_CUT: "emergency cut: its circuit measures above its limit",
}


@dataclass(frozen=True)
class _Issued:
    """What each EVSE is told this cycle; its command objects are made on first use."""

    slots: SlotTable
    limit: np.ndarray  # own unit
    phases: np.ndarray
    reason: np.ndarray  # problem_builder.Reason or a command reason above
    cut_from: np.ndarray  # for the text of Reason.SETTLING
    objects: list[ChargingCommand | None]  # None: not made yet

    def command(self, index: int) -> ChargingCommand:
        made = self.objects[index]
        if made is None:
            code = int(self.reason[index])
            charger_id, evse_id = self.slots.keys[index]
            made = ChargingCommand(
                charger_id=charger_id,
                evse_id=evse_id,
                limit=float(self.limit[index]),
                unit=self.slots.units[index],
                phases=int(self.phases[index]),
                reason=_COMMAND_REASON_TEXT.get(code) or reason_text(code, float(self.cut_from[index])),
            )
            self.objects[index] = made
        return made


@dataclass(frozen=True)
class Plan:
    """The commands of one cycle (every reachable EVSE) and the memory the next cycle starts from."""

    memory: ControlMemory
    issued: _Issued = field(repr=False, compare=False)
    reachable: tuple[int, ...] = field(repr=False, compare=False)  # topology index of each commanded EVSE

    @cached_property
    def commands(self) -> tuple[ChargingCommand, ...]:
        return tuple(map(self.issued.command, self.reachable))

    @cached_property
    def limits(self) -> dict[EvseKey, float]:
        """The limit each commanded EVSE is told (own unit): the commands' limits, without making them."""
        reachable, keys = list(self.reachable), self.issued.slots.keys
        return dict(zip([keys[index] for index in reachable], self.issued.limit[reachable].tolist(), strict=True))


def round_down(slots: SlotTable, setpoint: np.ndarray) -> np.ndarray:
    """The dispatchable values at or below ``setpoint``: 0 or at least each EVSE's minimum."""
    step = np.where(slots.is_dc, DC_STEP_W, 1.0)
    value = np.floor(setpoint / step + 1e-9) * step
    return np.where((value >= slots.min_setpoint - 1e-9) & (value > 0), value, 0.0)


def _same(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Element-wise equality where NaN (None) equals NaN."""
    same: np.ndarray = (new == old) | (np.isnan(new) & np.isnan(old))
    return same


def _issue(
    slots: SlotTable,
    built: BuiltProblem,
    target: np.ndarray,
    reason: np.ndarray,
    cache: FleetCache | None,
) -> _Issued:
    """This cycle's commands, keeping the previous cycle's objects where nothing changed."""
    phases, cut_from = built.fleet.phases_used, built.fleet.cut_from
    last = cache.commands if cache is not None and isinstance(cache.commands, _Issued) else None
    if last is not None and last.slots is slots:
        same = (
            (target == last.limit)
            & (phases == last.phases)
            & (reason == last.reason)
            & ((reason != Reason.SETTLING) | _same(cut_from, last.cut_from))
        )
        objects = list(last.objects)
        for index in (~same).nonzero()[0].tolist():
            objects[index] = None
    else:
        objects = [None] * slots.size
    issued = _Issued(slots, target, phases, reason, cut_from, objects)
    if cache is not None:
        cache.commands = issued
    return issued


def plan_commands(
    topology: Topology,
    built: BuiltProblem,
    allocation: Allocation,
    memory: ControlMemory,
    now_s: float,
    settle_time_s: float,
    cache: FleetCache | None = None,
    *,
    raise_step_a: float = 0.0,
    raise_wait_s: float = 0.0,
) -> Plan:
    """Commands for every reachable EVSE and the memory the next cycle starts from.

    ``memory`` is the memory ``built`` was built from; ``cache`` the one it was built with.
    A raise smaller than ``raise_step_a`` (per phase; DC: its power on three phases) waits
    until the EVSE's limit has stood for ``raise_wait_s``: every change is a message, often a
    flash write in the charger and a ramp in the car, and a limit flapping by 1 A every few
    cycles buys nothing. Cuts, starts and pauses always go out.
    """
    slots = topology.slots
    fleet = built.fleet
    mode = fleet.mode
    allocated = np.zeros(slots.size)
    columns = np.array(built.columns, dtype=np.int64)
    allocated[columns] = allocation.setpoint
    rounded = round_down(slots, allocated)
    if built.overloaded_nodes:
        overloaded = np.array([node in built.overloaded_nodes for node in slots.node_ids], dtype=np.bool_)
        emergency = (mode == HELD) & slots.in_path[overloaded].any(axis=0)
    else:
        emergency = np.zeros(slots.size, dtype=np.bool_)
    remembered = built.memory.values[:, M_SETPOINT]
    if raise_step_a > 0.0 and raise_wait_s > 0.0:
        step = np.where(slots.is_dc, raise_step_a * 3.0 * slots.voltage_v, raise_step_a)
        recent = ~(now_s - built.memory.values[:, M_CHANGED] >= raise_wait_s)  # NaN (never changed): recent
        small_raise = (remembered > 0) & (rounded > remembered) & (rounded - remembered < step - 1e-9) & recent
        rounded = np.where(small_raise & fleet.same_session, remembered, rounded)
    target = first_match([mode == ACTIVE, mode == IDLE, emergency], [rounded, 0.0, 0.0], remembered)
    reason = first_match(
        [(mode == ACTIVE) & (target > 0), mode == ACTIVE, emergency],
        [ALLOCATED, PAUSED_BY_ALLOCATION, EMERGENCY_CUT],
        fleet.reason,
    ).astype(np.int64)

    # The next memory: a new session forgets the last one's history (the charger still holds its
    # limit); a cut is remembered until the meter shows it or a settle time passed.
    states, before = built.states, built.memory
    present = states.values[:, S_PRESENT] > 0
    new_session = present & (states.values[:, S_CHARGING] > 0) & ~fleet.same_session
    transaction = np.where(present, states.transaction_id, before.transaction_id)
    caps = np.full(slots.size, np.nan)
    if built.demand_caps:
        caps[list(built.demand_caps)] = list(built.demand_caps.values())
    values, changed = memory_kernel(
        slots.is_dc,
        slots.voltage_v,
        before.values,
        new_session,
        mode,
        fleet.phases_used,
        fleet.measured_a,
        target,
        caps,
        now_s,
        settle_time_s,
        FOLLOW_TOLERANCE_A,
    )
    changed |= transaction != before.transaction_id
    objects = list(before.objects)
    for index in changed.nonzero()[0].tolist():
        objects[index] = None  # made when asked for
    evses = MemoryMapping(slots, MemoryColumns(objects, values, transaction))
    issued = _issue(slots, built, target, reason, cache)
    reachable = tuple((mode != OFFLINE).nonzero()[0].tolist())
    return Plan(memory=memory.with_evses(evses, allocation.battery_w), issued=issued, reachable=reachable)
