"""The demand-response state machine (pure: time is passed in, I/O is the service's job).

Rules from specs/dr-mqtt.md, numbered as there: (1) validate first, never apply in part;
(2) targeting; (3) versions by modificationDateTime; (4) import/export limits combine by
minimum, priority decides only price and SIMPLE; (5) floors; (6) expiry; (7) stale channel →
FAILSAFE; (8) grid-critical events cannot be opted out; (9) persistence (``to_state`` /
``restore``); (10) one randomized start offset per (event id, version), stable across
restarts (derived from a hash, so nothing extra must be stored); (11) clock skew.

Bounds: messages are decoded within a size and depth cap with finite numbers only
(:func:`evdlm.dr.messages.parse_notification`); the store holds at most
``max_events_per_program`` events per program and ``max_events_total`` in all: room is made
by evicting events that are over (or opted out), oldest end first, and a new event beyond the
caps is REJECTED with ``TOO_MANY_EVENTS``. Every change to the store is noted in
:attr:`DrEngine.changed`, so its owner persists only what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from evdlm.config.models import DrProgram
from evdlm.dr.messages import (
    CAPACITY_TYPES,
    OPEN_ENDED,
    POWER_UNITS,
    Event,
    Invalid,
    Notification,
    PayloadType,
    Reason,
    Status,
    from_epoch,
    parse_duration,
    parse_notification,
    rfc3339,
)
from evdlm.mqtt.payload import PayloadError, decode_json

log = logging.getLogger("evdlm.dr")

HEARTBEAT_MISSES = 3  # rule 7: no heartbeat for 3 × its interval → FAILSAFE
DEFAULT_HEARTBEAT_INTERVAL_S = 60.0
APPLIED_STATUSES = (Status.OPT_IN, Status.ACTIVE)
MAX_EVENTS_TOTAL = 256
MAX_EVENTS_PER_PROGRAM = 64
MAX_DETAIL_CHARS = 300  # a rejection's detail echoes input: kept short in the response
STATE_VERSION = 1


class ChannelMode(StrEnum):
    NORMAL = "NORMAL"
    FAILSAFE = "FAILSAFE"
    STARTING = "STARTING"  # the DR state is not known yet (start-up): failsafe limits, see effective()


@dataclass(frozen=True)
class Response:
    """A response to publish (retained) on ``dr/{site}/responses/{event_id}``."""

    event_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Slot:
    """One interval of an event on the timeline, offset by the randomized start."""

    start: datetime
    end: datetime  # datetime.max for open-ended
    payloads: dict[PayloadType, float]


@dataclass
class StoredEvent:
    raw: dict[str, Any]
    notification: Notification
    status: Status
    reason: Reason | None
    offset_s: float
    slots: list[Slot]
    last_response: dict[str, Any] | None = None

    @property
    def event(self) -> Event:
        return self.notification.object

    @property
    def start(self) -> datetime:
        return self.slots[0].start

    @property
    def end(self) -> datetime:
        return self.slots[-1].end

    @property
    def open_ended(self) -> bool:
        return self.end == datetime.max.replace(tzinfo=self.start.tzinfo)

    def slot_at(self, moment: datetime) -> Slot | None:
        for slot in self.slots:
            if slot.start <= moment < slot.end:
                return slot
        return None


@dataclass(frozen=True)
class Effective:
    """What DR asks of the site now."""

    mode: ChannelMode
    import_limit_w: float | None
    export_limit_w: float | None
    price_per_kwh: float | None
    simple_level: int | None
    events: tuple[str, ...]  # ids of the events in force
    failsafe_until_s: float | None = None

    def as_json(self, now_s: float) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "importLimitKW": None if self.import_limit_w is None else self.import_limit_w / 1000.0,
            "exportLimitKW": None if self.export_limit_w is None else self.export_limit_w / 1000.0,
            "price": self.price_per_kwh,
            "simple": self.simple_level,
            "events": list(self.events),
            "failsafeUntil": None if self.failsafe_until_s is None else rfc3339(from_epoch(self.failsafe_until_s)),
            "at": rfc3339(from_epoch(now_s)),
        }


class Rejection(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class OptOutRefused(Exception):
    """Grid-critical events cannot be opted out (rule 8)."""


@dataclass
class DrStats:
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    expired: int = 0
    evicted: int = 0


@dataclass
class LogBudget:
    """At most ``per_window`` lines per ``window_s`` at their own level, the rest at DEBUG.

    A flood of bad or surplus DR messages would otherwise be a flood of log lines (synchronous
    writes on the event loop). What was held back is counted in one line when the window ends.
    """

    per_window: int = 20
    window_s: float = 10.0
    _window_start_s: float = -math.inf
    _used: int = 0
    _held_back: int = 0

    def log(self, level: int, message: str, *args: Any) -> None:
        now_s = time.monotonic()
        if now_s - self._window_start_s >= self.window_s:
            if self._held_back:
                log.warning(
                    "DR: %d more message(s) like the above not logged in %.0f s", self._held_back, self.window_s
                )
            self._window_start_s, self._used, self._held_back = now_s, 0, 0
        if self._used < self.per_window:
            self._used += 1
            log.log(level, message, *args)
        else:
            self._held_back += 1
            log.debug(message, *args)


@dataclass(frozen=True)
class Restored:
    """A persisted state, validated whole (see :meth:`DrEngine.parse_state`)."""

    events: dict[str, StoredEvent]
    failsafe_since_s: float | None
    last_open_ended_import_w: dict[str, float]


@dataclass
class DrEngine:
    site_id: str
    resources: frozenset[str]  # charger and circuit ids an event may target
    programs: dict[str, DrProgram]
    started_s: float
    events: dict[str, StoredEvent] = field(default_factory=dict)
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    last_heartbeat_s: float | None = None
    bridge_online: bool | None = None
    failsafe_since_s: float | None = None
    last_open_ended_import_w: dict[str, float] = field(default_factory=dict)  # per program
    stats: DrStats = field(default_factory=DrStats)
    max_events_total: int = MAX_EVENTS_TOTAL
    max_events_per_program: int = MAX_EVENTS_PER_PROGRAM
    # Ids of events added, changed or removed since the owner last took them (persistence), and
    # whether the channel fields did; see take_changes().
    changed: set[str] = field(default_factory=set)
    meta_changed: bool = False
    log_budget: LogBudget = field(default_factory=LogBudget)

    # ------------------------------------------------------------------ inbound

    def receive(self, topic_event_id: str, payload: bytes, now_s: float) -> list[Response]:
        """Handle a message on ``dr/{site}/events/{topic_event_id}``; returns responses to publish."""
        self.stats.received += 1
        now = from_epoch(now_s)
        if not payload.strip():
            return self._cancel(topic_event_id, now, "empty retained message")
        parsed = parse_notification(payload)
        if isinstance(parsed, Invalid):
            self.stats.rejected += 1
            self.log_budget.log(
                logging.WARNING,
                "DR message on %s rejected: %s at %r",
                topic_event_id,
                parsed.message,
                parsed.pointer,
            )
            event_id = parsed.event_id or topic_event_id
            return [
                self._answer_rejected(
                    event_id,
                    parsed.program_id,
                    None,
                    Reason.SCHEMA_INVALID,
                    now,
                    pointer=parsed.pointer,
                    detail=parsed.message,
                )
            ]
        event = parsed.notification.object
        if event.id != topic_event_id:
            self.stats.rejected += 1
            return [
                self._answer_rejected(
                    topic_event_id,
                    event.programID,
                    event.modificationDateTime,
                    Reason.SCHEMA_INVALID,
                    now,
                    pointer="/object/id",
                    detail="object.id differs from the topic's event id",
                )
            ]
        if parsed.notification.operation == "DELETE":
            return self._cancel(event.id, now, "DELETE")

        stored = self.events.get(event.id)
        if stored is not None:
            known = stored.event.modificationDateTime
            if event.modificationDateTime == known:
                # A retained message redelivered after a reconnect: answer as before.
                return [Response(event.id, stored.last_response)] if stored.last_response else []
            if event.modificationDateTime < known:
                self.stats.rejected += 1
                return [
                    self._answer_rejected(
                        event.id,
                        event.programID,
                        event.modificationDateTime,
                        Reason.STALE_VERSION,
                        now,
                        detail=f"a newer version ({rfc3339(known)}) is in force",
                    )
                ]
        try:
            candidate = self._admit(parsed.notification, parsed.raw, now_s)
            if stored is None:
                self._make_room(event.programID, now)
        except Rejection as rejection:
            self.stats.rejected += 1
            self.log_budget.log(
                logging.WARNING, "DR event %s rejected: %s (%s)", event.id, rejection.reason.value, rejection.detail
            )
            return [
                self._answer_rejected(
                    event.id,
                    event.programID,
                    event.modificationDateTime,
                    rejection.reason,
                    now,
                    detail=rejection.detail,
                )
            ]
        self.stats.accepted += 1
        self.events[event.id] = candidate
        self.changed.add(event.id)
        last_import = candidate.slots[-1].payloads.get(PayloadType.IMPORT_CAPACITY_LIMIT)
        if candidate.open_ended and last_import is not None:
            # Rule 7: a failsafe limit is never higher than the last open-ended one received.
            program = self.programs.get(event.programID)
            self.last_open_ended_import_w[event.programID] = self._floored(last_import, program)
            self.meta_changed = True
        self.log_budget.log(
            logging.INFO,
            "DR event %s v%s accepted: %s",
            event.id,
            rfc3339(event.modificationDateTime),
            candidate.status.value,
        )
        return [self._respond(candidate, now)]

    def refuse(self, topic_event_id: str, detail: str, now_s: float) -> list[Response]:
        """Answer a message the service would not even parse (too large): REJECTED, nothing changed."""
        self.stats.received += 1
        self.stats.rejected += 1
        self.log_budget.log(logging.WARNING, "DR message on %s rejected: %s", topic_event_id, detail)
        return [
            self._answer_rejected(
                topic_event_id, None, None, Reason.SCHEMA_INVALID, from_epoch(now_s), pointer="", detail=detail
            )
        ]

    def heartbeat(self, now_s: float) -> None:
        self.last_heartbeat_s = now_s

    def bridge_status(self, payload: bytes, now_s: float) -> None:
        try:
            data = decode_json(payload, max_bytes=4096, max_depth=4)
            state = data["state"]
            interval = data.get("heartbeatIntervalS", self.heartbeat_interval_s)
        except (PayloadError, KeyError, TypeError, AttributeError):
            self.log_budget.log(
                logging.WARNING, "bridge status message ignored: not {'state': ..., 'heartbeatIntervalS': ...}"
            )
            return
        # A NaN interval would make every staleness test false: the channel never stale.
        valid_interval = (
            not isinstance(interval, bool) and isinstance(interval, int | float) and 1.0 <= interval <= 86400.0
        )
        if state not in ("online", "offline") or not valid_interval:
            self.log_budget.log(
                logging.WARNING, "bridge status message ignored: state %.40r interval %.40r", state, interval
            )
            return
        self.bridge_online = state == "online"
        self.heartbeat_interval_s = float(interval)
        if self.bridge_online:
            self.last_heartbeat_s = now_s

    def opt_out(self, event_id: str, now_s: float) -> Response:
        stored = self.events.get(event_id)
        if stored is None or stored.status not in APPLIED_STATUSES:
            raise KeyError(f"no applied event {event_id!r}")
        if self._grid_critical(stored):
            raise OptOutRefused(f"event {event_id} is grid-critical and cannot be opted out")
        stored.status, stored.reason = Status.OPT_OUT, Reason.OPERATOR_OVERRIDE
        self.changed.add(event_id)
        return self._respond(stored, from_epoch(now_s))

    # ------------------------------------------------------------------ time

    def tick(self, now_s: float) -> list[Response]:
        """Advance states with time: start, completion, expiry, channel failsafe."""
        now = from_epoch(now_s)
        responses = []
        for event_id in list(self.events):
            stored = self.events[event_id]
            if stored.status not in APPLIED_STATUSES:
                if _over(stored, now):
                    # Opted out and now over: nothing to answer, only room to give back.
                    del self.events[event_id]
                    self.changed.add(event_id)
                continue
            expires_at = stored.notification.x_dlm.expiresAt
            if (expires_at is not None and now >= expires_at) or now >= stored.end:
                stored.status = Status.COMPLETED
                stored.reason = (
                    Reason.EXPIRED if expires_at is not None and now >= expires_at and now < stored.end else None
                )
                self.stats.expired += 1
                responses.append(self._respond(stored, now))
                log.info("DR event %s completed", event_id)
                del self.events[event_id]
                self.changed.add(event_id)
            elif stored.status is Status.OPT_IN and now >= stored.start:
                stored.status = Status.ACTIVE
                responses.append(self._respond(stored, now))
                self.changed.add(event_id)
        self._update_channel(now_s)
        return responses

    def channel_stale(self, now_s: float) -> bool:
        if self.bridge_online is False:
            return True
        since = self.last_heartbeat_s if self.last_heartbeat_s is not None else self.started_s
        return now_s - since > HEARTBEAT_MISSES * self.heartbeat_interval_s

    def _update_channel(self, now_s: float) -> None:
        stale = self.channel_stale(now_s)
        if stale and self.failsafe_since_s is None and self.programs:
            self.failsafe_since_s = now_s
            self.meta_changed = True
            log.warning("DR channel stale: FAILSAFE")
        elif not stale and self.failsafe_since_s is not None and now_s >= self._failsafe_until(self.failsafe_since_s):
            self.failsafe_since_s = None
            self.meta_changed = True
            log.info("DR channel healthy again: NORMAL")

    def _failsafe_until(self, since_s: float) -> float:
        return since_s + max((p.failsafe_min_duration_s for p in self.programs.values()), default=0.0)

    # ------------------------------------------------------------------ effective limits

    def effective(self, now_s: float, *, starting_fallback_w: float | None = None) -> Effective:
        """The limits in force at ``now_s`` (pure: reads the store, changes nothing).

        Parameters
        ----------
        now_s : float
            Time, s since the epoch.
        starting_fallback_w : float, optional
            Given while the DR state is not known yet (start-up, before the broker's retained
            events have been handled): every program is taken as in FAILSAFE (rule 7: open-ended
            limits give way to its failsafe limit, which applies, never above the last one
            received), and a program with no failsafe limit, or a site with no programs, is
            capped at this (the site's fallback import limit), W. Mode ``STARTING``.
        """
        now = from_epoch(now_s)
        starting = starting_fallback_w is not None
        failsafe = self.failsafe_since_s is not None or starting
        import_caps: list[float] = []
        export_caps: list[float] = []
        in_force: list[StoredEvent] = []
        for stored in self.events.values():
            if stored.status not in APPLIED_STATUSES:
                continue
            slot = stored.slot_at(now)
            if slot is None:
                continue
            in_force.append(stored)
            program = self.programs.get(stored.event.programID)
            if PayloadType.IMPORT_CAPACITY_LIMIT in slot.payloads:
                cap = self._floored(slot.payloads[PayloadType.IMPORT_CAPACITY_LIMIT], program)
                failsafe_cap = program.failsafe_import_limit_kw if program is not None else None
                if stored.open_ended and failsafe and failsafe_cap is not None:
                    cap = min(cap, failsafe_cap * 1000.0)
                import_caps.append(cap)
            if PayloadType.EXPORT_CAPACITY_LIMIT in slot.payloads:
                export_caps.append(slot.payloads[PayloadType.EXPORT_CAPACITY_LIMIT])
        if failsafe:
            for program_id, program in self.programs.items():
                if program.failsafe_import_limit_kw is None:
                    if starting_fallback_w is not None:
                        import_caps.append(starting_fallback_w)
                    continue
                cap = program.failsafe_import_limit_kw * 1000.0
                last = self.last_open_ended_import_w.get(program_id)
                import_caps.append(min(cap, last) if last is not None else cap)
            if starting_fallback_w is not None and not self.programs:
                import_caps.append(starting_fallback_w)

        def chosen(kind: PayloadType) -> float | None:
            offers = [(s, slot) for s in in_force if (slot := s.slot_at(now)) is not None and kind in slot.payloads]
            if not offers:
                return None
            # Rule 4: the lower priority number wins; ties go to the newest version.
            _, slot = min(
                offers, key=lambda offer: (_priority(offer[0]), -offer[0].event.modificationDateTime.timestamp())
            )
            return slot.payloads[kind]

        simple = chosen(PayloadType.SIMPLE)
        return Effective(
            mode=ChannelMode.STARTING if starting else ChannelMode.FAILSAFE if failsafe else ChannelMode.NORMAL,
            import_limit_w=min(import_caps) if import_caps else None,
            export_limit_w=min(export_caps) if export_caps else None,
            price_per_kwh=chosen(PayloadType.PRICE),
            simple_level=None if simple is None else int(simple),
            events=tuple(sorted(s.event.id for s in in_force)),
            failsafe_until_s=self._failsafe_until(self.failsafe_since_s) if self.failsafe_since_s is not None else None,
        )

    # ------------------------------------------------------------------ persistence (rule 9)

    def to_state(self) -> dict[str, Any]:
        """The whole persisted state (JSON-ready; see :func:`event_state` for one event)."""
        return {
            "version": STATE_VERSION,
            "events": [event_state(s) for s in self.events.values()],
            **self.meta_state(),
        }

    def meta_state(self) -> dict[str, Any]:
        """The persisted fields other than the events."""
        return {"failsafeSinceS": self.failsafe_since_s, "lastOpenEndedImportW": dict(self.last_open_ended_import_w)}

    def take_changes(self) -> tuple[set[str], bool]:
        """Event ids changed since the last call (removed ones included) and whether the rest did."""
        changed, meta = self.changed, self.meta_changed
        self.changed, self.meta_changed = set(), False
        return changed, meta

    def parse_state(self, state: Any) -> Restored:
        """Validate a persisted state whole; ``ValueError`` for any shape or value it cannot use.

        Pure: builds the events without touching this engine, so a bad file changes nothing.
        """
        try:
            return self._parse_state(state)
        except ValueError:
            raise
        except (TypeError, AttributeError, KeyError, OverflowError) as exc:
            raise ValueError(f"DR state: {type(exc).__name__}: {exc}") from None
        except Rejection as exc:
            raise ValueError(f"DR state: an event cannot be applied: {exc.detail}") from None

    def _parse_state(self, state: Any) -> Restored:
        if not isinstance(state, dict):
            raise ValueError(f"DR state is a {type(state).__name__}, not an object")
        if state.get("version", STATE_VERSION) != STATE_VERSION:
            raise ValueError(f"DR state version {state.get('version')!r} is not {STATE_VERSION}")
        items = state.get("events", [])
        if not isinstance(items, list):
            raise ValueError(f"DR state: events is a {type(items).__name__}, not a list")
        if len(items) > self.max_events_total:
            raise ValueError(f"DR state: {len(items)} events, more than the {self.max_events_total} kept")
        events: dict[str, StoredEvent] = {}
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("raw"), dict):
                raise ValueError(f"DR state: /events/{index} is not an object with a raw event")
            # Strict JSON reads 1e999 as infinity: nothing non-finite is taken back in.
            json.dumps(item, allow_nan=False)
            notification = Notification.model_validate(item["raw"])
            stored = self._stored(notification, item["raw"])
            stored.status = Status(item["status"])
            reason = item.get("reason")
            stored.reason = Reason(reason) if reason else None
            last_response = item.get("lastResponse")
            if last_response is not None and not isinstance(last_response, dict):
                raise ValueError(f"DR state: /events/{index}/lastResponse is not an object")
            stored.last_response = last_response
            events[notification.object.id] = stored
        since = state.get("failsafeSinceS")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
            raise ValueError("DR state: failsafeSinceS is not a number")
        last = state.get("lastOpenEndedImportW", {})
        if not isinstance(last, dict):
            raise ValueError("DR state: lastOpenEndedImportW is not an object")
        last_w = {str(key): _finite_w(value, f"lastOpenEndedImportW/{key}") for key, value in last.items()}
        return Restored(
            events=events,
            failsafe_since_s=None if since is None else _finite_w(since, "failsafeSinceS"),
            last_open_ended_import_w=last_w,
        )

    def restore(self, state: Any) -> int:
        """Re-apply persisted events at once (before the broker redelivers anything).

        All or nothing: ``ValueError`` (nothing applied) when any part of ``state`` is unusable.
        Returns the number of events restored.
        """
        restored = self.parse_state(state)
        self.apply_restored(restored)
        return len(restored.events)

    def apply_restored(self, restored: Restored) -> None:
        """Replace the store with a state :meth:`parse_state` validated."""
        self.events = dict(restored.events)
        self.failsafe_since_s = restored.failsafe_since_s
        self.last_open_ended_import_w = dict(restored.last_open_ended_import_w)

    # ------------------------------------------------------------------ internals

    def _grid_critical(self, stored: StoredEvent) -> bool:
        program = self.programs.get(stored.event.programID)
        payload_types = {kind for slot in stored.slots for kind in slot.payloads}
        simple_max = max((slot.payloads.get(PayloadType.SIMPLE, 0) for slot in stored.slots), default=0)
        return (
            (program is not None and program.mandatory)
            or PayloadType.ALERT_GRID_EMERGENCY in payload_types
            or simple_max >= 3
        )

    def _floored(self, cap_w: float, program: DrProgram | None) -> float:
        floor_w = program.import_floor_kw * 1000.0 if program is not None else 0.0
        return max(cap_w, floor_w)

    def _make_room(self, program_id: str, now: datetime) -> None:
        """Keep the store within its caps for one more event of ``program_id``.

        Events that are over (past their end or expiry, not yet ticked away) or opted out go
        first, the earliest end first; if that is not enough the new event is refused.
        """

        def evictable(of_program: str | None) -> list[StoredEvent]:
            out = [
                stored
                for stored in self.events.values()
                if (of_program is None or stored.event.programID == of_program)
                and (stored.status not in APPLIED_STATUSES or _over(stored, now))
            ]
            return sorted(out, key=lambda stored: stored.end)

        for of_program, cap in ((program_id, self.max_events_per_program), (None, self.max_events_total)):
            count = sum(
                1 for stored in self.events.values() if of_program is None or stored.event.programID == of_program
            )
            if count < cap:
                continue
            candidates = evictable(of_program)[: count - cap + 1]
            if count - len(candidates) >= cap:
                scope = f"program {program_id}" if of_program is not None else "the site"
                raise Rejection(
                    Reason.TOO_MANY_EVENTS, f"{count} events stored for {scope} (at most {cap}), none of them over"
                )
            for stored in candidates:
                self.log_budget.log(
                    logging.INFO, "DR event %s evicted to make room (over or opted out)", stored.event.id
                )
                del self.events[stored.event.id]
                self.changed.add(stored.event.id)
                self.stats.evicted += 1

    def _admit(self, notification: Notification, raw: dict[str, Any], now_s: float) -> StoredEvent:
        event = notification.object
        if event.targets and self.site_id not in event.targets and not (self.resources & set(event.targets)):
            raise Rejection(
                Reason.NOT_TARGETED, f"targets {event.targets} name neither site {self.site_id} nor its resources"
            )
        program = self.programs.get(event.programID)
        if self.programs and program is None:
            raise Rejection(Reason.NOT_TARGETED, f"program {event.programID} is not configured for this site")
        if program is not None and not program.allow_far_future:
            ahead_s = event.modificationDateTime.timestamp() - now_s
            if ahead_s > program.max_future_start_s:
                raise Rejection(Reason.CLOCK_SKEW, f"created {ahead_s:.0f} s in the future")
        stored = self._stored(notification, raw)
        now = from_epoch(now_s)
        expires_at = notification.x_dlm.expiresAt
        if now >= stored.end or (expires_at is not None and now >= expires_at):
            raise Rejection(Reason.EXPIRED, "the event is already over")
        stored.status = Status.ACTIVE if now >= stored.start else Status.OPT_IN
        if program is not None and any(
            slot.payloads.get(PayloadType.IMPORT_CAPACITY_LIMIT, float("inf")) < program.import_floor_kw * 1000.0
            for slot in stored.slots
        ):
            stored.reason = Reason.CLAMPED_TO_FLOOR
        return stored

    def _stored(self, notification: Notification, raw: dict[str, Any]) -> StoredEvent:
        event = notification.object
        offset_s = self._offset_s(event)
        return StoredEvent(
            raw=raw,
            notification=notification,
            status=Status.RECEIVED,
            reason=None,
            offset_s=offset_s,
            slots=_slots(event, offset_s),
        )

    def _offset_s(self, event: Event) -> float:
        period = event.intervalPeriod
        if period is None or period.randomizeStart is None:
            return 0.0
        spread = parse_duration(period.randomizeStart).total_seconds()
        digest = hashlib.sha256(f"{self.site_id}|{event.id}|{event.modificationDateTime.isoformat()}".encode()).digest()
        return spread * int.from_bytes(digest[:8], "big") / 2**64

    def _cancel(self, event_id: str, now: datetime, why: str) -> list[Response]:
        stored = self.events.pop(event_id, None)
        if stored is None:
            return []
        self.changed.add(event_id)
        log.info("DR event %s cancelled (%s)", event_id, why)
        stored.status, stored.reason = Status.CANCELLED, None
        return [self._respond(stored, now)]

    def _respond(self, stored: StoredEvent, now: datetime) -> Response:
        event = stored.event
        first_import = next(
            (
                s.payloads[PayloadType.IMPORT_CAPACITY_LIMIT]
                for s in stored.slots
                if PayloadType.IMPORT_CAPACITY_LIMIT in s.payloads
            ),
            None,
        )
        first_export = next(
            (
                s.payloads[PayloadType.EXPORT_CAPACITY_LIMIT]
                for s in stored.slots
                if PayloadType.EXPORT_CAPACITY_LIMIT in s.payloads
            ),
            None,
        )
        program = self.programs.get(event.programID)
        slot_now = stored.slot_at(now)
        import_w = slot_now.payloads.get(PayloadType.IMPORT_CAPACITY_LIMIT, first_import) if slot_now else first_import
        payload: dict[str, Any] = {
            "eventID": event.id,
            "programID": event.programID,
            "modificationDateTime": rfc3339(event.modificationDateTime),
            "status": stored.status.value,
            "applied": {
                "importLimitKW": None if import_w is None else self._floored(import_w, program) / 1000.0,
                "exportLimitKW": None if first_export is None else first_export / 1000.0,
                "effectiveFrom": rfc3339(stored.start),
                "effectiveUntil": None if stored.open_ended else rfc3339(stored.end),
            },
            "at": rfc3339(now),
        }
        if stored.reason is not None:
            payload["reason"] = stored.reason.value
        stored.last_response = payload
        self.changed.add(event.id)
        if stored.notification.x_dlm.responseRequired == "never":
            return Response(event.id, {})
        return Response(event.id, payload)

    def _answer_rejected(
        self,
        event_id: str,
        program_id: str | None,
        version: datetime | None,
        reason: Reason,
        now: datetime,
        pointer: str | None = None,
        detail: str = "",
    ) -> Response:
        payload: dict[str, Any] = {
            "eventID": event_id,
            "programID": program_id,
            "modificationDateTime": rfc3339(version) if version else None,
            "status": Status.REJECTED.value,
            "reason": reason.value,
            "detail": detail if len(detail) <= MAX_DETAIL_CHARS else detail[: MAX_DETAIL_CHARS - 1] + "…",
            "at": rfc3339(now),
        }
        if pointer is not None:
            payload["pointer"] = pointer
        return Response(event_id, payload)


def event_state(stored: StoredEvent) -> dict[str, Any]:
    """One event as persisted (the raw notification, its status and its last response)."""
    return {
        "raw": stored.raw,
        "status": stored.status.value,
        "reason": stored.reason.value if stored.reason else None,
        "lastResponse": stored.last_response,
    }


def _over(stored: StoredEvent, now: datetime) -> bool:
    expires_at = stored.notification.x_dlm.expiresAt
    return now >= stored.end or (expires_at is not None and now >= expires_at)


def _finite_w(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"DR state: {where} is {value!r}, not a finite number ≥ 0")
    return float(value)


def _priority(stored: StoredEvent) -> int:
    return stored.event.priority if stored.event.priority is not None else 1 << 30


def _slots(event: Event, offset_s: float) -> list[Slot]:
    """The event's intervals on the timeline; raises Rejection for what evdlm cannot apply."""
    units: dict[str, str] = {}
    for descriptor in event.payloadDescriptors:
        if descriptor.payloadType in {kind.value for kind in CAPACITY_TYPES}:
            if (descriptor.units or "KW").upper() not in POWER_UNITS:
                raise Rejection(
                    Reason.UNIT_MISMATCH, f"{descriptor.payloadType} in {descriptor.units}; expected KW or W"
                )
            units[descriptor.payloadType] = (descriptor.units or "KW").upper()
    period = event.intervalPeriod
    cursor = period.start if period is not None else None
    default_duration = parse_duration(period.duration) if period is not None and period.duration else None
    offset = timedelta(seconds=offset_s)
    slots: list[Slot] = []
    for interval in sorted(event.intervals, key=lambda i: i.id):
        own = interval.intervalPeriod
        start = own.start if own is not None and own.start is not None else cursor
        duration = parse_duration(own.duration) if own is not None and own.duration else default_duration
        if start is None or duration is None:
            raise Rejection(Reason.SCHEMA_INVALID, f"interval {interval.id} has no start or duration")
        end = datetime.max.replace(tzinfo=start.tzinfo) if duration == OPEN_ENDED else start + duration
        slots.append(
            Slot(
                start=start + offset,
                end=end if duration == OPEN_ENDED else end + offset,
                payloads=_payloads(interval.payloads, units),
            )
        )
        cursor = end
    return slots


def _payloads(values_maps: Iterable[Any], units: dict[str, str]) -> dict[PayloadType, float]:
    out: dict[PayloadType, float] = {}
    for values_map in values_maps:
        try:
            kind = PayloadType(values_map.type)
        except ValueError:
            raise Rejection(Reason.UNSUPPORTED_PAYLOAD, f"payload type {values_map.type}") from None
        value = values_map.values[0]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Rejection(Reason.SCHEMA_INVALID, f"{kind.value} value {value!r} is not a number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            # decode_json lets none through; a state file written by hand or another version might.
            raise Rejection(Reason.SCHEMA_INVALID, f"{kind.value} value {value!r} is not finite")
        if kind in CAPACITY_TYPES:
            if number < 0:
                raise Rejection(Reason.SCHEMA_INVALID, f"{kind.value} {number} is negative")
            number *= POWER_UNITS[units.get(kind.value, "KW")]
        elif kind is PayloadType.SIMPLE and (number != int(number) or not 0 <= number <= 3):
            raise Rejection(Reason.SCHEMA_INVALID, f"SIMPLE level {number} is not an integer 0-3")
        out[kind] = number
    return out
