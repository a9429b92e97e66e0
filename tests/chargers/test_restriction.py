"""Restriction, the rung below "uncontrollable": the controller stops an EVSE's transaction,
makes it unavailable and refuses new starts, then releases it. Real OCPP over loopback."""

from __future__ import annotations

import logging
import time

import pytest
from charger_rig import Rig, rig, site_config, wait_for
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from evdlm.sim.ev import Car
from evdlm.sim.station import Misbehaviour

FAST_CAR = Car(phases=3, max_current_a=32, dead_time_s=1, ramp_time_constant_s=1)
REASON = "cannot be limited; site over its import limit"
STOP_ACTION = {"1.6": "RemoteStopTransaction", "2.0.1": "RequestStopTransaction"}


def link_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "evdlm.chargers.link"]


def drawn_a(r: Rig, charger_id: str) -> float:
    return max(r.fleet.station(charger_id).drawn_current_a())


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_restrict_stops_blocks_and_release_lets_it_charge(version: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    config = site_config([{"id": "CP", "ocpp_version": version}])
    async with rig(config) as r:
        station = r.fleet.station("CP")
        connector = station.model.connectors[1]
        r.fleet.plug_in("CP", 1, FAST_CAR)
        await wait_for(lambda: r.central.evse_states()[("CP", 1)].charging, "transaction")
        await wait_for(lambda: drawn_a(r, "CP") > 5, "car drawing")
        transaction_id = r.central.evse_states()[("CP", 1)].transaction_id
        caplog.clear()

        started = time.perf_counter()
        for _ in range(10):  # every control cycle, the same wish
            r.central.restrict({("CP", 1): REASON})
        assert time.perf_counter() - started < 0.05  # off the caller's path: nothing awaited
        assert r.central.restricted() == {("CP", 1): REASON}

        await wait_for(lambda: not r.central.evse_states()[("CP", 1)].charging, "transaction stopped")
        await wait_for(lambda: not connector.operative, "connector Inoperative")
        await wait_for(lambda: drawn_a(r, "CP") < 0.1, "car stopped drawing")
        assert connector.car is not None and connector.transaction_id is None  # still plugged in

        # A new car on the restricted connector does not get a transaction.
        r.fleet.unplug("CP", 1)
        r.fleet.plug_in("CP", 1, FAST_CAR)
        await r.clock.sleep(5)
        assert connector.transaction_id is None and drawn_a(r, "CP") < 0.1
        assert not r.central.evse_states()[("CP", 1)].charging

        r.central.restrict({})
        assert r.central.restricted() == {}
        await wait_for(lambda: connector.operative, "connector Operative")
        await wait_for(lambda: r.central.evse_states()[("CP", 1)].charging, "the waiting car starts")
        await wait_for(lambda: drawn_a(r, "CP") > 5, "car drawing again (the fail-safe)")
        for _ in range(5):
            r.central.restrict({})

        assert link_lines(caplog) == [
            f"CP/1 restricted: {REASON}",
            f"CP/1: {STOP_ACTION[version]} {transaction_id} Accepted (restricted: {REASON})",
            f"CP/1: ChangeAvailability Inoperative Accepted (restricted: {REASON})",
            f"CP/1 released (was restricted: {REASON})",
            "CP/1: ChangeAvailability Operative Accepted (released)",
        ]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_start_refused_while_restricted(version: str, caplog: pytest.LogCaptureFixture) -> None:
    """A station that says Accepted to Inoperative and starts anyway: the start is answered
    Blocked, the station ends the transaction, the car draws nothing; after release it may."""
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    config = site_config([{"id": "CP", "ocpp_version": version}])
    async with rig(config, misbehaviour={"CP": Misbehaviour(ignore_availability=True)}) as r:
        station = r.fleet.station("CP")
        r.central.restrict({("CP", 1): REASON})
        await wait_for(lambda: any("Inoperative Accepted" in line for line in link_lines(caplog)), "Inoperative")
        client = station._client
        assert client is not None
        if version == "1.6":
            answer = await client.send(call16.Authorize(id_tag="SIMTAG"))
            assert answer.id_tag_info["status"] == "Blocked"  # the station's only EVSE is restricted
        else:
            answer = await client.send(call201.Authorize(id_token={"id_token": "SIMTAG", "type": "ISO14443"}))
            assert answer.id_token_info["status"] == "Blocked"

        r.fleet.plug_in("CP", 1, FAST_CAR)
        refusal = "StartTransaction" if version == "1.6" else "TransactionEvent Started"
        refused = f"CP/1: {refusal} refused with Blocked (restricted: {REASON})"
        await wait_for(lambda: refused in link_lines(caplog), "start refused")
        await wait_for(lambda: station.model.connectors[1].idle, "station ended it")
        await wait_for(lambda: not r.central.evse_states()[("CP", 1)].charging, "refused transaction ended")
        await r.clock.sleep(12)  # past the grace: the station ended it, so no stop request follows
        assert drawn_a(r, "CP") < 0.1
        lines = link_lines(caplog)
        assert lines.count(refused) == 1
        assert lines.count(f"CP: Authorize refused with Blocked (every EVSE restricted: {REASON})") == 1
        assert not any(STOP_ACTION[version] in line for line in lines)

        r.central.restrict({})
        if version == "1.6":
            answer = await client.send(call16.Authorize(id_tag="SIMTAG"))
            assert answer.id_tag_info["status"] == "Accepted"
        # A new session after the release is accepted.
        r.fleet.unplug("CP", 1)
        r.fleet.plug_in("CP", 1, FAST_CAR)
        await wait_for(lambda: r.central.evse_states()[("CP", 1)].charging, "accepted transaction")
        await wait_for(lambda: drawn_a(r, "CP") > 5, "car drawing")


async def test_stop_not_heeded_is_sent_again_after_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    config = site_config([{"id": "CP", "ocpp_version": "2.0.1"}])
    async with rig(config, misbehaviour={"CP": Misbehaviour(ignore_remote_stop=True)}) as r:
        r.fleet.plug_in("CP", 1, FAST_CAR)
        await wait_for(lambda: r.central.evse_states()[("CP", 1)].charging, "transaction")
        transaction_id = r.central.evse_states()[("CP", 1)].transaction_id
        r.central.restrict({("CP", 1): REASON})
        stop_line = f"CP/1: RequestStopTransaction {transaction_id} Accepted (restricted: {REASON})"
        await wait_for(lambda: link_lines(caplog).count(stop_line) == 2, "stop sent again", timeout_s=3)
        lines = link_lines(caplog)
        assert (
            lines.count(
                f"CP/1: transaction {transaction_id} still runs 10 s after it should have ended (restricted: {REASON})"
            )
            == 1
        )
        # Availability was already set on this connection: only the stop is repeated.
        assert len([line for line in lines if "ChangeAvailability Inoperative" in line]) == 1


async def test_restriction_applied_on_connect_and_again_after_reboot(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    config = site_config([{"id": "CP", "ocpp_version": "1.6"}, {"id": "UP", "ocpp_version": "2.0.1"}])
    async with rig(config, wait=False) as r:
        await r.fleet.kill_station("CP")
        # Restricted while the charger is away (and with an EVSE that does not exist).
        r.central.restrict({("CP", 1): REASON, ("NOPE", 1): REASON, ("UP", 3): REASON})
        r.central.restrict({("CP", 1): REASON, ("NOPE", 1): REASON, ("UP", 3): REASON})
        assert r.central.restricted() == {("CP", 1): REASON}
        unknown = [r.getMessage() for r in caplog.records if "restriction of unknown EVSE" in r.getMessage()]
        assert len(unknown) == 2  # once each, not every cycle
        r.fleet.start_station("CP")
        station = r.fleet.station("CP")
        await wait_for(lambda: not station.model.connectors[1].operative, "Inoperative once configured")
        # A reboot that forgot its availability: the restriction is applied again on reconnect.
        station.model.connectors[1].operative = True
        await r.fleet.drop_connection("CP", reboot=True)
        await wait_for(lambda: station.boots == 2, "rebooted")
        await wait_for(lambda: not station.model.connectors[1].operative, "Inoperative again")
        # And on a reconnect without a reboot (1.6 chargers rarely boot again).
        station.model.connectors[1].operative = True
        await r.fleet.drop_connection("CP")
        await wait_for(lambda: station.connections == 3, "reconnected")
        await wait_for(lambda: not station.model.connectors[1].operative, "Inoperative once more")
        assert station.boots == 2

        def inoperative() -> list[str]:
            return [line for line in link_lines(caplog) if "ChangeAvailability Inoperative Accepted" in line]

        # The station turns Inoperative before its answer reaches the central system's log.
        await wait_for(lambda: len(inoperative()) >= 3, "the third answer logged")
        assert len(inoperative()) == 3
        # Released while away: Operative on the way back.
        await r.fleet.kill_station("CP")
        await wait_for(lambda: not r.central.online("CP"), "offline")
        r.central.restrict({})
        r.fleet.start_station("CP")
        await wait_for(lambda: station.model.connectors[1].operative, "Operative once back")
