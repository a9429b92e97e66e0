"""The one EV model: dead time, first-order ramp, IEC 61851 minimum, SoC, the energy it wants.

Pure physics over frozen values; its callers step it with their clock: the OCPP station
simulator (:mod:`evdlm.sim.station`, seconds apart, a ramp and a dead time of seconds) and
the closed-loop simulation (:mod:`evdlm.sim.closed_loop`, once per control cycle, the car
following the limit of one cycle ago at once: ``ramp_time_constant_s=0``, ``dead_time_s`` the
cycle, ``energy_limit_wh`` the session's energy, SoC not modelled: ``capacity_wh=math.inf``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Car:
    """One vehicle's charging behaviour."""

    phases: int = 3  # 1 for single-phase on-board chargers (or behind a single-phase wiring)
    max_current_a: float = 16.0  # per phase, the on-board charger's limit
    min_current_a: float = 6.0  # IEC 61851: below this the car pauses
    capacity_wh: float = 60_000.0  # math.inf: SoC not modelled (it stays at soc_pct)
    soc_pct: float = 30.0  # at plug-in
    full_soc_pct: float = 100.0  # stops drawing here ("battery full", earlier than the session end)
    # From a new offered current until the car starts to react. The caller applies it: it passes
    # ``step`` the offer as it was ``dead_time_s`` ago.
    dead_time_s: float = 2.0
    # First-order approach to the target current; 0: the car draws the target from the start of
    # the step (energy then integrates exactly, target × step).
    ramp_time_constant_s: float = 3.0
    departure_at_s: float | None = None  # announced over ISO 15118 (2.0.1 NotifyEVChargingNeeds)
    energy_needed_wh: float | None = None  # announced likewise
    # The energy the car takes in the session: it stops drawing once it has it (the last step
    # delivers exactly the rest). None: it draws until full_soc_pct.
    energy_limit_wh: float | None = None
    id_tag: str = "SIMTAG"


@dataclass(frozen=True)
class EvState:
    current_a: float  # per phase drawn (at the end of the last step)
    soc_pct: float
    session_energy_wh: float
    power_w: float = 0.0  # mean power over the last step (energy of the step / its length)

    @property
    def drawing(self) -> bool:
        return self.current_a > 0.05


def initial_state(car: Car) -> EvState:
    return EvState(current_a=0.0, soc_pct=car.soc_pct, session_energy_wh=0.0)


def target_current_a(car: Car, state: EvState, offered_a: float | None) -> float:
    """What the car tries to draw for an offered current (None: the charger sets no limit)."""
    if state.soc_pct >= car.full_soc_pct:
        return 0.0
    if car.energy_limit_wh is not None and state.session_energy_wh >= car.energy_limit_wh:
        return 0.0
    available = car.max_current_a if offered_a is None else min(offered_a, car.max_current_a)
    return available if available >= car.min_current_a and available > 0.0 else 0.0


def step(car: Car, state: EvState, delayed_offered_a: float | None, dt_s: float, voltage_v: float) -> EvState:
    """Advance ``dt_s``: ``delayed_offered_a`` is the offer as it was ``dead_time_s`` ago.

    With a ramp, energy is integrated with the mean current of the step; without one, with the
    target current over the whole step. An ``energy_limit_wh`` caps the step's energy at what
    the car still wants. SoC rises with energy.
    """
    if dt_s <= 0:
        return state
    target = target_current_a(car, state, delayed_offered_a)
    if car.ramp_time_constant_s > 0:
        alpha = 1.0 - math.exp(-dt_s / car.ramp_time_constant_s)
        current = state.current_a + (target - state.current_a) * alpha
        if current < 0.05:
            current = 0.0
        mean_a = (state.current_a + current) / 2.0
    else:
        current = target
        mean_a = current
    power_w = mean_a * voltage_v * car.phases
    if car.energy_limit_wh is not None:
        remaining_wh = car.energy_limit_wh - state.session_energy_wh
        if remaining_wh > 0:
            power_w = min(power_w, remaining_wh * 3600.0 / dt_s)
    energy_wh = power_w * dt_s / 3600.0
    soc = min(100.0, state.soc_pct + energy_wh / car.capacity_wh * 100.0)
    return replace(
        state,
        current_a=current,
        soc_pct=soc,
        session_energy_wh=state.session_energy_wh + energy_wh,
        power_w=power_w,
    )
