"""The gateway service: every part built from one config, with one lifetime.

    async with Gateway(config, clock, base_dir=...) as gateway:
        await gateway.run(stop_event)

Parts: the OCPP central system (write side), the device hub (read side), one shared MQTT
client with a last will (DR, MQTT devices, state), the DR service, the Prometheus endpoint,
the cycle recorder and the controller. ``reload`` applies a new config's topology, limits and
control settings from the next cycle on; sections that need new connections (chargers,
devices, links, broker, OCPP server) are reported as needing a restart and keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from evdlm_solvers import warm_up

from evdlm import strict_json
from evdlm.api.availability_routes import add_availability_routes
from evdlm.api.http import HttpApiServer
from evdlm.api.operator_routes import add_operator_routes
from evdlm.api.operator_view import OperatorView
from evdlm.availability.service import AvailabilityService
from evdlm.chargers.ocpp.server import OcppCentralSystem
from evdlm.config import ConfigError, load_site_config
from evdlm.config.models import SiteConfig
from evdlm.control import Controller, CycleReport, state_message
from evdlm.core.clock import Clock
from evdlm.core.decide import SolverChoice
from evdlm.core.fleet_kernels import warm_up as warm_up_fleet_kernels
from evdlm.demand_charge import DemandKeeper
from evdlm.devices.codec import Measurement
from evdlm.devices.hub import DeviceHub
from evdlm.dr.service import DrService
from evdlm.energy_cost import CostKeeper
from evdlm.heap import HeapSettler
from evdlm.horizon_planner import HorizonPlanner
from evdlm.mqtt.client import MqttClient, MqttWill
from evdlm.observability import Metrics
from evdlm.prices import PriceFeedService
from evdlm.recording import RecordingWriter
from evdlm.sessions.service import SessionService
from evdlm.site_status import SiteStatusLog

log = logging.getLogger("evdlm.gateway")

RESTRICTIONS_FILE = "var/restricted-evses.json"
RESTART_SECTIONS = (
    "chargers",
    "devices",
    "modbus_links",
    "mqtt",
    "ocpp",
    "battery",
    "demand_response",
    "demand",
    "recording",
    "http_api",
)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify, WatchdogSec) we are alive; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


class MqttStatePublisher:
    """Retained site state and per-EVSE limits on ``dlm/{site}/…`` (changes only).

    Never waits on the broker: messages go to the client's telemetry queue (the latest per
    topic; the oldest dropped and counted when the broker is stuck) and out while connected.
    """

    def __init__(self, client: MqttClient, site_id: str, every_cycles: int = 5) -> None:
        self.client = client
        self.site_id = site_id
        self.every_cycles = every_cycles
        self._limits: dict[str, Any] = {}

    async def publish_cycle(self, report: CycleReport) -> None:
        # ``async`` for the StatePublisher protocol; nothing here awaits.
        state = state_message(report, self.site_id)
        for key, limit in state.get("limits", {}).items():
            if self._limits.get(key) != limit:
                topic = f"dlm/{self.site_id}/evse/{key}/limit"
                self.client.publish_nowait(topic, strict_json.dumps({"limit": limit[0], "unit": limit[1]}), retain=True)
                self._limits[key] = limit
        if report.cycle % self.every_cycles == 1 or self.every_cycles == 1:
            self.client.publish_nowait(f"dlm/{self.site_id}/state", strict_json.dumps(state), retain=True)


HEAP_CHECK_CYCLES = 10  # how often the chargers online are counted for the heap settler


def compile_kernels() -> float:
    """Compile (or load from numba's cache) the solver and fleet kernels; the seconds spent."""
    return warm_up() + warm_up_fleet_kernels()


class Gateway:
    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        *,
        base_dir: Path = Path("."),
        state_dir: Path = Path("."),
        config_path: Path | None = None,
        config_text: str | None = None,
        readers: Mapping[str, Callable[[], Measurement]] | None = None,
        solver: SolverChoice = SolverChoice.CHAIN,
    ) -> None:
        self.config = config
        self.clock = clock
        self.base_dir = base_dir  # relative profile, certificate and secret paths (the config's folder)
        self.state_dir = state_dir  # relative DR state and recording paths (the working directory)
        self.config_path = config_path
        self.config_text = config_text if config_text is not None else (config_path.read_text() if config_path else "")
        self.readers = readers  # in-process readers of the sim: devices (a simulated site passes them)
        self.solver = solver
        self.metrics = Metrics(config.site.id)
        self.metrics.expose_counters(
            "evdlm_dr_intake",
            "DR messages by what the intake did with them, and state file writes",
            lambda: self.dr.stats if self.dr is not None else None,
        )
        self.metrics.expose_counters(
            "evdlm_mqtt_outbox",
            "MQTT publishes and what the bounded queues dropped",
            lambda: self.mqtt.stats if self.mqtt is not None else None,
        )
        self.metrics.expose_counters(
            "evdlm_local_controller",
            "Local Controller mode: messages relayed, answered locally, replayed, dropped, limits told upstream",
            lambda: self.ocpp.relay_totals() if self.ocpp is not None else None,
        )
        self.metrics.expose_counters(
            "evdlm_session_intake",
            "Session commands over MQTT by what the intake did with them",
            lambda: self.sessions.stats if self.sessions is not None else None,
        )
        self.metrics_port: int | None = None
        self._stack = contextlib.AsyncExitStack()
        self.mqtt: MqttClient | None = None
        self.ocpp: OcppCentralSystem | None = None
        self.devices: DeviceHub | None = None
        self.dr: DrService | None = None
        self.sessions: SessionService | None = None
        self.planner: HorizonPlanner | None = None
        self.prices: PriceFeedService | None = None
        self.http_api: HttpApiServer | None = None
        self.operator_view = OperatorView(config.site.id, config.control.cycle_period_s)
        self.heap = HeapSettler()  # the long-lived heap out of the collector's way (evdlm.heap)
        self.controller: Controller | None = None
        self.availability: AvailabilityService | None = None  # the per-port availability ledger
        self._closed = False
        self._kernels: asyncio.Future[float] | None = None  # the kernels' compilation (a thread)
        self._started_s = time.monotonic()

    async def __aenter__(self) -> Gateway:
        config = self.config
        stack = self._stack
        await stack.__aenter__()
        self._started_s = time.monotonic()
        # Compile the numba kernels in a thread (seconds on a cold cache) while the servers start:
        # chargers connect meanwhile and hold the fail-safe profile the OCPP server installs at
        # boot; no cycle decides before the kernels are ready (run() waits for them).
        self._kernels = asyncio.ensure_future(asyncio.to_thread(compile_kernels))
        try:
            if config.mqtt is not None:
                broker = config.mqtt
                status_topic = f"dlm/{config.site.id}/status"
                self.mqtt = MqttClient.from_config(
                    broker,
                    self.clock,
                    self.base_dir,
                    f"evdlm-{config.site.id}",
                    # The will says offline when the connection dies; the client says online after
                    # every (re)connect, and offline itself on a clean exit.
                    will=MqttWill(status_topic, json.dumps({"state": "offline"})),
                    birth=MqttWill(status_topic, json.dumps({"state": "online"})),
                )
                await stack.enter_async_context(self.mqtt)
                # Not needed for the first cycle (it runs on DR's start-up limits until the DR state
                # is known); waiting briefly lets MQTT devices and DR start from the broker's state.
                if not await self.mqtt.wait_connected(5.0):
                    log.warning(
                        "MQTT broker %s:%d not reachable yet; retrying in the background", broker.host, broker.port
                    )
            self.ocpp = await stack.enter_async_context(OcppCentralSystem(config, self.clock, base_dir=self.base_dir))
            self.devices = await stack.enter_async_context(
                DeviceHub(config, self.clock, base_dir=self.base_dir, readers=self.readers, mqtt_client=self.mqtt)
            )
            if config.demand_response is not None and config.demand_response.enabled and self.mqtt is not None:
                self.dr = await stack.enter_async_context(
                    DrService(config, self.mqtt, self.clock, self.state_dir / config.demand_response.state_file)
                )
            # Session commands (MQTT and HTTP) and idTag profiles: read by each cycle, never waited on.
            self.sessions = await stack.enter_async_context(
                SessionService(config, self.ocpp, self.clock, client=self.mqtt, metrics=self.metrics)
            )
            # Prices in force (the tariff's table, a feed over MQTT laid on it): read, never waited on.
            prices = PriceFeedService.for_config(config, self.mqtt, self.clock, self.state_dir, self.metrics)
            if prices is not None:
                self.prices = await stack.enter_async_context(prices)
            # Horizon planning: in its own task and thread; the cycle only reads its latest targets.
            self.planner = await stack.enter_async_context(
                HorizonPlanner(config, self.clock, self.metrics, prices=self.prices)
            )
            # The availability ledger (before the HTTP API, which serves it): fed by each cycle.
            if config.availability is not None and config.availability.enabled:
                self.availability = AvailabilityService(config, self.clock, self.state_dir, self.metrics)
            if config.http_api is not None and config.http_api.enabled:
                view, clock, ledger = self.operator_view, self.clock, self.availability
                features: list[Callable[[web.Application], None]] = [lambda app: add_operator_routes(app, view, clock)]
                if ledger is not None:
                    features.append(lambda app: add_availability_routes(app, ledger))
                server = HttpApiServer.from_config(config.http_api, self.base_dir, self.sessions, features)
                self.http_api = await stack.enter_async_context(server)
            observability = config.observability
            if observability.metrics_port is not None:
                self.metrics_port = self.metrics.serve(observability.metrics_host, observability.metrics_port)
            recorder = None
            if config.recording.enabled:
                recorder = RecordingWriter(
                    self.state_dir / config.recording.directory,
                    config.site.id,
                    self.config_text,
                    self.clock,
                    rotate_after_s=config.recording.rotate_after_s,
                    max_disk_bytes=config.recording.max_disk_mb * 1e6,
                )
            self.controller = Controller(
                config,
                self.clock,
                self.devices,
                self.ocpp,
                metrics=self.metrics,
                demand=self.dr,
                sessions=self.sessions,
                planner=self.planner,
                battery=self.devices.battery_control,
                recorder=recorder,
                publisher=MqttStatePublisher(self.mqtt, config.site.id) if self.mqtt is not None else None,
                solver=self.solver,
                restrictions_file=self.state_dir / RESTRICTIONS_FILE,
                demand_window=DemandKeeper.for_config(config, self.state_dir),
                prices=self.prices,
                cost=CostKeeper.for_config(config, self.state_dir),
            )
            # Stations the previous run blocked are known restricted from the start, so they are
            # released (set Operative) as soon as there is room, not left Inoperative for good.
            self.ocpp.restrict(self.controller.restricted, inherited=True)
            log.info("gateway listening %.2f s after start-up", time.monotonic() - self._started_s)
        except BaseException:
            self._kernels.cancel()  # the thread finishes its compilation on its own
            await stack.__aexit__(None, None, None)
            raise
        return self

    async def kernels_ready(self, stop: asyncio.Event | None = None) -> bool:
        """Wait until the kernels are compiled (telling systemd's watchdog we are alive meanwhile);
        False if ``stop`` was set first. A failed compilation raises here."""
        kernels = self._kernels
        if kernels is None:
            return True
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            while not kernels.done():
                waiting: set[asyncio.Future[Any]] = {kernels} if stopper is None else {kernels, stopper}
                await asyncio.wait(waiting, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                sd_notify("WATCHDOG=1")
                if stop is not None and stop.is_set() and not kernels.done():
                    return False
        finally:
            if stopper is not None:
                stopper.cancel()
        compile_s = kernels.result()
        if self._kernels is kernels:
            self._kernels = None
            log.info(
                "solver and fleet kernels ready in %.2f s (%.2f s after start-up)",
                compile_s,
                time.monotonic() - self._started_s,
            )
        return True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._closed:
            return
        self._closed = True
        if self._kernels is not None:
            self._kernels.cancel()  # not waited on: the thread finishes its compilation on its own
        if self.controller is not None:
            await self.controller.close()
        if self.availability is not None:
            self.availability.close()  # credits up to now and saves; the gap to the next start is "controller down"
        await self.operator_view.close()
        # The stack closes the DR service (its last state written) and then the MQTT client, which
        # sends what is queued within a bounded time and says offline on the status topic.
        await self._stack.__aexit__(exc_type, exc, tb)

    def reload(self) -> bool:
        """Re-read the config file; apply it if valid, else keep running on the old one."""
        if self.config_path is None or self.controller is None:
            return False
        try:
            loaded = load_site_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, still running on the previous config:\n%s", exc)
            return False
        new = loaded.config
        needs_restart = [
            section for section in RESTART_SECTIONS if getattr(new, section) != getattr(self.config, section)
        ]
        if needs_restart:
            log.warning("reload: %s changed and take effect only after a restart", ", ".join(needs_restart))
            new = new.model_copy(update={section: getattr(self.config, section) for section in needs_restart})
        self.controller.apply_config(new)
        if self.sessions is not None:
            self.sessions.apply_config(new)
        if self.planner is not None:
            self.planner.apply_config(new)
        if self.prices is not None:
            self.prices.apply_config(new)
        self.config = new
        log.info("reload: config applied (%d warnings)", len(loaded.warnings))
        return True

    async def run(self, stop: asyncio.Event, *, max_cycles: int | None = None, on_cycle: Any = None) -> None:
        assert self.controller is not None
        sd_notify("READY=1")  # listening; the first cycle follows once the kernels are compiled
        if not await self.kernels_ready(stop):
            return
        first = True
        status = SiteStatusLog()  # grid meter, fallback, chargers k of N, ... on each change

        def cycle_done(report: CycleReport) -> None:
            nonlocal first
            sd_notify("WATCHDOG=1")
            status.emit(report, self.config)
            if first:
                first = False
                log.info("first cycle decided %.2f s after start-up", time.monotonic() - self._started_s)
            if self.http_api is not None and self.controller is not None:
                self.operator_view.observe(report, self.controller.context.topology)
            if self.availability is not None and self.controller is not None:
                self.availability.observe(report, self.controller)
            if report.cycle % HEAP_CHECK_CYCLES == 1 and self.ocpp is not None:
                online = sum(1 for charger in self.config.chargers if self.ocpp.online(charger.id))
                self.heap.maybe_settle(online)
            if on_cycle is not None:
                on_cycle(report)

        await self.controller.run(stop, max_cycles=max_cycles, on_cycle=cycle_done)
