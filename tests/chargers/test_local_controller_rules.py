"""Local Controller mode, the pure parts: routing rules and the persisted upstream queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from evdlm.chargers.ocpp import relay_rules as rules
from evdlm.chargers.ocpp.upstream_queue import LOCAL_TRANSACTION_ID_BASE, UpstreamQueue, queue_path
from evdlm.config.models import OcppServer


def test_evdlm_ids_are_namespaced() -> None:
    assert rules.is_evdlm_id(rules.evdlm_unique_id())
    assert not rules.is_evdlm_id(rules.csms_id_for_charger())
    assert not rules.is_evdlm_id("0f6e4b1c-uuid-of-a-csms")


@pytest.mark.parametrize(
    ("version", "action", "payload", "kind"),
    [
        ("1.6", "BootNotification", {}, "keep"),
        ("1.6", "StartTransaction", {}, "keep"),
        ("1.6", "StopTransaction", {"transactionId": 1}, "keep"),
        ("1.6", "MeterValues", {"connectorId": 1, "transactionId": 1}, "droppable"),
        ("1.6", "MeterValues", {"connectorId": 1}, None),
        ("1.6", "StatusNotification", {}, "droppable"),
        ("1.6", "Heartbeat", {}, None),
        ("1.6", "Authorize", {"idTag": "A"}, None),
        ("2.0.1", "TransactionEvent", {}, "keep"),
        ("2.0.1", "MeterValues", {"evseId": 1}, None),
        ("2.0.1", "NotifyEVChargingNeeds", {}, None),
    ],
)
def test_queue_kind(version: str, action: str, payload: dict[str, object], kind: str | None) -> None:
    assert rules.queue_kind(version, action, payload) == kind


def test_smart_charging_answers_are_conservative() -> None:
    assert {
        "SetChargingProfile",
        "ClearChargingProfile",
        "GetCompositeSchedule",
        "GetChargingProfiles",
    } == rules.SMART_CHARGING
    assert rules.conservative_smart_charging_answer("1.6", "SetChargingProfile") == {"status": "Rejected"}
    assert rules.conservative_smart_charging_answer("2.0.1", "ClearChargingProfile") == {"status": "Unknown"}
    assert rules.conservative_smart_charging_answer("2.0.1", "GetCompositeSchedule") == {"status": "Rejected"}
    assert rules.conservative_smart_charging_answer("2.0.1", "GetChargingProfiles") == {"status": "NoProfiles"}
    assert rules.conservative_smart_charging_answer("1.6", "GetChargingProfiles") is None


def test_transaction_id_rewrites() -> None:
    local = LOCAL_TRANSACTION_ID_BASE + 1
    up = rules.rewrite_transaction_up("1.6", "MeterValues", {"connectorId": 1, "transactionId": local}, {local: 42})
    assert up == {"connectorId": 1, "transactionId": 42}
    assert rules.rewrite_transaction_up("1.6", "MeterValues", {"transactionId": 7}, {local: 42}) is None
    assert rules.rewrite_transaction_up("2.0.1", "TransactionEvent", {"transactionId": local}, {local: 42}) is None
    down = rules.rewrite_transaction_down("1.6", "RemoteStopTransaction", {"transactionId": 42}, {42: local})
    assert down == {"transactionId": local}
    assert rules.strip_csms_profile("RemoteStartTransaction", {"idTag": "A", "chargingProfile": {}}) == {"idTag": "A"}
    assert rules.strip_csms_profile("RemoteStartTransaction", {"idTag": "A"}) is None


def test_site_restriction_blocks_over_the_csms() -> None:
    local = {"idTagInfo": {"status": "Blocked"}}
    assert rules.site_blocks("1.6", local, restricted=True)
    assert not rules.site_blocks("1.6", local, restricted=False)  # a Blocked tag from the local list
    merged = rules.with_status(
        "1.6", {"transactionId": 3, "idTagInfo": {"status": "Accepted", "parentIdTag": "P"}}, "Blocked"
    )
    assert merged == {"transactionId": 3, "idTagInfo": {"status": "Blocked", "parentIdTag": "P"}}
    assert rules.presented_id_tag("2.0.1", "TransactionEvent", {"idToken": {"idToken": "X", "type": "ISO14443"}}) == "X"
    assert (
        rules.presented_id_tag("2.0.1", "TransactionEvent", {"idToken": {"idToken": "", "type": "NoAuthorization"}})
        is None
    )


def frame(unique_id: str, action: str, payload: dict[str, object]) -> list[object]:
    return [2, unique_id, action, payload]


def test_queue_persists_and_compacts(tmp_path: Path) -> None:
    path = queue_path(tmp_path, "CP/1")
    assert path.name == "CP%2F1.jsonl"
    queue = UpstreamQueue(path, max_messages=100)
    local = queue.next_local_transaction_id()
    assert local == LOCAL_TRANSACTION_ID_BASE + 1
    queue.append("StartTransaction", frame("1", "StartTransaction", {}), droppable=False, local_tx=local)
    queue.append("MeterValues", frame("2", "MeterValues", {"transactionId": local}), droppable=True)
    again = UpstreamQueue(path, max_messages=100)  # a restart
    assert [item.action for item in again.items()] == ["StartTransaction", "MeterValues"]
    assert again.first() is not None and again.first().local_tx == local
    assert again.next_local_transaction_id() == local + 1  # never reused
    again.map_transaction(local, 17)
    for item in again.items():
        again.done(item.seq)
    assert len(again) == 0
    text = path.read_text()
    assert '"op":"add"' not in text  # compacted once replayed
    third = UpstreamQueue(path, max_messages=100)
    assert len(third) == 0 and third.local_to_csms == {local: 17}


def test_queue_bound_drops_meter_values_first(tmp_path: Path) -> None:
    queue = UpstreamQueue(tmp_path / "q.jsonl", max_messages=10)
    queue.append("StartTransaction", frame("s", "StartTransaction", {}), droppable=False)
    for index in range(12):
        queue.append("MeterValues", frame(f"m{index}", "MeterValues", {}), droppable=True)
    queue.append("StopTransaction", frame("e", "StopTransaction", {}), droppable=False)
    ids = [item.frame[1] for item in queue.items()]
    assert ids[0] == "s" and ids[-1] == "e" and len(ids) == 10
    assert ids[1:-1] == [f"m{index}" for index in range(4, 12)]  # the oldest samples went
    assert queue.dropped == 4
    # Only Start/Stop left and full: still never dropped (the bound yields), a new sample is.
    for index in range(12):
        queue.append("TransactionEvent", frame(f"t{index}", "TransactionEvent", {}), droppable=False)
    assert sum(1 for item in queue.items() if item.action == "TransactionEvent") == 12
    before = len(queue)
    queue.append("MeterValues", frame("late", "MeterValues", {}), droppable=True)
    assert len(queue) == before
    assert [item.frame[1] for item in UpstreamQueue(queue.path, 10).items()] == ids_after(queue)


def ids_after(queue: UpstreamQueue) -> list[object]:
    return [item.frame[1] for item in queue.items()]


def test_queue_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    queue = UpstreamQueue(path, max_messages=10)
    queue.append("StopTransaction", frame("e", "StopTransaction", {}), droppable=False)
    with path.open("a") as handle:
        handle.write('{"op":"add","seq":9,"act')
    assert [item.frame[1] for item in UpstreamQueue(path, 10).items()] == ["e"]


def test_config() -> None:
    assert OcppServer().mode == "standalone"
    with pytest.raises(ValueError, match=r"needs ocpp\.upstream"):
        OcppServer.model_validate({"mode": "local_controller"})
    server = OcppServer.model_validate(
        {"mode": "local_controller", "upstream": {"url": "wss://csms.example/ocpp", "password": {"env": "X"}}}
    )
    assert server.upstream is not None
    assert server.upstream.queue_dir == "var/lc-queue" and server.upstream.queue_max_messages == 10000
    with pytest.raises(ValueError, match="ws://"):
        OcppServer.model_validate({"mode": "local_controller", "upstream": {"url": "http://x"}})
