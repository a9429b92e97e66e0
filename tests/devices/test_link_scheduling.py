"""Per-link poll scheduling: a silent unit backs off and never starves the units beside it.

Pure rules first (:mod:`evdlm.devices.scheduling`), then real pymodbus servers on 127.0.0.1:
the demo's garage outage (two units on one Modbus TCP link, 0.5 s wall-time timeout, 3 s max
age, a clock 20× faster than the wall), the same on an RTU-over-TCP link (backoff, no
abandoning), and why a timeout or an abandoned request closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import pytest

from evdlm.config import parse_site_config
from evdlm.config.models import ModbusRtuOverTcpLink, ModbusTcpLink, SiteConfig
from evdlm.core.clock import Clock, ScaledClock, SystemClock
from evdlm.core.types import Quality
from evdlm.devices import DeviceHub
from evdlm.devices.codec import Measurement
from evdlm.devices.errors import DeviceTimeoutError
from evdlm.devices.modbus_transport import READ_HOLDING, ModbusTransport
from evdlm.devices.profile import load_profile
from evdlm.devices.readers import ProfileReader
from evdlm.devices.scheduling import (
    MAX_RETRY_S,
    OTHER_RANK,
    SAFETY_RANK,
    PollOutcome,
    UnitSchedule,
    after_poll,
    hold_until_s,
    pick_next,
    retry_delay_s,
    safety_critical_devices,
)
from evdlm.sim.modbus_servers import Fault, ProfileMeterUnit, SimModbusServer, SimUnit, sunspec_meter_unit

from .test_modbus_loopback import SAMPLE

# ---------------------------------------------------------------- pure rules


def test_the_grid_meter_and_meters_above_chargers_are_safety_critical() -> None:
    config = parse_site_config(
        """
schema_version: 1
site: {id: t}
grid: {import_limit_kw: 50, phase_current_limit_a: 80, meter: grid}
circuits:
  - id: main
    phase_current_limit_a: 80
    meter: main_meter
    children:
      - {id: garage, phase_current_limit_a: 40, meter: garage_meter}
      - {id: kitchen, phase_current_limit_a: 40, meter: kitchen_meter}
chargers:
  - {id: CP01, ocpp_version: "1.6", circuit: garage}
devices:
  - {name: grid, role: grid_meter, sim: {model: grid_meter}}
  - {name: main_meter, role: circuit_meter, sim: {model: circuit_meter}}
  - {name: garage_meter, role: circuit_meter, sim: {model: circuit_meter}}
  - {name: kitchen_meter, role: circuit_meter, sim: {model: circuit_meter}}
  - {name: pv, role: pv, sim: {model: pv}}
control: {fallback_import_limit_kw: 20}
"""
    ).config
    # main_meter has the charger two levels down; the kitchen has none; PV is never critical.
    assert safety_critical_devices(config) == {"grid", "main_meter", "garage_meter"}


def unit(name: str, *, rank: int = SAFETY_RANK, **kw: object) -> UnitSchedule:
    return replace(UnitSchedule(name, period_s=1.0, max_age_s=3.0, rank=rank), **kw)  # type: ignore[arg-type]


def test_pick_order_is_rank_then_answering_then_due() -> None:
    units = [
        unit("pv", rank=OTHER_RANK, next_due_s=0.0, answering=True),
        unit("garage", next_due_s=1.0, failures=3),  # failing: after the critical units that answer
        unit("grid", next_due_s=2.0, answering=True),
        unit("later", next_due_s=9.0, answering=True),  # not due
    ]
    assert pick_next(units, 5.0) == 2
    assert pick_next([units[0], units[1]], 5.0) == 1
    assert pick_next([units[0]], 5.0) == 0
    assert pick_next(units[3:], 5.0) is None


def test_a_poll_holds_the_link_until_an_answering_neighbour_needs_it() -> None:
    grid = unit("grid", answering=True, answered_at_s=100.0, next_due_s=101.0)
    garage = unit("garage", answering=True, answered_at_s=100.0, next_due_s=100.5)
    pv = unit("pv", rank=OTHER_RANK, answering=True, answered_at_s=100.0, next_due_s=101.0)
    # Half the grid reading's remaining life (3 s - 0.2 s) from now.
    assert hold_until_s([garage, grid], 0, 100.2) == pytest.approx(100.2 + 2.8 / 2)
    # An answering critical unit's poll does not yield to a PV inverter ...
    assert math.isinf(hold_until_s([garage, pv], 0, 100.2))
    # ... a failing unit's probe yields to everything that answers.
    probe = replace(garage, answering=False, failures=2)
    assert hold_until_s([probe, pv], 0, 100.2) == pytest.approx(101.6)
    # Never before the neighbour is due, and at least half its period even when it is stale.
    assert hold_until_s([garage, replace(grid, next_due_s=104.0)], 0, 100.2) == 104.0
    assert hold_until_s([garage, grid], 0, 110.0) == pytest.approx(110.5)
    # Units that do not answer bound nothing.
    assert math.isinf(hold_until_s([garage, replace(grid, answering=False)], 0, 100.2))


def test_failed_polls_back_off_to_the_cap_and_one_answer_restores_the_period() -> None:
    rng = random.Random(7)
    schedule = unit("garage", answering=True, answered_at_s=0.0)
    delays = []
    for _ in range(12):
        schedule = after_poll(schedule, PollOutcome.FAILED, 100.0, 100.5, rng)
        delays.append(schedule.next_due_s - 100.0)
    assert delays[0] == 1.0  # one lost answer: retried after one period
    for failures, delay in enumerate(delays, start=1):
        nominal = min(MAX_RETRY_S, 2.0 ** (failures - 1))
        assert max(1.0, nominal / 2) <= delay <= max(1.0, nominal)
    assert delays[-1] >= MAX_RETRY_S / 2
    assert retry_delay_s(50, 60.0, rng) >= 60.0  # a slow poller never retries faster than its period

    down = after_poll(schedule, PollOutcome.LINK_DOWN, 200.0, 200.0, rng)
    assert (down.failures, down.next_due_s) == (schedule.failures, 201.0)  # the transport backs off, not the unit
    back = after_poll(down, PollOutcome.ANSWERED, 300.0, 300.1, rng)
    assert (back.failures, back.answering, back.answered_at_s, back.next_due_s) == (0, True, 300.1, 301.0)


# ---------------------------------------------------------------- two units, one link, real servers


def two_meter_site(link: str) -> SiteConfig:
    """The demo's meters_lan: grid (unit 1) and garage sub-meter (unit 2), 1 s polls, 3 s max age."""
    return parse_site_config(
        f"""
schema_version: 1
site: {{id: t}}
grid: {{import_limit_kw: 50, phase_current_limit_a: 80, meter: grid}}
circuits: [{{id: garage, phase_current_limit_a: 40, meter: garage}}]
chargers: [{{id: CP01, ocpp_version: "1.6", circuit: garage}}]
modbus_links: [{link}]
devices:
  - {{name: grid, role: grid_meter, max_age_s: 3, modbus: {{link: meters, unit_id: 1, profile: sdm630}}}}
  - {{name: garage, role: circuit_meter, max_age_s: 3, modbus: {{link: meters, unit_id: 2, profile: sunspec}}}}
control: {{fallback_import_limit_kw: 20}}
"""
    ).config


