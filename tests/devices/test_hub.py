"""DeviceHub end to end over loopback: simulators, snapshot, faults, logging, battery control."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from evdlm.config import load_site_config, parse_site_config
from evdlm.config.models import SiteConfig
from evdlm.core.clock import Clock, ScaledClock, SystemClock
from evdlm.core.types import Quality, Reading
from evdlm.devices import DeviceHub
from evdlm.devices.codec import Measurement
from evdlm.sim.modbus_servers import Fault, SiteSimulators, SunSpecUnit, circuit_specs_for, sim_params_for
from evdlm.sim.site_physics import SiteSimulation, sim_readers

HUB_LOG = "evdlm.devices.hub"


def site_yaml(control: str = "sunspec_124", grid_profile: str = "sdm630") -> str:
    return f"""
schema_version: 1
site: {{id: t}}
grid: {{import_limit_kw: 50, phase_current_limit_a: 80, meter: grid}}
circuits:
  - id: main
    phase_current_limit_a: 80
    children: [{{id: garage, phase_current_limit_a: 40, meter: garage}}]
chargers:
  - {{id: CP01, ocpp_version: "1.6", circuit: garage}}
  - {{id: CP02, ocpp_version: "1.6", circuit: main}}
modbus_links:
  - {{name: meters, type: tcp, host: 127.0.0.1, port: 1, timeout_s: 0.2}}
  - {{name: pv_lan, type: tcp, host: 127.0.0.1, port: 1, timeout_s: 0.2}}
  - {{name: bat_lan, type: rtu_over_tcp, host: 127.0.0.1, port: 1, timeout_s: 0.2}}
devices:
  - {{name: grid, role: grid_meter, max_age_s: 0.6, poll_period_s: 0.1, modbus: {{link: meters, unit_id: 1, profile: {grid_profile}}}}}
  - {{name: garage, role: circuit_meter, max_age_s: 0.6, poll_period_s: 0.1, modbus: {{link: meters, unit_id: 2, profile: sunspec}}}}
  - {{name: pv, role: pv, max_age_s: 0.6, poll_period_s: 0.1, modbus: {{link: pv_lan, unit_id: 3, profile: sunspec}}}}
  - {{name: bat, role: battery, max_age_s: 0.6, poll_period_s: 0.1, modbus: {{link: bat_lan, unit_id: 1, profile: sunspec}}}}
