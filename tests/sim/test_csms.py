"""The CSMS simulator against the ocpp library's own charge-point side, on real loopback websockets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from evdlm.sim.csms import CsmsSimulator, NotConnected

NOW = "2025-01-01T12:00:00Z"
PROFILE_16 = {
    "charging_profile_id": 7,
    "stack_level": 1,
    "charging_profile_purpose": "TxDefaultProfile",
    "charging_profile_kind": "Absolute",
    "charging_schedule": {
        "charging_rate_unit": "A",
        "start_schedule": NOW,
        "charging_schedule_period": [{"start_period": 0, "limit": 16.0}],
    },
}
PROFILE_201 = {
    "id": 7,
    "stack_level": 1,
    "charging_profile_purpose": "TxDefaultProfile",
    "charging_profile_kind": "Absolute",
    "charging_schedule": [
        {
            "id": 1,
            "charging_rate_unit": "A",
            "start_schedule": NOW,
            "charging_schedule_period": [{"start_period": 0, "limit": 16.0}],
        }
    ],
}


class Cp16(ChargePoint16):  # type: ignore[misc]
    """A 1.6 charge point remembering the profiles it was sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profiles: list[tuple[int, dict[str, Any]]] = []

    @on("SetChargingProfile")
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        self.profiles.append((connector_id, cs_charging_profiles))
        return result16.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **criteria: Any) -> Any:
        self.profiles = [item for item in self.profiles if item[1]["charging_profile_id"] != criteria.get("id")]
        return result16.ClearChargingProfile(status="Accepted")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, connector_id: int, duration: int, charging_rate_unit: str = "A") -> Any:
        return result16.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=NOW,
            charging_schedule={
                "duration": duration,
                "charging_rate_unit": charging_rate_unit,
                "charging_schedule_period": [{"start_period": 0, "limit": 16.0}],
            },
        )


