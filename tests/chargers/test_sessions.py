"""Leases, deadband, reconnects and session ends over loopback."""

from __future__ import annotations

import asyncio

import pytest
from charger_rig import rig, site_config, wait_for

from evdlm.chargers.planning import dynamic_profile_id
from evdlm.core.types import ChargingCommand, CommandStatus
from evdlm.sim.ev import Car

FAST_CAR = Car(phases=3, max_current_a=32, dead_time_s=1, ramp_time_constant_s=1)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_lease_expiry_falls_back_to_failsafe(version: str) -> None:
    """What "controller killed" looks like: no refresh, the dynamic limit ends by itself."""
    config = site_config(
        [{"id": "CP", "ocpp_version": version}], control={"lease_duration_s": 40, "lease_refresh_s": 15}
    )
    async with rig(config) as r:
        station = r.fleet.station("CP")
        r.fleet.plug_in("CP", 1, FAST_CAR)
        assert (await r.central.apply([ChargingCommand("CP", 1, 24, "A", 3)]))[0].status is CommandStatus.ACCEPTED
        await wait_for(lambda: abs(station.drawn_current_a()[0] - 24) < 0.5, "car at the dynamic limit")
        # 40 simulated seconds later, without a refresh, the fail-safe (6 A) holds.
        await wait_for(lambda: abs(station.drawn_current_a()[0] - 6) < 0.5, "car at the fail-safe", timeout_s=4)
        assert dynamic_profile_id(1) in station.model.profiles  # still installed, just expired


async def test_deadband_unchanged_then_refreshed() -> None:
    # A refresh period of 100 simulated seconds (2.5 s of test time) keeps a busy machine from
    # turning the "unchanged" answers into refreshes.
    config = site_config(
        [{"id": "CP", "ocpp_version": "1.6"}], control={"lease_duration_s": 300, "lease_refresh_s": 100}
    )
    async with rig(config) as r:
        answers = r.fleet.station("CP").profile_answers
        first = (await r.central.apply([ChargingCommand("CP", 1, 16, "A", 3)]))[0]
        sent = len(answers)
        second = (await r.central.apply([ChargingCommand("CP", 1, 16.7, "A", 3)]))[0]
        assert first.status is CommandStatus.ACCEPTED
        assert (second.status, second.sent_limit) == (CommandStatus.UNCHANGED, 16.0)
        assert len(answers) == sent  # nothing went on the wire
        assert (await r.central.apply([ChargingCommand("CP", 1, 0, "A", 3)]))[0].status is CommandStatus.ACCEPTED
        assert (await r.central.apply([ChargingCommand("CP", 1, 16, "A", 3)]))[0].status is CommandStatus.ACCEPTED
        await r.clock.sleep(101)  # lease refresh due
        refreshed = (await r.central.apply([ChargingCommand("CP", 1, 16, "A", 3)]))[0]
        assert refreshed.status is CommandStatus.ACCEPTED and len(answers) == sent + 3


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_reconnect_recovers_state_and_resends(version: str) -> None:
    config = site_config([{"id": "CP", "ocpp_version": version}])
    async with rig(config) as r:
        station = r.fleet.station("CP")
        r.fleet.plug_in("CP", 1, FAST_CAR)
        await wait_for(lambda: r.central.evse_states()[("CP", 1)].charging, "transaction")
        transaction_id = r.central.evse_states()[("CP", 1)].transaction_id
        assert (await r.central.apply([ChargingCommand("CP", 1, 20, "A", 3)]))[0].status is CommandStatus.ACCEPTED
        await r.fleet.drop_connection("CP")
        await wait_for(lambda: not r.central.evse_states()[("CP", 1)].online, "offline")
        offline = (await r.central.apply([ChargingCommand("CP", 1, 18, "A", 3)]))[0]
        assert offline.status is CommandStatus.OFFLINE
        await wait_for(lambda: r.central.ready("CP"), "reconnected")
        assert station.boots == 1 and station.connections == 2  # no reboot: state recovered, not re-read
        state = r.central.evse_states()[("CP", 1)]
        assert state.online and state.charging and state.transaction_id == transaction_id
        assert state.accepted_limit is None  # unknown until sent again
        # After a reconnect the lease is re-sent even though the limit is unchanged.
        assert (await r.central.apply([ChargingCommand("CP", 1, 20, "A", 3)]))[0].status is CommandStatus.ACCEPTED