battery: {{device: bat, max_charge_kw: 10, max_discharge_kw: 10, capacity_kwh: 30, soc_min_pct: 5, reserve_soc_pct: 20, control: {control}, revert_timeout_s: 5}}
control: {{fallback_import_limit_kw: 20}}
"""


def make_config(**kw: str) -> SiteConfig:
    return parse_site_config(site_yaml(**kw)).config


@dataclass
class Site:
    sim: SiteSimulation
    sims: SiteSimulators
    hub: DeviceHub
    clock: Clock


@pytest.fixture
def clock() -> Clock:
    return SystemClock()


@contextlib.asynccontextmanager
async def start_site(config: SiteConfig, clock: Clock) -> AsyncIterator[Site]:
    sim = SiteSimulation(sim_params_for(config), clock.now_s(), circuits=circuit_specs_for(config))
    async with SiteSimulators(config, sim, clock) as sims, DeviceHub(sims.config(), clock) as hub:
        yield Site(sim, sims, hub, clock)


@pytest.fixture
async def site(clock: Clock) -> AsyncIterator[Site]:
    async with start_site(make_config(), clock) as value:
        yield value


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


def snap(site: Site) -> dict[str, Reading]:
    return site.hub.snapshot(site.clock.now_s())


def all_ok(site: Site) -> bool:
    return all(r.quality is Quality.OK for r in snap(site).values())


async def test_snapshot_follows_the_simulated_site(site: Site) -> None:
    site.sim.set_ev_load("CP01", (16.0, 16.0, 16.0))
    await asyncio.sleep(0.3)
    await wait_for(lambda: all_ok(site))
    readings = snap(site)
    truth = site.sim.advance(site.clock.now_s())
    assert readings["grid"].power_w == pytest.approx(truth.grid_w, abs=300.0)
    assert readings["pv"].power_w == pytest.approx(truth.pv_w, abs=300.0)
    assert readings["bat"].soc_pct == pytest.approx(truth.battery_soc_pct, abs=0.2)
    garage = readings["garage"]
    assert garage.power_w is not None and garage.power_w > 48 * 230.0
    assert garage.phase_current_a is not None and garage.phase_current_a[0] == pytest.approx(
        16.0 + 0.2 * truth.base_phase_w[0] / 230.0, abs=0.2
    )
    for reading in readings.values():
        assert site.clock.now_s() - reading.taken_at_s < 0.6


async def test_unknown_devices_are_missing_before_the_first_poll(clock: Clock) -> None:
    config = make_config()
    async with DeviceHub(config, clock) as hub:  # port 1: nothing listens
        readings = hub.snapshot(clock.now_s())
        assert {r.quality for r in readings.values()} == {Quality.MISSING}
        await asyncio.sleep(0.3)
        assert hub.snapshot(clock.now_s())["grid"].quality is Quality.MISSING
        assert "connect" in (hub.snapshot(clock.now_s())["grid"].reason or "")


async def test_server_down_goes_stale_with_one_log_line_then_recovers(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=HUB_LOG)
    await wait_for(lambda: all_ok(site))
    await site.sims.servers["pv_lan"].stop()
    await wait_for(lambda: snap(site)["pv"].quality is Quality.STALE)
    assert all(r.quality is Quality.OK for name, r in snap(site).items() if name != "pv")
    lines = [r.getMessage() for r in caplog.records if r.name == HUB_LOG and "device pv" in r.getMessage()]
    assert any("read failed" in line for line in lines)
    assert sum("ok → stale" in line for line in lines) == 1
    await asyncio.sleep(0.3)  # many failed polls: still exactly one transition line
    lines = [r.getMessage() for r in caplog.records if r.name == HUB_LOG and "device pv" in r.getMessage()]
    assert sum("→" in line for line in lines) == 2  # missing → ok, ok → stale
    await site.sims.servers["pv_lan"].start()
    await wait_for(lambda: snap(site)["pv"].quality is Quality.OK, timeout_s=15.0)
    assert any("stale → ok" in r.getMessage() for r in caplog.records if r.name == HUB_LOG)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault("exception", exception_code=4), "exception code 4"),
        (Fault("silent"), "no response"),
        (Fault("slow", delay_s=1.0), "no response"),
    ],
)
async def test_failing_device_is_missing_then_stale(
    site: Site, caplog: pytest.LogCaptureFixture, fault: Fault, reason: str
) -> None:
    caplog.set_level(logging.INFO, logger=HUB_LOG)
    await wait_for(lambda: all_ok(site))
    site.sims.servers["meters"].faults.inject(fault, unit_id=1)
    await wait_for(lambda: snap(site)["grid"].quality is Quality.STALE)
    messages = [r.getMessage() for r in caplog.records if "device grid:" in r.getMessage()]
    assert any("read failed" in m and reason in m for m in messages), messages
    # Restart the hub against the still-failing device: never read OK → MISSING, with the reason.
    async with DeviceHub(site.sims.config(), site.clock) as fresh:
        await wait_for(
            lambda: fresh.polls("grid") >= 1 and fresh.snapshot(site.clock.now_s())["grid"].reason != "never read"
        )
        reading = fresh.snapshot(site.clock.now_s())["grid"]
        assert reading.quality is Quality.MISSING
        assert reading.power_w is None


async def test_garbage_is_invalid_never_ok(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=HUB_LOG)
    await wait_for(lambda: all_ok(site))
    site.sims.servers["meters"].faults.inject(Fault("garbage"))
    await wait_for(
        lambda: snap(site)["grid"].quality is Quality.INVALID and snap(site)["garage"].quality is Quality.INVALID
    )
    for _ in range(5):
        readings = snap(site)
        assert readings["grid"].quality is Quality.INVALID and readings["grid"].reason
        assert readings["garage"].quality is Quality.INVALID
        await asyncio.sleep(0.05)
    assert any("ok → invalid" in r.getMessage() for r in caplog.records)
    site.sims.servers["meters"].faults.clear()
    await wait_for(lambda: all_ok(site))


async def test_a_slow_device_does_not_delay_the_others(site: Site) -> None:
    await wait_for(lambda: all_ok(site))
    site.sims.servers["pv_lan"].faults.inject(Fault("slow", delay_s=0.15))  # within the 0.2 s timeout
    before = {name: site.hub.polls(name) for name in ("grid", "pv")}
    await asyncio.sleep(1.0)
    grid_polls = site.hub.polls("grid") - before["grid"]
    pv_polls = site.hub.polls("pv") - before["pv"]
    assert grid_polls >= 5  # ~10 at 0.1 s; slack for a loaded CI machine
    assert pv_polls < grid_polls
    assert snap(site)["pv"].quality is Quality.OK  # slow but answering: still fresh


async def test_battery_control_124_charges_discharges_and_releases(site: Site) -> None:
    control = site.hub.battery_control
    assert control is not None
    assert await control.set_power_w(-3000.0) == -3000.0
    await wait_for(lambda: snap(site)["bat"].power_w == pytest.approx(-3000.0, abs=1.0))
    assert site.sim.command.storctl_mod == 3
    assert site.sim.command.revert_s == 5
    assert await control.set_power_w(50_000.0) == 10_000.0  # clamped to max_discharge_kw
    await control.release()
    assert site.sim.command.storctl_mod == 0
    unit = site.sims.units["bat"]
    assert isinstance(unit, SunSpecUnit) and (unit.written_point(802, "CtrlHb") or 0) >= 2


async def test_battery_704_setpoint(clock: Clock) -> None:
    async with start_site(make_config(control="sunspec_704", grid_profile="em24"), clock) as site:
        control = site.hub.battery_control
        assert control is not None
        await control.set_power_w(4000.0)
        await wait_for(lambda: snap(site)["bat"].power_w == pytest.approx(4000.0, abs=1.0))
        assert site.sim.command.wset_enabled and site.sim.command.revert_s == 5
        await control.release()
        assert not site.sim.command.wset_enabled


async def test_a_dead_controller_battery_reverts_by_itself() -> None:
    clock = ScaledClock(time.time(), speed=20.0)  # 5 s revert timer = 0.25 s wall
    async with start_site(make_config(), clock) as site:
        assert site.hub.battery_control is not None
        await site.hub.battery_control.set_power_w(-4000.0)
        assert site.sim.advance(clock.now_s()).battery_forced
        await asyncio.sleep(0.4)  # no refresh: the controller "died"
        assert not site.sim.advance(clock.now_s()).battery_forced
        assert site.sim.command.storctl_mod == 0


async def test_demo_config_runs_on_simulators(clock: Clock) -> None:
    config = load_site_config("site_configs/demo.yaml").config
    async with start_site(config, clock) as site:
        await wait_for(lambda: all_ok(site), timeout_s=5.0)
        assert set(snap(site)) == {"grid_meter", "garage_meter", "roof_pv", "store"}


async def test_sim_sources_read_the_simulation_in_process() -> None:
    text = """
