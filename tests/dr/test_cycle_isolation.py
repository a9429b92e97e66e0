"""The control cycle keeps its period while the broker is frozen (SIGSTOP, TCP still open).

The real gateway (OCPP server, device hub on an in-process simulation, MQTT client, DR service,
state publisher, controller) against a real mosquitto. A DR event becomes ACTIVE while the
broker is frozen, so a response is due then, and the state publisher has something to say every
cycle: neither may hold a cycle up. After the thaw the response arrives and the status is online.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from evdlm.config import parse_site_config
from evdlm.control import CycleReport
from evdlm.core.clock import SystemClock
from evdlm.dr.messages import from_epoch, rfc3339
from evdlm.gateway import Gateway
from evdlm.mqtt.client import MqttClient
from evdlm.sim.broker import LocalBroker
from evdlm.sim.modbus_servers import circuit_specs_for, sim_params_for
from evdlm.sim.site_physics import SiteSimulation, sim_readers

PERIOD_S = 0.5


def site_text(port: int) -> str:
    return f"""
schema_version: 1
site: {{id: iso}}
grid: {{import_limit_kw: 100, phase_current_limit_a: 160, meter: grid}}
circuits: [{{id: main, phase_current_limit_a: 160}}]
chargers: [{{id: CP01, ocpp_version: "1.6", circuit: main}}, {{id: CP02, ocpp_version: "2.0.1", circuit: main}}]
devices:
  - {{name: grid, role: grid_meter, poll_period_s: 0.2, sim: {{model: grid_meter}}}}
mqtt: {{host: 127.0.0.1, port: {port}, keepalive_s: 5}}
demand_response: {{programs: [{{id: dso, failsafe_import_limit_kw: 80}}]}}
ocpp: {{port: 0}}
observability: {{metrics_port: null}}
recording: {{enabled: false}}
control: {{cycle_period_s: {PERIOD_S}, fallback_import_limit_kw: 60, settle_time_s: 1}}
"""


def dr_event(start_in_s: float, limit_kw: float) -> dict[str, Any]:
    now = time.time()
    return {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": "frozen-1",
            "programID": "dso",
            "modificationDateTime": rfc3339(from_epoch(now - 1)),
            "targets": ["iso"],
            "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
            "intervalPeriod": {"start": rfc3339(from_epoch(now + start_in_s)), "duration": "PT10M"},
            "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [limit_kw]}]}],
        },
        "x-dlm": {"schemaVersion": 1},
    }


async def wait_for(condition: Any, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_cycles_keep_their_period_while_the_broker_is_frozen(tmp_path: Path) -> None:
    clock = SystemClock()
    async with LocalBroker() as broker:
        if broker.kind != "mosquitto":
            pytest.skip("freezing the broker needs mosquitto")
        config = parse_site_config(site_text(broker.port)).config
        simulation = SiteSimulation(sim_params_for(config), clock.now_s(), circuits=circuit_specs_for(config))
        responses: list[dict[str, Any]] = []
        status: list[bytes] = []
        async with MqttClient(broker.host, broker.port, client_id="utility") as utility:
            assert await utility.wait_connected(5)
            await utility.subscribe("dr/iso/responses/+", lambda m: responses.append(json.loads(m.payload)))
            await utility.subscribe("dlm/iso/status", lambda m: status.append(m.payload))
            await utility.publish(
                "dr/iso/bridge/status", json.dumps({"state": "online", "heartbeatIntervalS": 60}), retain=True
            )
            async with Gateway(
                config, clock, state_dir=tmp_path, readers=sim_readers(config, simulation, clock)
            ) as gateway:
                assert gateway.dr is not None and gateway.mqtt is not None
                cycles: list[tuple[float, CycleReport]] = []
                stop = asyncio.Event()

                def on_cycle(report: CycleReport) -> None:
                    cycles.append((time.perf_counter(), report))

                runner = asyncio.create_task(gateway.run(stop, on_cycle=on_cycle), name="gateway")
                try:
                    await wait_for(lambda: gateway.dr is not None and gateway.dr.known and len(cycles) >= 3, 15)
                    # Starts 3 s from now; with 1.5 s of lead the limit applies 1.5 s from now.
                    await utility.publish("dr/iso/events/frozen-1", json.dumps(dr_event(3.0, 30.0)), retain=True)
                    await wait_for(lambda: any(r["status"] == "OPT_IN" for r in responses), 5)
                    frozen_from = len(cycles)
                    broker.freeze()
                    try:
                        await asyncio.sleep(8.0)  # past the keepalive: the gateway's client reconnects in vain
                    finally:
                        broker.thaw()
                    frozen_to = len(cycles)
                    await wait_for(lambda: any(r["status"] == "ACTIVE" for r in responses), 20)
                    await wait_for(lambda: gateway.mqtt is not None and gateway.mqtt.connected, 20)
                    await wait_for(lambda: bool(status) and status[-1] == b'{"state": "online"}', 10)
                finally:
                    stop.set()
                    await runner
    during = cycles[frozen_from:frozen_to]
    assert len(during) >= int(8.0 / PERIOD_S) - 2  # the cycle kept its pace...
    starts = [at for at, _ in during]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert max(gaps) < 2 * PERIOD_S, max(gaps)
    assert max(report.duration_s for _, report in during) < PERIOD_S  # ...and no cycle waited on MQTT
    # DR kept working on its own: the limit applied during the freeze.
    assert any(report.dr is not None and report.dr.import_limit_w == 30_000 for _, report in during)
