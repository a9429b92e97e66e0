"""The site tree as indexed rows and EVSE columns, built once per config (pure).

Rows are (circuit node × site phase) current rows, per-node kW rows where a power limit is
configured, and the grid connection's import and export power rows. Columns are every EVSE of
every charger. The problem builder fills in headroom and per-EVSE values each cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING

from evdlm.config.models import Charger, ChargerKind, SiteConfig

if TYPE_CHECKING:
    from evdlm.core.fleet import SlotTable

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

    key: tuple[str, int]  # (charger id, evse id)
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
    evse_index: dict[tuple[str, int], int]

    @cached_property
    def slots(self) -> SlotTable:
        """The EVSEs' static facts as arrays (made on first use, then kept with the topology)."""
        from evdlm.core.fleet import SlotTable

        return SlotTable(self)


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
    import_row = len(rows)
    rows.append(Row(f"{GRID_NODE}/import", RowKind.GRID_IMPORT, GRID_NODE, None, grid.import_limit_kw * 1000.0, -1))
    export_row = len(rows)
    rows.append(Row(f"{GRID_NODE}/export", RowKind.GRID_EXPORT, GRID_NODE, None, grid.export_limit_kw * 1000.0, -1))

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
