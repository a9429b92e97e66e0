"""An asyncio MQTT client over paho-mqtt (the one module that imports paho).

paho does the protocol; this class plugs its socket into the running event loop (add_reader /
add_writer, as aiomqtt does) so every callback runs on the loop thread, and owns the
lifetime: ``async with MqttClient(...)`` connects in the background, reconnects with capped,
jittered backoff, resubscribes every filter after each (re)connect (clean sessions), and
disconnects cleanly on exit (a clean disconnect does not fire the last will).

Handlers receive :class:`MqttMessage`; they may be plain functions or coroutines (coroutines
run as named tasks in the client's TaskGroup; their exceptions are logged, never fatal).
paho's exceptions and error codes are translated into :class:`MqttError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from evdlm.core.clock import Clock, SystemClock

logger = logging.getLogger("evdlm.mqtt")


class MqttError(Exception):
    """Base of the MQTT client's errors."""


class MqttNotConnectedError(MqttError):
    """The operation needs a connection and there is none right now."""


@dataclass(frozen=True)
class MqttMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    expiry_s: int | None = None  # MQTT v5 message expiry interval, as received
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class MqttWill:
    """Last will, published by the broker if the connection dies without DISCONNECT."""

    topic: str
    payload: bytes | str
    qos: int = 1
    retain: bool = True


Handler = Callable[[MqttMessage], Awaitable[None] | None]


@dataclass
class _Subscription:
    qos: int
    handlers: list[Handler] = field(default_factory=list)


