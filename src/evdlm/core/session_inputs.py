"""Session inputs: what an operator (or a fleet card's profile) says about the session at an EVSE (pure).

A car's departure time, the energy it still needs, its priority class and whether it may
charge at all come, per field, from the first of these that knows (docs/sessions.md):

1. a **session command** (MQTT ``…/sessions/{charger}/{evse}/set`` or ``POST /api/v1/sessions/…``),
   which holds for the transaction it was given for and vanishes when that transaction ends;
2. what the car announced over **ISO 15118** (OCPP 2.0.1 NotifyEVChargingNeeds), departure and
   energy only;
3. the **session profile** whose idTags match the session's idTag (``session_profiles``);
4. the **charger's** own defaults (``default_dwell_h``, ``default_energy_kwh``, ``priority``);
5. the built-in defaults of :mod:`evdlm.core.fleet_kernels` (departure and energy left unknown).

A dwell time becomes a departure: the session's start plus the dwell, so a car grows urgent
as its stay runs out. A paused car gets 0 A until resumed or its session ends.

Everything here is a value: :class:`SessionOverrides` is frozen, :func:`apply_command` returns a
new one (or the same one, on a rejection) and an :class:`Answer`; :func:`overlay` returns the
EVSE states the decision sees. Nothing here does I/O, awaits or reads a clock; the service
(:mod:`evdlm.sessions.service`) owns the latest value and the transports.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from evdlm.config.models import MAX_SESSION_ENERGY_KWH, SiteConfig
from evdlm.core.types import EvseKey as EvseKey
from evdlm.core.types import EvseState
from evdlm.mqtt.payload import PayloadError, decode_json

MAX_PAYLOAD_BYTES = 4096
MAX_PAYLOAD_DEPTH = 2  # a flat object; one more level so a nested value is named as a wrong type
MAX_AHEAD_S = 7 * 86400.0  # a departure further ahead is a typo (a year, ms for s)
MAX_ENERGY_KWH = MAX_SESSION_ENERGY_KWH
MAX_ID_CHARS = 64  # command_id and transaction_id
MAX_TIME_TEXT_CHARS = 40
FIELDS = frozenset({"departure", "energy_kwh", "priority", "pause", "resume", "transaction_id", "command_id"})


class Refusal(StrEnum):
    """Why a command was rejected, by kind (the HTTP API maps each to a status)."""

    BAD_REQUEST = "bad_request"  # not JSON, unknown field, wrong type, value out of range
    TOO_LARGE = "too_large"  # over MAX_PAYLOAD_BYTES
    UNKNOWN_EVSE = "unknown_evse"  # no such charger / EVSE in the config
    NO_SESSION = "no_session"  # nothing to apply it to, or another transaction than named


class CommandError(ValueError):
    def __init__(self, reason: str, kind: Refusal = Refusal.BAD_REQUEST) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


_UNSET: Any = object()  # a field the command does not mention (None: it clears the override)


@dataclass(frozen=True)
class SessionCommand:
    """A validated command. Each value field is ``_UNSET`` (not mentioned), None (clear) or the value."""

    departure_at_s: float | None = _UNSET
    energy_needed_wh: float | None = _UNSET
    priority: int | None = _UNSET
    paused: bool | None = None  # True: pause, False: resume, None: unchanged
    transaction_id: str | None = None
    command_id: str | None = None

    def summary(self) -> str:
        """The command's numbers, for the one log line per command."""
        parts = []
        if self.departure_at_s is not _UNSET:
            parts.append(f"departure={'clear' if self.departure_at_s is None else iso(self.departure_at_s)}")
        if self.energy_needed_wh is not _UNSET:
            energy = self.energy_needed_wh
            parts.append(f"energy_kwh={'clear' if energy is None else f'{energy / 1000:g}'}")
        if self.priority is not _UNSET:
            parts.append(f"priority={'clear' if self.priority is None else self.priority}")
        if self.paused is not None:
            parts.append("pause" if self.paused else "resume")
        if self.transaction_id is not None:
            parts.append(f"transaction={self.transaction_id}")
        return " ".join(parts) or "(no change)"


