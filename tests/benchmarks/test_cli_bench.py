"""`evdlm bench KIND [args]` hands its arguments to the benchmark scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from evdlm import cli
from evdlm.cli import bench_folder, bench_scripts, main

CHECKOUT_BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize(
    ("kind", "script"),
    [
        ("cycle", "cycle_bench.py"),
        ("dr", "dr_latency_bench.py"),
        ("dr_latency", "dr_latency_bench.py"),
        ("solver", "solver_bench"),
    ],
)
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


def test_every_script_of_the_folder_is_a_kind() -> None:
    scripts = bench_scripts(CHECKOUT_BENCHMARKS)
    for path in CHECKOUT_BENCHMARKS.glob("*_bench.py"):
        assert scripts[path.name.removesuffix("_bench.py")] == path
    assert scripts["ocpp"].name == "ocpp_scale_bench.py"
    assert scripts["modbus"].name == "modbus_poll_bench.py"


def _installed_without_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed-like evdlm_benchmarks in a site folder, and evdlm's cli.py outside any checkout."""
    package = tmp_path / "site-packages" / "evdlm_benchmarks"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""Installed benchmarks."""\n')
    (package / "helper.py").write_text("GREETING = 'hello from the installed folder'\n")
    (package / "hello_bench.py").write_text(
        "import json, sys\nfrom helper import GREETING\n"
        "if __name__ == '__main__':\n    print(json.dumps({'argv': sys.argv[1:], 'greeting': GREETING}))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site-packages"))
    monkeypatch.delitem(sys.modules, "evdlm_benchmarks", raising=False)
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "lib" / "evdlm" / "cli.py"))
    return package


def test_scripts_are_found_in_the_installed_package_without_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = _installed_without_checkout(tmp_path, monkeypatch)
    assert bench_folder() == package
    assert set(bench_scripts(package)) == {"hello"}
    assert main(["bench", "hello", "--n", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"argv": ["--n", "3"], "greeting": "hello from the installed folder"}
    assert str(package) not in sys.path


def test_no_scripts_anywhere_leaves_no_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "evdlm_benchmarks", None)  # not installed: importing it fails
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "lib" / "evdlm" / "cli.py"))
    assert bench_folder() is None
    assert bench_scripts(None) == {}
