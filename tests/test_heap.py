"""The heap settler: when the gateway moves its long-lived heap out of the collector's way."""

from __future__ import annotations

import gc

from evdlm.heap import HeapSettler, settle_heap


def test_settling_collects_then_freezes_what_is_alive() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the collector frees it

    Node()  # garbage before the settle: collected, never frozen
    try:
        settled = settle_heap()
        assert settled.collected >= 1
        # (objects frozen and then freed by reference counting leave the permanent generation)
        assert settled.frozen > 1000 and 0 < gc.get_freeze_count() <= settled.frozen
        assert settled.pause_ms > 0
    finally:
        gc.unfreeze()


def test_settles_first_then_only_on_growth_and_not_too_often() -> None:
    settler = HeapSettler(growth=1.1, min_interval_s=60.0)
    try:
        assert settler.maybe_settle(100, monotonic_s=0.0) is not None  # the first cycle
        assert settler.maybe_settle(100, monotonic_s=600.0) is None  # no growth
        assert settler.maybe_settle(200, monotonic_s=30.0) is None  # grown, but within the minute
        assert settler.maybe_settle(110, monotonic_s=120.0) is None  # a tenth is not more than a tenth
        assert settler.maybe_settle(111, monotonic_s=120.0) is not None
        assert [s.frozen > 0 for s in settler.settled] == [True, True]
    finally:
        gc.unfreeze()
