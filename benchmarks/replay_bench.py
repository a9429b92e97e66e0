"""Replay benchmark: a simulated 200-EVSE site, 1 s cycles, replayed through decide(); JSON out.

    .venv/bin/python benchmarks/replay_bench.py                 # 24 h (makes the recording once, ~16 min)
    .venv/bin/python benchmarks/replay_bench.py --hours 1       # quicker, extrapolated to 24 h
    .venv/bin/python benchmarks/replay_bench.py --formats       # JSONL vs Parquet on the shipped sample

The recording is cached in --cache (it is made by the in-process simulation, which runs the
same decide(), so making it takes at least as long as replaying it). Figures: decode-only time,
replay time (single process and with --workers segment-parallel processes), per-cycle cost,
differing cycles, and the extrapolation to 24 h.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "recordings" / "workplace-50-day"


def make_recording(directory: Path, hours: float) -> float:
    from evdlm.sim.closed_loop import simulate
    from evdlm.sim.sample_day import depot_day_spec

    started = time.perf_counter()
    simulate(depot_day_spec(hours), directory)
    return time.perf_counter() - started


def replay_figures(directory: Path, hours: float, workers: int) -> dict[str, Any]:
    from evdlm.recording import read_recording, recording_files
    from evdlm.replay import replay_recording
    from evdlm.replay.loop import replay_parallel

    files = recording_files(directory)
    started = time.perf_counter()
    cycles = sum(1 for _ in read_recording(directory))
    decode_s = time.perf_counter() - started
    # Warm up numba's cache and the config parse outside the timing.
    replay_recording(files[0], until_s=next(read_recording(files[0])).now_s + 5)
    result = replay_recording(directory)
    figures: dict[str, Any] = {
        "site_evses": 200,
        "cycle_period_s": 1.0,
        "hours": hours,
        "cycles": cycles,
        "recording_mb": round(sum(f.stat().st_size for f in files) / 1e6, 2),
        "decode_only_s": round(decode_s, 2),
        "replay_s": round(result.wall_s, 2),
        "replay_ms_per_cycle": round(1000 * result.wall_s / max(1, result.cycles), 3),
        "differing_cycles": result.differing_cycles,
        "speedup_vs_real_time": round(result.speedup, 1),
        "replay_24h_s_extrapolated": round(result.wall_s * 24 / hours, 1),
    }
    if workers > 1:
        started = time.perf_counter()
        parallel = replay_parallel(directory, workers=workers)
        wall_s = time.perf_counter() - started
        figures.update(
            {
                "workers": workers,
                "parallel_replay_s": round(wall_s, 2),
                "parallel_differing_cycles": parallel.differing_cycles,
                "parallel_24h_s_extrapolated": round(wall_s * 24 / hours, 1),
            }
        )
    return figures


def format_figures(recording: Path) -> dict[str, Any]:
    """Size and write/read speed of the JSONL recording against Parquet (zstd) holding the same deltas."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from evdlm.recording import SUFFIX, _lines, read_recording, recording_files

    files = recording_files(recording)
    lines = [line for file in files for line in _lines(file)]
    jsonl_bytes = sum(f.stat().st_size for f in files)

    started = time.perf_counter()
    for file in files:
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6) as stream:
            for line in _lines(file):
                stream.write((json.dumps(line, separators=(",", ":")) + "\n").encode())
    jsonl_write_s = time.perf_counter() - started

    started = time.perf_counter()
    parsed = sum(1 for _ in (line for file in files for line in _lines(file)))
    jsonl_parse_s = time.perf_counter() - started
    started = time.perf_counter()
    records = sum(1 for _ in read_recording(recording))
    jsonl_records_s = time.perf_counter() - started

    # The same deltas, columnar: one row per cycle, one per changed reading, one per changed EVSE.
    started = time.perf_counter()
    cycle_rows: dict[str, list[Any]] = {"t": [], "n": [], "dr": [], "outcome": [], "commands": []}
    reading_rows: dict[str, list[Any]] = {"n": [], "device": [], "data": []}
    evse_rows: dict[str, list[Any]] = {"n": [], "evse": [], "data": []}
    for line in lines:
        if line.get("type") != "cycle":
            continue
        cycle_rows["t"].append(line["t"])
        cycle_rows["n"].append(line["n"])
        cycle_rows["dr"].append(json.dumps(line["dr"]))
        cycle_rows["outcome"].append(json.dumps(line["outcome"]))
        cycle_rows["commands"].append(json.dumps(line["commands"]))
        for device, data in line["readings"].items():
            reading_rows["n"].append(line["n"])
            reading_rows["device"].append(device)
            reading_rows["data"].append(json.dumps(data))
        for key, data in line["evses"].items():
            evse_rows["n"].append(line["n"])
            evse_rows["evse"].append(key)
            evse_rows["data"].append(json.dumps(data))
    sink = Path(os.environ.get("TMPDIR", "/tmp")) / "evdlm-format-bench"
    sink.mkdir(exist_ok=True)
    tables = {"cycles": cycle_rows, "readings": reading_rows, "evses": evse_rows}
    for name, rows in tables.items():
        pq.write_table(pa.table(rows), sink / f"{name}.parquet", compression="zstd")
    parquet_write_s = time.perf_counter() - started
    parquet_bytes = sum((sink / f"{name}.parquet").stat().st_size for name in tables)
    started = time.perf_counter()
    read_rows = sum(pq.read_table(sink / f"{name}.parquet").num_rows for name in tables)
    parquet_read_s = time.perf_counter() - started
    return {
        "recording": str(recording.relative_to(ROOT) if recording.is_relative_to(ROOT) else recording),
        "suffix": SUFFIX,
        "lines": parsed,
        "cycles": records,
        "jsonl_gz_mb": round(jsonl_bytes / 1e6, 3),
        "parquet_zstd_mb": round(parquet_bytes / 1e6, 3),
        "jsonl_write_s": round(jsonl_write_s, 2),
        "parquet_write_s": round(parquet_write_s, 2),
        "jsonl_parse_s": round(jsonl_parse_s, 2),
        "jsonl_read_records_s": round(jsonl_records_s, 2),
        "parquet_read_tables_s": round(parquet_read_s, 3),
        "parquet_rows": read_rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "evdlm-replay-bench")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--formats", action="store_true", help="JSONL vs Parquet on the shipped sample day")
    args = parser.parse_args(argv)
    if args.formats:
        print(json.dumps(format_figures(SAMPLE), indent=2))
        return 0
    directory = args.cache / f"200evse-{args.hours:g}h"
    made_s = None
    if not any(directory.glob("*.jsonl.gz")):
        print(f"making the recording in {directory} ...", file=sys.stderr)
        made_s = make_recording(directory, args.hours)
    figures = replay_figures(directory, args.hours, args.workers)
    if made_s is not None:
        figures["simulation_s"] = round(made_s, 1)
    figures["cpu_count"] = os.cpu_count()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
