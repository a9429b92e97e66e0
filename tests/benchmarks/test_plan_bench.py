"""Smoke test of benchmarks/plan_bench.py: a 2-scenario sweep on 1 and 2 workers, short periods."""

from __future__ import annotations

import json
from typing import Any

import plan_bench  # type: ignore[import-not-found]  # benchmarks/ on sys.path (conftest)
import pytest


def test_plan_bench_reports_throughput_the_table_and_the_200_evse_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--kw", "60", "200", "--hours", "10", "--cycle-s", "60", "--depot-hours", "0.5", "--json"]
    assert plan_bench.main(argv) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["bench"] == "plan"
    assert [r["workers"] for r in report["runs"]] == [1, 2]
    assert all(r["scenarios"] == 2 and r["failed"] == 0 and r["scenarios_per_s"] > 0 for r in report["runs"])
    assert report["speedup_2_over_1"] > 0
    assert report["same_table_on_every_cluster"] is True
    rows = report["delivered_pct_by_connection_kw"]
    assert [row["connection_kw"] for row in rows] == [60, 200]
    assert rows[0]["energy_pct"] < rows[1]["energy_pct"]
    assert report["delivered_pct_monotone_in_kw"] is True
    depot = report["scenario_200_evses"]
    assert depot["evses"] == 200 and depot["cycles"] == 30 and depot["wall_s"] > 0
