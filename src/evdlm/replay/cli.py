"""`evdlm replay`: the replay loop with a rich progress bar and a one-screen report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from evdlm.core.decide import SolverChoice
from evdlm.recording import CycleInputsRecord, recording_files
from evdlm.replay.loop import ReplayResult, replay_parallel, replay_recording

EXIT_OK = 0
EXIT_DIFFERENT = 1  # an unchanged replay that does not reproduce the gateway


def replay_main(
    recording: Path,
    *,
    config: Path | None,
    solver: str | None,
    out: Path | None,
    progress: bool,
    workers: int | None = None,
) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if not recording.exists() or not recording_files(recording):
        print(f"{recording}: no recording found", file=sys.stderr)
        return 2
    config_text = config.read_text(encoding="utf-8") if config is not None else None
    choice = SolverChoice(solver) if solver is not None else SolverChoice.CHAIN
    console = Console(stderr=True)
    files = recording_files(recording)
    unchanged = config is None and choice is SolverChoice.CHAIN
    # Checking a recording splits it by segment over processes; a counterfactual or a replay
    # written out runs in order (its memory flows from one segment into the next).
    processes = max(1, workers if workers is not None else os.cpu_count() or 1)
    parallel = unchanged and out is None and processes > 1 and len(files) > 1
    with Progress(
        TextColumn("[bold]replay"),
        BarColumn(),
        TextColumn("{task.fields[cycles]} cycles, file {task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=False,
    ) as bar:
        task = bar.add_task("replay", total=len(files), cycles=0)
        seen = {"cycles": 0}

        def on_cycle(record: CycleInputsRecord) -> None:
            seen["cycles"] += 1
            if record.header is not None and seen["cycles"] > 1:
                bar.advance(task)
            if seen["cycles"] % 200 == 0:
                bar.update(task, cycles=seen["cycles"])

        def on_segment(part: ReplayResult) -> None:
            seen["cycles"] += part.cycles
            bar.update(task, advance=1, cycles=seen["cycles"])

        if parallel:
            result = replay_parallel(recording, workers=processes, on_segment=on_segment)
        else:
            result = replay_recording(
                recording, config_text=config_text, solver=choice, out_dir=out, on_cycle=on_cycle if progress else None
            )
        bar.update(task, completed=len(files), cycles=result.cycles)
    summary = result.summary()
    summary["processes"] = min(processes, len(files)) if parallel else 1
    print(json.dumps(summary, indent=2))
    if unchanged and result.differing_cycles:
        print(f"{result.differing_cycles} of {result.cycles} cycles differ from the recording", file=sys.stderr)
        return EXIT_DIFFERENT
    return EXIT_OK
