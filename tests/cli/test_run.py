"""`evdlm run` as an operator runs it: a real process, signals, exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SITE = """\
site: {id: cli}
grid: {import_limit_kw: 50, phase_current_limit_a: 80}
circuits: [{id: main, phase_current_limit_a: 80}]
chargers: [{id: CP1, ocpp_version: "1.6", circuit: main}]
ocpp: {port: 0}
control: {fallback_import_limit_kw: 20, cycle_period_s: 0.2, lease_refresh_s: 5}
recording: {directory: rec}
"""


def _wait_for(path: Path, text: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the log:\n{path.read_text() if path.exists() else ''}")


@pytest.mark.timeout(60)
def test_run_reload_and_stop(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(SITE)
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "evdlm", "run", str(config), "--state-dir", str(tmp_path), "--log-level", "INFO"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        _wait_for(log, "OCPP central system on ws://127.0.0.1", 30)
        _wait_for(log, "no grid meter", 5)  # the config's warnings are logged at start
        # It listens first and compiles its kernels in the background; cycles start after that.
        _wait_for(log, "first cycle decided", 40)
        # A broken file is refused on SIGHUP; the process keeps running.
        config.write_text(SITE.replace("import_limit_kw: 50", "import_limit_kw: -50"))
        process.send_signal(signal.SIGHUP)
        content = _wait_for(log, "reload refused", 10)
        assert "grid.import_limit_kw" in content
        assert process.poll() is None
        # A valid one is applied.
        config.write_text(SITE.replace("import_limit_kw: 50", "import_limit_kw: 40"))
        process.send_signal(signal.SIGHUP)
        _wait_for(log, "reload: config applied", 10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    recordings = list((tmp_path / "rec").glob("*.jsonl.gz"))
    assert recordings and recordings[0].stat().st_size > 0


def test_run_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(SITE.replace("circuit: main", "circuit: attic"))
    result = subprocess.run(
        [sys.executable, "-m", "evdlm", "run", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "chargers[0].circuit: circuit 'attic' is not defined" in result.stderr
