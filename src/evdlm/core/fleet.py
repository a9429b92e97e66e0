"""Per-EVSE values as columns, so a cycle costs array operations rather than Python per EVSE.

Three tables, each a float matrix with one named column per field (NaN stands for None):

* :class:`~evdlm.core.topology.SlotTable`: the topology's static facts, built once per config;
* :class:`StateColumns`: what the chargers report (:class:`~evdlm.core.types.EvseState`);
* :class:`MemoryColumns`: the control memory (:class:`~evdlm.core.memory.EvseMemory`).

Between two cycles most EVSE states and memories are the very same (frozen) objects, so
:class:`FleetCache` re-reads only the ones that changed. The cache is an optimisation only:
without it every value is read afresh, with the same result.

The column numbers (:class:`~evdlm.core.fleet_kernels.StateColumn`,
:class:`~evdlm.core.fleet_kernels.MemoryColumn`) are defined next to the kernels that read them.
"""

from __future__ import annotations

import itertools
import operator
import threading
from collections.abc import Iterator, KeysView, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from evdlm.core.fleet_kernels import MEMORY_FIELDS, STATE_FIELDS
from evdlm.core.memory import NO_MEMORY, ControlMemory, EvseMemory
from evdlm.core.topology import SlotTable
from evdlm.core.types import EvseKey, EvseState

NAN = float("nan")
FloatArray = np.ndarray
ObjectArray = np.ndarray


def first_match(conditions: Sequence[np.ndarray], choices: Sequence[object], default: object) -> np.ndarray:
    """Element-wise, the choice of the first true condition, else ``default`` (np.select, without its overhead)."""
    result: np.ndarray = np.asarray(default)
    for condition, choice in zip(reversed(conditions), reversed(choices), strict=True):
        result = np.where(condition, choice, result)  # type: ignore[call-overload]
    return result


def _optional(value: float | None) -> float:
    return NAN if value is None else float(value)


def _none_if_nan(value: float) -> float | None:
    return None if value != value else value  # NaN is the only value unequal to itself


# _ABSENT_STATE, _state_row and _memory_row are in StateColumn and MemoryColumn order (checked by
# tests/core/test_fleet_kernels.py).
_ABSENT_STATE = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, NAN, 0.0, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, 0.0, NAN, NAN)


def _state_row(state: EvseState) -> tuple[float, ...]:
    currents = state.phase_current_a
    if currents is None:
        has_currents, i1, i2, i3 = 0.0, NAN, NAN, NAN
    elif len(currents) == 3:
        has_currents = 1.0
        c1, c2, c3 = currents
        i1 = NAN if c1 is None else float(c1)
        i2 = NAN if c2 is None else float(c2)
        i3 = NAN if c3 is None else float(c3)
    else:  # fewer phases reported: the others are unknown
        has_currents = 1.0
        i1, i2, i3 = (_optional(value) for value in (*currents, None, None, None)[:3])
    power_w, ev_max_a = state.power_w, state.ev_max_current_a
    needed_wh, departure_at_s = state.energy_needed_wh, state.departure_at_s
    return (
        1.0,
        float(state.online),
        float(state.connected),
        float(state.charging),
        float(state.controllable),
        float(state.compliant),
        float(state.updated_at_s if state.sampled_at_s is None else state.sampled_at_s),
        has_currents,
        i1,
        i2,
        i3,
        NAN if power_w is None else float(power_w),
        NAN if ev_max_a is None else float(ev_max_a),
        NAN if needed_wh is None else float(needed_wh),
        NAN if departure_at_s is None else float(departure_at_s),
        NAN if state.priority is None else float(state.priority),
        float(state.paused),
        NAN if state.planned_power_w is None else float(state.planned_power_w),
        NAN if state.csms_limit is None else float(state.csms_limit),
    )


@dataclass(frozen=True)
class StateColumns:
    """The EVSE states of one cycle in topology order (never changed once made)."""

    sources: tuple[EvseState | None, ...]
    values: FloatArray  # (EVSEs, fields)
    transaction_id: ObjectArray  # str | None per EVSE

    @staticmethod
    def read(table: SlotTable, states: Mapping[EvseKey, EvseState], previous: StateColumns | None) -> StateColumns:
        sources = tuple(map(states.get, table.keys))
        if previous is None or len(previous.sources) != table.size:
            changed: Sequence[int] = range(table.size)
            values = np.empty((table.size, STATE_FIELDS))
            transaction = np.empty(table.size, dtype=object)
        else:
            changed = list(itertools.compress(range(table.size), map(operator.is_not, sources, previous.sources)))
            if not changed:
                return previous
            values, transaction = previous.values.copy(), previous.transaction_id.copy()
        read = [sources[index] for index in changed]
        if not read:  # a site without chargers (yet): nothing to fill in
            return StateColumns(sources, values, transaction)
        indexes = np.fromiter(changed, dtype=np.int64, count=len(read))
        values[indexes] = [_ABSENT_STATE if state is None else _state_row(state) for state in read]
        transaction[indexes] = [None if state is None else state.transaction_id for state in read]
        return StateColumns(sources, values, transaction)


