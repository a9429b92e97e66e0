"""Session commands end to end: over a real MQTT broker and real HTTP, into the controller's decision and its recording."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from evdlm.api.http import HttpApiServer, add_session_routes, create_app
from evdlm.core.clock import FakeClock
from evdlm.core.session_inputs import iso
from evdlm.mqtt.client import MqttClient, MqttMessage
from evdlm.recording import RecordingWriter, read_recording
from evdlm.sessions.service import SessionBounds, SessionService

from .conftest import NOW_S, FakeChargers, controller, limits, session, site_config


async def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_mqtt_commands_reach_the_next_decision(mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    config = site_config()
    clock = FakeClock(NOW_S)
    chargers = FakeChargers(session("A1"), session("A2"))
    results: list[dict[str, Any]] = []
    states: dict[str, dict[str, Any]] = {}

    def on_state(message: MqttMessage) -> None:
        states[message.topic] = json.loads(message.payload)

    async with (
        MqttClient(host, port, client_id="operator") as operator,
        MqttClient(host, port, client_id="gateway") as gateway,
    ):
        assert await operator.wait_connected(5) and await gateway.wait_connected(5)
        await operator.subscribe("evdlm/s1/sessions/+/+/result", lambda m: results.append(json.loads(m.payload)))
        await operator.subscribe("evdlm/s1/sessions/+/+/state", on_state)
        bounds = SessionBounds(topic_burst=50.0)  # this test sends more than a human would; see the next
        async with SessionService(config, chargers, clock, client=gateway, bounds=bounds) as service:
            control = controller(config, clock, chargers, service)
            shared = limits(await control.run_cycle())
            assert 0 < shared["A1"] < 32 and 0 < shared["A2"] < 32  # 44 A between two cars

            async def command(document: dict[str, Any] | bytes, charger: str = "A1") -> dict[str, Any]:
                count = len(results)
                payload = document if isinstance(document, bytes) else json.dumps(document)
                await operator.publish(f"evdlm/s1/sessions/{charger}/1/set", payload, qos=1)
                await _wait_for(lambda: len(results) > count)
                return results[-1]

            answer = await command({"pause": True, "command_id": "p-1"})
            assert answer["accepted"] and answer["command_id"] == "p-1" and answer["inputs"]["paused"]
            assert answer["transaction_id"] == "tx-A1"
            clock.advance(1.0)
            paused = limits(await control.run_cycle())
            assert paused["A1"] == 0  # at once; the other car's raise follows once the cut has landed
            clock.advance(1.0)
            paused = limits(await control.run_cycle())
            assert paused["A1"] == 0 and paused["A2"] == 32
            await _wait_for(lambda: states.get("evdlm/s1/sessions/A1/1/state", {}).get("paused") is True)

            overrides = service.overrides
            for bad, words in (
                ({"energy_kwh": -5}, "energy_kwh -5"),
                ({"departure": "yesterday"}, "ISO 8601"),
                ({"pause": False, "speed": 3}, "unknown field(s) speed"),
                ({"resume": True, "transaction_id": "tx-old"}, "not the session"),
                (b"NaN", "not finite"),
            ):
                answer = await command(bad)  # type: ignore[arg-type]
                assert not answer["accepted"] and words in answer["reason"], answer
                assert answer["inputs"]["paused"]  # the session's inputs, unchanged
            assert service.overrides is overrides
            clock.advance(1.0)
            assert limits(await control.run_cycle()) == paused

            # Resume, with a priority class for the other car: A2 first.
            assert (await command({"resume": True}))["accepted"]
            assert (await command({"priority": 0, "departure": iso(NOW_S + 3600)}, "A2"))["accepted"]
            clock.advance(61.0)  # past the paused car's minimum off time
            await control.run_cycle()
            clock.advance(1.0)
            report = await control.run_cycle()
            assert report.decision is not None
            assert sorted(report.decision.built.problem.priority.tolist()) == [0, 1]
            ranked = limits(report)
            assert ranked["A2"] == 32 and 0 < ranked["A1"] < 32

            # The session ends: its override goes, and the state topic says so.
            chargers.end("A2")
            clock.advance(1.0)
            await control.run_cycle()
            assert service.overrides.get(("A2", 1)) is None
            await _wait_for(lambda: states.get("evdlm/s1/sessions/A2/1/state", {}).get("session") is False)
            await control.close()


async def test_rate_limit_drops_a_flood_and_counts_it(mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    config = site_config()
    clock = FakeClock(NOW_S)
    chargers = FakeChargers(session("A1"), session("A2"))
    async with (
        MqttClient(host, port, client_id="operator") as operator,
        MqttClient(host, port, client_id="gateway") as gateway,
    ):
        assert await operator.wait_connected(5) and await gateway.wait_connected(5)
        results: list[dict[str, Any]] = []
        await operator.subscribe("evdlm/s1/sessions/+/+/result", lambda m: results.append(json.loads(m.payload)))
        # A retained command (left by a tool) reaches a service started later: it is never applied,
        # or it would pause whatever session runs there after every restart.
        await operator.publish("evdlm/s1/sessions/A1/1/set", '{"pause": true}', qos=1, retain=True)
        async with SessionService(config, chargers, clock, client=gateway) as service:
            await _wait_for(lambda: bool(results))
            assert not results[0]["accepted"] and "retained" in results[0]["reason"]
            assert len(service.overrides) == 0
            await operator.publish("evdlm/s1/sessions/A1/1/set", b"", qos=1, retain=True)  # cleared
            for index in range(30):
                await operator.publish("evdlm/s1/sessions/A1/1/set", json.dumps({"priority": index % 10}), qos=1)
            await _wait_for(lambda: service.stats.received >= 31)
            await _wait_for(lambda: not service._intake)
            assert service.stats.rate_limited >= 20  # a burst of 5, then 1 per second
            assert service.stats.handled + service.stats.rate_limited == service.stats.received


async def test_http_api(tmp_path: Path) -> None:
    config = site_config()
    clock = FakeClock(NOW_S)
    chargers = FakeChargers(session("A1"), session("A2"))
    service = SessionService(config, chargers, clock)
    app = create_app(token="s3cret")
    add_session_routes(app, service)
    recorder = RecordingWriter(tmp_path, "s1", "", clock)
    control = controller(config, clock, chargers, service)
    control.recorder = recorder
    await control.run_cycle()
    auth = {"Authorization": "Bearer s3cret"}
    async with HttpApiServer(app, "127.0.0.1", 0) as server, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{server.port}/api/v1/sessions"
        async with http.get(base) as response:
            assert response.status == 401 and "token" in (await response.json())["error"]
        async with http.post(f"{base}/A1/1", json={"pause": True}, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        assert service.overrides.get(("A1", 1)) is None

        async with http.post(f"{base}/A1/1", json={"priority": 0, "command_id": "h-1"}, headers=auth) as response:
            body = await response.json()
            assert response.status == 200 and body["accepted"] and body["command_id"] == "h-1"
            assert body["inputs"]["priority"] == 0 and body["inputs"]["priority_source"] == "command"
        clock.advance(1.0)
        await control.run_cycle()  # A2 cut; A1's raise follows once the cut has landed
        clock.advance(1.0)
        ranked = limits(await control.run_cycle())
        assert ranked["A1"] == 32 and ranked["A2"] < 32

        for path, document, status, words in (
            ("A1/1", {"energy_kwh": -5}, 400, "energy_kwh"),
            ("A1/1", {"departure": "yesterday"}, 400, "ISO 8601"),
            ("A1/1", {"pause": True, "transaction_id": "tx-9"}, 409, "not the session"),
            ("ZZ/1", {"pause": True}, 404, "no EVSE ZZ/1"),
        ):
            async with http.post(f"{base}/{path}", json=document, headers=auth) as response:
                body = await response.json()
                assert response.status == status and words in body["error"], body
        async with http.post(f"{base}/A1/1", data=b"{" + b" " * 5000 + b"}", headers=auth) as response:
            assert response.status == 413 and "over 4096" in (await response.json())["error"]
        async with http.get(f"{base}/ZZ/1", headers=auth) as response:
            assert response.status == 404
        async with http.get(f"{base}/A1/x", headers=auth) as response:
            assert response.status == 404 and "error" in await response.json()
        async with http.get(f"{base}/A1/1", headers=auth) as response:
            one = await response.json()
            assert one["priority"] == 0 and one["transaction_id"] == "tx-A1" and not one["paused"]
        async with http.get(base, headers=auth) as response:
            listed = (await response.json())["sessions"]
            assert [(s["charger_id"], s["evse_id"]) for s in listed] == [("A1", 1), ("A2", 1)]
        async with http.post(f"{base}/A1/1", json={"pause": True}, headers=auth) as response:
            assert response.status == 200
        clock.advance(1.0)
        assert limits(await control.run_cycle())["A1"] == 0
    await control.close()

    # The recording holds the overlaid states and every command, accepted or not.
    cycles = list(read_recording(recorder.path))  # type: ignore[arg-type]
    assert len(cycles) == 4
    last = cycles[-1].evse_states[("A1", 1)]
    assert last.paused and last.priority == 0 and last.session_started_at_s == NOW_S - 600.0
    assert cycles[0].evse_states[("A1", 1)].priority is None
    assert cycles[1].evse_states[("A1", 1)].priority == 0 and not cycles[1].evse_states[("A1", 1)].paused
    events = [e for c in cycles for e in c.events]
    # (the oversized body was turned away at the door, by its Content-Length, before it was a command)
    results = [(e["channel"], e["result"]) for e in events]
    assert results == [("http", "accepted")] + [("http", "rejected")] * 4 + [("http", "accepted")]
    assert [e["kind"] for e in events][1:5] == ["bad_request", "bad_request", "no_session", "unknown_evse"]
    assert events[0]["command_id"] == "h-1" and events[-1]["type"] == "session_command"


async def test_an_idtag_profile_sets_priority_and_defaults() -> None:
    config = site_config()
    clock = FakeClock(NOW_S)
    chargers = FakeChargers(session("A1"), session("A2", id_tag="fleet-0042"))
    service = SessionService(config, chargers, clock)
    control = controller(config, clock, chargers, service)
    report = await control.run_cycle()
    decision = report.decision
    assert decision is not None
    columns = {decision.built.problem.priority.tolist()[i]: c for i, c in enumerate(decision.built.columns)}
    keys = control.context.topology.slots.keys
    assert keys[columns[0]] == ("A2", 1) and keys[columns[1]] == ("A1", 1)
    seen = decision.built.states.sources[keys.index(("A2", 1))]
    assert seen is not None
    assert seen.departure_at_s == NOW_S - 600.0 + 2 * 3600 and seen.energy_needed_wh == 30_000.0
    assert limits(report)["A2"] == 32
    inputs = service.inputs(("A2", 1))
    assert inputs is not None and inputs["profile"] == "fleet" and inputs["departure_source"] == "profile"
    await control.close()
