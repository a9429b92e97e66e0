"""The DR service against hostile and heavy input over a real broker (issue 13, DR rows).

Each test is one row of the tester's table: floods, a 1 MB event, a retained flood at start-up,
NaN values, deep nesting, odd state files, a frozen broker, kill -9. The answer is always
REJECTED with a reason, a warning, or no effect: current limits untouched, nothing lost from
the store, the event loop responsive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from evdlm.config import parse_site_config
from evdlm.config.models import SiteConfig
from evdlm.core.clock import SystemClock
from evdlm.dr.engine import ChannelMode
from evdlm.dr.messages import Notification, Status, from_epoch, rfc3339
from evdlm.dr.service import DrBounds, DrService
from evdlm.mqtt.client import MqttClient, MqttMessage
from evdlm.sim.broker import LocalBroker

SITE = """\
site: {id: site1}
grid: {import_limit_kw: 100, phase_current_limit_a: 160}
circuits: [{id: main, phase_current_limit_a: 160}]
mqtt: {host: 127.0.0.1}
demand_response: {programs: [{id: dso, failsafe_import_limit_kw: 40}]}
control: {fallback_import_limit_kw: 50}
"""


def site() -> SiteConfig:
    return parse_site_config(SITE).config


def event(event_id: str, limit_kw: float, *, start_in_s: float = -60.0, padding: int = 0) -> dict[str, Any]:
    now = time.time()
    out: dict[str, Any] = {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": event_id,
            "programID": "dso",
            "modificationDateTime": rfc3339(from_epoch(now - 5)),
            "targets": ["site1"],
            "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
            "intervalPeriod": {"start": rfc3339(from_epoch(now + start_in_s)), "duration": "PT2H"},
            "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [limit_kw]}]}],
        },
        "x-dlm": {"schemaVersion": 1},
    }
    if padding:
        out["object"]["padding"] = "x" * padding  # an unknown field: tolerated, stored as received
    return out


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def strict(payload: bytes) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"{token} in a response")

    return json.loads(payload, parse_constant=refuse)


class LoopWatch:
    """How late a 10 ms sleep wakes up: the event loop's responsiveness (the cycle's view)."""

    def __init__(self) -> None:
        self.lateness_s: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lateness_s.append(time.perf_counter() - started - 0.01)

    def __enter__(self) -> LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-watch")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    @property
    def worst_s(self) -> float:
        return max(self.lateness_s, default=0.0)


class Utility:
    """The utility side: publishes events, collects responses (the last per event)."""

    def __init__(self, client: MqttClient) -> None:
        self.client = client
        self.responses: dict[str, dict[str, Any]] = {}
        self.raw: list[bytes] = []
        self.effective: list[dict[str, Any]] = []

    async def listen(self) -> None:
        def on_response(message: MqttMessage) -> None:
            self.raw.append(message.payload)
            self.responses[message.topic.rsplit("/", 1)[-1]] = strict(message.payload)

        await self.client.subscribe("dr/site1/responses/+", on_response)
        await self.client.subscribe("dlm/site1/dr/effective", lambda m: self.effective.append(strict(m.payload)))

    def send(self, event_id: str, payload: bytes | dict[str, Any], *, retain: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish_nowait(f"dr/site1/events/{event_id}", body, retain=retain, reliable=True)


async def test_a_flood_of_valid_events_is_bounded_and_the_loop_stays_responsive(
    mqtt_broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = mqtt_broker
    process = psutil.Process()
    async with (
        MqttClient(host, port, client_id="utility", reliable_queue_max=5000) as client,
        MqttClient(host, port, client_id="gateway") as gateway,
    ):
        utility = Utility(client)
        assert await client.wait_connected(5) and await gateway.wait_connected(5)
        await utility.listen()
        rss_before = process.memory_info().rss
        async with DrService(site(), gateway, SystemClock(), tmp_path / "dr.json") as service:
            await wait_for(lambda: service.known)
            with LoopWatch() as watch:
                for index in range(2000):
                    utility.send(f"e{index}", event(f"e{index}", 60.0 + index % 50))
                # The broker may drop some for a slow subscriber (its own queue bound): every one
                # that reached the service is answered.
                await wait_for(lambda: client.queued == 0 and client.inflight == 0, 30)
                await wait_for(lambda: len(utility.responses) >= service.stats.handled > 1000, 30)
                await asyncio.sleep(1.5)
            assert len(service.engine.events) == service.bounds.max_events_per_program  # 64
            statuses = {response["status"] for response in utility.responses.values()}
            reasons = {response.get("reason") for response in utility.responses.values()}
            assert statuses == {"ACTIVE", "REJECTED"} and reasons == {None, "TOO_MANY_EVENTS"}
            assert service.effective(time.time()).import_limit_w == 60_000
            # Debounced persistence: a few writes, not one per message; the file holds the store.
            assert service.stats.persisted <= 10
            stored = json.loads((tmp_path / "dr.json").read_text())
            assert len(stored["events"]) == 64
        rss_growth_mb = (process.memory_info().rss - rss_before) / 1e6
    assert watch.worst_s < 0.25, watch.worst_s  # the old service took a minute per cycle here
    assert rss_growth_mb < 50


async def test_a_one_megabyte_event_is_rejected_and_a_big_stored_one_costs_nothing_per_message(
    mqtt_broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = mqtt_broker
    state_file = tmp_path / "dr.json"
    # A store written by an earlier version holds one 1 MB event (accepted before the cap).
    seed = DrService(site(), MqttClient(host, port), SystemClock(), state_file)
    big = event("big", 80.0, padding=1_000_000)
    stored = seed.engine._stored(Notification.model_validate(big), big)
    stored.status = Status.ACTIVE
    seed.engine.events["big"] = stored
    state_file.write_text(json.dumps(seed.engine.to_state()))
    async with (
        MqttClient(host, port, client_id="utility") as client,
        MqttClient(host, port, client_id="gateway") as gateway,
    ):
        utility = Utility(client)
        assert await client.wait_connected(5) and await gateway.wait_connected(5)
        await utility.listen()
        async with DrService(site(), gateway, SystemClock(), state_file) as service:
            assert "big" in service.engine.events
            await wait_for(lambda: service.known)
            utility.send("huge", event("huge", 10.0, padding=1_000_000))
            await wait_for(lambda: "huge" in utility.responses)
            assert utility.responses["huge"]["status"] == "REJECTED"
            assert "byte limit" in utility.responses["huge"]["detail"]
            assert service.stats.too_large == 1 and "huge" not in service.engine.events
            with LoopWatch() as watch:
                for index in range(300):
                    utility.send(f"e{index}", event(f"e{index}", 90.0))
                await wait_for(lambda: len(utility.responses) >= 301, 30)
            assert watch.worst_s < 0.25, watch.worst_s
            assert service.effective(time.time()).import_limit_w == 80_000  # the big one is still the lowest
            await asyncio.sleep(1.2)
            assert service.stats.persisted <= 6


async def test_start_up_under_a_retained_flood(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.dr")
    async with (
        LocalBroker() as broker,
        MqttClient(broker.host, broker.port, client_id="utility", reliable_queue_max=5000) as client,
    ):
        assert await client.wait_connected(5)
        utility = Utility(client)
        utility.send("real", event("real", 45.0), retain=True)
        for index in range(1000):
            # Valid events of a program this site is not in: each is parsed and answered
            # NOT_TARGETED, none takes a place in the store that "real" needs.
            flood = event(f"r{index}", 90.0 + index % 10, padding=800)
            flood["object"]["programID"] = "other"
            utility.send(f"r{index}", flood, retain=True)
        await wait_for(lambda: client.queued == 0 and client.inflight == 0, 30)
        async with MqttClient(broker.host, broker.port, client_id="gateway") as gateway:
            assert await gateway.wait_connected(5)
            started = time.perf_counter()
            service = DrService(site(), gateway, SystemClock(), tmp_path / "dr.json")
            await service.start()
            try:
                assert time.perf_counter() - started < 0.5  # start() waits on nothing
                first = service.effective(time.time())
                # Until the retained events are handled: the failsafe limit (40 kW).
                assert first.mode is ChannelMode.STARTING and first.import_limit_w == 40_000
                await wait_for(lambda: service.known, 15)
                assert time.perf_counter() - started < 12
                await wait_for(lambda: "real" in service.engine.events, 5)
                await asyncio.sleep(0.3)
                now = service.effective(time.time())
                assert now.mode is ChannelMode.NORMAL and now.import_limit_w == 45_000
                assert gateway.subscribed("dr/site1/bridge/heartbeat")
            finally:
                await service.stop()
    assert "DR state known" in caplog.text


async def test_nan_and_deep_payloads_are_rejected_and_limits_kept(mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    host, port = mqtt_broker
    async with (
        MqttClient(host, port, client_id="utility") as client,
        MqttClient(host, port, client_id="gateway") as gateway,
    ):
        utility = Utility(client)
        assert await client.wait_connected(5) and await gateway.wait_connected(5)
        await utility.listen()
        async with DrService(site(), gateway, SystemClock(), tmp_path / "dr.json") as service:
            await wait_for(lambda: service.known)
            utility.send("legit", event("legit", 70.0))
            await wait_for(lambda: "legit" in utility.responses)
            nan = json.dumps(event("nan", 12345.0)).replace("12345.0", "NaN").encode()
            utility.send("nan", nan)
            deep_3000 = b'{"object": {"id": "deep1", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}}"
            deep_100k = b'{"object": {"id": "deep2", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
            utility.send("deep1", deep_3000)
            utility.send("deep2", deep_100k)
            await wait_for(lambda: {"nan", "deep1", "deep2"} <= utility.responses.keys())
            assert utility.responses["nan"]["status"] == "REJECTED"
            assert utility.responses["nan"]["pointer"] == "/object/intervals/0/payloads/0/values/0"
            assert utility.responses["deep1"]["reason"] == "SCHEMA_INVALID"
            assert "nested deeper" in utility.responses["deep1"]["detail"]
            assert utility.responses["deep2"]["status"] == "REJECTED"  # 200 kB: refused by size
            assert set(service.engine.events) == {"legit"}
            assert service.effective(time.time()).import_limit_w == 70_000
            utility.send("lower", event("lower", 55.0))
            await wait_for(lambda: "lower" in utility.responses)
            await asyncio.sleep(0.3)
            assert service.effective(time.time()).import_limit_w == 55_000
        for payload in utility.raw:
            strict(payload)  # every response evdlm wrote is strict JSON


async def test_one_topic_cannot_flood_the_intake(mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    host, port = mqtt_broker
    async with (
        MqttClient(host, port, client_id="utility") as client,
        MqttClient(host, port, client_id="gateway") as gateway,
    ):
        utility = Utility(client)
        assert await client.wait_connected(5) and await gateway.wait_connected(5)
        bounds = DrBounds(topic_burst=5, topic_rate_per_s=1.0)
        async with DrService(site(), gateway, SystemClock(), tmp_path / "dr.json", bounds=bounds) as service:
            await wait_for(lambda: service.known)
            for _ in range(200):
                utility.send("same", event("same", 70.0))
            await wait_for(lambda: service.stats.received >= 200)
            await asyncio.sleep(0.2)
            assert service.stats.rate_limited >= 190 and service.stats.handled <= 10
            assert service.effective(time.time()).import_limit_w == 70_000


@pytest.mark.parametrize(
    "content", ['{"events": null}', '{"events": ["x"]}', "[1,2,3]", "{", '{"events": [], "x": NaN}']
)
async def test_an_odd_state_file_is_set_aside_and_the_service_starts(
    mqtt_broker: tuple[str, int], tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    host, port = mqtt_broker
    state_file = tmp_path / "dr.json"
    state_file.write_text(content)
    caplog.set_level(logging.WARNING, logger="evdlm.state")
    async with (
        MqttClient(host, port, client_id="gateway") as gateway,
        DrService(site(), gateway, SystemClock(), state_file) as service,
    ):
        assert service.engine.events == {}
        assert service.effective(time.time()).import_limit_w == 40_000  # starting: failsafe
    aside = list(tmp_path.glob("dr.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == content
    assert len([r for r in caplog.records if r.name == "evdlm.state"]) == 1


async def test_responses_wait_for_a_frozen_broker_and_nothing_waits_on_them(tmp_path: Path) -> None:
    async with LocalBroker() as broker:
        if broker.kind != "mosquitto":
            pytest.skip("freezing the broker needs mosquitto")
        async with (
            MqttClient(broker.host, broker.port, client_id="utility") as client,
            MqttClient(broker.host, broker.port, client_id="gateway", keepalive_s=5) as gateway,
        ):
            utility = Utility(client)
            assert await client.wait_connected(5) and await gateway.wait_connected(5)
            await utility.listen()
            async with DrService(site(), gateway, SystemClock(), tmp_path / "dr.json") as service:
                await wait_for(lambda: service.known)
                utility.send("soon", event("soon", 30.0, start_in_s=2.0))
                await wait_for(lambda: utility.responses.get("soon", {}).get("status") == "OPT_IN")
                broker.freeze()
                try:
                    with LoopWatch() as watch:
                        # The event starts while the broker is frozen: ACTIVE is due and queued.
                        for _ in range(40):
                            started = time.perf_counter()
                            assert service.effective(time.time()).import_limit_w == 30_000
                            assert time.perf_counter() - started < 0.01
                            await asyncio.sleep(0.1)
                    assert service.engine.events["soon"].status.value == "ACTIVE"
                    assert watch.worst_s < 0.1
                finally:
                    broker.thaw()
                await wait_for(lambda: utility.responses["soon"]["status"] == "ACTIVE", 20)


KILL_SCRIPT = """
import asyncio, sys
from pathlib import Path
from evdlm.config import parse_site_config
from evdlm.core.clock import SystemClock
from evdlm.dr.service import DrService
from evdlm.mqtt.client import MqttClient

