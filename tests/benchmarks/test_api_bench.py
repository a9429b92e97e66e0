"""Smoke test of benchmarks/api_bench.py: a small site, a few clients, every phase measured."""

from __future__ import annotations

import json

import api_bench  # type: ignore[import-not-found]  # benchmarks/ on sys.path (conftest)
import pytest


@pytest.mark.timeout(240)
def test_api_bench_measures_three_phases_and_the_clients(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--evses", "20", "--clients", "4", "--hz", "4", "--cycles", "6", "--warm-up", "3", "--quiet"]
    assert api_bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["evses"] == 20 and result["clients"] == 4
    assert [result["phases"][phase]["cycles"] for phase in ("baseline", "loaded", "baseline_after")] == [6, 6, 6]
    clients = result["clients_figures"]
    # 4 clients at 4 Hz over about 6 s of the loaded phase: every poll answered, none refused.
    assert clients["requests_ok"] >= 40 and clients["errors"] == {}, clients
    assert clients["body_kb"] > 1.0  # a real state document, with every EVSE
    assert result["loaded_over_baseline_p99"] is not None and len(result["loaded_over_each_baseline_p99"]) == 2
