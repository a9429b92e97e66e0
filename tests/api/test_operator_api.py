"""The operator view's API on the demo site, real protocols on loopback, compressed time.

The API's numbers must be the controller's own: each document is compared with the cycle report
it was built from (its dispatched limits, and each circuit's load computed here independently
from the report's uncontrolled load and the limits of the EVSEs wired to each phase).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from evdlm.config import load_site_config
from evdlm.config.models import HttpApi
from evdlm.control import CycleReport
from evdlm.core.clock import ScaledClock
from evdlm.core.fleet_kernels import Mode
from evdlm.core.topology import RowKind
from evdlm.data import DEMO_SITE_PATH
from evdlm.sim.ev import Car
from evdlm.sim.site import dr_event, simulated_site

SPEED = 10.0
AFTERNOON_S = 1_781_616_600.0  # 2026-06-16 13:30 UTC (the simulated PV follows the clock's hour)
TOKEN = "op-view-test-token"


def _independent_loads(report: CycleReport, node: str) -> dict[str, float]:
    """A circuit's load per phase: uncontrolled load plus the limits of the EVSEs below it, per phase used."""
    decision = report.decision
    assert decision is not None
    built = decision.built
    slots_topology = decision.plan.issued.slots.topology
    loads = {}
    for index, row in enumerate(slots_topology.rows):
        if row.kind is RowKind.PHASE_CURRENT and row.node == node:
            loads[f"L{row.phase}"] = built.row_uncontrolled[index]
    limits = decision.plan.issued.limit
    for evse_index, slot in enumerate(slots_topology.evses):
        if node not in slots_topology.nodes[slot.node].path or int(built.fleet.mode[evse_index]) != Mode.ACTIVE:
            continue
        for phase in slot.site_phases[: int(built.fleet.phases_used[evse_index])]:
            loads[f"L{phase}"] += float(limits[evse_index])
    return loads


@pytest.mark.timeout(180)
async def test_the_api_shows_the_controllers_own_numbers_each_cycle(tmp_path: Path) -> None:
    config = load_site_config(DEMO_SITE_PATH).config
    config = config.model_copy(update={"http_api": HttpApi(port=0, token={"env": "EVDLM_TEST_API_TOKEN"})})
    reports: dict[int, CycleReport] = {}
    clock = ScaledClock(AFTERNOON_S, SPEED)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVDLM_TEST_API_TOKEN", TOKEN)
        async with simulated_site(config, clock, workdir=tmp_path) as site:
            # The garage's 63 A fuse carries four cars asking 32 + 32 + 32 + 16 A: it binds.
            for charger_id, amps in (("CP01", 32), ("CP02", 32), ("CP03", 32), ("CP04", 16), ("CP07", 32)):
                site.fleet.plug_in(charger_id, 1, Car(phases=3, max_current_a=amps))
            site.on_cycle = lambda report: reports.__setitem__(report.cycle, report)
            site.start_controller()
            assert site.gateway.http_api is not None
            base = f"http://127.0.0.1:{site.gateway.http_api.port}"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/api/v1/state") as response:
                    assert response.status == 401
                async with http.get(f"{base}/healthz") as response:
                    assert response.status == 200 and (await response.json())["alive"]
                async with http.get(f"{base}/") as response:
                    assert response.status == 200 and "text/html" in response.headers["Content-Type"]

                # Until the garage is full: cars admitted and raised, the fuse binding some of them.
                document: dict[str, Any] = {}
                for _ in range(120):
                    await asyncio.sleep(0.5)
                    async with http.get(f"{base}/api/v1/state", headers=auth) as response:
                        if response.status != 200:
                            continue
                        document = await response.json()
                    sources = [e["binding"]["source"] for e in document["evses"] if e["node"] == "garage"]
                    if any(source.startswith("garage/L") for source in sources):
                        break
                assert any(e["binding"]["source"].startswith("garage/L") for e in document["evses"]), document

                compared = 0
                for _ in range(8):
                    async with http.get(f"{base}/api/v1/state", headers=auth) as response:
                        document = await response.json()
                    report = reports[document["cycle"]]
                    decision = report.decision
                    assert decision is not None
                    dispatched = decision.plan.limits
                    assert len(document["evses"]) == len(config.chargers)
                    for evse in document["evses"]:
                        key = (evse["charger"], evse["evse"])
                        if key in dispatched:
                            assert evse["limit_a"] == pytest.approx(dispatched[key], abs=0.051), (key, evse)
                    nodes = {node["name"]: node for node in document["nodes"]}
                    for node in ("garage", "carport", "main"):
                        expected = _independent_loads(report, node)
                        shown = {phase["phase"]: phase["load"] for phase in nodes[node]["phases"]}
                        assert shown == pytest.approx(expected, abs=0.051), (node, shown, expected)
                        for phase in nodes[node]["phases"]:
                            assert phase["headroom"] == pytest.approx(phase["limit"] - phase["load"], abs=0.11)
                    assert document["solver"] == decision.result.solver.value
                    assert document["grid"]["fallback"] == decision.built.grid_fallback
                    compared += 1
                    await asyncio.sleep(0.3)
                assert compared == 8

                # A DR event below what the site draws: the import limit binds, named by the event.
                now = clock.now_s()
                await site.publish_dr_event(
                    dr_event(config.site.id, "dso-congestion-north", "op-1", now, 600, 12.0, now)
                )
                seen = None
                for _ in range(60):
                    await asyncio.sleep(0.5)
                    async with http.get(f"{base}/api/v1/state", headers=auth) as response:
                        document = await response.json()
                    kinds = {e["binding"]["kind"] for e in document["evses"]}
                    if "dr" in kinds:
                        seen = document
                        break
                assert seen is not None, document
                assert seen["dr"]["active"] and "op-1" in seen["dr"]["event_ids"]
                assert any(e["binding"]["source"] == "grid import (DR event op-1)" for e in seen["evses"])
                assert seen["grid"]["import_limit_w"] == pytest.approx(12000.0, abs=1.0)

                # The changes and their reasons; the last hour; readiness; the live stream.
                async with http.get(f"{base}/api/v1/events", headers=auth) as response:
                    events = (await response.json())["events"]
                assert any(e["kind"] == "limit" and "fuse" in e["text"] for e in events), events[-20:]
                assert any(e["kind"] == "dr" and "op-1" in e["text"] for e in events)
                async with http.get(f"{base}/api/v1/history", headers=auth) as response:
                    points = (await response.json())["points"]
                assert len(points) >= 10 and points[-1]["limit_w"] == pytest.approx(12000.0, abs=1.0)
                async with http.get(f"{base}/readyz", headers=auth) as response:
                    assert response.status == 200 and (await response.json())["ready"]
                cycles = []
                async with http.get(f"{base}/api/v1/stream?access_token={TOKEN}") as response:
                    assert response.status == 200
                    async for line in response.content:
                        if line.startswith(b"data: "):
                            cycles.append(json.loads(line[6:])["cycle"])
                            if len(cycles) == 3:
                                break
                assert cycles == sorted(cycles) and len(set(cycles)) == 3
            await site.stop_controller()
