"""GET /api/v1/availability through the API app (auth and JSON errors from evdlm.api.http)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from evdlm.api.availability_routes import add_availability_routes
from evdlm.api.http import create_app
from evdlm.availability.service import AvailabilityService
from evdlm.config import parse_site_config
from evdlm.core.availability import Availability
from evdlm.core.clock import FakeClock
from evdlm.observability import Metrics

SITE = """\
site: {id: s}
grid: {import_limit_kw: 50, phase_current_limit_a: 100}
circuits: [{id: a, phase_current_limit_a: 63}]
chargers: [{id: A1, ocpp_version: "1.6", circuit: a}]
control: {fallback_import_limit_kw: 20}
availability: {}
"""


async def test_the_route(tmp_path: Path) -> None:
    start_s = datetime(2026, 11, 5, 10, tzinfo=UTC).timestamp()
    clock = FakeClock(start_s)
    service = AvailabilityService(parse_site_config(SITE).config, clock, tmp_path, Metrics("s"))
    service.ledger.observe(start_s, {("A1", 1): (Availability.UP, "")})
    service.ledger.observe(start_s + 90, {("A1", 1): (Availability.FAULT, "GroundFailure")})
    clock.advance(120)
    app = create_app(token="t0k")
    add_availability_routes(app, service)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/api/v1/availability")).status == 401
        response = await client.get("/api/v1/availability", headers={"Authorization": "Bearer t0k"})
        assert response.status == 200
        body = await response.json()
    service.close()
    assert body["month"] == "2026-11"
    (port,) = body["ports"]
    assert port["charger"] == "A1" and port["evse"] == 1
    assert port["up_s"] == 90
    assert port["fault_s"] == 30  # held since its last cycle, up to now
    assert port["last_outages"] == [
        {"start_s": start_s + 90, "end_s": start_s + 120, "class": "fault", "cause": "GroundFailure"}
    ]
    assert port["uptime_month_pct"] == 75.0