@dataclass(frozen=True)
class SessionOverride:
    """What commands set for one EVSE's transaction (None: not set by a command)."""

    transaction_id: str
    departure_at_s: float | None = None
    energy_needed_wh: float | None = None
    energy_base_wh: float | None = None  # the EVSE's meter when the energy was given (None: unknown)
    priority: int | None = None
    paused: bool = False

    @property
    def empty(self) -> bool:
        return (
            self.departure_at_s is None and self.energy_needed_wh is None and self.priority is None and not self.paused
        )


@dataclass(frozen=True)
class SessionOverrides:
    """Every EVSE's override, at most one each (keys are configured EVSEs only). Never mutated."""

    by_evse: Mapping[EvseKey, SessionOverride] = field(default_factory=dict)

    def get(self, key: EvseKey) -> SessionOverride | None:
        return self.by_evse.get(key)

    def __len__(self) -> int:
        return len(self.by_evse)


EMPTY = SessionOverrides()


@dataclass(frozen=True)
class Profile:
    name: str
    priority: int | None
    dwell_s: float | None
    energy_wh: float | None


@dataclass(frozen=True)
class ChargerDefaults:
    priority: int
    dwell_s: float | None
    energy_wh: float | None


@dataclass(frozen=True)
class SessionPolicy:
    """The config's side of session inputs: the EVSEs, the profiles by idTag, the chargers' defaults."""

    evses: frozenset[EvseKey]
    chargers: Mapping[str, ChargerDefaults]
    exact: Mapping[str, Profile]  # casefolded idTag → the first profile listing it
    patterns: tuple[tuple[str, Profile], ...]  # casefolded glob, in config order

    @staticmethod
    def from_config(config: SiteConfig) -> SessionPolicy:
        exact: dict[str, Profile] = {}
        patterns: list[tuple[str, Profile]] = []
        for item in config.session_profiles:
            profile = Profile(
                item.name,
                item.priority,
                None if item.default_dwell_h is None else item.default_dwell_h * 3600.0,
                None if item.default_energy_kwh is None else item.default_energy_kwh * 1000.0,
            )
            for tag in item.id_tags:
                folded = tag.casefold()
                if is_pattern(tag):
                    patterns.append((folded, profile))
                else:
                    exact.setdefault(folded, profile)
        chargers = {
            c.id: ChargerDefaults(
                c.priority,
                None if c.default_dwell_h is None else c.default_dwell_h * 3600.0,
                None if c.default_energy_kwh is None else c.default_energy_kwh * 1000.0,
            )
            for c in config.chargers
        }
        evses = frozenset((c.id, evse) for c in config.chargers for evse in range(1, c.evses + 1))
        return SessionPolicy(evses, chargers, exact, tuple(patterns))

    def profile_for(self, id_tag: str | None) -> Profile | None:
        """The profile of a session's idTag: an exact entry first, else the first matching pattern."""
        if id_tag is None:
            return None
        folded = id_tag.casefold()
        found = self.exact.get(folded)
        if found is not None:
            return found
        for pattern, profile in self.patterns:
            if fnmatch.fnmatchcase(folded, pattern):
                return profile
        return None


