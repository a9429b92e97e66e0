"""MQTT device telemetry that cannot be used: an INVALID reading with a reason, never a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from evdlm.config import parse_site_config
from evdlm.core.clock import SystemClock
from evdlm.core.types import Quality
from evdlm.devices import DeviceHub
from evdlm.devices.mqtt_device import parse_mqtt_payload
from evdlm.mqtt import MqttClient

HOSTILE = [
    (b'{"p": NaN}', "p", "not finite or out of range"),
    (b'{"p": Infinity}', "p", "not finite or out of range"),
    (b'{"p": 1e999}', "p", "not finite or out of range"),
    (b'{"p": [1, NaN, 2]}', "p", "not finite or out of range"),
    (b'{"p": "NaN"}', "p", "not a finite number"),
    (b'{"p": "-inf"}', "p", "not a finite number"),
    (b'{"p": 1e308}', "p", "out of range"),  # finite in kW, infinite in W
    (b'{"p": 123456789012345678901234567890}', "p", "not finite or out of range"),
    (b'{"p": "' + b"1" * 500 + b'"}', "p", "not a number"),
    (b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b', "p": 1}', "p", "nested deeper"),
    (b'{"p": 1, "pad": "' + b"x" * 20_000 + b'"}', "p", "byte limit"),
]


@pytest.mark.parametrize(("payload", "path", "reason"), HOSTILE)
def test_hostile_telemetry_is_refused_with_a_reason(payload: bytes, path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_mqtt_payload(payload, path, "kW")


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_the_hub_marks_hostile_telemetry_invalid_and_keeps_going(mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    config = parse_site_config(
        f"""
schema_version: 1
site: {{id: t}}
grid: {{import_limit_kw: 50, phase_current_limit_a: 80, meter: grid}}
circuits: [{{id: main, phase_current_limit_a: 80}}]
devices:
  - {{name: grid, role: grid_meter, max_age_s: 30, mqtt: {{topic: site/meter, json_path: p, unit: kW}}}}
mqtt: {{host: {host}, port: {port}}}
control: {{fallback_import_limit_kw: 20}}
"""
    ).config
    clock = SystemClock()
    assert config.mqtt is not None
    site_client = MqttClient.from_config(config.mqtt, clock, Path("."), "evdlm-t")  # the gateway's, in a gateway
    async with (
        site_client,
        DeviceHub(config, clock, mqtt_client=site_client) as hub,
        MqttClient(host, port, client_id="meter") as meter,
    ):
        assert hub.mqtt is not None and await hub.mqtt.wait_connected(5) and await meter.wait_connected(5)

        def grid() -> tuple[Quality, str | None]:
            reading = hub.snapshot(clock.now_s())["grid"]
            return reading.quality, reading.reason

        for payload, _, reason in HOSTILE:
            await meter.publish("site/meter", b'{"p": 2.5}')
            await wait_for(lambda: grid()[0] is Quality.OK)
            await meter.publish("site/meter", payload)
            await wait_for(lambda: grid()[0] is Quality.INVALID)
            assert reason in (grid()[1] or ""), grid()
        assert hub.mqtt.connected
