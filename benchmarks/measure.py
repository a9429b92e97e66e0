"""What the benchmarks measure themselves with: CPU time, resident memory, percentiles."""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from collections.abc import Sequence


def cpu_s() -> float:
    """User + system CPU time of this process (all threads), s."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0.5 = median, 0.99 = p99) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class PauseMonitor:
    """Garbage-collector pauses and event-loop lag of this process, for tail-latency diagnosis.

    ``start()`` inside a running loop: a task sleeps ``tick_s`` over and over and records how much
    later than asked it woke (what anything waiting on the loop then waits too); ``gc.callbacks``
    time every collection by generation.
    """

    def __init__(self, tick_s: float = 0.005) -> None:
        self.tick_s = tick_s
        self.lags_s: list[float] = []
        self.gc_pauses_s: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_started: float | None = None
        self._task: object | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self.gc_pauses_s[info["generation"]].append(time.perf_counter() - self._gc_started)
            self._gc_started = None

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)

        async def sample() -> None:
            loop = asyncio.get_running_loop()
            while True:
                asked = loop.time() + self.tick_s
                await asyncio.sleep(self.tick_s)
                self.lags_s.append(max(0.0, loop.time() - asked))

        self._task = asyncio.get_running_loop().create_task(sample())

    def reset(self) -> None:
        self.lags_s.clear()
        for pauses in self.gc_pauses_s.values():
            pauses.clear()

    def figures(self) -> dict[str, object]:
        lags = self.lags_s
        return {
            "loop_lag_p99_ms": round(percentile(lags, 0.99) * 1000, 2) if lags else None,
            "loop_lag_p999_ms": round(percentile(lags, 0.999) * 1000, 2) if lags else None,
            "loop_lag_max_ms": round(max(lags) * 1000, 2) if lags else None,
            "gc": {
                f"gen{generation}": {
                    "collections": len(pauses),
                    "max_ms": round(max(pauses) * 1000, 2) if pauses else 0.0,
                    "total_ms": round(sum(pauses) * 1000, 1),
                }
                for generation, pauses in self.gc_pauses_s.items()
            },
        }
