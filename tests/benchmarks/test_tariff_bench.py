"""Smoke test of benchmarks/tariff_bench.py: the workplace morning, today's controller against demand control."""

from __future__ import annotations

import pytest
import tariff_bench  # type: ignore[import-not-found]  # benchmarks/ on sys.path (conftest)


@pytest.mark.timeout(300)
def test_demand_control_lowers_the_morning_peak_and_moves_energy_later() -> None:
    result = tariff_bench.bench_site("workplace-50", 11.0, ["b_demand"])
    runs = {run["variant"]: run for run in result["runs"]}
    assert set(runs) == {"a_today", "b_demand"}
    today, demand = runs["a_today"], runs["b_demand"]
    # The morning's arrivals set today's peak; the demand window spreads them.
    assert demand["peak_15min_kw"] < today["peak_15min_kw"], result
    assert demand["demand_charge_month"] < today["demand_charge_month"]
    # By 11:00 most cars are still plugged in: the window has moved energy later, not lost it
    # (the whole day's figures are the benchmark's: benchmarks/README.md).
    assert 0.0 < demand["delivered_kwh"] < today["delivered_kwh"], result
    assert result["b_peak_cut_pct"] == pytest.approx(
        100.0 * (1.0 - demand["peak_15min_kw"] / today["peak_15min_kw"]), abs=0.11
    )
