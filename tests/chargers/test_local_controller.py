"""Local Controller mode (ocpp.mode: local_controller) over real websockets: a scripted charger
→ evdlm → the CSMS simulator. The CSMS must see the charger's identity, subprotocol and frames;
the charger must get the CSMS's answers; evdlm must keep limiting the charger; a CSMS going away
must lose no transaction message."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from charger_rig import site_config, wait_for
from ocpp.v16 import call as call16
from raw_ocpp import BOOT_16, BOOT_201, TIMESTAMP, RawCharger, central_system, raw_charger

from evdlm.chargers.ocpp import relay as relay_module
from evdlm.chargers.ocpp.upstream_queue import LOCAL_TRANSACTION_ID_BASE
from evdlm.config.models import SiteConfig
from evdlm.core.types import ChargingCommand, CommandStatus
from evdlm.sim.csms import CsmsSimulator

PASSWORD_ENV = "EVDLM_TEST_CSMS_PASSWORD"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "BACKOFF_FIRST_S", 0.2)
    monkeypatch.setattr(relay_module, "BACKOFF_MAX_S", 0.5)


def lc_config(chargers: list[dict[str, Any]], csms: CsmsSimulator, queue_dir: Path, **upstream: Any) -> SiteConfig:
    return site_config(
        chargers,
        ocpp={
            "mode": "local_controller",
            "upstream": {"url": csms.url, "queue_dir": str(queue_dir), **upstream},
        },
    )


def answers_queued(csms: CsmsSimulator, charger_id: str) -> int:
    """CALLRESULT / CALLERROR frames the CSMS received that answer none of its calls (the ocpp
    library queues them): evdlm's own traffic leaking upstream would show here."""
    session = csms._sessions[charger_id]
    return int(session._response_queue.qsize())


def meter_16(connector: int, transaction_id: int | None, value: float) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "connectorId": connector,
        "meterValue": [
            {
                "timestamp": TIMESTAMP,
                "sampledValue": [
                    {"value": str(value), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                    {"value": "16", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
                ],
            }
        ],
    }
    if transaction_id is not None:
        payload["transactionId"] = transaction_id
    return payload


def start_16(connector: int, id_tag: str) -> dict[str, Any]:
    return {"connectorId": connector, "idTag": id_tag, "meterStart": 0, "timestamp": TIMESTAMP}


def stop_16(transaction_id: int, meter_stop: int) -> dict[str, Any]:
    return {"transactionId": transaction_id, "meterStop": meter_stop, "timestamp": TIMESTAMP, "reason": "Local"}


def event_201(event_type: str, seq_no: int, transaction_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "eventType": event_type,
        "timestamp": TIMESTAMP,
        "triggerReason": {"Started": "Authorized", "Updated": "MeterValuePeriodic", "Ended": "EVDeparted"}[event_type],
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": transaction_id},
        "evse": {"id": 1, "connectorId": 1},
        **extra,
    }


def meter_201(value: float) -> list[dict[str, Any]]:
    return [
        {
            "timestamp": TIMESTAMP,
            "sampledValue": [
                {"value": value, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}}
            ],
        }
    ]


async def boot(charger: RawCharger) -> None:
    answer = await charger.call("BootNotification", BOOT_16 if charger.version == "1.6" else BOOT_201)
    assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer


# ---------------------------------------------------------------------------------- (a) (b) (c)


