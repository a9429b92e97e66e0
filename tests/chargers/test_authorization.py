"""Issue 16: idTags are answered from ocpp.authorization (local list, unknown, free vending).

The Authorizer is pure (unit tests first); then real OCPP 1.6 and 2.0.1 frames over loopback
show Authorize, StartTransaction and TransactionEvent answered from it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from charger_rig import site_config, wait_for
from raw_ocpp import TIMESTAMP, RawCharger, central_system, raw_charger

from evdlm.chargers.ocpp.authorization import (
    CACHE_CAPACITY,
    Authorizer,
    id_tag_key,
    mask_id_tag,
)
from evdlm.config.models import OcppAuthorization

NOW_S = 1_800_000_000.0  # FakeClock's start: 2027-01-15
HOUR_S = 3600.0


def authorizer(**section: Any) -> Authorizer:
    return Authorizer.from_config(OcppAuthorization.model_validate(section))


LIST = [
    {"id_tag": "04A1B2C3D4", "parent_id_tag": "STAFF"},
    {"id_tag": "LOST-CARD", "status": "Blocked"},
    {"id_tag": "OLD-CARD", "status": "Expired"},
    {"id_tag": "BAD-CARD", "status": "Invalid"},
    {"id_tag": "VISITOR", "expiry": datetime.fromtimestamp(NOW_S + HOUR_S, UTC)},
]


# ---------------------------------------------------------------- the Authorizer


def test_local_list_statuses_and_unknown() -> None:
    auth = authorizer(local_list=LIST)
    accepted = auth.decide("04A1B2C3D4", NOW_S)
    assert (accepted.status, accepted.parent_id_tag, accepted.source) == ("Accepted", "STAFF", "local_list")
    assert accepted.accepted and accepted.expiry_s is None
    assert [auth.decide(tag, NOW_S).status for tag in ("LOST-CARD", "OLD-CARD", "BAD-CARD")] == [
        "Blocked",
        "Expired",
        "Invalid",
    ]
    stranger = auth.decide("STRANGER", NOW_S)
    assert (stranger.status, stranger.source) == ("Invalid", "unknown")
    assert authorizer(local_list=LIST, unknown="Accepted").decide("STRANGER", NOW_S).status == "Accepted"
    # A listed idTag keeps its own answer when unknown idTags are accepted.
    assert authorizer(local_list=LIST, unknown="Accepted").decide("LOST-CARD", NOW_S).status == "Blocked"


def test_expiry_turns_accepted_into_expired() -> None:
    auth = authorizer(local_list=LIST)
    before = auth.decide("VISITOR", NOW_S)
    assert before.status == "Accepted" and before.expiry_s == pytest.approx(NOW_S + HOUR_S)
    assert auth.decide("VISITOR", NOW_S + HOUR_S).status == "Expired"
    assert auth.decide("VISITOR", NOW_S + 2 * HOUR_S).status == "Expired"


def test_idtags_compare_case_insensitively() -> None:
    auth = authorizer(local_list=LIST)
    assert auth.decide("04a1b2c3d4", NOW_S).status == "Accepted"
    assert auth.decide("lost-card", NOW_S).status == "Blocked"
    assert id_tag_key("AbC") == id_tag_key("aBc")
    auth.remember("CsMs-TaG", "Blocked", None, NOW_S)
    cached = auth.cached("csms-tag", NOW_S)
    assert cached is not None and cached.status == "Blocked"


def test_accept_all_and_no_section_are_free_vending() -> None:
    free = authorizer(accept_all=True, local_list=LIST)
    decision = free.decide("LOST-CARD", NOW_S)
    assert (decision.status, decision.source) == ("Accepted", "accept_all")
    omitted = Authorizer.from_config(None)
    assert omitted.decide("ANYTHING", NOW_S).source == "accept_all"
    # Nothing listed and unknown Invalid: nobody charges.
    assert authorizer().decide("ANYTHING", NOW_S).status == "Invalid"


def test_cache_remembers_and_never_serves_an_expired_answer() -> None:
    auth = authorizer()
    auth.remember("TAG", "Accepted", NOW_S + 60, NOW_S, parent_id_tag="GROUP")
    hit = auth.cached("TAG", NOW_S + 59)
    assert hit is not None and (hit.status, hit.source, hit.parent_id_tag) == ("Accepted", "cache", "GROUP")
    assert auth.cached("TAG", NOW_S + 60) is None
    assert auth.cache_size == 0  # dropped when met
    auth.remember("PAST", "Accepted", NOW_S - 1, NOW_S)
    assert auth.cached("PAST", NOW_S) is None and auth.cache_size == 0
    auth.remember("FOREVER", "Accepted", None, NOW_S)
    assert auth.cached("FOREVER", NOW_S + 10 * 365 * 24 * HOUR_S) is not None
    auth.forget("forever")
    assert auth.cached("FOREVER", NOW_S) is None
    # The cache is only read offline: decide() never answers from it.
    auth.remember("CACHED", "Accepted", None, NOW_S)
    assert auth.decide("CACHED", NOW_S).status == "Invalid"


def test_cache_is_a_bounded_lru() -> None:
    auth = authorizer()
    assert auth.cache_capacity == CACHE_CAPACITY == 10_000
    for number in range(CACHE_CAPACITY):
        auth.remember(f"T{number}", "Accepted", None, NOW_S)
    assert auth.cached("T0", NOW_S) is not None  # used: now the most recent
    auth.remember("NEW", "Accepted", None, NOW_S)
    assert auth.cache_size == CACHE_CAPACITY
    assert auth.cached("T1", NOW_S) is None  # the least recently used went
    assert auth.cached("T0", NOW_S) is not None and auth.cached("NEW", NOW_S) is not None


def test_cache_answers_off_remembers_nothing() -> None:
    auth = authorizer(cache_answers=False)
    auth.remember("TAG", "Accepted", None, NOW_S)
    assert auth.cached("TAG", NOW_S) is None and auth.cache_size == 0


@pytest.mark.parametrize(
    ("policy", "unknown", "stranger"),
    [
        ("local_list", "Invalid", "Invalid"),
        ("local_list", "Accepted", "Accepted"),
        ("accept_all", "Invalid", "Accepted"),
        ("reject_all", "Accepted", "Invalid"),
    ],
)
def test_offline_policy_after_list_and_cache(policy: str, unknown: str, stranger: str) -> None:
    auth = authorizer(local_list=LIST, offline_policy=policy, unknown=unknown)
    auth.remember("CACHED", "Accepted", None, NOW_S)
    auth.remember("LOST-CARD", "Accepted", None, NOW_S)  # the list wins over a cached answer
    listed = auth.offline_decide("LOST-CARD", NOW_S)
    assert (listed.status, listed.source) == ("Blocked", "local_list")
    cached = auth.offline_decide("cached", NOW_S)
    assert (cached.status, cached.source) == ("Accepted", "cache")
    assert auth.offline_decide("STRANGER", NOW_S).status == stranger


def test_masking_keeps_only_the_last_four() -> None:
    assert mask_id_tag("04A1B2C3D4") == "****C3D4"
    assert mask_id_tag("ABCD") == "****"
    assert "04A1B2" not in mask_id_tag("04A1B2C3D4")


# ---------------------------------------------------------------- over the wire

AUTH = {"local_list": LIST}


def start_16(id_tag: str) -> dict[str, Any]:
    return {"connectorId": 1, "idTag": id_tag, "meterStart": 0, "timestamp": TIMESTAMP}


def event_201(id_tag: str, transaction_id: str) -> dict[str, Any]:
    return {
        "eventType": "Started",
        "timestamp": TIMESTAMP,
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": transaction_id},
        "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": id_tag, "type": "ISO14443"},
    }


async def authorize(cp: RawCharger, id_tag: str) -> dict[str, Any]:
    if cp.version == "1.6":
        frame = await cp.call("Authorize", {"idTag": id_tag})
        assert frame[0] == 3, frame
        return dict(frame[2]["idTagInfo"])
    frame = await cp.call("Authorize", {"idToken": {"idToken": id_tag, "type": "ISO14443"}})
    assert frame[0] == 3, frame
    return dict(frame[2]["idTokenInfo"])


async def start(cp: RawCharger, id_tag: str, transaction_id: str = "tx-1") -> dict[str, Any]:
    if cp.version == "1.6":
        frame = await cp.call("StartTransaction", start_16(id_tag))
        assert frame[0] == 3, frame
        return dict(frame[2]["idTagInfo"])
    frame = await cp.call("TransactionEvent", event_201(id_tag, transaction_id))
    assert frame[0] == 3, frame
    return dict(frame[2]["idTokenInfo"])


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_accepted_tag_authorizes_and_starts_a_transaction(version: str) -> None:
    config = site_config([{"id": "CP", "ocpp_version": version}], ocpp={"authorization": AUTH})
    async with central_system(config) as central, raw_charger(central.port, "CP", version) as cp:
        await cp.boot()
        info = await authorize(cp, "04a1b2c3d4")  # case-insensitive
        assert info["status"] == "Accepted"
        parent = info.get("parentIdTag") if version == "1.6" else info.get("groupIdToken", {}).get("idToken")
        assert parent == "STAFF"
        assert (await start(cp, "04A1B2C3D4"))["status"] == "Accepted"
        await wait_for(lambda: central.evse_states()[("CP", 1)].charging, "transaction")
        assert central.evse_states()[("CP", 1)].id_tag == "04A1B2C3D4"


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_unknown_tag_is_invalid_on_authorize(version: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.chargers.ocpp")
    config = site_config([{"id": "CP", "ocpp_version": version}], ocpp={"authorization": AUTH})
    async with central_system(config) as central, raw_charger(central.port, "CP", version) as cp:
        await cp.boot()
        assert await authorize(cp, "STRANGER-0042") == {"status": "Invalid"}
    lines = [r.getMessage() for r in caplog.records if "answered" in r.getMessage()]
    assert lines == ["CP: Authorize idTag ****0042 answered Invalid (unknown)"]
    assert not any("STRANGER" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_blocked_tag_is_answered_blocked_at_start(version: str) -> None:
    config = site_config([{"id": "CP", "ocpp_version": version}], ocpp={"authorization": AUTH})
    async with central_system(config) as central, raw_charger(central.port, "CP", version) as cp:
        await cp.boot()
        # A charger that starts without asking first (1.6 offline / LocalPreAuthorize, 2.0.1 cache).
        assert (await start(cp, "LOST-CARD"))["status"] == "Blocked"
        # A listed expiry goes along (1.6 expiryDate, 2.0.1 cacheExpiryDateTime).
        visitor = await start(cp, "visitor", "tx-2")
        expiry = visitor.get("expiryDate" if version == "1.6" else "cacheExpiryDateTime")
        assert visitor["status"] == "Accepted" and expiry is not None
        assert datetime.fromisoformat(expiry).timestamp() == pytest.approx(NOW_S + HOUR_S)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_without_a_section_every_tag_is_accepted(version: str) -> None:
    config = site_config([{"id": "CP", "ocpp_version": version}])
    async with central_system(config) as central, raw_charger(central.port, "CP", version) as cp:
        await cp.boot()
        assert await authorize(cp, "ANY-TAG") == {"status": "Accepted"}
        assert await start(cp, "ANY-TAG") == {"status": "Accepted"}


async def test_no_authorization_token_is_accepted_on_201() -> None:
    """A station that needs no authorisation sends an empty NoAuthorization token: its own choice."""
    config = site_config([{"id": "CP", "ocpp_version": "2.0.1"}], ocpp={"authorization": AUTH})
    async with central_system(config) as central, raw_charger(central.port, "CP", "2.0.1") as cp:
        await cp.boot()
        event = event_201("", "tx-free")
        event["idToken"] = {"idToken": "", "type": "NoAuthorization"}
        frame = await cp.call("TransactionEvent", event)
        assert frame[0] == 3 and frame[2]["idTokenInfo"] == {"status": "Accepted"}, frame


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_restriction_still_blocks_an_accepted_tag(version: str) -> None:
    config = site_config([{"id": "CP", "ocpp_version": version}], ocpp={"authorization": AUTH})
    async with central_system(config) as central, raw_charger(central.port, "CP", version) as cp:
        await cp.boot()
        await wait_for(lambda: central.ready("CP"), "configured")
        central.restrict({("CP", 1): "site over its limit"})
        assert (await authorize(cp, "04A1B2C3D4"))["status"] == "Blocked"
        assert (await start(cp, "04A1B2C3D4"))["status"] == "Blocked"