async def main() -> None:
    config = parse_site_config(sys.argv[1]).config
    async with MqttClient("127.0.0.1", int(sys.argv[2]), client_id="doomed") as client:
        await client.wait_connected(5)
        async with DrService(config, client, SystemClock(), Path(sys.argv[3])) as service:
            while not service.known:
                await asyncio.sleep(0.05)
            print("ready", flush=True)
            await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_kill_9_keeps_the_accepted_events(mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    host, port = mqtt_broker
    state_file = tmp_path / "dr.json"
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, SITE, str(port), str(state_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert line.strip() == "ready"
        async with MqttClient(host, port, client_id="utility") as client:
            utility = Utility(client)
            assert await client.wait_connected(5)
            await utility.listen()
            for name, limit in (("k1", 70.0), ("k2", 65.0), ("k3", 80.0)):
                utility.send(name, event(name, limit))  # not retained: only the state file has them
            await wait_for(lambda: len(utility.responses) == 3)
            await asyncio.sleep(1.5)  # the debounced write (≤ 1 s) has happened
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    async with MqttClient(host, port, client_id="gateway-2") as gateway:
        restarted = DrService(site(), gateway, SystemClock(), state_file)
        await restarted.start()
        try:
            assert set(restarted.engine.events) == {"k1", "k2", "k3"}
            assert restarted.engine.effective(time.time()).import_limit_w == 65_000
        finally:
            await restarted.stop()
