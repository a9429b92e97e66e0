"""Pure decoding of OCPP payloads (as the ``ocpp`` package hands them to handlers: snake_case
keys) into protocol-neutral values, and encoding of :class:`ProfileSpec` into wire payloads.

No transport here: these functions are tested on captured messages.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any, Literal

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
    # Values left out because they were not finite numbers ("NaN", "inf", 1e308 kW), each with why.
    dropped: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """No value at all (the time alone says nothing about the EVSE)."""
        return all(
            value is None
            for value in (
                self.phase_current_a,
                self.unphased_current_a,
                self.offered_current_a,
                self.power_w,
                self.energy_wh,
                self.soc_pct,
            )
        )


_SCALE_16 = {"W": 1.0, "kW": 1000.0, "Wh": 1.0, "kWh": 1000.0, "A": 1.0, "Percent": 1.0}


# How much of an offending value a reason quotes (the rest of a long string is noise).
MAX_REASON_VALUE_CHARS = 40


def _float(raw: Any) -> float | None:
    """A number from a 1.6 string or a 2.0.1 number, finite or not; None when it is not one."""
    if isinstance(raw, bool):
        return None
    try:
        return float(raw)
    except (TypeError, ValueError, OverflowError):
        return None


def _value(raw: Any) -> float | None:
    value = _float(raw)
    return value if value is not None and math.isfinite(value) else None


def _scaled(value: float, sampled: Mapping[str, Any], version: str) -> float:
    """``value`` in W, Wh, A or %; inf when the unit or multiplier takes it beyond a double."""
    try:
        if version == "1.6":
            return value * _SCALE_16.get(sampled.get("unit", ""), 1.0)
        unit_of_measure = sampled.get("unit_of_measure") or {}
        value *= 10.0 ** int(unit_of_measure.get("multiplier", 0))
        if unit_of_measure.get("unit") in ("kW", "kWh"):
            value *= 1000.0
    except OverflowError:  # 10.0 ** 400
        return math.inf
    except (TypeError, ValueError):  # a multiplier that is not an integer (the schema says it is)
        return math.nan
    return value


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
    dropped: list[str] = []
    for meter_value in meter_values:
        taken_at_s = parse_iso_s(meter_value.get("timestamp")) or taken_at_s
        for sampled in meter_value.get("sampled_value", []):
            raw = sampled.get("value")
            value = _float(raw)
            if value is None:
                continue  # not a number at all (1.6 SignedData): nothing to say about it
            # Both versions default the measurand to the energy register.
            measurand = sampled.get("measurand", "Energy.Active.Import.Register")
            value = _scaled(value, sampled, version)
            if not math.isfinite(value):
                # 1.6 values are strings, so "NaN" / "Infinity" pass the schema; a finite value
                # times its unit or multiplier can overflow too. Not a reading: left out, and said so.
                where = f"{measurand} {sampled['phase']}" if sampled.get("phase") else measurand
                dropped.append(f"{where}: {str(raw)[:MAX_REASON_VALUE_CHARS]!r} is not a finite number")
                continue
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
        dropped=tuple(dropped),
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


# ---------------------------------------------------------------------------- frames

# OCPP payloads are shallow: the deepest legitimate message (2.0.1 ReportChargingProfilesRequest)
# nests 13 levels inside the frame's own array; customData may add a few. Python's json parser,
# the library's case conversion and schema validation all recurse once per level, so a frame
# nested thousands deep ends in RecursionError (which closed the session with 1011).
MAX_FRAME_DEPTH = 64
# int64 has 19 digits and OCPP integers are int32. Python converts longer digit strings in
# quadratic time and refuses more than 4300 digits with a ValueError json does not translate.
MAX_INTEGER_DIGITS = 20

FrameFault = Literal["unreadable", "too_deep", "non_finite", "out_of_range"]


class FrameRejected(ValueError):
    """A frame refused before any OCPP decoding, with what could be read of its head.

    ``fault``: "unreadable" (not UTF-8 or not JSON), "too_deep", "non_finite" (the NaN /
    Infinity tokens, which RFC 8259 does not allow though Python's json reads them) or
    "out_of_range" (a number no double or int64 holds: 1e999, 10^40).
    """

    def __init__(
        self, fault: FrameFault, reason: str, message_type_id: int | None = None, unique_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.fault: FrameFault = fault
        self.reason = reason
        self.message_type_id = message_type_id
        self.unique_id = unique_id


# A JSON string, or an unterminated one up to the end of the text: with the closing quote
# required, a failed match would be retried from every later quote (quadratic on '"\"\"\"…').
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# '[<type>, "<unique id>"' at the start of a frame too deep to parse (ids are ≤ 36 characters).
_HEAD = re.compile(r'\s*\[\s*(\d{1,3})\s*,\s*("(?:[^"\\]|\\.){0,128}")')


def nesting_depth(text: str) -> int:
    """How deep ``[`` / ``{`` nest in JSON text that has not been parsed; brackets inside
    strings do not count.

    Linear and without recursion: the regex engine removes strings and everything but
    brackets, and the running depth is a C-level accumulate (no Python loop per character).
    Unbalanced text counts its unclosed brackets (the parser would recurse into them too).
    """
    structure = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(0, max(accumulate(map(_DEPTH_STEP.__getitem__, structure)), default=0))


def _head_of(text: str) -> tuple[int | None, str | None]:
    match = _HEAD.match(text)
    if match is None:
        return None, None
    try:
        unique_id = json.loads(match.group(2))
    except ValueError:
        unique_id = None
    return int(match.group(1)), unique_id if isinstance(unique_id, str) else None


def _ids_of(frame: Any) -> tuple[int | None, str | None]:
    if not isinstance(frame, list) or not frame:
        return None, None
    message_type_id = frame[0] if isinstance(frame[0], int) and not isinstance(frame[0], bool) else None
    unique_id = frame[1] if len(frame) >= 2 and isinstance(frame[1], str) else None
    return message_type_id, unique_id


def load_frame(raw: str | bytes, max_depth: int = MAX_FRAME_DEPTH) -> Any:
    """The JSON value of one OCPP-J frame, refusing what Python's json would let through.

    The depth is checked on the raw text before parsing; numbers are checked as they are parsed
    (NaN, Infinity, 1e999, 30-digit integers), so nothing non-finite reaches a handler.

    Raises
    ------
    FrameRejected
        With the message type and unique id when they could be read (to answer a CALL with a
        CALLERROR, or fail the call a CALLRESULT answers).
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameRejected("unreadable", f"not UTF-8 ({exc.reason})") from exc
    else:
        text = raw
    # A frame cannot nest deeper than it has brackets: the usual small frame skips the scan.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth:
        message_type_id, unique_id = _head_of(text)
        raise FrameRejected("too_deep", f"nested deeper than {max_depth} levels", message_type_id, unique_id)
    faults: list[tuple[FrameFault, str]] = []

    def constant(token: str) -> None:
        faults.append(("non_finite", f"{token} is not a JSON number"))
        return None

    def floating(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            faults.append(("out_of_range", f"{token[:MAX_REASON_VALUE_CHARS]} is beyond a double"))
        return value

    def integer(token: str) -> int:
        if len(token.lstrip("-")) > MAX_INTEGER_DIGITS:
            faults.append(("out_of_range", f"an integer of {len(token.lstrip('-'))} digits"))
            return 0
        return int(token)

    try:
        frame = json.loads(text, parse_constant=constant, parse_float=floating, parse_int=integer)
    except ValueError as exc:  # JSONDecodeError is one
        raise FrameRejected("unreadable", f"not valid JSON ({exc})") from exc
    if faults:
        message_type_id, unique_id = _ids_of(frame)
        fault, reason = faults[0]
        raise FrameRejected(fault, reason, message_type_id, unique_id)
    return frame
