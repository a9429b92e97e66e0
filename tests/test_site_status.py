"""The first day at a site: `evdlm run` with nothing connected says so at the default level, once.

The site status line (grid meter, fallback limit, chargers k of N, devices, DR) is logged on
each change and as a summary every few minutes; a battery that cannot be written warns once,
then every few minutes with the count, not every cycle.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from evdlm.config import SiteConfig, parse_site_config
from evdlm.control import Controller, CycleReport
from evdlm.core.clock import FakeClock, SystemClock
from evdlm.core.types import ChargingCommand, CommandResult, CommandStatus, EvseState, Quality, Reading
from evdlm.gateway import Gateway
from evdlm.site_status import SiteStatusLog, site_status

NOW_S = 1_800_000_000.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _site(port: int, battery: bool = False) -> str:
    text = f"""\
site: {{id: day1}}
grid: {{import_limit_kw: 50, phase_current_limit_a: 80, meter: gm}}
circuits: [{{id: main, phase_current_limit_a: 80}}]
chargers:
  - {{id: CP1, ocpp_version: "1.6", circuit: main}}
  - {{id: CP2, ocpp_version: "2.0.1", circuit: main}}
modbus_links: [{{name: lan, type: tcp, host: 127.0.0.1, port: {port}, timeout_s: 0.2}}]
devices:
  - {{name: gm, role: grid_meter, max_age_s: 3, modbus: {{link: lan, unit_id: 1, profile: sunspec}}}}
