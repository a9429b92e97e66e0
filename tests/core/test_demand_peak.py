"""The billed peak for rolling windows (fixed ones: tests/core/test_demand_window.py)."""

from __future__ import annotations

import numpy as np
import pytest

from evdlm.core.demand_window import peak_rolling_window


def test_the_rolling_peak_is_the_worst_window_anywhere() -> None:
    # 10 kW for an hour at 10 s samples, with 40 kW for 5 minutes from minute 20.
    times_s = np.arange(0.0, 3600.0, 10.0)
    watts = np.where((times_s >= 1200.0) & (times_s < 1500.0), 40_000.0, 10_000.0)
    periods = np.full(times_s.size, 10.0)
    peak_w, start_s = peak_rolling_window(times_s, watts, periods, 900.0)
    assert peak_w == pytest.approx((10_000.0 * 600 + 40_000.0 * 300) / 900.0)
    assert start_s is not None and 600.0 <= start_s <= 1200.0  # any window holding the whole spike
    # Shorter than a window: nothing is billed yet.
    assert peak_rolling_window(times_s[:60], watts[:60], periods[:60], 900.0) == (0.0, None)
    # A sample without a usable import is left out of every window.
    gap = watts.copy()
    gap[130] = np.nan
    assert peak_rolling_window(times_s, gap, periods, 900.0)[0] < peak_w
