"""Battery control over SunSpec: model 124 (storage rates) or 704 (DER active power setpoint).

Every command carries a revert timer (124 ``InOutWRte_RvrtTms``, 704 ``WSetRvrtTms``) of the
configured ``revert_timeout_s``: the device falls back to its own control unless the command
is refreshed, so a dead controller cannot leave the battery forced. The controller refreshes
simply by calling :meth:`set_power_w` every cycle; writes are rate limited to one per third
of the revert time while the setpoint does not change. Where the device has model 802, its
``CtrlHb`` controller heartbeat is bumped with every write.
"""

from __future__ import annotations

import logging
from typing import Protocol

from evdlm.config.models import Battery, BatteryControlMode
from evdlm.core.clock import Clock
from evdlm.core.site_settings import W_PER_KW
from evdlm.devices import sunspec
from evdlm.devices.codec import encode_value
from evdlm.devices.errors import DiscoveryError
from evdlm.devices.readers import SunSpecReader
from evdlm.devices.sunspec import ModelHeader

logger = logging.getLogger("evdlm.devices.battery")

STORCTL_LIMIT_CHARGE = 0x1  # 124 StorCtl_Mod bit 0: InWRte applies
STORCTL_LIMIT_DISCHARGE = 0x2  # bit 1: OutWRte applies


def _exponent(scale_factor: float | str | None) -> int:
    """A scale factor read back as a number; "not implemented" (None) means 10^0."""
    return int(scale_factor) if isinstance(scale_factor, float) else 0


class BatteryControl(Protocol):
    async def set_power_w(self, power_w: float) -> float:
        """Hold ``power_w`` (+ discharge, − charge); returns the clamped setpoint sent."""
        ...

    async def release(self) -> None:
        """Hand the battery back to its own control."""
        ...


def storage_rates_pct(power_w: float, w_cha_max_w: float) -> tuple[float, float]:
    """124 ``(InWRte, OutWRte)`` in % that pin the battery at ``power_w`` (+ discharge).

    With both limits active the battery's charge power ``P_ch`` is held in
    ``[-OutWRte, InWRte] × WChaMax / 100``; choosing ``InWRte = -OutWRte`` collapses the window
    to one point: ``InWRte = -p``, ``OutWRte = p`` with ``p = 100 × power_w / WChaMax``.
    """
    pct = max(-100.0, min(100.0, 100.0 * power_w / w_cha_max_w))
    return -pct, pct


class SunSpecBatteryControl:
    def __init__(self, reader: SunSpecReader, battery: Battery, clock: Clock) -> None:
        self._reader = reader
        self._battery = battery
        self._clock = clock
        if battery.control is BatteryControlMode.NONE:
            raise ValueError(f"battery {battery.device}: control is 'none' (read only)")
        self.mode = battery.control
        self._last_power_w: float | None = None
        self._last_write_at_s = float("-inf")
        self._heartbeat = 0
        self._max_charge_w = battery.max_charge_kw * W_PER_KW
        self._max_discharge_w = battery.max_discharge_kw * W_PER_KW

    @property
    def commanded(self) -> bool:
        """True while a setpoint sent by this controller may still hold the battery."""
        return self._last_power_w is not None

    def clamp_w(self, power_w: float) -> float:
        return max(-self._max_charge_w, min(self._max_discharge_w, power_w))

    async def _model(self, model_id: int) -> ModelHeader:
        await self._reader.discover()
        header = self._reader.find((model_id,))
        if header is None:
            raise DiscoveryError(f"battery {self._battery.device}: no SunSpec model {model_id} for control")
        return header

    async def _write_point(self, header: ModelHeader, name: str, registers: list[int]) -> None:
        point = sunspec.model_definition(header.model_id).points[name]
        await self._reader.transport.write_registers(self._reader.unit_id, header.address + point.offset, registers)

    async def set_power_w(self, power_w: float) -> float:
        power_w = self.clamp_w(power_w)
        now_s = self._clock.now_s()
        refresh_s = self._battery.revert_timeout_s / 3.0
        if power_w == self._last_power_w and now_s - self._last_write_at_s < refresh_s:
            return power_w
        if self.mode is BatteryControlMode.SUNSPEC_124:
            await self._write_124(power_w)
        elif self.mode is BatteryControlMode.SUNSPEC_704:
            await self._write_704(power_w)
        await self._beat()
        if power_w != self._last_power_w:
            logger.info(
                "battery %s: setpoint %.0f W (reverts after %d s)",
                self._battery.device,
                power_w,
                self._battery.revert_timeout_s,
            )
        self._last_power_w = power_w
        self._last_write_at_s = now_s
        return power_w

    async def _write_124(self, power_w: float) -> None:
        header = await self._model(sunspec.STORAGE_MODEL)
        values = (await self._reader.read_model(header, ("WChaMax", "InOutWRte_SF"))).values
        w_cha_max = values.get("WChaMax")
        if not isinstance(w_cha_max, float) or w_cha_max <= 0:
            raise DiscoveryError(f"battery {self._battery.device}: 124 WChaMax not available")
        exponent = _exponent(values.get("InOutWRte_SF"))
        in_pct, out_pct = storage_rates_pct(power_w, w_cha_max)
        # OutWRte, InWRte, InOutWRte_WinTms, InOutWRte_RvrtTms are contiguous: rates and revert
        # timer go in one write, before the mode, so the mode never acts on stale rates.
        rates = (
            encode_value(out_pct / 10.0**exponent, "int16")
            + encode_value(in_pct / 10.0**exponent, "int16")
            + [0, self._battery.revert_timeout_s]
        )
        await self._write_point(header, "OutWRte", rates)
        await self._write_point(header, "StorCtl_Mod", [STORCTL_LIMIT_CHARGE | STORCTL_LIMIT_DISCHARGE])

    async def _write_704(self, power_w: float) -> None:
        header = await self._model(sunspec.DER_CONTROL_MODEL)
        exponent = _exponent((await self._reader.read_model(header, ("WSet_SF",))).values.get("WSet_SF"))
        # Revert time first, then the setpoint, then enable: 704 W positive = injection (discharge).
        await self._write_point(header, "WSetRvrtTms", encode_value(self._battery.revert_timeout_s, "uint32"))
        await self._write_point(header, "WSet", encode_value(power_w / 10.0**exponent, "int32"))
        await self._write_point(header, "WSetEna", [1, 1])  # WSetEna = ENABLED, WSetMod = WATTS

    async def _beat(self) -> None:
        header = self._reader.find((sunspec.BATTERY_MODEL,))
        if header is None:
            return
        self._heartbeat = (self._heartbeat + 1) & 0xFFFF
        await self._write_point(header, "CtrlHb", [self._heartbeat])

    async def release(self) -> None:
        if self.mode is BatteryControlMode.SUNSPEC_124:
            await self._write_point(await self._model(sunspec.STORAGE_MODEL), "StorCtl_Mod", [0])
        elif self.mode is BatteryControlMode.SUNSPEC_704:
            await self._write_point(await self._model(sunspec.DER_CONTROL_MODEL), "WSetEna", [0])
        self._last_power_w = None
        self._last_write_at_s = float("-inf")
        logger.info("battery %s: released to its own control", self._battery.device)
