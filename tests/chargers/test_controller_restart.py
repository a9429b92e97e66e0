"""The controller goes away and comes back: leases lapse to the fail-safe, chargers reconnect."""

from __future__ import annotations

import pytest
from charger_rig import clock, site_config, wait_for

from evdlm.chargers.errors import ChargerCallError
from evdlm.chargers.ocpp.server import OcppCentralSystem
from evdlm.chargers.ocpp.session import checked_profile_status
from evdlm.core.types import ChargingCommand, CommandStatus, EvseState
from evdlm.sim.ev import Car
from evdlm.sim.fleet import SimFleet


async def test_controller_killed_and_restarted() -> None:
    config = site_config(
        [{"id": "CP1", "ocpp_version": "1.6"}, {"id": "CP2", "ocpp_version": "2.0.1"}],
        control={"lease_duration_s": 40, "lease_refresh_s": 15},
    )
    sim_clock = clock()
    central = OcppCentralSystem(config, sim_clock)
    await central.start()
    port = central.port
    changes: list[EvseState] = []
    unsubscribe = central.add_change_listener(changes.append)
    async with SimFleet(config, sim_clock, f"ws://127.0.0.1:{port}", tick_s=0.5) as fleet:
        await wait_for(lambda: central.ready("CP1") and central.ready("CP2"), "configured")
        for charger_id in ("CP1", "CP2"):
            fleet.plug_in(charger_id, 1, Car(max_current_a=32, dead_time_s=1, ramp_time_constant_s=1))
        results = await central.apply([ChargingCommand(c, 1, 20, "A", 3) for c in ("CP1", "CP2")])
        assert all(result.status is CommandStatus.ACCEPTED for result in results)
        await wait_for(lambda: all(abs(s.drawn_current_a()[0] - 20) < 0.5 for s in fleet.stations.values()), "20 A")
        assert any(state.charging for state in changes)  # listeners saw the sessions start
        unsubscribe()

        await central.stop()  # the controller dies; chargers keep trying to reconnect
        await wait_for(
            lambda: all(abs(s.drawn_current_a()[0] - 6) < 0.5 for s in fleet.stations.values()),
            "fail-safe",
            timeout_s=4,
        )

        restarted = OcppCentralSystem(
            config.model_copy(update={"ocpp": config.ocpp.model_copy(update={"port": port})}), sim_clock
        )
        async with restarted:
            await wait_for(lambda: restarted.ready("CP1") and restarted.ready("CP2"), "reconnected and configured")
            # A fresh controller knows nothing yet; the chargers re-announce their sessions.
            await wait_for(
                lambda: all(state.charging for state in restarted.evse_states().values()), "sessions recovered"
            )
            assert fleet.station("CP1").boots == 1  # reconnected without rebooting
            results = await restarted.apply([ChargingCommand(c, 1, 16, "A", 3) for c in ("CP1", "CP2")])
            assert all(result.status is CommandStatus.ACCEPTED for result in results)
            await wait_for(lambda: all(abs(s.drawn_current_a()[0] - 16) < 0.5 for s in fleet.stations.values()), "16 A")


def test_profile_answer_checked() -> None:
    assert checked_profile_status("Accepted") == "Accepted"
    with pytest.raises(ChargerCallError):
        checked_profile_status("Maybe")
