"""Local Controller mode: one charger's traffic relayed, frame by frame, to the operator's CSMS.

    relay = ChargerRelay(charger_id, "1.6", connection, endpoint, queue, link, authorizer, clock)
    session = V16Session(charger_id, relay.pipe, link, ...)      # reads and writes the pipe
    session._unique_id_generator = evdlm_unique_id
    await relay.run(session)                                     # until the charger disconnects

The charger keeps talking to evdlm, evdlm opens ``<upstream url>/<charger id>`` with the same
identity and subprotocol, and every frame goes where :mod:`relay_rules` says (its docstring has
the routing table). evdlm's session sees every charger CALL (the site state is kept as in
standalone mode) but its answers only reach the charger while the CSMS is unreachable; its own
calls (limits, configuration) carry ``evdlm-`` ids, so their answers come back to it.

CSMS unreachable (the connection fails or drops): evdlm answers locally (idTags through
:meth:`Authorizer.offline_decide`), queues the transaction messages (:class:`UpstreamQueue`,
persisted) and reconnects with backoff 1 s → 60 s; once connected it replays the queue in order
before forwarding anything new. A message in flight when the CSMS drops is answered locally and
queued, so it may reach the CSMS twice (at least once, never lost).

1.6 transaction ids while offline: StartTransaction is answered with a local id from
``2000000001`` up (per charger, persisted). When the replayed StartTransaction is answered, the
CSMS's id is recorded against the local one; from then on the charger's frames carrying the local
id (StopTransaction, MeterValues, queued or live) reach the CSMS with the CSMS's id and the CSMS's
RemoteStopTransaction reaches the charger with the local id. evdlm's own state keeps the id the
charger uses. Online, StartTransaction waits for the CSMS's answer and evdlm's session records
the CSMS's id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from evdlm.chargers.ocpp import relay_rules as rules
from evdlm.chargers.ocpp.parse import FrameRejected, load_frame, parse_iso_s
from evdlm.chargers.ocpp.upstream_queue import UpstreamQueue
from evdlm.core.clock import Clock

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from evdlm.chargers.ocpp.authorization import Authorizer
    from evdlm.chargers.ocpp.csms_merge import CsmsSmartCharging
    from evdlm.chargers.ocpp.link import ChargerLink
    from evdlm.config.models import OcppUpstream

LOG = logging.getLogger("evdlm.chargers.ocpp.relay")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
# A charger's first frames (its BootNotification) wait this long for the CSMS connection.
FIRST_CONNECT_WAIT_S = 5.0
# evdlm's session answers a charger CALL synchronously; this only guards against a bug.
SESSION_ANSWER_TIMEOUT_S = 5.0
MAX_FRAME_BYTES = 2**20

Frame = list[Any]


@dataclass(frozen=True)
class UpstreamEndpoint:
    """Where and how one charger's relay connects to the CSMS."""

    url: str
    subprotocol: str
    headers: dict[str, str]
    ssl_context: ssl.SSLContext | None
    answer_timeout_s: float


def upstream_ssl_context(config: OcppUpstream, base_dir: Path) -> ssl.SSLContext | None:
    if not config.url.startswith("wss://"):
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(base_dir / config.ca_file) if config.ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.cert_file is not None and config.key_file is not None:
        context.load_cert_chain(base_dir / config.cert_file, base_dir / config.key_file)
    return context