def is_pattern(tag: str) -> bool:
    return any(char in tag for char in "*?[")


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------- parsing


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError(f"{name} must be a number, not {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise CommandError(f"{name} must be finite")
    return number


def _type_name(value: Any) -> str:
    return {bool: "a boolean", str: "a string", list: "an array", dict: "an object", type(None): "null"}.get(
        type(value), "a number"
    )


def _text(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CommandError(f"{name} must be a string, not {_type_name(value)}")
    text = str(value)
    if not text or len(text) > MAX_ID_CHARS:
        raise CommandError(f"{name} must be 1 to {MAX_ID_CHARS} characters")
    return text


def _departure(value: Any, now_s: float) -> float:
    if isinstance(value, str):
        if len(value) > MAX_TIME_TEXT_CHARS:
            raise CommandError("departure is not an ISO 8601 time")
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise CommandError(f"departure {value!r} is not an ISO 8601 time (e.g. 2026-05-04T17:30:00Z)") from None
        if parsed.tzinfo is None:
            raise CommandError(f"departure {value!r} has no time zone: give UTC with a Z")
        departure_s = parsed.timestamp()
    else:
        departure_s = _number(value, "departure")
    if departure_s <= now_s:
        raise CommandError(f"departure {iso(departure_s) if departure_s > 0 else departure_s} is in the past")
    if departure_s - now_s > MAX_AHEAD_S:
        raise CommandError(f"departure {iso(departure_s)} is more than {MAX_AHEAD_S / 86400:g} days ahead")
    return departure_s


def parse_command(payload: bytes | Mapping[str, Any], now_s: float) -> SessionCommand:
    """A validated command from a raw payload (or an already decoded object); :class:`CommandError` otherwise.

    Fields: ``departure`` (ISO 8601 with a zone, or epoch s; within 7 days), ``energy_kwh``
    (0 < x ≤ 500), ``priority`` (integer 0–9), each null to clear; ``pause`` / ``resume``
    (booleans); ``transaction_id`` (the session meant); ``command_id`` (echoed).
    """
    if isinstance(payload, bytes | bytearray):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise CommandError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}", Refusal.TOO_LARGE)
        try:
            document = decode_json(bytes(payload), max_bytes=MAX_PAYLOAD_BYTES, max_depth=MAX_PAYLOAD_DEPTH)
        except PayloadError as exc:
            raise CommandError(str(exc)) from None
    else:
        document = payload
    if not isinstance(document, Mapping):
        raise CommandError(f"a command is a JSON object, not {_type_name(document)}")
    unknown = sorted(str(name)[:40] for name in document if name not in FIELDS)
    if unknown:
        raise CommandError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(FIELDS))})")
    values: dict[str, Any] = {}
    if "command_id" in document:
        values["command_id"] = _text(document["command_id"], "command_id")
    if "transaction_id" in document:
        values["transaction_id"] = _text(document["transaction_id"], "transaction_id")
    if "departure" in document:
        raw = document["departure"]
        values["departure_at_s"] = None if raw is None else _departure(raw, now_s)
    if "energy_kwh" in document:
        raw = document["energy_kwh"]
        if raw is not None:
            energy = _number(raw, "energy_kwh")
            if not 0.0 < energy <= MAX_ENERGY_KWH:
                raise CommandError(f"energy_kwh {energy:g} is not above 0 and at most {MAX_ENERGY_KWH:g}")
            values["energy_needed_wh"] = energy * 1000.0
        else:
            values["energy_needed_wh"] = None
    if "priority" in document:
        raw = document["priority"]
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int)):
            raise CommandError(f"priority must be an integer 0 to 9, not {_type_name(raw)}")
        if raw is not None and not 0 <= raw <= 9:
            raise CommandError(f"priority {raw} is not 0 to 9 (0 = highest)")
        values["priority"] = raw
    pause, resume = document.get("pause"), document.get("resume")
    for name, flag in (("pause", pause), ("resume", resume)):
        if name in document and not isinstance(flag, bool):
            raise CommandError(f"{name} must be true or false, not {_type_name(flag)}")
    if pause is True and resume is True:
        raise CommandError("pause and resume together")
    if pause is not None or resume is not None:
        values["paused"] = bool(pause) if pause is not None else not resume
    return SessionCommand(**values)


# ---------------------------------------------------------------------------------- applying


@dataclass(frozen=True)
class Answer:
    """The reply to one command: accepted or rejected with a reason, and the session's inputs after it."""

    accepted: bool
    reason: str
    charger_id: str
    evse_id: int
    command_id: str | None = None
    transaction_id: str | None = None
    inputs: dict[str, Any] | None = None
    refusal: Refusal | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accepted": self.accepted,
            "result": "accepted" if self.accepted else "rejected",
            "reason": self.reason,
            "charger_id": self.charger_id,
            "evse_id": self.evse_id,
            "transaction_id": self.transaction_id,
            "inputs": self.inputs,
        }
        if self.command_id is not None:
            out["command_id"] = self.command_id
        return out


def session_of(state: EvseState | None) -> str | None:
    """The transaction running at an EVSE (None: no session an override could bind to)."""
    if state is None or state.transaction_id is None or not (state.charging or state.connected):
        return None
    return state.transaction_id


def submit(
    overrides: SessionOverrides,
    policy: SessionPolicy,
    states: Mapping[EvseKey, EvseState],
    key: EvseKey,
    payload: bytes | Mapping[str, Any],
    now_s: float,
) -> tuple[SessionOverrides, Answer]:
    """Parse and apply one command; a rejection returns ``overrides`` itself, unchanged."""
    command_id = _peek_command_id(payload)
    try:
        command = parse_command(payload, now_s)
    except CommandError as exc:
        state = states.get(key)
        return overrides, Answer(
            False, exc.reason, key[0], key[1], command_id, session_of(state), _inputs_or_none(state, overrides, policy, key), exc.kind
        )  # fmt: skip
    return apply_command(overrides, policy, states, key, command, now_s)


