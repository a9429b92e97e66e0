"""OCPP scale: 1000 simulated EVSEs on one central-system process; how fast does a new limit reach all?

The simulated fleet runs in a child process (its own CPU and event loop) so the figures are the
server's. Every EVSE has a car charging and sends meter values at the configured interval, as on
a real site. Each round commands a changed limit to every EVSE at once; the latency of an EVSE
is from the start of ``apply`` to its charger's SetChargingProfile answer.

    .venv/bin/python benchmarks/ocpp_scale_bench.py [--chargers 1000] [--evses 1] [--rounds 5]

Prints one JSON object. Targets: every limit delivered within 2 s; server RSS ≤ 500 MB.

``--local-controller`` measures instead the latency evdlm adds in Local Controller mode
(``ocpp.mode: local_controller``), relaying charger frames to the operator's CSMS: the same
Heartbeat / StatusNotification / MeterValues sent by each charger straight to the CSMS simulator
and through evdlm, in the same run, with the CSMS simulator and evdlm each in a process of their
own and the chargers (raw websockets) in this one:

    .venv/bin/python benchmarks/ocpp_scale_bench.py --local-controller [--chargers 100 1000]
        [--messages 9] [--interval-s 5] [--time-cap-s 600]

Target: added p99 (through evdlm − direct, per percentile) ≤ 5 ms on loopback at 1000 chargers.
``pauses_while_measuring`` gives each process's event-loop lag and garbage-collector pauses; once
connected, evdlm settles its heap as its gateway does (``evdlm.heap``), and so do the peers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from measure import PauseMonitor, cpu_s, percentile, rss_mb
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from evdlm.chargers.ocpp.server import OcppCentralSystem
from evdlm.config.models import SiteConfig
from evdlm.core.clock import SystemClock
from evdlm.core.types import ChargingCommand, CommandStatus
from evdlm.heap import HeapSettler, settle_heap
from evdlm.sim.ev import Car
from evdlm.sim.fleet import SimFleet

BOOT: dict[str, dict[str, Any]] = {
    "1.6": {"chargePointVendor": "Acme", "chargePointModel": "Bench"},
    "2.0.1": {"reason": "PowerUp", "chargingStation": {"model": "Bench", "vendorName": "Acme"}},
}


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


# ---------------------------------------------------------------------------------------------
# --local-controller: the latency evdlm adds by relaying charger frames to the operator's CSMS.

LC_KINDS = ("Heartbeat", "StatusNotification", "MeterValues")
LC_ADDED_P99_TARGET_MS = 5.0
LC_TARGET_CHARGERS = 1000  # the target holds at this size (smaller runs are held to it too)


def lc_config(chargers: int, csms_url: str, queue_dir: str, answer_timeout_s: float) -> SiteConfig:
    """``chargers`` chargers (half 1.6, half 2.0.1) behind evdlm in Local Controller mode."""
    return SiteConfig.model_validate(
        {
            "site": {"id": "bench-lc"},
            "grid": {"import_limit_kw": 20_000, "phase_current_limit_a": 10_000},
            "circuits": [{"id": "main", "phase_current_limit_a": 10_000}],
            "chargers": [
                {"id": f"CP{index:04d}", "ocpp_version": lc_version(index), "circuit": "main"}
                for index in range(chargers)
            ],
            "ocpp": {
                "host": "127.0.0.1",
                "port": 0,
                "call_timeout_s": answer_timeout_s,
                "mode": "local_controller",
                "upstream": {"url": csms_url, "queue_dir": queue_dir},
            },
            "control": {"fallback_import_limit_kw": 1000, "lease_duration_s": 300, "lease_refresh_s": 100},
        }
    )


def lc_version(index: int) -> str:
    return "1.6" if index % 2 else "2.0.1"


def proc_memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of process ``pid``, MB."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


async def _serve_commands(conn: Any, handlers: dict[str, Callable[[], Awaitable[Any]]]) -> None:
    """Child side: answer the parent's commands over ``conn`` until it says ``stop``."""
    while True:
        while not conn.poll():
            await asyncio.sleep(0.05)
        command = conn.recv()
        if command == "stop":
            conn.send(None)
            return
        conn.send(await handlers[command]())


