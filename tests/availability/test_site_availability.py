"""A simulated site with real OCPP stations: a station loses power and comes back; the gateway's
ledger counts its EVSE offline for that time (within a cycle and the reconnect), the others up,
and saves the ledger at stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evdlm.availability.store import parse_ledger
from evdlm.config import load_site_config
from evdlm.config.models import AvailabilitySettings
from evdlm.core.availability import month_of
from evdlm.core.clock import ScaledClock
from evdlm.data import DEMO_SITE_PATH
from evdlm.sim.site import simulated_site, until

SPEED = 10.0
AFTERNOON_S = 1_781_616_600.0  # 2026-06-16 13:30 UTC (the simulated PV follows the clock's hour)
OUTAGE_S = 60.0


@pytest.mark.timeout(90)
async def test_a_station_offline_and_back(tmp_path: Path) -> None:
    config = load_site_config(DEMO_SITE_PATH).config
    config = config.model_copy(update={"availability": AvailabilitySettings(save_every_s=30)})
    clock = ScaledClock(AFTERNOON_S, SPEED)
    async with simulated_site(config, clock, workdir=tmp_path) as site:
        site.start_controller()
        gateway = site.gateway
        assert gateway.availability is not None
        ledger = gateway.availability.ledger
        assert await until(clock, lambda: ("CP03", 1) in ledger.ports, 30)
        await clock.sleep(10)
        await site.fleet.kill_station("CP03")
        killed_s = clock.now_s()
        assert await until(clock, lambda: ledger.ports[("CP03", 1)].last_kind.value == "offline", 10, step_s=0.2)
        await clock.sleep(OUTAGE_S - (clock.now_s() - killed_s))
        site.fleet.start_station("CP03")
        assert await until(clock, lambda: ledger.ports[("CP03", 1)].last_kind.value == "up", 30, step_s=0.2)
        back_s = clock.now_s()
        await clock.sleep(5)
        await site.stop_controller()
        month = month_of(clock.now_s())
        offline_s = ledger.seconds(("CP03", 1), month)["offline"]
        # From the kill until it is seen again: the outage, within a cycle or two either side.
        assert OUTAGE_S - 3 <= offline_s <= back_s - killed_s + 3, (offline_s, back_s - killed_s)
        assert ledger.ports[("CP03", 1)].months[month].causes == {"offline:no connection": offline_s}
        assert ledger.outage_count(("CP03", 1), month) == 1
        for key in ledger.ports:
            if key != ("CP03", 1):
                assert ledger.seconds(key, month)["offline"] == 0, key
        metrics = gateway.metrics.registry.get_sample_value(
            "evdlm_port_availability_seconds_total",
            {"site": config.site.id, "charger": "CP03", "evse": "1", "class": "offline"},
        )
        assert metrics == pytest.approx(offline_s)
    # Saved at stop (the gateway closed with the site).
    saved = parse_ledger(json.loads((tmp_path / "var/availability.json").read_text()))
    assert saved.seconds(("CP03", 1), month)["offline"] == pytest.approx(offline_s)