class Cp201(ChargePoint201):  # type: ignore[misc]
    """A 2.0.1 charge point remembering the profiles it was sent and reporting them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profiles: list[tuple[int, dict[str, Any]]] = []

    @on("SetChargingProfile")
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        self.profiles.append((evse_id, charging_profile))
        return result201.SetChargingProfile(status="Accepted")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, duration: int, evse_id: int, charging_rate_unit: str = "A", **_: Any) -> Any:
        return result201.GetCompositeSchedule(
            status="Accepted",
            schedule={
                "evse_id": evse_id,
                "duration": duration,
                "schedule_start": NOW,
                "charging_rate_unit": charging_rate_unit,
                "charging_schedule_period": [{"start_period": 0, "limit": 16.0}],
            },
        )

    @on("GetChargingProfiles")
    def on_get_charging_profiles(self, request_id: int, **_: Any) -> Any:
        return result201.GetChargingProfiles(status="Accepted" if self.profiles else "NoProfiles")

    @after("GetChargingProfiles")
    async def after_get_charging_profiles(self, request_id: int, **_: Any) -> None:
        # One report per profile, the last with tbc false.
        for index, (evse_id, profile) in enumerate(self.profiles):
            await self.call(
                call201.ReportChargingProfiles(
                    request_id=request_id,
                    charging_limit_source="CSO",
                    charging_profile=[profile],
                    evse_id=evse_id,
                    tbc=index < len(self.profiles) - 1,
                ),
                suppress=False,
            )


def _auth_header(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@asynccontextmanager
async def charge_point(
    csms: CsmsSimulator, cp_id: str, version: str, password: str | None = None
) -> AsyncIterator[Any]:
    """A connected charge point of ``version``, its reader running."""
    headers = _auth_header(cp_id, password) if password is not None else {}
    subprotocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    async with connect(
        f"{csms.url}/{cp_id}",
        subprotocols=[subprotocol],
        additional_headers=headers,
        open_timeout=5,  # type: ignore[list-item]
    ) as connection:
        assert connection.subprotocol == subprotocol
        client = (Cp16 if version == "1.6" else Cp201)(cp_id, connection, response_timeout=5)
        reader = asyncio.create_task(client.start())
        try:
            yield client
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def test_session_16_recorded() -> None:
    async with CsmsSimulator(accepted_id_tags={"GOOD"}) as csms, charge_point(csms, "CP16", "1.6") as cp:
        await csms.wait_connected("CP16")
        assert csms.connected("CP16")
        boot = await cp.call(call16.BootNotification(charge_point_model="m", charge_point_vendor="v"))
        assert (boot.status, boot.interval) == ("Accepted", 30)
        await cp.call(call16.Heartbeat())
        await cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
        assert (await cp.call(call16.Authorize(id_tag="GOOD"))).id_tag_info["status"] == "Accepted"
        assert (await cp.call(call16.Authorize(id_tag="BAD"))).id_tag_info["status"] == "Invalid"
        started = await cp.call(call16.StartTransaction(connector_id=1, id_tag="GOOD", meter_start=0, timestamp=NOW))
        assert started.id_tag_info["status"] == "Accepted"
        refused = await cp.call(call16.StartTransaction(connector_id=1, id_tag="BAD", meter_start=0, timestamp=NOW))
        assert refused.id_tag_info["status"] == "Invalid"
        assert refused.transaction_id > started.transaction_id
        sample = [{"timestamp": NOW, "sampled_value": [{"value": "100", "measurand": "Energy.Active.Import.Register"}]}]
        for _ in range(2):
            await cp.call(call16.MeterValues(connector_id=1, transaction_id=started.transaction_id, meter_value=sample))
        stop = await cp.call(
            call16.StopTransaction(meter_stop=100, timestamp=NOW, transaction_id=started.transaction_id, id_tag="GOOD")
        )
        assert stop.id_tag_info["status"] == "Accepted"
        data = await cp.call(call16.DataTransfer(vendor_id="acme"))
        assert data.status == "UnknownVendorId"

        actions = [action for action, _ in csms.received["CP16"]]
        assert actions == [
            "BootNotification",
            "Heartbeat",
            "StatusNotification",
            "Authorize",
            "Authorize",
            "StartTransaction",
            "StartTransaction",
            "MeterValues",
            "MeterValues",
            "StopTransaction",
            "DataTransfer",
        ]
        assert csms.received["CP16"][3] == ("Authorize", {"idTag": "GOOD"})
        assert csms.count("CP16", "MeterValues") == 2
        assert csms.transactions[str(started.transaction_id)] == {
            "charge_point": "CP16",
            "id_tag": "GOOD",
            "started": True,
            "stopped": True,
            "meter_values": 2,
        }
        assert csms.transactions[str(refused.transaction_id)]["id_tag"] == "BAD"
        assert csms.identities["CP16"] is None
        with pytest.raises(NotImplementedError):
            await csms.get_charging_profiles("CP16")


async def test_session_201_recorded() -> None:
    async with CsmsSimulator(accepted_id_tags={"GOOD"}) as csms, charge_point(csms, "CP2", "2.0.1") as cp:
        await csms.wait_connected("CP2")
        boot = await cp.call(
            call201.BootNotification(charging_station={"model": "m", "vendor_name": "v"}, reason="PowerUp")
        )
        assert (boot.status, boot.interval) == ("Accepted", 30)
        await cp.call(call201.Heartbeat())
        await cp.call(call201.StatusNotification(timestamp=NOW, connector_status="Occupied", evse_id=1, connector_id=1))
        good = {"id_token": "GOOD", "type": "ISO14443"}
        bad = {"id_token": "BAD", "type": "ISO14443"}
        assert (await cp.call(call201.Authorize(id_token=good))).id_token_info["status"] == "Accepted"
        assert (await cp.call(call201.Authorize(id_token=bad))).id_token_info["status"] == "Invalid"

        def event(event_type: str, seq_no: int, **extra: Any) -> Any:
            return call201.TransactionEvent(
                event_type=event_type,
                timestamp=NOW,
                trigger_reason="CablePluggedIn" if event_type == "Started" else "MeterValuePeriodic",
                seq_no=seq_no,
                transaction_info={"transaction_id": "T-1"},
                evse={"id": 1, "connector_id": 1},
                **extra,
            )

        started = await cp.call(event("Started", 0, id_token=good))
        assert started.id_token_info["status"] == "Accepted"
        sample = [{"timestamp": NOW, "sampled_value": [{"value": 100.0, "measurand": "Energy.Active.Import.Register"}]}]
        updated = await cp.call(event("Updated", 1, meter_value=sample))
        assert updated.id_token_info is None  # no idToken, no idTokenInfo
        await cp.call(call201.MeterValues(evse_id=1, meter_value=sample))
        needs = await cp.call(
            call201.NotifyEVChargingNeeds(charging_needs={"requested_energy_transfer": "AC_three_phase"}, evse_id=1)
        )
        assert needs.status == "Accepted"
        limit = {"charging_limit_source": "EMS"}
        await cp.call(call201.NotifyChargingLimit(charging_limit=limit, evse_id=1))
        await cp.call(call201.ClearedChargingLimit(charging_limit_source="EMS", evse_id=1))
        await cp.call(event("Ended", 2, meter_value=sample))
        assert (await cp.call(call201.DataTransfer(vendor_id="acme"))).status == "UnknownVendorId"

        assert csms.transactions["T-1"] == {
            "charge_point": "CP2",
            "id_tag": "GOOD",
            "started": True,
            "stopped": True,
            "meter_values": 2,
        }
        assert csms.count("CP2", "TransactionEvent") == 3
        assert csms.count("CP2", "Authorize") == 2
        assert ("NotifyChargingLimit", {"chargingLimit": {"chargingLimitSource": "EMS"}, "evseId": 1}) in csms.received[
            "CP2"
        ]
        assert csms.count("CP2", "ClearedChargingLimit") == 1
        assert csms.received["CP2"][0][0] == "BootNotification"


async def test_smart_charging_calls_16() -> None:
    async with CsmsSimulator() as csms, charge_point(csms, "CP16", "1.6") as cp:
        await csms.wait_connected("CP16")
        assert await csms.set_charging_profile("CP16", 1, PROFILE_16) == {"status": "Accepted"}
        assert cp.profiles == [(1, PROFILE_16)]
        composite = await csms.get_composite_schedule("CP16", 1, 3600, "A")
        assert composite["status"] == "Accepted"
        assert composite["charging_schedule"]["duration"] == 3600
        assert await csms.clear_charging_profile("CP16", id=7) == {"status": "Accepted"}
        assert cp.profiles == []


async def test_smart_charging_calls_201() -> None:
    async with CsmsSimulator() as csms, charge_point(csms, "CP2", "2.0.1") as cp:
        await csms.wait_connected("CP2")
        assert await csms.get_charging_profiles("CP2") == []  # NoProfiles
        answer = await csms.set_charging_profile("CP2", 1, PROFILE_201)
        assert answer == {"status": "Accepted"}
        second = dict(PROFILE_201, id=8, stack_level=2)
        await csms.set_charging_profile("CP2", 1, second)
        assert cp.profiles == [(1, PROFILE_201), (1, second)]
        composite = await csms.get_composite_schedule("CP2", 1, 600, "W")
        assert composite["status"] == "Accepted"
        assert composite["schedule"]["charging_rate_unit"] == "W"
        profiles = await csms.get_charging_profiles("CP2", evse_id=1)
        assert [profile["id"] for profile in profiles] == [7, 8]
        assert csms.count("CP2", "ReportChargingProfiles") == 2
        # Any call object: a 2.0.1 action this charge point does not implement is a CALLERROR.
        from ocpp.exceptions import OCPPError

        with pytest.raises(OCPPError):
            await csms.call("CP2", call201.ClearChargingProfile(charging_profile_id=7))
    with pytest.raises(NotConnected):
        await csms.set_charging_profile("CP2", 1, PROFILE_201)


async def _connect_retrying(csms: CsmsSimulator, cp_id: str, timeout_s: float = 5.0) -> Any:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                return await connect(f"{csms.url}/{cp_id}", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
            except OSError:
                await asyncio.sleep(0.05)


async def test_restart_keeps_what_was_received() -> None:
    async with CsmsSimulator() as csms:
        url, port = csms.url, csms.port
        connection = await _connect_retrying(csms, "CP1")
        cp = Cp16("CP1", connection, response_timeout=5)
        reader = asyncio.create_task(cp.start())
        await cp.call(call16.BootNotification(charge_point_model="m", charge_point_vendor="v"))
        started = await cp.call(call16.StartTransaction(connector_id=1, id_tag="T", meter_start=0, timestamp=NOW))

        restart = asyncio.create_task(csms.restart(down_s=0.3))
        with pytest.raises(ConnectionClosed):
            await reader
        assert connection.close_code == 1001
        async with asyncio.timeout(2):
            while csms.connected("CP1"):
                await asyncio.sleep(0.01)
        with pytest.raises(OSError):  # nobody listening while down
            await connect(f"{url}/CP1", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
        connection = await _connect_retrying(csms, "CP1")  # the charge point's reconnect loop
        await restart
        assert (csms.url, csms.port) == (url, port)
        await csms.wait_connected("CP1")
        cp = Cp16("CP1", connection, response_timeout=5)
        reader = asyncio.create_task(cp.start())
        await cp.call(call16.Heartbeat())
        again = await cp.call(call16.StartTransaction(connector_id=1, id_tag="T", meter_start=0, timestamp=NOW))
        assert again.transaction_id > started.transaction_id  # unique over the simulator's life
        await cp.call(
            call16.StopTransaction(meter_stop=5, timestamp=NOW, transaction_id=started.transaction_id, id_tag="T")
        )
        assert [action for action, _ in csms.received["CP1"]] == [
            "BootNotification",
            "StartTransaction",
            "Heartbeat",
            "StartTransaction",
            "StopTransaction",
        ]
        assert csms.transactions[str(started.transaction_id)]["stopped"]
        await connection.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def test_basic_auth() -> None:
    async with CsmsSimulator(basic_auth={"CP1": "secret"}) as csms:
        async with charge_point(csms, "CP1", "2.0.1", password="secret") as cp:
            await cp.call(call201.Heartbeat())
            assert csms.identities["CP1"] == "CP1"
        for headers in (_auth_header("CP1", "wrong"), {}, _auth_header("CP2", "secret")):
            with pytest.raises(InvalidStatus) as refused:
                await connect(
                    f"{csms.url}/CP1",
                    subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                    additional_headers=headers,
                )
            assert refused.value.response.status_code == 401
        assert csms.count("CP1", "Heartbeat") == 1


async def test_subprotocol_picked_per_connection() -> None:
    async with CsmsSimulator() as csms:
        async with connect(
            f"{csms.url}/CPX",
            subprotocols=["ocpp2.0.1", "ocpp1.6"],  # type: ignore[list-item]
            additional_headers=_auth_header("someone", "x"),
        ) as connection:
            assert connection.subprotocol == "ocpp2.0.1"
            await csms.wait_connected("CPX")
            assert csms.identities["CPX"] == "someone"  # no auth configured: recorded, not checked
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{csms.url}/CPX", subprotocols=["ocpp2.1"])  # type: ignore[list-item]
        assert refused.value.response.status_code == 400
