"""A whole simulated site on loopback, with real protocols end to end.

Modbus simulators (meters, PV, battery) driven by one site simulation; an MQTT broker; one
simulated OCPP station per configured charger, whose drawn currents feed the site
simulation's meters; a utility that publishes DR events and bridge heartbeats; and the real
gateway against all of it. Used by ``evdlm demo``, the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evdlm.config.models import SiteConfig
from evdlm.control import CycleReport
from evdlm.core.clock import Clock
from evdlm.core.decide import SolverChoice
from evdlm.dr.messages import from_epoch, rfc3339
from evdlm.gateway import Gateway
from evdlm.mqtt.client import MqttClient
from evdlm.sim.broker import LocalBroker, free_port
from evdlm.sim.fleet import SimFleet, site_phase_currents
from evdlm.sim.modbus_servers import SiteSimulators, circuit_specs_for, sim_params_for
from evdlm.sim.site_physics import SiteSimParams, SiteSimulation, sim_readers
from evdlm.sim.station import Misbehaviour


async def until(clock: Clock, condition: Callable[[], bool], timeout_sim_s: float, step_s: float = 1.0) -> bool:
    """Wait (in ``clock``'s time) until ``condition`` holds, at most ``timeout_sim_s``; whether it did."""
    deadline = clock.now_s() + timeout_sim_s
    while clock.now_s() < deadline:
        if condition():
            return True
        await clock.sleep(step_s)
    return bool(condition())


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
    broker: LocalBroker | None = None
    gateway_factory: Callable[[], Gateway] | None = None
    on_cycle: Callable[[CycleReport], None] | None = None
    _stop: asyncio.Event | None = None
    _runner: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- the controller's lifetime

    def start_controller(self) -> None:
        """Run the gateway's control loop in the background (see :meth:`stop_controller`)."""
        self._stop = asyncio.Event()
        self._runner = asyncio.create_task(self.gateway.run(self._stop, on_cycle=self.on_cycle), name="gateway")

    async def stop_controller(self, *, kill: bool = False) -> None:
        """Stop the loop; ``kill`` also closes the gateway as a crash would (no goodbye)."""
        if self._stop is not None and self._runner is not None:
            self._stop.set()
            await self._runner
            self._runner = None
        if kill:
            await self.gateway.__aexit__(None, None, None)

    async def restart_controller(self, downtime_s: float) -> None:
        """Kill the gateway, wait ``downtime_s`` (this clock), start a new one on the same ports."""
        assert self.gateway_factory is not None
        await self.stop_controller(kill=True)
        await self.clock.sleep(downtime_s)
        self.gateway = self.gateway_factory()
        await self.gateway.__aenter__()
        self.start_controller()

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
        # A fixed port, so stations find a restarted gateway again.
        "ocpp": config.ocpp.model_copy(update={"host": "127.0.0.1", "port": free_port()}),
        "recording": config.recording.model_copy(update={"directory": str(workdir / "recordings")}),
        "observability": config.observability.model_copy(update={"metrics_port": 0, "metrics_host": "127.0.0.1"}),
    }
    if config.http_api is not None:  # never the configured port: several sites run at once in tests
        updates["http_api"] = config.http_api.model_copy(update={"host": "127.0.0.1", "port": 0})
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

            def new_gateway() -> Gateway:
                return Gateway(
                    wired,
                    clock,
                    state_dir=workdir,
                    config_text=config_text,
                    readers=sim_readers(wired, simulation, clock),
                    solver=solver,
                )

            gateway = new_gateway()
            await gateway.__aenter__()
            holder: list[SimulatedSite] = []

            async def close_gateway() -> None:
                # The site may have restarted its gateway: close whichever is current.
                site = holder[0] if holder else None
                if site is not None:
                    await site.stop_controller()
                await (site.gateway if site is not None else gateway).__aexit__(None, None, None)

            stack.push_async_callback(close_gateway)
            fleet = await stack.enter_async_context(
                SimFleet(
                    wired, clock, f"ws://127.0.0.1:{wired.ocpp.port}", misbehaviour=misbehaviour, tick_s=station_tick_s
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
            site = SimulatedSite(
                wired, clock, simulation, simulators, gateway, fleet, utility, workdir, broker, new_gateway
            )
            holder.append(site)
            yield site
