"""DR notifications and responses (OpenADR 3 event shape over MQTT), parsed and validated.

The notification keeps OpenADR 3's own field names so a server with an MQTT binding, or a
bridge, feeds evdlm without translation. Unknown OpenADR fields are tolerated (the standard
has more than evdlm uses); the fields evdlm acts on are strictly typed, and timestamps must
carry a time zone. Payloads are decoded within bounds (:func:`evdlm.mqtt.payload.decode_json`:
size, nesting depth, finite numbers), so no message can exhaust memory or the stack, and no
NaN or infinity reaches a limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from evdlm.mqtt.payload import PayloadError, decode_json, pointer_of

MAX_MESSAGE_BYTES = 64 * 1024  # an OpenADR event with a day of 5-minute intervals is ~20 kB
MAX_DEPTH = 16  # a notification nests 7 levels deep (/object/intervals/0/payloads/0/values/0)

OPEN_ENDED = timedelta.max
_DURATION = re.compile(
    r"^P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """ISO 8601 duration; ``P9999Y`` (OpenADR's "until further notice") is :data:`OPEN_ENDED`."""
    match = _DURATION.match(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    parts = {key: float(value) for key, value in match.groupdict().items() if value is not None}
    if parts.get("years", 0) >= 9999:
        return OPEN_ENDED
    days = parts.get("years", 0) * 365 + parts.get("months", 0) * 30 + parts.get("weeks", 0) * 7 + parts.get("days", 0)
    return timedelta(
        days=days, hours=parts.get("hours", 0), minutes=parts.get("minutes", 0), seconds=parts.get("seconds", 0)
    )


class PayloadType(StrEnum):
    IMPORT_CAPACITY_LIMIT = "IMPORT_CAPACITY_LIMIT"
    EXPORT_CAPACITY_LIMIT = "EXPORT_CAPACITY_LIMIT"
    PRICE = "PRICE"
    EXPORT_PRICE = "EXPORT_PRICE"
    SIMPLE = "SIMPLE"
    ALERT_GRID_EMERGENCY = "ALERT_GRID_EMERGENCY"


CAPACITY_TYPES = (PayloadType.IMPORT_CAPACITY_LIMIT, PayloadType.EXPORT_CAPACITY_LIMIT)
POWER_UNITS = {"KW": 1000.0, "W": 1.0}


class Status(StrEnum):
    RECEIVED = "RECEIVED"
    OPT_IN = "OPT_IN"
    OPT_OUT = "OPT_OUT"
    REJECTED = "REJECTED"
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    SUPERSEDED = "SUPERSEDED"


class Reason(StrEnum):
    SCHEMA_INVALID = "SCHEMA_INVALID"
    EXPIRED = "EXPIRED"
    NOT_TARGETED = "NOT_TARGETED"
    UNSUPPORTED_PAYLOAD = "UNSUPPORTED_PAYLOAD"
    UNIT_MISMATCH = "UNIT_MISMATCH"
    STALE_VERSION = "STALE_VERSION"
    OPERATOR_OVERRIDE = "OPERATOR_OVERRIDE"
    CLAMPED_TO_FLOOR = "CLAMPED_TO_FLOOR"
    CLOCK_SKEW = "CLOCK_SKEW"  # not in the base list: created too far in the future (rule 11)
    TOO_MANY_EVENTS = "TOO_MANY_EVENTS"  # not in the base list: the bounded event store is full


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PayloadDescriptor(_Tolerant):
    payloadType: str
    units: str | None = None
    currency: str | None = None


class IntervalPeriod(_Tolerant):
    start: AwareDatetime | None = None
    duration: str | None = None
    randomizeStart: str | None = None

    @field_validator("duration", "randomizeStart")
    @classmethod
    def _iso_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


class ValuesMap(_Tolerant):
    type: str
    values: list[float | int | str | bool] = Field(min_length=1)


class Interval(_Tolerant):
    id: int
    intervalPeriod: IntervalPeriod | None = None
    payloads: list[ValuesMap] = Field(min_length=1)


class Event(_Tolerant):
    id: str = Field(min_length=1, max_length=128)
    programID: str = Field(min_length=1, max_length=128)
    priority: int | None = Field(default=None, ge=0)
    modificationDateTime: AwareDatetime
    targets: list[str] | None = None
    payloadDescriptors: list[PayloadDescriptor] = Field(default_factory=list)
    intervalPeriod: IntervalPeriod | None = None
    intervals: list[Interval] = Field(min_length=1)


class DlmExtension(_Strict):
    schemaVersion: Literal[1]
    expiresAt: AwareDatetime | None = None
    responseRequired: Literal["always", "never"] = "always"


class Notification(_Tolerant):
    objectType: Literal["EVENT"]
    operation: Literal["CREATE", "UPDATE", "DELETE"]
    object: Event
    x_dlm: DlmExtension = Field(alias="x-dlm")


@dataclass(frozen=True)
class Invalid:
    """A message that failed validation: why, where (JSON pointer), and the event id if recoverable."""

    pointer: str
    message: str
    event_id: str | None
    program_id: str | None


@dataclass(frozen=True)
class Parsed:
    """A valid notification and the JSON document it came from (stored and persisted as is)."""

    notification: Notification
    raw: dict[str, Any]


def _pointer(loc: tuple[Any, ...]) -> str:
    return pointer_of(list(loc))


def parse_notification(
    payload: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, max_depth: int = MAX_DEPTH
) -> Parsed | Invalid:
    """Validate a notification; never raises on bad input.

    Parameters
    ----------
    payload : bytes
        The message body.
    max_bytes, max_depth : int
        Bounds of the JSON decoding (:func:`evdlm.mqtt.payload.decode_json`).

    Returns
    -------
    Parsed | Invalid
        The notification, or why not with the JSON pointer of the first error (NaN, infinity
        and out-of-range numbers included).
    """
    try:
        data = decode_json(payload, max_bytes=max_bytes, max_depth=max_depth)
    except PayloadError as exc:
        return Invalid(exc.pointer, exc.message, None, None)
    event = data.get("object") if isinstance(data, dict) else None
    event_id = event.get("id") if isinstance(event, dict) and isinstance(event.get("id"), str) else None
    program_id = event.get("programID") if isinstance(event, dict) and isinstance(event.get("programID"), str) else None
    if event_id is not None and len(event_id) > 128:
        event_id = None  # answered on the topic's id instead; never echoed at any length
    if program_id is not None and len(program_id) > 128:
        program_id = None
    try:
        notification = Notification.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        return Invalid(_pointer(tuple(first["loc"])), str(first["msg"]), event_id, program_id)
    return Parsed(notification, data)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
