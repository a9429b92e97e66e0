"""The pure session-input rules: validation, bounds, idempotence, precedence and expiry."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evdlm.core.session_inputs import (
    EMPTY,
    MAX_PAYLOAD_BYTES,
    Refusal,
    SessionOverrides,
    SessionPolicy,
    expire,
    iso,
    overlay,
    submit,
)
from evdlm.core.types import EvseState

from .conftest import NOW_S, session, site_config

POLICY = SessionPolicy.from_config(site_config())
KEY = ("A1", 1)


def states(*items: EvseState) -> dict[tuple[str, int], EvseState]:
    return {(s.charger_id, s.evse_id): s for s in items}


def send(document: Any, overrides: SessionOverrides = EMPTY, *items: EvseState, key: tuple[str, int] = KEY):  # type: ignore[no-untyped-def]
    payload = document if isinstance(document, bytes) else json.dumps(document).encode()
    return submit(overrides, POLICY, states(*(items or (session("A1"), session("A2")))), key, payload, NOW_S)


def test_a_good_command_is_accepted_echoed_and_answered_with_the_inputs() -> None:
    departure = NOW_S + 3 * 3600
    overrides, answer = send(
        {"departure": iso(departure), "energy_kwh": 12.5, "priority": 0, "pause": True, "command_id": "c-1"}
    )
    assert answer.accepted and answer.command_id == "c-1" and answer.transaction_id == "tx-A1"
    assert answer.inputs is not None
    assert answer.inputs["departure_s"] == departure and answer.inputs["departure_source"] == "command"
    assert answer.inputs["energy_kwh"] == 12.5 and answer.inputs["priority"] == 0 and answer.inputs["paused"]
    assert "energy_kwh=12.5" in answer.reason and "pause" in answer.reason
    item = overrides.get(KEY)
    assert item is not None and item.transaction_id == "tx-A1" and item.energy_needed_wh == 12_500.0
    # Epoch seconds work too, and the same command twice gives the same state.
    again, answer2 = send({"departure": departure, "energy_kwh": 12.5, "priority": 0, "pause": True}, overrides)
    assert again == overrides and answer2.inputs == answer.inputs
    # Resume and clearing fields bring it back to nothing.
    cleared, _ = send({"resume": True, "departure": None, "energy_kwh": None, "priority": None}, overrides)
    assert len(cleared) == 0


@pytest.mark.parametrize(
    ("document", "words", "kind"),
    [
        ({"energy_kwh": -5}, "energy_kwh -5", Refusal.BAD_REQUEST),
        ({"energy_kwh": 0}, "energy_kwh 0", Refusal.BAD_REQUEST),
        ({"energy_kwh": 501}, "at most 500", Refusal.BAD_REQUEST),
        ({"energy_kwh": "12"}, "must be a number", Refusal.BAD_REQUEST),
        ({"energy_kwh": True}, "must be a number", Refusal.BAD_REQUEST),
        ({"departure": "yesterday"}, "not an ISO 8601 time", Refusal.BAD_REQUEST),
        ({"departure": iso(NOW_S - 60)}, "in the past", Refusal.BAD_REQUEST),
        ({"departure": NOW_S + 8 * 86400}, "more than 7 days ahead", Refusal.BAD_REQUEST),
        ({"departure": "2027-01-15T10:00:00"}, "no time zone", Refusal.BAD_REQUEST),
        ({"priority": 10}, "not 0 to 9", Refusal.BAD_REQUEST),
        ({"priority": 1.5}, "integer", Refusal.BAD_REQUEST),
        ({"pause": "yes"}, "true or false", Refusal.BAD_REQUEST),
        ({"pause": True, "resume": True}, "together", Refusal.BAD_REQUEST),
        ({"colour": "red"}, "unknown field(s) colour", Refusal.BAD_REQUEST),
        ({"command_id": "x" * 65}, "1 to 64", Refusal.BAD_REQUEST),
        ([1, 2], "JSON object", Refusal.BAD_REQUEST),
        ({"priority": {"a": [1]}}, "nested deeper", Refusal.BAD_REQUEST),
        (b'{"energy_kwh": NaN}', "not finite", Refusal.BAD_REQUEST),
        (b'{"energy_kwh": 1e999}', "not finite", Refusal.BAD_REQUEST),
        (b"{nope", "not JSON", Refusal.BAD_REQUEST),
        (b'{"command_id": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}', "over 4096", Refusal.TOO_LARGE),
        ({"transaction_id": "tx-other", "pause": True}, "not the session", Refusal.NO_SESSION),
    ],
)
def test_bad_commands_are_rejected_with_a_reason_and_change_nothing(document: Any, words: str, kind: Refusal) -> None:
    before, _ = send({"priority": 3})
    after, answer = send(document, before)
    assert not answer.accepted and answer.refusal is kind
    assert words in answer.reason, answer.reason
    assert after is before


def test_no_session_and_unknown_evse_are_refused() -> None:
    idle = replace(session("A1"), charging=False, connected=False, transaction_id=None)
    _, answer = send({"pause": True}, EMPTY, idle)
    assert not answer.accepted and answer.refusal is Refusal.NO_SESSION and "no session" in answer.reason
    _, answer = send({"pause": True}, key=("ZZ", 1))
    assert not answer.accepted and answer.refusal is Refusal.UNKNOWN_EVSE
    _, answer = send({"pause": True}, key=("A1", 2))  # A1 has one EVSE
    assert answer.refusal is Refusal.UNKNOWN_EVSE


def test_a_named_transaction_must_be_the_current_one() -> None:
    overrides, answer = send({"transaction_id": "tx-A1", "priority": 2})
    assert answer.accepted and overrides.get(KEY) is not None


def test_overrides_vanish_with_their_transaction() -> None:
    overrides, _ = send({"pause": True, "priority": 0})
    running = states(session("A1"), session("A2"))
    assert expire(overrides, running) is overrides
    seen = overlay(running, overrides, POLICY)
    assert seen[KEY].paused and seen[KEY].priority == 0
    # A new transaction at the same EVSE: the old one's override neither applies nor survives.
    renewed = states(session("A1", "tx-new"), session("A2"))
    seen = overlay(renewed, overrides, POLICY)
    assert not seen[KEY].paused and seen[KEY].priority is None
    assert len(expire(overrides, renewed)) == 0
    ended = states(replace(session("A1"), charging=False, connected=False, transaction_id=None), session("A2"))
    assert len(expire(overrides, ended)) == 0


def test_precedence_command_vehicle_profile_charger_default() -> None:
    started = NOW_S - 600.0
    # Nothing known: built-in defaults (left unknown), the charger's priority.
    plain = overlay(states(session("A1")), EMPTY, POLICY)[KEY]
    assert plain.departure_at_s is None and plain.energy_needed_wh is None and plain.priority is None
    # The charger's defaults (A2: 10 h, 15 kWh).
    a2 = overlay(states(session("A2")), EMPTY, POLICY)[("A2", 1)]
    assert a2.departure_at_s == started + 10 * 3600 and a2.energy_needed_wh == 15_000.0
    # A profile beats the charger (idTags case-insensitive, exact or glob).
    for tag in ("FLEET-0042", "04AABBCC", "fleet-x"):
        fleet = overlay(states(session("A2", id_tag=tag)), EMPTY, POLICY)[("A2", 1)]
        assert (fleet.departure_at_s, fleet.energy_needed_wh, fleet.priority) == (started + 2 * 3600, 30_000.0, 0)
    visitor = overlay(states(session("A2", id_tag="V-7")), EMPTY, POLICY)[("A2", 1)]
    assert visitor.priority == 5 and visitor.departure_at_s == started + 10 * 3600  # the rest from the charger
    # The car (ISO 15118) beats the profile; a command beats the car.
    car = session("A2", id_tag="FLEET-1", departure_at_s=NOW_S + 5000.0, energy_needed_wh=8000.0)
    seen = overlay(states(car), EMPTY, POLICY)[("A2", 1)]
    assert (seen.departure_at_s, seen.energy_needed_wh, seen.priority) == (NOW_S + 5000.0, 8000.0, 0)
    overrides, _ = submit(EMPTY, POLICY, states(car), ("A2", 1), b'{"energy_kwh": 2, "priority": 7}', NOW_S)
    seen = overlay(states(car), overrides, POLICY)[("A2", 1)]
    assert (seen.departure_at_s, seen.energy_needed_wh, seen.priority) == (NOW_S + 5000.0, 2000.0, 7)


def test_energy_given_by_command_counts_down_with_the_meter() -> None:
    car = session("A1", energy_wh=100_000.0)
    overrides, _ = submit(EMPTY, POLICY, states(car), KEY, b'{"energy_kwh": 10}', NOW_S)
    later = replace(car, energy_wh=104_000.0)
    assert overlay(states(later), overrides, POLICY)[KEY].energy_needed_wh == 6000.0
    done = replace(car, energy_wh=120_000.0)
    assert overlay(states(done), overrides, POLICY)[KEY].energy_needed_wh == 0.0


def test_unchanged_states_are_the_same_objects() -> None:
    plain = session("A1")
    assert overlay(states(plain), EMPTY, POLICY)[KEY] is plain


def test_overrides_are_bounded_by_the_configured_evses() -> None:
    overrides = EMPTY
    for charger in ("A1", "A2"):
        for priority in range(10):
            overrides, _ = send({"priority": priority}, overrides, key=(charger, 1))
    assert len(overrides) == 2


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELD_VALUES = st.dictionaries(
    st.sampled_from(["departure", "energy_kwh", "priority", "pause", "resume", "transaction_id", "command_id", "x"]),
    JSON,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), JSON.map(lambda d: json.dumps(d).encode()), FIELD_VALUES))
def test_junk_never_raises_and_a_rejection_never_changes_state(junk: Any) -> None:
    before, _ = send({"priority": 4, "pause": True})
    payload = junk if isinstance(junk, bytes) else json.dumps(junk).encode()
    after, answer = submit(before, POLICY, states(session("A1"), session("A2")), KEY, payload, NOW_S)
    if answer.accepted:
        assert after.get(KEY) is None or after.get(KEY).transaction_id == "tx-A1"  # type: ignore[union-attr]
        assert set(after.by_evse) <= {KEY, ("A2", 1)}
        again, _ = submit(after, POLICY, states(session("A1"), session("A2")), KEY, payload, NOW_S)
        assert again == after  # idempotent
    else:
        assert after is before and answer.reason
    json.dumps(answer.as_json(), allow_nan=False)  # the answer is always valid JSON