def _backoff_s(failures: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with equal jitter (see evdlm.devices.modbus_transport)."""
    nominal_s = min(max_s, initial_s * 2.0 ** max(0, failures - 1))
    return nominal_s / 2.0 + rng.uniform(0.0, nominal_s / 2.0)


class MqttClient:
    """A long-lived MQTT connection for the whole process (devices, DR, state publisher)."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        client_id: str = "",
        clock: Clock | None = None,
        keepalive_s: int = 30,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        will: MqttWill | None = None,
        protocol: Literal["5", "3.1.1"] = "5",
        connect_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        self._clock = clock or SystemClock()
        self._connect_timeout_s = connect_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._v5 = protocol == "5"
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self._v5 else True,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if will is not None:
            self._client.will_set(will.topic, will.payload, will.qos, will.retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write
        self._subscriptions: dict[str, _Subscription] = {}
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._fd: int | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._connack: asyncio.Future[bool] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.connects = 0  # successful connections so far (tests, metrics)

    # ------------------------------------------------------------ lifetime

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def __aenter__(self) -> MqttClient:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._spawn(self._supervise(), f"mqtt:{self.host}:{self.port}:connection")
        self._spawn(self._housekeeping(), f"mqtt:{self.host}:{self.port}:keepalive")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        if self.connected:
            self._client.disconnect()
            self._flush_writes()
        assert self._tg is not None
        for task in list(self._tasks):
            task.cancel()
        await self._tg.__aexit__(None, None, None)
        self._drop_socket()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MqttNotConnectedError("client closed"))
        self._pending.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        assert self._tg is not None
        task = self._tg.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self) -> None:
        failures = 0
        while True:
            ok = await self._connect_once()
            if ok:
                failures = 0
                await self._disconnected.wait()
                continue
            failures += 1
            delay_s = _backoff_s(failures, self._backoff_initial_s, self._backoff_max_s, self._rng)
            logger.debug(
                "mqtt %s:%d: connect attempt %d failed, retry in %.1f s", self.host, self.port, failures, delay_s
            )
            await self._clock.sleep(delay_s)

    async def _connect_once(self) -> bool:
        assert self._loop is not None
        self._connack = self._loop.create_future()
        self._disconnected.clear()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                # connect() blocks on DNS and TCP: run it in a thread; CONNACK arrives on the loop.
                rc = await asyncio.to_thread(self._client.connect, self.host, self.port, self.keepalive_s)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise MqttError(f"connect returned {rc}")
                return await self._connack
        except (TimeoutError, OSError, MqttError, ValueError) as exc:
            logger.debug("mqtt %s:%d: connect failed: %r", self.host, self.port, exc)
            self._drop_socket()
            return False

    async def _housekeeping(self) -> None:
        # loop_misc sends PINGREQ and notices a silent broker; once a second is plenty for
        # keepalives of 5 s and more.
        while True:
            await asyncio.sleep(1.0)
            if self._fd is not None:
                self._client.loop_misc()

    # ------------------------------------------------------------ socket plumbing (loop thread)

    def _in_loop(self, fn: Callable[[], None]) -> None:
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def register() -> None:
            assert self._loop is not None
            self._fd = fd
            self._loop.add_reader(fd, self._read_ready)
            if self._client.want_write():
                self._loop.add_writer(fd, self._write_ready)

        self._in_loop(register)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._unregister)

    def _unregister(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = None

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def register() -> None:
            if self._fd is not None and self._loop is not None:
                self._loop.add_writer(self._fd, self._write_ready)

        self._in_loop(register)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            if self._fd is not None and self._loop is not None:
                self._loop.remove_writer(self._fd)

        self._in_loop(unregister)

    def _read_ready(self) -> None:
        self._client.loop_read()

    def _write_ready(self) -> None:
        self._client.loop_write()

    def _flush_writes(self) -> None:
        for _ in range(10):
            if not self._client.want_write():
                break
            if self._client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break

    def _drop_socket(self) -> None:
        sock = self._client.socket()
        self._unregister()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # ------------------------------------------------------------ paho callbacks (loop thread)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        ok = not reason_code.is_failure
        if ok:
            self.connects += 1
            self._connected.set()
            logger.info("mqtt %s:%d: connected", self.host, self.port)
            for topic_filter, subscription in self._subscriptions.items():
                client.subscribe(topic_filter, subscription.qos)
        else:
            logger.warning("mqtt %s:%d: connection refused: %s", self.host, self.port, reason_code)
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(ok)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was_connected = self.connected
        self._connected.clear()
        self._disconnected.set()
        if was_connected and not self._closing:
            logger.warning("mqtt %s:%d: disconnected (%s); reconnecting", self.host, self.port, reason_code)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MqttNotConnectedError("connection lost before acknowledgement"))
        self._pending.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(False)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            failed = [code for code in reason_codes if getattr(code, "is_failure", False)]
            if failed:
                future.set_exception(MqttError(f"subscription refused: {failed}"))
            else:
                future.set_result(None)

    def _on_message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        props = getattr(message, "properties", None)
        expiry = getattr(props, "MessageExpiryInterval", None) if props is not None else None
        user = tuple(getattr(props, "UserProperty", ()) or ()) if props is not None else ()
        msg = MqttMessage(
            topic=message.topic,
            payload=bytes(message.payload),
            qos=int(message.qos),
            retain=bool(message.retain),
            expiry_s=None if expiry is None else int(expiry),
            user_properties=tuple((str(k), str(v)) for k, v in user),
        )
        for topic_filter, subscription in self._subscriptions.items():
            if paho.topic_matches_sub(topic_filter, msg.topic):
                for handler in subscription.handlers:
                    self._dispatch(handler, msg)

    def _dispatch(self, handler: Handler, msg: MqttMessage) -> None:
        try:
            result = handler(msg)
        except Exception:
            logger.exception("mqtt handler for %s failed", msg.topic)
            return
        if result is not None and self._tg is not None:

            async def run(awaitable: Awaitable[None] = result) -> None:
                try:
                    await awaitable
                except Exception:
                    logger.exception("mqtt handler for %s failed", msg.topic)

            self._spawn(run(), f"mqtt-handler:{msg.topic}")

    # ------------------------------------------------------------ public operations

    async def _acknowledged(self, mid: int, timeout_s: float, what: str) -> None:
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending[mid] = future
        try:
            async with asyncio.timeout(timeout_s):
                await future
        except TimeoutError as exc:
            self._pending.pop(mid, None)
            raise MqttError(f"{what}: no acknowledgement within {timeout_s:g} s") from exc

    async def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1, *, timeout_s: float = 5.0) -> None:
        """Call ``handler`` for every message matching ``topic_filter``, across reconnects.

        While disconnected the subscription is recorded and sent on the next connect; when
        connected this waits for the broker's SUBACK.
        """
        subscription = self._subscriptions.get(topic_filter)
        if subscription is None:
            subscription = self._subscriptions[topic_filter] = _Subscription(qos)
        subscription.handlers.append(handler)
        if not self.connected:
            return
        rc, mid = self._client.subscribe(topic_filter, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe {topic_filter}: {rc}")
        await self._acknowledged(mid, timeout_s, f"subscribe {topic_filter}")

    async def unsubscribe(self, topic_filter: str, handler: Handler | None = None) -> None:
        """Stop calling ``handler`` (or every handler) for ``topic_filter``.

        The broker subscription goes when the filter's last handler does, so components sharing
        one client can leave independently.
        """
        subscription = self._subscriptions.get(topic_filter)
        if subscription is None:
            return
        if handler is not None and handler in subscription.handlers:
            subscription.handlers.remove(handler)
        if handler is None or not subscription.handlers:
            del self._subscriptions[topic_filter]
            if self.connected:
                self._client.unsubscribe(topic_filter)

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        *,
        timeout_s: float = 5.0,
    ) -> None:
        """Publish and, for QoS 1/2, wait for the broker's acknowledgement.

        ``expiry_s`` sets the MQTT v5 message expiry interval (ignored on 3.1.1). Raises
        :class:`MqttNotConnectedError` while disconnected: the caller decides whether to retry
        (state is republished next cycle; DR responses are queued by their owner).
        """
        if not self.connected:
            raise MqttNotConnectedError(f"not connected to {self.host}:{self.port}")
        properties = None
        if self._v5 and expiry_s is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = int(expiry_s)
        info = self._client.publish(topic, payload, qos, retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttNotConnectedError(f"publish {topic}: {paho.error_string(info.rc)}")
        if qos > 0:
            await self._acknowledged(info.mid, timeout_s, f"publish {topic}")
