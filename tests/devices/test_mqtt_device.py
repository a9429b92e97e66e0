"""A device that is an MQTT topic: payload parsing, staleness, broker restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from evdlm.config import parse_site_config
from evdlm.config.models import SiteConfig
from evdlm.core.clock import SystemClock
from evdlm.core.types import Quality
from evdlm.devices import DeviceHub
from evdlm.devices.mqtt_device import parse_mqtt_payload
from evdlm.mqtt import MqttClient
from evdlm.sim.broker import LocalBroker


@pytest.mark.parametrize(
    ("payload", "path", "unit", "power_w", "phases"),
    [
        (b"1234.5", None, "W", 1234.5, None),
        (b'{"power": {"total": 2.5}}', "power.total", "kW", 2500.0, None),
        (b'{"p": [1.0, 2.0, 3.0]}', "p", "kW", 6000.0, (1000.0, 2000.0, 3000.0)),
        (b'{"readings": [{"w": "-700"}]}', "readings.0.w", "W", -700.0, None),
    ],
)
def test_parse_payload(payload: bytes, path: str | None, unit: str, power_w: float, phases: object) -> None:
    m = parse_mqtt_payload(payload, path, unit)  # type: ignore[arg-type]
    assert m.power_w == pytest.approx(power_w)
    assert m.phase_power_w == phases


def test_parse_currents() -> None:
    assert parse_mqtt_payload(b"[10, 11, 12]", None, "A").phase_current_a == (10.0, 11.0, 12.0)
    assert parse_mqtt_payload(b"16", None, "A").phase_current_a == (16.0, None, None)


@pytest.mark.parametrize(
    ("payload", "path", "match"),
    [
        (b"not json", None, "not JSON"),
        (b'{"a": 1}', "b", "no 'b'"),
        (b'{"a": "high"}', "a", "not a number"),
        (b'{"a": [1, 2]}', "a", "3 phase values"),
        (b'{"a": true}', "a", "not a number"),
    ],
)
def test_bad_payloads_raise(payload: bytes, path: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_mqtt_payload(payload, path, "W")


def config_for(port: int) -> SiteConfig:
    text = f"""
schema_version: 1
site: {{id: t}}
grid: {{import_limit_kw: 50, phase_current_limit_a: 80, meter: grid}}
circuits: [{{id: main, phase_current_limit_a: 80}}]
chargers: []
devices:
  - {{name: grid, role: grid_meter, max_age_s: 0.5, invert_sign: true, mqtt: {{topic: site/meter, json_path: p, unit: kW}}}}
mqtt: {{host: 127.0.0.1, port: {port}, keepalive_s: 5}}
control: {{fallback_import_limit_kw: 20}}
"""
    return parse_site_config(text).config


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_mqtt_device_fresh_stale_invalid_and_broker_restart(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.devices.hub")
    clock = SystemClock()
    async with LocalBroker() as broker:
        config = config_for(broker.port)
        assert config.mqtt is not None
        site_client = MqttClient.from_config(config.mqtt, clock, Path("."), "evdlm-t")  # the gateway's, in a gateway
        async with (
            site_client,
            DeviceHub(config, clock, mqtt_client=site_client) as hub,
            MqttClient(broker.host, broker.port, backoff_initial_s=0.05, backoff_max_s=0.3) as pub,
        ):
            assert hub.mqtt is not None and await hub.mqtt.wait_connected(5.0)
            await pub.wait_connected(5.0)

            def grid_quality() -> Quality:
                return hub.snapshot(clock.now_s())["grid"].quality

            assert grid_quality() is Quality.MISSING
            # Exporting 4.2 kW, reported export-positive. Connected is not yet subscribed: a
            # message published before the hub's SUBACK is lost (not retained), so until it lands
            # it is sent again (a loaded machine took longer than one 5 s wait once).
            async with asyncio.timeout(15.0):
                while grid_quality() is not Quality.OK:
                    await pub.publish("site/meter", b'{"p": -4.2}')
                    with contextlib.suppress(TimeoutError):
                        await wait_for(lambda: grid_quality() is Quality.OK, timeout_s=1.0)
            assert hub.snapshot(clock.now_s())["grid"].power_w == pytest.approx(4200.0)
            await wait_for(lambda: grid_quality() is Quality.STALE)
            await pub.publish("site/meter", b'{"p": "NaN"}')
            await wait_for(lambda: grid_quality() is Quality.INVALID)
            await pub.publish("site/meter", b"garbage")
            await asyncio.sleep(0.1)
            assert grid_quality() is Quality.INVALID

            await broker.stop()
            await wait_for(lambda: not hub.mqtt.connected)  # type: ignore[union-attr]
            await broker.start()
            await wait_for(lambda: hub.mqtt.connects >= 2 and pub.connects >= 2, timeout_s=10.0)  # type: ignore[union-attr]
            await asyncio.sleep(0.1)
            await pub.publish("site/meter", b'{"p": 1.5}')
            await wait_for(lambda: grid_quality() is Quality.OK)
            assert hub.snapshot(clock.now_s())["grid"].power_w == pytest.approx(-1500.0)
    transitions = [r.getMessage() for r in caplog.records if "quality" in r.getMessage()]
    assert any("ok → stale" in t for t in transitions)
    assert any("→ invalid" in t for t in transitions)