def upstream_endpoint(
    config: OcppUpstream,
    charger_id: str,
    subprotocol: str,
    password: str | None,
    ssl_context: ssl.SSLContext | None,
    answer_timeout_s: float,
) -> UpstreamEndpoint:
    headers: dict[str, str] = {}
    if password is not None:
        token = base64.b64encode(f"{charger_id}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    url = f"{config.url.rstrip('/')}/{quote(charger_id, safe='')}"
    return UpstreamEndpoint(url, subprotocol, headers, ssl_context, answer_timeout_s)


def _dumps(frame: Frame) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _text(raw: str | bytes) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8")


def _head_ok(decoded: Any) -> bool:
    return (
        isinstance(decoded, list)
        and len(decoded) >= 3
        and isinstance(decoded[0], int)
        and not isinstance(decoded[0], bool)
        and isinstance(decoded[1], str)
    )


def _is_call(decoded: Frame) -> bool:
    return decoded[0] == 2 and len(decoded) == 4 and isinstance(decoded[2], str) and isinstance(decoded[3], dict)


class SessionPipe:
    """What evdlm's session reads and writes instead of the charger's websocket."""

    def __init__(self, relay: ChargerRelay) -> None:
        self._relay = relay
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()

    async def recv(self) -> str | bytes:
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # every later recv ends too
            raise ConnectionClosedOK(None, None)
        return item

    async def send(self, message: str) -> None:
        await self._relay.from_session(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._relay.close_charger(code, reason)

    @property
    def remote_address(self) -> Any:
        return self._relay.charger.remote_address

    def feed(self, raw: str | bytes) -> None:
        self._inbox.put_nowait(raw)

    def end(self) -> None:
        self._inbox.put_nowait(None)


class _ReplayStalled(Exception):
    """The CSMS did not answer a replayed message: reconnect and replay again."""


@dataclass
class RelayTotals:
    """Local Controller counters over every charger since the process started (metrics)."""

    forwarded_up: int = 0  # charger CALLs forwarded live to the CSMS
    answered_locally: int = 0  # charger CALLs answered by evdlm (CSMS unreachable)
    replayed: int = 0  # queued messages delivered once the CSMS was back
    csms_calls: int = 0  # CSMS CALLs forwarded to the charger
    smart_charging_refused: int = 0  # CSMS smart-charging calls refused outright
    limits_notified: int = 0  # NotifyChargingLimit / ClearedChargingLimit sent upstream
    queue_dropped: int = 0  # queued messages dropped because a queue was full

    def add(self, relay: ChargerRelay) -> None:
        self.forwarded_up += relay.forwarded_up
        self.answered_locally += relay.answered_locally
        self.replayed += relay.replayed
        self.csms_calls += relay.csms_calls
        self.smart_charging_refused += relay.smart_charging_refused
        self.limits_notified += relay.limits_notified


class ChargerRelay:
    """One connected charger in Local Controller mode; see the module docstring."""

    def __init__(
        self,
        charger_id: str,
        version: str,
        charger: ServerConnection,
        endpoint: UpstreamEndpoint,
        queue: UpstreamQueue,
        link: ChargerLink,
        authorizer: Authorizer | None,
        clock: Clock,
        smart: CsmsSmartCharging | None = None,
    ) -> None:
        self.charger_id = charger_id
        # The CSMS's smart-charging calls, merged with the site's limits (None: refused outright).
        self.smart = smart
        self.version = version
        self.charger = charger
        self.endpoint = endpoint
        self.queue = queue
        self._link = link
        self._authorizer = authorizer
        self._clock = clock
        self.pipe = SessionPipe(self)
        self._session_answers: dict[str, asyncio.Future[Frame]] = {}
        self._upstream: ClientConnection | None = None
        self._online = False  # connected and the queue replayed: live frames go upstream
        self._upstream_pending: dict[str, asyncio.Future[tuple[Frame, str] | None]] = {}
        self._down_ids: dict[str, str] = {}  # rewritten CSMS call id → the CSMS's own
        self._call_order = asyncio.Lock()  # charger CALLs are handled (and queued) in arrival order
        self._first_attempt = asyncio.Event()
        # Set while no BootNotification of the charger awaits its answer: evdlm's session calls the
        # charger only once the charger has the (CSMS's) answer to its boot (1.6 §4.2, 2.0.1 B01).
        self._boot_answered = asyncio.Event()
        self._boot_answered.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        # Counters (diagnostics, tests, metrics).
        self.forwarded_up = 0  # charger CALLs forwarded live
        self.answered_locally = 0  # charger CALLs answered by evdlm (CSMS unreachable)
        self.replayed = 0
        self.csms_calls = 0  # CSMS CALLs forwarded to the charger
        self.smart_charging_refused = 0
        self.limits_notified = 0  # NotifyChargingLimit / ClearedChargingLimit sent to the CSMS

    @property
    def online(self) -> bool:
        return self._online

    # ------------------------------------------------------------------ lifetime

    async def run(self, session: Any) -> None:
        """Relay until the charger disconnects; then the CSMS connection is closed too."""
        upstream = asyncio.create_task(self._upstream_loop(), name=f"lc-upstream-{self.charger_id}")
        serving = asyncio.create_task(session.run(), name=f"lc-session-{self.charger_id}")
        if self.smart is not None:
            self._spawn(self._refresh_csms_limits(self.smart), "lc-csms-limits")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_attempt.wait(), FIRST_CONNECT_WAIT_S)
            try:
                async for raw in self.charger:
                    self._from_charger(raw)
            except ConnectionClosed:
                pass
        finally:
            self._closing = True
            self.pipe.end()
            upstream.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(upstream, *self._tasks, return_exceptions=True)
            try:
                await serving
            except Exception:
                LOG.exception("%s: session ended with an error", self.charger_id)

    async def close_charger(self, code: int = 1000, reason: str = "") -> None:
        await self.charger.close(code, reason)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=f"{name}-{self.charger_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error("%s: relay task failed", self.charger_id, exc_info=task.exception())

    # ------------------------------------------------------------------ charger → evdlm

    def _from_charger(self, raw: str | bytes) -> None:
        try:
            decoded = load_frame(raw)
        except FrameRejected:
            self.pipe.feed(raw)  # the session answers it (CALLERROR) or drops it, as in standalone
            return
        if not _head_ok(decoded):
            self.pipe.feed(raw)
            return
        unique_id = decoded[1]
        if decoded[0] == 2:
            if _is_call(decoded):
                self._spawn(self._charger_call(_text(raw), decoded), "lc-call")
            else:
                self.pipe.feed(raw)
        elif decoded[0] in (3, 4):
            if rules.is_evdlm_id(unique_id):
                self.pipe.feed(raw)  # answers one of evdlm's calls
            else:
                self._spawn(self._answer_up(_text(raw), decoded), "lc-answer")
        else:
            self.pipe.feed(raw)

    async def _answer_up(self, text: str, decoded: Frame) -> None:
        """The charger's answer to a CSMS call goes to the CSMS (its id restored if rewritten)."""
        original = self._down_ids.pop(decoded[1], None)
        if original is not None:
            text = _dumps([decoded[0], original, *decoded[2:]])
        upstream = self._upstream
        if upstream is None:
            LOG.info("%s: answer %r dropped: the CSMS that called is gone", self.charger_id, decoded[1])
            return
        with contextlib.suppress(ConnectionClosed):
            await upstream.send(text)

    async def _charger_call(self, text: str, decoded: Frame) -> None:
        async with self._call_order:
            action = decoded[2]
            if action != "BootNotification":
                await self._relay_call(text, decoded)
                return
            self._boot_answered.clear()
            try:
                await self._relay_call(text, decoded)
            finally:
                self._boot_answered.set()

    async def _relay_call(self, text: str, decoded: Frame) -> None:
        _, unique_id, action, payload = decoded
        answer: tuple[Frame, str] | None = None
        local: Frame | None = None
        upstream = self._upstream if self._online else None
        replied = False
        if upstream is not None:
            answer, local, replied = await self._forward_call(upstream, text, unique_id, action, payload)
        if answer is not None:
            if not replied:
                await self._to_charger(self._online_reply(unique_id, action, payload, local, answer))
            return
        # The CSMS is unreachable (or went while we waited): evdlm answers.
        local_tx: int | None = None
        if local is None:
            if self.version == "1.6" and action == "StartTransaction":
                local_tx = self.queue.next_local_transaction_id()
            local = await self._ask_session(text, unique_id, transaction_id=local_tx)
        kind = rules.queue_kind(self.version, action, payload)
        if kind is not None:
            self.queue.append(action, decoded, droppable=kind == "droppable", local_tx=local_tx)
        self.answered_locally += 1
        await self._to_charger(self._offline_reply(unique_id, action, payload, local))

    async def _forward_call(
        self, upstream: ClientConnection, text: str, unique_id: str, action: str, payload: dict[str, Any]
    ) -> tuple[tuple[Frame, str] | None, Frame | None, bool]:
        """(the CSMS's answer or None when it did not come, evdlm's session's answer, whether the
        CSMS's answer has already gone to the charger)."""
        rewritten = rules.rewrite_transaction_up(self.version, action, payload, self.queue.local_to_csms)
        if rewritten is not None:
            text = _dumps([2, unique_id, action, rewritten])
        pending: asyncio.Future[tuple[Frame, str] | None] = asyncio.get_running_loop().create_future()
        self._upstream_pending[unique_id] = pending
        try:
            await upstream.send(text)
        except ConnectionClosed:
            self._upstream_pending.pop(unique_id, None)
            return None, None, False
        self.forwarded_up += 1
        if self.version == "1.6" and action == "StartTransaction":
            # The session must record the transaction under the id the charger will use: the CSMS's.
            answer = await self._await_upstream(unique_id, pending)
            if answer is None or answer[0][0] != 3:
                return answer, None, False
            transaction_id = answer[0][2].get("transactionId") if isinstance(answer[0][2], dict) else None
            local = await self._ask_session(
                text, unique_id, transaction_id=transaction_id if isinstance(transaction_id, int) else None
            )
            return answer, local, False
        if rules.presented_id_tag(self.version, action, payload) is not None:
            # The answer may need evdlm's own (a site restriction blocks the idTag): wait for both.
            local = await self._ask_session(text, unique_id)
            return await self._await_upstream(unique_id, pending), local, False
        # Nothing in the answer depends on evdlm's: the CSMS's answer goes to the charger as soon as it
        # comes, while the session listens in (its schema checks and state update cost no latency).
        listening = asyncio.create_task(self._ask_session(text, unique_id))
        answer = await self._await_upstream(unique_id, pending)
        if answer is None:
            return None, await listening, False
        await self._to_charger(self._online_reply(unique_id, action, payload, None, answer))
        return answer, await listening, True

    async def _await_upstream(
        self, unique_id: str, pending: asyncio.Future[tuple[Frame, str] | None]
    ) -> tuple[Frame, str] | None:
        try:
            return await asyncio.wait_for(pending, self.endpoint.answer_timeout_s)
        except TimeoutError:
            LOG.warning(
                "%s: no CSMS answer to %s within %s s", self.charger_id, unique_id, self.endpoint.answer_timeout_s
            )
            return None
        finally:
            self._upstream_pending.pop(unique_id, None)

    async def _ask_session(self, text: str, unique_id: str, *, transaction_id: int | None = None) -> Frame | None:
        """Feed a charger CALL to evdlm's session (listening in) and return its answer, unsent.

        ``transaction_id``: the id a 1.6 StartTransaction is recorded under (the CSMS's, or a
        local one offline) instead of the link's own counter.
        """
        answer: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._session_answers[unique_id] = answer
        if transaction_id is not None:
            # The session takes the id from link.next_transaction_id() while handling this frame.
            setattr(self._link, "next_transaction_id", lambda: transaction_id)  # noqa: B010
        try:
            self.pipe.feed(text)
            return await asyncio.wait_for(answer, SESSION_ANSWER_TIMEOUT_S)
        except TimeoutError:
            LOG.error("%s: evdlm's session did not answer %s", self.charger_id, unique_id)
            return None
        finally:
            self._session_answers.pop(unique_id, None)
            if transaction_id is not None:
                self._link.__dict__.pop("next_transaction_id", None)

    def _restricted(self) -> bool:
        return bool(self._link.restrictions())

    def _online_reply(
        self, unique_id: str, action: str, payload: dict[str, Any], local: Frame | None, answer: tuple[Frame, str]
    ) -> str:
        """The CSMS's answer, as it sent it, except that a site restriction still blocks."""
        frame, text = answer
        if frame[0] != 3 or not isinstance(frame[2], dict):
            return text
        tag = rules.presented_id_tag(self.version, action, payload)
        status = rules.answer_status(self.version, frame[2])
        if tag is not None and status is not None:
            self._remember(tag, frame[2])
        if (
            local is not None
            and local[0] == 3
            and status not in (None, "Blocked")
            and rules.site_blocks(self.version, local[2], self._restricted())
        ):
            return _dumps([3, unique_id, rules.with_status(self.version, frame[2], "Blocked")])
        return text

    def _remember(self, id_tag: str, answer_payload: dict[str, Any]) -> None:
        if self._authorizer is None:
            return
        info = answer_payload.get(rules.id_info_key(self.version))
        if not isinstance(info, dict):
            return
        if self.version == "1.6":
            expiry = info.get("expiryDate")
            parent = info.get("parentIdTag")
        else:
            expiry = info.get("cacheExpiryDateTime")
            group = info.get("groupIdToken")
            parent = group.get("idToken") if isinstance(group, dict) else None
        self._authorizer.remember(
            id_tag,
            str(info["status"]),
            parse_iso_s(expiry) if isinstance(expiry, str) else None,
            self._clock.now_s(),
            parent if isinstance(parent, str) else None,
        )

    def _offline_reply(self, unique_id: str, action: str, payload: dict[str, Any], local: Frame | None) -> str:
        if local is None:
            return _dumps([4, unique_id, "InternalError", "no answer available", {}])
        if local[0] == 3 and isinstance(local[2], dict):
            tag = rules.presented_id_tag(self.version, action, payload)
            if (
                tag is not None
                and rules.answer_status(self.version, local[2]) is not None
                and not rules.site_blocks(self.version, local[2], self._restricted())
            ):
                status = self._offline_id_tag_status(tag)
                if status is not None:
                    return _dumps([3, unique_id, rules.with_status(self.version, local[2], status)])
        return _dumps(local)

    def _offline_id_tag_status(self, id_tag: str) -> str | None:
        """The answer for an idTag while the CSMS is unreachable (``ocpp.authorization``'s
        offline policy); None keeps evdlm's session's own answer."""
        if self._authorizer is None:
            return None
        return self._authorizer.offline_decide(id_tag, self._clock.now_s()).status

    async def from_session(self, message: str) -> None:
        """A frame evdlm's session wrote: its own calls go to the charger, its answers to us."""
        decoded = json.loads(message)
        if decoded[0] in (3, 4):
            answer = self._session_answers.get(decoded[1])
            if answer is not None and not answer.done():
                answer.set_result(decoded)
                return
        elif decoded[0] == 2:
            await self._boot_answered.wait()
        await self._to_charger(message)

    async def _to_charger(self, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.charger.send(text)

    # ------------------------------------------------------------------ CSMS → evdlm

    async def _upstream_loop(self) -> None:
        delay = BACKOFF_FIRST_S
        failures = 0
        while not self._closing:
            try:
                upstream = await connect(
                    self.endpoint.url,
                    subprotocols=[Subprotocol(self.endpoint.subprotocol)],
                    additional_headers=self.endpoint.headers,
                    ssl=self.endpoint.ssl_context,
                    compression=None,
                    open_timeout=10,
                    max_size=MAX_FRAME_BYTES,
                    logger=logging.getLogger("evdlm.chargers.ocpp.websockets"),
                )
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                failures += 1
                log = LOG.warning if failures == 1 else LOG.debug
                log("%s: CSMS unreachable (%s); retrying in %.0f s", self.charger_id, exc, delay)
                self._first_attempt.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if upstream.subprotocol != self.endpoint.subprotocol:
                LOG.error("%s: the CSMS did not accept %s", self.charger_id, self.endpoint.subprotocol)
                await upstream.close()
                self._first_attempt.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            failures = 0
            delay = BACKOFF_FIRST_S
            LOG.info("%s: connected to the CSMS (%d queued)", self.charger_id, len(self.queue))
            self._upstream = upstream
            reader = asyncio.create_task(self._read_upstream(upstream), name=f"lc-read-{self.charger_id}")
            try:
                await self._replay(upstream)
                self._online = True
                self._first_attempt.set()
                await reader
            except (ConnectionClosed, _ReplayStalled):
                pass
            finally:
                self._online = False
                self._upstream = None
                reader.cancel()
                self._fail_pending()
                self._down_ids.clear()
                await upstream.close()
            if not self._closing:
                LOG.warning("%s: CSMS connection lost; reconnecting", self.charger_id)
                await asyncio.sleep(delay)

    def _fail_pending(self) -> None:
        for pending in self._upstream_pending.values():
            if not pending.done():
                pending.set_result(None)
        self._upstream_pending.clear()

    async def _replay(self, upstream: ClientConnection) -> None:
        """Send the queue in order, each after the previous one's answer."""
        while (item := self.queue.first()) is not None:
            _, unique_id, action, payload = item.frame
            rewritten = rules.rewrite_transaction_up(self.version, action, payload, self.queue.local_to_csms)
            pending: asyncio.Future[tuple[Frame, str] | None] = asyncio.get_running_loop().create_future()
            self._upstream_pending[unique_id] = pending
            await upstream.send(_dumps([2, unique_id, action, rewritten if rewritten is not None else payload]))
            answer = await self._await_upstream(unique_id, pending)
            if answer is None:
                raise _ReplayStalled
            frame = answer[0]
            if frame[0] == 3 and isinstance(frame[2], dict):
                csms_tx = frame[2].get("transactionId")
                if item.local_tx is not None and isinstance(csms_tx, int):
                    self.queue.map_transaction(item.local_tx, csms_tx)
                    LOG.info("%s: local transaction %d is the CSMS's %d", self.charger_id, item.local_tx, csms_tx)
            else:
                LOG.warning("%s: the CSMS refused the replayed %s: %s", self.charger_id, action, frame[2:])
            self.queue.done(item.seq)
            self.replayed += 1

    async def _read_upstream(self, upstream: ClientConnection) -> None:
        try:
            async for raw in upstream:
                self._from_csms(raw)
        except ConnectionClosed:
            pass
        finally:
            self._fail_pending()

    def _from_csms(self, raw: str | bytes) -> None:
        try:
            decoded = load_frame(raw)
        except FrameRejected as rejected:
            LOG.warning("%s: frame from the CSMS dropped: %s", self.charger_id, rejected.reason)
            return
        if not _head_ok(decoded):
            LOG.warning("%s: frame from the CSMS dropped: not OCPP-J", self.charger_id)
            return
        if decoded[0] == 2 and _is_call(decoded):
            self._spawn(self._csms_call(_text(raw), decoded), "lc-csms-call")
        elif decoded[0] in (3, 4):
            pending = self._upstream_pending.pop(decoded[1], None)
            if pending is not None and not pending.done():
                pending.set_result((decoded, _text(raw)))
            else:
                LOG.info("%s: CSMS answer %r dropped: nothing awaits it", self.charger_id, decoded[1])
        else:
            LOG.warning("%s: frame from the CSMS dropped: not a CALL, CALLRESULT or CALLERROR", self.charger_id)

    async def _csms_call(self, text: str, decoded: Frame) -> None:
        _, unique_id, action, payload = decoded
        if action in rules.SMART_CHARGING:
            reply, reports = self._on_csms_smart_charging(action, decoded)
            upstream = self._upstream
            if upstream is not None:
                with contextlib.suppress(ConnectionClosed):
                    await upstream.send(reply)
                    for report in reports:  # 2.0.1 GetChargingProfiles: the reports follow the answer
                        await upstream.send(_dumps([2, rules.evdlm_unique_id(), "ReportChargingProfiles", report]))
            return
        changed = False
        csms_to_local = {csms: local for local, csms in self.queue.local_to_csms.items()}
        rewritten = rules.rewrite_transaction_down(self.version, action, payload, csms_to_local)
        if rewritten is not None:
            payload, changed = rewritten, True
        stripped = rules.strip_csms_profile(action, payload)
        if stripped is not None:
            LOG.warning("%s: the CSMS's %s carried a charging profile: removed", self.charger_id, action)
            payload, changed = stripped, True
        if rules.is_evdlm_id(unique_id):
            replacement = rules.csms_id_for_charger()
            self._down_ids[replacement] = unique_id
            unique_id, changed = replacement, True
        self.csms_calls += 1
        await self._to_charger(_dumps([2, unique_id, action, payload]) if changed else text)

    def _on_csms_smart_charging(self, action: str, message: Frame) -> tuple[str, list[dict[str, Any]]]:
        """A CSMS smart-charging call (Set/ClearChargingProfile, GetCompositeSchedule,
        GetChargingProfiles): answered here, never forwarded, so the site's limits stay evdlm's.

        With a :class:`CsmsSmartCharging` the CSMS's profiles are kept and merged (their limit is
        an upper bound in the problem; the composite answered is what the charger will really do);
        without one, or for an action this OCPP version does not have, the answer is a refusal.
        Returns the reply frame and any ReportChargingProfiles payloads to send after it.
        """
        unique_id = message[1]
        if self.smart is not None and (action != "GetChargingProfiles" or self.version != "1.6"):
            payload = message[3] if isinstance(message[3], dict) else {}
            answer, reports = self.smart.answer(action, payload, self._clock.now_s())
            LOG.info(
                "%s: the CSMS's %s answered %s by evdlm (merged, not forwarded)",
                self.charger_id,
                action,
                answer.get("status"),
            )
            return _dumps([3, unique_id, answer]), reports
        self.smart_charging_refused += 1
        refusal = rules.conservative_smart_charging_answer(self.version, action)
        LOG.info("%s: the CSMS's %s answered %s by evdlm, not forwarded", self.charger_id, action, refusal)
        if refusal is None:
            return _dumps([4, unique_id, "NotImplemented", f"{action} is not an OCPP {self.version} action", {}]), []
        return _dumps([3, unique_id, refusal]), []

    async def _refresh_csms_limits(self, smart: CsmsSmartCharging) -> None:
        """The CSMS's limit now on each EVSE, once a second (its schedules move with time)."""
        while True:
            try:
                notices = smart.refresh(self._clock.now_s(), notify=self._online)
            except Exception:  # a bad stored profile must not stop the relay: log, keep the last limits
                LOG.exception("%s: CSMS limits not refreshed", self.charger_id)
                notices = []
            upstream = self._upstream
            for action, payload in notices:  # 2.0.1: the site's limit below the CSMS's, told upstream
                if upstream is None:
                    break
                with contextlib.suppress(ConnectionClosed):
                    await upstream.send(_dumps([2, rules.evdlm_unique_id(), action, payload]))
                    self.limits_notified += 1
            await self._clock.sleep(1.0)
