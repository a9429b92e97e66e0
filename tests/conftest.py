"""Shared fixtures. Keep this small: module-specific fixtures live next to their tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from evdlm.mqtt.broker import mqtt_broker as start_mqtt_broker


@pytest.fixture
async def mqtt_broker() -> AsyncIterator[tuple[str, int]]:
    """A real MQTT broker on 127.0.0.1 (mosquitto, else embedded amqtt): ``(host, port)``."""
    async with start_mqtt_broker() as address:
        yield address
