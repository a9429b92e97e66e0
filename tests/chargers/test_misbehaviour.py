"""Chargers that let a load manager down, and what the link does about each."""

from __future__ import annotations

import time

import pytest
from charger_rig import rig, site_config, wait_for

from evdlm.chargers.ocpp import link as link_module
from evdlm.core.types import ChargingCommand, CommandStatus
from evdlm.sim.ev import Car
from evdlm.sim.station import Misbehaviour

FAST_CAR = Car(phases=3, max_current_a=32, dead_time_s=1, ramp_time_constant_s=1)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_rejecting_charger_becomes_uncontrollable(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link_module, "UNCONTROLLABLE_RETRY_S", 40.0)  # 1 s of test time
    config = site_config([{"id": "BAD", "ocpp_version": version}])
    async with rig(config, misbehaviour={"BAD": Misbehaviour(reject_profiles=True)}) as r:
        result = (await r.central.apply([ChargingCommand("BAD", 1, 10, "A", 3)]))[0]
        assert result.status is CommandStatus.REJECTED
        state = r.central.evse_states()[("BAD", 1)]
        assert not state.controllable  # the solver counts it at its maximum
        # Every variant was tried once: levels 1 and 0, in A then W.
        assert r.fleet.station("BAD").profile_answers.count("Rejected") >= 4
        again = (await r.central.apply([ChargingCommand("BAD", 1, 12, "A", 3)]))[0]
        assert again.status is CommandStatus.NOT_SUPPORTED
        # Fixed by a firmware update: asked again after UNCONTROLLABLE_RETRY_S, controllable again.
        r.fleet.set_misbehaviour("BAD", Misbehaviour())
        await r.clock.sleep(link_module.UNCONTROLLABLE_RETRY_S)
        retried = (await r.central.apply([ChargingCommand("BAD", 1, 12, "A", 3)]))[0]
        assert retried.status is CommandStatus.ACCEPTED
        assert r.central.evse_states()[("BAD", 1)].controllable


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_only_amps_despite_advertising_watts(version: str) -> None:
    config = site_config([{"id": "AMPS", "ocpp_version": version, "kind": "dc", "max_power_kw": 50}])
    behaviour = Misbehaviour(only_amps=True, advertise_truthfully=False)
    async with rig(config, misbehaviour={"AMPS": behaviour}) as r:
        result = (await r.central.apply([ChargingCommand("AMPS", 1, 6900, "W", 3)]))[0]
        assert result.status is CommandStatus.ACCEPTED
        assert (result.sent_unit, result.sent_limit) == ("A", 10.0)  # 6900 W / (230 V × 3)
        assert r.central.capabilities()["AMPS"].rate_units == {"A"}  # learned: next time A at once
        answers = len(r.fleet.station("AMPS").profile_answers)
        result = (await r.central.apply([ChargingCommand("AMPS", 1, 9200, "W", 3)]))[0]
        assert result.sent_unit == "A" and len(r.fleet.station("AMPS").profile_answers) == answers + 1


async def test_honest_only_amps_converted_without_a_refusal() -> None:
    config = site_config([{"id": "AMPS", "ocpp_version": "1.6"}])
    async with rig(config, misbehaviour={"AMPS": Misbehaviour(only_amps=True)}) as r:
        result = (await r.central.apply([ChargingCommand("AMPS", 1, 4600, "W", 1)]))[0]
        assert (result.status, result.sent_unit, result.sent_limit) == (CommandStatus.ACCEPTED, "A", 20.0)
        assert "Rejected" not in r.fleet.station("AMPS").profile_answers


@pytest.mark.parametrize("truthful", [True, False])
async def test_only_stack_level_zero(truthful: bool) -> None:
    config = site_config([{"id": "ABB", "ocpp_version": "1.6"}])
    behaviour = Misbehaviour(only_stack_level_0=True, advertise_truthfully=truthful)
    async with rig(config, misbehaviour={"ABB": behaviour}) as r:
        r.fleet.plug_in("ABB", 1, FAST_CAR)
        result = (await r.central.apply([ChargingCommand("ABB", 1, 20, "A", 3)]))[0]
        assert (result.status, result.stack_level) == (CommandStatus.ACCEPTED, 0)
        assert ("Rejected" in r.fleet.station("ABB").profile_answers) is not truthful
        assert r.central.capabilities()["ABB"].single_level
        await wait_for(lambda: abs(r.fleet.station("ABB").drawn_current_a()[0] - 20) < 0.5, "car at 20 A")


async def test_accepts_but_ignores_is_flagged_and_cleared() -> None:
    config = site_config([{"id": "LIAR", "ocpp_version": "2.0.1"}], ocpp={"non_compliance_grace_s": 30})
    async with rig(config, misbehaviour={"LIAR": Misbehaviour(ignore_profiles=True)}) as r:
        r.fleet.plug_in("LIAR", 1, FAST_CAR)
        result = (await r.central.apply([ChargingCommand("LIAR", 1, 10, "A", 3)]))[0]
        assert result.status is CommandStatus.ACCEPTED
        accepted_wall = time.monotonic()
        await wait_for(lambda: not r.central.evse_states()[("LIAR", 1)].compliant, "non-compliance flagged")
        # Not before the grace period (30 simulated seconds).
        assert (time.monotonic() - accepted_wall) * r.clock.speed >= 30 - 2
        r.fleet.set_misbehaviour("LIAR", Misbehaviour())
        await wait_for(lambda: r.central.evse_states()[("LIAR", 1)].compliant, "compliant again")


async def test_slow_chargers_are_awaited_concurrently() -> None:
    """One call in flight per charger, never one charger after another: two slow chargers and a
    dead one cost about one timeout in total, not the sum."""
    chargers = [{"id": f"CP{i}", "ocpp_version": "1.6"} for i in range(3)] + [
        {"id": "SLOW1", "ocpp_version": "2.0.1"},
        {"id": "SLOW2", "ocpp_version": "1.6"},
        {"id": "DEAD", "ocpp_version": "2.0.1"},
    ]
    config = site_config(chargers, ocpp={"call_timeout_s": 1.5})
    async with rig(config) as r:
        r.fleet.set_misbehaviour("SLOW1", Misbehaviour(answer_delay_s=0.8))
        r.fleet.set_misbehaviour("SLOW2", Misbehaviour(answer_delay_s=0.8))
        r.fleet.set_misbehaviour("DEAD", Misbehaviour(answer_delay_s=5))
        commands = [ChargingCommand(c["id"], 1, 10, "A", 3) for c in chargers]
        started = time.monotonic()
        results = await r.central.apply(commands)
        elapsed = time.monotonic() - started
        assert [result.command for result in results] == commands  # one result per command, in order
        assert [result.status for result in results[:5]] == [CommandStatus.ACCEPTED] * 5
        assert results[5].status is CommandStatus.TIMEOUT
        assert 1.5 <= elapsed < 2.8  # sequential would take 0.8 + 0.8 + 1.5 s at least
