"""The replay's billed peak for rolling windows (fixed ones: tests/core/test_demand_window.py)."""

from __future__ import annotations

import numpy as np
import pytest

from evdlm.replay.kpi import _rolling_peak


def test_the_rolling_peak_is_the_worst_window_anywhere() -> None:
    # 10 kW for an hour at 10 s samples, with 40 kW for 5 minutes from minute 20.
    times_s = np.arange(0.0, 3600.0, 10.0)
    watts = np.where((times_s >= 1200.0) & (times_s < 1500.0), 40_000.0, 10_000.0)
    peak_w, start_s = _rolling_peak(times_s, watts * 10.0, times_s + 10.0, 900.0)
    assert peak_w == pytest.approx((10_000.0 * 600 + 40_000.0 * 300) / 900.0)
    assert start_s is not None and 600.0 <= start_s <= 1200.0  # any window holding the whole spike
    # Shorter than a window: nothing is billed yet.
    assert _rolling_peak(times_s[:60], watts[:60] * 10.0, times_s[:60] + 10.0, 900.0) == (0.0, None)
