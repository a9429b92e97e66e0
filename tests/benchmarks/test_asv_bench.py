"""The asv benchmarks (benchmarks/asv_bench) run: each time_* once, at its first parameter."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest
from asv_bench import bench_decide, bench_solvers  # benchmarks/ is on sys.path (conftest.py)


@pytest.mark.parametrize("module", [bench_solvers, bench_decide], ids=lambda module: module.__name__)
def test_every_asv_benchmark_runs_once(module: ModuleType) -> None:
    timed = 0
    for _, suite in inspect.getmembers(module, inspect.isclass):
        if suite.__module__ != module.__name__:
            continue
        params = [suite.params[0]] if getattr(suite, "params", None) else []
        instance = suite()
        instance.setup(*params)
        for name, method in inspect.getmembers(instance, inspect.ismethod):
            if name.startswith("time_"):
                method(*params)
                timed += 1
    assert timed > 0
