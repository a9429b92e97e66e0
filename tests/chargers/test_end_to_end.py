"""Both OCPP versions end to end over loopback: boot → transaction → profile → meter values follow."""

from __future__ import annotations

import pytest
from charger_rig import rig, site_config, wait_for

from evdlm.core.types import ChargingCommand, CommandStatus
from evdlm.sim.ev import Car


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_limit_followed(version: str) -> None:
    config = site_config([{"id": "CP1", "ocpp_version": version, "max_current_a": 32}])
    async with rig(config) as r:
        station = r.fleet.station("CP1")
        # The fail-safe is installed at boot: a new car gets 6 A until we command more.
        r.fleet.plug_in("CP1", 1, Car(phases=3, max_current_a=32, dead_time_s=1, ramp_time_constant_s=1))
        await wait_for(lambda: r.central.evse_states()[("CP1", 1)].charging, "transaction")
        await wait_for(lambda: abs(station.drawn_current_a()[0] - 6.0) < 0.3, "fail-safe current")
        results = await r.central.apply([ChargingCommand("CP1", 1, 16.4, "A", 3)])
        assert results[0].status is CommandStatus.ACCEPTED
        assert results[0].sent_limit == 16.0 and results[0].sent_unit == "A"
        assert results[0].stack_level == 1
        await wait_for(lambda: abs(station.drawn_current_a()[0] - 16.0) < 0.3, "car at 16 A")
        await wait_for(
            lambda: abs((r.central.evse_states()[("CP1", 1)].phase_current_a or (0,))[0] - 16.0) < 0.5,
            "meter values at 16 A",
        )
        state = r.central.evse_states()[("CP1", 1)]
        assert state.offered_current_a == 16.0
        assert state.accepted_limit == 16.0 and state.accepted_unit == "A"
        assert state.power_w is not None and state.power_w > 10_000
        assert state.energy_wh is not None and state.energy_wh > 0
        assert state.compliant and state.controllable
