"""The safety ladder on the demo site, real protocols on loopback, compressed time.

Controller killed → chargers fall back to their fail-safe profile when the leases expire;
stale grid meter → the fallback import limit; SIGHUP reload → valid config applied, broken
config refused while the old one keeps running.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from evdlm.config import load_site_config
from evdlm.control import CycleReport
from evdlm.core.clock import ScaledClock
from evdlm.data import DEMO_SITE_PATH
from evdlm.sim.ev import Car
from evdlm.sim.modbus_servers import Fault
from evdlm.sim.site import simulated_site

from .conftest import until

SPEED = 20.0
EARLY_MORNING_S = 1_781_589_600.0  # 2026-06-16 06:00 UTC, 07:00 solar time on the demo site
# The simulated PV follows the clock's hour: a start taken from the wall clock made what the grid
# meter nets out depend on when the suite ran. 2026-06-16 13:30 UTC, early afternoon.
AFTERNOON_S = 1_781_616_600.0


@pytest.mark.timeout(240)
async def test_killed_controller_leaves_chargers_on_their_failsafe(tmp_path: Path) -> None:
    config = load_site_config(DEMO_SITE_PATH).config
    clock = ScaledClock(AFTERNOON_S, SPEED)
    async with simulated_site(config, clock, workdir=tmp_path) as site:
        for charger_id in ("CP01", "CP02", "CP07"):
            site.fleet.plug_in(charger_id, 1, Car(phases=3, max_current_a=32))
        site.start_controller()
        stations = {cid: site.fleet.station(cid) for cid in ("CP01", "CP02", "CP07")}

        def dynamic_limits_in_force() -> bool:
            return all(
                (s.model.limit_a(1, clock.now_s()) or 0) > config.ocpp.failsafe_current_a for s in stations.values()
            )

        assert await until(clock, dynamic_limits_in_force, 120), "the controller never raised the cars"
        await site.stop_controller(kill=True)
        killed_at = clock.now_s()
        # Before the lease runs out the last limits hold; after it, only the fail-safe profile.
        lease_s = config.control.lease_duration_s
        await clock.sleep(lease_s / 2)
        assert dynamic_limits_in_force()
        await clock.sleep(lease_s + 10 - (clock.now_s() - killed_at))
        now = clock.now_s()
        limits = {cid: s.model.limit_a(1, now) for cid, s in stations.items()}
        assert limits == {cid: config.ocpp.failsafe_current_a for cid in stations}
        await clock.sleep(15)  # the cars follow the offered current down
        drawn = site.fleet.drawn_current_a()
        assert all(max(drawn[cid]) <= config.ocpp.failsafe_current_a + 0.5 for cid in stations), drawn


@pytest.mark.timeout(240)
async def test_stale_grid_meter_puts_site_on_fallback_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = load_site_config(DEMO_SITE_PATH).config
    # Early morning on the site (the simulation's solar time): little PV, so six charging cars
    # put the import above the fallback whatever the hour the test runs at.
    clock = ScaledClock(EARLY_MORNING_S, SPEED)
    reports: list[CycleReport] = []
    async with simulated_site(config, clock, workdir=tmp_path) as site:
        site.on_cycle = reports.append
        for charger_id in ("CP01", "CP02", "CP03", "CP05", "CP07", "CP08"):
            site.fleet.plug_in(charger_id, 1, Car(phases=3, max_current_a=32))
        site.start_controller()
        # Charging above the fallback. The first cycle waits for the kernels (seconds of wall time
        # when the machine is busy: minutes of this clock), so the wait counts from the first cycle.
        assert await until(clock, lambda: bool(reports), 600), "no control cycle"
        fallback_w = config.control.fallback_import_limit_kw * 1000
        assert await until(clock, lambda: site.grid_w() > fallback_w, 240), site.grid_w()
        grid = next(d for d in site.config.devices if d.name == "grid_meter")
        assert grid.modbus is not None
        site.simulators.servers[grid.modbus.link].faults.inject(Fault("exception"), grid.modbus.unit_id)
        await clock.sleep(60)
        last = reports[-1]
        assert last.decision is not None and last.decision.built.grid_fallback
        assert "grid_meter" in last.decision.built.stale_devices
        assert site.gateway.metrics.registry.get_sample_value("evdlm_grid_fallback", {"site": "demo"}) == 1.0
        # EV load now fits the 30 kW fallback (the building load is not counted: unknown).
        ev_w = sum(max(0.0, sum(current)) for current in site.fleet.drawn_current_a().values()) * 230.0
        assert ev_w <= config.control.fallback_import_limit_kw * 1000
        assert "grid_meter: quality ok → invalid" in caplog.text or "grid_meter: quality ok → stale" in caplog.text


@pytest.mark.timeout(120)
async def test_reload_applies_a_valid_config_and_refuses_a_broken_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = load_site_config(DEMO_SITE_PATH).config
    clock = ScaledClock(AFTERNOON_S, SPEED)
    site_file = tmp_path / "site.yaml"
    text = DEMO_SITE_PATH.read_text()
    site_file.write_text(text)
    async with simulated_site(config, clock, workdir=tmp_path) as site:
        gateway = site.gateway
        assert gateway.controller is not None
        gateway.config_path = site_file
        site_file.write_text(text.replace("safety_margin_a: 2", "safety_margin_a: 4"))
        assert gateway.reload()
        assert gateway.controller.config.control.safety_margin_a == 4
        site_file.write_text(text.replace("import_limit_kw: 55", "import_limit_kw: -1"))
        assert not gateway.reload()
        assert gateway.controller.config.control.safety_margin_a == 4
        assert "reload refused" in caplog.text and "grid.import_limit_kw" in caplog.text
        site_file.write_text(text.replace("CP08", "CP09"))
        assert gateway.reload()
        assert any(
            "reload:" in r.getMessage() and "chargers" in r.getMessage() and "restart" in r.getMessage()
            for r in caplog.records
        )
        assert [c.id for c in gateway.controller.config.chargers][-1] == "CP08"
        site.start_controller()
        await asyncio.sleep(0.5)
        assert gateway.controller.cycle_number > 0


@pytest.mark.timeout(120)
async def test_state_and_limits_are_published_retained(tmp_path: Path) -> None:
    import json

    from evdlm.mqtt.client import MqttClient, MqttMessage

    config = load_site_config(DEMO_SITE_PATH).config
    clock = ScaledClock(AFTERNOON_S, SPEED)
    seen: dict[str, dict[str, object]] = {}

    def on_message(message: MqttMessage) -> None:
        seen[message.topic] = json.loads(message.payload)

    async with simulated_site(config, clock, workdir=tmp_path) as site:
        assert site.config.mqtt is not None
        site.fleet.plug_in("CP01", 1, Car(phases=3, max_current_a=32))
        site.start_controller()
        await clock.sleep(30)
        # A late subscriber gets the retained state at once.
        async with MqttClient(site.config.mqtt.host, site.config.mqtt.port, client_id="ops") as observer:
            await observer.subscribe("dlm/demo/#", on_message)
            await asyncio.sleep(1.0)
            assert seen["dlm/demo/status"] == {"state": "online"}
            state = seen["dlm/demo/state"]
            assert state["site"] == "demo" and state["status"] == "ok"
            limit = seen["dlm/demo/evse/CP01/1/limit"]
            assert limit["unit"] == "A" and float(limit["limit"]) >= 6  # type: ignore[arg-type]
            assert seen["dlm/demo/evse/CP02/1/limit"]["limit"] == 0.0
            await site.stop_controller(kill=True)
            await asyncio.sleep(1.0)
            assert seen["dlm/demo/status"] == {"state": "offline"}
