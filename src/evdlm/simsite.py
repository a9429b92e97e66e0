"""A whole simulated site on loopback, with real protocols end to end.

Modbus simulators (meters, PV, battery) driven by one site simulation; an MQTT broker; one
simulated OCPP station per configured charger, whose drawn currents feed the site
simulation's meters; a utility that publishes DR events and bridge heartbeats; and the real
gateway against all of it. Used by ``evdlm demo``, the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evdlm.chargers.sim.fleet import SimFleet, site_phase_currents
from evdlm.chargers.sim.station import Misbehaviour
from evdlm.config.models import SiteConfig
from evdlm.core.clock import Clock
from evdlm.core.decide import SolverChoice
from evdlm.devices.sim.servers import SiteSimulators, circuit_specs_for, sim_params_for
from evdlm.devices.sim.site import SiteSimParams, SiteSimulation
from evdlm.dr.messages import from_epoch, rfc3339
from evdlm.gateway import Gateway
from evdlm.mqtt.broker import LocalBroker
from evdlm.mqtt.client import MqttClient


def dr_event(
    site_id: str,
    program_id: str,
    event_id: str,
    start_s: float,
    duration_s: float,
    import_limit_kw: float,
    now_s: float,
) -> dict[str, Any]:
    """An OpenADR 3 shaped IMPORT_CAPACITY_LIMIT event (specs/dr-mqtt.md)."""
    return {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": event_id,
            "programID": program_id,
            "priority": 1,
            "modificationDateTime": rfc3339(from_epoch(now_s)),
            "targets": [site_id],
            "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
            "intervalPeriod": {"start": rfc3339(from_epoch(start_s)), "duration": f"PT{int(duration_s)}S"},
            "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [import_limit_kw]}]}],
        },
        "x-dlm": {"schemaVersion": 1, "responseRequired": "always"},
    }


@dataclass
class SimulatedSite:
    config: SiteConfig  # rewired to the simulators' loopback ports
    clock: Clock
    simulation: SiteSimulation
    simulators: SiteSimulators
    gateway: Gateway
    fleet: SimFleet
    utility: MqttClient | None
    workdir: Path

    def grid_w(self) -> float:
        """What the grid connection really carries now (the simulation's truth), W."""
        return self.simulation.advance(self.clock.now_s()).grid_w

    async def publish_dr_event(self, event: dict[str, Any]) -> None:
        assert self.utility is not None
        event_id = event["object"]["id"]
        await self.utility.publish(f"dr/{self.config.site.id}/events/{event_id}", json.dumps(event), qos=1, retain=True)

    async def heartbeat(self) -> None:
        if self.utility is not None and self.utility.connected:
            await self.utility.publish(
                f"dr/{self.config.site.id}/bridge/heartbeat",
                json.dumps({"at": rfc3339(from_epoch(self.clock.now_s()))}),
                qos=0,
            )


def _rewire(config: SiteConfig, workdir: Path, broker: LocalBroker | None) -> SiteConfig:
    updates: dict[str, Any] = {
        "ocpp": config.ocpp.model_copy(update={"host": "127.0.0.1", "port": 0}),
        "recording": config.recording.model_copy(update={"directory": str(workdir / "recordings")}),
        "observability": config.observability.model_copy(update={"metrics_port": 0, "metrics_host": "127.0.0.1"}),
    }
    if broker is not None and config.mqtt is not None:
        updates["mqtt"] = config.mqtt.model_copy(
            update={"host": broker.host, "port": broker.port, "username": None, "password": None, "tls": False}
        )
    if config.demand_response is not None:
        updates["demand_response"] = config.demand_response.model_copy(
            update={"state_file": str(workdir / "dr-state.json")}
        )
    return config.model_copy(update=updates)


@contextlib.asynccontextmanager
async def simulated_site(
    config: SiteConfig,
    clock: Clock,
    *,
    workdir: Path | None = None,
    config_text: str = "",
    sim_params: SiteSimParams | None = None,
    misbehaviour: dict[str, Misbehaviour] | None = None,
    solver: SolverChoice = SolverChoice.CHAIN,
    station_tick_s: float = 1.0,
) -> AsyncIterator[SimulatedSite]:
    """Start simulators, broker, gateway and stations; yields once every station is connected."""
    with contextlib.ExitStack() as files:
        if workdir is None:
            workdir = Path(files.enter_context(tempfile.TemporaryDirectory(prefix="evdlm-sim-")))
        async with contextlib.AsyncExitStack() as stack:
            simulation = SiteSimulation(
                sim_params or sim_params_for(config), clock.now_s(), circuits=circuit_specs_for(config)
            )
            broker = None
            if config.mqtt is not None:
                broker = await stack.enter_async_context(LocalBroker())
            simulators = await stack.enter_async_context(SiteSimulators(config, simulation, clock))
            wired = _rewire(simulators.config(), workdir, broker)
            gateway = await stack.enter_async_context(
                Gateway(wired, clock, base_dir=workdir, config_text=config_text, simulation=simulation, solver=solver)
            )
            assert gateway.ocpp is not None
            fleet = await stack.enter_async_context(
                SimFleet(
                    wired,
                    clock,
                    f"ws://127.0.0.1:{gateway.ocpp.port}",
                    misbehaviour=misbehaviour,
                    tick_s=station_tick_s,
                )
            )
            chargers = {charger.id: charger for charger in wired.chargers}
            simulation.set_ev_source(
                lambda: {
                    charger_id: site_phase_currents(chargers[charger_id], current)
                    for charger_id, current in fleet.drawn_current_a().items()
                }
            )
            utility = None
            if broker is not None:
                utility = await stack.enter_async_context(
                    MqttClient(broker.host, broker.port, client_id="utility-bridge", clock=clock)
                )
                await utility.wait_connected(5.0)
                await utility.publish(
                    f"dr/{wired.site.id}/bridge/status",
                    json.dumps({"state": "online", "heartbeatIntervalS": 60}),
                    qos=1,
                    retain=True,
                )
            await fleet.wait_connected(timeout_s=30.0)
            yield SimulatedSite(wired, clock, simulation, simulators, gateway, fleet, utility, workdir)
