"""Controller cycle: time, memory and CPU of the whole gateway with 200 and 1000 simulated EVSEs.

The production :class:`~evdlm.gateway.Gateway` (OCPP server, device hub polling the grid meter
over real Modbus TCP, metrics, recorder, controller) runs in this process; the charge-point
simulators (real OCPP over websockets, every EVSE with a car charging) and the Modbus simulator
of the site's meters run in a child process, so the figures are the controller's. The site is
``site_configs/stress-1000.yaml`` (500 twin-EVSE chargers on 10 boards x 5 feeders, a grid
meter on Modbus TCP: here a float32 Janitza UMG 604 map, see ``site_config``); a smaller N
keeps its first N/2 chargers and the circuits above them, with the grid limits scaled by N/1000.

    .venv/bin/python benchmarks/cycle_bench.py [--evses 200 1000] [--cycles 120] [--warm-up 30]

Prints one JSON object per N. A cycle is ``CycleReport.duration_s``: the controller's own work
for it, measured by the controller (since c28c6a5, from the snapshot to its dispatch under way;
before, to the end of the wait for the chargers' answers). After it the controller waits within
the period for the answers, updates metrics (``observe_ms``) and hands the recording on
(``record_ms``): ``cycle_with_observe_and_record_ms`` runs from the cycle's start to its report,
all of that included. Its parts: ``decide`` (in the worker thread: ``build_problem``, the
solver chain — ``solve_ms``, from ``result.timings.total_s`` — and ``plan_commands``), timed by
wrapping those functions of ``evdlm.core.decide`` in this process (no change to the code
measured); ``rest`` is the rest of the cycle (snapshot, DR step, thread hand-off, dispatch).
Targets: cycle p99 ≤ 250 ms at 1000 EVSEs; RSS ≤ 500 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import math
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from measure import cpu_s, percentile, rss_mb

import evdlm.control
import evdlm.core.decide
from evdlm.config import load_site_config
from evdlm.config.models import SiteConfig
from evdlm.control import CycleReport
from evdlm.core.clock import SystemClock
from evdlm.core.types import CommandStatus
from evdlm.gateway import Gateway
from evdlm.sim.ev import Car
from evdlm.sim.fleet import SimFleet, site_phase_currents
from evdlm.sim.modbus_servers import SiteSimulators, circuit_specs_for, sim_params_for
from evdlm.sim.site_physics import SiteSimulation

STRESS_SITE = Path(__file__).resolve().parents[1] / "site_configs" / "stress-1000.yaml"


# ---------------------------------------------------------------------------------- the site


def _prune(circuits: list[dict[str, Any]], used: set[str]) -> list[dict[str, Any]]:
    kept = []
    for circuit in circuits:
        children = _prune(circuit.get("children", []), used)
        if children or circuit["id"] in used:
            kept.append({**circuit, "children": children})
    return kept


def site_config(evses: int, cycle_period_s: float = 1.0) -> SiteConfig:
    """stress-1000.yaml, trimmed to its first ``evses`` / 2 twin chargers (see the module docstring)."""
    full = load_site_config(STRESS_SITE).config
    data = full.model_dump(mode="json")
    chargers = data["chargers"][: max(1, math.ceil(evses / 2))]
    scale = sum(charger["evses"] for charger in chargers) / full.evse_count
    data["chargers"] = chargers
    data["circuits"] = _prune(data["circuits"], {charger["circuit"] for charger in chargers})
    data["grid"]["import_limit_kw"] = round(full.grid.import_limit_kw * scale, 1)
    if full.grid.phase_current_limit_a is not None:
        data["grid"]["phase_current_limit_a"] = round(full.grid.phase_current_limit_a * scale, 1)
        data["circuits"][0]["phase_current_limit_a"] = data["grid"]["phase_current_limit_a"]
    data["control"]["fallback_import_limit_kw"] = round(full.control.fallback_import_limit_kw * scale, 1)
    data["control"]["cycle_period_s"] = cycle_period_s
    data["ocpp"].update(host="127.0.0.1", port=0)
    # The simulated SunSpec 203 meter encodes A with A_SF -2 and W with W_SF 1 in int16 (at most
    # 327.67 A summed over the phases, 327.67 kW): a site this size overflows it. A float32
    # substation meter (Janitza UMG 604 register map) reads the same simulated grid instead.
    for device in data["devices"]:
        if device["role"] == "grid_meter" and device.get("modbus") is not None:
            device["modbus"]["profile"] = "janitza_umg604"
    data["observability"].update(metrics_host="127.0.0.1", metrics_port=0)
    return SiteConfig.model_validate(data)


# ---------------------------------------------------------------------------- child process


def run_simulators(config_json: str, conn: Any, stop: Any, station_tick_s: float) -> None:
    """Child process: the site's Modbus simulators and every charger with a car charging."""

    async def main() -> None:
        config = SiteConfig.model_validate_json(config_json)
        clock = SystemClock()
        simulation = SiteSimulation(sim_params_for(config), clock.now_s(), circuits=circuit_specs_for(config))
        async with SiteSimulators(config, simulation, clock) as simulators:
            conn.send(simulators.config().model_dump_json())
            url = await asyncio.to_thread(conn.recv)
            # The simulator stands in for hundreds of devices: no schema checks on its side and a
            # physics tick of a few seconds keep it off the critical path of the process measured.
            async with SimFleet(config, clock, url, tick_s=station_tick_s, validate_frames=False) as fleet:
                chargers = {charger.id: charger for charger in config.chargers}
                simulation.set_ev_source(
                    lambda: {
                        charger_id: site_phase_currents(chargers[charger_id], current)
                        for charger_id, current in fleet.drawn_current_a().items()
                    }
                )
                await fleet.wait_connected(timeout_s=180)
                # Cars arrive spread over one meter-sample interval, so their meter values are too.
                spacing_s = config.ocpp.meter_sample_interval_s / max(1, config.evse_count)
                for charger in config.chargers:
                    for evse_id in range(1, charger.evses + 1):
                        fleet.plug_in(charger.id, evse_id, Car(phases=3, max_current_a=32))
                        await asyncio.sleep(spacing_s)
                conn.send("plugged")
                while not stop.is_set():
                    await asyncio.sleep(0.2)

    asyncio.run(main())


