"""Pure parts of the last rungs: profile purposes on the wire, the retry backoff, and the
simulated station's availability and stop rules."""

from __future__ import annotations

from typing import Any

import pytest
from ocpp.charge_point import snake_to_camel_case
from ocpp.messages import Call, _validate_payload

from evdlm.chargers.ocpp.parse import profile_payload_16, profile_payload_201
from evdlm.chargers.planning import ProfileSpec, dynamic_profile_id, lease_profile, retry_delay_s
from evdlm.config.models import Charger
from evdlm.sim.composite import InstalledProfile, SchedulePeriod
from evdlm.sim.ev import Car
from evdlm.sim.station import Misbehaviour, StationModel

T0 = 1_800_000_000.0


def _validate(action: str, payload: dict[str, Any], version: str) -> None:
    _validate_payload(Call("1", action, snake_to_camel_case(payload)), version)


def test_tx_profile_payloads_pass_the_schemas() -> None:
    tx_16 = lease_profile(2, 0, "A", 16.0, T0, 60, "TxProfile", "17")
    profile_16 = profile_payload_16(tx_16)
    _validate("SetChargingProfile", {"connector_id": 2, "cs_charging_profiles": profile_16}, "1.6")
    assert profile_16["charging_profile_purpose"] == "TxProfile" and profile_16["transaction_id"] == 17
    tx_201 = lease_profile(2, 0, "W", 11040.0, T0, 60, "TxProfile", "CP-2-1")
    profile_201 = profile_payload_201(tx_201)
    _validate("SetChargingProfile", {"evse_id": 2, "charging_profile": profile_201}, "2.0.1")
    assert profile_201["charging_profile_purpose"] == "TxProfile" and profile_201["transaction_id"] == "CP-2-1"
    # Same id as the EVSE's TxDefaultProfile: switching purposes replaces instead of piling up.
    assert tx_16.profile_id == dynamic_profile_id(2)


def test_station_max_payloads_go_on_evse_zero() -> None:
    spec = lease_profile(1, 1, "A", 10.0, T0, 60, "StationMax", "ignored")
    assert (spec.evse_id, spec.profile_id, spec.transaction_id) == (0, dynamic_profile_id(0), None)
    profile_16 = profile_payload_16(spec)
    _validate("SetChargingProfile", {"connector_id": 0, "cs_charging_profiles": profile_16}, "1.6")
    assert profile_16["charging_profile_purpose"] == "ChargePointMaxProfile"
    profile_201 = profile_payload_201(spec)
    _validate("SetChargingProfile", {"evse_id": 0, "charging_profile": profile_201}, "2.0.1")
    assert profile_201["charging_profile_purpose"] == "ChargingStationMaxProfile"


def test_profiles_every_charger_must_reject_are_not_built() -> None:
    with pytest.raises(ValueError):
        lease_profile(1, 0, "A", 10.0, T0, 60, "TxProfile", None)
    with pytest.raises(ValueError):
        ProfileSpec(100, 1, 0, "A", 10.0, T0, None, None, purpose="StationMax")
    with pytest.raises(ValueError):  # 1.6 transaction ids are integers
        profile_payload_16(lease_profile(1, 0, "A", 10.0, T0, 60, "TxProfile", "CP-1-1"))
    with pytest.raises(ValueError):  # 2.0.1 identifierString is at most 36 characters
        profile_payload_201(lease_profile(1, 0, "A", 10.0, T0, 60, "TxProfile", "x" * 37))


def test_retry_backoff_doubles_to_its_cap() -> None:
    delays = [retry_delay_s(refusals, 30.0, 900.0) for refusals in range(1, 9)]
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 900.0]
    assert retry_delay_s(10_000, 30.0, 900.0) == 900.0


def _profile(purpose: str, connector: int, transaction_id: str | None = None) -> InstalledProfile:
    return InstalledProfile(
        profile_id=100 + connector,
        connector_id=connector,
        stack_level=0,
        purpose=purpose,
        kind="Absolute",
        unit="A",
        periods=(SchedulePeriod(0.0, 10.0),),
        start_s=T0,
        transaction_id=transaction_id,
    )


def test_station_accepts_only_some_purposes_and_the_right_transaction() -> None:
    charger = Charger(id="CP", ocpp_version="2.0.1", circuit="main")
    model = StationModel(charger, 230.0, Misbehaviour(accepted_purposes=frozenset({"TxProfile", "StationMax"})))
    model.plug_in(1, Car(), "T1", T0)
    assert model.set_profile(_profile("TxDefaultProfile", 1)) == "Rejected"
    assert model.set_profile(_profile("TxProfile", 1, "T2")) == "Rejected"  # another transaction
    assert model.set_profile(_profile("TxProfile", 1, "T1")) == "Accepted"
    assert model.set_profile(_profile("ChargingStationMaxProfile", 0)) == "Accepted"


def test_station_availability_and_remote_stop() -> None:
    charger = Charger(id="CP", ocpp_version="1.6", circuit="main", evses=2, max_current_a=16)
    model = StationModel(charger, 230.0)
    model.plug_in(1, Car(), "7", T0)
    # A running transaction is not interrupted: Inoperative once it ends.
    assert model.set_availability(1, operative=False) == ("Scheduled", [])
    assert model.connectors[1].operative
    assert model.stop_transaction(1) == "7"
    assert not model.connectors[1].operative and model.connectors[1].waiting
    assert model.offered_current_a(1, T0 + 1) == 0.0  # plugged in, no transaction: no energy
    model.plug_in(2, Car(), "8", T0)
    assert model.set_availability(0, operative=False) == ("Scheduled", [])  # connector 0: all of them
    model.unplug(2)
    assert not model.connectors[2].operative
    model.plug_in(2, Car(), "9", T0)  # waits: no transaction on an Inoperative connector
    assert model.connectors[2].transaction_id is None and model.connectors[2].waiting
    status, startable = model.set_availability(0, operative=True)
    assert (status, startable) == ("Accepted", [1, 2])  # both cars may start again
    assert model.set_availability(3, operative=True) == ("Rejected", [])
    ignoring = StationModel(charger, 230.0, Misbehaviour(ignore_availability=True))
    assert ignoring.set_availability(1, operative=False) == ("Accepted", [])
    assert ignoring.connectors[1].operative and ignoring.can_start(1)
