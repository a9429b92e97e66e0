"""The dynamic price feed over a real MQTT broker: retained at start, replaced by a newer one,
hostile messages refused with the prices in force kept, floods bounded, and the last good feed
restored from its file when the broker has nothing retained."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from evdlm.config import parse_site_config
from evdlm.config.models import SiteConfig
from evdlm.core.clock import SystemClock
from evdlm.mqtt.client import MqttClient
from evdlm.observability import Metrics
from evdlm.prices import PriceFeedBounds, PriceFeedService

SITE = """\
site: {id: site1}
grid: {import_limit_kw: 100, phase_current_limit_a: 160}
circuits: [{id: main, phase_current_limit_a: 160}]
mqtt: {host: 127.0.0.1}
control: {fallback_import_limit_kw: 50}
tariffs:
  currency: EUR
  default_import_price_per_kwh: 0.30
  export_price_per_kwh: 0.05
  price_feed: {topic: "prices/{site}/day-ahead", state_file: prices.json}
"""
TOPIC = "prices/site1/day-ahead"
BOUNDS = PriceFeedBounds(burst=6.0)


def site(port: int) -> SiteConfig:
    return parse_site_config(SITE.replace("host: 127.0.0.1", f"host: 127.0.0.1, port: {port}")).config


def feed(price: float, hours: int = 24, *, currency: str = "EUR") -> bytes:
    start_s = time.time() // 3600 * 3600
    slots = [
        {
            "start": datetime.fromtimestamp(start_s + h * 3600, UTC).isoformat(),
            "end": datetime.fromtimestamp(start_s + (h + 1) * 3600, UTC).isoformat(),
            "import_per_kwh": price,
            "export_per_kwh": price / 2,
        }
        for h in range(hours)
    ]
    return json.dumps({"currency": currency, "slots": slots}).encode()


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_the_feed_over_a_real_broker(mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    host, port = mqtt_broker
    config = site(port)
    metrics = Metrics("site1")
    async with (
        MqttClient(host, port, client_id="market") as market,
        MqttClient(host, port, client_id="gateway") as gateway,
    ):
        assert await market.wait_connected(5) and await gateway.wait_connected(5)
        await market.publish(TOPIC, feed(0.12), qos=1, retain=True)
        # Six messages at once (the default is three), then one per 10 s.
        service = PriceFeedService(config, gateway, SystemClock(), tmp_path, metrics=metrics, bounds=BOUNDS)
        async with service:
            # The retained day-ahead prices arrive on subscribe.
            await wait_for(lambda: service.outcomes["accepted"] == 1)
            now_s = time.time()
            assert service.schedule().import_price_at_s(now_s) == 0.12
            assert service.schedule().export_price_at_s(now_s) == 0.06
            assert service.covered_ahead_s() > 22 * 3600
            # A newer publication replaces it whole.
            await market.publish(TOPIC, feed(0.08, hours=2), qos=1)
            await wait_for(lambda: service.outcomes["accepted"] == 2)
            assert service.schedule().import_price_at_s(time.time()) == 0.08
            assert service.schedule().import_price_at_s(time.time() + 3 * 3600) == 0.30  # the table after it
            # Hostile messages change nothing: NaN, the wrong currency, not JSON.
            for count, bad in enumerate(
                (
                    feed(0.01).replace(b'"import_per_kwh": 0.01', b'"import_per_kwh": NaN'),
                    feed(0.01, currency="USD"),
                    b"\x00garbage",
                ),
                start=1,
            ):
                # One at a time: a message still pending when a newer one comes is superseded.
                await market.publish(TOPIC, bad, qos=1)
                await wait_for(lambda count=count: service.outcomes["rejected"] == count)
            assert service.schedule().import_price_at_s(time.time()) == 0.08
            # Too large: refused in the handler, never parsed.
            await market.publish(TOPIC, b"x" * 300_000, qos=1)
            await wait_for(lambda: service.outcomes["too_large"] == 1)
            # A flood: the bucket's last two tokens, then one per 10 s; the rest is dropped and counted.
            started = time.monotonic()
            for index in range(200):
                await market.publish(TOPIC, feed(0.5 + index / 1000), qos=0)
            await wait_for(lambda: sum(service.outcomes.values()) >= 3 + 3 + 1 + 200 - 10, timeout_s=15)
            await asyncio.sleep(0.5)
            assert service.outcomes["rate_limited"] >= 197
            assert service.outcomes["accepted"] + service.outcomes["superseded"] <= 2 + 2 + 1
            assert time.monotonic() - started < 15
            # The prices in force are still a whole feed (the last accepted one).
            assert 0.0 < service.schedule().import_price_at_s(time.time()) < 1.0
            in_force = service.schedule().import_price_at_s(time.time())
        exposition = metrics.registry.get_sample_value(
            "evdlm_price_feed_messages_total", {"site": "site1", "outcome": "rejected"}
        )
        assert exposition == 3.0
        saved = json.loads((tmp_path / "prices.json").read_text())
        assert saved["format"] == 1 and saved["message"]["currency"] == "EUR"
        # The broker forgets the retained message; a restart takes the prices from the file.
        await market.publish(TOPIC, b"", qos=1, retain=True)
        restarted = PriceFeedService.for_config(config, gateway, SystemClock(), tmp_path, None)
        assert restarted is not None
        async with restarted:
            assert restarted.schedule().import_price_at_s(time.time()) == in_force
            await asyncio.sleep(0.5)
            assert restarted.outcomes["accepted"] == 0
