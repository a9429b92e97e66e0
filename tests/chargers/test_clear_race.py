"""Issue 13: a stale ClearChargingProfile must never remove a newer limit (OCPP 1.6).

Replays what a third-party 1.6 charge point did over a real websocket: StatusNotification
Available at boot, StartTransaction, the first SetChargingProfile on connector 1 — and then a
ClearChargingProfile 7–21 ms later that dropped the car to the 6 A fail-safe.
"""

from __future__ import annotations

import asyncio
from typing import Any

from charger_rig import site_config, wait_for
from raw_ocpp import TIMESTAMP, central_system, raw_charger

from evdlm.chargers.planning import dynamic_profile_id
from evdlm.core.types import ChargingCommand, CommandStatus

LIMIT_A = 16.0


def _status(connector_id: int, status: str) -> dict[str, Any]:
    return {"connectorId": connector_id, "errorCode": "NoError", "status": status}


def _start(connector_id: int) -> dict[str, Any]:
    return {"connectorId": connector_id, "idTag": "TAG1", "meterStart": 0, "timestamp": TIMESTAMP}


async def test_available_at_boot_does_not_clear_the_first_limit() -> None:
    """The controller's cycle asks for the first limit while the fail-safe is still being
    installed (it waits on the charger's lock); the Available of the boot must not have
    queued a clear that runs after that limit."""
    config = site_config([{"id": "CP", "ocpp_version": "1.6"}])
    failsafe_asked = asyncio.Event()
    release_failsafe = asyncio.Event()

    async def set_profile(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["connectorId"] == 0:
            failsafe_asked.set()
            await release_failsafe.wait()
        return {"status": "Accepted"}

    async with (
        central_system(config) as central,
        raw_charger(central.port, "CP", "1.6", answers={"SetChargingProfile": set_profile}) as cp,
    ):
        await cp.boot()
        for connector_id in (0, 1):
            assert (await cp.call("StatusNotification", _status(connector_id, "Available")))[0] == 3
        started = await cp.call("StartTransaction", _start(1))
        assert started[0] == 3 and started[2]["idTagInfo"]["status"] == "Accepted"
        await asyncio.wait_for(failsafe_asked.wait(), 3)
        apply = asyncio.create_task(central.apply([ChargingCommand("CP", 1, LIMIT_A, "A", 3)]))
        await asyncio.sleep(0.05)  # the command now waits for the configuration to finish
        release_failsafe.set()
        result = (await asyncio.wait_for(apply, 5))[0]
        assert result.status is CommandStatus.ACCEPTED, result
        await asyncio.sleep(0.3)  # the tester saw the clear 7–21 ms after the limit
        assert cp.actions("ClearChargingProfile") == []
        limits = [p for p in cp.actions("SetChargingProfile") if p["connectorId"] == 1]
        assert [p["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] for p in limits] == [
            LIMIT_A
        ]
        state = central.evse_states()[("CP", 1)]
        assert state.charging and state.accepted_limit == LIMIT_A


async def test_clear_of_an_ended_session_is_dropped_once_a_new_one_has_a_limit() -> None:
    """A session ends (Available) while the charger's job queue is busy; before the clear runs
    a new transaction starts and gets its limit: the clear queued for the old session is
    stale and must not reach the charger."""
    # The held TriggerMessage times out (and its late answer is dropped) before the limit goes.
    config = site_config([{"id": "CP", "ocpp_version": "1.6"}], ocpp={"call_timeout_s": 0.5})
    async with central_system(config) as central:
        # First connection: boot, configuration, fail-safe installed.
        async with raw_charger(central.port, "CP", "1.6") as cp:
            await cp.boot()
            await wait_for(lambda: central.ready("CP"), "configured")
        await wait_for(lambda: not central.online("CP"), "disconnected")

        trigger_asked = asyncio.Event()
        release_trigger = asyncio.Event()

        async def trigger(payload: dict[str, Any]) -> dict[str, Any]:
            trigger_asked.set()
            await release_trigger.wait()  # recovery (a job) stays busy until the test says so
            return {"status": "Accepted"}

        # Reconnect without a boot, a car charging: the central system recovers (TriggerMessage).
        async with raw_charger(central.port, "CP", "1.6", answers={"TriggerMessage": trigger}) as cp:
            assert (await cp.call("StatusNotification", _status(1, "Charging")))[0] == 3
            await asyncio.wait_for(trigger_asked.wait(), 3)
            await wait_for(lambda: central.evse_states()[("CP", 1)].charging, "session resumed")
            # The car leaves (its clear is queued behind the recovery) and the next one starts.
            assert (await cp.call("StatusNotification", _status(1, "Available")))[0] == 3
            assert not central.evse_states()[("CP", 1)].charging
            assert (await cp.call("StartTransaction", _start(1)))[0] == 3
            result = (await central.apply([ChargingCommand("CP", 1, LIMIT_A, "A", 3)]))[0]
            assert result.status is CommandStatus.ACCEPTED, result
            release_trigger.set()
            await wait_for(lambda: len(cp.actions("TriggerMessage")) == 2, "recovery done")
            await asyncio.sleep(0.3)
            cleared = [p for p in cp.actions("ClearChargingProfile") if p.get("id") == dynamic_profile_id(1)]
            assert cleared == []
            assert central.evse_states()[("CP", 1)].accepted_limit == LIMIT_A


async def test_session_end_still_clears_its_own_limit() -> None:
    """What the ordering must keep: a StopTransaction with nothing newer clears the session's
    dynamic profile (the next car starts from the fail-safe, not the last car's limit)."""
    config = site_config([{"id": "CP", "ocpp_version": "1.6"}])
    async with central_system(config) as central, raw_charger(central.port, "CP", "1.6") as cp:
        await cp.boot()
        await wait_for(lambda: central.ready("CP"), "configured")
        started = await cp.call("StartTransaction", _start(1))
        result = (await central.apply([ChargingCommand("CP", 1, LIMIT_A, "A", 3)]))[0]
        assert result.status is CommandStatus.ACCEPTED
        stop = {"meterStop": 1000, "timestamp": TIMESTAMP, "transactionId": started[2]["transactionId"]}
        assert (await cp.call("StopTransaction", stop))[0] == 3
        assert (await cp.call("StatusNotification", _status(1, "Available")))[0] == 3
        await wait_for(lambda: central.evse_states()[("CP", 1)].accepted_limit is None, "cleared")
        assert cp.actions("ClearChargingProfile") == [{"id": dynamic_profile_id(1)}]
