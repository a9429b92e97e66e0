"""Demand response over MQTT: the engine's I/O (topics, responses, persistence).

Topics (specs/dr-mqtt.md): ``dr/{site}/events/+`` in, ``dr/{site}/responses/{id}`` out
(retained), ``dr/{site}/bridge/status`` and ``/heartbeat`` in, ``dlm/{site}/dr/effective``
out (retained). Accepted events persist to the state file after every change and are
restored before subscribing, so a restart re-applies them before the broker redelivers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from evdlm.config.models import SiteConfig
from evdlm.core.clock import Clock
from evdlm.dr.engine import DrEngine, Effective, Response
from evdlm.mqtt.client import MqttClient, MqttError, MqttMessage
from evdlm.state_files import write_atomically

log = logging.getLogger("evdlm.dr")


def _tighter(now_w: float | None, soon_w: float | None) -> float | None:
    return soon_w if now_w is None else now_w if soon_w is None else min(now_w, soon_w)


class DrService:
    def __init__(self, config: SiteConfig, client: MqttClient, clock: Clock, state_file: Path) -> None:
        assert config.demand_response is not None
        # Cars take a settle time to follow: a lower limit known in advance is applied that early,
        # so the site is under it when it takes effect.
        self.lead_s = config.control.settle_time_s + config.control.cycle_period_s
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
        )
        self._outbox: deque[Response] = deque()
        self._flushing = asyncio.Lock()  # the message handler and the cycle both flush
        self._last_effective: dict[str, Any] | None = None

    async def start(self) -> None:
        """Restore persisted events, then subscribe (the broker's retained copies come after)."""
        if self.state_file.exists():
            try:
                self.engine.restore(json.loads(self.state_file.read_text(encoding="utf-8")))
                log.info("DR: %d event(s) restored from %s", len(self.engine.events), self.state_file)
            except (OSError, ValueError, KeyError) as exc:
                log.error("DR state file %s unreadable (%s); starting without it", self.state_file, exc)
        prefix = f"dr/{self.site_id}"
        await self.client.subscribe(f"{prefix}/events/+", self._on_event, qos=1)
        await self.client.subscribe(f"{prefix}/bridge/status", self._on_bridge_status, qos=1)
        await self.client.subscribe(f"{prefix}/bridge/heartbeat", self._on_heartbeat, qos=0)

    async def _on_event(self, message: MqttMessage) -> None:
        event_id = message.topic.rsplit("/", 1)[-1]
        before = json.dumps(self.engine.to_state(), sort_keys=True)
        self._outbox.extend(self.engine.receive(event_id, message.payload, self.clock.now_s()))
        if json.dumps(self.engine.to_state(), sort_keys=True) != before:
            self._persist()
        await self._flush()

    def _on_bridge_status(self, message: MqttMessage) -> None:
        self.engine.bridge_status(message.payload, self.clock.now_s())

    def _on_heartbeat(self, message: MqttMessage) -> None:
        self.engine.heartbeat(self.clock.now_s())

    def _persist(self) -> None:
        try:
            write_atomically(self.state_file, json.dumps(self.engine.to_state(), indent=1))
        except OSError as exc:
            log.error("DR state not persisted to %s: %s", self.state_file, exc)

    async def _flush(self) -> None:
        async with self._flushing:
            while self._outbox:
                response = self._outbox[0]
                topic = f"dr/{self.site_id}/responses/{response.event_id}"
                try:
                    if response.payload:
                        await self.client.publish(topic, json.dumps(response.payload), qos=1, retain=True)
                except MqttError as exc:
                    log.info("DR response for %s queued: %s", response.event_id, exc)
                    return
                self._outbox.popleft()

    async def step(self) -> Effective:
        """Advance with time (once per cycle); publish what changed; return the limits in force."""
        now_s = self.clock.now_s()
        finished = self.engine.tick(now_s)
        if finished:
            self._outbox.extend(finished)
            self._persist()
        effective = self.engine.effective(now_s)
        upcoming = self.engine.effective(now_s + self.lead_s)
        effective = replace(
            effective,
            import_limit_w=_tighter(effective.import_limit_w, upcoming.import_limit_w),
            export_limit_w=_tighter(effective.export_limit_w, upcoming.export_limit_w),
        )
        await self._flush()
        summary = effective.as_json(now_s)
        comparable = {key: value for key, value in summary.items() if key != "at"}
        if comparable != self._last_effective and self.client.connected:
            try:
                await self.client.publish(f"dlm/{self.site_id}/dr/effective", json.dumps(summary), qos=1, retain=True)
                self._last_effective = comparable
            except MqttError as exc:
                log.info("DR effective state not published: %s", exc)
        return effective
