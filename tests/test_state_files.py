"""State files: written atomically, and any odd content set aside with a warning, never a crash."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from evdlm import strict_json
from evdlm.restricted_file import load_restrictions, save_restrictions
from evdlm.state_files import load_state, write_atomically


def _dict_of_ints(data: Any) -> dict[str, int]:
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise ValueError("not a dict of ints")
    return data


def test_a_written_state_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "var" / "state.json"
    write_atomically(path, '{"a": 1}')
    assert load_state(path, _dict_of_ints) == {"a": 1}
    assert load_state(tmp_path / "absent.json", _dict_of_ints) is None


@pytest.mark.parametrize(
    "content",
    [b'{"a": 1', b"[1, 2, 3]", b'{"a": NaN}', b'{"a": Infinity}', b"\xff\xfe not utf-8", b'{"a": "x"}', b""],
)
def test_odd_content_is_set_aside_with_one_warning(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="evdlm.state")
    path = tmp_path / "state.json"
    path.write_bytes(content)
    assert load_state(path, _dict_of_ints) is None
    assert not path.exists()
    kept = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == content  # nothing lost
    assert len(caplog.records) == 1 and "kept aside" in caplog.records[0].getMessage()


def test_strict_json_refuses_non_finite_numbers_and_never_writes_them() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        strict_json.loads('{"x": -Infinity}')
    assert strict_json.dumps({"a": [1.5, float("nan")], "b": float("inf")}) == '{"a": [1.5, null], "b": null}'
    assert strict_json.loads(strict_json.dumps({"a": 1.0})) == {"a": 1.0}


def test_restrictions_survive_a_restart_and_odd_files_do_not_stop_it(tmp_path: Path) -> None:
    path = tmp_path / "restricted.json"
    save_restrictions(path, {("CP01", 1): "refuses charging profiles, while grid is over its limit"})
    assert load_restrictions(path) == {("CP01", 1): "refuses charging profiles, while grid is over its limit"}
    path.write_text('{"format": 1, "restricted": [{"charger": "CP01", "evse": true}]}')
    assert load_restrictions(path) == {}
    assert list(tmp_path.glob("restricted.json.corrupt-*"))
