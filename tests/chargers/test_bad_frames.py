"""Frames a broken charger might send: each answered with the version's CALLERROR, logged, and
without disturbing the other chargers."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from charger_rig import rig, site_config
from websockets.asyncio.client import ClientConnection, connect

from evdlm.core.types import ChargingCommand, CommandStatus


async def answer_to(ws: ClientConnection, frame: str, unique_id: str) -> list:
    """Send ``frame`` and return the CALLRESULT / CALLERROR for ``unique_id``, skipping the
    central system's own calls (it configures the charger meanwhile)."""
    await ws.send(frame)
    async with asyncio.timeout(3):
        while True:
            message = json.loads(await ws.recv())
            if message[0] in (3, 4) and message[1] == unique_id:
                return message


CASES_16 = [
    ("not json{", "-1", "FormationViolation"),
    ('{"an": "object"}', "-1", "ProtocolError"),
    ('[7, "t1"]', "t1", "ProtocolError"),
    ('[2, "a1", "FooBar", {}]', "a1", "NotSupported"),
    ('[2, "a2", "DiagnosticsStatusNotification", {"status": "Idle"}]', "a2", "NotImplemented"),
    (
        '[2, "a3", "BootNotification", {"chargePointVendor": 5, "chargePointModel": "x"}]',
        "a3",
        "TypeConstraintViolation",
    ),
    ('[2, "a4", "BootNotification", {"chargePointModel": "x"}]', "a4", "ProtocolError"),  # 1.6: payload incomplete
    (
        '[2, "a5", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "x", "bogus": 1}]',
        "a5",
        "FormationViolation",
    ),
]
CASES_201 = [
    ("not json{", "-1", "RpcFrameworkError"),
    ('[5, "t2"]', "t2", "MessageTypeNotSupported"),
    ('[2, "b1", "FooBar", {}]', "b1", "NotSupported"),
    (
        '[2, "b2", "BootNotification", {"reason": "PowerUp", "chargingStation": {"model": 5, "vendorName": "v"}}]',
        "b2",
        "TypeConstraintViolation",
    ),
    ('[2, "b3", "Heartbeat", {"bogus": 1}]', "b3", "FormatViolation"),
]


@pytest.mark.parametrize(("version", "cases"), [("1.6", CASES_16), ("2.0.1", CASES_201)])
async def test_bad_frames_answered(
    version: str, cases: list[tuple[str, str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    config = site_config([{"id": "RAW", "ocpp_version": version}, {"id": "GOOD", "ocpp_version": "1.6"}])
    caplog.set_level(logging.WARNING, logger="evdlm.chargers")
    async with rig(config, wait=False) as r:
        r.fleet.stations["RAW"].stop()
        await r.fleet.kill_station("RAW")
        await r.fleet.station("GOOD").connected.wait()
        subprotocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
        async with connect(f"ws://127.0.0.1:{r.central.port}/RAW", subprotocols=[subprotocol]) as ws:  # type: ignore[list-item]
            for frame, unique_id, code in cases:
                answer = await answer_to(ws, frame, unique_id)
                assert answer[0] == 4 and answer[2] == code, (frame, answer)
            # The connection survives, and a good frame still works.
            ok = await answer_to(ws, '[2, "ok", "Heartbeat", {}]', "ok")
            assert ok[0] == 3 and "currentTime" in ok[2]
        result = (await r.central.apply([ChargingCommand("GOOD", 1, 10, "A", 3)]))[0]
        assert result.status is CommandStatus.ACCEPTED
    refusals = [
        record for record in caplog.records if record.name.startswith("evdlm.chargers") and "RAW" in record.getMessage()
    ]
    assert len(refusals) >= len(cases)


async def test_external_limits_and_reports_acknowledged() -> None:
    """2.0.1 NotifyChargingLimit / ClearedChargingLimit / ReportChargingProfiles: answered, logged."""
    config = site_config([{"id": "RAW", "ocpp_version": "2.0.1"}])
    async with rig(config, wait=False) as r:
        r.fleet.stations["RAW"].stop()
        await r.fleet.kill_station("RAW")
        profile = {
            "id": 7,
            "stackLevel": 0,
            "chargingProfilePurpose": "ChargingStationExternalConstraints",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [
                {
                    "id": 1,
                    "startSchedule": "2026-11-21T08:00:00Z",
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10}],
                }
            ],
        }
        frames = {
            "n1": ["NotifyChargingLimit", {"chargingLimit": {"chargingLimitSource": "SO"}, "evseId": 1}],
            "n2": ["ClearedChargingLimit", {"chargingLimitSource": "SO", "evseId": 1}],
            "n3": [
                "ReportChargingProfiles",
                {"requestId": 1, "chargingLimitSource": "SO", "evseId": 1, "chargingProfile": [profile]},
            ],
        }
        async with connect(f"ws://127.0.0.1:{r.central.port}/RAW", subprotocols=["ocpp2.0.1"]) as ws:  # type: ignore[list-item]
            for unique_id, (action, payload) in frames.items():
                answer = await answer_to(ws, json.dumps([2, unique_id, action, payload]), unique_id)
                assert answer == [3, unique_id, {}], (action, answer)
