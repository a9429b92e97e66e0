"""The last rung for chargers that cannot be limited: which EVSEs to stop and block (pure).

An uncontrolled EVSE (profiles refused or not implemented, or drawing above its accepted limit
past the link's grace time) is counted at its maximum and the controllable cars around it make room.
When that is not enough, when a node on its path is measured over its limit or the allocation
cannot fit even with every controllable car paused, its transaction is stopped and it is set
Inoperative. It stays blocked until the rows on its path have room for its maximum again, as
trusted meters measure it (it would otherwise start, overload the node and be stopped, over and
over); while any grid or circuit meter is unusable, nothing is released.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from evdlm.core.fleet_kernels import UNCONTROLLED, Reason
from evdlm.core.problem_builder import BuiltProblem
from evdlm.core.topology import Topology
from evdlm.core.types import EvseKey


def _rows_of(topology: Topology, index: int) -> list[tuple[int, float]]:
    """(row, what the EVSE at its maximum adds to it) for every row on its path."""
    slot = topology.evses[index]
    slots = topology.slots
    max_setpoint = float(slots.max_setpoint[index])
    if slot.is_dc:
        per_phase_a = max_setpoint / (3.0 * topology.nominal_voltage_v)
        power_w = max_setpoint
    else:
        per_phase_a = max_setpoint
        power_w = max_setpoint * topology.nominal_voltage_v * slot.wired_phase_count
    phases = set(slot.site_phases[: slot.wired_phase_count])
    rows: list[tuple[int, float]] = []
    for node in topology.nodes[slot.node].path:
        rows += [
            (topology.current_row[(node, phase)], per_phase_a)
            for phase in phases
            if (node, phase) in topology.current_row
        ]
        if node in topology.power_row:
            rows.append((topology.power_row[node], power_w))
    rows.append((topology.import_row, power_w))
    return rows


def restrictions(
    topology: Topology, built: BuiltProblem, over_limit: bool, restricted: Mapping[EvseKey, str]
) -> dict[EvseKey, str]:
    """The EVSEs to keep stopped and Inoperative after this cycle, each with its reason.

    Parameters
    ----------
    topology, built
        This cycle's topology and problem (modes, overloaded nodes, row headroom).
    over_limit : bool
        The allocation could not respect every row even with every controllable car paused.
    restricted : Mapping
        The EVSEs restricted until now.
    """
    wanted: dict[EvseKey, str] = {}
    # Only what the charger link has concluded (profiles refused, or above its accepted limit past
    # the grace time): a draw above the limit seen in the core alone may be a late sample.
    fleet = built.fleet
    beyond_control = (fleet.mode == UNCONTROLLED) & np.isin(
        fleet.reason, (Reason.REFUSES_PROFILES, Reason.DOES_NOT_FOLLOW)
    )
    uncontrolled = np.nonzero(beyond_control)[0].tolist()
    if over_limit or built.overloaded_nodes:
        for index in uncontrolled:
            slot = topology.evses[index]
            path = topology.nodes[slot.node].path
            overloaded = [node for node in path if node in built.overloaded_nodes]
            if not overloaded and not over_limit:
                continue
            where = ", ".join(overloaded) if overloaded else "a row it loads"
            why = built.views[index].reason if index < len(built.views) else "uncontrolled"
            wanted[slot.key] = f"{why}, while {where} is over its limit"
    headroom = built.problem.row_headroom
    blind = built.grid_fallback or bool(built.stale_devices)
    for key, reason in restricted.items():
        if key in wanted or key not in topology.evse_index:
            continue
        rows = _rows_of(topology, topology.evse_index[key])
        # Room is only known where the meters are trusted: a blind row's headroom is a guess.
        if blind or any(headroom[row] < load for row, load in rows):
            wanted[key] = reason  # no room for it at its maximum yet
    return wanted
