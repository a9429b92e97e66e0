"""Demand response over MQTT: the engine's I/O, in the DR service's own tasks.

Topics (specs/dr-mqtt.md): ``dr/{site}/events/+`` in, ``dr/{site}/responses/{id}`` out
(retained), ``dr/{site}/bridge/status`` and ``/heartbeat`` in, ``dlm/{site}/dr/effective``
out (retained).

The control cycle never waits on DR or MQTT I/O. It calls :meth:`DrService.effective` (no
await, no I/O, O(1)), which returns the snapshot the DR task computed last; only a snapshot
older than ``snapshot_max_age_s`` (the DR task starved or gone) is recomputed there, from the
engine, without side effects. Everything else runs in the service's named tasks:

- ``dr:{site}:intake`` handles queued messages in slices of at most ``slice_budget_s`` (then
  yields to the loop, so a flood delays a cycle by one slice at most), ticks the engine every
  ``tick_period_s``, recomputes the snapshot and queues responses (reliable: kept until the
  broker has them) and the effective state (telemetry: latest only) on the client without
  waiting (:meth:`MqttClient.publish_nowait`);
- ``dr:{site}:persist`` writes the state file at most once per ``persist_interval_s``, in a
  writer thread, serialising only the events that changed since the last write;
- ``dr:{site}:subscribe`` subscribes (retried by the client, never fatal) and decides when the
  DR state is known.

Intake is bounded: message handlers only enqueue (O(1)). A message over ``max_message_bytes``
is answered REJECTED without being kept; each event topic has a token bucket
(``topic_burst``, ``topic_rate_per_s``), and the queue a cap in messages and bytes; what
exceeds them is dropped, counted (:class:`IntakeStats`) and logged, not processed.

Start-up: persisted events are restored first (:func:`evdlm.state_files.load_state`: an
unusable file is set aside, one warning, the service starts without it). Until the DR state is
*known* the snapshot is in mode ``STARTING``: every program is taken as in FAILSAFE (its
failsafe limit, never above the last open-ended limit received) and a program without a
failsafe limit, or a site without programs, is capped at the site's fallback import limit.
The DR state is known when the broker has acknowledged the subscription to
``dr/{site}/events/+`` and the retained events that follow it have been handled (the intake
queue empty and no event for ``known_quiet_s``, or ``known_max_wait_s`` after the SUBACK,
whichever comes first); or when rule 7 judges the channel stale (no heartbeat for 3 × its
interval since the start), from which point the engine's FAILSAFE governs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evdlm.config.models import SiteConfig
from evdlm.core.clock import Clock
from evdlm.core.lifetime import StartStop
from evdlm.core.site_settings import SiteSettings
from evdlm.dr.engine import DrEngine, Effective, Response, event_state
from evdlm.dr.messages import MAX_MESSAGE_BYTES
from evdlm.mqtt.client import MqttClient, MqttMessage
from evdlm.mqtt.rate_limit import TopicRateLimit
from evdlm.observability import LogThrottle
from evdlm.state_files import load_state, write_atomically

log = logging.getLogger("evdlm.dr")

MAX_EVENT_ID_CHARS = 128  # as Event.id: a longer topic level cannot name an event we would store


@dataclass(frozen=True)
class DrBounds:
    """Limits of the DR intake, store and timing (defaults suit any real DR traffic)."""

    max_message_bytes: int = MAX_MESSAGE_BYTES
    intake_max_messages: int = 4096
    intake_max_bytes: int = 16 * 1024 * 1024
    topic_burst: float = 5.0  # messages a single event topic may send at once...
    topic_rate_per_s: float = 1.0  # ...and then this many per second
    topic_buckets_max: int = 4096  # topics tracked by the rate limit (least recently seen forgotten)
    max_events_total: int = 256
    max_events_per_program: int = 64
    tick_period_s: float = 0.25
    slice_budget_s: float = 0.005
    persist_interval_s: float = 1.0
    snapshot_max_age_s: float = 2.0
    known_quiet_s: float = 0.5
    known_max_wait_s: float = 10.0


@dataclass
class IntakeStats:
    """What the intake did with DR messages (metrics, tests, benchmarks)."""

    received: int = 0
    handled: int = 0
    too_large: int = 0  # answered REJECTED without parsing
    rate_limited: int = 0  # dropped: the topic's token bucket was empty
    queue_full: int = 0  # dropped: the intake queue was at its cap
    bad_topic: int = 0  # dropped: no usable event id in the topic
    persisted: int = 0  # state file writes
    persist_failures: int = 0


@dataclass(frozen=True)
class _Queued:
    event_id: str
    payload: bytes | None  # None: too large, not kept
    size: int


def _tighter(now_w: float | None, soon_w: float | None) -> float | None:
    return soon_w if now_w is None else now_w if soon_w is None else min(now_w, soon_w)


def _write_state(path: Path, head: str, fragments: Sequence[str], tail: str) -> None:
    """Join and write the state file (in the writer thread: the join is O(file size))."""
    write_atomically(path, head + ",\n".join(fragments) + tail)


class DrService(StartStop):
    """The DR engine behind MQTT; ``async with`` runs its tasks. See the module docstring."""

    def __init__(
        self,
        config: SiteConfig,
        client: MqttClient,
        clock: Clock,
        state_file: Path,
        *,
        bounds: DrBounds | None = None,
    ) -> None:
        assert config.demand_response is not None
        self.bounds = bounds or DrBounds()
        # Cars take a settle time to follow: a lower limit known in advance is applied that early,
        # so the site is under it when it takes effect.
        self.lead_s = config.control.settle_time_s + config.control.cycle_period_s
        self.fallback_import_w = SiteSettings.from_config(config).fallback_import_limit_w
        self.site_id = config.site.id
        self.client = client
        self.clock = clock
        self.state_file = state_file
        resources = {charger.id for charger in config.chargers} | {circuit.id for circuit, _ in config.iter_circuits()}
        self.engine = DrEngine(
            site_id=self.site_id,
            resources=frozenset(resources),
            programs={program.id: program for program in config.demand_response.programs},
            started_s=clock.now_s(),
            max_events_total=self.bounds.max_events_total,
            max_events_per_program=self.bounds.max_events_per_program,
        )
        self.stats = IntakeStats()
        self.events_filter = f"dr/{self.site_id}/events/+"
        self.known = False
        self._intake: deque[_Queued] = deque()
        self._intake_bytes = 0
        self._rate_limit = TopicRateLimit(
            self.bounds.topic_burst, self.bounds.topic_rate_per_s, self.bounds.topic_buckets_max
        )
        self._wake = asyncio.Event()
        self._persist_due = asyncio.Event()
        self._fragments: dict[str, str] = {}  # event id → its persisted JSON
        self._snapshot: tuple[float, Effective] | None = None
        self._last_effective: dict[str, Any] | None = None
        self._last_arrival_s = 0.0  # monotonic time of the last event message
        # One warning per kind per 10 s: a flood is visible without flooding the log.
        self._warnings = LogThrottle(log, clock, 10.0)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"evdlm-dr-{self.site_id}")
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started_mono_s = time.monotonic()

    # ------------------------------------------------------------------ lifetime (``async with``: StartStop)

    async def start(self) -> None:
        """Restore persisted events, then run the tasks (subscriptions included) in the background."""
        self._restore()
        self._refresh(self.clock.now_s())
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        for coro, name in (
            (self._run(), "intake"),
            (self._persist_loop(), "persist"),
            (self._subscribe_and_learn(), "subscribe"),
        ):
            self._tasks.append(self._tg.create_task(coro, name=f"dr:{self.site_id}:{name}"))

    async def stop(self) -> None:
        """Stop the tasks and write what changed since the last write."""
        for task in self._tasks:
            task.cancel()
        if self._tg is not None:
            tg, self._tg = self._tg, None
            await tg.__aexit__(None, None, None)
        self._tasks.clear()
        for topic_filter, handler in self._handlers():
            await self.client.unsubscribe(topic_filter, handler)
        if self.engine.changed or self.engine.meta_changed:
            await self._write()
        self._writer.shutdown(wait=True)

    def _handlers(self) -> list[tuple[str, Any]]:
        prefix = f"dr/{self.site_id}"
        return [
            (f"{prefix}/bridge/status", self._on_bridge_status),
            (f"{prefix}/bridge/heartbeat", self._on_heartbeat),
            (self.events_filter, self._on_event),
        ]

    def _restore(self) -> None:
        def parse(data: Any) -> int:
            restored = self.engine.parse_state(data)
            fragments = {
                event_id: json.dumps(event_state(stored), allow_nan=False, separators=(",", ":"))
                for event_id, stored in restored.events.items()
            }
            self.engine.apply_restored(restored)
            self._fragments = fragments
            return len(restored.events)

        count = load_state(self.state_file, parse)
        if count:
            log.info("DR: %d event(s) restored from %s", count, self.state_file)
        self.engine.take_changes()  # what is on disk is not a change

    # ------------------------------------------------------------------ the cycle's view

    def effective(self, now_s: float) -> Effective:
        """The limits DR asks of the site now: the DR task's last snapshot (no I/O, O(1)).

        A limit known ``lead_s`` ahead is already in force (cars take a settle time to follow).
        A snapshot older than ``snapshot_max_age_s`` (or from the future: a clock step) is
        recomputed from the engine here, without side effects.
        """
        snapshot = self._snapshot
        if snapshot is not None and 0.0 <= now_s - snapshot[0] <= self.bounds.snapshot_max_age_s:
            return snapshot[1]
        effective = self._compute(now_s)
        self._snapshot = (now_s, effective)
        return effective

    def _compute(self, now_s: float) -> Effective:
        starting = None if self.known else self.fallback_import_w
        effective = self.engine.effective(now_s, starting_fallback_w=starting)
        upcoming = self.engine.effective(now_s + self.lead_s, starting_fallback_w=starting)
        return replace(
            effective,
            import_limit_w=_tighter(effective.import_limit_w, upcoming.import_limit_w),
            export_limit_w=_tighter(effective.export_limit_w, upcoming.export_limit_w),
        )

    def _refresh(self, now_s: float) -> None:
        """New snapshot; the effective state published when it changed; persistence woken."""
        effective = self._compute(now_s)
        self._snapshot = (now_s, effective)
        summary = effective.as_json(now_s)
        comparable = {key: value for key, value in summary.items() if key != "at"}
        if comparable != self._last_effective:
            self._last_effective = comparable
            self._publish(f"dlm/{self.site_id}/dr/effective", summary, reliable=False)
        if self.engine.changed or self.engine.meta_changed:
            self._persist_due.set()

    # ------------------------------------------------------------------ intake (MQTT callbacks: O(1))

    def _on_event(self, message: MqttMessage) -> None:
        self.stats.received += 1
        now_s = time.monotonic()
        self._last_arrival_s = now_s
        event_id = message.topic.rsplit("/", 1)[-1]
        if not event_id or len(event_id) > MAX_EVENT_ID_CHARS:
            self.stats.bad_topic += 1
            self._warnings.warning(
                "bad_topic", "DR message on %.160s dropped: no usable event id in the topic", message.topic
            )
            return
        if not self._rate_limit.allow(message.topic, now_s):
            self.stats.rate_limited += 1
            self._warnings.warning(
                "rate",
                "DR messages on %s beyond %.0f at once / %.1f per s dropped (%d so far)",
                message.topic,
                self.bounds.topic_burst,
                self.bounds.topic_rate_per_s,
                self.stats.rate_limited,
            )
            return
        size = len(message.payload)
        too_large = size > self.bounds.max_message_bytes
        kept = 0 if too_large else size
        if (
            len(self._intake) >= self.bounds.intake_max_messages
            or self._intake_bytes + kept > self.bounds.intake_max_bytes
        ):
            self.stats.queue_full += 1
            self._warnings.warning(
                "queue",
                "DR intake full (%d messages, %d bytes): message on %s dropped (%d so far)",
                len(self._intake),
                self._intake_bytes,
                message.topic,
                self.stats.queue_full,
            )
            return
        if too_large:
            self.stats.too_large += 1
        self._intake.append(_Queued(event_id, None if too_large else message.payload, size))
        self._intake_bytes += kept
        self._wake.set()

    def _on_bridge_status(self, message: MqttMessage) -> None:
        self.engine.bridge_status(message.payload, self.clock.now_s())
        self._wake.set()

    def _on_heartbeat(self, message: MqttMessage) -> None:
        self.engine.heartbeat(self.clock.now_s())

    # ------------------------------------------------------------------ the DR task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.bounds.tick_period_s):
                    await self._wake.wait()
            self._wake.clear()
            await self._handle_queued()
            self._tick()

    async def _handle_queued(self) -> None:
        slice_start = time.perf_counter()
        while self._intake:
            item = self._intake.popleft()
            self._intake_bytes -= 0 if item.payload is None else item.size
            now_s = self.clock.now_s()
            if item.payload is None:
                responses = self.engine.refuse(
                    item.event_id,
                    f"message of {item.size} bytes is over the {self.bounds.max_message_bytes}-byte limit",
                    now_s,
                )
            else:
                responses = self.engine.receive(item.event_id, item.payload, now_s)
            self.stats.handled += 1
            self._respond(responses)
            if time.perf_counter() - slice_start >= self.bounds.slice_budget_s:
                self._refresh(now_s)
                await asyncio.sleep(0)  # the cycle and the socket get the loop between slices
                slice_start = time.perf_counter()

    def _tick(self) -> None:
        now_s = self.clock.now_s()
        self._respond(self.engine.tick(now_s))
        if not self.known and self.engine.channel_stale(now_s):
            self.known = True
            log.warning(
                "DR state not known after %.0f s (no retained events handled); the stale-channel failsafe governs",
                time.monotonic() - self._started_mono_s,
            )
        self._refresh(now_s)

    def _respond(self, responses: list[Response]) -> None:
        for response in responses:
            if response.payload:
                self._publish(f"dr/{self.site_id}/responses/{response.event_id}", response.payload, reliable=True)

    def _publish(self, topic: str, document: dict[str, Any], *, reliable: bool) -> None:
        try:
            payload = json.dumps(document, allow_nan=False)
        except ValueError as exc:  # never with validated input: say so rather than send invalid JSON
            log.error("DR: not published on %s: %s", topic, exc)
            return
        self.client.publish_nowait(topic, payload, qos=1, retain=True, reliable=reliable)

    # ------------------------------------------------------------------ when the DR state is known

    async def _subscribe_and_learn(self) -> None:
        # Status and heartbeat first: small, and not stuck behind a flood of retained events.
        for topic_filter, handler in self._handlers():
            await self.client.subscribe(topic_filter, handler, qos=0 if topic_filter.endswith("heartbeat") else 1)
        while not self.client.subscribed(self.events_filter):
            await self.client.wait_subscribed(self.events_filter, 1.0)
            if self.known:
                return
        suback_s = time.monotonic()
        self._last_arrival_s = max(self._last_arrival_s, suback_s)
        while not self.known:
            now_s = time.monotonic()
            quiet = not self._intake and now_s - self._last_arrival_s >= self.bounds.known_quiet_s
            if quiet or now_s - suback_s >= self.bounds.known_max_wait_s:
                self.known = True
                log.info(
                    "DR state known %.2f s after start: %d event(s) stored%s",
                    now_s - self._started_mono_s,
                    len(self.engine.events),
                    "" if quiet else " (retained events still arriving; the rest handled as they come)",
                )
                self._wake.set()
                return
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ persistence (rule 9)

    async def _persist_loop(self) -> None:
        while True:
            await self._persist_due.wait()
            self._persist_due.clear()
            await self._write()
            await asyncio.sleep(self.bounds.persist_interval_s)  # at most one write per interval

    async def _write(self) -> None:
        changed, meta_changed = self.engine.take_changes()
        if not changed and not meta_changed:
            return
        for event_id in changed:
            stored = self.engine.events.get(event_id)
            if stored is None:
                self._fragments.pop(event_id, None)
                continue
            try:
                self._fragments[event_id] = json.dumps(event_state(stored), allow_nan=False, separators=(",", ":"))
            except ValueError as exc:  # validated input cannot get here; never write invalid JSON
                log.error("DR event %s not persisted: %s", event_id, exc)
        meta = json.dumps(self.engine.meta_state(), allow_nan=False)
        head = '{"version":1,"events":[\n'
        tail = "]," + meta[1:]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._writer, _write_state, self.state_file, head, list(self._fragments.values()), tail
            )
            self.stats.persisted += 1
        except OSError as exc:
            self.stats.persist_failures += 1
            self._warnings.warning("persist", "DR state not persisted to %s: %s (retrying)", self.state_file, exc)
            self.engine.meta_changed = True  # try again next interval; the fragments are current
            self._persist_due.set()
