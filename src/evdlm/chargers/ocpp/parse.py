"""Pure decoding of OCPP payloads (as the ``ocpp`` package hands them to handlers: snake_case
keys) into protocol-neutral values, and encoding of :class:`ProfileSpec` into wire payloads.

No transport here: these functions are tested on captured messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from evdlm.chargers.planning import ProfilePurpose, ProfileSpec, parse_rate_units
from evdlm.core.types import RateUnitLiteral

PHASE_INDEX = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}

# Measurands we ask every charger for (spec: MeterValuesSampledData / TxUpdatedMeasurands).
SAMPLED_MEASURANDS = (
    "Current.Import",
    "Current.Offered",
    "Power.Active.Import",
    "Energy.Active.Import.Register",
    "SoC",
)


def iso_utc(epoch_s: float) -> str:
    """OCPP date-time in UTC with milliseconds and a Z suffix."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso_s(value: str | None) -> float | None:
    """Epoch seconds of an OCPP date-time; None when absent or unreadable (not available)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # OCPP requires UTC; a charger that omits the offset almost always means UTC.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class MeterSample:
    """The latest values found in one MeterValues / TransactionEvent payload; None = not reported."""

    taken_at_s: float | None
    phase_current_a: tuple[float | None, float | None, float | None] | None = None
    unphased_current_a: float | None = None  # Current.Import without a phase (worst case: every phase)
    offered_current_a: float | None = None
    power_w: float | None = None
    energy_wh: float | None = None
    soc_pct: float | None = None


_SCALE_16 = {"W": 1.0, "kW": 1000.0, "Wh": 1.0, "kWh": 1000.0, "A": 1.0, "Percent": 1.0}


def _value(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_meter_values(meter_values: Sequence[Mapping[str, Any]], version: str) -> MeterSample:
    """Decode ``meterValue[]`` of 1.6 (string values, ``unit``) or 2.0.1 (numbers, ``unitOfMeasure``).

    Later samples override earlier ones; per-phase power adds up to the total when no total is given.
    """
    taken_at_s: float | None = None
    phases: list[float | None] = [None, None, None]
    unphased: float | None = None
    offered: float | None = None
    power_total: float | None = None
    power_phases: list[float | None] = [None, None, None]
    energy: float | None = None
    soc: float | None = None
    for meter_value in meter_values:
        taken_at_s = parse_iso_s(meter_value.get("timestamp")) or taken_at_s
        for sampled in meter_value.get("sampled_value", []):
            value = _value(sampled.get("value"))
            if value is None:
                continue
            if version == "1.6":
                value *= _SCALE_16.get(sampled.get("unit", ""), 1.0)
            else:
                unit_of_measure = sampled.get("unit_of_measure") or {}
                value *= 10.0 ** int(unit_of_measure.get("multiplier", 0))
                if unit_of_measure.get("unit") in ("kW", "kWh"):
                    value *= 1000.0
            # Both versions default the measurand to the energy register.
            measurand = sampled.get("measurand", "Energy.Active.Import.Register")
            phase = PHASE_INDEX.get(sampled.get("phase", ""))
            if measurand == "Current.Import":
                if phase is None:
                    unphased = value
                else:
                    phases[phase] = value
            elif measurand == "Current.Offered":
                offered = value
            elif measurand == "Power.Active.Import":
                if phase is None:
                    power_total = value
                else:
                    power_phases[phase] = value
            elif measurand == "Energy.Active.Import.Register" and phase is None:
                energy = value
            elif measurand == "SoC":
                soc = value
    if power_total is None and any(value is not None for value in power_phases):
        power_total = sum(value for value in power_phases if value is not None)
    phase_current = (phases[0], phases[1], phases[2]) if any(value is not None for value in phases) else None
    return MeterSample(
        taken_at_s=taken_at_s,
        phase_current_a=phase_current,
        unphased_current_a=unphased,
        offered_current_a=offered,
        power_w=power_total,
        energy_wh=energy,
        soc_pct=soc,
    )


@dataclass(frozen=True)
class ChargingNeeds:
    """NotifyEVChargingNeeds (2.0.1, ISO 15118 cars); None = not given by the car."""

    departure_at_s: float | None
    energy_needed_wh: float | None
    ev_max_current_a: float | None
    soc_pct: float | None


def parse_charging_needs(charging_needs: Mapping[str, Any]) -> ChargingNeeds:
    ac = charging_needs.get("ac_charging_parameters") or {}
    dc = charging_needs.get("dc_charging_parameters") or {}
    return ChargingNeeds(
        departure_at_s=parse_iso_s(charging_needs.get("departure_time")),
        energy_needed_wh=_value(ac.get("energy_amount", dc.get("energy_amount"))),
        ev_max_current_a=_value(ac.get("ev_max_current", dc.get("ev_max_current"))),
        soc_pct=_value(dc.get("state_of_charge")),
    )


@dataclass(frozen=True)
class SmartChargingConfig:
    """What a charger says about smart charging; None = key missing or unreadable."""

    rate_units: frozenset[RateUnitLiteral]
    max_stack_level: int | None
    max_periods: int | None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_configuration_16(configuration_key: Sequence[Mapping[str, Any]] | None) -> SmartChargingConfig:
    """``GetConfiguration.conf`` → smart-charging limits (1.6 §9.4 Smart Charging profile keys)."""
    values = {entry.get("key"): entry.get("value") for entry in configuration_key or []}
    return SmartChargingConfig(
        rate_units=parse_rate_units(values.get("ChargingScheduleAllowedChargingRateUnit")),
        max_stack_level=_int_or_none(values.get("ChargeProfileMaxStackLevel")),
        max_periods=_int_or_none(values.get("ChargingScheduleMaxPeriods")),
    )


def parse_variables_201(get_variable_result: Sequence[Mapping[str, Any]]) -> SmartChargingConfig:
    """``GetVariablesResponse`` for ``SmartChargingCtrlr.*`` → smart-charging limits."""
    values: dict[str, str | None] = {}
    for result in get_variable_result:
        if result.get("attribute_status") != "Accepted":
            continue
        values[result.get("variable", {}).get("name", "")] = result.get("attribute_value")
    return SmartChargingConfig(
        rate_units=parse_rate_units(values.get("RateUnit")),
        max_stack_level=_int_or_none(values.get("ProfileStackLevel")),
        max_periods=_int_or_none(values.get("PeriodsPerSchedule")),
    )


# 2.0.1 identifierString maxLength for transactionId (the hot path skips schema validation).
MAX_TRANSACTION_ID_CHARS_201 = 36

PURPOSES_16: dict[ProfilePurpose, str] = {
    "TxDefaultProfile": "TxDefaultProfile",
    "TxProfile": "TxProfile",
    "StationMax": "ChargePointMaxProfile",
}
PURPOSES_201: dict[ProfilePurpose, str] = {
    "TxDefaultProfile": "TxDefaultProfile",
    "TxProfile": "TxProfile",
    "StationMax": "ChargingStationMaxProfile",
}


def profile_payload_16(spec: ProfileSpec) -> dict[str, Any]:
    """``csChargingProfiles`` of a 1.6 SetChargingProfile (snake_case; the library camelCases it).

    Raises ValueError for a TxProfile whose transaction id is not an integer (1.6 ids are ints).
    """
    schedule: dict[str, Any] = {
        "charging_rate_unit": spec.unit,
        "start_schedule": iso_utc(spec.start_s),
        "charging_schedule_period": [{"start_period": 0, "limit": spec.limit}],
    }
    if spec.duration_s is not None:
        schedule["duration"] = spec.duration_s
    profile: dict[str, Any] = {
        "charging_profile_id": spec.profile_id,
        "stack_level": spec.stack_level,
        "charging_profile_purpose": PURPOSES_16[spec.purpose],
        "charging_profile_kind": "Absolute",
        "valid_from": iso_utc(spec.start_s),
        "charging_schedule": schedule,
    }
    if spec.transaction_id is not None:
        profile["transaction_id"] = int(spec.transaction_id)
    if spec.valid_to_s is not None:
        profile["valid_to"] = iso_utc(spec.valid_to_s)
    return profile


def profile_payload_201(spec: ProfileSpec) -> dict[str, Any]:
    """``chargingProfile`` of a 2.0.1 SetChargingProfileRequest; Absolute always carries
    startSchedule (chargers reject it otherwise).

    Raises ValueError for a TxProfile whose transaction id the schema would refuse.
    """
    schedule: dict[str, Any] = {
        "id": spec.profile_id,
        "charging_rate_unit": spec.unit,
        "start_schedule": iso_utc(spec.start_s),
        "charging_schedule_period": [{"start_period": 0, "limit": spec.limit}],
    }
    if spec.duration_s is not None:
        schedule["duration"] = spec.duration_s
    profile: dict[str, Any] = {
        "id": spec.profile_id,
        "stack_level": spec.stack_level,
        "charging_profile_purpose": PURPOSES_201[spec.purpose],
        "charging_profile_kind": "Absolute",
        "valid_from": iso_utc(spec.start_s),
        "charging_schedule": [schedule],
    }
    if spec.transaction_id is not None:
        if len(spec.transaction_id) > MAX_TRANSACTION_ID_CHARS_201:
            raise ValueError(f"transaction id {spec.transaction_id!r} is longer than the schema allows")
        profile["transaction_id"] = spec.transaction_id
    if spec.valid_to_s is not None:
        profile["valid_to"] = iso_utc(spec.valid_to_s)
    return profile
