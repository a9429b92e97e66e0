"""The DR engine's bounds (pure): hostile values, nesting, store caps, strict restore, change tracking."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from evdlm.config.models import DrProgram
from evdlm.dr.engine import DrEngine, Effective, event_state
from evdlm.dr.messages import Status

from .test_engine import AT_17_30, HOUR, NOTIFICATION, T0, engine, send


def limit_event(
    event_id: str, limit_kw: float, *, start: str = "2026-11-21T17:00:00Z", program: str = "dso"
) -> dict[str, Any]:
    out = copy.deepcopy(NOTIFICATION)
    out["object"]["id"] = event_id
    out["object"]["programID"] = program
    out["object"]["intervalPeriod"] = {"start": start, "duration": "PT1H"}
    out["object"]["payloadDescriptors"] = [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}]
    out["object"]["intervals"] = [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [limit_kw]}]}]
    return out


def nan_payload(event_id: str, token: str = "NaN") -> bytes:
    text = json.dumps(limit_event(event_id, 12345.0))
    return text.replace("12345.0", token).encode()


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_limit_is_rejected_with_a_pointer_and_changes_nothing(token: str) -> None:
    dr = engine()
    assert send(dr, limit_event("good", 100.0))["status"] == "OPT_IN"
    before = dr.effective(AT_17_30)
    response = send(dr, nan_payload("bad", token), topic_id="bad")
    assert response["status"] == "REJECTED" and response["reason"] == "SCHEMA_INVALID"
    assert response["pointer"] == "/object/intervals/0/payloads/0/values/0"
    json.dumps(response, allow_nan=False)  # the answer itself is strict JSON
    assert "bad" not in dr.events and dr.effective(AT_17_30) == before
    # A later legitimate limit still wins (min() over caps never sees NaN).
    assert send(dr, limit_event("lower", 60.0))["status"] == "OPT_IN"
    effective = dr.effective(AT_17_30)
    assert effective.import_limit_w == 60_000 and math.isfinite(effective.import_limit_w)


@pytest.mark.parametrize("depth", [3000, 100_000])
def test_deeply_nested_payload_is_rejected(depth: int) -> None:
    dr = engine()
    payload = b'{"objectType": "EVENT", "object": {"id": "deep", "x": ' + b"[" * depth + b"]" * depth + b"}}"
    response = send(dr, payload, topic_id="deep")
    assert response["status"] == "REJECTED" and response["reason"] == "SCHEMA_INVALID"
    assert response["eventID"] == "deep" and not dr.events


def test_oversize_payload_is_rejected() -> None:
    dr = engine()
    event = limit_event("big", 50.0)
    event["object"]["padding"] = "x" * 100_000
    response = send(dr, event)
    assert response["status"] == "REJECTED" and "byte limit" in response["detail"]
    assert not dr.events


def test_store_caps_evict_what_is_over_first_and_reject_beyond() -> None:
    dr = DrEngine(
        site_id="site1",
        resources=frozenset(),
        programs={"dso": DrProgram(id="dso"), "tso": DrProgram(id="tso")},
        started_s=T0,
        max_events_total=4,
        max_events_per_program=3,
    )
    # Three dso events: one ends at 11:00, two later.
    assert send(dr, limit_event("early", 90.0, start="2026-11-21T10:00:00Z"))["status"] == "ACTIVE"
    for name in ("a", "b"):
        assert send(dr, limit_event(name, 80.0))["status"] == "OPT_IN"
    # At 12:00 "early" is over (not yet ticked away): it makes room for a fourth dso event.
    noon = T0 + 2 * HOUR
    assert send(dr, limit_event("c", 70.0), now_s=noon)["status"] == "OPT_IN"
    assert set(dr.events) == {"a", "b", "c"} and dr.stats.evicted == 1
    # Nothing of dso is over any more: a fifth is refused whole, the store untouched.
    response = send(dr, limit_event("d", 10.0), now_s=noon)
    assert response["status"] == "REJECTED" and response["reason"] == "TOO_MANY_EVENTS"
    assert set(dr.events) == {"a", "b", "c"}
    # Another program still has room, up to the site's total.
    assert send(dr, limit_event("t1", 75.0, program="tso"), now_s=noon)["status"] == "OPT_IN"
    assert send(dr, limit_event("t2", 75.0, program="tso"), now_s=noon)["reason"] == "TOO_MANY_EVENTS"
    # An update of a stored event is not a new event: accepted at the cap.
    update = limit_event("a", 65.0)
    update["object"]["modificationDateTime"] = "2026-11-21T10:30:00Z"
    assert send(dr, update, now_s=noon)["status"] == "OPT_IN"
    assert dr.effective(AT_17_30).import_limit_w == 65_000


@pytest.mark.parametrize(
    "state",
    [
        {"events": None},
        {"events": ["x"]},
        [1, 2, 3],
        "text",
        {"events": [{"raw": {"objectType": "EVENT"}, "status": "ACTIVE"}]},
        {"events": [], "failsafeSinceS": "yesterday"},
        {"events": [], "lastOpenEndedImportW": {"dso": math.inf}},
        {"events": [], "lastOpenEndedImportW": [1]},
        {"events": [], "version": 2},
    ],
)
def test_restore_refuses_odd_shapes_as_value_error(state: Any) -> None:
    dr = engine()
    with pytest.raises(ValueError):
        dr.restore(state)
    assert not dr.events and dr.failsafe_since_s is None


def test_restore_is_all_or_nothing() -> None:
    source = engine()
    send(source, limit_event("keep", 70.0))
    good = source.to_state()
    dr = engine()
    assert dr.restore(good) == 1
    bad = copy.deepcopy(good)
    bad["events"].append({"raw": limit_event("second", 50.0), "status": "NOT_A_STATUS"})
    bad["failsafeSinceS"] = T0
    with pytest.raises(ValueError):
        dr.restore(bad)
    assert list(dr.events) == ["keep"] and dr.failsafe_since_s is None  # the first restore stands
    infinite = copy.deepcopy(good)
    infinite["events"][0]["raw"]["object"]["intervals"][0]["payloads"][0]["values"] = [math.inf]
    with pytest.raises(ValueError):
        engine().restore(infinite)


def test_changes_are_tracked_per_event() -> None:
    dr = engine()
    send(dr, limit_event("a", 70.0))
    send(dr, limit_event("b", 60.0))
    assert dr.take_changes() == ({"a", "b"}, False)
    send(dr, limit_event("b", 60.0))  # the same version again: nothing changes
    send(dr, nan_payload("c"), topic_id="c")  # rejected: nothing changes
    assert dr.take_changes() == (set(), False)
    dr.tick(AT_17_30)  # both start
    assert dr.take_changes()[0] == {"a", "b"}
    dr.receive("a", b"", AT_17_30)  # cancelled
    assert dr.take_changes()[0] == {"a"} and "a" not in dr.events
    assert json.loads(json.dumps(event_state(dr.events["b"]), allow_nan=False))["status"] == Status.ACTIVE.value


def test_starting_mode_caps_at_failsafe_or_fallback() -> None:
    with_failsafe = engine()  # dso: failsafe 50 kW
    send(with_failsafe, limit_event("a", 70.0))
    starting = with_failsafe.effective(AT_17_30, starting_fallback_w=30_000)
    assert (starting.mode.value, starting.import_limit_w) == ("STARTING", 50_000)
    no_failsafe = engine(dso=DrProgram(id="dso"))
    assert no_failsafe.effective(T0, starting_fallback_w=30_000).import_limit_w == 30_000
    no_programs = DrEngine(site_id="site1", resources=frozenset(), programs={}, started_s=T0)
    assert no_programs.effective(T0, starting_fallback_w=30_000).import_limit_w == 30_000
    assert isinstance(no_programs.effective(T0), Effective) and no_programs.effective(T0).import_limit_w is None


def test_bridge_status_with_a_non_finite_interval_is_ignored() -> None:
    dr = engine()
    dr.bridge_status(b'{"state": "online", "heartbeatIntervalS": NaN}', T0)
    dr.bridge_status(b'{"state": "online", "heartbeatIntervalS": 1e999}', T0)
    assert dr.bridge_online is None and dr.heartbeat_interval_s == 60.0
    dr.bridge_status(b'{"state": "online", "heartbeatIntervalS": 30}', T0)
    assert dr.bridge_online and dr.heartbeat_interval_s == 30.0
