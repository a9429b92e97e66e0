"""The DR engine against every rule of specs/dr-mqtt.md (pure: time is passed in)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from evdlm.config.models import DrProgram
from evdlm.dr.engine import ChannelMode, DrEngine, OptOutRefused
from evdlm.dr.messages import parse_duration

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC).timestamp()  # 10:00Z
HOUR = 3600.0

NOTIFICATION: dict[str, Any] = {
    "objectType": "EVENT",
    "operation": "CREATE",
    "object": {
        "id": "evt-1",
        "programID": "dso",
        "priority": 1,
        "modificationDateTime": "2026-11-21T10:00:00Z",
        "targets": ["site1"],
        "payloadDescriptors": [
            {"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"},
            {"payloadType": "PRICE", "units": "KWH", "currency": "EUR"},
        ],
        "intervalPeriod": {"start": "2026-11-21T17:00:00Z", "duration": "PT1H"},
        "intervals": [
            {
                "id": 0,
                "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [120.0]}, {"type": "PRICE", "values": [0.41]}],
            },
            {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [80.0]}]},
        ],
    },
    "x-dlm": {"schemaVersion": 1, "expiresAt": "2026-11-21T20:05:00Z", "responseRequired": "always"},
}
AT_17_30 = T0 + 7.5 * HOUR
AT_18_30 = T0 + 8.5 * HOUR


def engine(**programs: DrProgram) -> DrEngine:
    configured = programs or {
        "dso": DrProgram(id="dso", failsafe_import_limit_kw=50, failsafe_min_duration_s=2 * HOUR, import_floor_kw=10)
    }
    return DrEngine(site_id="site1", resources=frozenset({"CP01", "garage"}), programs=dict(configured), started_s=T0)


def message(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(NOTIFICATION)
    for path, value in changes.items():
        node = out
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key.replace("_dash_", "-")]
        last = keys[-1].replace("_dash_", "-")
        if value is None:
            del node[last]
        else:
            node[last] = value
    return out


def send(
    dr: DrEngine, payload: dict[str, Any] | bytes, now_s: float = T0, topic_id: str | None = None
) -> dict[str, Any]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    event_id = topic_id or (payload["object"]["id"] if isinstance(payload, dict) else "evt-1")
    responses = dr.receive(event_id, raw, now_s)
    assert len(responses) <= 1
    return responses[0].payload if responses else {}


def test_accepts_and_schedules_intervals() -> None:
    dr = engine()
    response = send(dr, NOTIFICATION)
    assert response["status"] == "OPT_IN"
    assert response["applied"]["effectiveFrom"] == "2026-11-21T17:00:00Z"
    assert response["applied"]["effectiveUntil"] == "2026-11-21T19:00:00Z"
    dr.heartbeat(AT_17_30)
    assert dr.effective(T0).import_limit_w is None  # not started yet
    assert dr.effective(AT_17_30).import_limit_w == 120_000
    assert dr.effective(AT_17_30).price_per_kwh == 0.41
    assert dr.effective(AT_18_30).import_limit_w == 80_000  # second interval follows the first
    (active,) = dr.tick(AT_17_30)
    assert active.payload["status"] == "ACTIVE"


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        (b"{not json", ""),
        (json.dumps(message(object__modificationDateTime=None)).encode(), "/object/modificationDateTime"),
        (
            json.dumps(message(object__modificationDateTime="2026-11-21T10:00:00")).encode(),
            "/object/modificationDateTime",
        ),
        (json.dumps(message(object__intervals=[])).encode(), "/object/intervals"),
        (json.dumps(message(x_dash_dlm__schemaVersion=2)).encode(), "/x-dlm/schemaVersion"),
        (json.dumps(message(object__intervalPeriod__duration="1 hour")).encode(), "/object/intervalPeriod/duration"),
    ],
)
def test_invalid_messages_are_rejected_and_change_nothing(payload: bytes, pointer: str) -> None:
    dr = engine()
    send(dr, NOTIFICATION)
    before = dr.effective(AT_17_30)
    response = send(dr, payload, topic_id="evt-1")
    assert (response["status"], response["reason"], response["pointer"]) == ("REJECTED", "SCHEMA_INVALID", pointer)
    assert response["eventID"] == "evt-1"
    assert dr.effective(AT_17_30) == before
    assert dr.stats.rejected == 1


def test_values_that_cannot_be_applied_are_rejected_whole() -> None:
    dr = engine()
    bad_unit = message(object__payloadDescriptors=[{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "MVA"}])
    assert send(dr, bad_unit)["reason"] == "UNIT_MISMATCH"
    unsupported = message()
    unsupported["object"]["intervals"][1]["payloads"].append({"type": "GHG", "values": [1]})
    assert send(dr, unsupported)["reason"] == "UNSUPPORTED_PAYLOAD"
    negative = message()
    negative["object"]["intervals"][1]["payloads"][0]["values"] = [-5]
    assert send(dr, negative)["reason"] == "SCHEMA_INVALID"
    assert dr.events == {}


def test_watts_are_accepted() -> None:
    dr = engine()
    send(dr, message(object__payloadDescriptors=[{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "W"}]))
    assert (
        dr.effective(AT_17_30).import_limit_w == 120.0 * 1 if False else dr.effective(AT_17_30).import_limit_w == 10_000
    )  # clamped to the 10 kW floor


def test_targeting() -> None:
    dr = engine()
    assert send(dr, message(object__targets=["other-site"]))["reason"] == "NOT_TARGETED"
    assert send(dr, message(object__targets=["CP01"]))["status"] == "OPT_IN"  # one of our resources
    assert (
        send(dr, message(object__id="evt-2", object__programID="unknown-program"), topic_id="evt-2")["reason"]
        == "NOT_TARGETED"
    )


def test_versions() -> None:
    dr = engine()
    first = send(dr, NOTIFICATION)
    assert send(dr, NOTIFICATION) == first  # retained redelivery: same answer
    older = message(object__modificationDateTime="2026-11-21T09:00:00Z")
    assert send(dr, older)["reason"] == "STALE_VERSION"
    newer = message(object__modificationDateTime="2026-11-21T10:01:00Z")
    newer["object"]["intervals"][0]["payloads"][0]["values"] = [60.0]
    assert send(dr, newer, T0 + 60)["status"] == "OPT_IN"
    assert dr.effective(AT_17_30).import_limit_w == 60_000


def test_most_restrictive_limit_wins_priority_decides_price() -> None:
    dr = engine()
    send(dr, NOTIFICATION)
    other = message(object__id="evt-2", object__priority=0)
    other["object"]["intervals"][0]["payloads"] = [
        {"type": "IMPORT_CAPACITY_LIMIT", "values": [150.0]},
        {"type": "PRICE", "values": [0.20]},
    ]
    send(dr, other)
    effective = dr.effective(AT_17_30)
    assert effective.import_limit_w == 120_000
    assert effective.price_per_kwh == 0.20  # priority 0 beats priority 1
    assert effective.events == ("evt-1", "evt-2")


def test_floor_clamps_and_says_so() -> None:
    dr = engine()
    low = message()
    low["object"]["intervals"][1]["payloads"][0]["values"] = [4.0]
    response = send(dr, low)
    assert response["reason"] == "CLAMPED_TO_FLOOR"
    assert dr.effective(AT_18_30).import_limit_w == 10_000


def test_expiry() -> None:
    dr = engine()
    assert send(dr, NOTIFICATION, now_s=T0 + 11 * HOUR)["reason"] == "EXPIRED"
    send(dr, NOTIFICATION)
    dr.heartbeat(T0 + 9 * HOUR)
    (done,) = dr.tick(T0 + 9 * HOUR + 1)
    assert done.payload["status"] == "COMPLETED"
    assert dr.effective(T0 + 9 * HOUR + 1).import_limit_w is None
    assert dr.events == {}


def test_cancel_by_delete_and_by_empty_retained_message() -> None:
    dr = engine()
    send(dr, NOTIFICATION)
    assert send(dr, message(operation="DELETE"))["status"] == "CANCELLED"
    send(dr, NOTIFICATION)
    assert send(dr, b"", topic_id="evt-1")["status"] == "CANCELLED"
    assert dr.effective(AT_17_30).import_limit_w is None


def test_clock_skew() -> None:
    dr = engine()
    assert send(dr, NOTIFICATION, now_s=T0 - 600)["reason"] == "CLOCK_SKEW"
    assert send(dr, NOTIFICATION, now_s=T0 - 120)["status"] == "OPT_IN"


def _open_ended(limit_kw: float) -> dict[str, Any]:
    out = message(object__id="evt-open", object__intervalPeriod={"start": "2026-11-21T10:00:00Z", "duration": "P9999Y"})
    out["object"]["intervals"] = [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [limit_kw]}]}]
    out["x-dlm"].pop("expiresAt")
    return out


def test_stale_channel_failsafe() -> None:
    dr = engine()
    dr.bridge_status(b'{"state": "online", "heartbeatIntervalS": 60}', T0)
    send(dr, _open_ended(90.0), T0)
    send(dr, NOTIFICATION, T0)  # time-bounded: runs to its end
    dr.tick(T0 + 100)
    assert dr.effective(T0 + 100).mode is ChannelMode.NORMAL
    assert dr.effective(T0 + 100).import_limit_w == 90_000
    dr.tick(T0 + 181)  # 3 heartbeats missed
    effective = dr.effective(T0 + 181)
    assert effective.mode is ChannelMode.FAILSAFE
    assert effective.import_limit_w == 50_000  # the program's failsafe, below the 90 kW received
    assert dr.effective(AT_17_30).import_limit_w == 50_000
    # The channel comes back at once, but the failsafe holds its minimum duration (2 h).
    dr.heartbeat(T0 + 200)
    dr.tick(T0 + 200)
    assert dr.effective(T0 + 200).mode is ChannelMode.FAILSAFE
    dr.heartbeat(T0 + 181 + 2 * HOUR)
    dr.tick(T0 + 181 + 2 * HOUR)
    assert dr.effective(T0 + 181 + 2 * HOUR).mode is ChannelMode.NORMAL


def test_failsafe_never_above_last_limit_received_and_last_will() -> None:
    dr = engine()
    send(dr, _open_ended(30.0), T0)
    dr.bridge_status(b'{"state": "offline"}', T0 + 1)
    dr.tick(T0 + 1)
    assert dr.effective(T0 + 1).import_limit_w == 30_000


def test_opt_out_rules() -> None:
    voluntary = engine(dso=DrProgram(id="dso"))
    send(voluntary, NOTIFICATION)
    assert voluntary.opt_out("evt-1", T0).payload["status"] == "OPT_OUT"
    assert voluntary.effective(AT_17_30).import_limit_w is None
    mandatory = engine(dso=DrProgram(id="dso", mandatory=True))
    send(mandatory, NOTIFICATION)
    with pytest.raises(OptOutRefused):
        mandatory.opt_out("evt-1", T0)
    emergency = engine(dso=DrProgram(id="dso"))
    alert = message()
    alert["object"]["intervals"][1]["payloads"].append({"type": "ALERT_GRID_EMERGENCY", "values": [1]})
    send(emergency, alert)
    with pytest.raises(OptOutRefused):
        emergency.opt_out("evt-1", T0)


def test_persistence_reapplies_events_at_once() -> None:
    dr = engine()
    send(dr, NOTIFICATION)
    send(dr, _open_ended(90.0))
    state = json.loads(json.dumps(dr.to_state()))
    restarted = engine()
    restarted.restore(state)
    restarted.heartbeat(AT_17_30)
    dr.heartbeat(AT_17_30)
    assert restarted.effective(AT_17_30) == dr.effective(AT_17_30)
    assert send(restarted, NOTIFICATION) == send(dr, NOTIFICATION)  # redelivery answered as before


def test_randomized_start_is_stable_per_version() -> None:
    randomized = message(
        object__intervalPeriod={"start": "2026-11-21T17:00:00Z", "duration": "PT1H", "randomizeStart": "PT2M"}
    )
    offsets = []
    for _ in range(2):
        dr = engine()
        send(dr, randomized)
        offsets.append(dr.events["evt-1"].offset_s)
    assert offsets[0] == offsets[1]
    assert 0 <= offsets[0] <= 120
    newer = copy.deepcopy(randomized)
    newer["object"]["modificationDateTime"] = "2026-11-21T10:00:30Z"
    dr = engine()
    send(dr, newer)
    assert dr.events["evt-1"].offset_s != offsets[0]


def test_response_never_means_silence() -> None:
    dr = engine()
    assert send(dr, message(x_dash_dlm__responseRequired="never")) == {}
    assert dr.effective(AT_17_30).import_limit_w == 120_000


def test_durations() -> None:
    assert parse_duration("PT15M").total_seconds() == 900
    assert parse_duration("P1DT2H").total_seconds() == 26 * 3600
    with pytest.raises(ValueError):
        parse_duration("P")
