"""Helpers of the whole-site runs."""

from __future__ import annotations

from collections.abc import Callable

from evdlm.core.clock import Clock


async def until(clock: Clock, condition: Callable[[], bool], timeout_sim_s: float, step_s: float = 1.0) -> bool:
    """Wait (in ``clock``'s time) until ``condition`` holds, at most ``timeout_sim_s``; whether it did."""
    deadline = clock.now_s() + timeout_sim_s
    while clock.now_s() < deadline:
        if condition():
            return True
        await clock.sleep(step_s)
    return bool(condition())
