"""Device readers: one ``read() -> Measurement`` per source kind, oriented to evdlm's signs.

A reader does I/O through a transport and hands the registers to the pure decoders. Errors
are :class:`~evdlm.devices.errors.DeviceError` subclasses; the hub turns them into readings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from evdlm.config.models import DeviceRole
from evdlm.devices import sunspec
from evdlm.devices.codec import Measurement, orient
from evdlm.devices.errors import DiscoveryError, ModbusExceptionResponse
from evdlm.devices.modbus_transport import READ_HOLDING, ModbusTransport
from evdlm.devices.profile import RegisterBlock, RegisterProfile, decode_profile, plan_reads
from evdlm.devices.sunspec import ModelHeader

logger = logging.getLogger("evdlm.devices.sunspec")


class Reader(Protocol):
    async def read(self) -> Measurement:
        """One measurement, oriented (grid + import, PV + production, battery + discharge)."""
        ...


class ProfileReader:
    """A meter described by a register-map profile (YAML)."""

    def __init__(self, transport: ModbusTransport, unit_id: int, profile: RegisterProfile, invert_sign: bool) -> None:
        self.transport = transport
        self.unit_id = unit_id
        self.profile = profile
        # The profile's flag states the model's habit, the device's flag its wiring: both apply.
        self.invert = profile.invert_sign != invert_sign
        self.plan = plan_reads(profile, transport.max_registers_per_request)

    async def read(self) -> Measurement:
        blocks = [
            RegisterBlock(
                block.function_code,
                block.address,
                tuple(
                    await self.transport.read_registers(self.unit_id, block.function_code, block.address, block.count)
                ),
            )
            for block in self.plan
        ]
        return orient(decode_profile(self.profile, blocks), self.invert)


@dataclass(frozen=True)
class ModelRead:
    header: ModelHeader
    blocks: tuple[tuple[int, tuple[int, ...]], ...]
    values: dict[str, float | str | None]


class SunSpecReader:
    """A SunSpec device: discovered once (again after a model read fails), then polled by role."""

    def __init__(self, transport: ModbusTransport, unit_id: int, role: DeviceRole, invert_sign: bool) -> None:
        self.transport = transport
        self.unit_id = unit_id
        self.role = role
        self.invert_sign = invert_sign
        self.headers: list[ModelHeader] | None = None
        self.identity: dict[str, str | None] = {}

    async def _read_holding(self, address: int, count: int) -> list[int]:
        return await self.transport.read_registers(self.unit_id, READ_HOLDING, address, count)

    async def discover(self) -> list[ModelHeader]:
        if self.headers is None:
            headers = await sunspec.discover_models(self._read_holding)
            self.headers = headers
            self.identity = await self._read_identity()
            logger.info(
                "link %s unit %d: SunSpec %s, models %s",
                self.transport.name,
                self.unit_id,
                " ".join(str(v) for v in self.identity.values() if v) or "(no common model)",
                [header.model_id for header in headers],
            )
        return self.headers

    async def _read_identity(self) -> dict[str, str | None]:
        """Manufacturer, model, version and serial number from common model 1 (for the logs)."""
        header = self.find((sunspec.COMMON_MODEL,))
        if header is None:
            return {}
        values = (await self.read_model(header, sunspec.COMMON_POINTS)).values
        return {name: value if isinstance(value, str) else None for name, value in values.items()}

    def find(self, candidates: Sequence[int]) -> ModelHeader | None:
        return None if self.headers is None else sunspec.model_of(self.headers, candidates)

    async def read_model(self, header: ModelHeader, names: Sequence[str]) -> ModelRead:
        blocks: list[tuple[int, tuple[int, ...]]] = []
        try:
            for address, count in sunspec.plan_model_reads(header, names, self.transport.max_registers_per_request):
                blocks.append((address, tuple(await self._read_holding(address, count))))
        except ModbusExceptionResponse:
            # The map may have changed (firmware update, device replaced): rediscover next time.
            self.headers = None
            raise
        return ModelRead(header, tuple(blocks), sunspec.decode_points(header, blocks, names))

    async def read(self) -> Measurement:
        await self.discover()
        if self.role is DeviceRole.BATTERY:
            measurement = await self._read_battery()
        elif self.role is DeviceRole.PV:
            measurement = await self._read_pv()
        else:
            measurement = await self._read_meter()
        return orient(measurement, self.invert_sign)

    async def _read_meter(self) -> Measurement:
        header = self.find(sunspec.METER_INT_MODELS + sunspec.METER_FLOAT_MODELS)
        if header is None:
            raise DiscoveryError(f"unit {self.unit_id}: no SunSpec meter model (201–204, 211–214)")
        read = await self.read_model(header, sunspec.METER_POINTS)
        wrap = sunspec.accumulator_modulus(header, read.blocks, "TotWhImp")
        return sunspec.measurement_from_meter(read.values, wrap)

    async def _read_pv(self) -> Measurement:
        header = self.find(sunspec.INVERTER_INT_MODELS + sunspec.INVERTER_FLOAT_MODELS)
        if header is not None:
            read = await self.read_model(header, sunspec.INVERTER_POINTS)
            return sunspec.measurement_from_inverter(
                read.values, sunspec.accumulator_modulus(header, read.blocks, "WH")
            )
        header = self.find((sunspec.DER_AC_MODEL,))
        if header is None:
            raise DiscoveryError(f"unit {self.unit_id}: no SunSpec inverter model (101–103, 111–113, 701)")
        return sunspec.measurement_from_der((await self.read_model(header, sunspec.DER_AC_POINTS)).values)

    async def _read_battery(self) -> Measurement:
        values: dict[int, dict[str, float | str | None]] = {}
        for model_id in (sunspec.BATTERY_MODEL, sunspec.DER_CAPACITY_MODEL, sunspec.STORAGE_MODEL):
            header = self.find((model_id,))
            if header is not None:
                values[model_id] = (await self.read_model(header, sunspec.POINTS_BY_MODEL[model_id])).values
        der = self.find((sunspec.DER_AC_MODEL,))
        if sunspec.BATTERY_MODEL in values:
            # Model 802 W: power flowing out of the bank is positive (discharge), as evdlm's.
            battery = values[sunspec.BATTERY_MODEL]
            power = battery.get("W")
            measurement = Measurement(power_w=power if isinstance(power, float) else None)
        elif der is not None:
            measurement = sunspec.measurement_from_der((await self.read_model(der, sunspec.DER_AC_POINTS)).values)
        else:
            raise DiscoveryError(f"unit {self.unit_id}: no SunSpec battery power (802 or 701)")
        return replace(measurement, soc_pct=sunspec.battery_soc_pct(values))


class CallableReader:
    """A reader over an in-process source (the ``sim:`` devices read the site simulation)."""

    def __init__(self, source: Callable[[], Measurement], invert_sign: bool) -> None:
        self._source = source
        self._invert = invert_sign

    async def read(self) -> Measurement:
        return orient(self._source(), self._invert)
