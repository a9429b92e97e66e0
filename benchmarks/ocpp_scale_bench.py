"""OCPP scale: 1000 simulated EVSEs on one central-system process; how fast does a new limit reach all?

The simulated fleet runs in a child process (its own CPU and event loop) so the figures are the
server's. Every EVSE has a car charging and sends meter values at the configured interval, as on
a real site. Each round commands a changed limit to every EVSE at once; the latency of an EVSE
is from the start of ``apply`` to its charger's SetChargingProfile answer.

    .venv/bin/python benchmarks/ocpp_scale_bench.py [--chargers 1000] [--evses 1] [--rounds 5]

Prints one JSON object. Targets: every limit delivered within 2 s; server RSS ≤ 500 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from typing import Any

from measure import cpu_s, percentile, rss_mb

from evdlm.chargers.ocpp.server import OcppCentralSystem
from evdlm.config.models import SiteConfig
from evdlm.core.clock import SystemClock
from evdlm.core.types import ChargingCommand, CommandStatus
from evdlm.sim.ev import Car
from evdlm.sim.fleet import SimFleet


def bench_config(chargers: int, evses: int, sample_interval_s: int) -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "bench"},
            "grid": {"import_limit_kw": 20_000, "phase_current_limit_a": 10_000},
            "circuits": [{"id": "main", "phase_current_limit_a": 10_000}],
            "chargers": [
                {
                    "id": f"CP{index:04d}",
                    "ocpp_version": "1.6" if index % 2 else "2.0.1",
                    "circuit": "main",
                    "evses": evses,
                }
                for index in range(chargers)
            ],
            "ocpp": {
                "host": "127.0.0.1",
                "port": 0,
                "call_timeout_s": 10,
                "meter_sample_interval_s": sample_interval_s,
            },
            "control": {"fallback_import_limit_kw": 1000, "lease_duration_s": 300, "lease_refresh_s": 100},
        }
    )


def run_fleet(config_json: str, url: str, ready: Any, stop: Any) -> None:
    """Child process: the whole fleet, each EVSE with a car."""

    async def main() -> None:
        config = SiteConfig.model_validate_json(config_json)
        # The simulator stands in for 1000 separate devices: physics every 5 s and no schema
        # checks on its side keep it off the critical path of the server being measured.
        async with SimFleet(config, SystemClock(), url, tick_s=5.0, validate_frames=False) as fleet:
            await fleet.wait_connected(timeout_s=120)
            # Cars arrive spread over one sample interval, as on a real site: their meter values
            # then arrive spread out too instead of in one burst per interval.
            spacing_s = config.ocpp.meter_sample_interval_s / max(1, config.evse_count)
            for charger in config.chargers:
                for evse_id in range(1, charger.evses + 1):
                    fleet.plug_in(charger.id, evse_id, Car(phases=3, max_current_a=32))
                    await asyncio.sleep(spacing_s)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.2)

    asyncio.run(main())


async def bench(chargers: int, evses: int, rounds: int, sample_interval_s: int, idle_s: float) -> dict[str, Any]:
    config = bench_config(chargers, evses, sample_interval_s)
    clock = SystemClock()
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    rss_start_mb = rss_mb()
    async with OcppCentralSystem(config, clock) as central:
        child = context.Process(
            target=run_fleet, args=(config.model_dump_json(), f"ws://127.0.0.1:{central.port}", ready, stop)
        )
        connect_started = time.monotonic()
        child.start()
        try:
            deadline = time.monotonic() + 180
            while not all(central.ready(charger.id) for charger in config.chargers):
                if time.monotonic() > deadline or not child.is_alive():
                    raise RuntimeError("fleet did not come up")
                await asyncio.sleep(0.1)
            # Connected, configuration read, sampling set and fail-safe installed on every charger.
            connected_s = time.monotonic() - connect_started
            while not ready.is_set():
                if time.monotonic() > deadline or not child.is_alive():
                    raise RuntimeError("cars did not plug in")
                await asyncio.sleep(0.1)
            # Meter values of every car reach the server before we measure.
            await asyncio.sleep(sample_interval_s + 1)

            idle_cpu = cpu_s()
            await asyncio.sleep(idle_s)
            idle_cpu_fraction = (cpu_s() - idle_cpu) / idle_s

            latencies_s: list[float] = []
            round_s: list[float] = []
            cpu_per_round_s: list[float] = []
            failures: dict[str, int] = {}
            keys = [(charger.id, evse_id) for charger in config.chargers for evse_id in range(1, charger.evses + 1)]
            for round_index in range(rounds + 1):
                limit_a = 16.0 if round_index % 2 == 0 else 10.0  # changed every round: never inside the deadband
                commands = [ChargingCommand(charger_id, evse_id, limit_a, "A", 3) for charger_id, evse_id in keys]
                cpu_before = cpu_s()
                started_s = clock.now_s()
                results = await central.apply(commands)
                finished_s = clock.now_s()
                if round_index == 0:
                    continue  # the first round installs the leases; later rounds change them
                round_s.append(finished_s - started_s)
                cpu_per_round_s.append(cpu_s() - cpu_before)
                for result in results:
                    if result.status is CommandStatus.ACCEPTED:
                        latencies_s.append(result.at_s - started_s)
                    else:
                        failures[result.status.value] = failures.get(result.status.value, 0) + 1
                await asyncio.sleep(1.0)
            states = central.evse_states()
            following = sum(
                1 for state in states.values() if state.accepted_limit == 10.0 or state.accepted_limit == 16.0
            )
            return {
                "benchmark": "ocpp_scale",
                "chargers": chargers,
                "evses": len(keys),
                "rounds": rounds,
                "meter_sample_interval_s": sample_interval_s,
                "connect_and_configure_s": round(connected_s, 2),
                "delivery_p50_s": round(statistics.median(latencies_s), 3),
                "delivery_p99_s": round(percentile(latencies_s, 0.99), 3),
                "delivery_max_s": round(max(latencies_s), 3),
                "apply_round_max_s": round(max(round_s), 3),
                "all_delivered_within_2_s": max(round_s) <= 2.0 and not failures,
                "failures": failures,
                "evses_with_accepted_limit": following,
                "evses_reporting_meter_values": sum(1 for state in states.values() if state.energy_wh is not None),
                "server_cpu_s_per_round": round(statistics.median(cpu_per_round_s), 3),
                "server_cpu_idle_fraction": round(idle_cpu_fraction, 3),
                "server_rss_start_mb": round(rss_start_mb, 1),
                "server_rss_mb": round(rss_mb(), 1),
                "server_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "rss_within_500_mb": rss_mb() <= 500,
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
            }
        finally:
            stop.set()
            child.join(timeout=30)
            if child.is_alive():
                child.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=1000)
    parser.add_argument("--evses", type=int, default=1, help="EVSEs per charger")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sample-interval-s", type=int, default=10)
    parser.add_argument(
        "--idle-s", type=float, default=10.0, help="steady state measured for CPU (one sample interval)"
    )
    args = parser.parse_args()
    result = asyncio.run(bench(args.chargers, args.evses, args.rounds, args.sample_interval_s, args.idle_s))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
