"""Operator API under load: does polling the site's state slow the control cycle?

The production :class:`~evdlm.gateway.Gateway` with its HTTP API runs in this process on the
cycle bench's 1000-EVSE site (``cycle_bench.site_config``: real OCPP chargers with cars charging
and the Modbus meters in a child process). A second child process runs ``--clients`` HTTP
clients, each with its own connection, polling ``GET /api/v1/state`` every ``1 / --hz`` s (at nice
10: they stand in for browsers on other machines).

Phases in one run, one gateway: ``baseline`` (no clients), ``loaded`` (the clients polling),
``baseline_after`` (clients stopped); each ``--cycles`` cycles after ``--warm-up``. A cycle is
``CycleReport.duration_s`` (the controller's own work: snapshot to dispatch under way), as in the
cycle bench; ``start_late_ms`` is how late each cycle started after its period tick (what the
loop's other work costs the schedule). Target: loaded cycle p99 ≤ 1.2 × the baseline's (the
worse of the two baseline phases is not taken; their mean is the baseline).

    .venv/bin/python benchmarks/api_bench.py [--evses 1000] [--clients 50] [--hz 2] [--cycles 60]
    evdlm bench api --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cycle_bench import run_simulators, site_config
from measure import percentile, rss_mb

from evdlm.config.models import HttpApi, SiteConfig
from evdlm.control import CycleReport
from evdlm.core.clock import SystemClock
from evdlm.gateway import Gateway

TARGET_RATIO = 1.2


def run_clients(url: str, clients: int, hz: float, conn: Any, stop: Any) -> None:
    """Child process: ``clients`` pollers of ``url`` until ``stop``; sends their figures back.

    At a lower priority (nice 10): the clients stand in for operators' browsers on other machines,
    and on this 2-core machine their own parsing would otherwise take the cores the gateway's
    cycle runs on. What they asked for is still served (``requests_per_s`` says so).
    """
    os.nice(10)

    async def main() -> dict[str, Any]:
        import aiohttp

        latencies: list[float] = []
        errors: dict[str, int] = {}
        sizes: list[int] = []

        async def poll(index: int) -> None:
            period_s = 1.0 / hz
            async with aiohttp.ClientSession() as session:
                next_s = time.monotonic() + period_s * index / clients
                while not stop.is_set():
                    await asyncio.sleep(max(0.0, next_s - time.monotonic()))
                    next_s += period_s
                    started = time.monotonic()
                    try:
                        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                            body = await response.read()
                            if response.status == 200:
                                latencies.append(time.monotonic() - started)
                                sizes.append(len(body))
                            else:
                                errors[str(response.status)] = errors.get(str(response.status), 0) + 1
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(poll(index) for index in range(clients)))
        elapsed_s = time.monotonic() - started
        return {
            "requests_ok": len(latencies),
            "requests_per_s": round(len(latencies) / elapsed_s, 1) if elapsed_s > 0 else None,
            "errors": errors,
            "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 2) if latencies else None,
            "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 2) if latencies else None,
            "body_kb": round(sum(sizes) / len(sizes) / 1024, 1) if sizes else None,
        }

    conn.send(asyncio.run(main()))


def _figures(durations: Sequence[float], starts_late_s: Sequence[float]) -> dict[str, Any]:
    return {
        "cycles": len(durations),
        "cycle_p50_ms": round(percentile(durations, 0.5) * 1000, 2),
        "cycle_p99_ms": round(percentile(durations, 0.99) * 1000, 2),
        "cycle_max_ms": round(max(durations) * 1000, 2),
        "start_late_p99_ms": round(percentile(starts_late_s, 0.99) * 1000, 2),
    }


async def bench(
    evses: int, clients: int, hz: float, cycles: int, warm_up: int, log: Callable[[str], None], trace: bool = False
) -> dict[str, Any]:
    snapshots: list[Any] = []
    config = site_config(evses)
    config = config.model_copy(update={"http_api": HttpApi(port=0)})
    clock = SystemClock()
    context = multiprocessing.get_context("spawn")
    sim_conn, sim_end = context.Pipe()
    sim_stop = context.Event()
    simulators = context.Process(target=run_simulators, args=(config.model_dump_json(), sim_end, sim_stop, 2.0))
    simulators.daemon = True
    simulators.start()
    client_stop = context.Event()
    client_conn, client_end = context.Pipe()
    client_process: Any = None
    phases = ("baseline", "loaded", "baseline_after")
    # Durations only: a kept CycleReport holds its cycle's arrays (about 1 MB at 1000 EVSEs), and
    # keeping them grew this process's heap and its collector's pauses.
    by_phase: dict[str, list[float]] = {phase: [] for phase in phases}
    late_by_phase: dict[str, list[float]] = {phase: [] for phase in phases}
    clients_result: dict[str, Any] = {}
    rss_at_phase_start_mb: dict[str, float] = {}
    backlog: dict[str, int | None] = {}
    try:
        if not await asyncio.to_thread(sim_conn.poll, 60):
            raise RuntimeError("Modbus simulators did not start")
        wired = SiteConfig.model_validate_json(sim_conn.recv())
        with tempfile.TemporaryDirectory(prefix="evdlm-api-bench-") as workdir:
            async with Gateway(wired, clock, state_dir=Path(workdir)) as gateway:
                assert gateway.ocpp is not None and gateway.http_api is not None
                sim_conn.send(f"ws://127.0.0.1:{gateway.ocpp.port}")
                deadline = time.monotonic() + 240
                while not all(gateway.ocpp.ready(charger.id) for charger in wired.chargers):
                    if time.monotonic() > deadline or not simulators.is_alive():
                        raise RuntimeError("chargers did not come up")
                    await asyncio.sleep(0.1)
                if not await asyncio.to_thread(sim_conn.poll, 120) or sim_conn.recv() != "plugged":
                    raise RuntimeError("cars did not plug in")
                url = f"http://127.0.0.1:{gateway.http_api.port}/api/v1/state"
                log(f"N={wired.evse_count}: chargers ready; API at {url}")
                period_s = wired.control.cycle_period_s
                total = warm_up + 3 * cycles
                stop_cycles = asyncio.Event()
                seen = [0]
                last_start = [0.0]

                def on_cycle(report: CycleReport) -> None:
                    nonlocal client_process
                    index = seen[0]
                    seen[0] += 1
                    start_s = report.now_s
                    late_s = max(0.0, start_s - last_start[0] - period_s) if last_start[0] else 0.0
                    last_start[0] = start_s
                    if index >= warm_up and (index - warm_up) % cycles == 0 and (index - warm_up) // cycles < 3:
                        rss_at_phase_start_mb[phases[(index - warm_up) // cycles]] = round(rss_mb(), 1)
                        # Cycles handed to the recorder's writer thread and not yet written.
                        writer = getattr(gateway.controller, "_file_writer", None)
                        queue = getattr(writer, "_work_queue", None)
                        backlog[phases[(index - warm_up) // cycles]] = queue.qsize() if queue is not None else None
                    if index >= warm_up:
                        phase = phases[min(2, (index - warm_up) // cycles)]
                        by_phase[phase].append(report.duration_s)
                        late_by_phase[phase].append(late_s)
                    if trace and index == warm_up:
                        tracemalloc.start(1)
                        snapshots.append(tracemalloc.take_snapshot())
                    if trace and index + 1 == total:
                        after = tracemalloc.take_snapshot()
                        for stat in after.compare_to(snapshots[0], "lineno")[:12]:
                            log(
                                f"{stat.size_diff / 1e6:+.1f} MB in {stat.count_diff:+d} blocks: "
                                + " <- ".join(
                                    f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno}"
                                    for frame in stat.traceback[:6]
                                )
                            )
                    if index + 1 == warm_up + cycles:  # the loaded phase starts with the next cycle
                        client_process = context.Process(
                            target=run_clients, args=(url, clients, hz, client_end, client_stop), daemon=True
                        )
                        client_process.start()
                        log(f"{clients} clients polling at {hz:g} Hz")
                    if index + 1 == warm_up + 2 * cycles:
                        client_stop.set()
                    if index + 1 >= total:
                        stop_cycles.set()

                rss_before_mb = rss_mb()
                await gateway.run(stop_cycles, max_cycles=total, on_cycle=on_cycle)
                rss_after_mb = rss_mb()
                if client_process is not None and await asyncio.to_thread(client_conn.poll, 30):
                    clients_result = client_conn.recv()
    finally:
        client_stop.set()
        sim_stop.set()
        for child in (client_process, simulators):
            if child is not None:
                await asyncio.to_thread(child.join, 30)
                if child.is_alive():
                    child.terminate()

    figures = {phase: _figures(by_phase[phase], late_by_phase[phase]) for phase in phases if by_phase[phase]}
    baseline_p99 = (figures["baseline"]["cycle_p99_ms"] + figures["baseline_after"]["cycle_p99_ms"]) / 2
    ratio = figures["loaded"]["cycle_p99_ms"] / baseline_p99 if baseline_p99 > 0 else None
    return {
        "benchmark": "api",
        "evses": wired.evse_count,
        "clients": clients,
        "poll_hz": hz,
        "phases": figures,
        "baseline_cycle_p99_ms": round(baseline_p99, 2),
        "loaded_over_baseline_p99": round(ratio, 3) if ratio is not None else None,
        "loaded_over_each_baseline_p99": [
            round(figures["loaded"]["cycle_p99_ms"] / figures[phase]["cycle_p99_ms"], 3)
            for phase in ("baseline", "baseline_after")
        ],
        "target": f"loaded cycle p99 <= {TARGET_RATIO} x baseline",
        "target_met": ratio is not None and ratio <= TARGET_RATIO,
        "clients_figures": clients_result,
        "gateway_rss_mb": {
            "before": round(rss_before_mb, 1),
            "at_phase_start": rss_at_phase_start_mb,
            "recorder_backlog_at_phase_start": backlog,
            "after": round(rss_after_mb, 1),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--evses", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--hz", type=float, default=2.0, help="polls per second per client")
    parser.add_argument("--cycles", type=int, default=60, help="cycles per phase")
    parser.add_argument("--warm-up", type=int, default=30, help="cycles before measuring (cars ramping up)")
    parser.add_argument("--json", action="store_true", help="JSON only (the default output is JSON too)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--tracemalloc", action="store_true", help="print where the gateway's memory grew (slow)")
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    result = asyncio.run(
        bench(args.evses, args.clients, args.hz, args.cycles, args.warm_up, progress, args.tracemalloc)
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