async def _ask(conn: Any, child: Any, command: str, timeout_s: float) -> Any:
    """Parent side: one command to a child, its answer."""
    conn.send(command)
    deadline = time.monotonic() + timeout_s
    while not conn.poll():
        if time.monotonic() > deadline or not child.is_alive():
            raise RuntimeError(f"no answer to {command!r} from {child.name}")
        await asyncio.sleep(0.02)
    return conn.recv()


def run_csms(conn: Any) -> None:
    """Child process: the operator's CSMS (the simulator), answering every charge point."""

    async def main() -> None:
        from evdlm.sim.csms import CsmsSimulator

        async with CsmsSimulator() as csms:
            monitor = PauseMonitor()
            monitor.start()
            conn.send(csms.url)

            async def counts() -> dict[str, dict[str, int]]:
                # Per path (direct D…, through evdlm CP…): CALLs received by action.
                result: dict[str, dict[str, int]] = {"direct": {}, "through_lc": {}}
                for charge_point_id, calls in csms.received.items():
                    path = result["direct" if charge_point_id.startswith("D") else "through_lc"]
                    for action, _ in calls:
                        path[action] = path.get(action, 0) + 1
                return result

            async def pauses() -> dict[str, Any]:
                return monitor.figures()

            async def reset_pauses() -> None:
                monitor.reset()

            async def settle() -> float:
                return settle_heap().pause_ms

            handlers = {"counts": counts, "pauses": pauses, "reset_pauses": reset_pauses, "settle": settle}
            await _serve_commands(conn, handlers)

    asyncio.run(main())