# ------------------------------------------------------------------------------ measurement


def summary_ms(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(statistics.median(values) * 1000, 2),
        "p99": round(percentile(values, 0.99) * 1000, 2),
        "max": round(max(values) * 1000, 2),
    }


class StageTimer:
    """Times the stages of a cycle by wrapping the functions the controller calls.

    ``decide`` and its ``build_problem`` / ``plan_commands`` run in the worker thread; the
    controller's ``_observe`` (metrics) and ``_record`` (recording) on the event loop after
    ``CycleReport.duration_s`` was taken. Cycles run one at a time, so at each report the last
    finished timings are the reported cycle's. :meth:`restore` removes the wrappers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deciding: dict[str, float] = {}
        self._decided: dict[str, float] = {}
        self._loop: dict[str, float] = {}
        self._originals: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, name: str, key: str, *, stage: str) -> None:
        original = getattr(owner, name)
        self._originals.append((owner, name, original))

        def timed(*args: Any, **kwargs: Any) -> Any:
            if stage == "decide":
                with self._lock:
                    self._deciding = {}
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    if stage == "loop":
                        self._loop[key] = elapsed
                    else:
                        self._deciding[key] = elapsed
                        if stage == "decide":
                            self._decided = self._deciding

        setattr(owner, name, timed)

    def install(self, controller: Any) -> None:
        self._wrap(evdlm.core.decide, "build_problem", "build_s", stage="inner")
        self._wrap(evdlm.core.decide, "plan_commands", "plan_s", stage="inner")
        self._wrap(evdlm.control, "decide", "decide_s", stage="decide")
        self._wrap(controller, "_observe", "observe_s", stage="loop")
        self._wrap(controller, "_record", "record_s", stage="loop")

    def restore(self) -> None:
        for owner, name, original in reversed(self._originals):
            if isinstance(owner, type(evdlm)):
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # an instance attribute: the class's method shows through again
        self._originals.clear()

    def take(self) -> dict[str, float]:
        """The stage times of the cycle just reported."""
        with self._lock:
            stages = {**self._decided, **self._loop}
            self._decided, self._loop = {}, {}
        return stages


async def bench(
    evses: int,
    cycles: int,
    warm_up: int,
    cycle_period_s: float = 1.0,
    station_tick_s: float = 2.0,
    log: Callable[[str], None] | None = None,
    profile_path: str | None = None,
) -> dict[str, Any]:
    say = log or (lambda _message: None)
    config = site_config(evses, cycle_period_s)
    clock = SystemClock()
    context = multiprocessing.get_context("spawn")
    parent_conn, child_conn = context.Pipe()
    stop = context.Event()
    child = context.Process(
        target=run_simulators, args=(config.model_dump_json(), child_conn, stop, station_tick_s), daemon=True
    )
    rss_start_mb = rss_mb()
    child.start()
    timer = StageTimer()
    try:
        if not await asyncio.to_thread(parent_conn.poll, 60):
            raise RuntimeError("Modbus simulators did not start")
        wired = SiteConfig.model_validate_json(parent_conn.recv())
        with tempfile.TemporaryDirectory(prefix="evdlm-cycle-bench-") as workdir:
            async with Gateway(wired, clock, state_dir=Path(workdir)) as gateway:
                assert gateway.ocpp is not None
                parent_conn.send(f"ws://127.0.0.1:{gateway.ocpp.port}")
                connect_started = time.monotonic()
                deadline = connect_started + 240
                while not all(gateway.ocpp.ready(charger.id) for charger in wired.chargers):
                    if time.monotonic() > deadline or not child.is_alive():
                        raise RuntimeError("chargers did not come up")
                    await asyncio.sleep(0.1)
                connected_s = time.monotonic() - connect_started
                if not await asyncio.to_thread(parent_conn.poll, 120) or parent_conn.recv() != "plugged":
                    raise RuntimeError("cars did not plug in")
                say(f"N={config.evse_count}: {len(wired.chargers)} chargers ready in {connected_s:.1f} s")

                reports: list[CycleReport] = []
                stages: list[dict[str, float]] = []
                marks: dict[str, float] = {}
                stop_cycles = asyncio.Event()

                profiler = cProfile.Profile() if profile_path else None

                def on_cycle(report: CycleReport) -> None:
                    index = len(reports)
                    if index == warm_up:
                        marks["cpu_start"], marks["wall_start"] = cpu_s(), time.monotonic()
                        if profiler is not None:
                            profiler.enable()
                    reports.append(report)
                    # From the cycle's start to here: its duration plus metrics and recording,
                    # which run on the event loop after CycleReport.duration_s was taken.
                    stages.append({**timer.take(), "full_s": time.time() - report.now_s})
                    if index + 1 == warm_up + cycles:
                        marks["cpu_end"], marks["wall_end"] = cpu_s(), time.monotonic()
                        stop_cycles.set()
                        if profiler is not None and profile_path is not None:
                            profiler.disable()
                            profiler.dump_stats(profile_path)

                timer.install(gateway.controller)
                try:
                    await gateway.run(stop_cycles, max_cycles=warm_up + cycles, on_cycle=on_cycle)
                finally:
                    timer.restore()
                rss_end_mb = rss_mb()
                states = gateway.ocpp.evse_states()
                if "cpu_end" not in marks:
                    raise RuntimeError(f"only {len(reports)} cycles ran")
    finally:
        stop.set()
        await asyncio.to_thread(child.join, 30)
        if child.is_alive():
            child.terminate()

    measured = reports[warm_up:]
    measured_stages = stages[warm_up:]
    decisions = [report.decision for report in measured if report.decision is not None]
    durations = [report.duration_s for report in measured]
    decide_s = [stage["decide_s"] for stage in measured_stages if "decide_s" in stage]
    build_s = [stage["build_s"] for stage in measured_stages if "build_s" in stage]
    plan_s = [stage["plan_s"] for stage in measured_stages if "plan_s" in stage]
    solve_s = [decision.result.timings.total_s for decision in decisions]
    observe_s = [stage["observe_s"] for stage in measured_stages if "observe_s" in stage]
    record_s = [stage["record_s"] for stage in measured_stages if "record_s" in stage]
    full_s = [stage["full_s"] for stage in measured_stages]
    rest_s = [
        report.duration_s - stage["decide_s"]
        for report, stage in zip(measured, measured_stages, strict=True)
        if "decide_s" in stage
    ]
    solve_share = [
        decision.result.timings.total_s / report.duration_s
        for report in measured
        if (decision := report.decision) is not None and report.duration_s > 0
    ]
    statuses: dict[str, int] = {}
    for report in measured:
        for result in report.results:
            statuses[result.status.value] = statuses.get(result.status.value, 0) + 1
    solvers: dict[str, int] = {}
    for decision in decisions:
        label = f"{decision.result.solver.value}/{decision.result.status.value}"
        solvers[label] = solvers.get(label, 0) + 1
    # Most cycles put nothing on the wire (every limit inside the deadband: the OCPP layer answers
    # UNCHANGED itself); the others also wait for the chargers' answers (lease refreshes, changes).
    # A cycle is quiet when every command it dispatched came back UNCHANGED within it (answers
    # that came later, from chargers still busy, make it a busy one).
    on_wire = [sum(1 for r in report.results if r.status is not CommandStatus.UNCHANGED) for report in measured]
    is_quiet = [
        sent == 0 and len(report.results) >= report.commands_sent
        for report, sent in zip(measured, on_wire, strict=True)
    ]
    quiet = [report.duration_s for report, q in zip(measured, is_quiet, strict=True) if q]
    busy = [report.duration_s for report, q in zip(measured, is_quiet, strict=True) if not q]
    wall_s = marks["wall_end"] - marks["wall_start"]
    last = measured[-1]
    charging = sum(1 for state in states.values() if state.charging)
    limited = sum(1 for state in states.values() if state.accepted_limit is not None and state.accepted_limit > 0)
    cycle = summary_ms(durations)
    return {
        "benchmark": "controller_cycle",
        "evses": config.evse_count,
        "chargers": len(config.chargers),
        "rows": 0 if last.decision is None else int(last.decision.built.problem.n_rows),
        "cycle_period_s": cycle_period_s,
        "warm_up_cycles": warm_up,
        "cycles": len(measured),
        "connect_and_configure_s": round(connected_s, 2),
        "cycle_p50_ms": cycle["p50"],
        "cycle_p99_ms": cycle["p99"],
        "cycle_max_ms": cycle["max"],
        "cycle_mean_ms": round(statistics.fmean(durations) * 1000, 2),
        "decide_ms": summary_ms(decide_s),
        "build_ms": summary_ms(build_s),
        "solve_ms": summary_ms(solve_s),
        "plan_ms": summary_ms(plan_s),
        "rest_ms": summary_ms(rest_s),
        "observe_ms": summary_ms(observe_s),
        "record_ms": summary_ms(record_s),
        "cycle_with_observe_and_record_ms": summary_ms(full_s),
        "solve_share_of_cycle_median": round(statistics.median(solve_share), 4) if solve_share else None,
        "decide_share_of_cycle_median": round(
            statistics.median(stage / total for stage, total in zip(decide_s, durations, strict=False) if total > 0),
            4,
        )
        if decide_s
        else None,
        "overruns": sum(1 for duration in durations if duration > cycle_period_s),
        "decisions_missed": sum(1 for report in measured if report.decision is None),
        "solver_status": solvers,
        "commands_sent_per_cycle_median": statistics.median(report.commands_sent for report in measured),
        "commands_sent_per_cycle_max": max(report.commands_sent for report in measured),
        "command_results": statuses,
        "cycles_with_profiles_on_wire": len(busy),
        "profiles_on_wire_per_cycle_max": max(on_wire),
        "cycle_without_profiles_ms": summary_ms(quiet),
        "cycle_with_profiles_ms": summary_ms(busy),
        "evses_charging": charging,
        "evses_with_accepted_limit": limited,
        "cpu_fraction_of_one_core": round((marks["cpu_end"] - marks["cpu_start"]) / wall_s, 3),
        "cpu_s_per_cycle": round((marks["cpu_end"] - marks["cpu_start"]) / len(measured), 4),
        "rss_start_mb": round(rss_start_mb, 1),
        "rss_mb": round(rss_end_mb, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cycle_p99_within_250_ms": cycle["p99"] is not None and cycle["p99"] <= 250.0,
        "rss_within_500_mb": rss_end_mb <= 500.0,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--evses", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--cycles", type=int, default=120, help="measured cycles per N")
    parser.add_argument("--warm-up", type=int, default=30, help="cycles before measuring (cars ramping up)")
    parser.add_argument("--cycle-period-s", type=float, default=1.0)
    parser.add_argument("--station-tick-s", type=float, default=2.0, help="simulated stations' physics step")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the event-loop thread over the measured cycles (slows them)"
    )
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    if len(args.evses) > 1:
        # One fresh process per N: the RSS of one size must not carry the heap of the previous one.
        own = list(argv if argv is not None else sys.argv[1:])
        status = 0
        for evses in args.evses:
            rest = [*_without_evses(own), "--evses", str(evses)]
            status |= subprocess.run([sys.executable, str(Path(__file__).resolve()), *rest], check=False).returncode
        return status
    result = asyncio.run(
        bench(
            args.evses[0],
            args.cycles,
            args.warm_up,
            args.cycle_period_s,
            args.station_tick_s,
            log=progress,
            profile_path=args.profile,
        )
    )
    print(json.dumps(result), flush=True)
    return 0


def _without_evses(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skipping = False
    for arg in argv:
        if arg == "--evses" or arg.startswith("--evses="):
            skipping = arg == "--evses"
            continue
        if skipping and not arg.startswith("-"):
            continue
        skipping = False
        out.append(arg)
    return out


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
