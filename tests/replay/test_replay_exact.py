"""An unchanged replay reproduces the recorded commands exactly; a changed one is the counterfactual."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from evdlm.cli import main
from evdlm.core.decide import SolverChoice
from evdlm.recording import read_recording, recording_files
from evdlm.replay import replay_recording

from .conftest import DEMO_RECORDING

DEMO_CYCLES = sum(1 for _ in read_recording(DEMO_RECORDING))

REGENERATE = (
    "the decision code changed since the sample was recorded: regenerate it with "
    "`evdlm demo --quick --no-live` and copy demo-out/recordings/*.jsonl.gz to {path}"
)


def test_shipped_demo_recording_replays_with_zero_differences() -> None:
    # Recorded by `evdlm demo --quick`: real OCPP, Modbus and MQTT on loopback, a DR event and a meter outage.
    result = replay_recording(DEMO_RECORDING)
    assert result.cycles == DEMO_CYCLES
    assert result.differing_cycles == 0, REGENERATE.format(path=DEMO_RECORDING)
    assert result.speedup > 50  # simulated time, no sockets: far faster than real time


def test_simulated_recording_over_several_segments_replays_exactly(morning_recording: Path) -> None:
    assert len(recording_files(morning_recording)) == 4  # 20 min in 5-min segments
    result = replay_recording(morning_recording)
    assert result.cycles == 240
    assert result.differing_cycles == 0
    frame = result.cycles_frame()
    assert (frame["commanded_evses"] > 10).any()  # the morning is busy: a meaningful comparison


def test_replayed_recording_is_itself_replayable(morning_recording: Path, tmp_path: Path) -> None:
    first = replay_recording(morning_recording, out_dir=tmp_path / "replayed")
    assert (tmp_path / "replayed" / "summary.json").exists()
    assert (tmp_path / "replayed" / "cycles.csv").exists()
    again = replay_recording(tmp_path / "replayed")
    assert first.cycles == again.cycles
    assert again.differing_cycles == 0


def test_a_window_starts_at_the_last_segment_before_it(morning_recording: Path) -> None:
    full = list(read_recording(morning_recording))
    since_s = full[100].now_s  # inside the second 5-min segment (cycles 61-120)
    result = replay_recording(morning_recording, since_s=since_s, until_s=full[150].now_s)
    assert result.columns["cycle"][0] == 61
    assert result.columns["cycle"][-1] == 151
    assert result.differing_cycles == 0


def test_counterfactual_config_changes_decisions(morning_recording: Path, tmp_path: Path) -> None:
    header = next(read_recording(morning_recording)).header
    assert header is not None
    tighter = str(header["config_yaml"]).replace("import_limit_kw: 200", "import_limit_kw: 120")
    result = replay_recording(morning_recording, config_text=tighter, out_dir=tmp_path / "cf")
    assert result.config_changed
    assert result.differing_cycles > 0
    assert max(result.columns["import_limit_w"]) == pytest.approx(120_000.0)


def test_lp_solver_counterfactual(tmp_path: Path) -> None:
    result = replay_recording(
        DEMO_RECORDING, solver=SolverChoice.LP, until_s=next(read_recording(DEMO_RECORDING)).now_s + 120
    )
    assert result.cycles > 100
    assert set(result.columns["solver"]) <= {"lp", "safe_paused"}
    assert "lp" in result.columns["solver"]


def test_truncated_recording_replays_up_to_the_cut(morning_recording: Path, tmp_path: Path) -> None:
    files = recording_files(morning_recording)
    cut = tmp_path / "cut"
    cut.mkdir()
    for file in files[:-1]:
        shutil.copy(file, cut / file.name)
    data = files[-1].read_bytes()
    (cut / files[-1].name).write_bytes(data[: len(data) // 2])  # the gateway died while writing
    whole = sum(1 for _ in read_recording(morning_recording))
    kept = sum(1 for _ in read_recording(cut))
    assert whole - 60 < kept < whole
    result = replay_recording(cut)
    assert result.cycles == kept
    assert result.differing_cycles == 0


def test_truncated_inside_a_line_drops_only_that_line(tmp_path: Path) -> None:
    data = gzip.decompress(DEMO_RECORDING.read_bytes())
    lines = data.split(b"\n")
    partial = b"\n".join(lines[:300]) + b"\n" + lines[300][: len(lines[300]) // 2]
    path = tmp_path / "partial.jsonl.gz"
    path.write_bytes(gzip.compress(partial)[:-8])  # no trailer either: as after a crash
    records = list(read_recording(path))
    assert len(records) == 299  # header + 299 whole cycle lines; the half line is dropped
    assert replay_recording(path).differing_cycles == 0


def test_cli_replay_reports_zero_differences(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(DEMO_RECORDING), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cycles"] == DEMO_CYCLES
    assert summary["differing_cycles"] == 0


def test_cli_counterfactual_writes_out(
    morning_recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = next(read_recording(morning_recording)).header
    assert header is not None
    other = tmp_path / "other.yaml"
    other.write_text(
        str(header["config_yaml"]).replace("phase_current_limit_a: 160, meter", "phase_current_limit_a: 100, meter")
    )
    out = tmp_path / "out"
    assert main(["replay", str(morning_recording), "--config", str(other), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config_changed"] is True
    assert summary["differing_cycles"] > 0
    assert recording_files(out)


def test_a_fresh_demo_run_with_real_protocols_replays_exactly(tmp_path: Path) -> None:
    """Recorded now, by the current code: OCPP, Modbus and MQTT on loopback, the real gateway."""
    from evdlm.sim.demo import DemoOptions, demo_main

    demo_main(DemoOptions(sim_minutes=3.0, speed=30.0, out_dir=tmp_path, live=False))
    result = replay_recording(tmp_path / "recordings")
    assert result.cycles > 150
    assert result.differing_cycles == 0


def test_parallel_replay_matches_the_serial_one(morning_recording: Path) -> None:
    from evdlm.replay.loop import replay_parallel

    serial = replay_recording(morning_recording)
    parallel = replay_parallel(morning_recording, workers=2)
    assert parallel.cycles == serial.cycles
    assert parallel.differing_cycles == 0
    assert parallel.columns["cycle"] == serial.columns["cycle"]


def test_cli_checks_segments_on_several_processes(morning_recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    serial = replay_recording(morning_recording)
    assert main(["replay", str(morning_recording), "--no-progress", "--workers", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["processes"] == 2
    assert (summary["cycles"], summary["differing_cycles"]) == (serial.cycles, 0)
    # A counterfactual keeps its memory flowing from segment to segment: one process.
    assert main(["replay", str(morning_recording), "--no-progress", "--workers", "2", "--solver", "lp"]) == 0
    assert json.loads(capsys.readouterr().out)["processes"] == 1


def test_shipped_sample_day_replays_exactly_in_its_busiest_hour() -> None:
    from .conftest import SAMPLE_DAY

    first = next(read_recording(SAMPLE_DAY))
    since_s = first.now_s + 8 * 3600.0  # 08:00 local: ~40 cars, both garage levels contended
    result = replay_recording(SAMPLE_DAY, since_s=since_s, until_s=since_s + 3600.0)
    assert result.cycles == 721
    assert result.differing_cycles == 0, (
        "the decision code changed since the sample was made: regenerate it with "
        f"`python -m evdlm.sim.sample_day {SAMPLE_DAY}`"
    )
