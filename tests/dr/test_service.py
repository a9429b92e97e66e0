"""DR over a real MQTT broker on loopback: responses, rejection, effective state, restart."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from evdlm.config import parse_site_config
from evdlm.core.clock import SystemClock
from evdlm.dr.messages import from_epoch, rfc3339
from evdlm.dr.service import DrService
from evdlm.mqtt.client import MqttClient, MqttMessage
from evdlm.sim.broker import mqtt_broker

SITE = """\
site: {id: site1}
grid: {import_limit_kw: 100, phase_current_limit_a: 160}
circuits: [{id: main, phase_current_limit_a: 160}]
mqtt: {host: 127.0.0.1}
demand_response: {programs: [{id: dso, failsafe_import_limit_kw: 40}]}
control: {fallback_import_limit_kw: 50}
"""


def notification(limit_kw: float) -> dict[str, Any]:
    now = time.time()
    return {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": "evt-7",
            "programID": "dso",
            "modificationDateTime": rfc3339(from_epoch(now - 5)),
            "targets": ["site1"],
            "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
            "intervalPeriod": {"start": rfc3339(from_epoch(now - 60)), "duration": "PT2H"},
            "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [limit_kw]}]}],
        },
        "x-dlm": {"schemaVersion": 1},
    }


async def _wait_for(condition, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_dr_round_trip_and_restart(tmp_path: Path) -> None:
    config = parse_site_config(SITE).config
    state_file = tmp_path / "dr-state.json"
    async with mqtt_broker() as (host, port):
        responses: dict[str, dict[str, Any]] = {}
        effective: list[dict[str, Any]] = []

        def on_response(message: MqttMessage) -> None:
            responses[message.topic.rsplit("/", 1)[-1]] = json.loads(message.payload)

        async with (
            MqttClient(host, port, client_id="utility") as utility,
            MqttClient(host, port, client_id="gateway") as gateway,
        ):
            assert await utility.wait_connected(5) and await gateway.wait_connected(5)
            await utility.subscribe("dr/site1/responses/+", on_response)
            await utility.subscribe("dlm/site1/dr/effective", lambda m: effective.append(json.loads(m.payload)))
            async with DrService(config, gateway, SystemClock(), state_file) as service:
                await utility.publish("dr/site1/bridge/heartbeat", json.dumps({"at": "now"}), qos=0)
                await utility.publish("dr/site1/events/evt-7", json.dumps(notification(60.0)), qos=1, retain=True)
                await _wait_for(lambda: "evt-7" in responses)
                assert responses["evt-7"]["status"] == "ACTIVE"
                await _wait_for(lambda: service.known)
                assert service.effective(time.time()).import_limit_w == 60_000
                await _wait_for(lambda: bool(effective) and effective[-1]["mode"] == "NORMAL")
                assert effective[-1]["importLimitKW"] == 60.0

                # A malformed update is answered and changes nothing.
                await utility.publish(
                    "dr/site1/events/evt-7", b'{"objectType": "EVENT", "object": {"id": "evt-7"}}', qos=1
                )
                await _wait_for(lambda: responses["evt-7"]["status"] == "REJECTED")
                assert responses["evt-7"]["reason"] == "SCHEMA_INVALID"
                assert service.effective(time.time()).import_limit_w == 60_000

        assert json.loads(state_file.read_text())["events"][0]["raw"]["object"]["id"] == "evt-7"
        # Restart: the event applies straight from disk, before any broker traffic.
        async with MqttClient(host, port, client_id="gateway-2") as gateway:
            restarted = DrService(config, gateway, SystemClock(), state_file)
            await restarted.start()
            try:
                assert restarted.engine.effective(time.time()).import_limit_w == 60_000
                # Until the retained events are handled it also holds the failsafe limit (40 kW).
                assert restarted.effective(time.time()).import_limit_w == 40_000
                await _wait_for(lambda: restarted.known)
                await asyncio.sleep(0.3)  # one tick
                assert restarted.effective(time.time()).import_limit_w == 60_000
            finally:
                await restarted.stop()


async def test_a_coming_limit_applies_one_settle_time_early(tmp_path: Path) -> None:
    config = parse_site_config(SITE).config  # settle_time_s 15 + cycle 1 s: 16 s of lead
    event = notification(40.0)
    now = time.time()
    event["object"]["intervalPeriod"]["start"] = rfc3339(from_epoch(now + 5))
    async with mqtt_broker() as (host, port), MqttClient(host, port, client_id="gw-lead") as gateway:
        assert await gateway.wait_connected(5)
        service = DrService(config, gateway, SystemClock(), tmp_path / "dr.json")
        service.known = True
        service.engine.heartbeat(now)
        service.engine.receive("evt-7", json.dumps(event).encode(), now)
        assert service.engine.effective(now).import_limit_w is None  # not in force yet...
        assert service.effective(now).import_limit_w == 40_000  # ...but already applied
