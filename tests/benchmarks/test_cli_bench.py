"""`evdlm bench KIND [args]` hands its arguments to the benchmark scripts."""

from __future__ import annotations

import json

import pytest

from evdlm.cli import main


@pytest.mark.parametrize(("kind", "script"), [("cycle", "cycle_bench.py"), ("dr", "dr_latency_bench.py")])
def test_bench_forwards_arguments(kind: str, script: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", kind, "--help"]) == 0
    assert f"usage: {script}" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_bench_runs_a_script_with_a_spawned_child(capsys: pytest.CaptureFixture[str]) -> None:
    # The OCPP benchmark runs its fleet in a spawned process that re-imports the script.
    argv = ["--chargers", "2", "--rounds", "1", "--sample-interval-s", "1", "--idle-s", "0.2"]
    assert main(["bench", "ocpp", *argv]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "ocpp_scale"
    assert result["failures"] == {}


def test_bench_rejects_an_unknown_kind(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "nope"])
    assert "invalid choice" in capsys.readouterr().err
