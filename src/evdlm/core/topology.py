"""The site tree as indexed rows and EVSE columns, built once per config (pure).

Rows are (circuit node × site phase) current rows, per-node kW rows where a power limit is
configured, and the grid connection's import and export power rows. Columns are every EVSE of
every charger. The problem builder fills in headroom and per-EVSE values each cycle.
:class:`SlotTable` holds the same static facts as arrays, for the per-cycle code
(:mod:`evdlm.core.fleet`, the kernels); it lives here so the dependency runs one way only
(fleet → topology).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import numpy as np
from evdlm_solvers import UNIT_CURRENT_A, UNIT_POWER_W

from evdlm.config.models import Charger, ChargerKind, SiteConfig
from evdlm.core.site_settings import grid_limits_w
from evdlm.core.types import EvseKey, RateUnitLiteral

GRID_NODE = "grid"
SITE_PHASES = (1, 2, 3)


class RowKind(StrEnum):
    PHASE_CURRENT = "phase_current"  # A on one site phase of a node
    NODE_POWER = "node_power"  # W through a node (configured kW limit)
    GRID_IMPORT = "grid_import"  # W imported at the connection
    GRID_EXPORT = "grid_export"  # W exported at the connection


@dataclass(frozen=True)
class Row:
    name: str  # e.g. "garage/L2", "carport/kW", "grid/import"
    kind: RowKind
    node: str
    phase: int | None  # site phase 1..3 for current rows
    limit: float  # A for current rows, W for power rows
    parent: int  # index of the same-kind row of the parent node, -1 at the root


@dataclass(frozen=True)
class Node:
    id: str
    parent: str | None
    phase_current_limit_a: float
    power_limit_w: float | None
    meter: str | None
    path: tuple[str, ...]  # node ids from the grid connection down to this node


@dataclass(frozen=True)
class EvseSlot:
    """One EVSE column: static facts from the config."""

    key: EvseKey
    charger: Charger
    node: str  # circuit the charger hangs on
    site_phases: tuple[int, int, int]  # site phase wired to the charger's L1, L2, L3

    @property
    def is_dc(self) -> bool:
        return self.charger.kind is ChargerKind.DC

    @property
    def wired_phase_count(self) -> int:
        return 1 if self.charger.kind is ChargerKind.AC_1PHASE else 3


@dataclass(frozen=True)
class Topology:
    nodes: dict[str, Node]
    rows: tuple[Row, ...]
    evses: tuple[EvseSlot, ...]
    nominal_voltage_v: float
    # index helpers
    current_row: dict[tuple[str, int], int]  # (node, site phase) -> row
    power_row: dict[str, int]  # node -> kW row (only where configured)
    import_row: int
    export_row: int
    evse_index: dict[EvseKey, int]

    @cached_property
    def slots(self) -> SlotTable:
        """The EVSEs' static facts as arrays (made on first use, then kept with the topology)."""
        return SlotTable(self)


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


def build_topology(config: SiteConfig) -> Topology:
    """Index the config's tree. The config is assumed valid (references resolve)."""
    grid = config.grid
    nodes: dict[str, Node] = {
        GRID_NODE: Node(GRID_NODE, None, grid.phase_current_limit_a, None, grid.meter, (GRID_NODE,))
    }
    for circuit, parent in config.iter_circuits():
        parent_id = parent.id if parent is not None else GRID_NODE
        nodes[circuit.id] = Node(
            id=circuit.id,
            parent=parent_id,
            phase_current_limit_a=circuit.phase_current_limit_a,
            power_limit_w=circuit.power_limit_kw * 1000.0 if circuit.power_limit_kw is not None else None,
            meter=circuit.meter,
            path=(*nodes[parent_id].path, circuit.id),
        )

    rows: list[Row] = []
    current_row: dict[tuple[str, int], int] = {}
    power_row: dict[str, int] = {}
    phases = SITE_PHASES if grid.phases == 3 else (1,)
    for node in nodes.values():  # parents come before children (insertion order)
        for phase in phases:
            parent_row = current_row[(node.parent, phase)] if node.parent is not None else -1
            current_row[(node.id, phase)] = len(rows)
            rows.append(
                Row(
                    f"{node.id}/L{phase}", RowKind.PHASE_CURRENT, node.id, phase, node.phase_current_limit_a, parent_row
                )
            )
    for node in nodes.values():
        if node.power_limit_w is not None:
            power_row[node.id] = len(rows)
            rows.append(Row(f"{node.id}/kW", RowKind.NODE_POWER, node.id, None, node.power_limit_w, -1))
    import_limit_w, export_limit_w = grid_limits_w(grid)
    import_row = len(rows)
    rows.append(Row(f"{GRID_NODE}/import", RowKind.GRID_IMPORT, GRID_NODE, None, import_limit_w, -1))
    export_row = len(rows)
    rows.append(Row(f"{GRID_NODE}/export", RowKind.GRID_EXPORT, GRID_NODE, None, export_limit_w, -1))

    evses = tuple(
        # On a 1-phase connection every wired phase is the one site phase.
        EvseSlot(
            key=(charger.id, evse_id),
            charger=charger,
            node=charger.circuit,
            site_phases=charger.site_phases if grid.phases == 3 else (1, 1, 1),
        )
        for charger in config.chargers
        for evse_id in range(1, charger.evses + 1)
    )
    return Topology(
        nodes=nodes,
        rows=tuple(rows),
        evses=evses,
        nominal_voltage_v=grid.nominal_voltage_v,
        current_row=current_row,
        power_row=power_row,
        import_row=import_row,
        export_row=export_row,
        evse_index={slot.key: index for index, slot in enumerate(evses)},
    )