async def test_session_16_through_csms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    async with CsmsSimulator(accepted_id_tags={"GOOD"}, basic_auth={"CP1": "s3cret"}) as csms:
        config = lc_config(
            [{"id": "CP1", "ocpp_version": "1.6", "max_current_a": 32}],
            csms,
            tmp_path / "q",
            password={"env": PASSWORD_ENV},
        )
        async with central_system(config) as central, raw_charger(central.port, "CP1", "1.6") as charger:
            await boot(charger)
            assert csms.count("CP1", "BootNotification") == 1
            assert csms.identities["CP1"] == "CP1"  # the charger's identity, Basic auth as the charger
            assert csms._sessions["CP1"]._connection.subprotocol == "ocpp1.6"
            # The CSMS decides idTags: evdlm alone (free vending) would have accepted BAD.
            assert (await charger.call("Authorize", {"idTag": "BAD"}))[2]["idTagInfo"]["status"] == "Invalid"
            assert (await charger.call("Authorize", {"idTag": "GOOD"}))[2]["idTagInfo"]["status"] == "Accepted"
            await charger.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"})
            started = await charger.call("StartTransaction", start_16(1, "GOOD"))
            transaction_id = started[2]["transactionId"]
            assert str(transaction_id) in csms.transactions  # the CSMS's own id reached the charger
            # evdlm listened in: it knows the transaction under the id the charger uses.
            await wait_for(lambda: central.evse_states()[("CP1", 1)].transaction_id == str(transaction_id), "tx")
            await wait_for(lambda: central.ready("CP1"), "evdlm configured the charger")
            for value in (100, 200, 300):
                assert (await charger.call("MeterValues", meter_16(1, transaction_id, value)))[0] == 3
            assert csms.transactions[str(transaction_id)]["meter_values"] == 3
            # (b) evdlm still limits the charger; the charger's answers never reach the CSMS.
            results = await central.apply([ChargingCommand("CP1", 1, 16, "A", 3)])
            assert results[0].status is CommandStatus.ACCEPTED
            assert charger.actions("SetChargingProfile"), "evdlm's profile reached the charger"
            assert charger.actions("GetConfiguration"), "evdlm configured the charger"
            assert answers_queued(csms, "CP1") == 0
            # (c) the CSMS's smart charging never reaches the charger.
            profiles_before = len(charger.actions("SetChargingProfile"))
            profile = {
                "charging_profile_id": 99,
                "stack_level": 5,
                "charging_profile_purpose": "TxDefaultProfile",
                "charging_profile_kind": "Absolute",
                "charging_schedule": {
                    "charging_rate_unit": "A",
                    "charging_schedule_period": [{"start_period": 0, "limit": 32}],
                },
            }
            # Merged, not forwarded: accepted as the charger would, its limit an upper bound for
            # evdlm, and the composite the CSMS reads is what the charger really does: min(32, 16).
            assert (await csms.set_charging_profile("CP1", 1, profile))["status"] == "Accepted"
            await wait_for(lambda: central.evse_states()[("CP1", 1)].csms_limit == 32.0, "CSMS limit on the EVSE")
            composite = await csms.get_composite_schedule("CP1", 1, 60, "A")
            assert composite["status"] == "Accepted"
            periods = composite["charging_schedule"]["charging_schedule_period"]
            assert periods[0]["limit"] == 16.0, composite
            assert (await csms.clear_charging_profile("CP1"))["status"] == "Accepted"
            await wait_for(lambda: central.evse_states()[("CP1", 1)].csms_limit is None, "CSMS limit cleared")
            assert len(charger.actions("SetChargingProfile")) == profiles_before
            assert not charger.actions("ClearChargingProfile") or all(
                p.get("id") != 99 for p in charger.actions("ClearChargingProfile")
            )
            assert not charger.actions("GetCompositeSchedule")
            # Other CSMS calls are relayed; a CSMS id in evdlm's namespace is rewritten and restored.
            session = csms._session("CP1")
            answer = await session.call(
                call16.RemoteStopTransaction(transaction_id=transaction_id), suppress=False, unique_id="evdlm-csms-1"
            )
            assert answer.status == "Accepted"
            assert charger.actions("RemoteStopTransaction") == [{"transactionId": transaction_id}]
            assert central.session("CP1").dropped_answers == 0
            stopped = await charger.call("StopTransaction", stop_16(transaction_id, 300))
            assert stopped[0] == 3
            assert csms.transactions[str(transaction_id)]["stopped"]
            await wait_for(lambda: central.evse_states()[("CP1", 1)].transaction_id is None, "tx ended in evdlm")
            assert central.relay("CP1").answered_locally == 0
            totals = central.relay_totals()  # what evdlm_local_controller exports
            assert totals is not None and totals.forwarded_up >= 9 and totals.answered_locally == 0
            assert totals.csms_calls >= 1 and totals.queue_dropped == 0


