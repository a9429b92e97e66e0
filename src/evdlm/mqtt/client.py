"""An asyncio MQTT client over paho-mqtt (the one module that imports paho).

paho does the protocol; this class plugs its socket into the running event loop (add_reader /
add_writer, as aiomqtt does) so every callback runs on the loop thread, and owns the
lifetime: ``async with MqttClient(...)`` connects in the background, reconnects with capped,
jittered backoff, resubscribes every filter after each (re)connect (clean sessions), and
disconnects cleanly on exit (a clean disconnect does not fire the last will).

Publishing never has to wait on the broker. :meth:`MqttClient.publish_nowait` queues a message
and returns at once; a pump hands queued messages to paho while connected, at most
``max_inflight`` unacknowledged at a time, so a broker that stops answering (frozen, TCP still
open) holds at most that many in paho and the rest in two bounded queues of our own:

- telemetry (state, limits, effective DR): the latest payload per topic; beyond
  ``telemetry_queue_max`` topics the oldest is dropped and counted;
- reliable (DR responses, the online status): first in, first out, kept across reconnects and
  sent when the broker is back; beyond ``reliable_queue_max`` the oldest is dropped, counted
  and logged.

:meth:`MqttClient.publish` (awaits the broker's acknowledgement) remains for callers that want
it: tests, the simulated utility.

Posture: a ``birth`` message (``online``) is published after every (re)connect, the last will
says ``offline``, and the client watches its own status topic so a will published late (the
broker noticing a dead connection of an earlier process) is answered with ``online`` again.
Connection failures (TCP, TLS, CONNACK) are logged at WARNING with their cause once per change
of cause. A broker disconnecting us because another client connected with our client id is a
WARNING (:func:`unique_client_id` makes such a clash unlikely).

Handlers receive :class:`MqttMessage`; they may be plain functions or coroutines (coroutines
run as named tasks in the client's TaskGroup, at most ``max_handler_tasks`` at a time, the
excess dropped and counted; their exceptions are logged, never fatal). paho's exceptions and
error codes are translated into :class:`MqttError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from evdlm.config.models import MqttBroker
from evdlm.config.secrets import resolve_secret
from evdlm.core.clock import Clock, SystemClock

logger = logging.getLogger("evdlm.mqtt")

SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: another client connected with our client id
SHORT_CONNECTION_S = 2.0  # connections this short, several in a row, hint at a client-id clash (3.1.1)


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
    """A status message: the last will (published by the broker if the connection dies without
    DISCONNECT), or the birth message published after every connect."""

    topic: str
    payload: bytes | str
    qos: int = 1
    retain: bool = True

    @property
    def payload_bytes(self) -> bytes:
        return self.payload.encode() if isinstance(self.payload, str) else self.payload


@dataclass(frozen=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    expiry_s: int | None = None


@dataclass
class OutboxStats:
    """Counters of the publish queues and the message handlers (metrics, tests, benchmarks)."""

    published: int = 0  # handed over and, for QoS > 0, acknowledged
    telemetry_superseded: int = 0  # a queued telemetry payload replaced by a newer one, same topic
    telemetry_dropped: int = 0  # oldest telemetry topic dropped: queue full
    reliable_dropped: int = 0  # oldest reliable message dropped: queue full
    handler_tasks_dropped: int = 0  # messages for a coroutine handler dropped: too many running
    subscribe_retries: int = 0


Handler = Callable[[MqttMessage], Awaitable[None] | None]


@dataclass
class _Subscription:
    qos: int
    handlers: list[Handler] = field(default_factory=list)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    sent_at_s: float | None = None  # monotonic time of the last SUBSCRIBE on this connection
    refused: bool = False
    optional: bool = False  # our own status watch: a broker ACL may not let us read it


def _backoff_s(failures: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with equal jitter (see evdlm.devices.modbus_transport)."""
    nominal_s = min(max_s, initial_s * 2.0 ** max(0, failures - 1))
    return nominal_s / 2.0 + rng.uniform(0.0, nominal_s / 2.0)


