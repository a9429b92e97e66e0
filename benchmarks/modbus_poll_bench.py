"""Poll-cycle time for 20 Modbus devices over loopback: one shared link vs one link each.

Every device is a simulator unit (a mix of SDM630, EM24, Janitza UMG 604 and SunSpec 203
meters) answering from the same process and event loop as the client, so the figures include
the server's work too (pessimistic for a real gateway, optimistic for a slow RS-485 line).
One cycle reads every device once, all concurrently, the way the DeviceHub's polling tasks
do; on a shared link the transport's lock serializes the requests.

    .venv/bin/python benchmarks/modbus_poll_bench.py [--cycles 200] [--devices 20]

Prints one JSON document: per scenario, p50 / p99 / max cycle time in ms and requests per cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import statistics
import time
from typing import Any

from evdlm.config.models import DeviceRole, ModbusTcpLink
from evdlm.core.clock import SystemClock
from evdlm.devices.codec import Measurement
from evdlm.devices.modbus_transport import ModbusTransport
from evdlm.devices.profile import load_profile
from evdlm.devices.readers import ProfileReader, Reader, SunSpecReader
from evdlm.sim.modbus_servers import ProfileMeterUnit, SimModbusServer, SimUnit, sunspec_meter_unit

CLOCK = SystemClock()
PROFILES = ("sdm630", "em24", "janitza_umg604", "sunspec")


def sample(now_s: float) -> Measurement:
    return Measurement(
        power_w=4200.0,
        phase_power_w=(1500.0, 1400.0, 1300.0),
        phase_current_a=(6.5, 6.1, 5.7),
        phase_voltage_v=(230.0, 230.0, 230.0),
        frequency_hz=50.0,
        import_energy_wh=2_000_000.0,
        export_energy_wh=1_000.0,
    )


def unit_for(index: int) -> tuple[str, SimUnit]:
    name = PROFILES[index % len(PROFILES)]
    if name == "sunspec":
        return name, sunspec_meter_unit(sample, serial=f"m{index}")
    return name, ProfileMeterUnit(load_profile(name), sample)


def reader_for(name: str, transport: ModbusTransport, unit_id: int) -> Reader:
    if name == "sunspec":
        return SunSpecReader(transport, unit_id, DeviceRole.GRID_METER, False)
    return ProfileReader(transport, unit_id, load_profile(name), False)


def percentile_ms(values_s: list[float], q: float) -> float:
    ordered = sorted(values_s)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index] * 1000.0, 3)


async def run(devices: int, links: int, cycles: int) -> dict[str, Any]:
    """``devices`` meters spread round-robin over ``links`` links (servers + transports)."""
    layout: dict[int, dict[int, tuple[str, SimUnit]]] = {}
    for index in range(devices):
        layout.setdefault(index % links, {})[index // links + 1] = unit_for(index)
    servers = [SimModbusServer({uid: unit for uid, (_, unit) in units.items()}, CLOCK) for units in layout.values()]
    transports: list[ModbusTransport] = []
    readers: list[Reader] = []
    try:
        for server, units in zip(servers, layout.values(), strict=True):
            await server.start()
            link = ModbusTcpLink(name=f"l{server.port}", type="tcp", host="127.0.0.1", port=server.port, timeout_s=1.0)
            transport = ModbusTransport(link, CLOCK)
            transports.append(transport)
            readers.extend(reader_for(name, transport, uid) for uid, (name, _) in units.items())
        await asyncio.gather(*(reader.read() for reader in readers))  # connect + SunSpec discovery
        requests_before = sum(t.requests for t in transports)
        durations_s: list[float] = []
        for _ in range(cycles):
            started = time.perf_counter()
            await asyncio.gather(*(reader.read() for reader in readers))
            durations_s.append(time.perf_counter() - started)
        errors = sum(t.errors for t in transports)
        return {
            "devices": devices,
            "links": links,
            "cycles": cycles,
            "requests_per_cycle": (sum(t.requests for t in transports) - requests_before) / cycles,
            "p50_ms": percentile_ms(durations_s, 0.50),
            "p99_ms": percentile_ms(durations_s, 0.99),
            "max_ms": round(max(durations_s) * 1000.0, 3),
            "mean_ms": round(statistics.fmean(durations_s) * 1000.0, 3),
            "errors": errors,
        }
    finally:
        for transport in transports:
            transport.close()
        for server in servers:
            await server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--devices", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = {
        "serial_one_link": await run(args.devices, 1, args.cycles),
        "four_links": await run(args.devices, 4, args.cycles),
        "parallel_link_per_device": await run(args.devices, args.devices, args.cycles),
    }
    print(
        json.dumps(
            {
                "benchmark": "modbus_poll",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