async def test_session_201_through_csms(tmp_path: Path) -> None:
    async with CsmsSimulator(accepted_id_tags={"GOOD"}) as csms:
        config = lc_config([{"id": "CP2", "ocpp_version": "2.0.1", "max_current_a": 32}], csms, tmp_path / "q")
        async with central_system(config) as central, raw_charger(central.port, "CP2", "2.0.1") as charger:
            await boot(charger)
            assert csms._sessions["CP2"]._connection.subprotocol == "ocpp2.0.1"
            bad = await charger.call("Authorize", {"idToken": {"idToken": "BAD", "type": "ISO14443"}})
            assert bad[2]["idTokenInfo"]["status"] == "Invalid"
            token = {"idToken": "GOOD", "type": "ISO14443"}
            started = await charger.call(
                "TransactionEvent", event_201("Started", 0, "T-1", idToken=token, meterValue=meter_201(0))
            )
            assert started[2]["idTokenInfo"]["status"] == "Accepted"
            await wait_for(lambda: central.evse_states()[("CP2", 1)].transaction_id == "T-1", "tx in evdlm")
            for seq in (1, 2):
                await charger.call(
                    "TransactionEvent", event_201("Updated", seq, "T-1", meterValue=meter_201(seq * 100))
                )
            await charger.call("TransactionEvent", event_201("Ended", 3, "T-1", meterValue=meter_201(300)))
            assert csms.transactions["T-1"] == {
                "charge_point": "CP2",
                "id_tag": "GOOD",
                "started": True,
                "stopped": True,
                "meter_values": 4,
            }
            await wait_for(lambda: central.ready("CP2"), "evdlm configured the charger")
            await wait_for(lambda: central.evse_states()[("CP2", 1)].transaction_id is None, "tx ended in evdlm")
            results = await central.apply([ChargingCommand("CP2", 1, 10, "A", 3)])
            assert results[0].status is CommandStatus.ACCEPTED
            assert answers_queued(csms, "CP2") == 0
            before = len(charger.actions("SetChargingProfile"))
            profile = {
                "id": 7,
                "stack_level": 1,
                "charging_profile_purpose": "TxDefaultProfile",
                "charging_profile_kind": "Absolute",
                "charging_schedule": [
                    {"id": 1, "charging_rate_unit": "A", "charging_schedule_period": [{"start_period": 0, "limit": 32}]}
                ],
            }
            # An absolute 2.0.1 schedule without a start is refused, as the charger would.
            assert (await csms.set_charging_profile("CP2", 1, profile))["status"] == "Rejected"
            assert await csms.get_charging_profiles("CP2") == []
            profile["charging_schedule"][0]["start_schedule"] = TIMESTAMP
            assert (await csms.set_charging_profile("CP2", 1, profile))["status"] == "Accepted"
            reported = await csms.get_charging_profiles("CP2")
            assert [p["id"] for p in reported] == [7], reported
            assert len(charger.actions("SetChargingProfile")) == before  # kept by evdlm, never forwarded
            # The site holds the EVSE at 10 A, below the CSMS's 32 A: the CSMS is told (source EMS).
            await wait_for(lambda: csms.count("CP2", "NotifyChargingLimit") == 1, "NotifyChargingLimit upstream")
            notice = next(payload for action, payload in csms.received["CP2"] if action == "NotifyChargingLimit")
            assert notice["chargingLimit"]["chargingLimitSource"] == "EMS" and notice["evseId"] == 1


# ---------------------------------------------------------------------------------- (d)


async def test_csms_restart_loses_no_transaction_message_16(tmp_path: Path) -> None:
    async with CsmsSimulator() as csms:
        config = lc_config([{"id": "CP1", "ocpp_version": "1.6", "max_current_a": 32}], csms, tmp_path / "q")
        async with central_system(config) as central, raw_charger(central.port, "CP1", "1.6") as charger:
            await boot(charger)
            first = (await charger.call("StartTransaction", start_16(1, "A")))[2]["transactionId"]
            sent: list[tuple[int, float]] = []  # (transaction id the charger used, energy value)

            async def meter(transaction_id: int, value: float) -> None:
                answer = await charger.call("MeterValues", meter_16(1, transaction_id, value))
                assert answer[0] == 3  # answered, by the CSMS or by evdlm
                sent.append((transaction_id, value))

            restart = asyncio.create_task(csms.restart(down_s=1.5))
            for index in range(20):
                await meter(first, index)
                await asyncio.sleep(0.02)
            await charger.call("StopTransaction", stop_16(first, 20))
            # A whole transaction while the CSMS may still be down: a local transaction id.
            second = (await charger.call("StartTransaction", start_16(2, "B")))[2]["transactionId"]
            for index in range(5):
                await meter(second, 1000 + index)
            await charger.call("StopTransaction", stop_16(second, 1005))
            await restart
            await wait_for(lambda: central.relay("CP1").online and len(central.relay("CP1").queue) == 0, "replayed", 10)
            relay = central.relay("CP1")
            assert relay.answered_locally > 0, "the CSMS was down for part of the test"
            # Every meter value reached the CSMS, each under the CSMS's id of its transaction.
            received = [p for action, p in csms.received["CP1"] if action == "MeterValues"]
            got = {float(p["meterValue"][0]["sampledValue"][0]["value"]) for p in received}
            assert {value for _, value in sent} <= got
            assert all(p["transactionId"] < LOCAL_TRANSACTION_ID_BASE for p in received)
            stops = [p for action, p in csms.received["CP1"] if action == "StopTransaction"]
            assert len({p["transactionId"] for p in stops}) == 2
            assert all(csms.transactions[str(p["transactionId"])]["started"] for p in stops)
            assert all(transaction["stopped"] for transaction in csms.transactions.values())
            # At least once: a message in flight when the CSMS went may arrive twice, none is lost.
            assert csms.transactions[str(first)]["meter_values"] >= 20
            # The second transaction ran while the CSMS was down: a local id, mapped on replay.
            assert second > LOCAL_TRANSACTION_ID_BASE
            csms_id = relay.queue.local_to_csms[second]
            assert csms.transactions[str(csms_id)]["meter_values"] == 5
            # A CSMS call about it reaches the charger with the id the charger knows.
            await csms.call("CP1", call16.RemoteStopTransaction(transaction_id=csms_id))
            assert charger.actions("RemoteStopTransaction")[-1] == {"transactionId": second}