schema_version: 1
site: {id: t}
grid: {import_limit_kw: 50, phase_current_limit_a: 80, meter: grid}
circuits: [{id: main, phase_current_limit_a: 80, meter: main_meter}]
chargers: [{id: CP01, ocpp_version: "1.6", circuit: main}]
devices:
  - {name: grid, role: grid_meter, poll_period_s: 0.05, sim: {model: grid_meter}}
  - {name: main_meter, role: circuit_meter, poll_period_s: 0.05, sim: {model: circuit_meter}}
  - {name: pv, role: pv, poll_period_s: 0.05, sim: {model: pv}}
  - {name: bat, role: battery, poll_period_s: 0.05, sim: {model: battery}}
control: {fallback_import_limit_kw: 20}
"""
    config = parse_site_config(text).config
    clock = ScaledClock(1_800_000_000.0, speed=60.0)
    sim = SiteSimulation(sim_params_for(config), clock.now_s(), circuits=circuit_specs_for(config, base_share=0.5))
    sim.set_ev_load("CP01", (10.0, 0.0, 0.0))
    async with DeviceHub(config, clock, readers=sim_readers(config, sim, clock)) as hub:
        await wait_for(lambda: all(r.quality is Quality.OK for r in hub.snapshot(clock.now_s()).values()))
        readings = hub.snapshot(clock.now_s())
        truth = sim.advance(clock.now_s())
        assert readings["bat"].soc_pct == pytest.approx(truth.battery_soc_pct, abs=0.5)
        main = readings["main_meter"].phase_power_w
        assert main is not None and main[0] == pytest.approx(0.5 * truth.base_phase_w[0] + 2300.0, rel=0.05)


def test_the_hub_is_given_its_in_process_readers_and_its_mqtt_client() -> None:
    """The hub builds no simulator and no MQTT client: the composition root hands them in."""
    config = parse_site_config(
        """
schema_version: 1
site: {id: t}
grid: {import_limit_kw: 50, phase_current_limit_a: 80, meter: grid}
circuits: [{id: main, phase_current_limit_a: 80}]
devices:
  - {name: grid, role: grid_meter, sim: {model: grid_meter}}
  - {name: pv, role: pv, mqtt: {topic: site/pv, unit: W}}
mqtt: {host: 127.0.0.1, port: 1}
control: {fallback_import_limit_kw: 20}
"""
    ).config
    clock = SystemClock()
    with pytest.raises(ValueError, match="no reader was given"):
        DeviceHub(config, clock)
    with pytest.raises(ValueError, match="without a sim source: pv"):
        DeviceHub(config, clock, readers={"grid": Measurement, "pv": Measurement})
    with pytest.raises(ValueError, match="MQTT client"):
        DeviceHub(config, clock, readers={"grid": Measurement})


async def test_simulators_can_bind_the_configured_ports(clock: Clock) -> None:
    config = make_config()
    async with SiteSimulators(config, SiteSimulation(sim_params_for(config), clock.now_s()), clock) as ephemeral:
        ports = {name: server.port for name, server in ephemeral.servers.items()}
    fixed = config.model_copy(
        update={"modbus_links": [link.model_copy(update={"port": ports[link.name]}) for link in config.modbus_links]}
    )
    sim = SiteSimulation(sim_params_for(fixed), clock.now_s())
    async with SiteSimulators(fixed, sim, clock, use_config_ports=True) as sims:
        assert {name: server.port for name, server in sims.servers.items()} == ports
        assert sims.config() == fixed


async def test_closing_the_hub_releases_a_commanded_battery(clock: Clock) -> None:
    async with start_site(make_config(), clock) as site:
        assert site.hub.battery_control is not None
        await site.hub.battery_control.set_power_w(2000.0)
        assert site.sim.command.storctl_mod == 3
        await site.hub.__aexit__(None, None, None)
        assert site.sim.command.storctl_mod == 0
