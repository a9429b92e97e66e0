"""Injected clocks. Everything that reads time or sleeps takes a :class:`Clock`.

``SystemClock`` for production, ``ScaledClock`` for time-compressed demos and end-to-end
tests (every component sharing one scaled clock keeps real protocols in step), and
``FakeClock`` for pure tests and replay, advanced by hand.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_s(self) -> float:
        """Seconds since the Unix epoch (simulated where the clock is not the system's)."""
        ...

    async def sleep(self, duration_s: float) -> None:
        """Wait ``duration_s`` of this clock's time."""
        ...


class SystemClock:
    def now_s(self) -> float:
        return time.time()

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(max(0.0, duration_s))


class ScaledClock:
    """Wall time running ``speed`` times faster from ``start_s`` (epoch seconds)."""

    def __init__(self, start_s: float, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.start_s = start_s
        self.speed = speed
        self._origin_monotonic_s = time.monotonic()

    def now_s(self) -> float:
        return self.start_s + (time.monotonic() - self._origin_monotonic_s) * self.speed

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(max(0.0, duration_s) / self.speed)


class FakeClock:
    """A clock that moves only when told; ``sleep`` advances it (single-task tests, replay)."""

    def __init__(self, start_s: float = 1_800_000_000.0) -> None:
        self._now_s = start_s

    def now_s(self) -> float:
        return self._now_s

    def advance(self, duration_s: float) -> None:
        if duration_s < 0:
            raise ValueError("time does not run backwards")
        self._now_s += duration_s

    async def sleep(self, duration_s: float) -> None:
        self.advance(max(0.0, duration_s))
        await asyncio.sleep(0)
