"""The read side's entry point: every device of a site config, polled, with the latest readings.

::

    async with DeviceHub(config, clock) as hub:
        readings = hub.snapshot(clock.now_s())      # dict[device name, Reading]
        if hub.battery_control is not None:
            await hub.battery_control.set_power_w(-3000)   # charge at 3 kW

One transport per Modbus link (shared by its unit ids, requests serialized), one named polling
task per device in one TaskGroup (a slow device only delays itself and, on a shared serial
line, the devices behind the same lock), MQTT devices fed by subscriptions on one client.

Failure policy: a failed poll keeps the last OK reading, which turns STALE once older than the
device's ``max_age_s``; with no OK reading to keep, the device is MISSING with the error as
reason. An implausible reading replaces whatever was there (INVALID: the device is talking
nonsense now). Every change of a device's quality is logged once (``evdlm.devices.hub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from evdlm.config.models import BatteryControlMode, Device, SiteConfig
from evdlm.config.secrets import resolve_secret
from evdlm.core.clock import Clock
from evdlm.core.types import Quality, Reading
from evdlm.devices.battery import BatteryControl, SunSpecBatteryControl
from evdlm.devices.codec import Measurement, orient
from evdlm.devices.errors import DeviceError
from evdlm.devices.modbus_transport import ModbusTransport, raise_if_cancelling
from evdlm.devices.mqtt_device import parse_mqtt_payload
from evdlm.devices.profile import SUNSPEC, load_profile
from evdlm.devices.quality import DEFAULT_PLAUSIBILITY, CounterState, Plausibility, to_reading, unwrap_counters
from evdlm.devices.readers import CallableReader, ProfileReader, Reader, SunSpecReader
from evdlm.devices.sim.site import SiteSimulation
from evdlm.mqtt.client import MqttClient, MqttMessage

logger = logging.getLogger("evdlm.devices.hub")


@dataclass
class _Slot:
    device: Device
    reader: Reader | None  # None for MQTT devices (pushed, not polled)
    budget_s: float  # wall-time bound of one poll
    latest: Reading | None = None
    last_good: Measurement | None = None
    counters: CounterState = field(default_factory=CounterState)
    # A device starts out MISSING: the first line logged is its first reading (or failure).
    logged_quality: Quality = Quality.MISSING
    failing: bool = False
    polls: int = 0


class DeviceHub:
    """Builds links and devices from ``config`` and keeps the latest reading of each.

    Parameters
    ----------
    config : SiteConfig
        The site; its ``modbus_links``, ``devices``, ``battery`` and ``mqtt`` sections are used.
    clock : Clock
        Timestamps, poll periods and backoff.
    base_dir : Path, optional
        Directory relative profile paths (``profile: meters/my_meter.yaml``) resolve against:
        the config file's directory.
    simulation : SiteSimulation, optional
        Required when a device has a ``sim:`` source.
    mqtt_client : MqttClient, optional
        A client to share (the DR module's, say); by default the hub opens its own when a
        device has an ``mqtt:`` source.
    plausibility : Plausibility
        Bounds for the INVALID checks.
    """

    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        *,
        base_dir: Path | None = None,
        simulation: SiteSimulation | None = None,
        mqtt_client: MqttClient | None = None,
        plausibility: Plausibility = DEFAULT_PLAUSIBILITY,
    ) -> None:
        self.config = config
        self.clock = clock
        self.plausibility = plausibility
        self.transports: dict[str, ModbusTransport] = {
            link.name: ModbusTransport(link, clock) for link in config.modbus_links
        }
        self._slots: dict[str, _Slot] = {}
        self._sunspec_readers: dict[str, SunSpecReader] = {}
        for device in config.devices:
            self._slots[device.name] = self._build_slot(device, base_dir, simulation)
        self._own_mqtt = mqtt_client is None and any(d.mqtt is not None for d in config.devices)
        self.mqtt: MqttClient | None = mqtt_client
        if self._own_mqtt:
            broker = config.mqtt
            if broker is None:
                raise ValueError("devices with an mqtt source need the config's mqtt section")
            password = None if broker.password is None else resolve_secret(broker.password, base_dir or Path("."))
            self.mqtt = MqttClient(
                broker.host,
                broker.port,
                client_id=broker.client_id or f"evdlm-{config.site.id}-devices",
                clock=clock,
                keepalive_s=broker.keepalive_s,
                username=broker.username,
                password=password,
                tls=broker.tls,
                ca_file=broker.ca_file,
            )
        self._battery: SunSpecBatteryControl | None = None
        battery = config.battery
        if battery is not None and battery.control is not BatteryControlMode.NONE:
            reader = self._sunspec_readers.get(battery.device)
            if reader is None:
                raise ValueError(f"battery control needs device {battery.device!r} on a SunSpec Modbus profile")
            self._battery = SunSpecBatteryControl(reader, battery, clock)
        self.battery_control: BatteryControl | None = self._battery
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._mqtt_entered = False
        self._mqtt_handlers: list[tuple[str, Callable[[MqttMessage], None]]] = []

    def _build_slot(self, device: Device, base_dir: Path | None, simulation: SiteSimulation | None) -> _Slot:
        if device.modbus is not None:
            transport = self.transports[device.modbus.link]
            reader: Reader
            if device.modbus.profile == SUNSPEC:
                sunspec_reader = SunSpecReader(transport, device.modbus.unit_id, device.role, device.invert_sign)
                self._sunspec_readers[device.name] = sunspec_reader
                reader = sunspec_reader
            else:
                profile = load_profile(device.modbus.profile, base_dir)
                reader = ProfileReader(transport, device.modbus.unit_id, profile, device.invert_sign)
            # Enough for discovery plus a few requests each at the link timeout, queued behind
            # the other units of a shared line.
            budget_s = max(1.0, 8.0 * transport.link.timeout_s)
            return _Slot(device, reader, budget_s)
        if device.sim is not None:
            if simulation is None:
                raise ValueError(f"device {device.name!r} has a sim source but no simulation was given")
            reader = CallableReader(self._sim_source(device, simulation), device.invert_sign)
            return _Slot(device, reader, 1.0)
        return _Slot(device, None, 0.0)

    def _sim_source(self, device: Device, simulation: SiteSimulation) -> Callable[[], Measurement]:
        assert device.sim is not None
        model, clock, name = device.sim.model, self.clock, device.name
        if model == "grid_meter":
            return lambda: simulation.grid_meter(clock.now_s())
        if model == "pv":
            return lambda: simulation.pv(clock.now_s())
        if model == "battery":
            return lambda: simulation.battery(clock.now_s())
        return lambda: simulation.circuit_meter(name, clock.now_s())

    # ------------------------------------------------------------ lifetime

    async def __aenter__(self) -> DeviceHub:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        try:
            if self.mqtt is not None and self._own_mqtt:
                await self.mqtt.__aenter__()
                self._mqtt_entered = True
            for slot in self._slots.values():
                if slot.reader is not None:
                    self._tasks.append(self._tg.create_task(self._poll_loop(slot), name=f"poll:{slot.device.name}"))
                elif slot.device.mqtt is not None and self.mqtt is not None:
                    handler = self._mqtt_handler(slot)
                    self._mqtt_handlers.append((slot.device.mqtt.topic, handler))
                    await self.mqtt.subscribe(slot.device.mqtt.topic, handler, qos=1)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._battery is not None and self._battery.commanded:
            # Best effort: the revert timer covers the case where this cannot reach the battery.
            with contextlib.suppress(DeviceError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._battery.release()
        if self._tg is not None:
            for task in self._tasks:
                task.cancel()
            self._tasks.clear()
            await self._tg.__aexit__(None, None, None)
            self._tg = None
        if self.mqtt is not None:
            for topic, handler in self._mqtt_handlers:
                await self.mqtt.unsubscribe(topic, handler)
            self._mqtt_handlers.clear()
            if self._mqtt_entered:
                self._mqtt_entered = False
                await self.mqtt.__aexit__(None, None, None)
        for transport in self.transports.values():
            transport.close()

    # ------------------------------------------------------------ polling

    async def _poll_loop(self, slot: _Slot) -> None:
        period_s = slot.device.poll_period_s
        while True:
            started_s = self.clock.now_s()
            await self.poll_once(slot.device.name)
            raise_if_cancelling()
            await self.clock.sleep(max(0.0, period_s - (self.clock.now_s() - started_s)))

    async def poll_once(self, name: str) -> Reading:
        """Poll one device now and return its reading as the snapshot would show it."""
        slot = self._slots[name]
        if slot.reader is None:
            raise ValueError(f"device {name!r} is not polled (MQTT)")
        slot.polls += 1
        try:
            async with asyncio.timeout(slot.budget_s):
                measurement = await slot.reader.read()
        except DeviceError as exc:
            self._failed(slot, str(exc))
        except TimeoutError:
            self._failed(slot, f"poll took longer than {slot.budget_s:g} s")
        except Exception as exc:  # a decoder bug must not kill the poll task or pass a number
            logger.exception("device %s: unexpected error while polling", name)
            self._failed(slot, f"internal error: {exc!r}")
        else:
            self._store(slot, measurement)
        return self._current(slot, self.clock.now_s())

    def _store(self, slot: _Slot, measurement: Measurement, *, require_power: bool = True) -> None:
        measurement, slot.counters = unwrap_counters(measurement, slot.counters)
        reading = to_reading(
            slot.device.name,
            self.clock.now_s(),
            measurement,
            slot.last_good,
            self.plausibility,
            require_power=require_power,
        )
        if reading.quality is Quality.OK:
            slot.last_good = measurement
            if slot.failing:
                logger.info("device %s: reading again after failures", slot.device.name)
        slot.failing = False
        slot.latest = reading

    def _failed(self, slot: _Slot, reason: str) -> None:
        now_s = self.clock.now_s()
        if not slot.failing:
            keep = slot.latest is not None and slot.latest.quality is Quality.OK
            logger.warning(
                "device %s: read failed: %s%s",
                slot.device.name,
                reason,
                "; keeping the last reading until it is stale" if keep else "",
            )
        slot.failing = True
        if slot.latest is None or slot.latest.quality is not Quality.OK:
            slot.latest = Reading.missing(slot.device.name, now_s, reason)

    def _mqtt_handler(self, slot: _Slot) -> Callable[[MqttMessage], None]:
        assert slot.device.mqtt is not None
        source = slot.device.mqtt

        def handle(message: MqttMessage) -> None:
            try:
                measurement = orient(
                    parse_mqtt_payload(message.payload, source.json_path, source.unit), slot.device.invert_sign
                )
            except ValueError as exc:
                slot.latest = Reading(
                    device=slot.device.name, taken_at_s=self.clock.now_s(), quality=Quality.INVALID, reason=str(exc)
                )
            else:
                self._store(slot, measurement, require_power=source.unit != "A")
            self._current(slot, self.clock.now_s())

        return handle

    # ------------------------------------------------------------ reading out

    def _current(self, slot: _Slot, now_s: float) -> Reading:
        reading = slot.latest or Reading.missing(slot.device.name, now_s, "never read")
        reading = reading.aged(now_s, slot.device.max_age_s)
        if reading.quality is not slot.logged_quality:
            level = logging.INFO if reading.quality is Quality.OK else logging.WARNING
            logger.log(
                level,
                "device %s: quality %s → %s%s",
                slot.device.name,
                slot.logged_quality.value,
                reading.quality.value,
                f" ({reading.reason})" if reading.reason else "",
            )
            slot.logged_quality = reading.quality
        return reading

    def snapshot(self, now_s: float) -> dict[str, Reading]:
        """The latest reading of every device, aged at ``now_s`` (MISSING when never read)."""
        return {name: self._current(slot, now_s) for name, slot in self._slots.items()}

    def polls(self, name: str) -> int:
        """How many polls of ``name`` were attempted (tests, benchmarks)."""
        return self._slots[name].polls
