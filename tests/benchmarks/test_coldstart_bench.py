"""benchmarks/coldstart_bench.py at small size: on a cold numba cache the OCPP port accepts chargers
long before the kernels are compiled, and the first cycle waits for them."""

from __future__ import annotations

import json

import coldstart_bench  # type: ignore[import-not-found]  # benchmarks/ on sys.path (conftest)
import pytest


@pytest.mark.timeout(240)
def test_the_port_accepts_before_the_kernels_are_compiled(capsys: pytest.CaptureFixture[str]) -> None:
    assert coldstart_bench.main(["--chargers", "1", "--scenarios", "cold", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    cold = result["scenarios"]["cold"]
    assert cold["exit_code"] == 0, cold
    # A cold cache compiles for seconds (~20 s on the 2-core CI machine); the port answered first.
    assert cold["compile_s"] > 1.0, cold
    assert cold["listened_before_kernels"], cold
    assert cold["listen_s"] < cold["kernels_ready_s"] - 1.0, cold
    # No cycle decided before the kernels were ready.
    assert cold["first_cycle_s"] >= cold["kernels_ready_s"], cold