async def test_csms_restart_loses_no_transaction_event_201(tmp_path: Path) -> None:
    async with CsmsSimulator() as csms:
        config = lc_config([{"id": "CP2", "ocpp_version": "2.0.1", "max_current_a": 32}], csms, tmp_path / "q")
        async with central_system(config) as central, raw_charger(central.port, "CP2", "2.0.1") as charger:
            await boot(charger)
            token = {"idToken": "X", "type": "ISO14443"}
            await charger.call("TransactionEvent", event_201("Started", 0, "T-9", idToken=token))
            restart = asyncio.create_task(csms.restart(down_s=0.6))
            for seq in range(1, 31):
                answer = await charger.call(
                    "TransactionEvent", event_201("Updated", seq, "T-9", meterValue=meter_201(seq))
                )
                assert answer[0] == 3
                await asyncio.sleep(0.02)
            await charger.call("TransactionEvent", event_201("Ended", 31, "T-9"))
            await restart
            await wait_for(lambda: central.relay("CP2").online and len(central.relay("CP2").queue) == 0, "replayed", 10)
            assert central.relay("CP2").answered_locally > 0
            seq_nos = {p["seqNo"] for action, p in csms.received["CP2"] if action == "TransactionEvent"}
            assert seq_nos == set(range(32))
            assert csms.transactions["T-9"]["stopped"]


async def test_queue_survives_an_evdlm_restart(tmp_path: Path) -> None:
    """CSMS down, evdlm answers and queues, evdlm restarts, the CSMS comes back: replayed."""
    async with CsmsSimulator() as csms:
        config = lc_config([{"id": "CP1", "ocpp_version": "1.6", "max_current_a": 32}], csms, tmp_path / "q")
        port = csms.port
        await csms.stop()
        async with central_system(config) as central, raw_charger(central.port, "CP1", "1.6") as charger:
            await boot(charger)  # answered by evdlm
            local = (await charger.call("StartTransaction", start_16(1, "A")))[2]["transactionId"]
            assert local > LOCAL_TRANSACTION_ID_BASE
            await charger.call("MeterValues", meter_16(1, local, 5))
        assert (tmp_path / "q" / "CP1.jsonl").exists()
        csms.port = port
        await csms.start()
        async with central_system(config) as central, raw_charger(central.port, "CP1", "1.6") as charger:
            await wait_for(lambda: central.relay("CP1") is not None and central.relay("CP1").online, "online", 10)
            assert [action for action, _ in csms.received["CP1"]][:3] == [
                "BootNotification",
                "StartTransaction",
                "MeterValues",
            ]
            csms_id = csms.received["CP1"][2][1]["transactionId"]
            assert csms_id < LOCAL_TRANSACTION_ID_BASE
            # The charger still uses its local id: mapped on the way up.
            await charger.call("StopTransaction", stop_16(local, 10))
            assert csms.received["CP1"][-1] == ("StopTransaction", stop_16(csms_id, 10))


