"""A simulated charging station, protocol neutral: connectors with cars, installed profiles,
configuration keys and misbehaviour. The OCPP clients in :mod:`evdlm.sim.ocpp_client`
put it on the wire."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from evdlm.config.models import Charger, ChargerKind
from evdlm.sim.composite import InstalledProfile, composite_limit_a
from evdlm.sim.ev import Car, EvState, initial_state, step

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
    # No smart charging at all (a 2.0.1 station without the feature, a 1.6 one without the
    # profile): SetChargingProfile / ClearChargingProfile / GetChargingProfiles answered with
    # CALLERROR NotImplemented, the smart-charging keys unknown; the car draws its maximum.
    no_smart_charging: bool = False
    # Only these purposes are accepted (TxDefaultProfile, TxProfile, StationMax); None: all.
    accepted_purposes: frozenset[str] | None = None
    # Answers ChangeAvailability Accepted but starts transactions anyway (so that the central
    # system's Blocked answers are what stops them).
    ignore_availability: bool = False
    # Answers RemoteStopTransaction / RequestStopTransaction Accepted and charges on.
    ignore_remote_stop: bool = False


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
    operative: bool = True  # ChangeAvailability: an Inoperative connector starts no transaction
    inoperative_pending: bool = False  # Inoperative answered Scheduled: applies when the transaction ends
    # A car is plugged in without a transaction (stopped remotely, refused, or waiting for the
    # connector to become Operative): no energy is offered.
    idle: bool = False

    @property
    def waiting(self) -> bool:
        """A plugged-in car without a transaction, which starts one once the connector is Operative."""
        return self.car is not None and self.transaction_id is None and self.idle


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
        """Install a profile as firmware would; the answer (Accepted / Rejected).

        A station without smart charging (``no_smart_charging``) never gets here: its protocol
        client answers with a CALLERROR.
        """
        behaviour = self.misbehaviour
        if behaviour.reject_profiles:
            return "Rejected"
        purpose = "StationMax" if profile.station_max else profile.purpose
        if behaviour.accepted_purposes is not None and purpose not in behaviour.accepted_purposes:
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
            # Only for the running transaction (spec table: the wrong transactionId is rejected).
            connector = self.connectors.get(profile.connector_id)
            if connector is None or connector.transaction_id is None:
                return "Rejected"
            if profile.transaction_id is not None and profile.transaction_id != connector.transaction_id:
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
        if self.connectors[evse_id].idle:
            return 0.0  # no transaction: no energy
        limit = None if self.misbehaviour.ignore_profiles else self.limit_a(evse_id, now_s)
        offered = self.charger.max_current_a if limit is None else min(limit, self.charger.max_current_a)
        offered = math.floor(offered * 10 + 1e-9) / 10
        return offered if offered >= PWM_MIN_CURRENT_A else 0.0

    # -------------------------------------------------------------- cars

    def can_start(self, evse_id: int) -> bool:
        """Whether a transaction may start on the connector now (Inoperative: not until Operative)."""
        return self.connectors[evse_id].operative or self.misbehaviour.ignore_availability

    def plug_in(self, evse_id: int, car: Car, transaction_id: str | None, now_s: float) -> None:
        """A car arrives; the transaction starts at once unless the connector is Inoperative
        (then the car waits: :meth:`start_transaction` once it is Operative)."""
        connector = self.connectors[evse_id]
        connector.car = car
        connector.ev = initial_state(car)
        connector.suspended_ev = False
        connector.offered_history.clear()
        if self.can_start(evse_id):
            self.start_transaction(evse_id, transaction_id, now_s)
        else:
            connector.transaction_id = None
            connector.transaction_start_s = None
            connector.idle = True

    def start_transaction(self, evse_id: int, transaction_id: str | None, now_s: float) -> None:
        """A plugged-in car's transaction begins (1.6: the id arrives with StartTransaction.conf)."""
        connector = self.connectors[evse_id]
        connector.transaction_id = transaction_id
        connector.transaction_start_s = now_s
        connector.idle = False

    def stop_transaction(self, evse_id: int) -> str | None:
        """End the transaction, the car staying plugged in and drawing nothing; returns its id.
        An Inoperative answered Scheduled takes effect now."""
        connector = self.connectors[evse_id]
        transaction_id = connector.transaction_id
        connector.transaction_id = None
        connector.transaction_start_s = None
        connector.idle = connector.car is not None
        if connector.inoperative_pending:
            connector.inoperative_pending = False
            connector.operative = False
        return transaction_id

    def connector_of_transaction(self, transaction_id: str) -> int | None:
        for evse_id, connector in self.connectors.items():
            if connector.transaction_id is not None and connector.transaction_id == transaction_id:
                return evse_id
        return None

    def set_availability(self, evse_id: int, operative: bool) -> tuple[str, list[int]]:
        """ChangeAvailability of one connector (0: all of them), as 1.6 §5.2 / 2.0.1 G03 describe.

        Returns the answer (Accepted / Scheduled / Rejected) and the connectors whose waiting car
        may now start a transaction (those that just became Operative).
        """
        if evse_id != 0 and evse_id not in self.connectors:
            return "Rejected", []
        targets = list(self.connectors) if evse_id == 0 else [evse_id]
        status = "Accepted"
        startable: list[int] = []
        for target in targets:
            connector = self.connectors[target]
            if operative:
                was_operative = connector.operative
                connector.operative = True
                connector.inoperative_pending = False
                if not was_operative and connector.waiting:
                    startable.append(target)
            elif self.misbehaviour.ignore_availability:
                continue  # says yes, does nothing
            elif connector.transaction_id is not None:
                # A running transaction is not interrupted: unavailable once it ends.
                connector.inoperative_pending = True
                status = "Scheduled"
            else:
                connector.operative = False
        return status, startable

    def unplug(self, evse_id: int) -> None:
        connector = self.connectors[evse_id]
        connector.car = None
        connector.ev = None
        connector.transaction_id = None
        connector.transaction_start_s = None
        connector.suspended_ev = False
        connector.offered_a = 0.0
        connector.idle = False
        if connector.inoperative_pending:
            connector.inoperative_pending = False
            connector.operative = False

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