def _peek_command_id(payload: bytes | Mapping[str, Any]) -> str | None:
    """The command id of a payload about to be rejected, when it has a usable one (to echo it)."""
    document: Any = payload
    if isinstance(payload, bytes | bytearray):
        try:
            document = decode_json(bytes(payload), max_bytes=MAX_PAYLOAD_BYTES, max_depth=MAX_PAYLOAD_DEPTH)
        except PayloadError:
            return None
    if isinstance(document, Mapping):
        value = document.get("command_id")
        if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS:
            return value
    return None


def _inputs_or_none(
    state: EvseState | None, overrides: SessionOverrides, policy: SessionPolicy, key: EvseKey
) -> dict[str, Any] | None:
    return None if state is None or key not in policy.evses else describe(state, overrides.get(key), policy)


def apply_command(
    overrides: SessionOverrides,
    policy: SessionPolicy,
    states: Mapping[EvseKey, EvseState],
    key: EvseKey,
    command: SessionCommand,
    now_s: float,
) -> tuple[SessionOverrides, Answer]:
    """``overrides`` with ``command`` applied to the session at ``key``, and the answer.

    Idempotent: the same command twice gives the same overrides. A rejection changes nothing.
    """
    charger_id, evse_id = key

    def reject(reason: str, kind: Refusal, transaction: str | None = None) -> tuple[SessionOverrides, Answer]:
        state = states.get(key)
        return overrides, Answer(
            False, reason, charger_id, evse_id, command.command_id, transaction, _inputs_or_none(state, overrides, policy, key), kind
        )  # fmt: skip

    if key not in policy.evses:
        return reject(f"no EVSE {charger_id}/{evse_id} in the site config", Refusal.UNKNOWN_EVSE)
    state = states.get(key)
    transaction = session_of(state)
    if state is None or transaction is None:
        return reject(f"no session at {charger_id}/{evse_id}", Refusal.NO_SESSION)
    if command.transaction_id is not None and command.transaction_id != transaction:
        return reject(
            f"transaction {command.transaction_id} is not the session at {charger_id}/{evse_id} (now {transaction})",
            Refusal.NO_SESSION,
            transaction,
        )
    current = overrides.get(key)
    if current is None or current.transaction_id != transaction:
        current = SessionOverride(transaction)
    updated = current
    if command.departure_at_s is not _UNSET:
        updated = replace(updated, departure_at_s=command.departure_at_s)
    if command.energy_needed_wh is not _UNSET:
        base = None if command.energy_needed_wh is None else state.energy_wh
        updated = replace(updated, energy_needed_wh=command.energy_needed_wh, energy_base_wh=base)
    if command.priority is not _UNSET:
        updated = replace(updated, priority=command.priority)
    if command.paused is not None:
        updated = replace(updated, paused=command.paused)
    by_evse = dict(overrides.by_evse)
    if updated.empty:
        by_evse.pop(key, None)
    else:
        by_evse[key] = updated
    result = SessionOverrides(by_evse) if by_evse != overrides.by_evse else overrides
    return result, Answer(
        True,
        command.summary(),
        charger_id,
        evse_id,
        command.command_id,
        transaction,
        describe(state, result.get(key), policy),
    )


def expire(overrides: SessionOverrides, states: Mapping[EvseKey, EvseState]) -> SessionOverrides:
    """``overrides`` without those whose transaction is no longer the one running (the same object when none go)."""
    gone = [key for key, item in overrides.by_evse.items() if session_of(states.get(key)) != item.transaction_id]
    if not gone:
        return overrides
    return SessionOverrides({key: item for key, item in overrides.by_evse.items() if key not in gone})


# ---------------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class Resolved:
    """One session's inputs and where each came from."""

    departure_at_s: float | None
    departure_source: str  # command, vehicle, profile, charger, default
    energy_needed_wh: float | None
    energy_source: str
    priority: int | None  # None: the charger's (SlotTable.priority)
    priority_source: str  # command, profile, charger
    paused: bool
    profile: str | None


