"""What the controller remembers between cycles, as an explicit frozen value.

A cycle is ``(inputs, memory) -> (commands, memory')``: the previous setpoints are an input,
never hidden state, so replay is exact and a restart starts from a known, safe memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from evdlm.core.types import EvseKey as EvseKey


@dataclass(frozen=True)
class EvseMemory:
    setpoint: float = 0.0  # last dispatched limit, own unit (A per phase AC, W DC); 0 = paused
    transaction_id: str | None = None  # session the rest of this memory belongs to
    admitted_since_s: float | None = None  # set while admitted
    wanting_since_s: float | None = None  # set while paused with a car that wants power
    paused_at_s: float | None = None  # when an admitted car was last paused (min off time)
    changed_at_s: float | None = None  # when the setpoint last changed
    cut_from: float | None = None  # setpoint before the last cut, counted until the meter shows it
    cut_at_s: float | None = None
    phases_used: int | None = None  # learned from measured currents (1 or 3); None = unknown
    demand_cap_a: float | None = None  # the car takes no more than this (full, or limited by itself)


NO_MEMORY = EvseMemory()  # frozen: one shared instance serves every EVSE without a history


@dataclass(frozen=True)
class ControlMemory:
    # A plain dict, or a plan's column-backed mapping (fleet.MemoryMapping); never changed in place.
    evses: Mapping[EvseKey, EvseMemory] = field(default_factory=dict)
    battery_w: float = 0.0  # last battery setpoint, + = discharge

    def evse(self, key: EvseKey) -> EvseMemory:
        return self.evses.get(key, NO_MEMORY)

    def with_evses(self, evses: Mapping[EvseKey, EvseMemory], battery_w: float) -> ControlMemory:
        return replace(self, evses=evses, battery_w=battery_w)
