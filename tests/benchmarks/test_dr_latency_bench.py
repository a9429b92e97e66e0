"""Smoke test of benchmarks/dr_latency_bench.py: a few chargers, one event, the JSON's fields sane."""

from __future__ import annotations

import json

import dr_latency_bench  # type: ignore[import-not-found]  # benchmarks/ on sys.path (conftest)
import pytest


def test_dr_site_config() -> None:
    config = dr_latency_bench.dr_site_config(30)
    assert config.evse_count == 30
    assert config.demand_response is not None and config.mqtt is not None
    assert config.grid.meter == "grid_meter"


@pytest.mark.timeout(60)
def test_dr_latency_bench_prints_figures(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--chargers", "6", "--repeats", "1", "--lead-s", "2", "--event-s", "15", "--settle-s", "2"]
    argv += ["--steady-timeout-s", "12", "--quiet"]
    assert dr_latency_bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "dr_latency"
    assert result["repeats"] == 1
    assert result["early_cycles"] in (0, 1)  # limits known in advance apply one settle time early
    assert result["evses_cut"][0] > 0
    assert result["all_complete"], result
    decision, accepted = result["decision_s"], result["accepted_s"]
    # Published 2-3 s ahead, within the DR lead: the limit is applied by the first cycle after
    # receipt (before its start), and answered after that.
    assert result["decision_after_publication_s"]["max"] <= result["cycle_period_s"] + 0.5
    assert decision["max"] <= accepted["max"] < 10
    assert accepted["max"] <= 2.0
    assert result["import_under_limit_s"]["max"] < 30
    assert result["metered_under_limit_s"]["max"] is not None
    assert result["refused"] == []
