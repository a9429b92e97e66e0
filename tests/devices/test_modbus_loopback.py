"""Real pymodbus server and client on 127.0.0.1: transports, readers and faults."""

from __future__ import annotations

import asyncio
import time

import pytest

from evdlm.config.models import DeviceRole, ModbusRtuLink, ModbusRtuOverTcpLink, ModbusTcpLink
from evdlm.core.clock import SystemClock
from evdlm.devices.codec import Measurement
from evdlm.devices.errors import DeviceTimeoutError, ModbusExceptionResponse, TransportError
from evdlm.devices.modbus_transport import ModbusTransport
from evdlm.devices.profile import load_profile
from evdlm.devices.readers import ProfileReader, SunSpecReader
from evdlm.sim.modbus_servers import Fault, ProfileMeterUnit, SimModbusServer, sunspec_meter_unit

CLOCK = SystemClock()
SAMPLE = Measurement(
    power_w=4200.0,
    phase_power_w=(1500.0, 1400.0, 1300.0),
    phase_current_a=(6.5, 6.1, 5.7),
    phase_voltage_v=(230.0, 230.0, 230.0),
    frequency_hz=50.0,
    import_energy_wh=2_000_000.0,
    export_energy_wh=1_000.0,
)


def sample(now_s: float) -> Measurement:
    return SAMPLE


class CountingUnit(ProfileMeterUnit):
    """Records the size of every request it answers."""

    def __init__(self, profile_name: str) -> None:
        super().__init__(load_profile(profile_name), sample)
        self.counts: list[int] = []

    def read(self, now_s: float, function_code: int, address: int, count: int) -> list[int] | int | None:
        self.counts.append(count)
        return super().read(now_s, function_code, address, count)


def tcp_link(port: int, **kw: object) -> ModbusTcpLink:
    return ModbusTcpLink(name="lan", type="tcp", host="127.0.0.1", port=port, **{"timeout_s": 0.3, **kw})  # type: ignore[arg-type]


async def test_several_meters_share_one_link() -> None:
    units = {
        1: ProfileMeterUnit(load_profile("sdm630"), sample),
        2: ProfileMeterUnit(load_profile("em24"), sample),
        3: ProfileMeterUnit(load_profile("janitza_umg604"), sample),
        4: sunspec_meter_unit(sample, serial="x"),
    }
    async with SimModbusServer(units, CLOCK) as server, ModbusTransport(tcp_link(server.port), CLOCK) as transport:
        readers = [
            ProfileReader(transport, 1, load_profile("sdm630"), False),
            ProfileReader(transport, 2, load_profile("em24"), False),
            ProfileReader(transport, 3, load_profile("janitza_umg604"), False),
            SunSpecReader(transport, 4, DeviceRole.GRID_METER, False),
        ]
        results = await asyncio.gather(*(reader.read() for reader in readers))
    for m in results:
        assert m.power_w == pytest.approx(4200.0, abs=5.0)
        assert m.phase_current_a == pytest.approx((6.5, 6.1, 5.7), abs=0.01)
        assert m.import_energy_wh == pytest.approx(2_000_000.0, abs=1.0)


@pytest.mark.parametrize("limit", [125, 20])
async def test_requests_respect_max_registers(limit: int) -> None:
    unit = CountingUnit("sdm630")
    async with (
        SimModbusServer({1: unit}, CLOCK) as server,
        ModbusTransport(tcp_link(server.port, max_registers_per_request=limit), CLOCK) as transport,
    ):
        m = await ProfileReader(transport, 1, load_profile("sdm630"), False).read()
    assert m.power_w == pytest.approx(4200.0)
    assert max(unit.counts) <= min(limit, 60)  # the SDM630 profile's own limit is 60


async def test_rtu_over_tcp_and_serial_rtu() -> None:
    unit = ProfileMeterUnit(load_profile("sdm72d_m_v2"), sample)
    async with SimModbusServer({7: unit}, CLOCK, rtu_framing=True) as server:
        over_tcp = ModbusRtuOverTcpLink(
            name="gw", type="rtu_over_tcp", host="127.0.0.1", port=server.port, timeout_s=0.3
        )
        # pyserial's socket:// URL lets the serial RTU client talk to the loopback server.
        serial = ModbusRtuLink(
            name="rs485", type="rtu", serial_port=f"socket://127.0.0.1:{server.port}", baudrate=9600, timeout_s=0.3
        )
        for link in (over_tcp, serial):
            async with ModbusTransport(link, CLOCK) as transport:
                m = await ProfileReader(transport, 7, load_profile("sdm72d_m_v2"), False).read()
            assert m.power_w == pytest.approx(4200.0)


