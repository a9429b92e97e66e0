"""Turn a checked allocation into charger commands and the next cycle's memory (pure).

Rounding only ever goes down (a lower limit never overloads a row): whole amps for AC, 100 W
steps for DC, and 0 when the rounded value falls below the EVSE's minimum. Held and
uncontrolled chargers keep their last limit; idle EVSEs are told 0. Deadband and lease
refresh are the charger link's job: it knows what each charger last accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from evdlm_solvers.problem import Allocation

from evdlm.core.memory import ControlMemory, EvseMemory
from evdlm.core.problem_builder import (
    FOLLOW_TOLERANCE_A,
    BuiltProblem,
    EvseMode,
    min_setpoint,
    setpoint_per_phase_a,
)
from evdlm.core.topology import EvseSlot, Topology
from evdlm.core.types import ChargingCommand, EvseState

DC_STEP_W = 100.0


@dataclass(frozen=True)
class Plan:
    commands: tuple[ChargingCommand, ...]
    memory: ControlMemory


def round_down(slot: EvseSlot, setpoint: float) -> float:
    """The dispatchable value at or below ``setpoint``: 0 or at least the EVSE's minimum."""
    step = DC_STEP_W if slot.is_dc else 1.0
    value = math.floor(setpoint / step + 1e-9) * step
    return value if value >= min_setpoint(slot) - 1e-9 and value > 0 else 0.0


def _next_memory(
    slot: EvseSlot,
    memory: EvseMemory,
    state: EvseState | None,
    mode: EvseMode,
    phases_used: int,
    target: float,
    measured_max_a: float,
    now_s: float,
    settle_time_s: float,
    voltage_v: float,
    demand_cap_a: float | None,
) -> EvseMemory:
    previous = memory.setpoint
    cut_from, cut_at_s = memory.cut_from, memory.cut_at_s
    if target < previous:
        cut_from, cut_at_s = max(previous, cut_from or 0.0), now_s
    elif cut_at_s is not None:
        came_down = measured_max_a <= setpoint_per_phase_a(slot, target, voltage_v) + FOLLOW_TOLERANCE_A
        if came_down or now_s - cut_at_s >= settle_time_s:
            cut_from, cut_at_s = None, None
    wants_power = mode is EvseMode.ACTIVE and target == 0
    following = replace(
        memory,
        setpoint=target,
        transaction_id=state.transaction_id if state is not None else memory.transaction_id,
        admitted_since_s=(memory.admitted_since_s or now_s) if target > 0 else None,
        wanting_since_s=(memory.wanting_since_s or now_s) if wants_power else None,
        paused_at_s=now_s if previous > 0 and target == 0 else memory.paused_at_s,
        changed_at_s=now_s if target != previous else memory.changed_at_s,
        cut_from=cut_from,
        cut_at_s=cut_at_s,
        phases_used=phases_used if mode is EvseMode.ACTIVE else memory.phases_used,
        demand_cap_a=demand_cap_a if mode is EvseMode.ACTIVE else memory.demand_cap_a,
    )
    return memory if following == memory else following  # idle EVSEs: the same object, no churn


def plan_commands(
    topology: Topology,
    built: BuiltProblem,
    allocation: Allocation,
    memory: ControlMemory,
    evse_states: dict[tuple[str, int], EvseState],
    now_s: float,
    settle_time_s: float,
) -> Plan:
    """Commands for every reachable EVSE and the memory the next cycle starts from."""
    voltage_v = topology.nominal_voltage_v
    column_of = {index: column for column, index in enumerate(built.columns)}
    commands: list[ChargingCommand] = []
    evses: dict[tuple[str, int], EvseMemory] = {}
    for index, slot in enumerate(topology.evses):
        view = built.views[index]
        state = evse_states.get(slot.key)
        old = memory.evse(slot.key)
        if state is not None and state.transaction_id != old.transaction_id and state.charging:
            # A new session: forget the last one's history, but the charger still holds its limit.
            old = EvseMemory(
                setpoint=old.setpoint, transaction_id=state.transaction_id, cut_from=old.cut_from, cut_at_s=old.cut_at_s
            )
        if view.mode is EvseMode.ACTIVE:
            target = round_down(slot, float(allocation.setpoint[column_of[index]]))
            reason = "allocated" if target > 0 else "paused by the allocation"
        elif view.mode is EvseMode.IDLE:
            target, reason = 0.0, view.reason
        elif view.mode is EvseMode.HELD and built.overloaded_nodes & set(topology.nodes[slot.node].path):
            target, reason = 0.0, "emergency cut: its circuit measures above its limit"
        else:
            target, reason = old.setpoint, view.reason
        evses[slot.key] = _next_memory(
            slot,
            old,
            state,
            view.mode,
            view.phases_used,
            target,
            max(view.measured_a),
            now_s,
            settle_time_s,
            voltage_v,
            built.demand_caps.get(index),
        )
        if view.mode is EvseMode.OFFLINE:
            continue
        commands.append(
            ChargingCommand(
                charger_id=slot.key[0],
                evse_id=slot.key[1],
                limit=target,
                unit="W" if slot.is_dc else "A",
                phases=view.phases_used,
                reason=reason,
            )
        )
    return Plan(commands=tuple(commands), memory=memory.with_evses(evses, allocation.battery_w))
