"""Cycle recordings: what each cycle saw, decided and sent, for exact replay and analysis.

Format: gzip-compressed JSON lines, one file per segment (``rotate_after_s``). Each file starts
with a header (the site config's YAML text and the control memory at that moment, so a
segment replays on its own); each cycle line stores only what changed since the previous line
of the same file (readings, EVSE states, commands), which keeps a quiet 200-EVSE site small.
A cycle line may carry ``events``: what happened since the previous cycle that is not an input
itself (session commands and their answers); readers of older recordings find none.
The stream is sync-flushed every ``flush_period_s`` so a crash loses at most that much; the
reader accepts a file cut off mid-stream. Old segments are deleted beyond ``max_disk_bytes``.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import orjson

from evdlm import strict_json
from evdlm.core.clock import Clock
from evdlm.core.memory import ControlMemory, EvseMemory
from evdlm.core.types import PHASE_QUANTITIES, EvseState, Quality, Reading
from evdlm.core.types import EvseKey as EvseKey

log = logging.getLogger("evdlm.recording")
FORMAT_VERSION = 1
SUFFIX = ".jsonl.gz"


def key_text(key: EvseKey) -> str:
    return f"{key[0]}/{key[1]}"


@functools.lru_cache(maxsize=65536)
def key_of(text: str) -> EvseKey:
    charger, evse = text.rsplit("/", 1)
    return (charger, int(evse))


_READING_FIELDS = tuple(f.name for f in fields(Reading))
_EVSE_FIELDS = tuple(f.name for f in fields(EvseState))


def encode_reading(reading: Reading) -> dict[str, Any]:
    # A shallow read of each field: asdict's deep copy costs 15x more (1000 EVSEs every cycle).
    values = ((name, getattr(reading, name)) for name in _READING_FIELDS)
    return {name: value for name, value in values if value is not None}


_READING_NAMES = frozenset(_READING_FIELDS)
_READING_TUPLES = PHASE_QUANTITIES


def decode_reading(data: dict[str, Any]) -> Reading:
    values = {name: value for name, value in data.items() if name in _READING_NAMES}
    for name in _READING_TUPLES:
        if (value := values.get(name)) is not None:
            values[name] = tuple(value)
    values["quality"] = Quality(data["quality"])
    return Reading(**values)


def encode_evse(state: EvseState) -> dict[str, Any]:
    values = ((name, getattr(state, name)) for name in _EVSE_FIELDS)
    encoded = {name: value for name, value in values if value is not None}
    if not state.paused:
        del encoded["paused"]  # the default: absent, as in recordings made before sessions could pause
    return encoded


_EVSE_NAMES = frozenset(_EVSE_FIELDS)
_EVSE_DEFAULTS = {f.name: f.default for f in fields(EvseState) if f.default is not MISSING}
_EVSE_REQUIRED = _EVSE_NAMES - _EVSE_DEFAULTS.keys()


def decode_evse(data: dict[str, Any]) -> EvseState:
    """The EVSE state a recording line holds: absent fields take their defaults, fields a newer
    writer added are skipped.

    A replay decodes ~15 states a cycle, and a frozen dataclass's ``__init__`` sets its 20
    fields through guarded ``object.__setattr__`` calls (4x the rest of decoding), so a
    complete record is filled in directly; EvseState has no ``__post_init__`` to skip (a test
    keeps it so, and that decoding equals construction). Anything else goes through ``__init__``.
    """
    currents = data.get("phase_current_a")
    values = {**_EVSE_DEFAULTS, **data}
    if currents is not None:
        values["phase_current_a"] = tuple(currents)
    if values.keys() == _EVSE_NAMES:
        state = object.__new__(EvseState)
        state.__dict__.update(values)
        return state
    return EvseState(**{name: value for name, value in values.items() if name in _EVSE_NAMES})


def encode_memory(memory: ControlMemory) -> dict[str, Any]:
    return {
        "battery_w": memory.battery_w,
        "evses": {
            key_text(key): {k: v for k, v in asdict(m).items() if v is not None} for key, m in memory.evses.items()
        },
    }


def decode_memory(data: dict[str, Any]) -> ControlMemory:
    return ControlMemory(
        evses={key_of(key): EvseMemory(**value) for key, value in data.get("evses", {}).items()},
        battery_w=float(data.get("battery_w", 0.0)),
    )


@dataclass(frozen=True)
class CycleInputsRecord:
    """The full inputs of one cycle, reconstructed from the deltas."""

    now_s: float
    cycle: int
    readings: dict[str, Reading]
    evse_states: dict[EvseKey, EvseState]
    dr: dict[str, Any]  # import_limit_w, export_limit_w, mode, events
    commands: dict[EvseKey, float]  # the limit every commanded EVSE held after this cycle
    outcome: dict[str, Any]  # status, solver, reason, timings, results
    header: dict[str, Any] | None  # set on the first cycle of each file
    # What happened between the previous cycle and this one that is not an input as such: session
    # commands, accepted or rejected ({"type": "session_command", ...}). Absent in older recordings.
    events: tuple[dict[str, Any], ...] = ()


class RecordingWriter:
    def __init__(
        self,
        directory: Path,
        site_id: str,
        config_text: str,
        clock: Clock,
        *,
        rotate_after_s: float = 3600.0,
        max_disk_bytes: float = 2e9,
        flush_period_s: float = 2.0,
    ) -> None:
        self.directory = directory
        self.site_id = site_id
        self.config_text = config_text
        self.clock = clock
        self.rotate_after_s = rotate_after_s
        self.max_disk_bytes = max_disk_bytes
        self.flush_period_s = flush_period_s
        self._stream: TextIO | None = None
        self._raw: gzip.GzipFile | None = None
        self._opened_at_s = 0.0
        self._flushed_at_s = 0.0
        self._last_readings: dict[str, dict[str, Any]] = {}
        self._last_evses: dict[str, dict[str, Any]] = {}
        self._last_commands: dict[str, float] = {}
        self.path: Path | None = None
        self.cycles_written = 0

    def _open(self, now_s: float, memory: ControlMemory) -> None:
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = f"{now_s:017.3f}".replace(".", "")
        self.path = self.directory / f"{self.site_id}-{stamp}{SUFFIX}"
        self._raw = gzip.GzipFile(self.path, "wb", compresslevel=6)
        self._opened_at_s = self._flushed_at_s = now_s
        self._last_readings, self._last_evses, self._last_commands = {}, {}, {}
        header = {
            "type": "header",
            "version": FORMAT_VERSION,
            "site": self.site_id,
            "started_s": now_s,
            "config_yaml": self.config_text,
            "memory": encode_memory(memory),
        }
        self._write_line(header)
        self._prune()

    def _write_line(self, record: dict[str, Any]) -> None:
        assert self._raw is not None
        # Strict JSON: an implausible reading's NaN is kept as null (its reason says what it was).
        self._raw.write((strict_json.dumps(record, separators=(",", ":")) + "\n").encode())

    def write_cycle(
        self,
        *,
        now_s: float,
        cycle: int,
        memory_before: ControlMemory,
        readings: dict[str, Reading],
        evse_states: dict[EvseKey, EvseState],
        dr: dict[str, Any],
        commands: dict[EvseKey, float],
        outcome: dict[str, Any],
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        if self._raw is None or now_s - self._opened_at_s >= self.rotate_after_s:
            self._open(now_s, memory_before)
        line: dict[str, Any] = {"type": "cycle", "t": now_s, "n": cycle, "dr": dr, "outcome": outcome}
        if events:
            line["events"] = events
        encoded_readings = {name: encode_reading(r) for name, r in readings.items()}
        line["readings"] = {n: v for n, v in encoded_readings.items() if self._last_readings.get(n) != v}
        encoded_evses = {key_text(k): encode_evse(s) for k, s in evse_states.items()}
        line["evses"] = {k: v for k, v in encoded_evses.items() if self._last_evses.get(k) != v}
        gone = sorted(set(self._last_evses) - set(encoded_evses))
        if gone:
            line["evses_gone"] = gone
        encoded_commands = {key_text(k): v for k, v in commands.items()}
        line["commands"] = {k: v for k, v in encoded_commands.items() if self._last_commands.get(k) != v}
        self._last_readings, self._last_evses = encoded_readings, encoded_evses
        self._last_commands = {**self._last_commands, **encoded_commands}
        self._write_line(line)
        self.cycles_written += 1
        if now_s - self._flushed_at_s >= self.flush_period_s:
            self.flush(now_s)

    def flush(self, now_s: float | None = None) -> None:
        if self._raw is not None:
            # A sync flush makes everything so far decodable even if the process dies now.
            self._raw.flush(zlib.Z_SYNC_FLUSH)
            self._flushed_at_s = now_s if now_s is not None else self.clock.now_s()

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _prune(self) -> None:
        files = sorted(self.directory.glob(f"{self.site_id}-*{SUFFIX}"))
        total = sum(path.stat().st_size for path in files)
        for path in files[:-1]:  # never the file being written
            if total <= self.max_disk_bytes:
                break
            total -= path.stat().st_size
            path.unlink()
            log.info("recording %s deleted to stay within %.0f MB", path.name, self.max_disk_bytes / 1e6)


def recording_files(path: Path) -> list[Path]:
    """A recording is one file or a folder of segments (in time order)."""
    return sorted(path.glob(f"*{SUFFIX}")) if path.is_dir() else [path]


def _parse(line: bytes) -> dict[str, Any]:
    try:
        parsed: dict[str, Any] = orjson.loads(line)  # 2.5x the standard parser on cycle lines
    except orjson.JSONDecodeError:
        parsed = json.loads(line)  # NaN and Infinity, which recordings before 2026-12 hold and orjson refuses
    return parsed


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rb") as stream:
        try:
            for line in stream:
                if line.endswith(b"\n"):
                    yield _parse(line)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            log.info("%s ends early (the gateway stopped while writing it)", path.name)


def read_recording(path: Path) -> Iterator[CycleInputsRecord]:
    """Every cycle of a recording with its full inputs, in order (decoding only what changed)."""
    for file in recording_files(path):
        header: dict[str, Any] | None = None
        readings: dict[str, Reading] = {}
        evses: dict[EvseKey, EvseState] = {}
        commands: dict[EvseKey, float] = {}
        for line in _lines(file):
            if line.get("type") == "header":
                header, readings, evses, commands = line, {}, {}, {}
                continue
            readings = {**readings, **{name: decode_reading(data) for name, data in line.get("readings", {}).items()}}
            evses = {**evses, **{key_of(k): decode_evse(v) for k, v in line.get("evses", {}).items()}}
            for gone in line.get("evses_gone", []):
                evses.pop(key_of(gone), None)
            commands = {**commands, **{key_of(k): float(v) for k, v in line.get("commands", {}).items()}}
            yield CycleInputsRecord(
                now_s=float(line["t"]),
                cycle=int(line["n"]),
                readings=readings,
                evse_states=evses,
                dr=line.get("dr", {}),
                commands=commands,
                outcome=line.get("outcome", {}),
                header=header,
                events=tuple(line.get("events", ())),
            )
            header = None
