"""Replay a recording through :func:`~evdlm.core.decide.decide` in simulated time (pure but for files).

Each recorded cycle gives the inputs the gateway had (readings, EVSE states, DR limits); the
memory is carried from the previous replayed decision, starting from the header of the first
file. With the recorded config and solver the commands are the gateway's, bit for bit; any
difference is counted and reported (it would mean the decision is not a pure function of the
record). With another config or solver the commands are the counterfactual.

Memory across files: a file whose first cycle continues the previous one (cycle number + 1)
keeps the replayed memory, so a counterfactual stays self-consistent across hourly segments;
a file after a gap or a gateway restart starts from its own header memory, as the gateway did.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evdlm.config import parse_site_config
from evdlm.config.models import SiteConfig
from evdlm.core.clock import FakeClock
from evdlm.core.decide import Decision, DecisionContext, SolverChoice, decide
from evdlm.core.memory import ControlMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits
from evdlm.recording import (
    CycleInputsRecord,
    EvseKey,
    RecordingWriter,
    decode_memory,
    key_text,
    read_recording,
    recording_files,
)

# Differences kept in the result for the report; the count covers all of them.
MAX_DIFFERENCES_KEPT = 50


@dataclass(frozen=True)
class CommandDifference:
    cycle: int
    now_s: float
    evse: str  # "charger/evse"
    recorded: float | None  # the limit the gateway held (None: never commanded)
    replayed: float | None


@dataclass(frozen=True)
class ReplayResult:
    """What a replay found; per-cycle columns are plain lists (see :meth:`cycles_frame`)."""

    cycles: int
    differing_cycles: int
    differences: tuple[CommandDifference, ...]  # the first MAX_DIFFERENCES_KEPT
    simulated_s: float  # span of recorded time replayed
    wall_s: float
    solver: SolverChoice
    config_changed: bool
    columns: dict[str, list[Any]] = field(repr=False)
    out_recording: Path | None = None

    @property
    def speedup(self) -> float:
        """Recorded time per second of replay."""
        return self.simulated_s / self.wall_s if self.wall_s > 0 else float("inf")

    def cycles_frame(self) -> Any:
        """A pandas DataFrame, one row per cycle: time, status, solver, limits, differences."""
        import pandas as pd

        frame = pd.DataFrame(self.columns)
        frame["time"] = pd.to_datetime(frame["t_s"], unit="s", utc=True)
        return frame.set_index("time")

    def summary(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "differing_cycles": self.differing_cycles,
            "solver": self.solver.value,
            "config_changed": self.config_changed,
            "simulated_s": round(self.simulated_s, 3),
            "wall_s": round(self.wall_s, 3),
            "speedup": round(self.speedup, 1),
            "first_differences": [d.__dict__ for d in self.differences[:10]],
        }


@functools.lru_cache(maxsize=8)
def _context_for(
    config_text: str, solver: SolverChoice, source: str = "<recorded config>"
) -> tuple[DecisionContext, str | None, SiteConfig]:
    """The decision context of a config, parsed once per process (every segment repeats its own)."""
    config = parse_site_config(config_text, source).config
    battery = config.battery.device if config.battery is not None else None
    return DecisionContext.from_config(config, solver), battery, config


def decide_recorded(
    context: DecisionContext, battery_device: str | None, record: CycleInputsRecord, memory: ControlMemory
) -> Decision:
    """The decision for one recorded cycle given ``memory`` (what the gateway computed, if unchanged)."""
    dr = record.dr
    inputs = BuildInputs(
        now_s=record.now_s,
        readings=record.readings,
        evse_states=record.evse_states,
        memory=memory,
        demand=DemandLimits(dr.get("import_limit_w"), dr.get("export_limit_w"), dr.get("window_import_limit_w")),
        battery_reading=record.readings.get(battery_device) if battery_device else None,
    )
    return decide(context, inputs)


def _window(
    records: Iterator[CycleInputsRecord], since_s: float | None, until_s: float | None
) -> Iterator[CycleInputsRecord]:
    """Cycles from the last file start at or before ``since_s`` (the memory is known there) to ``until_s``."""
    pending: list[CycleInputsRecord] = []
    for record in records:
        if until_s is not None and record.now_s > until_s:
            return
        if since_s is not None and record.now_s < since_s:
            # Before the window: buffer from the latest file start so the window starts with a known memory.
            if record.header is not None:
                pending = [record]
            elif pending:
                pending.append(record)
            continue
        if pending and record.header is None:
            yield from pending
        pending = []
        yield record


def replay_recording(
    path: Path | Sequence[Path],
    *,
    config_text: str | None = None,
    solver: SolverChoice = SolverChoice.CHAIN,
    out_dir: Path | None = None,
    since_s: float | None = None,
    until_s: float | None = None,
    on_cycle: Callable[[CycleInputsRecord], None] | None = None,
    on_decision: Callable[[CycleInputsRecord, Decision], None] | None = None,
) -> ReplayResult:
    """Re-run every cycle of the recording at ``path`` (a file or a folder of segments).

    Parameters
    ----------
    path
        A recording file, a folder of segments, or a list of segment files in time order.
    config_text
        Another site config (YAML text) for a counterfactual; None replays with each file's own.
    solver
        ``SolverChoice.CHAIN`` is what the gateway runs by default; ``LP`` solves LP-first.
    out_dir
        Where to write the replayed recording (same format: recorded inputs, replayed commands).
    since_s, until_s
        Replay a window only (epoch s). It starts at the last file start before ``since_s``, where
        the memory is known.
    on_cycle, on_decision
        Called after each replayed cycle with its record (and the replayed decision).
    """
    source = "<replay config>" if config_text is not None else "<recorded config>"
    if config_text is not None:
        _context_for(config_text, solver, source)  # a bad config fails before any cycle
    memory = ControlMemory()
    replayed_held: dict[EvseKey, float] = {}
    differences: list[CommandDifference] = []
    differing = 0
    count = 0
    first_s = last_s = None
    previous_cycle: int | None = None
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "t_s",
            "cycle",
            "status",
            "solver",
            "import_limit_w",
            "battery_w",
            "commanded_evses",
            "differs",
            "recorded_status",
        )
    }
    writer: RecordingWriter | None = None
    current: tuple[DecisionContext, str | None, SiteConfig] | None = None
    started = time.perf_counter()

    files = [path] if isinstance(path, Path) else list(path)
    records = itertools.chain.from_iterable(read_recording(file) for file in files)
    for record in _window(records, since_s, until_s):
        if record.header is not None:
            text = config_text if config_text is not None else str(record.header["config_yaml"])
            current = _context_for(text, solver, source)
            if previous_cycle is None or record.cycle != previous_cycle + 1:
                memory = decode_memory(record.header["memory"])
                replayed_held = {}
            if out_dir is not None and writer is None:
                writer = RecordingWriter(
                    out_dir,
                    f"{current[2].site.id}-replay",
                    text,
                    FakeClock(record.now_s),
                    rotate_after_s=current[2].recording.rotate_after_s,
                    max_disk_bytes=float("inf"),
                )
        if current is None:
            raise ValueError(f"{path}: a cycle before any header (not a recording?)")
        context, battery_device, _ = current
        decision = decide_recorded(context, battery_device, record, memory)
        memory_before, memory = memory, decision.plan.memory
        commands = decision.plan.limits
        replayed_held.update(commands)
        differs = replayed_held != record.commands
        if differs:
            differing += 1
            for key in sorted(set(replayed_held) | set(record.commands)):
                recorded, replayed = record.commands.get(key), replayed_held.get(key)
                if recorded != replayed and len(differences) < MAX_DIFFERENCES_KEPT:
                    differences.append(CommandDifference(record.cycle, record.now_s, key_text(key), recorded, replayed))
        solved = decision.result
        columns["t_s"].append(record.now_s)
        columns["cycle"].append(record.cycle)
        columns["status"].append(solved.status.value)
        columns["solver"].append(solved.solver.value)
        columns["import_limit_w"].append(decision.built.row_limit[context.topology.import_row])
        columns["battery_w"].append(solved.allocation.battery_w)
        columns["commanded_evses"].append(len(commands) - list(commands.values()).count(0.0))
        columns["differs"].append(differs)
        columns["recorded_status"].append(record.outcome.get("status"))
        if writer is not None:
            writer.write_cycle(
                now_s=record.now_s,
                cycle=record.cycle,
                memory_before=memory_before,
                readings=record.readings,
                evse_states=record.evse_states,
                dr=record.dr,
                commands=commands,
                outcome={
                    "status": solved.status.value,
                    "solver": solved.solver.value,
                    "reason": solved.reason,
                    "import_limit_w": decision.built.row_limit[context.topology.import_row],
                    "battery_w": solved.allocation.battery_w,
                    "stale": list(decision.built.stale_devices),
                    "results": [],
                    "replay_of": record.outcome.get("status"),
                    "price_per_kwh": record.outcome.get("price_per_kwh"),  # the prices of the time
                },
            )
        count += 1
        first_s = record.now_s if first_s is None else first_s
        last_s = record.now_s
        previous_cycle = record.cycle
        if on_cycle is not None:
            on_cycle(record)
        if on_decision is not None:
            on_decision(record, decision)

    out_recording = None
    if writer is not None:
        writer.close()
        out_recording = out_dir
    wall_s = time.perf_counter() - started
    period_s = current[2].control.cycle_period_s if current is not None else 0.0
    simulated_s = (last_s - first_s + period_s) if first_s is not None and last_s is not None else 0.0
    result = ReplayResult(
        cycles=count,
        differing_cycles=differing,
        differences=tuple(differences),
        simulated_s=simulated_s,
        wall_s=wall_s,
        solver=solver,
        config_changed=config_text is not None,
        columns=columns,
        out_recording=out_recording,
    )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n", encoding="utf-8")
        result.cycles_frame().to_csv(out_dir / "cycles.csv")
    return result


def _replay_segment(file: Path) -> ReplayResult:
    return replay_recording(file)


def replay_parallel(
    path: Path, *, workers: int | None = None, on_segment: Callable[[ReplayResult], None] | None = None
) -> ReplayResult:
    """An unchanged replay of a multi-segment recording, its segments spread over ``workers`` processes.

    Each segment carries the memory it starts from, so segments replay independently; for a
    recording that replays exactly the result is :func:`replay_recording`'s (a segment that
    differs is checked from its own header, as the gateway restarted it). Only for checking a
    recording (same config and solver): a counterfactual's memory must flow across segments.
    ``on_segment`` is called as each segment finishes (in completion order).
    """
    files = recording_files(path)
    count = max(1, min(workers or os.cpu_count() or 1, len(files)))
    started = time.perf_counter()
    with ProcessPoolExecutor(count) as pool:
        futures = [pool.submit(_replay_segment, file) for file in files]
        if on_segment is not None:
            for future in as_completed(futures):
                on_segment(future.result())
        parts = [future.result() for future in futures]  # in time order
    columns: dict[str, list[Any]] = {name: [] for name in parts[0].columns}
    for part in parts:
        for name, values in part.columns.items():
            columns[name].extend(values)
    return ReplayResult(
        cycles=sum(part.cycles for part in parts),
        differing_cycles=sum(part.differing_cycles for part in parts),
        differences=tuple(itertools.chain.from_iterable(part.differences for part in parts))[:MAX_DIFFERENCES_KEPT],
        simulated_s=sum(part.simulated_s for part in parts),
        wall_s=time.perf_counter() - started,
        solver=SolverChoice.CHAIN,
        config_changed=False,
        columns=columns,
    )
