"""A car behind an AC (or DC) charger: dead time, first-order ramp, IEC 61851 minimum, SoC.

Pure physics over frozen values; the station steps it with its clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Car:
    """One vehicle's charging behaviour."""

    phases: int = 3  # 1 for single-phase on-board chargers
    max_current_a: float = 16.0  # per phase, the on-board charger's limit
    min_current_a: float = 6.0  # IEC 61851: below this the car pauses
    capacity_wh: float = 60_000.0
    soc_pct: float = 30.0  # at plug-in
    full_soc_pct: float = 100.0  # stops drawing here ("battery full", earlier than the session end)
    dead_time_s: float = 2.0  # from a new offered current until the car starts to react
    ramp_time_constant_s: float = 3.0  # first-order approach to the target current
    departure_at_s: float | None = None  # announced over ISO 15118 (2.0.1 NotifyEVChargingNeeds)
    energy_needed_wh: float | None = None
    id_tag: str = "SIMTAG"


@dataclass(frozen=True)
class EvState:
    current_a: float  # per phase drawn
    soc_pct: float
    session_energy_wh: float

    @property
    def drawing(self) -> bool:
        return self.current_a > 0.05


def initial_state(car: Car) -> EvState:
    return EvState(current_a=0.0, soc_pct=car.soc_pct, session_energy_wh=0.0)


def target_current_a(car: Car, state: EvState, offered_a: float | None) -> float:
    """What the car tries to draw for an offered current (None: the charger sets no limit)."""
    if state.soc_pct >= car.full_soc_pct:
        return 0.0
    available = car.max_current_a if offered_a is None else min(offered_a, car.max_current_a)
    return available if available >= car.min_current_a else 0.0


def step(car: Car, state: EvState, delayed_offered_a: float | None, dt_s: float, voltage_v: float) -> EvState:
    """Advance ``dt_s``: ``delayed_offered_a`` is the offer as it was ``dead_time_s`` ago.

    Energy is integrated with the mean current of the step; SoC rises with energy.
    """
    if dt_s <= 0:
        return state
    target = target_current_a(car, state, delayed_offered_a)
    alpha = 1.0 - math.exp(-dt_s / car.ramp_time_constant_s) if car.ramp_time_constant_s > 0 else 1.0
    current = state.current_a + (target - state.current_a) * alpha
    if current < 0.05:
        current = 0.0
    energy_wh = (state.current_a + current) / 2.0 * voltage_v * car.phases * dt_s / 3600.0
    soc = min(100.0, state.soc_pct + energy_wh / car.capacity_wh * 100.0)
    return replace(state, current_a=current, soc_pct=soc, session_energy_wh=state.session_energy_wh + energy_wh)