def run_gateway(config_json: str, conn: Any, ready_timeout_s: float) -> None:
    """Child process: evdlm's central system in Local Controller mode (the gateway measured)."""

    async def main() -> None:
        config = SiteConfig.model_validate_json(config_json)
        ids = [charger.id for charger in config.chargers]
        async with OcppCentralSystem(config, SystemClock()) as central:
            monitor = PauseMonitor()
            monitor.start()
            conn.send(central.port)

            async def ready() -> dict[str, Any]:
                # Configured by evdlm (configuration read, fail-safe installed) and relaying live.
                started = time.monotonic()
                while True:
                    waiting = [
                        cid
                        for cid in ids
                        if not central.ready(cid) or (relay := central.relay(cid)) is None or not relay.online
                    ]
                    if not waiting or time.monotonic() - started > ready_timeout_s:
                        # As the gateway does once its chargers are online (evdlm.heap).
                        settled = HeapSettler().maybe_settle(len(ids) - len(waiting))
                        return {
                            "waiting": len(waiting),
                            "s": round(time.monotonic() - started, 2),
                            "heap_settle_ms": round(settled.pause_ms, 1) if settled else None,
                        }
                    await asyncio.sleep(0.1)

            async def totals() -> dict[str, Any]:
                relay_totals = central.relay_totals()
                return {
                    **(dataclasses.asdict(relay_totals) if relay_totals is not None else {}),
                    "pauses": monitor.figures(),
                }

            async def reset_pauses() -> None:
                monitor.reset()

            await _serve_commands(conn, {"ready": ready, "totals": totals, "reset_pauses": reset_pauses})

    asyncio.run(main())


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def lc_payload(version: str, kind: str, energy_wh: float) -> dict[str, Any]:
    """A charger's Heartbeat / StatusNotification / MeterValues (no transaction), valid for ``version``."""
    if kind == "Heartbeat":
        return {}
    if kind == "StatusNotification":
        if version == "1.6":
            return {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        return {"timestamp": _now_iso(), "connectorStatus": "Available", "evseId": 1, "connectorId": 1}
    measurand = "Energy.Active.Import.Register"
    if version == "1.6":
        sample: dict[str, Any] = {"value": str(energy_wh), "measurand": measurand, "unit": "Wh"}
        return {"connectorId": 1, "meterValue": [{"timestamp": _now_iso(), "sampledValue": [sample]}]}
    sample = {"value": energy_wh, "measurand": measurand}
    return {"evseId": 1, "meterValue": [{"timestamp": _now_iso(), "sampledValue": [sample]}]}


def _get_variables(payload: dict[str, Any]) -> dict[str, Any]:
    items = payload["getVariableData"]
    return {
        "getVariableResult": [
            {"attributeStatus": "UnknownVariable", "component": i["component"], "variable": i["variable"]}
            for i in items
        ]
    }


def _set_variables(payload: dict[str, Any]) -> dict[str, Any]:
    items = payload["setVariableData"]
    return {
        "setVariableResult": [
            {"attributeStatus": "Accepted", "component": i["component"], "variable": i["variable"]} for i in items
        ]
    }


_ACCEPTED: Callable[[dict[str, Any]], dict[str, Any]] = lambda _: {"status": "Accepted"}  # noqa: E731
LC_CHARGER_ANSWERS: dict[str, dict[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "1.6": {
        "GetConfiguration": lambda _: {"configurationKey": [], "unknownKey": []},
        "ChangeConfiguration": _ACCEPTED,
        "SetChargingProfile": _ACCEPTED,
        "ClearChargingProfile": _ACCEPTED,
        "TriggerMessage": _ACCEPTED,
        "ChangeAvailability": _ACCEPTED,
    },
    "2.0.1": {
        "GetVariables": _get_variables,
        "SetVariables": _set_variables,
        "SetChargingProfile": _ACCEPTED,
        "ClearChargingProfile": _ACCEPTED,
        "TriggerMessage": _ACCEPTED,
        "ChangeAvailability": _ACCEPTED,
    },
}


class RawChargePoint:
    """A charge point on a raw websocket: sends CALLs and times their answers, answers the central
    system's calls at once (evdlm configures its chargers; the CSMS simulator calls nobody)."""

    def __init__(self, ws: ClientConnection, version: str) -> None:
        self.ws = ws
        self.version = version
        self._pending: dict[str, asyncio.Future[tuple[list[Any], float]]] = {}
        self._ids = itertools.count(1)
        self.reader = asyncio.create_task(self._read())

    async def call(self, action: str, payload: dict[str, Any], timeout_s: float) -> tuple[list[Any], float]:
        """Send a CALL; (the answer frame, round trip in s from the send to the answer's arrival)."""
        unique_id = f"b{next(self._ids)}"
        future: asyncio.Future[tuple[list[Any], float]] = asyncio.get_running_loop().create_future()
        self._pending[unique_id] = future
        frame = json.dumps([2, unique_id, action, payload], separators=(",", ":"))
        try:
            sent = time.perf_counter()
            await self.ws.send(frame)
            async with asyncio.timeout(timeout_s):
                answer, arrived = await future
            return answer, arrived - sent
        finally:
            self._pending.pop(unique_id, None)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                arrived = time.perf_counter()
                frame = json.loads(raw)
                if frame[0] == 2:
                    handler = LC_CHARGER_ANSWERS[self.version].get(frame[2])
                    if handler is None:
                        answer = [4, frame[1], "NotImplemented", "", {}]
                    else:
                        answer = [3, frame[1], handler(frame[3])]
                    await self.ws.send(json.dumps(answer))
                else:
                    future = self._pending.get(frame[1])
                    if future is not None and not future.done():
                        future.set_result((frame, arrived))

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def _open(url: str, version: str, gate: asyncio.Semaphore) -> RawChargePoint:
    subprotocol = Subprotocol("ocpp1.6" if version == "1.6" else "ocpp2.0.1")
    async with gate:
        ws = await connect(
            url, subprotocols=[subprotocol], compression=None, ping_interval=None, open_timeout=60, max_queue=None
        )
    return RawChargePoint(ws, version)


def _latency(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 0.5) * 1000, 3),
        "p99_ms": round(percentile(samples, 0.99) * 1000, 3),
        "max_ms": round(max(samples) * 1000, 3),
    }


