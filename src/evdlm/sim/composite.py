"""How a charger combines its installed charging profiles into one limit (1.6 §3.13, 2.0.1 K08).

Within a purpose the highest valid stack level wins (a connector's own profile before one on
connector 0 at the same level); a running transaction's TxProfile replaces TxDefaultProfile;
the result is the minimum with the charge point maximum. Pure functions over frozen values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evdlm.chargers.ocpp.parse import parse_iso_s

SECONDS_PER_DAY = 86_400.0
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY


@dataclass(frozen=True)
class SchedulePeriod:
    start_period_s: float
    limit: float
    number_phases: int | None = None


@dataclass(frozen=True)
class InstalledProfile:
    profile_id: int
    connector_id: int  # 0 = the whole charge point
    stack_level: int
    purpose: str  # ChargePointMaxProfile / ChargingStationMaxProfile, TxDefaultProfile, TxProfile
    kind: str  # Absolute, Recurring, Relative
    unit: str  # A or W
    periods: tuple[SchedulePeriod, ...]
    start_s: float | None = None
    duration_s: float | None = None
    valid_from_s: float | None = None
    valid_to_s: float | None = None
    transaction_id: str | None = None
    recurrency_kind: str | None = None

    @property
    def station_max(self) -> bool:
        return self.purpose in ("ChargePointMaxProfile", "ChargingStationMaxProfile")


def _periods(raw: Sequence[Mapping[str, Any]]) -> tuple[SchedulePeriod, ...]:
    return tuple(
        SchedulePeriod(float(period["start_period"]), float(period["limit"]), period.get("number_phases"))
        for period in raw
    )


def _installed(
    profile: Mapping[str, Any], schedule: Mapping[str, Any], profile_id: int, connector_id: int
) -> InstalledProfile:
    transaction_id = profile.get("transaction_id")
    return InstalledProfile(
        profile_id=profile_id,
        connector_id=connector_id,
        stack_level=int(profile["stack_level"]),
        purpose=str(profile["charging_profile_purpose"]),
        kind=str(profile["charging_profile_kind"]),
        unit=str(schedule["charging_rate_unit"]),
        periods=_periods(schedule["charging_schedule_period"]),
        start_s=parse_iso_s(schedule.get("start_schedule")),
        duration_s=schedule.get("duration"),
        valid_from_s=parse_iso_s(profile.get("valid_from")),
        valid_to_s=parse_iso_s(profile.get("valid_to")),
        transaction_id=str(transaction_id) if transaction_id is not None else None,
        recurrency_kind=profile.get("recurrency_kind"),
    )


def parse_profile_16(connector_id: int, profile: Mapping[str, Any]) -> InstalledProfile:
    """``csChargingProfiles`` as a 1.6 handler receives it (snake_case)."""
    return _installed(profile, profile["charging_schedule"], int(profile["charging_profile_id"]), connector_id)


def parse_profile_201(evse_id: int, profile: Mapping[str, Any]) -> InstalledProfile:
    """``chargingProfile`` of a 2.0.1 SetChargingProfileRequest; the first schedule is used."""
    return _installed(profile, profile["charging_schedule"][0], int(profile["id"]), evse_id)


def profile_limit_at(profile: InstalledProfile, now_s: float, transaction_start_s: float | None) -> float | None:
    """The profile's limit at ``now_s`` in its own unit; None when it does not apply."""
    if profile.valid_from_s is not None and now_s < profile.valid_from_s:
        return None
    if profile.valid_to_s is not None and now_s >= profile.valid_to_s:
        return None
    if profile.kind == "Relative":
        start_s = transaction_start_s
    elif profile.kind == "Recurring" and profile.start_s is not None:
        period_s = SECONDS_PER_WEEK if profile.recurrency_kind == "Weekly" else SECONDS_PER_DAY
        start_s = profile.start_s + ((now_s - profile.start_s) // period_s) * period_s
    else:
        start_s = profile.start_s
    if start_s is None:
        # Absolute without startSchedule (1.6 allows it): schedule counts from when it applies.
        start_s = profile.valid_from_s if profile.valid_from_s is not None else now_s
    elapsed_s = now_s - start_s
    if elapsed_s < 0 or (profile.duration_s is not None and elapsed_s >= profile.duration_s):
        return None
    limit: float | None = None
    for period in profile.periods:
        if period.start_period_s <= elapsed_s:
            limit = period.limit
    return limit


def composite_limit_a(
    profiles: Iterable[InstalledProfile],
    connector_id: int,
    now_s: float,
    transaction_id: str | None,
    transaction_start_s: float | None,
    voltage_v: float,
    phases: int,
) -> float | None:
    """Effective limit for one connector in A per phase; None = no profile applies (unlimited)."""

    relevant = [profile for profile in profiles if profile.connector_id in (0, connector_id)]
    by_purpose: dict[str, list[InstalledProfile]] = {}
    for profile in relevant:
        if profile.purpose == "TxProfile" and (
            transaction_id is None or profile.transaction_id not in (None, transaction_id)
        ):
            continue
        by_purpose.setdefault("StationMax" if profile.station_max else profile.purpose, []).append(profile)
    limits: list[float] = []
    for purpose in ("StationMax", "TxProfile", "TxDefaultProfile"):
        if (
            purpose == "TxDefaultProfile"
            and "TxProfile" in by_purpose
            and _any_active(by_purpose["TxProfile"], connector_id, now_s, transaction_start_s, voltage_v, phases)
        ):
            continue  # a TxProfile replaces the default for this transaction
        amps = _winner_amps(by_purpose.get(purpose, []), connector_id, now_s, transaction_start_s, voltage_v, phases)
        if amps is not None:
            limits.append(amps)
    return min(limits) if limits else None


def _winner_amps(
    candidates: list[InstalledProfile],
    connector_id: int,
    now_s: float,
    tx_start_s: float | None,
    voltage_v: float,
    phases: int,
) -> float | None:
    best: tuple[int, int] | None = None
    best_amps: float | None = None
    for profile in candidates:
        limit = profile_limit_at(profile, now_s, tx_start_s)
        if limit is None:
            continue
        key = (profile.stack_level, 1 if profile.connector_id == connector_id else 0)
        if best is None or key > best:
            best = key
            best_amps = limit if profile.unit == "A" else limit / (voltage_v * phases)
    return best_amps


def _any_active(
    candidates: list[InstalledProfile],
    connector_id: int,
    now_s: float,
    tx_start_s: float | None,
    voltage_v: float,
    phases: int,
) -> bool:
    return _winner_amps(candidates, connector_id, now_s, tx_start_s, voltage_v, phases) is not None
