"""The read side's entry point: every device of a site config, polled, with the latest readings.

::

    async with DeviceHub(config, clock) as hub:
        readings = hub.snapshot(clock.now_s())      # dict[device name, Reading]
        if hub.battery_control is not None:
            await hub.battery_control.set_power_w(-3000)   # charge at 3 kW

One transport per Modbus link (shared by its unit ids, requests serialized), one named polling
task per link in one TaskGroup that polls its units in turn (safety-critical meters first,
silent units backed off, and on Modbus TCP a silent unit's request given up before its
neighbours go stale: :mod:`evdlm.devices.scheduling`), one task per in-process device, MQTT
devices fed by subscriptions on one client.

Failure policy: a failed poll keeps the last OK reading, which turns STALE once older than the
device's ``max_age_s``; with no OK reading to keep, the device is MISSING with the error as
reason. An implausible reading replaces whatever was there (INVALID: the device is talking
nonsense now). Every change of a device's quality is logged once (``evdlm.devices.hub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from evdlm.config.models import BatteryControlMode, Device, DeviceRole, SiteConfig
from evdlm.core.clock import Clock
from evdlm.core.types import Quality, Reading
from evdlm.devices.battery import BatteryControl, SunSpecBatteryControl
from evdlm.devices.codec import Measurement, orient
from evdlm.devices.errors import DeviceError, DeviceTimeoutError, TransportError
from evdlm.devices.modbus_transport import ModbusTransport, raise_if_cancelling
from evdlm.devices.mqtt_device import parse_mqtt_payload
from evdlm.devices.profile import SUNSPEC, load_profile
from evdlm.devices.quality import DEFAULT_PLAUSIBILITY, CounterState, Plausibility, to_reading, unwrap_counters
from evdlm.devices.readers import CallableReader, ProfileReader, Reader, SunSpecReader
from evdlm.devices.scheduling import (
    OTHER_RANK,
    SAFETY_RANK,
    PollOutcome,
    UnitSchedule,
    after_poll,
    hold_until_s,
    next_due_s,
    pick_next,
    safety_critical_devices,
)
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
    # Polling (evdlm.devices.scheduling): the unit's place in its link's schedule, how its last
    # poll ended, and whether an unexpected error's traceback was logged already (once only).
    schedule: UnitSchedule | None = None
    outcome: PollOutcome = PollOutcome.ANSWERED
    traceback_logged: bool = False


def _scheduled(slot: _Slot) -> UnitSchedule:
    assert slot.schedule is not None, "polled slots are scheduled before their loop starts"
    return slot.schedule


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
    readers : mapping of device name to measurement source, optional
        The in-process readers, one for every device with a ``sim:`` source: a callable
        returning a :class:`~evdlm.devices.codec.Measurement`, read like any other reader (in
        the device's poll period and budget, oriented by its ``invert_sign``). The composition
        root that runs a simulated site passes them in (``evdlm.sim.site_physics.sim_readers``);
        the hub knows no simulator.
    mqtt_client : MqttClient, optional
        The site's MQTT client (the gateway's, shared with DR and the state publisher), required
        when a device has an ``mqtt:`` source. The hub subscribes on it but neither builds,
        opens nor closes it: whoever built it owns its lifetime.
    plausibility : Plausibility
        Bounds for the INVALID checks.
    """

    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        *,
        base_dir: Path | None = None,
        readers: Mapping[str, Callable[[], Measurement]] | None = None,
        mqtt_client: MqttClient | None = None,
        plausibility: Plausibility = DEFAULT_PLAUSIBILITY,
    ) -> None:
        self.config = config
        self.clock = clock
        self.plausibility = replace(plausibility, nominal_voltage_v=config.grid.nominal_voltage_v)
        # Behind a grid meter, PV or a battery can net the power to near 0 while reactive current
        # still flows: there a low power factor is no sign of a wrong scale factor.
        generation = config.battery is not None or any(d.role is DeviceRole.PV for d in config.devices)
        self._grid_plausibility = replace(self.plausibility, min_power_factor=None) if generation else self.plausibility
        self.transports: dict[str, ModbusTransport] = {
            link.name: ModbusTransport(link, clock) for link in config.modbus_links
        }
        self._slots: dict[str, _Slot] = {}
        self._sunspec_readers: dict[str, SunSpecReader] = {}
        injected = dict(readers or {})
        unknown = sorted(set(injected) - {device.name for device in config.devices if device.sim is not None})
        if unknown:
            raise ValueError(f"readers given for devices without a sim source: {', '.join(unknown)}")
        for device in config.devices:
            self._slots[device.name] = self._build_slot(device, base_dir, injected.get(device.name))
        if mqtt_client is None and any(d.mqtt is not None for d in config.devices):
            raise ValueError("devices with an mqtt source need the site's MQTT client (mqtt_client)")
        self.mqtt: MqttClient | None = mqtt_client
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
        self._poll_rng = random.Random()  # jitter of the silent units' retries
        self._mqtt_handlers: list[tuple[str, Callable[[MqttMessage], None]]] = []

    def _build_slot(self, device: Device, base_dir: Path | None, injected: Callable[[], Measurement] | None) -> _Slot:
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
            if injected is None:
                raise ValueError(f"device {device.name!r} has a sim source but no reader was given")
            return _Slot(device, CallableReader(injected, device.invert_sign), 1.0)
        return _Slot(device, None, 0.0)

    # ------------------------------------------------------------ lifetime

    async def __aenter__(self) -> DeviceHub:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        try:
            for (_, group), slots in self._poll_groups().items():
                self._tasks.append(self._tg.create_task(self._poll_loop(slots), name=f"poll:{group}"))
            for slot in self._slots.values():
                if slot.reader is None and slot.device.mqtt is not None and self.mqtt is not None:
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
        for transport in self.transports.values():
            transport.close()

    # ------------------------------------------------------------ polling

    def _poll_groups(self) -> dict[tuple[str, str], list[_Slot]]:
        """Polled devices by link (a device read in process is a group of its own), scheduled."""
        critical = safety_critical_devices(self.config)
        groups: dict[tuple[str, str], list[_Slot]] = {}
        for name, slot in self._slots.items():
            if slot.reader is None:
                continue
            device = slot.device
            slot.schedule = UnitSchedule(
                name, device.poll_period_s, device.max_age_s, SAFETY_RANK if name in critical else OTHER_RANK
            )
            key = ("link", device.modbus.link) if device.modbus is not None else ("device", name)
            groups.setdefault(key, []).append(slot)
        return groups

    async def _poll_loop(self, slots: list[_Slot]) -> None:
        """Poll one link's units in turn, for ever (see :mod:`evdlm.devices.scheduling`)."""
        first = slots[0].device.modbus
        abandonable = len(slots) > 1 and first is not None and self.transports[first.link].abandonable
        while True:
            units = [_scheduled(slot) for slot in slots]
            now_s = self.clock.now_s()
            index = pick_next(units, now_s)
            if index is None:
                await self.clock.sleep(next_due_s(units) - now_s)
                continue
            slot = slots[index]
            hold_s = hold_until_s(units, index, now_s) if abandonable else math.inf
            if math.isinf(hold_s):
                await self.poll_once(slot.device.name)
            else:
                await self._poll_holding(slot, hold_s)
            raise_if_cancelling()
            slot.schedule = after_poll(units[index], slot.outcome, now_s, self.clock.now_s(), self._poll_rng)

    async def _poll_holding(self, slot: _Slot, hold_s: float) -> None:
        """Poll ``slot`` but give its request up at ``hold_s`` (clock time): others need the link.

        Only on links where giving up frees the link (:attr:`ModbusTransport.abandonable`); the
        transport then closes the connection, so the late answer goes nowhere, and the next
        request reconnects.
        """
        started_s = self.clock.now_s()
        poll = asyncio.create_task(self.poll_once(slot.device.name), name=f"poll:{slot.device.name}")
        timer = asyncio.create_task(self.clock.sleep(hold_s - started_s), name=f"hold:{slot.device.name}")
        try:
            await asyncio.wait((poll, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            poll.cancel()  # no-op once it is done
            # Let the abandoned request unwind (release the link's lock) before the next one.
            await asyncio.wait((poll,))
        if not poll.cancelled():
            poll.result()  # poll_once handles every device error itself; anything else is a bug
            return
        slot.outcome = PollOutcome.FAILED
        # Worded like the transport's timeout: to the operator it is the same silence.
        self._failed(
            slot, f"no response within {self.clock.now_s() - started_s:.1f} s (gave the link to the units that answer)"
        )
        self._current(slot, self.clock.now_s())

    async def poll_once(self, name: str) -> Reading:
        """Poll one device now and return its reading as the snapshot would show it."""
        slot = self._slots[name]
        if slot.reader is None:
            raise ValueError(f"device {name!r} is not polled (MQTT)")
        slot.polls += 1
        slot.outcome = PollOutcome.FAILED
        try:
            async with asyncio.timeout(slot.budget_s):
                measurement = await slot.reader.read()
        except DeviceError as exc:
            if isinstance(exc, TransportError) and not isinstance(exc, DeviceTimeoutError):
                slot.outcome = PollOutcome.LINK_DOWN
            self._failed(slot, str(exc))
        except TimeoutError:
            self._failed(slot, f"poll took longer than {slot.budget_s:g} s")
        except Exception as exc:  # a decoder bug must not kill the poll task or pass a number
            # The traceback once per device, or a persistent bug would log one every poll; the
            # failure itself is logged by _failed, once per change.
            if not slot.traceback_logged:
                slot.traceback_logged = True
                logger.exception("device %s: unexpected error while polling (traceback logged once)", name)
            self._failed(slot, f"internal error: {exc!r}")
        else:
            slot.outcome = PollOutcome.ANSWERED
            self._store(slot, measurement)
        return self._current(slot, self.clock.now_s())

    def _store(self, slot: _Slot, measurement: Measurement, *, require_power: bool = True) -> None:
        measurement, slot.counters = unwrap_counters(measurement, slot.counters)
        reading = to_reading(
            slot.device.name,
            self.clock.now_s(),
            measurement,
            slot.last_good,
            self._grid_plausibility if slot.device.role is DeviceRole.GRID_METER else self.plausibility,
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