def unique_client_id(base: str) -> str:
    """``base`` plus this host and process, so no other client takes our connection over.

    MQTT lets a new connection with the same client id take the old one over, silently: two
    gateways (or a gateway and a test tool) sharing an id knock each other off in turn. The host
    name and process id keep ids apart while a restarted process is still easy to recognise.
    """
    host = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in socket.gethostname())[:32] or "host"
    return f"{base}-{host}-{os.getpid()}"


def describe_connect_error(exc: BaseException) -> str:
    """A connection failure in words, with its cause (TLS errors name what failed)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason} (check ca_file and host name)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listening?)"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved: {exc}"
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    return f"{type(exc).__name__}: {exc}"


class MqttClient:
    """A long-lived MQTT connection for the whole process (devices, DR, state publisher)."""

    @classmethod
    def from_config(
        cls,
        broker: MqttBroker,
        clock: Clock,
        base_dir: Path,
        default_client_id: str,
        *,
        will: MqttWill | None = None,
        birth: MqttWill | None = None,
    ) -> MqttClient:
        """The client a site config describes: its secret resolved, its certificate paths against
        the config's folder, and a client id nobody takes over (unless the config pins it)."""
        password = resolve_secret(broker.password, base_dir) if broker.password is not None else None
        client_id = broker.client_id or default_client_id

        def local(path: str | None) -> str | None:
            return None if path is None else str(base_dir / path)

        return cls(
            broker.host,
            broker.port,
            client_id=client_id if broker.pin_client_id else unique_client_id(client_id),
            clock=clock,
            keepalive_s=broker.keepalive_s,
            username=broker.username,
            password=password,
            tls=broker.tls,
            ca_file=local(broker.ca_file),
            cert_file=local(broker.cert_file),
            key_file=local(broker.key_file),
            will=will,
            birth=birth,
        )

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
        cert_file: str | None = None,
        key_file: str | None = None,
        will: MqttWill | None = None,
        birth: MqttWill | None = None,
        protocol: Literal["5", "3.1.1"] = "5",
        connect_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        rng: random.Random | None = None,
        max_inflight: int = 20,
        telemetry_queue_max: int = 8192,  # topics: the state, DR, and one limit topic per EVSE
        reliable_queue_max: int = 20_000,
        max_handler_tasks: int = 256,
        subscribe_retry_s: float = 5.0,
        close_drain_s: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self._clock = clock or SystemClock()
        self._connect_timeout_s = connect_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._v5 = protocol == "5"
        self._max_inflight = max_inflight
        self._telemetry_queue_max = telemetry_queue_max
        self._reliable_queue_max = reliable_queue_max
        self._max_handler_tasks = max_handler_tasks
        self._subscribe_retry_s = subscribe_retry_s
        self._close_drain_s = close_drain_s
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self._v5 else True,
        )
        # paho queues what we hand it beyond its own in-flight window; we never hand it more.
        self._client.max_inflight_messages_set(max_inflight)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            try:
                self._client.tls_set(
                    ca_certs=ca_file, certfile=cert_file, keyfile=key_file, cert_reqs=ssl.CERT_REQUIRED
                )
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise MqttError(f"mqtt {host}:{port}: TLS set-up failed: {describe_connect_error(exc)}") from exc
        elif cert_file is not None or key_file is not None:
            raise MqttError(f"mqtt {host}:{port}: a client certificate needs tls")
        self._will = will
        self._birth = birth
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
        self._subscribe_mids: dict[int, str] = {}
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._fd: int | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._connack: asyncio.Future[bool] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handler_tasks = 0
        self._closing = False
        self.connects = 0  # successful connections so far (tests, metrics)
        self.stats = OutboxStats()
        self._telemetry: OrderedDict[str, _Outgoing] = OrderedDict()
        self._reliable: deque[_Outgoing] = deque()
        self._inflight: dict[int, _Outgoing] = {}
        self._pump_scheduled = False
        self._last_failure: str | None = None  # cause of the last failed attempt, logged once
        self._connected_at_s: float | None = None
        self._short_connections = 0
        self._taken_over = False
        self._birth_sent_at_s = -1e9
        self._birth_retry: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ lifetime

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def queued(self) -> int:
        """Messages waiting in our queues (not yet handed to paho)."""
        return len(self._reliable) + len(self._telemetry)

    @property
    def inflight(self) -> int:
        """Messages handed to paho and not yet acknowledged by the broker."""
        return len(self._inflight)

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
        if self._birth is not None:
            self._subscriptions[self._birth.topic] = _Subscription(1, [self._on_own_status], optional=True)
        self._spawn(self._supervise(), f"mqtt:{self.host}:{self.port}:connection")
        self._spawn(self._housekeeping(), f"mqtt:{self.host}:{self.port}:keepalive")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        if self._birth_retry is not None:
            self._birth_retry.cancel()
        if self.connected:
            if self._birth is not None and self._will is not None:
                # A clean DISCONNECT does not fire the will: say offline ourselves.
                will = self._will
                self._reliable.append(_Outgoing(will.topic, will.payload_bytes, will.qos, will.retain))
            await self._drain(self._close_drain_s)
            self._client.disconnect()
            self._flush_writes()
        lost = len(self._reliable) + len(self._inflight)
        if lost:
            logger.warning("mqtt %s:%d: closed with %d reliable message(s) not delivered", self.host, self.port, lost)
        assert self._tg is not None
        for task in list(self._tasks):
            task.cancel()
        await self._tg.__aexit__(None, None, None)
        self._drop_socket()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MqttNotConnectedError("client closed"))
        self._pending.clear()

    async def _drain(self, timeout_s: float) -> None:
        """Wait (bounded) until the reliable queue and the in-flight window are empty."""
        self._schedule_pump()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while (self._reliable or self._inflight) and self.connected:
                    await asyncio.sleep(0.01)

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
                if not self._taken_over:
                    continue
                # Another client holds our id: reconnecting at once would knock it off and be
                # knocked off in turn, as fast as the broker allows. Back off instead.
                self._taken_over = False
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
        stage = "TCP/TLS connect"
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                # connect() blocks on DNS, TCP and the TLS handshake: run it in a thread; CONNACK
                # arrives on the loop.
                rc = await asyncio.to_thread(self._client.connect, self.host, self.port, self.keepalive_s)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise MqttError(f"connect returned {paho.error_string(rc)}")
                stage = "CONNACK"
                ok = await self._connack
        except TimeoutError:
            self._note_failure(f"no answer within {self._connect_timeout_s:g} s ({stage})")
            self._drop_socket()
            return False
        except (OSError, MqttError, ValueError) as exc:
            self._note_failure(describe_connect_error(exc))
            self._drop_socket()
            return False
        if not ok:
            self._drop_socket()
        return ok

    def _note_failure(self, cause: str) -> None:
        """Log a failed connection attempt: WARNING when its cause changes, DEBUG on repeats."""
        if cause != self._last_failure:
            logger.warning("mqtt %s:%d: cannot connect: %s; retrying", self.host, self.port, cause)
            self._last_failure = cause
        else:
            logger.debug("mqtt %s:%d: cannot connect: %s", self.host, self.port, cause)

    async def _housekeeping(self) -> None:
        # loop_misc sends PINGREQ and notices a silent broker; once a second is plenty for
        # keepalives of 5 s and more. Subscriptions without a SUBACK are sent again.
        while True:
            await asyncio.sleep(1.0)
            if self._fd is not None:
                self._client.loop_misc()
            if self.connected:
                self._retry_subscriptions()
                self._schedule_pump()

    def _retry_subscriptions(self) -> None:
        now_s = time.monotonic()
        for topic_filter, subscription in self._subscriptions.items():
            if subscription.acked.is_set() or subscription.refused:
                continue
            if subscription.sent_at_s is None or now_s - subscription.sent_at_s >= self._subscribe_retry_s:
                if subscription.sent_at_s is not None:
                    self.stats.subscribe_retries += 1
                    logger.warning(
                        "mqtt %s:%d: no SUBACK for %s within %.0f s; subscribing again",
                        self.host,
                        self.port,
                        topic_filter,
                        self._subscribe_retry_s,
                    )
                self._send_subscribe(topic_filter, subscription)

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
            self._connected_at_s = time.monotonic()
            if self._last_failure is not None:
                logger.warning(
                    "mqtt %s:%d: connected as %s (after: %s)", self.host, self.port, self.client_id, self._last_failure
                )
            else:
                logger.info("mqtt %s:%d: connected as %s", self.host, self.port, self.client_id)
            self._last_failure = None
            for topic_filter, subscription in self._subscriptions.items():
                subscription.refused = False
                self._send_subscribe(topic_filter, subscription)
            if self._birth is not None:
                self._enqueue_birth()
            self._schedule_pump()
        else:
            self._note_failure(f"connection refused by the broker: {reason_code}")
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(ok)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was_connected = self.connected
        self._connected.clear()
        self._disconnected.set()
        for subscription in self._subscriptions.values():
            subscription.acked.clear()
            subscription.sent_at_s = None
        self._subscribe_mids.clear()
        if was_connected and not self._closing:
            lasted_s = time.monotonic() - (self._connected_at_s or 0.0)
            self._short_connections = self._short_connections + 1 if lasted_s < SHORT_CONNECTION_S else 0
            if getattr(reason_code, "value", None) == SESSION_TAKEN_OVER:
                self._taken_over = True
                logger.warning(
                    "mqtt %s:%d: disconnected by the broker: another client connected with our client id %r "
                    "(session taken over); reconnecting with backoff",
                    self.host,
                    self.port,
                    self.client_id,
                )
            elif self._short_connections >= 3:
                # Brokers that send no DISCONNECT 0x8E (mosquitto 2.0.11 just closes the socket)
                # show a takeover as connections closed right after they open, again and again.
                self._taken_over = True
                if self._short_connections == 3:
                    logger.warning(
                        "mqtt %s:%d: disconnected (%s) right after connecting 3 times in a row: another client "
                        "is probably using client id %r (each takes the connection over); backing off",
                        self.host,
                        self.port,
                        reason_code,
                        self.client_id,
                    )
                else:
                    logger.debug("mqtt %s:%d: disconnected again right after connecting", self.host, self.port)
            else:
                logger.warning("mqtt %s:%d: disconnected (%s); reconnecting", self.host, self.port, reason_code)
        # paho keeps the QoS 1 messages it holds (self._inflight) and sends them again after the
        # reconnect; only the callers awaiting an acknowledgement are told.
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MqttNotConnectedError("connection lost before acknowledgement"))
        self._pending.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(False)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if self._inflight.pop(mid, None) is not None:
            self.stats.published += 1
            self._schedule_pump()
            return
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        topic_filter = self._subscribe_mids.pop(mid, None)
        subscription = self._subscriptions.get(topic_filter) if topic_filter is not None else None
        if subscription is None:
            return
        failed = [code for code in reason_codes if getattr(code, "is_failure", False)]
        if failed:
            subscription.refused = True
            logger.log(
                logging.INFO if subscription.optional else logging.WARNING,
                "mqtt %s:%d: subscription to %s refused by the broker (%s); tried again after the next reconnect%s",
                self.host,
                self.port,
                topic_filter,
                ", ".join(str(code) for code in failed),
                " (without read access to its own status topic evdlm cannot answer a late last will)"
                if subscription.optional
                else "",
            )
        else:
            subscription.acked.set()

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
        if result is None or self._tg is None:
            return
        if self._handler_tasks >= self._max_handler_tasks:
            self.stats.handler_tasks_dropped += 1
            if self.stats.handler_tasks_dropped == 1 or self.stats.handler_tasks_dropped % 1000 == 0:
                logger.warning(
                    "mqtt %s:%d: %d coroutine handlers running; message on %s dropped (%d so far)",
                    self.host,
                    self.port,
                    self._handler_tasks,
                    msg.topic,
                    self.stats.handler_tasks_dropped,
                )
            close = getattr(result, "close", None)
            if close is not None:
                close()  # a coroutine never awaited: closed, so no "never awaited" warning
            return
        self._handler_tasks += 1

        async def run(awaitable: Awaitable[None] = result) -> None:
            try:
                await awaitable
            except Exception:
                logger.exception("mqtt handler for %s failed", msg.topic)
            finally:
                self._handler_tasks -= 1

        self._spawn(run(), f"mqtt-handler:{msg.topic[:80]}")

    # ------------------------------------------------------------ status (birth, will)

    def _enqueue_birth(self) -> None:
        assert self._birth is not None
        birth = self._birth
        self._birth_sent_at_s = time.monotonic()
        # First in line: a reconnect's status goes out before the backlog.
        self._reliable.appendleft(_Outgoing(birth.topic, birth.payload_bytes, birth.qos, birth.retain))
        self._schedule_pump()

    def _on_own_status(self, message: MqttMessage) -> None:
        """Our status topic said something else (a late will): say online again (≤ 1 per second)."""
        assert self._birth is not None
        if self._closing or not self.connected or message.payload == self._birth.payload_bytes:
            return
        if self._birth_retry is not None:
            return
        logger.warning(
            "mqtt %s:%d: %s says %.60r while we are connected (a late last will?); publishing online again",
            self.host,
            self.port,
            message.topic,
            message.payload,
        )
        wait_s = max(0.0, 1.0 - (time.monotonic() - self._birth_sent_at_s))
        assert self._loop is not None

        def again() -> None:
            self._birth_retry = None
            if self.connected and not self._closing:
                self._enqueue_birth()

        self._birth_retry = self._loop.call_later(wait_s, again)

    # ------------------------------------------------------------ publishing without waiting

    def publish_nowait(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        reliable: bool = False,
        expiry_s: int | None = None,
    ) -> None:
        """Queue a message and return at once (O(1)); it goes out while connected.

        Parameters
        ----------
        topic, payload, qos, retain, expiry_s
            As for :meth:`publish`.
        reliable : bool
            False (telemetry): only the latest payload per topic is kept; beyond
            ``telemetry_queue_max`` topics the oldest is dropped (``stats.telemetry_dropped``).
            True: kept in order, across reconnects, until sent; beyond ``reliable_queue_max``
            the oldest is dropped (``stats.reliable_dropped``, logged).
        """
        item = _Outgoing(topic, payload.encode() if isinstance(payload, str) else payload, qos, retain, expiry_s)
        if reliable:
            if len(self._reliable) >= self._reliable_queue_max:
                dropped = self._reliable.popleft()
                self.stats.reliable_dropped += 1
                if self.stats.reliable_dropped == 1 or self.stats.reliable_dropped % 1000 == 0:
                    logger.warning(
                        "mqtt %s:%d: %d reliable messages queued; oldest (%s) dropped (%d so far)",
                        self.host,
                        self.port,
                        len(self._reliable) + 1,
                        dropped.topic,
                        self.stats.reliable_dropped,
                    )
            self._reliable.append(item)
        else:
            if topic in self._telemetry:
                self.stats.telemetry_superseded += 1
                self._telemetry[topic] = item  # keeps its place in line: it has waited longest
            else:
                if len(self._telemetry) >= self._telemetry_queue_max:
                    self._telemetry.popitem(last=False)
                    self.stats.telemetry_dropped += 1
                self._telemetry[topic] = item
        self._schedule_pump()

    def _schedule_pump(self) -> None:
        if self._pump_scheduled or self._loop is None or not self.connected:
            return
        self._pump_scheduled = True
        self._loop.call_soon(self._pump)

    def _next_outgoing(self) -> _Outgoing | None:
        if self._reliable:
            return self._reliable.popleft()
        if self._telemetry:
            return self._telemetry.popitem(last=False)[1]
        return None

    def _pump(self) -> None:
        """Hand queued messages to paho while connected, within the in-flight window."""
        self._pump_scheduled = False
        while self.connected and len(self._inflight) < self._max_inflight:
            item = self._next_outgoing()
            if item is None:
                return
            try:
                info = self._client.publish(
                    item.topic, item.payload, item.qos, item.retain, properties=self._properties(item.expiry_s)
                )
            except ValueError as exc:  # an invalid topic: a caller's bug, never worth a retry
                logger.error("mqtt: message on %r not publishable: %s", item.topic, exc)
                continue
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and item.qos > 0
            ):
                # With NO_CONN paho keeps a QoS 1 message and sends it after the reconnect.
                if item.qos > 0:
                    self._inflight[info.mid] = item
                else:
                    self.stats.published += 1
                continue
            logger.debug("mqtt: publish on %s deferred: %s", item.topic, paho.error_string(info.rc))
            if item.retain or item.qos > 0:
                self._reliable.appendleft(item)
            return

    def _properties(self, expiry_s: int | None) -> Properties | None:
        if not self._v5 or expiry_s is None:
            return None
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = int(expiry_s)
        return properties

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

    def _send_subscribe(self, topic_filter: str, subscription: _Subscription) -> None:
        subscription.acked.clear()
        subscription.sent_at_s = time.monotonic()
        try:
            rc, mid = self._client.subscribe(topic_filter, subscription.qos)
        except ValueError as exc:  # an invalid filter: a caller's bug
            logger.error("mqtt: cannot subscribe to %r: %s", topic_filter, exc)
            subscription.refused = True
            return
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._subscribe_mids[mid] = topic_filter
        else:
            logger.debug("mqtt: subscribe %s deferred: %s", topic_filter, paho.error_string(rc))

    async def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1, *, timeout_s: float = 5.0) -> bool:
        """Call ``handler`` for every message matching ``topic_filter``, across reconnects.

        Never raises for the broker's sake: while disconnected the subscription is recorded and
        sent on the next connect; when connected this waits up to ``timeout_s`` for the SUBACK.
        A SUBSCRIBE without an answer is sent again every ``subscribe_retry_s`` (logged).

        Returns
        -------
        bool
            True once the broker acknowledged the subscription; False if it has not (yet).
        """
        subscription = self._subscriptions.get(topic_filter)
        if subscription is None:
            subscription = self._subscriptions[topic_filter] = _Subscription(qos)
        subscription.handlers.append(handler)
        if not self.connected:
            return False
        # Sent again even for a known filter: the new handler gets the retained messages too.
        self._send_subscribe(topic_filter, subscription)
        return await self.wait_subscribed(topic_filter, timeout_s)

    async def wait_subscribed(self, topic_filter: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until the broker acknowledged ``topic_filter`` (this connection)."""
        subscription = self._subscriptions.get(topic_filter)
        if subscription is None:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await subscription.acked.wait()
        except TimeoutError:
            return False
        return True

    def subscribed(self, topic_filter: str) -> bool:
        """Whether the broker acknowledged ``topic_filter`` on the current connection."""
        subscription = self._subscriptions.get(topic_filter)
        return subscription is not None and subscription.acked.is_set()

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
        :class:`MqttNotConnectedError` while disconnected: the caller decides whether to retry.
        Code on the control path uses :meth:`publish_nowait` instead.
        """
        if not self.connected:
            raise MqttNotConnectedError(f"not connected to {self.host}:{self.port}")
        info = self._client.publish(topic, payload, qos, retain, properties=self._properties(expiry_s))
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttNotConnectedError(f"publish {topic}: {paho.error_string(info.rc)}")
        if qos > 0:
            await self._acknowledged(info.mid, timeout_s, f"publish {topic}")
