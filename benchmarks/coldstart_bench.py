"""Cold start of ``evdlm run``: when the OCPP port accepts chargers, and when the first cycle decides.

The numba kernels (the solvers' and the core's) compile at start-up: ~20 s on a cold cache (the
first run after an install), well under a second from numba's on-disk cache. The gateway listens
first and compiles in a thread; chargers that connect meanwhile hold the fail-safe profile the
OCPP server installs at boot, and no cycle decides before the kernels are ready.

Each scenario starts a real ``evdlm run`` process on a small loopback site (``--chargers``
chargers, no meters) with ``NUMBA_CACHE_DIR`` on a temporary folder: empty for ``cold``, as the
cold run left it for ``warm``. From the process start it measures (wall clock, s):

* ``listen_s``: the first OCPP WebSocket handshake the server accepts (probed every 20 ms);
* ``kernels_ready_s``: the gateway's log line saying the kernels are compiled;
* ``first_cycle_s``: its log line saying the first cycle is decided;

plus ``compile_s`` (the compile thread's own figure, from the log) and
``listened_before_kernels``.

    .venv/bin/python benchmarks/coldstart_bench.py [--chargers 2] [--scenarios cold warm] [--json]
    evdlm bench coldstart --json

Prints one JSON document (``--json`` changes nothing: kept for the ``evdlm bench`` convention).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

SCENARIOS = ("cold", "warm")
READY = re.compile(r"kernels ready in ([0-9.]+) s")
FIRST_CYCLE = "first cycle decided"
LISTENING = "gateway listening"


def site_yaml(chargers: int, port: int) -> str:
    rows = "\n".join(f'  - {{id: CP{index}, ocpp_version: "1.6", circuit: main}}' for index in range(1, chargers + 1))
    return (
        "site: {id: coldstart}\n"
        "grid: {import_limit_kw: 50, phase_current_limit_a: 80}\n"
        "circuits: [{id: main, phase_current_limit_a: 80}]\n"
        f"chargers:\n{rows}\n"
        f"ocpp: {{host: 127.0.0.1, port: {port}}}\n"
        "control: {fallback_import_limit_kw: 20, cycle_period_s: 0.5}\n"
        "recording: {enabled: false}\n"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_lines(stream: Any, started: float, lines: queue.Queue[tuple[float, str]]) -> None:
    for line in stream:
        lines.put((time.perf_counter() - started, line.rstrip("\n")))


def _accepts(url: str) -> bool:
    try:
        with connect(url, subprotocols=["ocpp1.6"], open_timeout=1.0, close_timeout=0.5):  # type: ignore[list-item]
            return True
    except Exception:  # refused, reset, timed out, handshake refused: not accepting yet
        return False


def start_once(workdir: Path, cache_dir: Path, chargers: int, timeout_s: float) -> dict[str, Any]:
    """Start ``evdlm run`` once; the figures of one scenario."""
    port = free_port()
    config = workdir / "site.yaml"
    config.write_text(site_yaml(chargers, port))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "evdlm", "run", str(config), "--state-dir", str(workdir), "--log-level", "INFO"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[tuple[float, str]] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stderr, started, lines), daemon=True)
    reader.start()
    url = f"ws://127.0.0.1:{port}/CP1"
    result: dict[str, Any] = {
        "listen_s": None,
        "listening_logged_s": None,
        "kernels_ready_s": None,
        "compile_s": None,
        "first_cycle_s": None,
    }
    log: list[str] = []
    try:
        while time.perf_counter() - started < timeout_s:
            while not lines.empty():
                at_s, line = lines.get()
                log.append(line)
                ready = READY.search(line)
                if ready and result["kernels_ready_s"] is None:
                    result["kernels_ready_s"], result["compile_s"] = round(at_s, 3), float(ready.group(1))
                if FIRST_CYCLE in line and result["first_cycle_s"] is None:
                    result["first_cycle_s"] = round(at_s, 3)
                if LISTENING in line and result["listening_logged_s"] is None:
                    result["listening_logged_s"] = round(at_s, 3)
            if result["listen_s"] is None and _accepts(url):
                result["listen_s"] = round(time.perf_counter() - started, 3)
            if result["listen_s"] is not None and result["first_cycle_s"] is not None:
                break
            if process.poll() is not None:
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            exit_code: int | None = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            exit_code = process.wait()
        reader.join(timeout=5)
        while not lines.empty():
            log.append(lines.get()[1])
    listen_s, ready_s = result["listen_s"], result["kernels_ready_s"]
    result["listened_before_kernels"] = listen_s is not None and ready_s is not None and listen_s < ready_s
    result["exit_code"] = exit_code
    if result["first_cycle_s"] is None or listen_s is None:
        result["log_tail"] = log[-20:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chargers", type=int, default=2, help="chargers in the site config")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--timeout-s", type=float, default=180.0, help="give up on a start after this long")
    parser.add_argument("--json", action="store_true", help="print JSON (always: kept for the bench convention)")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="evdlm-coldstart-") as temp:
        cache_dir = Path(temp) / "numba-cache"  # empty: the first start compiles everything
        cache_dir.mkdir()
        for scenario in args.scenarios:
            workdir = Path(temp) / scenario
            workdir.mkdir()
            results[scenario] = start_once(workdir, cache_dir, args.chargers, args.timeout_s)
    print(
        json.dumps(
            {
                "benchmark": "coldstart",
                "chargers": args.chargers,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "scenarios": results,
            },
            indent=2,
        )
    )
    ok = all(result["listen_s"] is not None and result["first_cycle_s"] is not None for result in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