@dataclass
class Watch:
    """What a sampler saw of one device: qualities, and the oldest its reading got."""

    qualities: set[Quality]
    worst_age_s: float = 0.0


@contextlib.asynccontextmanager
async def watching(hub: DeviceHub, clock: Clock, name: str) -> AsyncIterator[Watch]:
    watch = Watch(set())

    async def sample() -> None:
        while True:
            reading = hub.snapshot(clock.now_s())[name]
            watch.qualities.add(reading.quality)
            watch.worst_age_s = max(watch.worst_age_s, clock.now_s() - reading.taken_at_s)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(sample())
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(clock: Clock, predicate: Callable[[], bool], within_s: float) -> float:
    """Wait (clock time) until ``predicate()``; returns how long it took."""
    started_s = clock.now_s()
    while not predicate():
        assert clock.now_s() - started_s < within_s, f"not within {within_s} s"
        await asyncio.sleep(0.002)
    return clock.now_s() - started_s


async def test_a_silent_unit_never_makes_its_tcp_neighbour_stale() -> None:
    # The demo's numbers: a 0.5 s (wall) timeout is 10 s of this clock, far beyond the 3 s max
    # age (20×, not the demo's 40×: a 3 s max age is 150 ms of wall time, slack for a busy CI).
    clock = ScaledClock(time.time(), speed=20.0)
    units: dict[int, SimUnit] = {
        1: ProfileMeterUnit(load_profile("sdm630"), lambda now_s: SAMPLE),
        2: sunspec_meter_unit(lambda now_s: SAMPLE, serial="garage"),
    }
    async with SimModbusServer(units, clock) as server:
        link = f"{{name: meters, type: tcp, host: 127.0.0.1, port: {server.port}, timeout_s: 0.5}}"
        async with DeviceHub(two_meter_site(link), clock) as hub:
            ok = {Quality.OK}
            await until(clock, lambda: {r.quality for r in hub.snapshot(clock.now_s()).values()} == ok, 10.0)
            polls = {name: hub.polls(name) for name in ("grid", "garage")}
            async with watching(hub, clock, "grid") as grid:
                server.faults.inject(Fault("silent"), unit_id=2)
                await clock.sleep(60.0)
                during = {name: hub.polls(name) - polls[name] for name in polls}
                assert hub.snapshot(clock.now_s())["garage"].quality is Quality.STALE
                server.faults.clear(unit_id=2)
                recovery_s = await until(
                    clock, lambda: hub.snapshot(clock.now_s())["garage"].quality is Quality.OK, 40.0
                )
                polls = {name: hub.polls(name) for name in polls}
                await clock.sleep(10.0)
                after = {name: hub.polls(name) - polls[name] for name in polls}
    assert grid.qualities == {Quality.OK}, grid
    assert grid.worst_age_s < 3.0
    assert during["grid"] >= 40  # ~55 at 1 s; before per-link scheduling: 4
    # Backed off: 1 + 1 + 1-2 + 2-4 + 4-8 + 8-16 + 15-30 s apart, 6-8 probes in 60 s.
    assert 4 <= during["garage"] <= 10, during
    assert recovery_s <= MAX_RETRY_S + 3.0
    assert after["garage"] >= 7 and after["grid"] >= 7, after  # both back at their period


