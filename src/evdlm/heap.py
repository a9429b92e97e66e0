"""Keep the garbage collector's full passes short: the long-lived heap moved out of its way.

A gateway holds a large, long-lived heap (config, schemas, one OCPP session per charger, the
topology's arrays). CPython's full (generation 2) collection walks all of it: at 1000 chargers
one pass stalled the event loop for 155 ms (``evdlm bench ocpp --local-controller``, 2026-12-05),
and every frame or cycle waiting then waited as long. ``gc.freeze()`` moves every object alive
now to a permanent generation the collector no longer walks; only what is created later is.

:class:`HeapSettler` does it (a full collection first, so no garbage is frozen) once the
gateway runs its first cycle, and again when the chargers online have grown by a tenth since,
at most once a minute: each time one stall of the size of a full pass, at a moment it chooses,
instead of such stalls at random moments forever. Objects frozen and later released are
freed by reference counting as usual; only reference cycles among them would wait for
``gc.unfreeze()``, and the gateway creates its long-lived objects once.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass

log = logging.getLogger("evdlm.heap")


@dataclass(frozen=True)
class Settled:
    collected: int  # unreachable objects the full collection found
    frozen: int  # objects in the permanent generation after the freeze
    pause_ms: float  # the collection and the freeze


def settle_heap() -> Settled:
    """A full collection, then everything alive moved out of the collector's way."""
    started = time.perf_counter()
    collected = gc.collect()
    gc.freeze()
    return Settled(collected, gc.get_freeze_count(), (time.perf_counter() - started) * 1000.0)


class HeapSettler:
    """When to settle the heap: first call, then on ``growth`` of the population, not sooner
    than ``min_interval_s`` after the last time."""

    def __init__(self, *, growth: float = 1.1, min_interval_s: float = 60.0) -> None:
        self.growth = growth
        self.min_interval_s = min_interval_s
        self.last_population: int | None = None
        self.last_monotonic_s = -float("inf")
        self.settled: list[Settled] = []

    def due(self, population: int, monotonic_s: float) -> bool:
        if self.last_population is None:
            return True
        grown = population > self.last_population * self.growth
        return grown and monotonic_s - self.last_monotonic_s >= self.min_interval_s

    def maybe_settle(self, population: int, monotonic_s: float | None = None) -> Settled | None:
        now_s = time.monotonic() if monotonic_s is None else monotonic_s
        if not self.due(population, now_s):
            return None
        settled = settle_heap()
        self.last_population, self.last_monotonic_s = population, now_s
        self.settled.append(settled)
        log.info(
            "heap settled with %d chargers online: %d objects frozen out of the collector's way, "
            "%d unreachable collected, %.0f ms",
            population,
            settled.frozen,
            settled.collected,
            settled.pause_ms,
        )
        return settled
