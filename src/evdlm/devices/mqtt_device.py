"""A device that is an MQTT topic: pure payload parsing into a :class:`Measurement`.

Payload: a JSON document (or a bare number when ``json_path`` is None). ``json_path`` is a
dotted path (``power.total``; list items by index, ``phases.0``). The value found is a number
(the total) or a list of three numbers (per site phase L1..L3). Units: ``W`` and ``kW`` give
power (a per-phase list also gives the total as its sum), ``A`` gives phase currents (a bare
number is the current of L1).

Payloads are hostile input: decoded within a size and nesting cap, and a number that is NaN,
infinite or out of range (``NaN``, ``1e999``, ``"inf"``) is refused with a reason like any other
unusable payload: the hub turns every ``ValueError`` into an INVALID reading, never a crash.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from evdlm.devices.codec import Measurement
from evdlm.mqtt.payload import PayloadError, decode_json

MAX_PAYLOAD_BYTES = 16 * 1024  # a meter's telemetry is a few hundred bytes
MAX_DEPTH = 16

MqttUnit = Literal["W", "kW", "A"]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, str) and len(value) > 64:
        raise ValueError(f"not a number: {value[:40]!r}…")
    try:
        # Numeric strings ("1234.5") are common in home-automation payloads.
        number = float(value)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _finite(number: float) -> float:
    if not math.isfinite(number):  # 1e308 kW is finite; in W it is not
        raise ValueError(f"{number} out of range")
    return number


def extract_json_path(document: Any, json_path: str | None) -> Any:
    if json_path is None:
        return document
    node = document
    for part in json_path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ValueError(f"path {json_path!r}: no {part!r}")
    return node


def parse_mqtt_payload(payload: bytes, json_path: str | None, unit: MqttUnit) -> Measurement:
    """Decode one telemetry message (pure); ``ValueError`` when it is not what the config says."""
    try:
        document = decode_json(payload, max_bytes=MAX_PAYLOAD_BYTES, max_depth=MAX_DEPTH)
    except PayloadError as exc:
        raise ValueError(f"payload unusable: {exc} ({payload[:40]!r})") from None
    value = extract_json_path(document, json_path)
    scale = 1000.0 if unit == "kW" else 1.0
    if isinstance(value, list):
        if len(value) != 3:
            raise ValueError(f"expected 3 phase values, got {len(value)}")
        a, b, c = (_finite(_number(item) * scale) for item in value)
        if unit == "A":
            return Measurement(phase_current_a=(a, b, c))
        total = a + b + c
        return Measurement(power_w=total, phase_power_w=(a, b, c))
    number = _finite(_number(value) * scale)
    if unit == "A":
        return Measurement(phase_current_a=(number, None, None))
    return Measurement(power_w=number)
