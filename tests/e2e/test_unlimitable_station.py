"""A station that cannot be limited, across a controller restart: blocked while there is no room
for it, released (Operative, charging again) once there is, even by a controller that did not
block it itself."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from evdlm.core.clock import ScaledClock
from evdlm.sim.ev import Car
from evdlm.sim.site import simulated_site
from evdlm.sim.station import Misbehaviour

from .conftest import until

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import faults_bench  # type: ignore[import-not-found]  # noqa: E402  # benchmarks/ is not a package

AFTERNOON_S = 1_781_616_600.0  # 2026-06-16 13:30 UTC: the simulated PV follows the clock's hour
SPEED = 15.0


@pytest.mark.timeout(180)
async def test_a_restarted_controller_releases_the_station_its_predecessor_blocked(tmp_path: Path) -> None:
    config = faults_bench.site_config()
    voltage_v = config.grid.nominal_voltage_v
    params = faults_bench.sim_params(config)
    params = type(params)(**{**params.__dict__, "base_load_w": 3 * faults_bench.UNLIMITABLE_BASE_LOAD_A * voltage_v})
    clock = ScaledClock(AFTERNOON_S, SPEED)
    misbehaviour = {"CP01": Misbehaviour(no_smart_charging=True)}
    async with simulated_site(config, clock, workdir=tmp_path, sim_params=params, misbehaviour=misbehaviour) as site:
        station = site.fleet.station("CP01")
        connector = station.model.connectors[1]
        site.start_controller()
        site.fleet.plug_in("CP01", 1, Car(phases=3, max_current_a=32))
        assert await until(clock, lambda: not connector.operative and connector.transaction_id is None, 30, step_s=0.5)
        saved = tmp_path / "var" / "restricted-evses.json"  # written off the cycle, by the writer thread
        assert await until(clock, saved.exists, 10, step_s=0.5)
        # A new controller process; the building load then drops by 20 A per phase: room for 32 A.
        await site.restart_controller(downtime_s=5.0)
        assert site.gateway.controller is not None
        assert site.gateway.controller.restricted, "the new controller did not learn what was blocked"
        site.simulation.set_ev_load("building-drop", (-20.0, -20.0, -20.0))
        assert await until(clock, lambda: connector.operative, 40, step_s=0.5), "never released"
        assert await until(clock, lambda: connector.transaction_id is not None, 30, step_s=0.5), (
            "the car never charged again"
        )
        assert not (site.gateway.controller.restricted)
