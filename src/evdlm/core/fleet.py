"""Per-EVSE values as columns, so a cycle costs array operations rather than Python per EVSE.

Three tables, each a float matrix with one named column per field (NaN stands for None):

* :class:`SlotTable`: the topology's static facts, built once per config;
* :class:`StateColumns`: what the chargers report (:class:`~evdlm.core.types.EvseState`);
* :class:`MemoryColumns`: the control memory (:class:`~evdlm.core.memory.EvseMemory`).

Between two cycles most EVSE states and memories are the very same (frozen) objects, so
:class:`FleetCache` re-reads only the ones that changed. The cache is an optimisation only:
without it every value is read afresh, with the same result.
"""

from __future__ import annotations

import itertools
import operator
import threading
from collections import defaultdict
from collections.abc import Iterator, KeysView, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from evdlm_solvers.problem import UNIT_CURRENT_A, UNIT_POWER_W

from evdlm.core.memory import NO_MEMORY, ControlMemory, EvseKey, EvseMemory
from evdlm.core.topology import RowKind, Topology
from evdlm.core.types import EvseState, RateUnitLiteral

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


class SlotTable:
    """The static per-EVSE facts of a topology, as arrays in topology order."""

    def __init__(self, topology: Topology) -> None:
        slots = topology.evses
        size = len(slots)
        self.topology = topology
        self.size = size
        self.voltage_v = topology.nominal_voltage_v
        self.keys: tuple[EvseKey, ...] = tuple(slot.key for slot in slots)
        self.units: tuple[RateUnitLiteral, ...] = tuple("W" if slot.is_dc else "A" for slot in slots)
        self.is_dc = np.array([slot.is_dc for slot in slots], dtype=np.bool_)
        self.wired_phases = np.array([slot.wired_phase_count for slot in slots], dtype=np.int64)
        # 0-based site phase wired to each charger phase.
        self.site_phase = np.array([[phase - 1 for phase in slot.site_phases] for slot in slots], dtype=np.int64)
        self.site_phase = self.site_phase.reshape(size, 3)
        self.min_setpoint = np.array(
            [slot.charger.min_power_kw * 1000.0 if slot.is_dc else slot.charger.min_current_a for slot in slots]
        )
        self.max_setpoint = np.array(
            [
                (slot.charger.max_power_kw or 0.0) * 1000.0 if slot.is_dc else slot.charger.max_current_a
                for slot in slots
            ]
        )
        self.priority = np.array([slot.charger.priority for slot in slots], dtype=np.int64)

        self.node_ids: tuple[str, ...] = tuple(topology.nodes)
        node_index = {node: index for index, node in enumerate(self.node_ids)}
        # (node, EVSE) pairs in EVSE order, each EVSE's path from the root: per-node sums built
        # with np.add.at over them add EVSE by EVSE, in the same order as a plain loop would.
        pair_node: list[int] = []
        pair_evse: list[int] = []
        for index, slot in enumerate(slots):
            for node in topology.nodes[slot.node].path:
                pair_node.append(node_index[node])
                pair_evse.append(index)
        self.pair_node = np.array(pair_node, dtype=np.int64)
        self.pair_evse = np.array(pair_evse, dtype=np.int64)
        self.in_path = np.zeros((len(self.node_ids), size), dtype=np.bool_)
        self.in_path[self.pair_node, self.pair_evse] = True
        # Current rows of each node, (site phase 0..2, row), in row order.
        self.node_current_rows: tuple[tuple[tuple[int, int], ...], ...] = tuple(
            tuple((phase - 1, row) for (row_node, phase), row in topology.current_row.items() if row_node == node)
            for node in self.node_ids
        )
        # Row facts the problem repeats every cycle.
        self.row_is_current = np.array([row.kind is RowKind.PHASE_CURRENT for row in topology.rows], dtype=np.bool_)
        self.row_unit = np.where(self.row_is_current, UNIT_CURRENT_A, UNIT_POWER_W).astype(np.int8)
        self.row_parent = np.array([row.parent for row in topology.rows], dtype=np.int64)
        self.row_limit = np.array([row.limit for row in topology.rows], dtype=np.float64)
        for array in (self.row_unit, self.row_parent, self.row_limit):
            array.flags.writeable = False
        # Every current row as (node, 0-based phase, row); every node power row as (node, row).
        current = [
            (position, phase, row) for position, rows in enumerate(self.node_current_rows) for phase, row in rows
        ]
        self.current_row_node = np.array([node for node, _, _ in current], dtype=np.int64)
        self.current_row_phase = np.array([phase for _, phase, _ in current], dtype=np.int64)
        self.current_row = np.array([row for _, _, row in current], dtype=np.int64)
        self.power_row_node = np.array([node_index[node] for node in topology.power_row], dtype=np.int64)
        self.power_row = np.array(list(topology.power_row.values()), dtype=np.int64)
        self.node_limit_a = np.array([topology.nodes[node].phase_current_limit_a for node in self.node_ids])
        self.metered_nodes = tuple(
            position for position, node in enumerate(self.node_ids) if topology.nodes[node].meter is not None
        )
        self._coefficients: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._last_columns: tuple[bytes, bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self.key_set = frozenset(self.keys)
        self.key_index = topology.evse_index

    def column_coefficients(
        self, columns: np.ndarray, phases_used: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The CSR columns (indptr, rows, coefficients) of these EVSEs, each using its phases.

        The set of EVSEs in the problem changes seldom, so the last one is kept (read-only: a
        problem takes copies).
        """
        identity = (columns.tobytes(), phases_used.tobytes())
        last = self._last_columns
        if last is not None and last[0] == identity[0] and last[1] == identity[1]:
            return last[2]
        parts = [
            self.coefficients(index, phases)
            for index, phases in zip(columns.tolist(), phases_used.tolist(), strict=True)
        ]
        indptr = np.zeros(len(parts) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(rows) for rows, _ in parts])
        if parts:
            rows, values = np.concatenate([rows for rows, _ in parts]), np.concatenate([values for _, values in parts])
        else:
            rows, values = np.zeros(0, dtype=np.int64), np.zeros(0)
        for array in (indptr, rows, values):
            array.flags.writeable = False
        made = (indptr, rows, values)
        self._last_columns = (identity[0], identity[1], made)
        return made

    def coefficients(self, index: int, phases_used: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and coefficients of one EVSE's column (1 unit of its setpoint on every row it loads)."""
        cached = self._coefficients.get((index, phases_used))
        if cached is not None:
            return cached
        topology = self.topology
        slot = topology.evses[index]
        voltage_v = self.voltage_v
        coefs: dict[int, float] = defaultdict(float)
        if slot.is_dc:
            per_phase, power_per_unit = 1.0 / (3.0 * voltage_v), 1.0
            used_phases: tuple[int, ...] = (1, 2, 3)
        else:
            per_phase, power_per_unit = 1.0, voltage_v * phases_used
            used_phases = slot.site_phases[:phases_used]
        for node in topology.nodes[slot.node].path:
            for phase in used_phases:
                row = topology.current_row.get((node, phase))
                if row is not None:
                    coefs[row] += per_phase
            if node in topology.power_row:
                coefs[topology.power_row[node]] += power_per_unit
        coefs[topology.import_row] += power_per_unit
        coefs[topology.export_row] -= power_per_unit
        rows = sorted(coefs)
        made = (np.array(rows, dtype=np.int64), np.array([coefs[row] for row in rows], dtype=np.float64))
        self._coefficients[(index, phases_used)] = made
        return made


# StateColumns fields (columns of StateColumns.values).
(
    S_PRESENT,
    S_ONLINE,
    S_CONNECTED,
    S_CHARGING,
    S_CONTROLLABLE,
    S_COMPLIANT,
    S_SAMPLED_AT,  # the charger's last meter sample (updated_at_s for states that do not say)
    S_HAS_PHASE_CURRENT,
    S_I1,
    S_I2,
    S_I3,
    S_POWER,
    S_EV_MAX_A,
    S_ENERGY_NEEDED,
    S_DEPARTURE,
    S_PRIORITY,  # the session's priority class (NaN: the charger's)
    S_PAUSED,  # 1: held at 0 by a session command
    S_PLANNED_W,  # the horizon plan's power for the session now, W (NaN: none)
) = range(18)
STATE_FIELDS = 18
_ABSENT_STATE = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, NAN, 0.0, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, 0.0, NAN)


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


# MemoryColumns fields.
M_SETPOINT, M_ADMITTED, M_WANTING, M_PAUSED, M_CHANGED, M_CUT_FROM, M_CUT_AT, M_PHASES, M_DEMAND_CAP = range(9)
MEMORY_FIELDS = 9


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
