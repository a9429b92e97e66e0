"""A corrupt SunSpec chain, and library errors in general, end as one reason, never a traceback.

A device whose model length points past register 65535 once made pymodbus raise ``ValueError``
on the next header's address: an untranslated exception and a 39-line traceback on every poll.
"""

from __future__ import annotations

import logging
import time

import pytest

from evdlm.config import parse_site_config
from evdlm.config.models import ModbusTcpLink
from evdlm.core.clock import SystemClock
from evdlm.core.types import Quality
from evdlm.devices import DeviceHub, sunspec
from evdlm.devices.codec import Measurement
from evdlm.devices.errors import BadResponseError, DiscoveryError
from evdlm.devices.modbus_transport import ILLEGAL_ADDRESS, READ_HOLDING, ModbusTransport, RegisterServer, ServerReply
from evdlm.sim.site_physics import SiteSimParams, SiteSimulation, sim_readers

HUB_LOG = "evdlm.devices.hub"
CLOCK = SystemClock()


def chain_image(lengths: list[int], base: int = 40000) -> dict[int, int]:
    """Registers of a chain: marker at ``base``, then models 1 of the given lengths (L only)."""
    image = {base: sunspec.SUNS_MARKER[0], base + 1: sunspec.SUNS_MARKER[1]}
    address = base + 2
    for length in lengths:
        image[address], image[address + 1] = 1, length
        address += 2 + length
    if address + 1 <= 0xFFFF:
        image[address], image[address + 1] = sunspec.END_MODEL_ID, 0
    return image


def reader_for(image: dict[int, int]) -> sunspec.ReadFn:
    async def read(address: int, count: int) -> list[int]:
        assert address >= 0 and address + count <= 0x10000, "asked for an address Modbus cannot carry"
        return [image.get(address + i, 0) for i in range(count)]

    return read


async def test_a_model_running_past_register_65535_is_a_discovery_error() -> None:
    with pytest.raises(DiscoveryError, match=r"model 1 at register 40002 declares length 30000.*past register 65535"):
        await sunspec.discover_models(reader_for(chain_image([30000])))


async def test_a_chain_filling_the_address_space_exactly_ends_there() -> None:
    # Model 1 ends at register 65535: no room for an end marker, and none needed.
    headers = await sunspec.discover_models(reader_for(chain_image([0x10000 - 40004])))
    assert [(h.model_id, h.address + 2 + h.length) for h in headers] == [(1, 0x10000)]


async def test_the_transport_reports_library_errors_as_device_errors() -> None:
    async def read(unit_id: int, function_code: int, address: int, count: int) -> ServerReply:
        return [0] * count

    async def write(unit_id: int, address: int, values: list[int]) -> ServerReply:
        return ILLEGAL_ADDRESS

    async with RegisterServer([1], read, write) as server:
        link = ModbusTcpLink(name="lan", type="tcp", host="127.0.0.1", port=server.port, timeout_s=0.5)
        async with ModbusTransport(link, CLOCK) as transport:
            with pytest.raises(BadResponseError, match=r"65534\.\.65537 are outside"):
                await transport.read_registers(1, READ_HOLDING, 65534, 4)
            with pytest.raises(BadResponseError):
                await transport.read_registers(1, READ_HOLDING, 70004, 2)
            assert await transport.read_registers(1, READ_HOLDING, 65534, 2) == [0, 0]
            # What pymodbus itself raises (struct.error encoding a register past 65535) too.
            with pytest.raises(BadResponseError, match="error in the Modbus library"):
                await transport.write_registers(1, 0, [70000])
            assert await transport.read_registers(1, READ_HOLDING, 0, 2) == [0, 0]


def corrupt_sunspec_server() -> RegisterServer:
    """Unit 1: "SunS", model 1 whose L (30000) puts the next header at register 70004."""
    image = chain_image([30000])

    async def read(unit_id: int, function_code: int, address: int, count: int) -> ServerReply:
        if function_code != READ_HOLDING or address not in range(40000, 40004):
            return ILLEGAL_ADDRESS
        return [image.get(address + i, 0) for i in range(count)]

    async def write(unit_id: int, address: int, values: list[int]) -> ServerReply:
        return ILLEGAL_ADDRESS

    return RegisterServer([1], read, write)


async def test_a_corrupt_chain_is_missing_with_its_reason_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with corrupt_sunspec_server() as server:
        config = parse_site_config(
            f"""
schema_version: 1
site: {{id: t}}
grid: {{import_limit_kw: 50, phase_current_limit_a: 80, meter: grid}}
circuits: [{{id: main, phase_current_limit_a: 80}}]
chargers: [{{id: CP01, ocpp_version: "1.6", circuit: main}}]
modbus_links: [{{name: lan, type: tcp, host: 127.0.0.1, port: {server.port}, timeout_s: 0.5}}]
devices: [{{name: grid, role: grid_meter, modbus: {{link: lan, unit_id: 1, profile: sunspec}}}}]
control: {{fallback_import_limit_kw: 20}}
"""
        ).config
        hub = DeviceHub(config, CLOCK)  # not entered: this test polls by hand
        try:
            readings = [await hub.poll_once("grid") for _ in range(5)]
        finally:
            for transport in hub.transports.values():
                transport.close()
    for reading in readings:
        assert reading.quality in (Quality.MISSING, Quality.INVALID)
        assert reading.power_w is None
        assert "past register 65535" in (reading.reason or ""), reading.reason
    assert not [record for record in caplog.records if record.exc_info], "no traceback"
    lines = [r.getMessage() for r in caplog.records if r.name == HUB_LOG]
    assert sum("read failed" in line for line in lines) == 1, lines  # one line for the state, not per poll


async def test_an_unexpected_error_logs_its_traceback_once_per_device(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_site_config(
        """
schema_version: 1
site: {id: t}
grid: {import_limit_kw: 50, phase_current_limit_a: 80, meter: grid}
circuits: [{id: main, phase_current_limit_a: 80}]
chargers: [{id: CP01, ocpp_version: "1.6", circuit: main}]
devices: [{name: grid, role: grid_meter, sim: {model: grid_meter}}]
control: {fallback_import_limit_kw: 20}
"""
    ).config
    simulation = SiteSimulation(SiteSimParams(), time.time())
    healthy = simulation.grid_meter
    broken = {"now": True}

    def grid_meter(now_s: float) -> Measurement:
        if broken["now"]:
            raise RuntimeError("decoder bug")
        return healthy(now_s)

    simulation.grid_meter = grid_meter  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger=HUB_LOG)
    hub = DeviceHub(config, CLOCK, readers=sim_readers(config, simulation, CLOCK))
    for _ in range(3):
        assert (await hub.poll_once("grid")).reason == "internal error: RuntimeError('decoder bug')"
    broken["now"] = False
    assert (await hub.poll_once("grid")).quality is Quality.OK
    broken["now"] = True
    for _ in range(3):
        await hub.poll_once("grid")
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    failed = [r.getMessage() for r in caplog.records if "read failed" in r.getMessage()]
    assert len(failed) == 2  # one line per change into failing, none per poll