async def test_reboot_reads_configuration_again() -> None:
    config = site_config([{"id": "CP", "ocpp_version": "2.0.1"}])
    async with rig(config) as r:
        station = r.fleet.station("CP")
        station.model.profiles.clear()  # a reboot that lost its profiles
        await r.fleet.drop_connection("CP", reboot=True)
        await wait_for(lambda: station.boots == 2 and r.central.ready("CP"), "rebooted and configured")
        assert 1 in station.model.profiles  # the fail-safe is back


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_session_end_clears_dynamic_profile(version: str) -> None:
    config = site_config([{"id": "CP", "ocpp_version": version}])
    async with rig(config) as r:
        station = r.fleet.station("CP")
        r.fleet.plug_in("CP", 1, FAST_CAR)
        await wait_for(lambda: r.central.evse_states()[("CP", 1)].charging, "transaction")
        await r.central.apply([ChargingCommand("CP", 1, 20, "A", 3)])
        assert dynamic_profile_id(1) in station.model.profiles
        r.fleet.unplug("CP", 1)
        await wait_for(lambda: dynamic_profile_id(1) not in station.model.profiles, "profile cleared")
        await wait_for(lambda: not r.central.evse_states()[("CP", 1)].connected, "connector free")
        await wait_for(lambda: r.central.evse_states()[("CP", 1)].accepted_limit is None, "clear answered")
        state = r.central.evse_states()[("CP", 1)]
        assert not state.charging and not state.connected and state.accepted_limit is None
        assert 1 in station.model.profiles  # the fail-safe stays


async def test_charging_needs_and_early_stop_201() -> None:
    config = site_config([{"id": "CP", "ocpp_version": "2.0.1", "kind": "ac_1phase"}])
    async with rig(config) as r:
        departure_s = r.clock.now_s() + 3600
        car = Car(
            phases=1,
            max_current_a=16,
            capacity_wh=500,
            soc_pct=90,
            full_soc_pct=95,
            dead_time_s=1,
            ramp_time_constant_s=1,
            departure_at_s=departure_s,
            energy_needed_wh=25,
        )
        r.fleet.plug_in("CP", 1, car)
        await wait_for(lambda: r.central.evse_states()[("CP", 1)].energy_needed_wh == 25, "charging needs")
        state = r.central.evse_states()[("CP", 1)]
        assert state.departure_at_s == pytest.approx(departure_s, abs=0.01) and state.ev_max_current_a == 16
        # 25 Wh at 6 A × 230 V takes ~65 s: then the car stops by itself, still plugged in.
        await wait_for(lambda: (r.central.evse_states()[("CP", 1)].soc_pct or 0) >= 95, "battery full", timeout_s=6)
        await wait_for(lambda: r.central.evse_states()[("CP", 1)].phase_current_a == (0.0, None, None), "car stopped")
        state = r.central.evse_states()[("CP", 1)]
        assert state.charging and state.connected
        assert r.fleet.station("CP").drawn_current_a() == (0.0, 0.0, 0.0)


async def test_many_chargers_concurrently() -> None:
    chargers = [{"id": f"CP{i:02d}", "ocpp_version": "1.6" if i % 2 else "2.0.1", "evses": 2} for i in range(20)]
    async with rig(site_config(chargers)) as r:
        commands = [ChargingCommand(c["id"], evse, 8 + evse, "A", 3) for c in chargers for evse in (1, 2)]
        results = await r.central.apply(commands)
        assert all(result.status is CommandStatus.ACCEPTED for result in results)
        assert len(r.central.evse_states()) == 40
        await asyncio.sleep(0)