def _memory_row(memory: EvseMemory) -> tuple[float, ...]:
    return (
        float(memory.setpoint),
        _optional(memory.admitted_since_s),
        _optional(memory.wanting_since_s),
        _optional(memory.paused_at_s),
        _optional(memory.changed_at_s),
        _optional(memory.cut_from),
        _optional(memory.cut_at_s),
        _optional(memory.phases_used),
        _optional(memory.demand_cap_a),
    )


def memory_object(row: Sequence[float], transaction_id: str | None) -> EvseMemory:
    setpoint, admitted, wanting, paused, changed, cut_from, cut_at, phases, demand_cap = row
    return EvseMemory(
        setpoint=setpoint,
        transaction_id=transaction_id,
        admitted_since_s=_none_if_nan(admitted),
        wanting_since_s=_none_if_nan(wanting),
        paused_at_s=_none_if_nan(paused),
        changed_at_s=_none_if_nan(changed),
        cut_from=_none_if_nan(cut_from),
        cut_at_s=_none_if_nan(cut_at),
        phases_used=None if phases != phases else int(phases),
        demand_cap_a=_none_if_nan(demand_cap),
    )


@dataclass(frozen=True)
class MemoryColumns:
    """One cycle's control memory in topology order (its values never change once made)."""

    objects: list[EvseMemory | None]  # None: not made into an object yet (see object())
    values: FloatArray  # (EVSEs, fields)
    transaction_id: ObjectArray

    @staticmethod
    def read(table: SlotTable, memory: ControlMemory) -> MemoryColumns:
        evses = memory.evses
        if isinstance(evses, MemoryMapping) and evses.table is table:
            return evses.columns  # a plan's own memory: already columns
        memories = [evses.get(key, NO_MEMORY) for key in table.keys]
        values = np.array([_memory_row(item) for item in memories], dtype=np.float64).reshape(table.size, MEMORY_FIELDS)
        transaction = np.empty(table.size, dtype=object)
        transaction[:] = [item.transaction_id for item in memories]
        return MemoryColumns(list[EvseMemory | None](memories), values, transaction)

    def object(self, index: int) -> EvseMemory:
        made = self.objects[index]
        if made is None:
            made = memory_object(self.values[index].tolist(), self.transaction_id[index])
            self.objects[index] = made
        return made


class MemoryMapping(Mapping[EvseKey, EvseMemory]):
    """A plan's memory per EVSE: columns, made into :class:`EvseMemory` objects only when asked for.

    A cycle changes the memory of many EVSEs (every setpoint that moves); the next cycle reads
    the columns directly, so objects are made only for whoever looks (recording headers, tests).
    """

    __slots__ = ("columns", "table")

    def __init__(self, table: SlotTable, columns: MemoryColumns) -> None:
        self.table = table
        self.columns = columns

    def __getitem__(self, key: EvseKey) -> EvseMemory:
        return self.columns.object(self.table.key_index[key])

    def transaction_of(self, key: EvseKey) -> str | None:
        """The session ``key``'s memory belongs to, without making the memory object."""
        value = self.columns.transaction_id[self.table.key_index[key]]
        return None if value is None else str(value)

    def __contains__(self, key: object) -> bool:
        return key in self.table.key_index

    def __iter__(self) -> Iterator[EvseKey]:
        return iter(self.table.keys)

    def __len__(self) -> int:
        return self.table.size

    def keys(self) -> KeysView[EvseKey]:
        return self.table.key_index.keys()

    def __repr__(self) -> str:
        return f"MemoryMapping({dict(self.items())!r})"


class FleetCache:
    """The last cycle's EVSE state columns, reused where this cycle's state objects are the same ones.

    One decision uses it at a time; a decision that finds it busy (the controller's previous
    decision overran and still runs in its thread) reads everything afresh instead.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._table: SlotTable | None = None
        self._states: StateColumns | None = None
        self.commands: object | None = None  # owned by dispatch (its last commands, to reuse unchanged ones)

    def states(self, table: SlotTable, states: Mapping[EvseKey, EvseState]) -> StateColumns:
        if table is not self._table:  # another config: nothing carries over
            self._table, self._states, self.commands = table, None, None
        self._states = StateColumns.read(table, states, self._states)
        return self._states