def resolve(state: EvseState, override: SessionOverride | None, policy: SessionPolicy) -> Resolved:
    """Per field, the first of: command > ISO 15118 (the car) > idTag profile > charger > built-in default."""
    if override is not None and override.transaction_id != session_of(state):
        override = None
    profile = policy.profile_for(state.id_tag)
    charger = policy.chargers.get(state.charger_id)
    started = state.session_started_at_s

    departure, departure_source = None, "default"
    if override is not None and override.departure_at_s is not None:
        departure, departure_source = override.departure_at_s, "command"
    elif state.departure_at_s is not None:
        departure, departure_source = state.departure_at_s, "vehicle"
    elif started is not None and profile is not None and profile.dwell_s is not None:
        departure, departure_source = started + profile.dwell_s, "profile"
    elif started is not None and charger is not None and charger.dwell_s is not None:
        departure, departure_source = started + charger.dwell_s, "charger"

    energy, energy_source = None, "default"
    if override is not None and override.energy_needed_wh is not None:
        delivered = 0.0
        if override.energy_base_wh is not None and state.energy_wh is not None:
            delivered = max(0.0, state.energy_wh - override.energy_base_wh)
        energy, energy_source = max(0.0, override.energy_needed_wh - delivered), "command"
    elif state.energy_needed_wh is not None:
        energy, energy_source = state.energy_needed_wh, "vehicle"
    elif profile is not None and profile.energy_wh is not None:
        energy, energy_source = profile.energy_wh, "profile"
    elif charger is not None and charger.energy_wh is not None:
        energy, energy_source = charger.energy_wh, "charger"

    priority: int | None = None
    priority_source = "charger"
    if override is not None and override.priority is not None:
        priority, priority_source = override.priority, "command"
    elif profile is not None and profile.priority is not None:
        priority, priority_source = profile.priority, "profile"
    paused = override is not None and override.paused
    return Resolved(
        departure,
        departure_source,
        energy,
        energy_source,
        priority,
        priority_source,
        paused,
        None if profile is None else profile.name,
    )


def overlay_state(state: EvseState, override: SessionOverride | None, policy: SessionPolicy) -> EvseState:
    """``state`` as the decision should see it (the same object when nothing changes)."""
    if session_of(state) is None:
        return state
    resolved = resolve(state, override, policy)
    if (
        resolved.departure_at_s == state.departure_at_s
        and resolved.energy_needed_wh == state.energy_needed_wh
        and resolved.priority == state.priority
        and resolved.paused == state.paused
    ):
        return state
    return replace(
        state,
        departure_at_s=resolved.departure_at_s,
        energy_needed_wh=resolved.energy_needed_wh,
        priority=resolved.priority,
        paused=resolved.paused,
    )


def overlay(
    states: Mapping[EvseKey, EvseState], overrides: SessionOverrides, policy: SessionPolicy
) -> dict[EvseKey, EvseState]:
    """Every EVSE state with its session inputs resolved (overrides of ended transactions ignored)."""
    return {key: overlay_state(state, overrides.get(key), policy) for key, state in states.items()}


def describe(state: EvseState, override: SessionOverride | None, policy: SessionPolicy) -> dict[str, Any]:
    """One EVSE's session inputs as JSON (answers, the state topic, the HTTP API)."""
    transaction = session_of(state)
    out: dict[str, Any] = {
        "charger_id": state.charger_id,
        "evse_id": state.evse_id,
        "session": transaction is not None,
        "transaction_id": transaction,
    }
    if transaction is None:
        return out
    resolved = resolve(state, override, policy)
    charger = policy.chargers.get(state.charger_id)
    priority = resolved.priority if resolved.priority is not None else (charger.priority if charger else None)
    started = state.session_started_at_s
    out.update(
        id_tag=state.id_tag,
        profile=resolved.profile,
        session_started_at=None if started is None else iso(started),
        departure=None if resolved.departure_at_s is None else iso(resolved.departure_at_s),
        departure_s=resolved.departure_at_s,
        departure_source=resolved.departure_source,
        energy_kwh=None if resolved.energy_needed_wh is None else round(resolved.energy_needed_wh / 1000.0, 3),
        energy_source=resolved.energy_source,
        priority=priority,
        priority_source=resolved.priority_source,
        paused=resolved.paused,
    )
    return out
