"""Pure decisions of the charger link: units, rounding, deadband, leases, compliance.

Everything here is a function of frozen values, so the rules can be tested without a socket.
The OCPP modules turn a :class:`ProfileSpec` into the version's wire payload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from evdlm.core.types import ChargingCommand, RateUnitLiteral

# Protocol-neutral profile purposes; the OCPP modules name them per version ("StationMax" is
# 1.6 ChargePointMaxProfile and 2.0.1 ChargingStationMaxProfile, always on EVSE 0).
ProfilePurpose = Literal["TxDefaultProfile", "TxProfile", "StationMax"]
PROFILE_PURPOSES: tuple[ProfilePurpose, ...] = ("TxDefaultProfile", "TxProfile", "StationMax")

# Profile ids evdlm owns. Fixed per EVSE so that a new limit replaces the old profile by id
# (1.6 §3.13.2, 2.0.1 K01.FR.05) instead of piling up profiles in the charger's flash.
FAILSAFE_PROFILE_ID = 1
DYNAMIC_PROFILE_ID_BASE = 100

# startSchedule lies this far in the past so a charger whose clock runs a little behind
# still finds the schedule active (spec: "startSchedule slightly in the past").
CLOCK_SKEW_ALLOWANCE_S = 5.0

# A charger is following when it stays within this much of its limit: meters and cars are
# not exact, and chargers round offered current to whole amps.
COMPLIANCE_TOLERANCE_A = 1.0
COMPLIANCE_TOLERANCE_FRACTION = 0.05


def dynamic_profile_id(evse_id: int) -> int:
    return DYNAMIC_PROFILE_ID_BASE + evse_id


@dataclass(frozen=True)
class LinkSettings:
    """The config values the link needs, copied out of SiteConfig once."""

    nominal_voltage_v: float
    lease_duration_s: float
    lease_refresh_s: float
    deadband_a: float
    failsafe_current_a: float
    non_compliance_grace_s: float
    meter_sample_interval_s: int


@dataclass(frozen=True)
class ChargerCapabilities:
    """What a charger accepts, from its configuration keys / device model and from experience."""

    rate_units: frozenset[RateUnitLiteral]  # units it accepts; learned again on a rejection
    unit_fixed: bool  # the site config pins the unit: never try the other one
    reported_max_stack_level: int | None  # ChargeProfileMaxStackLevel / ProfileStackLevel
    max_periods: int | None  # ChargingScheduleMaxPeriods / PeriodsPerSchedule
    dynamic_stack_level: int  # where dynamic limits go (above the fail-safe where possible)
    phases: int  # phases the charger can supply (1 for ac_1phase, else 3)
    dc: bool  # DC charger: limits in W are natural, A means DC-side current
    min_current_a: float
    max_current_a: float
    min_power_w: float
    max_power_w: float | None
    # Learned from refusals: the purpose that works when TxDefaultProfile on the EVSE does not.
    dynamic_purpose: ProfilePurpose = "TxDefaultProfile"

    @property
    def failsafe_stack_level(self) -> int:
        return 0

    @property
    def single_level(self) -> bool:
        """Dynamic and fail-safe profiles share level 0 (chargers that accept only level 0)."""
        return self.dynamic_stack_level == self.failsafe_stack_level

    def unit_for(self, wanted: RateUnitLiteral) -> RateUnitLiteral:
        if wanted in self.rate_units or not self.rate_units:
            return wanted
        return "W" if wanted == "A" else "A"


def dynamic_level_for(reported_max_stack_level: int | None, override: int | None) -> int:
    """Stack level for dynamic limits: 1 (just above the fail-safe at 0) when the charger allows it."""
    ceiling = override if override is not None else reported_max_stack_level
    if ceiling is None:
        return 1
    return 1 if ceiling >= 1 else 0


def parse_rate_units(value: str | None) -> frozenset[RateUnitLiteral]:
    """``ChargingScheduleAllowedChargingRateUnit`` ("Current,Power") or ``RateUnit`` ("A,W")."""
    if value is None:
        return frozenset()
    units: set[RateUnitLiteral] = set()
    for part in value.replace(" ", "").split(","):
        if part in ("Current", "A"):
            units.add("A")
        elif part in ("Power", "W"):
            units.add("W")
    return frozenset(units)


def amps_to_watts(current_a: float, voltage_v: float, phases: int) -> float:
    return current_a * voltage_v * phases


def watts_to_amps(power_w: float, voltage_v: float, phases: int) -> float:
    return power_w / (voltage_v * phases)


def wire_limit(command: ChargingCommand, unit: RateUnitLiteral, caps: ChargerCapabilities, voltage_v: float) -> float:
    """The value to send, in ``unit``: converted, clamped to the charger, 0 or ≥ minimum, rounded down.

    Whole amps for AC (chargers quantise offered current; rounding down never overshoots);
    watts are whole too. Both satisfy the 1.6 schema's ``multipleOf 0.1``.
    """
    phases = max(1, min(command.phases, caps.phases))
    if command.limit <= 0:
        return 0.0
    if unit == "A":
        current_a = command.limit if command.unit == "A" else watts_to_amps(command.limit, voltage_v, phases)
        current_a = min(current_a, caps.max_current_a)
        current_a = math.floor(current_a + 1e-9) if not caps.dc else math.floor(current_a * 10 + 1e-9) / 10
        # IEC 61851: below the minimum a car pauses or the charger rejects; pause explicitly.
        return float(current_a) if current_a >= caps.min_current_a else 0.0
    power_w = command.limit if command.unit == "W" else amps_to_watts(command.limit, voltage_v, phases)
    if caps.max_power_w is not None:
        power_w = min(power_w, caps.max_power_w)
    elif not caps.dc:
        power_w = min(power_w, amps_to_watts(caps.max_current_a, voltage_v, phases))
    power_w = float(math.floor(power_w + 1e-9))
    floor_w = caps.min_power_w if caps.dc else amps_to_watts(caps.min_current_a, voltage_v, phases)
    return power_w if power_w >= floor_w else 0.0


def failsafe_limit(unit: RateUnitLiteral, caps: ChargerCapabilities, settings: LinkSettings) -> float:
    """The boot-time TxDefaultProfile limit; in W, sized for every phase the charger can load."""
    if unit == "A":
        return float(math.floor(settings.failsafe_current_a * 10 + 1e-9) / 10)
    return float(math.floor(amps_to_watts(settings.failsafe_current_a, settings.nominal_voltage_v, caps.phases)))


@dataclass(frozen=True)
class Lease:
    """A dynamic limit the charger accepted, and until when it holds."""

    limit: float
    unit: RateUnitLiteral
    stack_level: int
    sent_at_s: float
    valid_to_s: float
    phases: int
    purpose: ProfilePurpose = "TxDefaultProfile"
    transaction_id: str | None = None  # TxProfile only: the charger deletes it when this transaction ends
    profile_id: int | None = None  # None: dynamic_profile_id of the EVSE

    def valid(self, now_s: float) -> bool:
        return now_s < self.valid_to_s

    def limit_a(self, voltage_v: float) -> float:
        return self.limit if self.unit == "A" else watts_to_amps(self.limit, voltage_v, self.phases)


def within_deadband(
    lease: Lease | None,
    limit: float,
    unit: RateUnitLiteral,
    now_s: float,
    settings: LinkSettings,
    phases: int,
) -> bool:
    """True when nothing needs sending: same unit, small change, and the lease is not due for refresh.

    Pausing and resuming always go out: the deadband is about flash wear on small adjustments,
    never about whether a car may draw at all.
    """
    if lease is None or lease.unit != unit or not lease.valid(now_s):
        return False
    if now_s - lease.sent_at_s >= settings.lease_refresh_s:
        return False
    if (limit == 0) != (lease.limit == 0):
        return False
    band = settings.deadband_a
    if unit == "W":
        band = amps_to_watts(settings.deadband_a, settings.nominal_voltage_v, phases)
    return abs(limit - lease.limit) < band or limit == lease.limit


@dataclass(frozen=True)
class ProfileSpec:
    """A charging profile to install, protocol neutral (one period, Absolute).

    ``purpose`` is TxDefaultProfile unless a charger refused it: TxProfile needs
    ``transaction_id`` (and an EVSE > 0); StationMax goes on EVSE 0.
    """

    profile_id: int
    evse_id: int  # 0 = the whole charge point / station
    stack_level: int
    unit: RateUnitLiteral
    limit: float
    start_s: float
    duration_s: int | None  # None: the period runs on indefinitely
    valid_to_s: float | None
    purpose: ProfilePurpose = "TxDefaultProfile"
    transaction_id: str | None = None

    def __post_init__(self) -> None:
        # Both versions' schemas and K01 rules: refuse to build what every charger must reject.
        if self.purpose == "TxProfile" and (self.transaction_id is None or self.evse_id == 0):
            raise ValueError("a TxProfile needs a transaction id and an EVSE > 0")
        if self.purpose == "StationMax" and self.evse_id != 0:
            raise ValueError("a station maximum profile goes on EVSE 0")


def lease_profile(
    evse_id: int,
    stack_level: int,
    unit: RateUnitLiteral,
    limit: float,
    now_s: float,
    lease_duration_s: float,
    purpose: ProfilePurpose = "TxDefaultProfile",
    transaction_id: str | None = None,
) -> ProfileSpec:
    """A dynamic limit that ends by itself: ``validTo`` and ``duration`` both bound it, because
    some chargers honour only one of the two.

    ``evse_id`` is the EVSE the limit is for; a StationMax lease goes on EVSE 0 with its own id
    (it caps the whole station, which only stands in for the EVSE on a single-EVSE station).
    """
    start_s = now_s - CLOCK_SKEW_ALLOWANCE_S
    target_evse = 0 if purpose == "StationMax" else evse_id
    return ProfileSpec(
        profile_id=dynamic_profile_id(target_evse),
        evse_id=target_evse,
        stack_level=stack_level,
        unit=unit,
        limit=limit,
        start_s=start_s,
        duration_s=math.ceil(lease_duration_s + CLOCK_SKEW_ALLOWANCE_S),
        valid_to_s=now_s + lease_duration_s,
        purpose=purpose,
        transaction_id=transaction_id if purpose == "TxProfile" else None,
    )


def failsafe_profile(unit: RateUnitLiteral, limit: float, now_s: float) -> ProfileSpec:
    """Lowest level, whole charge point, no end: what holds when evdlm is gone (spec "controller goes away")."""
    return ProfileSpec(
        profile_id=FAILSAFE_PROFILE_ID,
        evse_id=0,
        stack_level=0,
        unit=unit,
        limit=limit,
        start_s=now_s - CLOCK_SKEW_ALLOWANCE_S,
        duration_s=None,
        valid_to_s=None,
    )


def retry_delay_s(failures: int, first_s: float, cap_s: float) -> float:
    """Capped exponential backoff: ``first_s`` after the first refusal, doubling, at most ``cap_s``.

    Parameters
    ----------
    failures : int
        Refusals so far in this episode, counting the one just seen (≥ 1).
    first_s, cap_s : float
        First delay and ceiling, in seconds.
    """
    exponent = min(max(failures, 1) - 1, 32)  # 2**32 × any sane first delay is past the cap
    return float(min(first_s * 2.0**exponent, cap_s))


@dataclass(frozen=True)
class ComplianceState:
    compliant: bool
    over_since_s: float | None  # first sample above the limit in the current episode


def assess_compliance(
    previous: ComplianceState,
    limit_a: float | None,
    limit_since_s: float,
    now_s: float,
    grace_s: float,
    offered_a: float | None,
    max_phase_current_a: float | None,
) -> ComplianceState:
    """Closed-loop check of one EVSE against the limit it accepted (A per phase).

    Over the limit for longer than the grace (counted from when the limit took effect, since a
    cut takes the charger and the car 5–60 s) flags the EVSE; back within the limit clears it.
    """
    if limit_a is None:
        return ComplianceState(compliant=True, over_since_s=None)
    tolerance_a = COMPLIANCE_TOLERANCE_A + COMPLIANCE_TOLERANCE_FRACTION * limit_a
    observed = [value for value in (offered_a, max_phase_current_a) if value is not None]
    if not observed:
        return previous
    if max(observed) <= limit_a + tolerance_a:
        return ComplianceState(compliant=True, over_since_s=None)
    over_since_s = previous.over_since_s if previous.over_since_s is not None else now_s
    started_s = max(over_since_s, limit_since_s)
    if now_s - started_s >= grace_s:
        return ComplianceState(compliant=False, over_since_s=over_since_s)
    return ComplianceState(compliant=previous.compliant, over_since_s=over_since_s)
