"""The plain values that cross between the read side, the pure core and the write side.

Devices produce :class:`Reading`; the OCPP central system produces :class:`EvseState` and
consumes :class:`ChargingCommand`, answering :class:`CommandResult`. None of these import a
protocol library. Sign convention (every value here is already oriented): grid + = import,
PV + = production, battery + = discharge, EV + = consumption. Times are seconds since the
Unix epoch from the injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Literal

PhaseValues = tuple[float | None, float | None, float | None]
EvseKey = tuple[str, int]
"""An EVSE: (charger id, EVSE id from 1)."""


class Quality(StrEnum):
    OK = "ok"
    STALE = "stale"  # older than the device's max age
    INVALID = "invalid"  # decoded but implausible (NaN, absurd, sum mismatch, counter backwards)
    # Plausible on its own but contradicted by physics or by what flows below the meter (power
    # vs V·I, less than the chargers under it draw, frozen while their load moved): probably lying.
    SUSPECT = "suspect"
    MISSING = "missing"  # never read, or the last attempt failed


@dataclass(frozen=True, kw_only=True)
class Quantities:
    """What a device measures: the fields a decoder fills (:class:`evdlm.devices.codec.Measurement`)
    and a reading carries (:class:`Reading`). A new quantity is one field here.

    ``phase_*`` tuples are indexed by phase L1, L2, L3. "Not available" is None.
    """

    power_w: float | None = None
    phase_power_w: PhaseValues | None = None
    phase_current_a: PhaseValues | None = None
    phase_voltage_v: PhaseValues | None = None
    frequency_hz: float | None = None
    import_energy_wh: float | None = None
    export_energy_wh: float | None = None
    soc_pct: float | None = None


QUANTITY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Quantities))
PHASE_QUANTITIES: tuple[str, ...] = ("phase_power_w", "phase_current_a", "phase_voltage_v")


@dataclass(frozen=True)
class Reading(Quantities):
    """One device reading, oriented to evdlm's sign convention, phases indexed by site phase.

    The quantities (:class:`Quantities`) are keyword-only: ``Reading(device, taken_at_s,
    quality, power_w=...)``.
    """

    device: str
    taken_at_s: float
    quality: Quality
    reason: str | None = None  # why the quality is not OK, for logs and records

    @property
    def usable(self) -> bool:
        return self.quality is Quality.OK

    def aged(self, now_s: float, max_age_s: float) -> Reading:
        """This reading, marked stale when older than ``max_age_s`` at ``now_s``."""
        if self.quality is Quality.OK and now_s - self.taken_at_s > max_age_s:
            return replace(
                self, quality=Quality.STALE, reason=f"{now_s - self.taken_at_s:.1f} s old (max {max_age_s:g} s)"
            )
        return self

    @staticmethod
    def missing(device: str, now_s: float, reason: str) -> Reading:
        return Reading(device=device, taken_at_s=now_s, quality=Quality.MISSING, reason=reason)


RateUnitLiteral = Literal["A", "W"]


@dataclass(frozen=True)
class EvseState:
    """What the central system knows of one EVSE, from OCPP messages only.

    ``phase_current_a`` is indexed by the charger's own L1, L2, L3 (the topology maps them
    onto site phases with the configured rotation).
    """

    charger_id: str
    evse_id: int  # 1-based (OCPP 1.6 connectorId / 2.0.1 evseId)
    online: bool  # the charge point's websocket is connected
    connected: bool  # a car is plugged in
    charging: bool  # a transaction runs and the car may draw
    updated_at_s: float
    transaction_id: str | None = None
    phase_current_a: PhaseValues | None = None
    power_w: float | None = None
    offered_current_a: float | None = None
    energy_wh: float | None = None
    soc_pct: float | None = None
    departure_at_s: float | None = None  # NotifyEVChargingNeeds departureTime
    energy_needed_wh: float | None = None  # NotifyEVChargingNeeds energyAmount
    ev_max_current_a: float | None = None  # from the car (ISO 15118), when known
    controllable: bool = True  # False after profiles were refused for good
    compliant: bool = True  # False while it draws clearly above its accepted limit
    accepted_limit: float | None = None  # last limit the charger accepted, in accepted_unit
    accepted_unit: RateUnitLiteral | None = None
    # When the charger last sampled what it draws (MeterValues with a current or power); None:
    # not known apart from ``updated_at_s``, which any message moves (a status, an accepted
    # profile), so it cannot tell a sample taken after a cut from one taken before it.
    sampled_at_s: float | None = None
    # The session began before this process (or this connection) learnt of it: a status or meter
    # values named it, not its start. A restarted controller takes such a car from where it is.
    resumed: bool = False
    # The session's identity token (OCPP 1.6 StartTransaction idTag, 2.0.1 idToken.idToken).
    id_tag: str | None = None
    # When the session started (the charger's timestamp when plausible, else when we learnt of it).
    session_started_at_s: float | None = None
    # Set by the session inputs overlay (evdlm.core.session_inputs), never by a charger link:
    priority: int | None = None  # priority class for this session (None: the charger's)
    paused: bool = False  # held at 0 A until resumed or the session ends
    # Set by the horizon planner's overlay (evdlm.core.horizon_targets): the power the plan gives
    # this session now, W (None: no plan for it).
    planned_power_w: float | None = None
    # Set by the Local Controller link (evdlm.chargers.ocpp.csms_profiles): the operator CSMS's
    # limit on this EVSE now, as the charger would compose the CSMS's profiles, in
    # csms_limit_unit (A per phase or W); an upper bound on the EVSE. None: the CSMS sets none.
    csms_limit: float | None = None
    csms_limit_unit: RateUnitLiteral | None = None
    # Why the EVSE says it cannot charge, from its last StatusNotification (1.6 status Faulted or
    # Unavailable: the errorCode, ":vendorErrorCode" appended; 2.0.1 the connectorStatus); None:
    # working. Read by the availability ledger (evdlm.core.availability), not by the allocation.
    fault: str | None = None


@dataclass(frozen=True)
class ChargingCommand:
    """The limit one EVSE should hold, protocol neutral.

    ``limit`` is per phase in A (AC) or total in W (DC) as ``unit`` says; 0 means pause.
    The charger link converts units as the charger accepts them and refreshes the lease.
    """

    charger_id: str
    evse_id: int
    limit: float
    unit: RateUnitLiteral
    phases: int  # phases the car uses (1 or 3), for A↔W conversion
    reason: str = ""


class CommandStatus(StrEnum):
    ACCEPTED = "accepted"
    UNCHANGED = "unchanged"  # inside the deadband with a fresh lease: nothing sent
    REJECTED = "rejected"
    NOT_SUPPORTED = "not_supported"
    FAILED = "failed"  # CALLERROR or transport error
    TIMEOUT = "timeout"
    OFFLINE = "offline"


@dataclass(frozen=True)
class CommandResult:
    command: ChargingCommand
    status: CommandStatus
    at_s: float
    sent_limit: float | None = None  # what went on the wire, in sent_unit
    sent_unit: RateUnitLiteral | None = None
    stack_level: int | None = None
    detail: str = ""
