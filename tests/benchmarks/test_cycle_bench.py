"""Smoke test of benchmarks/cycle_bench.py: a small site, a few cycles, the JSON's fields sane."""

from __future__ import annotations

import json

import cycle_bench  # type: ignore[import-not-found]  # benchmarks/ on sys.path (conftest)
import pytest


def test_site_config_trims_stress_site() -> None:
    config = cycle_bench.site_config(200)
    assert config.evse_count == 200
    assert len(config.chargers) == 100
    # Two boards of five feeders kept, the grid limits scaled to a fifth.
    assert [board.id for board in config.circuits[0].children] == ["board01", "board02"]
    assert config.grid.import_limit_kw == pytest.approx(800.0)
    assert config.grid.meter is not None
    full = cycle_bench.site_config(1000)
    assert full.evse_count == 1000
    assert full.grid.import_limit_kw == pytest.approx(4000.0)


@pytest.mark.timeout(60)
def test_cycle_bench_prints_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert cycle_bench.main(["--evses", "20", "--cycles", "3", "--warm-up", "2", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "controller_cycle"
    assert result["evses"] == 20
    assert result["cycles"] == 3
    assert 0 < result["cycle_p50_ms"] <= result["cycle_p99_ms"] <= result["cycle_max_ms"] < 1000
    for stage in ("decide_ms", "build_ms", "solve_ms", "plan_ms", "rest_ms", "observe_ms", "record_ms"):
        assert 0 < result[stage]["p50"] <= result[stage]["max"], stage
    assert result["decide_ms"]["max"] <= result["cycle_max_ms"]
    # Metrics and recording come after the cycle's duration was taken.
    assert result["cycle_with_observe_and_record_ms"]["p50"] >= result["cycle_p50_ms"]
    assert result["cycles_with_profiles_on_wire"] <= result["cycles"]
    assert 0 < result["solve_share_of_cycle_median"] < 1
    assert result["decisions_missed"] == 0
    assert result["evses_charging"] == 20
    assert 0 <= result["cpu_fraction_of_one_core"] < 2
    assert 50 < result["rss_mb"] < 2000