async def test_exception_responses_are_translated() -> None:
    async with SimModbusServer({1: ProfileMeterUnit(load_profile("sdm630"), sample)}, CLOCK) as server:
        server.faults.inject(Fault("exception", exception_code=2), unit_id=1)
        async with ModbusTransport(tcp_link(server.port), CLOCK) as transport:
            with pytest.raises(ModbusExceptionResponse) as info:
                await transport.read_registers(1, 4, 0, 2)
            assert (info.value.function_code, info.value.exception_code) == (4, 2)
            assert transport.connected  # an exception answer is not a transport failure


async def test_silent_device_times_out_within_the_link_timeout() -> None:
    async with SimModbusServer({1: ProfileMeterUnit(load_profile("sdm630"), sample)}, CLOCK) as server:
        server.faults.inject(Fault("silent"))
        async with ModbusTransport(tcp_link(server.port, timeout_s=0.2), CLOCK) as transport:
            started = time.monotonic()
            with pytest.raises(DeviceTimeoutError):
                await transport.read_registers(1, 4, 0, 2)
            assert time.monotonic() - started < 1.0
            server.faults.clear()
            assert len(await transport.read_registers(1, 4, 0, 2)) == 2  # reconnects and carries on


async def test_server_down_then_back_reconnects_after_backoff() -> None:
    server = SimModbusServer({1: ProfileMeterUnit(load_profile("sdm630"), sample)}, CLOCK)
    await server.start()
    transport = ModbusTransport(tcp_link(server.port), CLOCK, backoff_initial_s=0.1, backoff_max_s=0.2)
    try:
        assert len(await transport.read_registers(1, 4, 0, 2)) == 2
        await server.stop()
        with pytest.raises(TransportError):
            await transport.read_registers(1, 4, 0, 2)
        # While backing off, requests fail at once instead of hammering the dead gateway.
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(TransportError):
                await transport.read_registers(1, 4, 0, 2)
        assert time.monotonic() - started < 0.1
        await server.start()
        async with asyncio.timeout(3.0):
            while True:
                try:
                    await transport.read_registers(1, 4, 0, 2)
                    break
                except TransportError:
                    await asyncio.sleep(0.05)
        assert transport.connected
    finally:
        transport.close()
        await server.stop()


async def test_garbage_decodes_to_absurd_not_plausible_values() -> None:
    async with SimModbusServer({1: ProfileMeterUnit(load_profile("em24"), sample)}, CLOCK) as server:
        server.faults.inject(Fault("garbage"))
        async with ModbusTransport(tcp_link(server.port), CLOCK) as transport:
            m = await ProfileReader(transport, 1, load_profile("em24"), False).read()
    assert m.power_w is not None and abs(m.power_w) > 1e8


def test_backoff_is_capped_and_jittered() -> None:
    import random

    from evdlm.devices.modbus_transport import backoff_delay_s

    rng = random.Random(1)
    delays = [backoff_delay_s(n, 0.2, 10.0, rng) for n in range(1, 12)]
    for n, delay in enumerate(delays, start=1):
        nominal = min(10.0, 0.2 * 2 ** (n - 1))
        assert nominal / 2 <= delay <= nominal
    assert len({round(backoff_delay_s(8, 0.2, 10.0, rng), 6) for _ in range(20)}) > 1  # jitter


async def test_battery_write_failures_reach_the_caller() -> None:
    from evdlm.config.models import Battery
    from evdlm.devices.battery import SunSpecBatteryControl
    from evdlm.devices.errors import DeviceError
    from evdlm.sim.modbus_servers import sunspec_battery_unit
    from evdlm.sim.site_physics import SiteSimParams, SiteSimulation

    sim = SiteSimulation(SiteSimParams(), CLOCK.now_s())
    battery = Battery(device="b", max_charge_kw=10, max_discharge_kw=10, capacity_kwh=30, control="sunspec_124")
    async with (
        SimModbusServer({1: sunspec_battery_unit(sim, serial="b", with_704=False)}, CLOCK) as server,
        ModbusTransport(tcp_link(server.port), CLOCK) as transport,
    ):
        reader = SunSpecReader(transport, 1, DeviceRole.BATTERY, False)
        control = SunSpecBatteryControl(reader, battery, CLOCK)
        await reader.discover()
        server.faults.inject(Fault("exception", exception_code=4))
        with pytest.raises(DeviceError):
            await control.set_power_w(1000.0)
        assert not control.commanded
        server.faults.clear()
        assert await control.set_power_w(1000.0) == 1000.0
        assert sim.command.storctl_mod == 3