ocpp: {{port: 0, authorization: {{accept_all: true}}}}
control: {{fallback_import_limit_kw: 20, cycle_period_s: 0.1, lease_refresh_s: 5}}
recording: {{enabled: false}}
"""
    if battery:
        text = text.replace(
            "devices:\n",
            "devices:\n  - {name: store, role: battery, modbus: {link: lan, unit_id: 2, profile: sunspec}}\n",
        )
        text += "battery: {device: store, max_charge_kw: 5, max_discharge_kw: 5, capacity_kwh: 10}\n"
    return text


def _config(battery: bool = False) -> SiteConfig:
    return parse_site_config(_site(_free_port(), battery)).config


class NoMeters:
    def snapshot(self, now_s: float) -> dict[str, Reading]:
        return {"gm": Reading.missing("gm", now_s, "connection refused")}


class Chargers:
    def __init__(self) -> None:
        self.states: dict[tuple[str, int], EvseState] = {}

    def evse_states(self) -> dict[tuple[str, int], EvseState]:
        return dict(self.states)

    def connect(self, charger: str) -> None:
        self.states[(charger, 1)] = EvseState(charger, 1, online=True, connected=False, charging=False, updated_at_s=0)

    async def apply(self, commands: Sequence[ChargingCommand]) -> list[CommandResult]:
        return [CommandResult(c, CommandStatus.ACCEPTED, NOW_S) for c in commands]


class DeadBattery:
    def __init__(self) -> None:
        self.writes = 0
        self.releases = 0
        self.fail = True

    async def set_power_w(self, power_w: float) -> float:
        self.writes += 1
        if self.fail:
            raise ConnectionError("battery store: connection refused")
        return power_w

    async def release(self) -> None:
        self.releases += 1


async def _cycles(controller: Controller, clock: FakeClock, count: int, step_s: float = 1.0) -> list[CycleReport]:
    reports = []
    for _ in range(count):
        reports.append(await controller.run_cycle())
        await asyncio.sleep(0)  # the battery write of the cycle runs
        clock.advance(step_s)
    return reports


def _status_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "evdlm.status"]


async def test_nothing_connected_is_said_once_at_the_default_level(caplog: pytest.LogCaptureFixture) -> None:
    config = _config()
    caplog.set_level(config.observability.log_level)  # INFO unless the site says otherwise
    clock = FakeClock(NOW_S)
    chargers = Chargers()
    controller = Controller(config, clock, NoMeters(), chargers)
    status = SiteStatusLog()
    for report in await _cycles(controller, clock, 20):
        status.emit(report, config)
    await controller.close()
    (record,) = _status_lines(caplog)
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "grid meter gm NOT usable (missing: connection refused)" in message
    assert "fallback import limit 20 kW in force" in message
    assert "0 of 2 chargers connected" in message
    assert "1 of 1 devices not usable: gm (missing)" in message


async def test_changes_are_logged_and_a_summary_every_five_minutes(caplog: pytest.LogCaptureFixture) -> None:
    config = _config()
    caplog.set_level(logging.INFO)
    clock = FakeClock(NOW_S)
    chargers = Chargers()
    controller = Controller(config, clock, NoMeters(), chargers)
    status = SiteStatusLog()
    for report in await _cycles(controller, clock, 3):
        status.emit(report, config)
    chargers.connect("CP1")  # none -> some: at once
    for report in await _cycles(controller, clock, 3):
        status.emit(report, config)
    lines = [r.getMessage() for r in _status_lines(caplog)]
    assert len(lines) == 2 and "1 of 2 chargers connected" in lines[1]
    # Nothing changes for 5 minutes: one summary.
    for report in await _cycles(controller, clock, 12, step_s=30.0):
        status.emit(report, config)
    await controller.close()
    lines = [r.getMessage() for r in _status_lines(caplog)]
    assert len(lines) == 3
    assert lines[2].startswith("site summary: site day1:") and "1 of 2 chargers connected" in lines[2]


class Meter:
    def snapshot(self, now_s: float) -> dict[str, Reading]:
        return {
            "gm": Reading(
                device="gm",
                taken_at_s=now_s,
                quality=Quality.OK,
                power_w=2070.0,
                phase_power_w=(690.0, 690.0, 690.0),
                phase_current_a=(3.0, 3.0, 3.0),
                phase_voltage_v=(230.0, 230.0, 230.0),
            )
        }


async def test_the_status_of_a_healthy_site_is_info() -> None:
    config = _config()
    chargers = Chargers()
    chargers.connect("CP1")
    chargers.connect("CP2")
    controller = Controller(config, FakeClock(NOW_S), Meter(), chargers)
    report = await controller.run_cycle()
    await controller.close()
    status = site_status(report, config)
    assert status is not None
    assert not status.degraded and status.level == logging.INFO
    assert status.line() == "site day1: grid meter gm OK; 2 of 2 chargers connected; 1 of 1 devices usable"


async def test_a_dead_battery_warns_once_then_every_few_minutes(caplog: pytest.LogCaptureFixture) -> None:
    config = _config(battery=True)
    caplog.set_level(logging.INFO)
    clock = FakeClock(NOW_S)
    battery = DeadBattery()
    controller = Controller(config, clock, NoMeters(), Chargers(), battery=battery)
    await _cycles(controller, clock, 120)  # 2 minutes of 1 s cycles
    warnings = [r.getMessage() for r in caplog.records if "battery setpoint" in r.getMessage()]
    assert battery.writes >= 100
    assert len(warnings) == 1 and "connection refused" in warnings[0]
    await _cycles(controller, clock, 200)  # past 5 minutes: one more, with the count
    warnings = [r.getMessage() for r in caplog.records if "battery setpoint" in r.getMessage()]
    assert len(warnings) == 2 and "times in the last 300 s" in warnings[1]
    battery.fail = False
    await _cycles(controller, clock, 3)
    await controller.close()
    await controller.close()  # as the gateway does after run() closed it: released once
    assert battery.releases == 1
    cleared = [r for r in caplog.records if "written again" in r.getMessage()]
    assert len(cleared) == 1 and cleared[0].levelno == logging.INFO


@pytest.mark.timeout(90)
async def test_the_gateway_says_it_at_the_default_level(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """`evdlm run` with nothing there: the meter's port refuses, no charger connects."""
    config = _config()
    caplog.set_level(config.observability.log_level)
    async with Gateway(config, SystemClock(), state_dir=tmp_path) as gateway:
        await gateway.run(asyncio.Event(), max_cycles=15)
    (record,) = _status_lines(caplog)
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "grid meter gm NOT usable" in message
    assert "fallback import limit 20 kW in force" in message
    assert "0 of 2 chargers connected" in message
