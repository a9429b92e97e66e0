"""A simulated charging station, protocol neutral: connectors with cars, installed profiles,
configuration keys and misbehaviour. The OCPP clients in :mod:`evdlm.chargers.ocpp.sim_client`
put it on the wire."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from evdlm.chargers.sim.composite import InstalledProfile, composite_limit_a
from evdlm.chargers.sim.ev import Car, EvState, initial_state, step
from evdlm.config.models import Charger, ChargerKind

# The IEC 61851 PWM cannot signal less than 6 A: below it the charger offers nothing.
PWM_MIN_CURRENT_A = 6.0


@dataclass(frozen=True)
class Misbehaviour:
    """Ways real chargers let a load manager down (specs/ocpp-smart-charging.md, last table)."""

    reject_profiles: bool = False  # answer Rejected to every SetChargingProfile
    ignore_profiles: bool = False  # answer Accepted, keep offering the maximum
    only_amps: bool = False  # reject W schedules
    only_stack_level_0: bool = False  # reject stackLevel > 0 (ABB-style firmware)
    advertise_truthfully: bool = True  # False: configuration keys claim more than it accepts
    answer_delay_s: float = 0.0  # wall seconds before answering SetChargingProfile (a slow charger)


@dataclass
class Connector:
    evse_id: int
    car: Car | None = None
    ev: EvState | None = None
    transaction_id: str | None = None
    transaction_start_s: float | None = None
    energy_register_wh: float = 0.0
    offered_history: deque[tuple[float, float | None]] = field(default_factory=lambda: deque(maxlen=256))
    offered_a: float = 0.0
    suspended_ev: bool = False  # car stopped by itself (full)


class StationModel:
    """State and physics of one station; time comes in as arguments (``now_s``)."""

    def __init__(self, charger: Charger, voltage_v: float, misbehaviour: Misbehaviour | None = None) -> None:
        self.charger = charger
        self.voltage_v = voltage_v
        self.misbehaviour = misbehaviour or Misbehaviour()
        self.connectors = {evse_id: Connector(evse_id) for evse_id in range(1, charger.evses + 1)}
        self.profiles: dict[int, InstalledProfile] = {}
        self.max_stack_level = 10
        self.sample_interval_s = 60.0  # until the central system configures it
        self.measurands: tuple[str, ...] = ("Energy.Active.Import.Register",)
        self.last_step_s: float | None = None

    @property
    def phases(self) -> int:
        return 1 if self.charger.kind is ChargerKind.AC_1PHASE else 3

    # -------------------------------------------------------------- configuration

    def advertised_rate_units(self) -> str:
        if self.misbehaviour.only_amps and self.misbehaviour.advertise_truthfully:
            return "Current"
        return "Current,Power"

    def advertised_max_stack_level(self) -> int:
        if self.misbehaviour.only_stack_level_0 and self.misbehaviour.advertise_truthfully:
            return 0
        return self.max_stack_level

    # -------------------------------------------------------------- profiles

    def set_profile(self, profile: InstalledProfile) -> str:
        """Install a profile as firmware would; the answer (Accepted / Rejected)."""
        behaviour = self.misbehaviour
        if behaviour.reject_profiles:
            return "Rejected"
        if behaviour.only_amps and profile.unit == "W":
            return "Rejected"
        if behaviour.only_stack_level_0 and profile.stack_level > 0:
            return "Rejected"
        if profile.stack_level > self.max_stack_level:
            return "Rejected"
        if profile.connector_id not in (0, *self.connectors):
            return "Rejected"
        if profile.station_max and profile.connector_id != 0:
            return "Rejected"
        if profile.purpose == "TxProfile":
            connector = self.connectors.get(profile.connector_id)
            if connector is None or connector.transaction_id is None:
                return "Rejected"
        # Same id, or same purpose + stack level + connector, replaces (1.6 §3.13.2).
        for existing_id, existing in list(self.profiles.items()):
            if existing_id == profile.profile_id or (
                existing.purpose == profile.purpose
                and existing.stack_level == profile.stack_level
                and existing.connector_id == profile.connector_id
            ):
                del self.profiles[existing_id]
        self.profiles[profile.profile_id] = profile
        return "Accepted"

    def clear_profiles(
        self,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> bool:
        """ClearChargingProfile semantics: by id, or the AND of the criteria given."""
        doomed = [
            existing_id
            for existing_id, profile in self.profiles.items()
            if (profile_id is not None and existing_id == profile_id)
            or (
                profile_id is None
                and (connector_id is None or profile.connector_id == connector_id)
                and (purpose is None or profile.purpose == purpose)
                and (stack_level is None or profile.stack_level == stack_level)
            )
        ]
        for existing_id in doomed:
            del self.profiles[existing_id]
        return bool(doomed)

    def limit_a(self, evse_id: int, now_s: float) -> float | None:
        """The composite schedule's limit in A per phase (None: no profile applies)."""
        connector = self.connectors[evse_id]
        phases = connector.car.phases if connector.car is not None else self.phases
        return composite_limit_a(
            self.profiles.values(),
            evse_id,
            now_s,
            connector.transaction_id,
            connector.transaction_start_s,
            self.voltage_v,
            min(phases, self.phases),
        )

    def offered_current_a(self, evse_id: int, now_s: float) -> float:
        """What the charger signals to the car (whole tenths, 0 below the PWM minimum)."""
        limit = None if self.misbehaviour.ignore_profiles else self.limit_a(evse_id, now_s)
        offered = self.charger.max_current_a if limit is None else min(limit, self.charger.max_current_a)
        offered = math.floor(offered * 10 + 1e-9) / 10
        return offered if offered >= PWM_MIN_CURRENT_A else 0.0

    # -------------------------------------------------------------- cars

    def plug_in(self, evse_id: int, car: Car, transaction_id: str | None, now_s: float) -> None:
        connector = self.connectors[evse_id]
        connector.car = car
        connector.ev = initial_state(car)
        connector.transaction_id = transaction_id
        connector.transaction_start_s = now_s
        connector.suspended_ev = False
        connector.offered_history.clear()

    def unplug(self, evse_id: int) -> None:
        connector = self.connectors[evse_id]
        connector.car = None
        connector.ev = None
        connector.transaction_id = None
        connector.transaction_start_s = None
        connector.suspended_ev = False
        connector.offered_a = 0.0

    def advance(self, now_s: float) -> list[int]:
        """Step every car to ``now_s``; returns EVSEs whose car just stopped by itself (full)."""
        dt_s = 0.0 if self.last_step_s is None else max(0.0, now_s - self.last_step_s)
        self.last_step_s = now_s
        newly_full: list[int] = []
        for connector in self.connectors.values():
            if connector.car is None or connector.ev is None:
                continue
            car = connector.car
            connector.offered_a = self.offered_current_a(connector.evse_id, now_s)
            connector.offered_history.append((now_s, connector.offered_a))
            delayed = _value_at(connector.offered_history, now_s - car.dead_time_s)
            before = connector.ev
            connector.ev = step(car, before, delayed, dt_s, self.voltage_v)
            connector.energy_register_wh += connector.ev.session_energy_wh - before.session_energy_wh
            if not connector.suspended_ev and connector.ev.soc_pct >= car.full_soc_pct:
                connector.suspended_ev = True
                newly_full.append(connector.evse_id)
        return newly_full

    def connector_phase_current_a(self, evse_id: int) -> tuple[float, float, float]:
        """Current per charger phase L1..L3 drawn through one connector."""
        connector = self.connectors[evse_id]
        if connector.car is None or connector.ev is None:
            return (0.0, 0.0, 0.0)
        current = connector.ev.current_a
        if connector.car.phases == 1 or self.phases == 1:
            return (current, 0.0, 0.0)
        return (current, current, current)

    def drawn_current_a(self) -> tuple[float, float, float]:
        """Current per charger phase L1..L3, summed over connectors."""
        total = [0.0, 0.0, 0.0]
        for evse_id in self.connectors:
            for index, value in enumerate(self.connector_phase_current_a(evse_id)):
                total[index] += value
        return (total[0], total[1], total[2])

    def power_w(self, evse_id: int) -> float:
        return sum(self.connector_phase_current_a(evse_id)) * self.voltage_v


def _value_at(history: deque[tuple[float, float | None]], at_s: float) -> float | None:
    """The offered value in force at ``at_s`` (the oldest known before history starts: the car
    sees the first offer only after its dead time, so it draws nothing until then)."""
    value: float | None = 0.0
    for stamp_s, offered in history:
        if stamp_s <= at_s:
            value = offered
        else:
            break
    return value
