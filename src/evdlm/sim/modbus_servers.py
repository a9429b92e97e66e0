"""Modbus simulator servers on loopback, driven by one :class:`SiteSimulation`.

Units (one per Modbus unit id) compute their registers from the simulation at the injected
clock's time on every request:

* :class:`ProfileMeterUnit`: any register-map profile (SDM630, Janitza, EM24, a user's YAML),
  encoded with :func:`~evdlm.devices.profile.encode_profile`;
* :class:`SunSpecUnit`: a SunSpec chain (marker, model 1, then meter 203 / inverter 103 /
  storage 124 + battery 802 [+ 704]); the battery obeys its control registers and reverts.

A :class:`FaultInjector` per server makes a unit (or all) go silent, answer exceptions,
return garbage or answer slowly, or present plausible-but-wrong values: frozen, scaled,
drifting, a reversed CT, another site's load (applied to the measurement before encoding, by
the pure transforms :func:`scale_power`, :func:`apply_gain`, :func:`reverse_ct`,
:func:`constant_load`, :func:`apply_value_fault`), or for SunSpec a shifted scale factor or a
model chain past register 65535 (:func:`shift_scale_factors`, :func:`chain_past_end`).
:class:`SiteSimulators` starts one server per Modbus link of a site config and gives back the
config pointing at the bound ephemeral ports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

from evdlm.config.models import (
    BatteryControlMode,
    Circuit,
    DeviceRole,
    ModbusRtuLink,
    ModbusRtuOverTcpLink,
    SiteConfig,
)
from evdlm.core.clock import Clock
from evdlm.core.lifetime import StartStop
from evdlm.core.types import PhaseValues
from evdlm.devices import sunspec
from evdlm.devices.codec import Measurement, decode_value, encode_value, orient
from evdlm.devices.modbus_transport import DEVICE_FAILURE, ILLEGAL_ADDRESS, RegisterServer, ServerReply
from evdlm.devices.profile import SUNSPEC, RegisterProfile, encode_profile, load_profile
from evdlm.sim.site_physics import CircuitSimSpec, SiteSimParams, SiteSimulation

MeasurementSource = Callable[[float], Measurement]


class SimUnit(Protocol):
    def read(self, now_s: float, function_code: int, address: int, count: int) -> ServerReply: ...

    def write(self, now_s: float, address: int, values: list[int]) -> ServerReply: ...


class FaultedSource:
    """A unit's measurement source with the server's active value fault applied.

    The server sets :attr:`active` before every read (None: no value fault). Without a fault the
    measurement passes through and is remembered, so ``frozen`` repeats exactly what the unit
    presented last before the fault started.
    """

    def __init__(self, source: MeasurementSource) -> None:
        self.source = source
        self.active: ActiveFault | None = None
        self.last: Measurement | None = None

    def __call__(self, now_s: float) -> Measurement:
        live = self.source(now_s)
        active = self.active
        if active is None or active.fault.kind not in VALUE_FAULT_KINDS:
            self.last = live
            return live
        if active.started_s is None:
            active.started_s = now_s
        if active.held is None:
            active.held = self.last if self.last is not None else live
        return apply_value_fault(active.fault, live, held=active.held, elapsed_s=now_s - active.started_s)


class ProfileMeterUnit:
    """A meter speaking a register-map profile; unmapped registers read as 0."""

    def __init__(self, profile: RegisterProfile, source: MeasurementSource, *, invert: bool = False) -> None:
        self.profile = profile
        self.source = source
        self.invert = invert  # present the vendor's orientation, which readers flip back
        self.faulted = FaultedSource(source)

    @property
    def value_fault(self) -> ActiveFault | None:
        return self.faulted.active

    @value_fault.setter
    def value_fault(self, active: ActiveFault | None) -> None:
        self.faulted.active = active

    def read(self, now_s: float, function_code: int, address: int, count: int) -> ServerReply:
        registers = encode_profile(self.profile, orient(self.faulted(now_s), self.invert))
        return [registers.get((function_code, address + i), 0) for i in range(count)]

    def write(self, now_s: float, address: int, values: list[int]) -> ServerReply:
        return ILLEGAL_ADDRESS


ModelValues = Callable[[float], dict[str, float | str | None]]


@dataclass(frozen=True)
class SimModel:
    model_id: int
    values: ModelValues
    scale_factors: Mapping[str, int] = field(default_factory=dict)


class SunSpecUnit:
    """A SunSpec device: marker at ``base_address``, then the given models, then 0xFFFF.

    Writes land in the addressed registers and are handed to ``on_write`` with the model
    values decoded from the written image (controls are read back as written).
    """

    def __init__(
        self,
        models: Sequence[SimModel],
        *,
        base_address: int = 40000,
        on_write: Callable[[float, int, dict[int, list[int]]], None] | None = None,
    ) -> None:
        self.models = list(models)
        self.base_address = base_address
        self.on_write = on_write
        self.headers: list[sunspec.ModelHeader] = []
        address = base_address + 2
        for model in self.models:
            length = sunspec.model_length(model.model_id)
            self.headers.append(sunspec.ModelHeader(model.model_id, address, length))
            address += 2 + length
        self.end_address = address + 2
        self.written: dict[int, int] = {}  # absolute address → value written by a client
        # Set by the server before every read: the unit's active fault (value faults are applied
        # by the models' sources, register faults here), or None.
        self.value_fault: ActiveFault | None = None

    def image(self, now_s: float) -> list[int]:
        registers = list(sunspec.SUNS_MARKER)
        fault = self.value_fault.fault if self.value_fault is not None else None
        for model in self.models:
            block = sunspec.build_model_registers(model.model_id, model.values(now_s), dict(model.scale_factors))
            if fault is not None and fault.kind == "sf_offset":
                block = shift_scale_factors(model.model_id, block, fault.sf_shift, fault.scale_factors)
            registers += block
        registers = [*registers, sunspec.END_MODEL_ID, 0]
        if fault is not None and fault.kind == "chain_past_end":
            registers = chain_past_end(registers, self.base_address, self._model_index(fault.model_id))
        return registers

    def _model_index(self, model_id: int | None) -> int:
        """Position in the chain of ``model_id`` (None or absent: the last model)."""
        ids = [model.model_id for model in self.models]
        return ids.index(model_id) if model_id in ids else len(ids) - 1

    def read(self, now_s: float, function_code: int, address: int, count: int) -> ServerReply:
        if function_code != 3 or address < self.base_address or address + count > self.end_address:
            return ILLEGAL_ADDRESS
        image = self.image(now_s)
        start = address - self.base_address
        return image[start : start + count]

    def write(self, now_s: float, address: int, values: list[int]) -> ServerReply:
        if address < self.base_address or address + len(values) > self.end_address:
            return ILLEGAL_ADDRESS
        for i, value in enumerate(values):
            self.written[address + i] = value
        if self.on_write is not None:
            by_model: dict[int, list[int]] = {}
            for header in self.headers:
                if header.address <= address < header.address + 2 + header.length:
                    by_model[header.model_id] = [
                        self.written.get(header.address + i, 0) for i in range(2 + header.length)
                    ]
            self.on_write(now_s, address, by_model)
        return []

    def written_point(self, model_id: int, name: str) -> int | float | None:
        """A control point as last written (raw, unscaled), or None if never written."""
        header = next((h for h in self.headers if h.model_id == model_id), None)
        if header is None:
            return None
        point = sunspec.model_definition(model_id).points[name]
        words = [self.written.get(header.address + point.offset + i) for i in range(point.size)]
        if any(word is None for word in words):
            return None
        return decode_value([w for w in words if w is not None], point.type)


# ---------------------------------------------------------------- SunSpec device builders


def _common(model: str, serial: str) -> SimModel:
    return SimModel(1, lambda now_s: {"Mn": "evdlm", "Md": model, "Vr": "sim", "SN": serial, "DA": 1})


def _total_current_a(m: Measurement) -> float | None:
    currents = m.phase_current_a
    return None if currents is None else sum(c or 0.0 for c in currents)


def sunspec_meter_unit(
    source: MeasurementSource, serial: str, *, invert: bool = False, a_sf: int = -2, w_sf: int = 1
) -> SunSpecUnit:
    """Common model + meter 203 (int + SF). Like a real meter, the scale factors fit its range:
    int16 holds ±32767 counts, so A_SF −2 reads up to 327 A summed, W_SF 1 up to 327 kW."""

    faulted = FaultedSource(source)

    def values(now_s: float) -> dict[str, float | str | None]:
        faulted.active = unit.value_fault
        m = orient(faulted(now_s), invert)
        # The decode side's table (sunspec.METER_MAP) places the fields; "A" is the meter's sum.
        return {"A": _total_current_a(m), **sunspec.METER_MAP.encode(m)}

    # W_SF 1: int16 W would overflow at 32.7 kW; tens of watts are plenty for a site meter.
    sfs = {
        "A_SF": a_sf,
        "V_SF": -1,
        "Hz_SF": -2,
        "W_SF": w_sf,
        "VA_SF": w_sf,
        "VAR_SF": w_sf,
        "PF_SF": -2,
        "TotWh_SF": 0,
    }
    unit = SunSpecUnit([_common("sim-meter-203", serial), SimModel(203, values, sfs)])
    return unit


def sunspec_inverter_unit(source: MeasurementSource, serial: str) -> SunSpecUnit:
    """Common model + three-phase inverter 103."""

    def values(now_s: float) -> dict[str, float | str | None]:
        m = source(now_s)
        return {
            "A": _total_current_a(m),
            **sunspec.INVERTER_MAP.encode(m),  # the decode side's table
            "St": 4 if (m.power_w or 0.0) > 0 else 2,  # 4 MPPT, 2 SLEEPING
        }

    sfs = {"A_SF": -2, "V_SF": -1, "W_SF": 1, "Hz_SF": -2, "WH_SF": 0}
    return SunSpecUnit([_common("sim-inverter-103", serial), SimModel(103, values, sfs)])


def sunspec_battery_unit(simulation: SiteSimulation, serial: str, *, with_704: bool) -> SunSpecUnit:
    """Common + storage 124 + battery 802 (+ DER control 704); obeys writes, reverts on timeout."""
    params = simulation.params
    pct_sf = -2  # InOutWRte_SF: hundredths of a percent

    def storage(now_s: float) -> dict[str, float | str | None]:
        snap = simulation.advance(now_s)
        cmd = simulation.command
        return {
            "WChaMax": params.battery_max_charge_w,
            "StorCtl_Mod": cmd.storctl_mod,
            "ChaState": snap.battery_soc_pct,
            "MinRsvPct": params.battery_soc_min_pct,
            "OutWRte": cmd.out_wrte_pct,
            "InWRte": cmd.in_wrte_pct,
            "InOutWRte_WinTms": 0,
            "InOutWRte_RvrtTms": cmd.revert_s,
            "ChaSt": 4 if snap.battery_w < 0 else (3 if snap.battery_w > 0 else 6),  # CHARGING/DISCHARGING/HOLDING
        }

    def battery(now_s: float) -> dict[str, float | str | None]:
        snap = simulation.advance(now_s)
        return {
            "WHRtg": params.battery_capacity_wh,
            "WChaRteMax": params.battery_max_charge_w,
            "WDisChaRteMax": params.battery_max_discharge_w,
            "SoC": snap.battery_soc_pct,
            "SoCRsvMin": params.battery_soc_min_pct,
            "W": snap.battery_w,
            "CtrlHb": unit.written_point(802, "CtrlHb") or 0,
        }

    def control(now_s: float) -> dict[str, float | str | None]:
        cmd = simulation.command
        return {
            "WSetEna": 1 if cmd.wset_enabled else 0,
            "WSetMod": 1,
            "WSet": cmd.wset_w,
            "WSetRvrtTms": cmd.revert_s,
        }

    def on_write(now_s: float, address: int, by_model: dict[int, list[int]]) -> None:
        if 124 in by_model:
            mod = unit.written_point(124, "StorCtl_Mod")
            in_raw = unit.written_point(124, "InWRte")
            out_raw = unit.written_point(124, "OutWRte")
            revert = unit.written_point(124, "InOutWRte_RvrtTms")
            simulation.write_storage_control(
                now_s,
                int(mod or 0),
                100.0 if in_raw is None else float(in_raw) * 10.0**pct_sf,
                100.0 if out_raw is None else float(out_raw) * 10.0**pct_sf,
                float(revert or 0),
            )
        if 704 in by_model:
            enabled = unit.written_point(704, "WSetEna")
            wset = unit.written_point(704, "WSet")
            revert = unit.written_point(704, "WSetRvrtTms")
            simulation.write_power_setpoint(now_s, enabled == 1, float(wset or 0), float(revert or 0))

    models = [
        _common("sim-battery", serial),
        SimModel(124, storage, {"WChaMax_SF": 0, "MinRsvPct_SF": 0, "ChaState_SF": -1, "InOutWRte_SF": pct_sf}),
        SimModel(802, battery, {"WHRtg_SF": 0, "WChaDisChaMax_SF": 0, "SoC_SF": -1, "W_SF": 0}),
    ]
    if with_704:
        models.append(SimModel(704, control, {"WSet_SF": 0, "WSetPct_SF": 0}))
    unit = SunSpecUnit(models, on_write=on_write)
    return unit


# ---------------------------------------------------------------- faults and the server


FaultKind = Literal[
    "silent", "exception", "garbage", "slow",
    "frozen", "scale", "drift", "ct_reversed", "constant",
    "sf_offset", "chain_past_end",
]  # fmt: skip
# Plausible-but-wrong values, applied to the unit's measurement before it is encoded.
VALUE_FAULT_KINDS: frozenset[str] = frozenset({"frozen", "scale", "drift", "ct_reversed", "constant"})
# SunSpec register-image faults (the values are right, their description is not).
REGISTER_FAULT_KINDS: frozenset[str] = frozenset({"sf_offset", "chain_past_end"})
# Where the chain of a corrupt SunSpec device lets its next model start: past the last register.
LAST_REGISTER = 0xFFFF


@dataclass(frozen=True)
class Fault:
    """What a faulted unit does instead of answering truthfully.

    The unit does not answer right:

    * ``silent``: no answer; ``exception``: Modbus exception ``exception_code``;
    * ``garbage``: every register 0x7FFF (NaN as float32, absurd as int32);
    * ``slow``: answer after ``delay_s`` of wall time (a device's slowness does not follow a
      scaled clock).

    The unit answers, with plausible values that are wrong (units with a measurement source:
    :class:`ProfileMeterUnit` and :func:`sunspec_meter_unit`; others ignore these):

    * ``frozen``: the values the unit presented last before the fault, bit-identical, counters
      included (a meter whose register image stopped updating);
    * ``scale``: total and per-phase power × ``factor`` (0.01: "power 100× low"; currents,
      voltages and counters untouched, as a wrong power scaling in the meter's firmware);
    * ``drift``: power and current × a gain falling linearly from 1 to ``factor`` over
      ``duration_s`` from the injection, then held (a drifting CT; counters untouched);
    * ``ct_reversed``: phase ``phase`` (0..2, the meter's L1..L3) wired backwards: its power
      negated, its current too when ``signed_current``; the total is the sum of the phases, as
      the meter computes it;
    * ``constant``: another site's steady load: ``phase_current_a`` per phase at the live
      voltage and ``power_factor``, total the sum, counters advancing at that power from the
      values at the injection.

    SunSpec register faults (:class:`SunSpecUnit`, whose values stay right):

    * ``sf_offset``: the scale-factor registers named in ``scale_factors`` read SF +
      ``sf_shift`` while the raw values are unchanged (W_SF 1 → −2: power 1000× low);
    * ``chain_past_end``: the length register of model ``model_id`` (None: the last model)
      claims registers past 65535, so the chain's next model would start beyond the address
      space (the device's real registers are unchanged).
    """

    kind: FaultKind
    exception_code: int = DEVICE_FAILURE
    delay_s: float = 0.0
    factor: float = 1.0
    duration_s: float = 0.0
    phase: int = 0
    signed_current: bool = False
    phase_current_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    power_factor: float = 1.0
    sf_shift: int = 0
    scale_factors: tuple[str, ...] = ("W_SF",)
    model_id: int | None = None

    @staticmethod
    def frozen() -> Fault:
        return Fault("frozen")

    @staticmethod
    def scaled(factor: float) -> Fault:
        return Fault("scale", factor=factor)

    @staticmethod
    def drifting(to_gain: float, over_s: float) -> Fault:
        return Fault("drift", factor=to_gain, duration_s=over_s)

    @staticmethod
    def ct_reversed(phase: int = 0, *, signed_current: bool = False) -> Fault:
        if not 0 <= phase <= 2:
            raise ValueError("phase is 0, 1 or 2 (L1..L3)")
        return Fault("ct_reversed", phase=phase, signed_current=signed_current)

    @staticmethod
    def constant(phase_current_a: tuple[float, float, float], power_factor: float = 1.0) -> Fault:
        return Fault("constant", phase_current_a=phase_current_a, power_factor=power_factor)

    @staticmethod
    def sf_offset(shift: int, scale_factors: tuple[str, ...] = ("W_SF",)) -> Fault:
        return Fault("sf_offset", sf_shift=shift, scale_factors=scale_factors)

    @staticmethod
    def chain_past_end(model_id: int | None = None) -> Fault:
        return Fault("chain_past_end", model_id=model_id)


@dataclass
class ActiveFault:
    """A fault as injected: when it started (clock time; None until the first read when the
    injector has no clock) and, for ``frozen`` / ``constant``, the measurement it started from."""

    fault: Fault
    started_s: float | None = None
    held: Measurement | None = None


# ---------------------------------------------------------------- pure value transforms


def _scaled(values: PhaseValues | None, factor: float) -> PhaseValues | None:
    if values is None:
        return None
    a, b, c = (None if value is None else value * factor for value in values)
    return (a, b, c)


def scale_power(measurement: Measurement, factor: float) -> Measurement:
    """Total and per-phase power × ``factor``; everything else as measured."""
    return replace(
        measurement,
        power_w=None if measurement.power_w is None else measurement.power_w * factor,
        phase_power_w=_scaled(measurement.phase_power_w, factor),
    )


def drift_gain(elapsed_s: float, to_gain: float, duration_s: float) -> float:
    """Gain ``elapsed_s`` after a drift started: 1 falling linearly to ``to_gain`` at ``duration_s``."""
    if duration_s <= 0:
        return to_gain
    fraction = min(1.0, max(0.0, elapsed_s / duration_s))
    return 1.0 + (to_gain - 1.0) * fraction


def apply_gain(measurement: Measurement, gain: float) -> Measurement:
    """Power and current × ``gain`` (a CT reading low or high); voltages and counters as measured."""
    return replace(
        scale_power(measurement, gain),
        phase_current_a=_scaled(measurement.phase_current_a, gain),
    )


def _negated_at(values: PhaseValues, phase: int) -> PhaseValues:
    a, b, c = (None if value is None else (-value if i == phase else value) for i, value in enumerate(values))
    return (a, b, c)


def reverse_ct(measurement: Measurement, phase: int, *, signed_current: bool = False) -> Measurement:
    """Phase ``phase``'s CT wired backwards: its power negated (its current too on a meter that
    signs currents), the total recomputed as the sum of the phases, as the meter does.

    Without per-phase powers the total loses twice a third of itself (the phase's share)."""
    m = measurement
    phase_power = m.phase_power_w
    power = m.power_w
    if phase_power is not None:
        phase_power = _negated_at(phase_power, phase)
        if all(value is not None for value in phase_power):
            power = sum(value or 0.0 for value in phase_power)
    elif power is not None:
        power = power / 3.0
    currents = m.phase_current_a
    if signed_current and currents is not None:
        currents = _negated_at(currents, phase)
    return replace(m, power_w=power, phase_power_w=phase_power, phase_current_a=currents)


def constant_load(
    like: Measurement,
    phase_current_a: tuple[float, float, float],
    power_factor: float,
    start: Measurement,
    elapsed_s: float,
) -> Measurement:
    """Another site's steady load, presented with the live voltage and frequency of ``like``.

    Per phase ``I × V × power_factor`` (V = 230 where ``like`` has none), the total their sum;
    the counters are ``start``'s advanced by that total over ``elapsed_s``.
    """
    voltages = like.phase_voltage_v or (230.0, 230.0, 230.0)
    powers = [current * (voltage if voltage is not None else 230.0) * power_factor
              for current, voltage in zip(phase_current_a, voltages, strict=True)]  # fmt: skip
    total = sum(powers)
    hours = max(0.0, elapsed_s) / 3600.0
    imported = start.import_energy_wh
    exported = start.export_energy_wh
    return replace(
        like,
        power_w=total,
        phase_power_w=(powers[0], powers[1], powers[2]),
        phase_current_a=(abs(phase_current_a[0]), abs(phase_current_a[1]), abs(phase_current_a[2])),
        import_energy_wh=None if imported is None else imported + max(total, 0.0) * hours,
        export_energy_wh=None if exported is None else exported + max(-total, 0.0) * hours,
    )


def apply_value_fault(fault: Fault, live: Measurement, *, held: Measurement, elapsed_s: float) -> Measurement:
    """What a unit with ``fault`` presents instead of ``live`` (pure).

    ``held`` is the measurement the fault started from (what ``frozen`` repeats), ``elapsed_s``
    the time since it started. Faults that are not value faults leave ``live`` as it is.
    """
    kind = fault.kind
    if kind == "frozen":
        return held
    if kind == "scale":
        return scale_power(live, fault.factor)
    if kind == "drift":
        return apply_gain(live, drift_gain(elapsed_s, fault.factor, fault.duration_s))
    if kind == "ct_reversed":
        return reverse_ct(live, fault.phase, signed_current=fault.signed_current)
    if kind == "constant":
        return constant_load(live, fault.phase_current_a, fault.power_factor, held, elapsed_s)
    return live


# ---------------------------------------------------------------- pure SunSpec register faults


def shift_scale_factors(model_id: int, registers: Sequence[int], shift: int, names: Sequence[str]) -> list[int]:
    """One model's registers (ID, L, points) with the SF points ``names`` read as SF + ``shift``.

    Raw values are untouched, so every value scaled by a shifted SF reads 10^shift times off.
    SFs the model lacks or leaves "not implemented" (0x8000) are left as they are.
    """
    out = list(registers)
    points = sunspec.model_definition(model_id).points
    for name in names:
        point = points.get(name)
        if point is None or point.type != "sunssf" or point.offset >= len(out) or out[point.offset] == 0x8000:
            continue
        value = int(decode_value([out[point.offset]], "sunssf")) + shift
        out[point.offset] = encode_value(value, "int16")[0]
    return out


def chain_past_end(image: Sequence[int], base_address: int, model_index: int) -> list[int]:
    """A SunSpec image (marker at ``base_address``, then models, then the end marker) whose model
    number ``model_index`` (0 = the first after the marker) claims a length reaching past
    register 65535. Its points and every register stay where they are."""
    out = list(image)
    offset = 2  # the first model's ID register, relative to the marker
    for _ in range(model_index):
        offset += 2 + out[offset + 1]
    header_address = base_address + offset
    # The next model would start at header_address + 2 + L: put it past the last register.
    out[offset + 1] = min(0xFFFF, LAST_REGISTER + 1 - (header_address + 2) + 0x100)
    return out


class FaultInjector:
    def __init__(self, clock: Clock | None = None) -> None:
        self._faults: dict[int | None, ActiveFault] = {}
        self._clock = clock

    def inject(self, fault: Fault, unit_id: int | None = None) -> None:
        """Apply ``fault`` to ``unit_id`` (None: every unit of the server), replacing its last one."""
        self._faults[unit_id] = ActiveFault(fault, None if self._clock is None else self._clock.now_s())

    def clear(self, unit_id: int | None = None) -> None:
        if unit_id is None:
            self._faults.clear()
        else:
            self._faults.pop(unit_id, None)

    def active_for(self, unit_id: int) -> ActiveFault | None:
        return self._faults.get(unit_id) or self._faults.get(None)

    def fault_for(self, unit_id: int) -> Fault | None:
        active = self.active_for(unit_id)
        return None if active is None else active.fault


class SimModbusServer(StartStop):
    """One loopback Modbus server carrying several simulated units (like one gateway/line)."""

    def __init__(self, units: Mapping[int, SimUnit], clock: Clock, *, port: int = 0, rtu_framing: bool = False) -> None:
        self.units = dict(units)
        self.clock = clock
        self.faults = FaultInjector(clock)
        self.requests = 0
        self._server = RegisterServer(list(self.units), self._read, self._write, port=port, rtu_framing=rtu_framing)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def host(self) -> str:
        return self._server.host

    async def _apply_fault(self, unit_id: int, count: int) -> ServerReply | Literal[False]:
        active = self.faults.active_for(unit_id)
        unit = self.units.get(unit_id)
        if isinstance(unit, ProfileMeterUnit | SunSpecUnit):
            # Value and register faults are the unit's to apply; the others pre-empt it.
            unit.value_fault = active
        fault = None if active is None else active.fault
        if fault is None or fault.kind in VALUE_FAULT_KINDS or fault.kind in REGISTER_FAULT_KINDS:
            return False
        if fault.kind == "silent":
            return None
        if fault.kind == "exception":
            return fault.exception_code
        if fault.kind == "garbage":
            return [0x7FFF] * count
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
        return False

    async def _read(self, unit_id: int, function_code: int, address: int, count: int) -> ServerReply:
        self.requests += 1
        faulted = await self._apply_fault(unit_id, count)
        if faulted is not False:
            return faulted
        return self.units[unit_id].read(self.clock.now_s(), function_code, address, count)

    async def _write(self, unit_id: int, address: int, values: list[int]) -> ServerReply:
        self.requests += 1
        faulted = await self._apply_fault(unit_id, len(values))
        if faulted is not False:
            return faulted if not isinstance(faulted, list) else DEVICE_FAILURE
        return self.units[unit_id].write(self.clock.now_s(), address, values)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()


# ---------------------------------------------------------------- a whole site from its config


def sim_params_for(config: SiteConfig, **overrides: float) -> SiteSimParams:
    """Simulation parameters matching a config's battery (capacity, rates, SoC window)."""
    values: dict[str, float] = {}
    if config.battery is not None:
        b = config.battery
        values.update(
            battery_capacity_wh=b.capacity_kwh * 1000.0,
            battery_max_charge_w=b.max_charge_kw * 1000.0,
            battery_max_discharge_w=b.max_discharge_kw * 1000.0,
            battery_soc_min_pct=b.soc_min_pct,
            battery_soc_max_pct=b.soc_max_pct,
        )
    values.update(overrides)
    return SiteSimParams(**values)  # type: ignore[arg-type]


def _charger_ids(circuit: Circuit, config: SiteConfig) -> set[str]:
    ids = {charger.id for charger in config.chargers if charger.circuit == circuit.id}
    for child in circuit.children:
        ids |= _charger_ids(child, config)
    return ids


def _all_circuits(circuits: Sequence[Circuit]) -> list[Circuit]:
    out: list[Circuit] = []
    for circuit in circuits:
        out.append(circuit)
        out.extend(_all_circuits(circuit.children))
    return out


def circuit_specs_for(config: SiteConfig, base_share: float = 0.2) -> dict[str, CircuitSimSpec]:
    """Per circuit-meter device: the chargers below its circuit and a share of the base load."""
    specs: dict[str, CircuitSimSpec] = {}
    for circuit in _all_circuits(config.circuits):
        if circuit.meter is not None:
            specs[circuit.meter] = CircuitSimSpec(frozenset(_charger_ids(circuit, config)), base_share)
    return specs


class SiteSimulators:
    """One :class:`SimModbusServer` per Modbus link of ``config``, units per device.

    Device → simulated unit: grid_meter / circuit_meter / pv with profile ``sunspec`` become
    SunSpec 203 / 203 / 103 units, any other profile a :class:`ProfileMeterUnit`; a battery
    becomes SunSpec 124 + 802 (+ 704 when ``battery.control`` is ``sunspec_704``). Servers
    bind ``127.0.0.1`` on ephemeral ports unless ``use_config_ports``; :meth:`config` returns
    the site config with every link pointing at its server. Serial (``rtu``) links cannot be
    simulated on loopback and raise ``ValueError``.
    """

    def __init__(
        self,
        config: SiteConfig,
        simulation: SiteSimulation,
        clock: Clock,
        *,
        use_config_ports: bool = False,
        base_dir: Path | None = None,
    ) -> None:
        self._config = config
        self.simulation = simulation
        self.clock = clock
        self.servers: dict[str, SimModbusServer] = {}
        self.units: dict[str, SimUnit] = {}  # by device name
        units_by_link: dict[str, dict[int, SimUnit]] = {}
        for device in config.devices:
            if device.modbus is None:
                continue
            unit = self._unit_for(device.name, device.role, device.modbus.profile, device.invert_sign, base_dir)
            self.units[device.name] = unit
            units_by_link.setdefault(device.modbus.link, {})[device.modbus.unit_id] = unit
        for link in config.modbus_links:
            if link.name not in units_by_link:
                continue
            if isinstance(link, ModbusRtuLink):
                raise ValueError(f"link {link.name}: serial links cannot be simulated on loopback")
            self.servers[link.name] = SimModbusServer(
                units_by_link[link.name],
                clock,
                port=link.port if use_config_ports else 0,
                rtu_framing=isinstance(link, ModbusRtuOverTcpLink),
            )

    def _unit_for(self, name: str, role: DeviceRole, profile_name: str, invert: bool, base_dir: Path | None) -> SimUnit:
        sim = self.simulation
        if role is DeviceRole.BATTERY:
            with_704 = (
                self._config.battery is not None and self._config.battery.control is BatteryControlMode.SUNSPEC_704
            )
            return sunspec_battery_unit(sim, serial=name, with_704=with_704)
        source: MeasurementSource
        if role is DeviceRole.GRID_METER:
            source = sim.grid_meter
        elif role is DeviceRole.PV:
            source = sim.pv
        else:

            def source(now_s: float) -> Measurement:
                return sim.circuit_meter(name, now_s)

        if profile_name == SUNSPEC:
            if role is DeviceRole.PV:
                return sunspec_inverter_unit(source, serial=name)
            # Scale factors wide enough for this site: twice its grid limits, summed over phases.
            grid = self._config.grid
            a_sf = -2 if 2 * 3 * grid.phase_current_limit_a < 327.67 else -1
            w_sf = 1 if 2 * grid.import_limit_kw * 1000.0 < 327_670.0 else 2
            return sunspec_meter_unit(source, serial=name, invert=invert, a_sf=a_sf, w_sf=w_sf)
        profile = load_profile(profile_name, base_dir)
        return ProfileMeterUnit(profile, source, invert=profile.invert_sign != invert)

    async def __aenter__(self) -> SiteSimulators:
        for server in self.servers.values():
            await server.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for server in self.servers.values():
            await server.stop()

    def config(self) -> SiteConfig:
        """The site config with each simulated link at 127.0.0.1 and its server's bound port."""
        links = []
        for link in self._config.modbus_links:
            server = self.servers.get(link.name)
            if server is None or isinstance(link, ModbusRtuLink):
                links.append(link)
            else:
                links.append(link.model_copy(update={"host": server.host, "port": server.port}))
        return self._config.model_copy(update={"modbus_links": links})
