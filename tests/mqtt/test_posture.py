"""The MQTT client's posture: queued publishing, status (birth and will), client ids, TLS errors."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from evdlm.mqtt import MqttClient, MqttMessage, MqttWill
from evdlm.mqtt.client import MqttError, unique_client_id
from evdlm.sim.broker import BrokerTls, LocalBroker

STATUS = "dlm/t/status"
ONLINE, OFFLINE = b'{"state": "online"}', b'{"state": "offline"}'


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


def fast(host: str, port: int, name: str, **kw: object) -> MqttClient:
    return MqttClient(host, port, client_id=name, backoff_initial_s=0.05, backoff_max_s=0.3, **kw)  # type: ignore[arg-type]


def gateway_client(host: str, port: int, name: str = "gw", **kw: object) -> MqttClient:
    return fast(host, port, name, will=MqttWill(STATUS, OFFLINE), birth=MqttWill(STATUS, ONLINE), **kw)


async def test_publish_nowait_queues_while_down_and_delivers_after() -> None:
    got: list[MqttMessage] = []
    async with LocalBroker() as broker:
        host, port = broker.host, broker.port
        async with fast(host, port, "sub") as sub, fast(host, port, "pub", telemetry_queue_max=3) as pub:
            assert await sub.wait_connected(5) and await pub.wait_connected(5)
            assert await sub.subscribe("q/#", got.append)
            await broker.stop()
            await wait_for(lambda: not pub.connected)
            started = time.perf_counter()
            for index in range(10):
                pub.publish_nowait(f"q/telemetry/{index % 3}", f"t{index}", retain=True)
                # Retained: the subscriber may resubscribe after the publisher is back.
                pub.publish_nowait(f"q/reliable/{index}", f"r{index}", retain=True, reliable=True)
            pub.publish_nowait("q/telemetry/x", "tx", retain=True)
            pub.publish_nowait("q/telemetry/y", "ty", retain=True)
            assert time.perf_counter() - started < 0.05  # nothing waited
            # Telemetry: the latest per topic, the oldest topics dropped beyond 3 and counted.
            assert pub.stats.telemetry_superseded == 7 and pub.stats.telemetry_dropped == 2
            assert pub.queued == 13
            await broker.start()
            await wait_for(lambda: pub.queued == 0 and pub.inflight == 0, 15)
            await wait_for(lambda: len({m.topic for m in got if m.topic.startswith("q/reliable")}) == 10, 10)
    reliable = {m.payload for m in got if m.topic.startswith("q/reliable")}
    assert reliable == {f"r{i}".encode() for i in range(10)}  # none lost (order: the frozen-broker test)
    telemetry = {m.topic: m.payload for m in got if m.topic.startswith("q/telemetry")}
    assert telemetry == {"q/telemetry/2": b"t8", "q/telemetry/x": b"tx", "q/telemetry/y": b"ty"}


async def test_a_frozen_broker_holds_at_most_the_inflight_window() -> None:
    got: list[bytes] = []
    async with LocalBroker() as broker:
        if broker.kind != "mosquitto":
            pytest.skip("freezing needs mosquitto")
        async with fast(broker.host, broker.port, "sub") as sub, fast(broker.host, broker.port, "pub") as pub:
            assert await sub.wait_connected(5) and await pub.wait_connected(5)
            await sub.subscribe("f/#", lambda m: got.append(m.payload))
            broker.freeze()
            try:
                started = time.perf_counter()
                for index in range(500):
                    pub.publish_nowait("f/r", str(index), reliable=True)
                    pub.publish_nowait(f"f/t/{index % 7}", str(index))
                assert time.perf_counter() - started < 0.1
                await asyncio.sleep(0.5)
                assert pub.inflight <= 20 and pub.queued >= 480
            finally:
                broker.thaw()
            await wait_for(lambda: pub.queued == 0 and pub.inflight == 0, 20)
            await wait_for(lambda: got.count(b"499") >= 1, 10)
    assert [int(p) for p in got if int(p) < 500][:3] == [0, 1, 2]


async def test_online_after_every_reconnect_and_offline_on_clean_exit(mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    seen: list[bytes] = []
    async with fast(host, port, "watcher") as watcher:
        assert await watcher.wait_connected(5)
        await watcher.subscribe(STATUS, lambda m: seen.append(m.payload))
        async with gateway_client(host, port) as gw:
            await wait_for(lambda: seen[-1:] == [ONLINE])
            sock = gw._client.socket()  # an unclean disconnect: the broker publishes the will
            assert sock is not None
            sock.shutdown(socket.SHUT_RDWR)
            await wait_for(lambda: OFFLINE in seen)
            await wait_for(lambda: gw.connects == 2 and seen[-1] == ONLINE)
            await asyncio.sleep(0.3)
            assert seen[-1] == ONLINE  # the will did not have the last word
        await wait_for(lambda: seen[-1] == OFFLINE)  # a clean exit says offline itself


async def test_a_late_will_is_answered_with_online(
    mqtt_broker: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    host, port = mqtt_broker
    seen: list[bytes] = []
    async with fast(host, port, "watcher") as watcher, gateway_client(host, port) as gw:
        assert await watcher.wait_connected(5) and await gw.wait_connected(5)
        await watcher.subscribe(STATUS, lambda m: seen.append(m.payload))
        await wait_for(lambda: seen[-1:] == [ONLINE])
        # The will of an earlier process of ours (another client id), published late by the broker.
        await watcher.publish(STATUS, OFFLINE, retain=True)
        await wait_for(lambda: seen[-1] == ONLINE and OFFLINE in seen, 5)
    assert "publishing online again" in caplog.text


async def test_client_id_takeover_is_a_warning(mqtt_broker: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    host, port = mqtt_broker
    caplog.set_level(logging.WARNING, logger="evdlm.mqtt")
    async with fast(host, port, "pinned-id") as first:
        assert await first.wait_connected(5)
        async with fast(host, port, "pinned-id") as second:
            assert await second.wait_connected(5)
            # MQTT 5 brokers that say so (DISCONNECT 0x8E) get a warning at once; mosquitto 2.0.11
            # just closes the socket, and the connections closed right after they open tell.
            await wait_for(lambda: "another client" in caplog.text, 15)
    assert "'pinned-id'" in caplog.text


def test_unique_client_ids() -> None:
    made = unique_client_id("evdlm-site1")
    assert made.startswith("evdlm-site1-") and made.endswith(f"-{os.getpid()}")
    assert unique_client_id("x") == unique_client_id("x")  # stable within a process (reconnects)


async def test_subscribe_never_raises_and_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    got: list[bytes] = []
    async with LocalBroker() as broker:
        if broker.kind != "mosquitto":
            pytest.skip("freezing needs mosquitto")
        async with (
            fast(broker.host, broker.port, "sub", subscribe_retry_s=1.0, keepalive_s=60) as sub,
            fast(broker.host, broker.port, "pub") as pub,
        ):
            assert await sub.wait_connected(5) and await pub.wait_connected(5)
            broker.freeze()
            try:
                assert await sub.subscribe("s/x", lambda m: got.append(m.payload), timeout_s=0.5) is False
                await asyncio.sleep(1.5)
            finally:
                broker.thaw()
            assert await sub.wait_subscribed("s/x", 5)
            await pub.publish("s/x", b"1")
            await wait_for(lambda: got == [b"1"])
    assert "no SUBACK for s/x" in caplog.text


# ---------------------------------------------------------------------------- TLS


def tls_broker(pki: Path) -> LocalBroker:
    if shutil.which("mosquitto") is None:
        pytest.skip("needs mosquitto (the embedded broker has no TLS listener)")
    files = BrokerTls(str(pki / "ca.crt"), str(pki / "server.crt"), str(pki / "server.key"), require_certificate=True)
    return LocalBroker(kind="mosquitto", tls=files)


async def test_tls_with_a_client_certificate(pki: Path) -> None:
    async with (
        tls_broker(pki) as broker,
        fast(
            broker.host,
            broker.port,
            "tls-ok",
            tls=True,
            ca_file=str(pki / "ca.crt"),
            cert_file=str(pki / "gateway.crt"),
            key_file=str(pki / "gateway.key"),
        ) as client,
    ):
        assert await client.wait_connected(5)
        await client.publish("t/tls", b"ok")


async def test_tls_with_a_wrong_ca_is_one_warning_with_its_cause(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="evdlm.mqtt")
    async with (
        tls_broker(pki) as broker,
        fast(
            broker.host,
            broker.port,
            "tls-bad",
            tls=True,
            ca_file=str(pki / "other-ca.crt"),
            cert_file=str(pki / "gateway.crt"),
            key_file=str(pki / "gateway.key"),
        ) as client,
    ):
        await asyncio.sleep(2.0)  # several attempts at 0.05-0.3 s backoff
        assert not client.connected
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "cannot connect" in r.getMessage()]
    attempts = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(warnings) == 1 and len(attempts) >= 3
    assert "TLS certificate verification failed" in warnings[0].getMessage()


def test_tls_set_up_errors_are_translated(tmp_path: Path) -> None:
    with pytest.raises(MqttError, match="TLS set-up failed"):
        MqttClient("127.0.0.1", 8883, tls=True, ca_file=str(tmp_path / "missing.crt"))
    with pytest.raises(MqttError, match="needs tls"):
        MqttClient("127.0.0.1", 1883, cert_file="client.crt")
