"""Recording lines decode to exactly the values that were encoded, whichever decoding path they take."""

from __future__ import annotations

import gzip
import json
from dataclasses import fields
from pathlib import Path

import pytest

from evdlm.core.clock import FakeClock
from evdlm.core.memory import ControlMemory
from evdlm.core.types import EvseState, Quality, Reading
from evdlm.recording import (
    RecordingWriter,
    decode_evse,
    decode_reading,
    encode_evse,
    encode_reading,
    read_recording,
)

FULL = EvseState(
    charger_id="CP01",
    evse_id=2,
    online=True,
    connected=True,
    charging=True,
    updated_at_s=1_800_000_000.5,
    transaction_id="tx-9",
    phase_current_a=(15.5, None, 0.0),
    power_w=7200.0,
    offered_current_a=16.0,
    energy_wh=1234.5,
    soc_pct=55.0,
    departure_at_s=1_800_003_600.0,
    energy_needed_wh=20_000.0,
    ev_max_current_a=32.0,
    controllable=False,
    compliant=False,
    accepted_limit=16.0,
    accepted_unit="A",
)
SPARSE = EvseState("CP02", 1, online=False, connected=False, charging=False, updated_at_s=5.0)


@pytest.mark.parametrize("state", [FULL, SPARSE], ids=["every-field", "defaults"])
def test_evse_state_survives_a_json_round_trip(state: EvseState) -> None:
    line = json.loads(json.dumps(encode_evse(state)))  # lists where tuples were, as on disk
    decoded = decode_evse(line)
    assert decoded == state
    assert type(decoded) is EvseState and hash(decoded) == hash(state)
    assert decoded.phase_current_a is None or isinstance(decoded.phase_current_a, tuple)
    with pytest.raises(AttributeError):
        decoded.online = True  # type: ignore[misc]  # still frozen


def test_decoding_skips_fields_a_newer_writer_added_and_reports_missing_ones() -> None:
    line = {**encode_evse(SPARSE), "plug_temperature_c": 41.0}
    assert decode_evse(line) == SPARSE
    incomplete = encode_evse(SPARSE)
    del incomplete["updated_at_s"]
    with pytest.raises(TypeError, match="updated_at_s"):
        decode_evse(incomplete)


def test_evse_state_keeps_nothing_the_direct_decoding_would_skip() -> None:
    """decode_evse fills a complete record in without __init__: EvseState must stay a plain frozen dataclass."""
    assert not hasattr(EvseState, "__post_init__")
    assert not hasattr(EvseState, "__slots__")
    assert all(field.init for field in fields(EvseState))


def test_reading_survives_a_json_round_trip() -> None:
    reading = Reading("grid", 12.0, Quality.OK, power_w=-300.0, phase_power_w=(1.0, None, -2.0), soc_pct=None)
    assert decode_reading(json.loads(json.dumps(encode_reading(reading)))) == reading


def test_lines_with_nan_still_read(tmp_path: Path) -> None:
    """json.dumps writes NaN; the fast parser refuses it and the standard one takes the line."""
    path = tmp_path / "nan.jsonl.gz"
    header = {"type": "header", "version": 1, "config_yaml": "", "memory": {}}
    cycle = {
        "t": 1.0,
        "n": 1,
        "readings": {"m": {"device": "m", "taken_at_s": 1.0, "quality": "invalid", "power_w": float("nan")}},
    }
    path.write_bytes(gzip.compress((json.dumps(header) + "\n" + json.dumps(cycle) + "\n").encode()))
    (record,) = list(read_recording(path))
    power_w = record.readings["m"].power_w
    assert power_w is not None and power_w != power_w


def test_recordings_are_strict_json_even_with_an_implausible_reading(tmp_path: Path) -> None:
    nan_reading = Reading("gm", 10.0, Quality.INVALID, power_w=float("nan"), reason="power nan W implausible")
    writer = RecordingWriter(tmp_path, "s", "site: {id: s}", FakeClock(10.0))
    writer.write_cycle(
        now_s=10.0,
        cycle=1,
        memory_before=ControlMemory(),
        readings={"gm": nan_reading},
        evse_states={},
        dr={"import_limit_w": None},
        commands={},
        outcome={"status": "ok"},
    )
    writer.close()
    (path,) = tmp_path.glob("*.jsonl.gz")
    text = gzip.decompress(path.read_bytes()).decode()
    assert "NaN" not in text and "Infinity" not in text
    (record,) = list(read_recording(path))
    kept = record.readings["gm"]
    assert kept.quality is Quality.INVALID and kept.power_w is None and kept.reason == "power nan W implausible"
