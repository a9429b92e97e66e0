"""The asyncio MQTT client against a real broker on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from evdlm.mqtt import MqttClient, MqttMessage, MqttNotConnectedError, MqttWill
from evdlm.sim.broker import LocalBroker, mqtt_broker


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


def client(address: tuple[str, int], name: str, **kw: object) -> MqttClient:
    host, port = address
    return MqttClient(host, port, client_id=name, backoff_initial_s=0.05, backoff_max_s=0.2, **kw)  # type: ignore[arg-type]


async def test_publish_subscribe_qos_retain_and_expiry(mqtt_broker: tuple[str, int]) -> None:
    got: list[MqttMessage] = []
    async with client(mqtt_broker, "pub") as pub, client(mqtt_broker, "sub") as sub:
        assert await pub.wait_connected(5.0) and await sub.wait_connected(5.0)
        await pub.publish("dlm/t/state", b'{"w": 1}', qos=1, retain=True)
        await sub.subscribe("dlm/t/#", got.append, qos=1)
        await pub.publish("dlm/t/event", "hello", qos=1, expiry_s=120)
        await wait_for(lambda: len(got) == 2)
    retained, event = got
    assert (retained.topic, retained.payload, retained.retain) == ("dlm/t/state", b'{"w": 1}', True)
    assert (event.topic, event.payload, event.qos, event.retain) == ("dlm/t/event", b"hello", 1, False)
    assert event.expiry_s is not None and 0 < event.expiry_s <= 120


async def test_async_handlers_and_handler_errors_do_not_kill_the_client(mqtt_broker: tuple[str, int]) -> None:
    seen: list[str] = []

    async def slow(message: MqttMessage) -> None:
        await asyncio.sleep(0.01)
        seen.append(message.payload.decode())

    def broken(message: MqttMessage) -> None:
        raise RuntimeError("handler bug")

    async with client(mqtt_broker, "c") as c:
        await c.wait_connected(5.0)
        await c.subscribe("a/+", broken)
        await c.subscribe("a/+", slow)
        await c.publish("a/1", "x")
        await c.publish("a/2", "y")
        await wait_for(lambda: len(seen) == 2)
        assert c.connected


async def test_last_will_fires_on_a_dead_connection_not_on_a_clean_exit(mqtt_broker: tuple[str, int]) -> None:
    wills: list[MqttMessage] = []
    async with client(mqtt_broker, "watcher") as watcher:
        await watcher.wait_connected(5.0)
        await watcher.subscribe("dlm/t/status", wills.append)
        async with client(mqtt_broker, "gw", will=MqttWill("dlm/t/status", "offline", retain=False)) as gw:
            await gw.wait_connected(5.0)
            sock = gw._client.socket()  # simulate a crash: the TCP connection dies, no DISCONNECT
            assert sock is not None
            sock.shutdown(socket.SHUT_RDWR)
            await wait_for(lambda: len(wills) == 1)
            await wait_for(lambda: gw.connects == 2)  # and it comes back by itself
        await asyncio.sleep(0.2)
    assert [m.payload for m in wills] == [b"offline"]  # the clean exit sent no second will


async def test_broker_restart_reconnects_and_resubscribes() -> None:
    got: list[bytes] = []
    async with (
        LocalBroker() as broker,
        MqttClient(broker.host, broker.port, client_id="s", backoff_initial_s=0.05, backoff_max_s=0.3) as sub,
        MqttClient(broker.host, broker.port, client_id="p", backoff_initial_s=0.05, backoff_max_s=0.3) as pub,
    ):
        await sub.wait_connected(5.0)
        await sub.subscribe("dr/#", lambda m: got.append(m.payload))
        await pub.wait_connected(5.0)
        await pub.publish("dr/1", b"before")
        await wait_for(lambda: got == [b"before"])
        await broker.stop()
        await wait_for(lambda: not sub.connected and not pub.connected)
        with pytest.raises(MqttNotConnectedError):
            await pub.publish("dr/2", b"lost")
        await broker.start()
        await wait_for(lambda: sub.connects == 2 and pub.connects == 2, timeout_s=10.0)
        await asyncio.sleep(0.1)  # the re-sent SUBSCRIBE is processed before the next PUBLISH
        await pub.publish("dr/3", b"after")
        await wait_for(lambda: got == [b"before", b"after"])


async def test_subscribe_before_connect_is_sent_on_connect() -> None:
    got: list[bytes] = []
    async with LocalBroker() as broker:
        await broker.stop()
        async with MqttClient(broker.host, broker.port, backoff_initial_s=0.05, backoff_max_s=0.2) as c:
            await c.subscribe("x", lambda m: got.append(m.payload))
            assert not await c.wait_connected(0.2)
            await broker.start()
            assert await c.wait_connected(5.0)
            await asyncio.sleep(0.1)
            await c.publish("x", b"1")
            await wait_for(lambda: got == [b"1"])


async def test_embedded_amqtt_fallback_round_trip() -> None:
    got: list[bytes] = []
    async with mqtt_broker(kind="amqtt") as (host, port), MqttClient(host, port, protocol="3.1.1") as c:
        assert await c.wait_connected(5.0)
        await c.subscribe("t", lambda m: got.append(m.payload))
        await c.publish("t", b"ok", qos=1)
        await wait_for(lambda: got == [b"ok"])


async def test_handlers_sharing_a_filter_leave_independently(mqtt_broker: tuple[str, int]) -> None:
    first: list[bytes] = []
    second: list[bytes] = []

    def on_first(m: MqttMessage) -> None:
        first.append(m.payload)

    async with client(mqtt_broker, "shared") as c:
        await c.wait_connected(5.0)
        await c.subscribe("s/#", on_first)
        await c.subscribe("s/#", lambda m: second.append(m.payload))
        await c.publish("s/1", b"a")
        await wait_for(lambda: first == [b"a"] and second == [b"a"])
        await c.unsubscribe("s/#", on_first)
        await c.publish("s/1", b"b")
        await wait_for(lambda: second == [b"a", b"b"])
        assert first == [b"a"]
        await c.unsubscribe("s/#")
        await c.publish("s/1", b"c")
        await asyncio.sleep(0.1)
        assert second == [b"a", b"b"]
