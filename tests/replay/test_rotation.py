"""Rotation and the disk bound: old segments go, what is left still replays exactly."""

from __future__ import annotations

from pathlib import Path

from evdlm.config import parse_site_config
from evdlm.core.clock import FakeClock
from evdlm.core.decide import DecisionContext
from evdlm.recording import RecordingWriter, decode_memory, read_recording, recording_files
from evdlm.replay import replay_recording
from evdlm.replay.loop import decide_recorded

from .conftest import DEMO_RECORDING


def _rewrite(directory: Path, rotate_after_s: float, max_disk_bytes: float) -> list[int]:
    """Re-record the demo through a writer with the given rotation; returns the size after each cycle."""
    records = read_recording(DEMO_RECORDING)
    first = next(records)
    assert first.header is not None
    config = parse_site_config(str(first.header["config_yaml"])).config
    context = DecisionContext.from_config(config)
    battery = config.battery.device if config.battery else None
    memory = decode_memory(first.header["memory"])
    writer = RecordingWriter(
        directory,
        "demo",
        str(first.header["config_yaml"]),
        FakeClock(first.now_s),
        rotate_after_s=rotate_after_s,
        max_disk_bytes=max_disk_bytes,
    )
    sizes = []
    for record in [first, *records]:
        decision = decide_recorded(context, battery, record, memory)
        writer.write_cycle(
            now_s=record.now_s,
            cycle=record.cycle,
            memory_before=memory,
            readings=record.readings,
            evse_states=record.evse_states,
            dr=record.dr,
            commands={(c.charger_id, c.evse_id): c.limit for c in decision.plan.commands},
            outcome=record.outcome,
        )
        memory = decision.plan.memory
        sizes.append(sum(path.stat().st_size for path in directory.glob("*.jsonl.gz")))
    writer.close()
    return sizes


def test_rotation_splits_by_time_and_each_segment_starts_with_a_header(tmp_path: Path) -> None:
    _rewrite(tmp_path, rotate_after_s=120.0, max_disk_bytes=1e9)
    files = recording_files(tmp_path)
    assert len(files) == 10  # 1183 s of recording in 120-s segments
    for file in files:
        first = next(read_recording(file))
        assert first.header is not None
    assert replay_recording(tmp_path).differing_cycles == 0


def test_disk_bound_deletes_the_oldest_segments(tmp_path: Path) -> None:
    bound = 60_000
    sizes = _rewrite(tmp_path, rotate_after_s=60.0, max_disk_bytes=bound)
    files = recording_files(tmp_path)
    segment_max = max(path.stat().st_size for path in files)
    # Pruning runs when a segment opens, never on the one being written: at most one over.
    assert max(sizes) <= bound + 2 * segment_max
    assert sum(path.stat().st_size for path in files) <= bound + segment_max
    assert len(files) < 20  # 20 one-minute segments were written
    kept = list(read_recording(tmp_path))
    assert kept[-1].cycle == list(read_recording(DEMO_RECORDING))[-1].cycle  # the newest are kept
    assert kept[0].cycle > 1  # the oldest are gone
    # What is left replays exactly: each segment carries the memory it starts from.
    result = replay_recording(tmp_path)
    assert result.cycles == len(kept)
    assert result.differing_cycles == 0
