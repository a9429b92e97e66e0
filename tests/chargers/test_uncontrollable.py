"""Stations that cannot be limited the usual way: no smart charging at all, only some profile
purposes; retries with capped exponential backoff. Real OCPP over websockets on loopback."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from charger_rig import rig, site_config, wait_for

from evdlm.chargers.ocpp import link as link_module
from evdlm.chargers.planning import dynamic_profile_id
from evdlm.core.types import ChargingCommand, CommandStatus
from evdlm.sim.ev import Car
from evdlm.sim.station import Misbehaviour

FAST_CAR = Car(phases=3, max_current_a=32, dead_time_s=1, ramp_time_constant_s=1)


def link_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "evdlm.chargers.link" and text in r.getMessage()]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_station_without_smart_charging_is_configured_and_not_controllable(
    version: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    config = site_config([{"id": "NOSC", "ocpp_version": version, "max_current_a": 32}])
    # The rig waits until the station is ready: before the fix it never was.
    async with rig(config, misbehaviour={"NOSC": Misbehaviour(no_smart_charging=True)}) as r:
        station = r.fleet.station("NOSC")
        # Not controllable from setup on, before any command: the fail-safe call said it all.
        assert not r.central.evse_states()[("NOSC", 1)].controllable
        assert station.profile_answers == ["NotImplemented"]  # one try, not one per unit
        assert len(link_lines(caplog, "does not implement smart charging")) == 1
        assert 1 not in station.model.profiles
        r.fleet.plug_in("NOSC", 1, FAST_CAR)
        await wait_for(lambda: r.central.evse_states()[("NOSC", 1)].charging, "transaction")
        await wait_for(lambda: abs(station.drawn_current_a()[0] - 32) < 0.5, "car at its maximum")
        # A control cycle's worth of commands: answered at once, nothing on the wire, no flood.
        results = []
        for _ in range(20):
            results += await r.central.apply([ChargingCommand("NOSC", 1, 10, "A", 3)])
        assert {result.status for result in results} == {CommandStatus.NOT_SUPPORTED}
        assert not any("configuration in progress" in result.detail for result in results)
        assert station.profile_answers == ["NotImplemented"]
        assert not link_lines(caplog, "not controllable (")  # the setup line said it; nothing per command


async def test_retries_back_off_exponentially_to_a_cap(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """4 s, then 8 s, then the 16 s cap (simulated; the production values are 30 s … 15 min)."""
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    monkeypatch.setattr(link_module, "UNCONTROLLABLE_RETRY_FIRST_S", 4.0)
    monkeypatch.setattr(link_module, "UNCONTROLLABLE_RETRY_S", 16.0)
    config = site_config([{"id": "NOSC", "ocpp_version": "2.0.1"}])
    async with rig(config, misbehaviour={"NOSC": Misbehaviour(no_smart_charging=True)}) as r:
        answers = r.fleet.station("NOSC").profile_answers
        tries_s = [r.clock.now_s()]  # the fail-safe refusal at setup (within a few ms)
        seen = len(answers)
        while len(tries_s) < 5:  # the control cycle, sped up: a command every 0.2 simulated s
            await r.central.apply([ChargingCommand("NOSC", 1, 10, "A", 3)])
            if len(answers) > seen:
                seen = len(answers)
                tries_s.append(r.clock.now_s())
            await asyncio.sleep(0.005)
        gaps_s = [later - earlier for earlier, later in itertools.pairwise(tries_s)]
        for gap_s, expected_s in zip(gaps_s, [4.0, 8.0, 16.0, 16.0], strict=True):
            assert expected_s - 0.5 <= gap_s <= expected_s + 4.0, gaps_s  # late by up to 100 ms of wall time
        assert answers == ["NotImplemented"] * 5  # one call per step: NotImplemented ends the ladder
        # Each step logged once, with its reason and the next delay.
        steps = link_lines(caplog, "not controllable (SetChargingProfile answered NotImplemented")
        assert [line.split("refusal ")[1] for line in steps] == [
            "2, next try in 8 s",
            "3, next try in 16 s",
            "4, next try in 16 s",
            "5, next try in 16 s",
        ]
        assert len(link_lines(caplog, "profiles tried again from 4 s on")) == 1  # refusal 1, at setup


async def test_firmware_update_makes_it_controllable_and_installs_the_failsafe(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    monkeypatch.setattr(link_module, "UNCONTROLLABLE_RETRY_FIRST_S", 4.0)
    config = site_config([{"id": "NOSC", "ocpp_version": "1.6"}])
    async with rig(config, misbehaviour={"NOSC": Misbehaviour(no_smart_charging=True)}) as r:
        r.fleet.set_misbehaviour("NOSC", Misbehaviour())
        await r.clock.sleep(4.5)
        result = (await r.central.apply([ChargingCommand("NOSC", 1, 12, "A", 3)]))[0]
        assert result.status is CommandStatus.ACCEPTED
        assert r.central.evse_states()[("NOSC", 1)].controllable
        assert 1 in r.fleet.station("NOSC").model.profiles  # the fail-safe it lacked
        assert len(link_lines(caplog, "NOSC/1 controllable again")) == 1


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_tx_profile_when_the_default_is_refused(version: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    config = site_config([{"id": "TXP", "ocpp_version": version}])
    only_tx = Misbehaviour(accepted_purposes=frozenset({"TxProfile"}))
    async with rig(config, misbehaviour={"TXP": only_tx}) as r:
        station = r.fleet.station("TXP")
        # The fail-safe (a TxDefaultProfile) was refused, but that says nothing about TxProfile.
        assert r.central.evse_states()[("TXP", 1)].controllable
        r.fleet.plug_in("TXP", 1, FAST_CAR)
        await wait_for(lambda: r.central.evse_states()[("TXP", 1)].charging, "transaction")
        transaction_id = r.central.evse_states()[("TXP", 1)].transaction_id
        result = (await r.central.apply([ChargingCommand("TXP", 1, 20, "A", 3)]))[0]
        assert result.status is CommandStatus.ACCEPTED
        installed = station.model.profiles[dynamic_profile_id(1)]
        assert (installed.purpose, installed.transaction_id) == ("TxProfile", transaction_id)
        assert r.central.capabilities()["TXP"].dynamic_purpose == "TxProfile"
        assert len(link_lines(caplog, "TXP/1: TxDefaultProfile refused (SetChargingProfile Rejected")) == 1
        assert len(link_lines(caplog, f"trying TxProfile for transaction {transaction_id}")) == 1
        await wait_for(lambda: abs(station.drawn_current_a()[0] - 20) < 0.5, "car at 20 A")
        answers = len(station.profile_answers)
        result = (await r.central.apply([ChargingCommand("TXP", 1, 10, "A", 3)]))[0]
        assert result.status is CommandStatus.ACCEPTED and len(station.profile_answers) == answers + 1  # learned


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_station_maximum_as_the_last_resort(version: str) -> None:
    config = site_config([{"id": "ONE", "ocpp_version": version}, {"id": "TWO", "ocpp_version": version, "evses": 2}])
    only_max = Misbehaviour(accepted_purposes=frozenset({"StationMax"}))
    async with rig(config, misbehaviour={"ONE": only_max, "TWO": only_max}) as r:
        one, two = await r.central.apply([ChargingCommand("ONE", 1, 12, "A", 3), ChargingCommand("TWO", 1, 12, "A", 3)])
        assert one.status is CommandStatus.ACCEPTED
        installed = r.fleet.station("ONE").model.profiles[dynamic_profile_id(0)]
        assert installed.station_max and installed.connector_id == 0
        # Two EVSEs: a station maximum would cap the other one too, so it is never tried.
        assert two.status is CommandStatus.REJECTED
        assert not any(p.station_max for p in r.fleet.station("TWO").model.profiles.values())
        assert not r.central.evse_states()[("TWO", 1)].controllable
