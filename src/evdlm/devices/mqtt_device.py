"""A device that is an MQTT topic: pure payload parsing into a :class:`Measurement`.

Payload: a JSON document (or a bare number when ``json_path`` is None). ``json_path`` is a
dotted path (``power.total``; list items by index, ``phases.0``). The value found is a number
(the total) or a list of three numbers (per site phase L1..L3). Units: ``W`` and ``kW`` give
power (a per-phase list also gives the total as its sum), ``A`` gives phase currents (a bare
number is the current of L1).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from evdlm.devices.codec import Measurement

MqttUnit = Literal["W", "kW", "A"]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    try:
        # Numeric strings ("1234.5") are common in home-automation payloads.
        return float(value)
    except ValueError as exc:
        raise ValueError(f"not a number: {value!r}") from exc


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
        document = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"payload is not JSON: {payload[:40]!r}") from exc
    value = extract_json_path(document, json_path)
    scale = 1000.0 if unit == "kW" else 1.0
    if isinstance(value, list):
        if len(value) != 3:
            raise ValueError(f"expected 3 phase values, got {len(value)}")
        a, b, c = (_number(item) * scale for item in value)
        if unit == "A":
            return Measurement(phase_current_a=(a, b, c))
        total = a + b + c
        return Measurement(power_w=total, phase_power_w=(a, b, c))
    number = _number(value) * scale
    if unit == "A":
        return Measurement(phase_current_a=(number, None, None))
    return Measurement(power_w=number)
