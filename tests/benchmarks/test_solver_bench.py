"""The solver benchmark (benchmarks/solver_bench.py) runs end to end on a tiny site and prints JSON per size."""

from __future__ import annotations

import json

import pytest
from solver_bench import main  # benchmarks/ is on sys.path (conftest.py)


def test_bench_prints_one_json_object_per_size(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--n", "20", "40", "--cycles", "5", "--lp-samples", "2", "--cvxpy-samples", "1"]
    assert main([*argv, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    results = [json.loads(line) for line in lines]
    assert [result["n_evse"] for result in results] == [20, 40]
    for result in results:
        assert result["violations"] == 0
        assert result["heuristic_p99_us"] >= result["heuristic_median_us"] > 0
        assert 0.0 < result["power_fraction_min"] <= result["power_fraction_median"]
        if result["cvxpy_median_ms"] is not None:
            assert result["cvxpy_objective_gap"] < 1e-6
        # The MILP may choose any admitted set, the fixed-admission LP's included.
        assert result["milp_objective_ratio"] >= 1.0 - 1e-5


def test_bench_prints_a_table_without_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--n", "10", "--cycles", "3", "--lp-samples", "1", "--cvxpy-samples", "0"]) == 0
    assert capsys.readouterr().out.startswith("N=   10 heuristic")
