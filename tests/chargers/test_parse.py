"""Pure decoding and encoding, on captured frames (camelCase as on the wire)."""

from __future__ import annotations

import json

import pytest
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.exceptions import FormatViolationError
from ocpp.messages import Call, _validate_payload

from evdlm.chargers.ocpp.parse import (
    iso_utc,
    parse_charging_needs,
    parse_configuration_16,
    parse_iso_s,
    parse_meter_values,
    parse_variables_201,
    profile_payload_16,
    profile_payload_201,
)
from evdlm.chargers.planning import failsafe_profile, lease_profile

# A 1.6 MeterValues as an Alfen-style charger sends it: strings, kW power, per-phase current.
METER_VALUES_16 = """[2,"42","MeterValues",{"connectorId":1,"transactionId":7,"meterValue":[{
 "timestamp":"2026-11-21T08:00:00Z","sampledValue":[
 {"value":"15.9","measurand":"Current.Import","phase":"L1","unit":"A"},
 {"value":"16.1","measurand":"Current.Import","phase":"L2","unit":"A"},
 {"value":"0.2","measurand":"Current.Import","phase":"L3","unit":"A"},
 {"value":"16","measurand":"Current.Offered","unit":"A"},
 {"value":"7.4","measurand":"Power.Active.Import","unit":"kW"},
 {"value":"12.5","unit":"kWh"},
 {"value":"55","measurand":"SoC","unit":"Percent"}]}]}]"""

# 2.0.1 TransactionEvent meter values: numbers, unitOfMeasure with multiplier, power per phase.
METER_VALUES_201 = """[{"timestamp":"2026-11-21T08:00:05.000Z","sampledValue":[
 {"value":10.0,"measurand":"Current.Import","phase":"L1"},
 {"value":2300,"measurand":"Power.Active.Import","phase":"L1-N","unitOfMeasure":{"unit":"W"}},
 {"value":2.3,"measurand":"Power.Active.Import","phase":"L2-N","unitOfMeasure":{"unit":"kW"}},
 {"value":123,"measurand":"Energy.Active.Import.Register","unitOfMeasure":{"unit":"Wh","multiplier":2}}]}]"""


def _payload(raw: str) -> dict:
    return camel_to_snake_case(json.loads(raw)[3])


def test_meter_values_16() -> None:
    sample = parse_meter_values(_payload(METER_VALUES_16)["meter_value"], "1.6")
    assert sample.phase_current_a == (15.9, 16.1, 0.2)
    assert sample.offered_current_a == 16.0
    assert sample.power_w == pytest.approx(7400.0)
    assert sample.energy_wh == pytest.approx(12500.0)  # measurand defaults to the energy register
    assert sample.soc_pct == 55.0
    assert sample.taken_at_s == parse_iso_s("2026-11-21T08:00:00Z")


def test_meter_values_201_multiplier_and_phase_power() -> None:
    sample = parse_meter_values(camel_to_snake_case(json.loads(METER_VALUES_201)), "2.0.1")
    assert sample.phase_current_a == (10.0, None, None)
    assert sample.power_w == pytest.approx(4600.0)  # per-phase powers add up without a total
    assert sample.energy_wh == pytest.approx(12300.0)
    assert sample.offered_current_a is None and sample.soc_pct is None  # not available, not zero


def test_unparseable_values_are_not_available() -> None:
    sample = parse_meter_values(
        [{"timestamp": "garbage", "sampled_value": [{"value": "NaN", "measurand": "Current.Offered"}]}], "1.6"
    )
    assert sample.offered_current_a is None and sample.taken_at_s is None


def test_unphased_current_kept_apart() -> None:
    sample = parse_meter_values([{"sampled_value": [{"value": "12", "measurand": "Current.Import"}]}], "1.6")
    assert sample.phase_current_a is None and sample.unphased_current_a == 12.0


def test_charging_needs() -> None:
    needs = parse_charging_needs(
        camel_to_snake_case(
            {
                "requestedEnergyTransfer": "AC_three_phase",
                "departureTime": "2026-11-21T17:00:00Z",
                "acChargingParameters": {
                    "energyAmount": 20000,
                    "evMinCurrent": 6,
                    "evMaxCurrent": 16,
                    "evMaxVoltage": 400,
                },
            }
        )
    )
    assert needs.departure_at_s == parse_iso_s("2026-11-21T17:00:00Z")
    assert needs.energy_needed_wh == 20000 and needs.ev_max_current_a == 16 and needs.soc_pct is None


def test_configuration_keys() -> None:
    config = parse_configuration_16(
        [
            {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "0"},
            {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current"},
            {"key": "ChargingScheduleMaxPeriods", "readonly": True, "value": "x"},
        ]
    )
    assert config.max_stack_level == 0 and config.rate_units == {"A"} and config.max_periods is None
    variables = parse_variables_201(
        [
            {"attribute_status": "Accepted", "variable": {"name": "RateUnit"}, "attribute_value": "A,W"},
            {"attribute_status": "Accepted", "variable": {"name": "ProfileStackLevel"}, "attribute_value": "3"},
            {"attribute_status": "UnknownVariable", "variable": {"name": "PeriodsPerSchedule"}},
        ]
    )
    assert variables.rate_units == {"A", "W"} and variables.max_stack_level == 3 and variables.max_periods is None


def _call(action: str, payload: dict) -> Call:
    return Call("1", action, snake_to_camel_case(payload))


def test_profile_payloads_pass_the_schemas() -> None:
    now_s = 1_800_000_000.0
    lease = lease_profile(2, 1, "A", 16.0, now_s, 60)
    payload = {"connector_id": 2, "cs_charging_profiles": profile_payload_16(lease)}
    _validate_payload(_call("SetChargingProfile", payload), "1.6")
    profile = payload["cs_charging_profiles"]
    assert profile["valid_to"] == iso_utc(now_s + 60)
    assert profile["charging_schedule"]["start_schedule"] < iso_utc(now_s)  # slightly in the past
    assert profile["charging_schedule"]["duration"] >= 60
    failsafe = failsafe_profile("W", 4140.0, now_s)
    _validate_payload(
        _call("SetChargingProfile", {"connector_id": 0, "cs_charging_profiles": profile_payload_16(failsafe)}), "1.6"
    )
    assert (
        "valid_to" not in profile_payload_16(failsafe)
        and "duration" not in profile_payload_16(failsafe)["charging_schedule"]
    )
    _validate_payload(
        _call("SetChargingProfile", {"evse_id": 2, "charging_profile": profile_payload_201(lease)}), "2.0.1"
    )


def test_schema_rejects_two_decimals() -> None:
    """Why the link rounds: the 1.6 schema allows one decimal (multipleOf 0.1)."""
    lease = lease_profile(1, 1, "A", 16.25, 1_800_000_000.0, 60)
    with pytest.raises(FormatViolationError):
        _validate_payload(
            _call("SetChargingProfile", {"connector_id": 1, "cs_charging_profiles": profile_payload_16(lease)}), "1.6"
        )