async def test_csms_unreachable_answers_locally_with_offline_policy(tmp_path: Path) -> None:
    async with CsmsSimulator() as csms:
        config = site_config(
            [{"id": "CP1", "ocpp_version": "1.6", "max_current_a": 32}],
            ocpp={
                "mode": "local_controller",
                "upstream": {"url": csms.url, "queue_dir": str(tmp_path / "q")},
                "authorization": {"local_list": [{"id_tag": "LISTED"}], "offline_policy": "reject_all"},
            },
        )
        await csms.stop()
        async with central_system(config) as central, raw_charger(central.port, "CP1", "1.6") as charger:
            await boot(charger)
            assert (await charger.call("Heartbeat", {}))[0] == 3
            assert (await charger.call("Authorize", {"idTag": "LISTED"}))[2]["idTagInfo"]["status"] == "Accepted"
            assert (await charger.call("Authorize", {"idTag": "OTHER"}))[2]["idTagInfo"]["status"] == "Invalid"
            # evdlm keeps managing the site while the CSMS is away.
            await wait_for(lambda: central.ready("CP1"), "configured")
            results = await central.apply([ChargingCommand("CP1", 1, 12, "A", 3)])
            assert results[0].status is CommandStatus.ACCEPTED


# ---------------------------------------------------------------------------------- (e)


async def test_hundred_chargers(tmp_path: Path) -> None:
    count = 100
    chargers = [
        {"id": f"CP{index:03d}", "ocpp_version": "1.6" if index % 2 else "2.0.1", "max_current_a": 16}
        for index in range(count)
    ]
    async with CsmsSimulator() as csms:
        config = lc_config(chargers, csms, tmp_path / "q")
        started = time.monotonic()
        async with central_system(config) as central:

            async def one(spec: dict[str, Any]) -> None:
                async with raw_charger(central.port, spec["id"], spec["ocpp_version"]) as charger:
                    await boot(charger)
                    answer = await charger.call("Heartbeat", {})
                    assert answer[0] == 3
                    # A message the other way: the CSMS's call reaches the charger and is answered.
                    if spec["ocpp_version"] == "1.6":
                        request: Any = call16.TriggerMessage(requested_message="StatusNotification")
                    else:
                        from ocpp.v201 import call as call201

                        request = call201.TriggerMessage(requested_message="StatusNotification")
                    result = await csms.call(spec["id"], request)
                    assert result.status == "Accepted"
                    await wait_for(lambda: central.ready(spec["id"]), "configured", 20)

            await asyncio.gather(*(one(spec) for spec in chargers))
            assert all(csms.count(spec["id"], "BootNotification") == 1 for spec in chargers)
            assert all(csms.identities[spec["id"]] is None for spec in chargers)
            assert all(answers_queued(csms, spec["id"]) == 0 for spec in chargers if csms.connected(spec["id"]))
        assert time.monotonic() - started < 30


# ---------------------------------------------------------------------------------- merge