def _kind_figures(direct: list[float], through: list[float]) -> dict[str, Any]:
    d, t = _latency(direct), _latency(through)
    added = {
        f"added_{q}_ms": round(t[f"{q}_ms"] - d[f"{q}_ms"], 3) if d["n"] and t["n"] else None for q in ("p50", "p99")
    }
    return {"direct": d, "through_lc": t, **added}


async def bench_local_controller(
    chargers: int, messages: int, interval_s: float, answer_timeout_s: float, time_cap_s: float
) -> dict[str, Any]:
    """One run at ``chargers``: every charger has two sockets, one to the CSMS directly (``D…``)
    and one to evdlm (``CP…``, relayed to the CSMS as ``CP…``), all connected at once. Every
    ``interval_s`` (chargers staggered over it) a charger sends the same message both ways, one
    after the other (which way first alternates), ``messages`` times, cycling the kinds."""
    context = multiprocessing.get_context("spawn")
    load_before = os.getloadavg()
    started = time.monotonic()
    csms_conn, csms_end = context.Pipe()
    csms = context.Process(target=run_csms, args=(csms_end,), name="csms", daemon=True)
    csms.start()
    gateway: Any = None
    points: list[RawChargePoint] = []
    try:
        csms_url = await _ask_first(csms_conn, csms, 60)
        with tempfile.TemporaryDirectory(prefix="evdlm-lc-bench-") as queue_dir:
            config = lc_config(chargers, csms_url, queue_dir, answer_timeout_s)
            gateway_conn, gateway_end = context.Pipe()
            gateway = context.Process(
                target=run_gateway,
                args=(config.model_dump_json(), gateway_end, max(60.0, chargers * 0.2)),
                name="evdlm",
                daemon=True,
            )
            gateway.start()
            port = await _ask_first(gateway_conn, gateway, 60)
            await asyncio.sleep(0.5)  # imports settled
            rss_idle_mb, _ = proc_memory_mb(gateway.pid)

            # Connect and boot everyone: direct to the CSMS, and through evdlm.
            gate = asyncio.Semaphore(64)
            connect_started = time.monotonic()
            versions = [lc_version(index) for index in range(chargers)]
            direct = await asyncio.gather(
                *(_open(f"{csms_url}/D{index:04d}", versions[index], gate) for index in range(chargers))
            )
            through = await asyncio.gather(
                *(_open(f"ws://127.0.0.1:{port}/CP{index:04d}", versions[index], gate) for index in range(chargers))
            )
            points = [*direct, *through]
            boots = await asyncio.gather(
                *(point.call("BootNotification", BOOT[point.version], answer_timeout_s * 3) for point in points),
                return_exceptions=True,
            )
            boots_accepted = sum(1 for boot in boots if not isinstance(boot, BaseException) and boot[0][0] == 3)
            ready = await _ask(gateway_conn, gateway, "ready", max(60.0, chargers * 0.2) + 10)
            # The peers settle their heaps too: their own full collections (90-120 ms at 1000
            # chargers) would otherwise land in either path's tail at random.
            await _ask(csms_conn, csms, "settle", 30)
            settle_heap()
            connected_s = time.monotonic() - connect_started
            totals_before = await _ask(gateway_conn, gateway, "totals", 30)
            counts_before = await _ask(csms_conn, csms, "counts", 30)
            await _ask(gateway_conn, gateway, "reset_pauses", 30)
            await _ask(csms_conn, csms, "reset_pauses", 30)
            bench_monitor = PauseMonitor()
            bench_monitor.start()
            rss_connected_mb, _ = proc_memory_mb(gateway.pid)

            # Measure.
            samples: dict[str, dict[str, list[float]]] = {
                path: {kind: [] for kind in LC_KINDS} for path in ("direct", "through_lc")
            }
            sent = {path: 0 for path in samples}
            errors: dict[str, dict[str, int]] = {path: {} for path in samples}
            load_start = os.getloadavg()
            loop = asyncio.get_running_loop()
            t0 = loop.time() + 0.5

            async def drive(index: int) -> None:
                start_at = t0 + interval_s * index / chargers
                pair = {"direct": direct[index], "through_lc": through[index]}
                for message in range(messages):
                    await asyncio.sleep(max(0.0, start_at + message * interval_s - loop.time()))
                    kind = LC_KINDS[message % len(LC_KINDS)]
                    payload = lc_payload(versions[index], kind, 1000.0 * (message + 1))
                    order = ("direct", "through_lc") if (index + message) % 2 == 0 else ("through_lc", "direct")
                    for path in order:
                        sent[path] += 1
                        try:
                            answer, rtt = await pair[path].call(kind, payload, answer_timeout_s)
                        except (TimeoutError, ConnectionClosed) as exc:
                            name = type(exc).__name__
                            errors[path][name] = errors[path].get(name, 0) + 1
                            continue
                        if answer[0] == 3:
                            samples[path][kind].append(rtt)
                        else:
                            errors[path][str(answer[2])] = errors[path].get(str(answer[2]), 0) + 1

            measure_started = time.monotonic()
            capped = False
            tasks = [asyncio.create_task(drive(index)) for index in range(chargers)]
            try:
                async with asyncio.timeout(max(1.0, time_cap_s - (time.monotonic() - started))):
                    await asyncio.gather(*tasks)
            except TimeoutError:
                capped = True
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            measure_s = time.monotonic() - measure_started
            load_end = os.getloadavg()
            rss_mb_end, peak_rss_mb = proc_memory_mb(gateway.pid)
            totals_after = await _ask(gateway_conn, gateway, "totals", 30)
            counts_after = await _ask(csms_conn, csms, "counts", 30)
            csms_pauses = await _ask(csms_conn, csms, "pauses", 30)
            pauses = {"evdlm": totals_after.get("pauses"), "csms": csms_pauses, "chargers": bench_monitor.figures()}
            for point in points:
                await point.close()
            await _ask(gateway_conn, gateway, "stop", 30)
            gateway.join(timeout=30)
    finally:
        for point in points:
            point.reader.cancel()
        with contextlib.suppress(Exception):
            csms_conn.send("stop")
        csms.join(timeout=30)
        for child in (csms, gateway):
            if child is not None and child.is_alive():
                child.terminate()

    expected = chargers * messages
    answered = {path: sum(len(values) for values in samples[path].values()) for path in samples}
    csms_received = {
        path: {kind: counts_after[path].get(kind, 0) - counts_before[path].get(kind, 0) for kind in LC_KINDS}
        for path in samples
    }
    kinds = {kind: _kind_figures(samples["direct"][kind], samples["through_lc"][kind]) for kind in LC_KINDS}
    every = _kind_figures(
        [v for values in samples["direct"].values() for v in values],
        [v for values in samples["through_lc"].values() for v in values],
    )
    all_answered = not capped and all(answered[path] == sent[path] == expected for path in samples)
    added_p99 = [figures["added_p99_ms"] for figures in (*kinds.values(), every)]
    within = all(value is not None and value <= LC_ADDED_P99_TARGET_MS for value in added_p99)
    return {
        "chargers": chargers,
        "connections": {"direct": chargers, "through_lc": chargers, "evdlm_to_csms": chargers},
        "messages_per_charger_per_path": messages,
        "interval_s": interval_s,
        "rate_per_path_msg_s": round(chargers / interval_s, 1),
        "boots_accepted": boots_accepted,
        "connect_boot_configure_s": round(connected_s, 2),
        "not_ready": ready["waiting"],
        "evdlm_heap_settle_ms": ready.get("heap_settle_ms"),
        "measure_s": round(measure_s, 2),
        "time_capped": capped,
        "sent": sent,
        "answered": answered,
        "errors": errors,
        "csms_received": csms_received,
        "relay_forwarded_up": totals_after.get("forwarded_up", 0) - totals_before.get("forwarded_up", 0),
        "relay_answered_locally": totals_after.get("answered_locally", 0) - totals_before.get("answered_locally", 0),
        "latency": {**kinds, "all": every},
        "all_answered": all_answered,
        f"added_p99_within_{LC_ADDED_P99_TARGET_MS:g}_ms": within,
        "evdlm_rss": {
            "process": "the gateway's own process (evdlm's OcppCentralSystem in local_controller mode)",
            "idle_mb": round(rss_idle_mb, 1),
            "connected_mb": round(rss_connected_mb, 1),
            "end_mb": round(rss_mb_end, 1),
            "peak_mb": round(peak_rss_mb, 1),
        },
        "pauses_while_measuring": pauses,
        "load_average": {
            "before": [round(value, 2) for value in load_before],
            "measure_start": [round(value, 2) for value in load_start],
            "measure_end": [round(value, 2) for value in load_end],
        },
    }