async def test_on_rtu_framing_a_silent_unit_is_backed_off_too() -> None:
    clock = SystemClock()
    units: dict[int, SimUnit] = {
        1: ProfileMeterUnit(load_profile("sdm630"), lambda now_s: SAMPLE),
        2: sunspec_meter_unit(lambda now_s: SAMPLE, serial="garage"),
    }
    async with SimModbusServer(units, clock, rtu_framing=True) as server:
        link = f"{{name: meters, type: rtu_over_tcp, host: 127.0.0.1, port: {server.port}, timeout_s: 0.1}}"
        config = two_meter_site(link)
        config = config.model_copy(
            update={"devices": [d.model_copy(update={"poll_period_s": 0.1, "max_age_s": 1.0}) for d in config.devices]}
        )
        async with DeviceHub(config, clock) as hub:
            assert not hub.transports["meters"].abandonable
            ok = {Quality.OK}
            await until(clock, lambda: {r.quality for r in hub.snapshot(clock.now_s()).values()} == ok, 5.0)
            before = {name: hub.polls(name) for name in ("grid", "garage")}
            async with watching(hub, clock, "grid") as grid:
                server.faults.inject(Fault("silent"), unit_id=2)
                await asyncio.sleep(4.0)
            during = {name: hub.polls(name) - before[name] for name in before}
    assert grid.qualities == {Quality.OK}, grid
    # Unscheduled, the garage would be asked every 0.2 s (0.1 s timeout + 0.1 s period): ~20 times.
    assert during["garage"] <= 10, during
    assert during["grid"] >= 15, during


# ---------------------------------------------------------------- what a timeout does to the connection


def sample_w(power_w: float) -> Measurement:
    return replace(SAMPLE, power_w=power_w)


async def test_a_late_answer_on_modbus_tcp_is_never_read_as_another_units() -> None:
    clock = SystemClock()
    units = {
        1: ProfileMeterUnit(load_profile("sdm630"), lambda now_s: sample_w(1000.0)),
        2: ProfileMeterUnit(load_profile("sdm630"), lambda now_s: sample_w(2000.0)),
    }
    async with SimModbusServer(units, clock) as server:
        link = ModbusTcpLink(name="lan", type="tcp", host="127.0.0.1", port=server.port, timeout_s=0.4)
        async with ModbusTransport(link, clock) as transport:
            one = ProfileReader(transport, 1, load_profile("sdm630"), False)
            two = ProfileReader(transport, 2, load_profile("sdm630"), False)
            assert (await two.read()).power_w == pytest.approx(2000.0)
            # Unit 2 answers 0.6 s late, while unit 1's request (answered after 0.3 s) is out. On
            # the same connection pymodbus's server would stamp unit 2's answer with unit 1's
            # transaction id, and unit 1 would read unit 2's power: the timeout has to close it.
            server.faults.inject(Fault("slow", delay_s=0.6), unit_id=2)
            server.faults.inject(Fault("slow", delay_s=0.3), unit_id=1)
            with pytest.raises(DeviceTimeoutError):
                await two.read()
            assert not transport.connected
            assert (await one.read()).power_w == pytest.approx(1000.0)
            server.faults.clear()
            assert (await one.read()).power_w == pytest.approx(1000.0)
            assert (await two.read()).power_w == pytest.approx(2000.0)
            assert transport.connects == 2


@pytest.mark.parametrize("rtu_framing", [False, True])
async def test_an_abandoned_request_closes_the_connection(rtu_framing: bool) -> None:
    clock = SystemClock()
    units = {1: ProfileMeterUnit(load_profile("sdm630"), lambda now_s: SAMPLE)}
    async with SimModbusServer(units, clock, rtu_framing=rtu_framing) as server:
        link: ModbusTcpLink | ModbusRtuOverTcpLink
        if rtu_framing:
            link = ModbusRtuOverTcpLink(name="gw", type="rtu_over_tcp", host="127.0.0.1", port=server.port)
        else:
            link = ModbusTcpLink(name="lan", type="tcp", host="127.0.0.1", port=server.port)
        async with ModbusTransport(link, clock) as transport:
            assert transport.abandonable is not rtu_framing
            server.faults.inject(Fault("slow", delay_s=0.3))
            request = asyncio.create_task(transport.read_registers(1, READ_HOLDING, 0, 2))
            await asyncio.sleep(0.05)
            assert transport.connected
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request
            assert not transport.connected
            server.faults.clear()
            reader = ProfileReader(transport, 1, load_profile("sdm630"), False)
            assert (await reader.read()).power_w == pytest.approx(SAMPLE.power_w)
            await asyncio.sleep(0.3)  # the abandoned request's answer went to the closed connection
            assert (await reader.read()).power_w == pytest.approx(SAMPLE.power_w)