async def test_a_csms_profile_of_32_a_on_a_10_a_site_gives_at_most_10_a(tmp_path: Path) -> None:
    """The CSMS's profile is an upper bound, the site's fuse another: the charger gets the lower,
    and the CSMS's GetCompositeSchedule sees what the charger really does."""
    from evdlm.core.decide import DecisionContext, SolverChoice, decide
    from evdlm.core.memory import ControlMemory
    from evdlm.core.problem_builder import BuildInputs, DemandLimits

    async with CsmsSimulator() as csms:
        config = lc_config([{"id": "CP1", "ocpp_version": "1.6", "max_current_a": 32}], csms, tmp_path / "q")
        # A 10 A circuit (no meter: the cars alone load it).
        config = config.model_copy(
            update={"circuits": [config.circuits[0].model_copy(update={"phase_current_limit_a": 10.0})]}
        )
        context = DecisionContext.from_config(config, SolverChoice.CHAIN)
        async with central_system(config) as central, raw_charger(central.port, "CP1", "1.6") as charger:
            await boot(charger)
            started = await charger.call("StartTransaction", start_16(1, "ANY"))
            transaction_id = started[2]["transactionId"]
            await wait_for(lambda: central.ready("CP1"), "evdlm configured the charger")
            await wait_for(lambda: central.evse_states()[("CP1", 1)].charging, "charging")
            profile = {
                "charging_profile_id": 5,
                "stack_level": 2,
                "charging_profile_purpose": "TxProfile",
                "charging_profile_kind": "Relative",
                "transaction_id": transaction_id,
                "charging_schedule": {
                    "charging_rate_unit": "A",
                    "charging_schedule_period": [{"start_period": 0, "limit": 32}],
                },
            }
            assert (await csms.set_charging_profile("CP1", 1, profile))["status"] == "Accepted"
            await wait_for(lambda: central.evse_states()[("CP1", 1)].csms_limit == 32.0, "CSMS limit on the EVSE")
            now_s = time.time()
            decision = decide(
                context, BuildInputs(now_s, {}, central.evse_states(), ControlMemory(), DemandLimits(None, None))
            )
            told = decision.plan.limits[("CP1", 1)]
            assert 0.0 < told <= 10.0
            results = await central.apply(decision.plan.commands)
            assert results[0].status is CommandStatus.ACCEPTED
            sent = charger.actions("SetChargingProfile")[-1]["csChargingProfiles"]["chargingSchedule"]
            assert max(p["limit"] for p in sent["chargingSchedulePeriod"]) <= 10.0  # what the charger holds
            composite = await csms.get_composite_schedule("CP1", 1, 300, "A")
            assert composite["status"] == "Accepted"
            assert composite["charging_schedule"]["charging_schedule_period"][0]["limit"] <= 10.0
            # A lower CSMS limit binds instead of the fuse.
            profile["charging_schedule"]["charging_schedule_period"] = [{"start_period": 0, "limit": 7}]
            assert (await csms.set_charging_profile("CP1", 1, profile))["status"] == "Accepted"
            await wait_for(lambda: central.evse_states()[("CP1", 1)].csms_limit == 7.0, "lower CSMS limit")
            decision = decide(
                context,
                BuildInputs(time.time(), {}, central.evse_states(), decision.plan.memory, DemandLimits(None, None)),
            )
            assert 0.0 < decision.plan.limits[("CP1", 1)] <= 7.0


# ---------------------------------------------------------------------------------- security profiles


def _csms_tls(pki: Path, *, require_client_certificate: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.crt", pki / "server.key")
    if require_client_certificate:
        context.load_verify_locations(pki / "ca.crt")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def test_upstream_security_profile_2_tls_and_basic_auth(
    tmp_path: Path, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    async with CsmsSimulator(
        basic_auth={"CP1": "s3cret"}, ssl_context=_csms_tls(pki, require_client_certificate=False)
    ) as csms:
        assert csms.url.startswith("wss://")
        config = lc_config(
            [{"id": "CP1", "ocpp_version": "2.0.1"}],
            csms,
            tmp_path / "q",
            password={"env": PASSWORD_ENV},
            ca_file=str(pki / "ca.crt"),
        )
        async with central_system(config) as central, raw_charger(central.port, "CP1", "2.0.1") as charger:
            await boot(charger)
            assert csms.count("CP1", "BootNotification") == 1 and csms.identities["CP1"] == "CP1"
            assert csms.client_certificates["CP1"] is None  # profile 2: the server alone shows a certificate
            assert central.relay("CP1").answered_locally == 0


async def test_upstream_security_profile_3_client_certificate(tmp_path: Path, pki: Path) -> None:
    async with CsmsSimulator(ssl_context=_csms_tls(pki, require_client_certificate=True)) as csms:
        tls = {
            "ca_file": str(pki / "ca.crt"),
            "cert_file": str(pki / "gateway.crt"),
            "key_file": str(pki / "gateway.key"),
        }
        config = lc_config([{"id": "CP1", "ocpp_version": "1.6"}], csms, tmp_path / "q", **tls)
        async with central_system(config) as central, raw_charger(central.port, "CP1", "1.6") as charger:
            await boot(charger)
            assert csms.count("CP1", "BootNotification") == 1
            assert csms.client_certificates["CP1"] == "evdlm-gateway"  # evdlm's certificate, as configured
        # A CSMS whose certificate no configured CA signed is not trusted: evdlm answers locally.
        untrusting = lc_config(
            [{"id": "CP1", "ocpp_version": "1.6"}],
            csms,
            tmp_path / "q2",
            **{**tls, "ca_file": str(pki / "other-ca.crt")},
        )
        async with central_system(untrusting) as central, raw_charger(central.port, "CP1", "1.6") as charger:
            await boot(charger)
            assert csms.count("CP1", "BootNotification") == 1  # nothing more reached the CSMS
            assert central.relay("CP1").answered_locally >= 1
