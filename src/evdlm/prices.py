"""The dynamic price feed over MQTT: its intake, its file and the schedule the cycle reads.

The message and its checks are pure (:mod:`evdlm.core.price_feed`); the prices in force are a
frozen :class:`~evdlm.core.tariff.PriceSchedule` (the config's table with the feed's slots laid
over it). The cycle and the horizon planner call :meth:`PriceFeedService.schedule` (no await, no
I/O, O(1)) and never wait on the feed.

Intake is bounded: the MQTT handler only checks the size, takes a token from the topic's bucket
and keeps the message as the one pending (a newer message supersedes a pending one: the feed
is latest-wins); the service's task parses it in a worker thread. A refused message changes
nothing (the feed in force stays) and is logged with its reason and counted
(``evdlm_price_feed_messages{outcome}``). The last accepted message is written to
``price_feed.state_file`` so a restart has the prices even before the broker answers; the
broker's retained message, when there is one, replaces it on subscribe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evdlm import strict_json
from evdlm.config.models import SiteConfig
from evdlm.core.clock import Clock
from evdlm.core.lifetime import StartStop
from evdlm.core.price_feed import MAX_MESSAGE_BYTES, PriceFeedError, parse_price_feed
from evdlm.core.tariff import PriceSchedule, PriceSlot
from evdlm.mqtt.client import MqttClient, MqttMessage
from evdlm.mqtt.rate_limit import TopicRateLimit
from evdlm.observability import LogThrottle, Metrics
from evdlm.state_files import load_state, set_aside, write_atomically

log = logging.getLogger("evdlm.prices")

STATE_FORMAT = 1
COVERAGE_CHECK_S = 60.0


@dataclass(frozen=True)
class PriceFeedBounds:
    burst: float = 3.0  # messages at once on the feed's topic...
    rate_per_s: float = 0.1  # ...then one per 10 s (a day-ahead feed publishes a few times a day)
    max_message_bytes: int = MAX_MESSAGE_BYTES


def _stored(data: Any) -> bytes:
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT or not isinstance(data.get("message"), dict):
        raise ValueError("not a price feed state file of format 1")
    return strict_json.dumps(data["message"]).encode()


class PriceFeedService(StartStop):
    """The prices in force for one site; see the module docstring."""

    def __init__(
        self,
        config: SiteConfig,
        client: MqttClient | None,
        clock: Clock,
        state_dir: Path | None = None,
        *,
        metrics: Metrics | None = None,
        bounds: PriceFeedBounds | None = None,
    ) -> None:
        tariffs = config.tariffs
        if tariffs is None:
            raise ValueError("a price feed needs the tariffs section")
        feed = tariffs.price_feed
        self.client = client
        self.clock = clock
        self.metrics = metrics
        self.bounds = bounds or PriceFeedBounds()
        self.topic = feed.topic.replace("{site}", config.site.id) if feed is not None else None
        self.state_file = state_dir / feed.state_file if feed is not None and state_dir is not None else None
        self.warn_ahead_s = (feed.warn_ahead_h if feed is not None else 0.0) * 3600.0
        self.currency = tariffs.currency
        self._schedule = PriceSchedule(tariffs, config.site.timezone)
        self.outcomes: Counter[str] = Counter()
        self._pending: MqttMessage | None = None
        self._wake = asyncio.Event()
        self._rate_limit = TopicRateLimit(self.bounds.burst, self.bounds.rate_per_s, 1)
        self._warnings = LogThrottle(log, clock, 300.0)
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def for_config(
        config: SiteConfig, client: MqttClient | None, clock: Clock, state_dir: Path | None, metrics: Metrics | None
    ) -> PriceFeedService | None:
        """The site's prices: the table alone, or with the feed; None without tariffs."""
        if config.tariffs is None:
            return None
        feed = config.tariffs.price_feed
        use_feed = feed is not None and feed.enabled and client is not None
        return PriceFeedService(
            config, client if use_feed else None, clock, state_dir if use_feed else None, metrics=metrics
        )

    def apply_config(self, config: SiteConfig) -> None:
        """A reloaded config's table (the feed's slots stay; its topic is the one subscribed at start)."""
        if config.tariffs is not None:
            self._schedule = PriceSchedule(config.tariffs, config.site.timezone, self._schedule.slots)

    # ------------------------------------------------------------------ the cycle's side (no I/O)

    def schedule(self) -> PriceSchedule:
        """The prices in force (frozen; replaced whole when a feed message is accepted)."""
        return self._schedule

    # ------------------------------------------------------------------ intake (callback: O(1))

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        if self.metrics is not None:
            self.metrics.price_feed_messages.labels(site=self.metrics.site, outcome=outcome).inc()

    def _on_message(self, message: MqttMessage) -> None:
        if len(message.payload) > self.bounds.max_message_bytes:
            self._count("too_large")
            self._warnings.warning(
                "too_large",
                "price feed: a message of %d bytes on %s is over %d; refused",
                len(message.payload),
                message.topic,
                self.bounds.max_message_bytes,
            )
            return
        # Retained messages arrive on every (re)subscribe: they pass the bucket (they are the state).
        if not message.retain and not self._rate_limit.allow(message.topic, self.clock.now_s()):
            self._count("rate_limited")
            self._warnings.warning(
                "rate_limited", "price feed: messages on %s faster than one per 10 s; dropped", message.topic
            )
            return
        if self._pending is not None:
            self._count("superseded")
        self._pending = message
        self._wake.set()

    # ------------------------------------------------------------------ the service's task

    def accept(self, payload: bytes, *, origin: str) -> bool:
        """Check ``payload`` and, if good, make its slots the feed's."""
        return self._take(self._parse(payload), origin=origin)

    def _parse(self, payload: bytes) -> tuple[PriceSlot, ...] | PriceFeedError:
        """The message's slots or why not (pure: the task runs it in a worker thread)."""
        try:
            return parse_price_feed(payload, currency=self.currency, now_s=self.clock.now_s())
        except PriceFeedError as error:
            return error

    def _take(self, parsed: tuple[PriceSlot, ...] | PriceFeedError, *, origin: str) -> bool:
        """Install a parsed message, or count and log its refusal (on the loop: the counters and
        the schedule change only there)."""
        if isinstance(parsed, PriceFeedError):
            self._count("rejected")
            log.warning("price feed: %s refused (%s); the prices in force stay", origin, parsed)
            return False
        slots, now_s = parsed, self.clock.now_s()
        self._install(slots)
        self._count("accepted")
        covered_h = (slots[-1].end_s - now_s) / 3600.0
        prices = [slot.import_per_kwh for slot in slots]
        log.info(
            "price feed: %d slots from %s, covering %.1f h ahead; import %.4f to %.4f %s/kWh",
            len(slots),
            origin,
            covered_h,
            min(prices),
            max(prices),
            self.currency,
        )
        return True

    def _install(self, slots: tuple[PriceSlot, ...]) -> None:
        self._schedule = PriceSchedule(self._schedule.tariffs, self._schedule.timezone, slots)
        if self.metrics is not None:
            self.metrics.price_feed_covered_until.set(slots[-1].end_s if slots else 0.0)

    def _save(self, payload: bytes) -> None:
        if self.state_file is None:
            return
        document = {"format": STATE_FORMAT, "message": strict_json.loads(payload)}
        write_atomically(self.state_file, strict_json.dumps(document))

    def _restore(self) -> None:
        if self.state_file is None:
            return
        payload = load_state(self.state_file, _stored)
        if payload is None:
            return
        try:
            slots = parse_price_feed(payload, currency=self.currency, now_s=self.clock.now_s())
        except PriceFeedError as error:
            if "every slot has ended" in str(error):
                log.info("price feed: the saved prices have all ended; the table's prices until the feed speaks")
                return
            set_aside(self.state_file, str(error))
            return
        self._install(slots)
        log.info("price feed: %d saved slots restored (until the feed speaks)", len(slots))

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), COVERAGE_CHECK_S)
            except TimeoutError:
                self.check_coverage()  # quiet for a while: is what it said last still enough?
                continue
            self._wake.clear()
            message, self._pending = self._pending, None
            if message is None:
                continue
            origin = f"{'retained ' if message.retain else ''}message on {message.topic}"
            parsed = await asyncio.to_thread(self._parse, message.payload)
            if self._take(parsed, origin=origin):
                try:
                    await asyncio.to_thread(self._save, message.payload)
                except OSError as error:
                    log.warning("price feed: could not save to %s: %s", self.state_file, error)

    def covered_ahead_s(self) -> float:
        """Seconds from now the feed's slots reach (0: none, or all behind)."""
        until_s = self._schedule.covered_until_s
        return max(0.0, until_s - self.clock.now_s()) if until_s is not None and math.isfinite(until_s) else 0.0

    def check_coverage(self) -> None:
        """Warn (at most every 5 min) when the feed covers less than ``warn_ahead_h`` ahead."""
        if self.topic is not None and self.covered_ahead_s() < self.warn_ahead_s:
            self._warnings.warning(
                "coverage",
                "price feed: prices known only %.1f h ahead (warn below %.1f h); the table's prices fill the rest",
                self.covered_ahead_s() / 3600.0,
                self.warn_ahead_s / 3600.0,
            )

    async def start(self) -> None:
        self._restore()
        if self.client is not None and self.topic is not None:
            self._task = asyncio.create_task(self._run(), name="prices:intake")
            await self.client.subscribe(self.topic, self._on_message, qos=1, timeout_s=0.5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.client is not None and self.topic is not None:
            await self.client.unsubscribe(self.topic, self._on_message)