async def _ask_first(conn: Any, child: Any, timeout_s: float) -> Any:
    """The first thing a child sends (its URL or port)."""
    deadline = time.monotonic() + timeout_s
    while not conn.poll():
        if time.monotonic() > deadline or not child.is_alive():
            raise RuntimeError(f"{child.name} did not start")
        await asyncio.sleep(0.02)
    return conn.recv()


async def bench_lc_sizes(
    sizes: list[int], messages: int, interval_s: float, answer_timeout_s: float, time_cap_s: float
) -> dict[str, Any]:
    runs = [
        await bench_local_controller(chargers, messages, interval_s, answer_timeout_s, time_cap_s) for chargers in sizes
    ]
    return {
        "benchmark": "ocpp_local_controller",
        "kinds": list(LC_KINDS),
        "target": f"added p99 ≤ {LC_ADDED_P99_TARGET_MS:g} ms on loopback at {LC_TARGET_CHARGERS} chargers "
        "(every run is held to it), every message answered by the CSMS",
        "runs": runs,
        "targets_met": all(
            run["all_answered"] and run[f"added_p99_within_{LC_ADDED_P99_TARGET_MS:g}_ms"] for run in runs
        ),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--chargers", type=int, nargs="+", default=None, help="default 1000; several sizes with --local-controller"
    )
    parser.add_argument("--evses", type=int, default=1, help="EVSEs per charger")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sample-interval-s", type=int, default=10)
    parser.add_argument(
        "--idle-s", type=float, default=10.0, help="steady state measured for CPU (one sample interval)"
    )
    lc = parser.add_argument_group("--local-controller: the latency evdlm adds relaying to a CSMS")
    lc.add_argument("--local-controller", action="store_true", help="measure Local Controller forwarding instead")
    lc.add_argument("--messages", type=int, default=9, help="messages per charger and path (kinds in turn)")
    lc.add_argument("--interval-s", type=float, default=5.0, help="between a charger's messages (staggered)")
    lc.add_argument("--answer-timeout-s", type=float, default=10.0, help="a message unanswered after this fails")
    lc.add_argument("--time-cap-s", type=float, default=600.0, help="whole run per size; then it stops, failing")
    parser.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always JSON")
    args = parser.parse_args(argv)
    sizes = args.chargers or [1000]
    if args.local_controller:
        if min(sizes) < 1 or args.messages < 1 or args.interval_s <= 0:
            parser.error("--chargers and --messages must be ≥ 1, --interval-s > 0")
        result = asyncio.run(
            bench_lc_sizes(sizes, args.messages, args.interval_s, args.answer_timeout_s, args.time_cap_s)
        )
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    if len(sizes) != 1:
        parser.error("one --chargers value without --local-controller")
    result = asyncio.run(bench(sizes[0], args.evses, args.rounds, args.sample_interval_s, args.idle_s))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
