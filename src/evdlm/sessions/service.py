"""Session commands over MQTT and in-process (the HTTP API): the I/O around :mod:`evdlm.core.session_inputs`.

Topics (docs/sessions.md), ``{key}`` = ``{charger_id}/{evse_id}``:

- ``evdlm/{site}/sessions/{key}/set`` in (QoS 1, JSON, not retained: a retained command would
  be applied again to whatever session runs there after a restart, so it is refused);
- ``evdlm/{site}/sessions/{key}/result`` out: the answer to each command (not retained);
- ``evdlm/{site}/sessions/{key}/state`` out (retained): the EVSE's current session inputs,
  published when they change.

The control cycle calls :meth:`SessionService.overlay` (no await, no I/O, O(EVSEs) with the
unchanged states reused): it reads the latest frozen :class:`SessionOverrides` and never waits
on a command. Commands change that value in the service's own task (MQTT) or in the HTTP
handler, each in O(1). The intake is bounded like the DR intake: a token bucket per set topic
and a queue cap; what exceeds them is dropped and counted (:class:`SessionIntakeStats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from evdlm import strict_json
from evdlm.config.models import SiteConfig
from evdlm.core.clock import Clock
from evdlm.core.lifetime import StartStop
from evdlm.core.session_inputs import (
    EMPTY,
    MAX_PAYLOAD_BYTES,
    Answer,
    EvseKey,
    Refusal,
    SessionOverride,
    SessionOverrides,
    SessionPolicy,
    describe,
    expire,
    overlay_state,
    submit,
)
from evdlm.core.types import EvseState
from evdlm.mqtt.client import MqttClient, MqttMessage
from evdlm.mqtt.rate_limit import TopicRateLimit
from evdlm.observability import LogThrottle, Metrics

log = logging.getLogger("evdlm.sessions")


class EvseStates(Protocol):
    def evse_states(self) -> dict[EvseKey, EvseState]: ...


@dataclass(frozen=True)
class SessionBounds:
    topic_burst: float = 5.0  # commands one EVSE's set topic may send at once...
    topic_rate_per_s: float = 1.0  # ...and then this many per second
    intake_max_messages: int = 256
    slice_budget_s: float = 0.005
    state_period_s: float = 1.0  # how often expired overrides and changed inputs are looked for
    max_pending_events: int = 1024  # commands kept for the recording until the next recorded cycle


@dataclass
class SessionIntakeStats:
    """What the MQTT intake did with session commands (metrics, tests)."""

    received: int = 0
    handled: int = 0
    rate_limited: int = 0  # dropped: the topic's token bucket was empty
    queue_full: int = 0  # dropped: the intake queue was at its cap
    bad_topic: int = 0  # dropped: not evdlm/{site}/sessions/{charger}/{evse}/set
    events_dropped: int = 0  # command events not recorded: too many between two recorded cycles


class SessionService(StartStop):
    """The latest session overrides, the commands that change them and the MQTT topics; see the module docstring."""

    def __init__(
        self,
        config: SiteConfig,
        chargers: EvseStates,
        clock: Clock,
        *,
        client: MqttClient | None = None,
        metrics: Metrics | None = None,
        bounds: SessionBounds | None = None,
    ) -> None:
        self.site_id = config.site.id
        self.chargers = chargers
        self.clock = clock
        self.client = client
        self.metrics = metrics
        self.bounds = bounds or SessionBounds()
        self.policy = SessionPolicy.from_config(config)
        self.overrides: SessionOverrides = EMPTY
        self.stats = SessionIntakeStats()
        self.prefix = f"evdlm/{self.site_id}/sessions"
        self.set_filter = f"{self.prefix}/+/+/set"
        # The cycle's overlay: per EVSE the (state, override, policy) it was made from and the result.
        self._memo: dict[EvseKey, tuple[EvseState, SessionOverride | None, SessionPolicy, EvseState]] = {}
        self._published: dict[EvseKey, dict[str, Any]] = {}
        self._events: deque[dict[str, Any]] = deque()
        self._intake: deque[MqttMessage] = deque()
        # Per set topic; bounded by the site's EVSEs (a flood of made-up topics forgets the oldest).
        self._rate_limit = TopicRateLimit(
            self.bounds.topic_burst, self.bounds.topic_rate_per_s, max(64, 4 * len(self.policy.evses))
        )
        self._wake = asyncio.Event()
        self._warnings = LogThrottle(log, clock, 10.0)
        self._tasks: list[asyncio.Task[None]] = []

    def apply_config(self, config: SiteConfig) -> None:
        """Profiles and charger defaults of a reloaded config, from the next cycle on."""
        self.policy = SessionPolicy.from_config(config)
        by_evse = {key: item for key, item in self.overrides.by_evse.items() if key in self.policy.evses}
        if len(by_evse) != len(self.overrides):
            self.overrides = SessionOverrides(by_evse)

    # ------------------------------------------------------------------ the cycle's view (no I/O)

    def overlay(self, states: dict[EvseKey, EvseState], now_s: float) -> dict[EvseKey, EvseState]:
        """The EVSE states with their session inputs resolved; unchanged ones are the same objects."""
        overrides = expire(self.overrides, states)
        if overrides is not self.overrides:
            self.overrides = overrides
            self._wake.set()  # the state topics of the ended sessions
        policy, memo = self.policy, self._memo
        out: dict[EvseKey, EvseState] = {}
        for key, state in states.items():
            override = overrides.get(key)
            last = memo.get(key)
            if last is not None and last[0] is state and last[1] is override and last[2] is policy:
                out[key] = last[3]
                continue
            made = overlay_state(state, override, policy)
            memo[key] = (state, override, policy, made)
            out[key] = made
        if len(memo) > len(states):
            for key in [key for key in memo if key not in states]:
                del memo[key]
        return out

    def take_events(self) -> list[dict[str, Any]]:
        """The commands handled since the last call, for the cycle recording."""
        events = list(self._events)
        self._events.clear()
        return events

    # ------------------------------------------------------------------ commands (every channel)

    def inputs(self, key: EvseKey) -> dict[str, Any] | None:
        """One configured EVSE's current session inputs (None: not in the config)."""
        if key not in self.policy.evses:
            return None
        state = self.chargers.evse_states().get(key)
        if state is None:
            return {"charger_id": key[0], "evse_id": key[1], "session": False, "transaction_id": None}
        return describe(state, self.overrides.get(key), self.policy)

    def all_inputs(self) -> list[dict[str, Any]]:
        states = self.chargers.evse_states()
        out = []
        for key in sorted(self.policy.evses):
            state = states.get(key)
            if state is None:
                out.append({"charger_id": key[0], "evse_id": key[1], "session": False, "transaction_id": None})
            else:
                out.append(describe(state, self.overrides.get(key), self.policy))
        return out

    def submit(self, key: EvseKey, payload: bytes | Mapping[str, Any], channel: str) -> Answer:
        """Validate and apply one command now (O(1)); the answer says what happened."""
        now_s = self.clock.now_s()
        states = self.chargers.evse_states()
        overrides, answer = submit(expire(self.overrides, states), self.policy, states, key, payload, now_s)
        self.overrides = overrides
        self._note(answer, channel, now_s)
        self._wake.set()
        return answer

    def refuse(self, key: EvseKey, reason: str, channel: str, kind: Refusal = Refusal.BAD_REQUEST) -> Answer:
        """An answer for a command refused before parsing (too large, retained), counted and recorded."""
        answer = Answer(False, reason, key[0], key[1], refusal=kind)
        self._note(answer, channel, self.clock.now_s())
        return answer

    def _note(self, answer: Answer, channel: str, now_s: float) -> None:
        result = "accepted" if answer.accepted else "rejected"
        if self.metrics is not None:
            self.metrics.session_commands.labels(site=self.site_id, channel=channel, result=result).inc()
        inputs = answer.inputs or {}
        log.log(
            logging.INFO if answer.accepted else logging.WARNING,
            "session command %s/%d via %s %s: %s (transaction %s; now departure %s, energy %s kWh, priority %s%s)",
            answer.charger_id,
            answer.evse_id,
            channel,
            result,
            answer.reason,
            answer.transaction_id,
            inputs.get("departure"),
            inputs.get("energy_kwh"),
            inputs.get("priority"),
            ", paused" if inputs.get("paused") else "",
            extra={
                "fields": {
                    "event": "session_command",
                    "charger": answer.charger_id,
                    "evse": answer.evse_id,
                    "channel": channel,
                    "result": result,
                    "reason": answer.reason,
                }
            },
        )
        if len(self._events) >= self.bounds.max_pending_events:
            self._events.popleft()
            self.stats.events_dropped += 1
        event = {"type": "session_command", "t": now_s, "channel": channel, **answer.as_json()}
        event.pop("inputs", None)
        event["kind"] = answer.refusal.value if answer.refusal is not None else None
        self._events.append(event)

    # ------------------------------------------------------------------ lifetime (``async with``)

    async def start(self) -> None:
        if self.client is not None:
            await self.client.subscribe(self.set_filter, self._on_set, qos=1, timeout_s=0.5)
        self._tasks.append(asyncio.create_task(self._run(), name=f"sessions:{self.site_id}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.client is not None:
            await self.client.unsubscribe(self.set_filter, self._on_set)

    # ------------------------------------------------------------------ MQTT intake (callback: O(1))

    def _on_set(self, message: MqttMessage) -> None:
        self.stats.received += 1
        if self._key_of(message.topic) is None:
            self.stats.bad_topic += 1
            self._warnings.warning(
                "bad_topic", "session command on %.160s dropped: no EVSE in the topic", message.topic
            )
            return
        if not self._rate_limit.allow(message.topic, time.monotonic()):
            self.stats.rate_limited += 1
            self._warnings.warning(
                "rate",
                "session commands on %s beyond %.0f at once / %.1f per s dropped (%d so far)",
                message.topic,
                self.bounds.topic_burst,
                self.bounds.topic_rate_per_s,
                self.stats.rate_limited,
            )
            return
        if len(self._intake) >= self.bounds.intake_max_messages:
            self.stats.queue_full += 1
            self._warnings.warning("queue", "session command intake full: message on %s dropped", message.topic)
            return
        self._intake.append(message)
        self._wake.set()

    def _key_of(self, topic: str) -> EvseKey | None:
        parts = topic.split("/")
        if len(parts) != 6 or parts[-1] != "set" or "/".join(parts[:3]) != self.prefix:
            return None
        charger, evse = parts[3], parts[4]
        if not charger or not evse.isdigit() or len(evse) > 3:
            return None
        return (charger, int(evse))

    # ------------------------------------------------------------------ the service's task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.bounds.state_period_s):
                    await self._wake.wait()
            self._wake.clear()
            await self._handle_queued()
            self._publish_states()

    async def _handle_queued(self) -> None:
        slice_start = time.perf_counter()
        while self._intake:
            message = self._intake.popleft()
            key = self._key_of(message.topic)
            assert key is not None  # checked on arrival
            if message.retain:
                answer = self.refuse(key, "retained commands are not applied (publish with retain false)", "mqtt")
            elif len(message.payload) > MAX_PAYLOAD_BYTES:
                answer = self.refuse(
                    key,
                    f"payload of {len(message.payload)} bytes is over {MAX_PAYLOAD_BYTES}",
                    "mqtt",
                    Refusal.TOO_LARGE,
                )
            else:
                answer = self.submit(key, message.payload, "mqtt")
            self.stats.handled += 1
            self._publish(f"{self.prefix}/{key[0]}/{key[1]}/result", answer.as_json(), retain=False)
            if time.perf_counter() - slice_start >= self.bounds.slice_budget_s:
                await asyncio.sleep(0)  # the cycle gets the loop between slices
                slice_start = time.perf_counter()

    def _publish_states(self) -> None:
        """Retained inputs per EVSE, when they changed (ended sessions included)."""
        states = self.chargers.evse_states()
        overrides = expire(self.overrides, states)
        if overrides is not self.overrides:
            self.overrides = overrides
        if self.client is None:
            return
        for key in self.policy.evses:
            state = states.get(key)
            if state is None:
                continue
            inputs = describe(state, overrides.get(key), self.policy)
            if self._published.get(key) != inputs:
                self._published[key] = inputs
                self._publish(f"{self.prefix}/{key[0]}/{key[1]}/state", inputs, retain=True)

    def _publish(self, topic: str, document: dict[str, Any], *, retain: bool) -> None:
        if self.client is None:
            return
        # Answers are kept until the broker has them; a state only as the latest per topic.
        self.client.publish_nowait(topic, strict_json.dumps(document), qos=1, retain=retain, reliable=not retain)
