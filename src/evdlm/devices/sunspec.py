"""SunSpec: model definitions, discovery, read planning and pure decoding.

Point offsets, types and scale-factor names come from the SunSpec Alliance's own JSON model
definitions shipped in ``pysunspec2`` (``sunspec2/models/json/model_<id>.json``); pysunspec2's
I/O is blocking, so it is used only as the model dictionary and all I/O goes through the async
transport. Only the top-level points of a model are used (the models evdlm reads keep every
point it needs there).

Rules applied (SunSpec Information Model Specification):

* Big-endian, high word first; ``value = raw × 10^SF`` for points with a scale factor.
* "Not implemented" sentinels become None: int16 0x8000, uint16/enum16 0xFFFF, int32
  0x80000000, uint32 0xFFFFFFFF, acc16/32/64 0, sunssf 0x8000, float32 NaN.
* A value and its scale factor are read in the same request (:func:`plan_model_reads`), else a
  device updating between two requests could pair a new value with an old SF.
* Accumulators wrap modulo 2^bits; the wrap modulus is reported so counter checks unwrap it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from evdlm.devices.codec import (
    REGISTER_COUNT,
    DataType,
    Measurement,
    decode_string,
    decode_value,
    encode_string,
    encode_value,
)
from evdlm.devices.errors import DiscoveryError, ModbusExceptionResponse, ProfileError

# Where SunSpec devices put the "SunS" marker, in the order to probe them.
SUNSPEC_BASE_ADDRESSES = (40000, 0, 50000)
SUNS_MARKER = (0x5375, 0x6E53)
END_MODEL_ID = 0xFFFF
MAX_CHAIN_MODELS = 64  # a device with more models than this is looping or corrupt
REGISTER_SPACE = 0x10000  # Modbus addresses 0..65535

COMMON_MODEL = 1
METER_INT_MODELS = (201, 202, 203, 204)
METER_FLOAT_MODELS = (211, 212, 213, 214)
INVERTER_INT_MODELS = (101, 102, 103)
INVERTER_FLOAT_MODELS = (111, 112, 113)
DER_AC_MODEL = 701
DER_CONTROL_MODEL = 704
STORAGE_MODEL = 124
DER_CAPACITY_MODEL = 713
BATTERY_MODEL = 802

_NOT_IMPLEMENTED: dict[str, int] = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "int32": 0x80000000,
    "uint32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "int64": 0x8000000000000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
}
_ACCUMULATORS = {"acc32": 32, "acc64": 64}


@dataclass(frozen=True)
class PointDef:
    name: str
    offset: int  # registers from the model's ID register
    type: DataType
    size: int  # registers
    sf: str | int | None  # name of the scale-factor point, a fixed exponent, or None


@dataclass(frozen=True)
class ModelDef:
    model_id: int
    name: str
    points: dict[str, PointDef]


_SUNSPEC_JSON_DIR: Path | None = None


def _json_dir() -> Path:
    global _SUNSPEC_JSON_DIR
    if _SUNSPEC_JSON_DIR is None:
        import sunspec2

        _SUNSPEC_JSON_DIR = Path(sunspec2.__file__).resolve().parent / "models" / "json"
    return _SUNSPEC_JSON_DIR


@cache
def model_definition(model_id: int) -> ModelDef:
    """The top-level points of SunSpec model ``model_id`` with their offsets (from pysunspec2)."""
    path = _json_dir() / f"model_{model_id}.json"
    if not path.is_file():
        raise ProfileError(f"no SunSpec definition for model {model_id}")
    group = json.loads(path.read_text(encoding="utf-8"))["group"]
    points: dict[str, PointDef] = {}
    offset = 0
    for point in group["points"]:
        size = int(point.get("size", 1))
        sf = point.get("sf")
        points[point["name"]] = PointDef(point["name"], offset, point["type"], size, sf)
        offset += size
    return ModelDef(model_id, group["name"], points)


@dataclass(frozen=True)
class ModelHeader:
    """One model of a device's chain: ``address`` is the absolute address of its ID register."""

    model_id: int
    address: int
    length: int  # registers after ID and L


def is_sunspec_marker(registers: Sequence[int]) -> bool:
    return tuple(registers[:2]) == SUNS_MARKER


def parse_model_header(address: int, registers: Sequence[int]) -> ModelHeader | None:
    """A chain entry from its ID and L registers; None at the end marker."""
    model_id, length = int(registers[0]), int(registers[1])
    if model_id == END_MODEL_ID:
        return None
    return ModelHeader(model_id, address, length)


def check_model_bounds(header: ModelHeader) -> None:
    """Raise :class:`DiscoveryError` when a model's registers run past register 65535.

    A length that does is a corrupt chain (or a device counting in bytes); walking on would ask
    for addresses Modbus cannot carry, and reading a model cut at 65535 would decode garbage.
    """
    end = header.address + 2 + header.length  # one past the model's last register
    if end > REGISTER_SPACE:
        raise DiscoveryError(
            f"SunSpec model {header.model_id} at register {header.address} declares length {header.length}, "
            f"which runs past register {REGISTER_SPACE - 1}: corrupt model chain"
        )


ReadFn = Callable[[int, int], Awaitable[list[int]]]


async def discover_models(read: ReadFn) -> list[ModelHeader]:
    """Find the SunSpec marker and walk the model chain until ``ID = 0xFFFF``.

    ``read(address, count)`` reads holding registers. Probes 40000, then 0, then 50000; an
    exception response at a probe address just means "not here". Transport failures propagate
    (the device is unreachable, not "not SunSpec"). A chain longer than ``MAX_CHAIN_MODELS`` or
    with a model running past register 65535 is corrupt: :class:`DiscoveryError`, never a
    request for an address Modbus cannot carry.
    """
    for base in SUNSPEC_BASE_ADDRESSES:
        try:
            marker = await read(base, 2)
        except ModbusExceptionResponse:
            continue
        if not is_sunspec_marker(marker):
            continue
        models: list[ModelHeader] = []
        address = base + 2
        for _ in range(MAX_CHAIN_MODELS):
            if address + 2 > REGISTER_SPACE:
                # The last model ends at the top of the address space: no room for the end marker.
                break
            try:
                header = parse_model_header(address, await read(address, 2))
            except ModbusExceptionResponse:
                # Some devices end the chain without 0xFFFF and reject the read past it.
                header = None
            if header is None:
                break
            check_model_bounds(header)
            models.append(header)
            address += 2 + header.length
        else:
            raise DiscoveryError(f"SunSpec model chain at {base} longer than {MAX_CHAIN_MODELS} models")
        if not models:
            raise DiscoveryError(f"SunSpec marker at {base} but no models")
        return models
    raise DiscoveryError(f"no SunSpec marker at {', '.join(map(str, SUNSPEC_BASE_ADDRESSES))}")


def plan_model_reads(header: ModelHeader, names: Iterable[str], max_registers: int) -> list[tuple[int, int]]:
    """Requests ``(address, count)`` covering ``names`` and their scale factors.

    Each value travels with its scale factor: an "atom" spans a point and its SF, and atoms are
    merged greedily in address order while the request stays within ``max_registers``.
    """
    model = model_definition(header.model_id)
    atoms: list[tuple[int, int]] = []
    for name in names:
        point = model.points.get(name)
        if point is None or point.offset + point.size > header.length + 2:
            continue
        lo, hi = point.offset, point.offset + point.size
        if isinstance(point.sf, str) and point.sf in model.points:
            sf_offset = model.points[point.sf].offset
            if max(hi, sf_offset + 1) - min(lo, sf_offset) <= max_registers:
                lo, hi = min(lo, sf_offset), max(hi, sf_offset + 1)
            else:
                # The link cannot carry both in one request (e.g. 802 SoC and SoC_SF are 46
                # registers apart): read the SF on its own, the lesser evil than no value.
                atoms.append((sf_offset, sf_offset + 1))
        atoms.append((lo, hi))
    requests: list[tuple[int, int]] = []
    start = end = -1
    for lo, hi in sorted(atoms):
        if start >= 0 and max(end, hi) - start <= max_registers:
            end = max(end, hi)
            continue
        if start >= 0:
            requests.append((header.address + start, end - start))
        start, end = lo, hi
    if start >= 0:
        requests.append((header.address + start, end - start))
    return requests


def _raw_point(point: PointDef, registers: Sequence[int]) -> int | float | None:
    raw = decode_value(registers, point.type)
    if point.type == "float32" and isinstance(raw, float) and math.isnan(raw):
        return None
    if point.type in _ACCUMULATORS:
        return None if raw == 0 else raw
    sentinel = _NOT_IMPLEMENTED.get(point.type)
    if sentinel is not None:
        unsigned = int.from_bytes(b"".join(int(r).to_bytes(2, "big") for r in registers), "big")
        if unsigned == sentinel:
            return None
    return raw


def decode_points(
    header: ModelHeader, blocks: Sequence[tuple[int, Sequence[int]]], names: Iterable[str]
) -> dict[str, float | str | None]:
    """Decode ``names`` of one model from ``(address, registers)`` blocks, SFs applied (pure).

    Points outside the blocks, beyond the model's length, or "not implemented" are None.
    Strings are decoded as ASCII.
    """
    model = model_definition(header.model_id)

    def registers_of(point: PointDef) -> Sequence[int] | None:
        if point.offset + point.size > header.length + 2:
            return None
        address = header.address + point.offset
        for start, registers in blocks:
            if start <= address and address + point.size <= start + len(registers):
                return registers[address - start : address - start + point.size]
        return None

    out: dict[str, float | str | None] = {}
    for name in names:
        point = model.points.get(name)
        regs = None if point is None else registers_of(point)
        if point is None or regs is None:
            out[name] = None
            continue
        if point.type == "string":
            out[name] = decode_string(regs) or None
            continue
        if point.type not in REGISTER_COUNT:
            out[name] = None
            continue
        raw = _raw_point(point, regs)
        if raw is None:
            out[name] = None
            continue
        exponent: int | None = 0
        if isinstance(point.sf, int):
            exponent = point.sf
        elif isinstance(point.sf, str):
            sf_point = model.points.get(point.sf)
            sf_regs = None if sf_point is None else registers_of(sf_point)
            sf_raw = None if sf_point is None or sf_regs is None else _raw_point(sf_point, sf_regs)
            # A value whose scale factor is missing or "not implemented" cannot be scaled.
            exponent = None if sf_raw is None else int(sf_raw)
        if exponent is None or not -10 <= exponent <= 10:
            out[name] = None
            continue
        out[name] = float(raw) * 10.0**exponent
    return out


def accumulator_modulus(header: ModelHeader, blocks: Sequence[tuple[int, Sequence[int]]], name: str) -> float | None:
    """The scaled modulus at which accumulator ``name`` wraps (2^bits × 10^SF), if it is one."""
    model = model_definition(header.model_id)
    point = model.points.get(name)
    if point is None or point.type not in _ACCUMULATORS:
        return None
    bits = _ACCUMULATORS[point.type]
    exponent = 0
    if isinstance(point.sf, str):
        sf = decode_points(header, blocks, [point.sf]).get(point.sf)
        if not isinstance(sf, float) or not -10 <= sf <= 10:
            return None
        exponent = int(sf)
    return float(2**bits) * 10.0**exponent


# ---------------------------------------------------------------- measurements per model family

Triple = tuple[str, str, str]


@dataclass(frozen=True)
class PointMap:
    """Where a :class:`Measurement`'s fields are in one family of models: the one table of point
    names, read by the decoders here and written by the simulator's SunSpec units.

    A field is one point, a phase triple of points, or None (the family has no such point).
    """

    power_w: str
    phase_power_w: Triple | None = None
    phase_current_a: Triple | None = None
    phase_voltage_v: Triple | None = None
    frequency_hz: str | None = None
    import_energy_wh: str | None = None
    export_energy_wh: str | None = None

    def _fields(self) -> tuple[tuple[str, str | Triple | None], ...]:
        return (
            ("power_w", self.power_w),
            ("phase_power_w", self.phase_power_w),
            ("phase_current_a", self.phase_current_a),
            ("phase_voltage_v", self.phase_voltage_v),
            ("frequency_hz", self.frequency_hz),
            ("import_energy_wh", self.import_energy_wh),
            ("export_energy_wh", self.export_energy_wh),
        )

    @property
    def points(self) -> tuple[str, ...]:
        """The points to read, in the table's order."""
        names: list[str] = []
        for _, where in self._fields():
            if isinstance(where, str):
                names.append(where)
            elif where is not None:
                names.extend(where)
        return tuple(names)

    def decode(self, values: dict[str, float | str | None], wrap_wh: float | None = None) -> Measurement:
        """The measurement in decoded point values (a missing or non-numeric point: None)."""
        fields: dict[str, Any] = {}
        for name, where in self._fields():
            if isinstance(where, str):
                fields[name] = _num(values, where)
            elif where is not None:
                fields[name] = _triple(values, *where)
        return Measurement(**fields, energy_wrap_wh=wrap_wh)

    def encode(self, measurement: Measurement) -> dict[str, float | str | None]:
        """The point values presenting ``measurement`` (a simulated device's register image)."""
        values: dict[str, float | str | None] = {}
        for name, where in self._fields():
            value = getattr(measurement, name)
            if isinstance(where, str):
                values[where] = value
            elif where is not None:
                for point, phase in zip(where, (0, 1, 2), strict=True):
                    values[point] = None if value is None else value[phase]
        return values


COMMON_POINTS = ("Mn", "Md", "Vr", "SN")
# Models 201–204 / 211–214. SunSpec meters report import (grid → load) as positive ``W``.
METER_MAP = PointMap(
    power_w="W",
    phase_power_w=("WphA", "WphB", "WphC"),
    phase_current_a=("AphA", "AphB", "AphC"),
    phase_voltage_v=("PhVphA", "PhVphB", "PhVphC"),
    frequency_hz="Hz",
    import_energy_wh="TotWhImp",
    export_energy_wh="TotWhExp",
)
# Models 101–103 / 111–113: ``W`` positive for production; ``WH`` is lifetime production.
INVERTER_MAP = PointMap(
    power_w="W",
    phase_current_a=("AphA", "AphB", "AphC"),
    phase_voltage_v=("PhVphA", "PhVphB", "PhVphC"),
    frequency_hz="Hz",
    import_energy_wh="WH",
)
# Model 701: ``W`` positive when the DER injects (generation, battery discharge).
DER_AC_MAP = PointMap(
    power_w="W",
    phase_power_w=("WL1", "WL2", "WL3"),
    phase_current_a=("AL1", "AL2", "AL3"),
    phase_voltage_v=("VL1", "VL2", "VL3"),
    frequency_hz="Hz",
    import_energy_wh="TotWhInj",
    export_energy_wh="TotWhAbs",
)
METER_POINTS = METER_MAP.points
INVERTER_POINTS = INVERTER_MAP.points
DER_AC_POINTS = DER_AC_MAP.points
STORAGE_POINTS = ("WChaMax", "StorCtl_Mod", "ChaState", "OutWRte", "InWRte", "InOutWRte_RvrtTms")
CAPACITY_POINTS = ("SoC",)
BATTERY_POINTS = ("SoC", "W", "WChaRteMax", "WDisChaRteMax", "SoCRsvMin", "CtrlHb")

POINTS_BY_MODEL: dict[int, tuple[str, ...]] = {
    **dict.fromkeys(METER_INT_MODELS + METER_FLOAT_MODELS, METER_POINTS),
    **dict.fromkeys(INVERTER_INT_MODELS + INVERTER_FLOAT_MODELS, INVERTER_POINTS),
    DER_AC_MODEL: DER_AC_POINTS,
    STORAGE_MODEL: STORAGE_POINTS,
    DER_CAPACITY_MODEL: CAPACITY_POINTS,
    BATTERY_MODEL: BATTERY_POINTS,
}


def _num(values: dict[str, float | str | None], name: str) -> float | None:
    value = values.get(name)
    return value if isinstance(value, float) else None


def _triple(
    values: dict[str, float | str | None], *names: str
) -> tuple[float | None, float | None, float | None] | None:
    a, b, c = (_num(values, name) for name in names)
    return None if a is None and b is None and c is None else (a, b, c)


def measurement_from_meter(values: dict[str, float | str | None], wrap_wh: float | None = None) -> Measurement:
    """Models 201–204 / 211–214 (:data:`METER_MAP`)."""
    return METER_MAP.decode(values, wrap_wh)


def measurement_from_inverter(values: dict[str, float | str | None], wrap_wh: float | None = None) -> Measurement:
    """Models 101–103 / 111–113 (:data:`INVERTER_MAP`)."""
    return INVERTER_MAP.decode(values, wrap_wh)


def measurement_from_der(values: dict[str, float | str | None]) -> Measurement:
    """Model 701 (:data:`DER_AC_MAP`)."""
    return DER_AC_MAP.decode(values)


def battery_soc_pct(values_by_model: dict[int, dict[str, float | str | None]]) -> float | None:
    """State of charge from 802 ``SoC``, else 713 ``SoC``, else 124 ``ChaState``."""
    for model_id, name in ((BATTERY_MODEL, "SoC"), (DER_CAPACITY_MODEL, "SoC"), (STORAGE_MODEL, "ChaState")):
        value = _num(values_by_model.get(model_id, {}), name)
        if value is not None:
            return value
    return None


def model_of(headers: Sequence[ModelHeader], candidates: Iterable[int]) -> ModelHeader | None:
    """The first model in the chain whose id is among ``candidates``."""
    wanted = set(candidates)
    return next((header for header in headers if header.model_id in wanted), None)


# ---------------------------------------------------------------- encoding (control writes, simulators)


def model_length(model_id: int) -> int:
    """``L`` of a model: registers after ID and L (top-level points only)."""
    model = model_definition(model_id)
    return sum(point.size for point in model.points.values()) - 2


def encode_point(point: PointDef, value: float | str | None, exponent: int = 0) -> list[int]:
    """Registers for one point; None becomes the type's "not implemented" sentinel."""
    if point.type == "string":
        return encode_string(str(value or ""), point.size)
    if value is None or isinstance(value, str):
        if point.type in _ACCUMULATORS:
            return [0] * point.size
        if point.type == "float32":
            return encode_value(math.nan, "float32")
        sentinel = _NOT_IMPLEMENTED.get(point.type, 0)
        return [(sentinel >> (16 * (point.size - 1 - i))) & 0xFFFF for i in range(point.size)]
    scaled = value if point.type == "float32" else round(value / 10.0**exponent)
    if point.type in _ACCUMULATORS:
        scaled = int(scaled) % (2 ** _ACCUMULATORS[point.type])
    return encode_value(scaled, point.type)


def build_model_registers(
    model_id: int, values: dict[str, float | str | None], scale_factors: dict[str, int]
) -> list[int]:
    """A whole model (ID, L, points) as registers: unspecified points are "not implemented".

    ``scale_factors`` maps SF point names to exponents; they are written and applied.
    """
    model = model_definition(model_id)
    registers: list[int] = []
    for point in model.points.values():
        if point.name == "ID":
            registers.append(model_id)
        elif point.name == "L":
            registers.append(model_length(model_id))
        elif point.type == "sunssf":
            sf = scale_factors.get(point.name)
            registers.extend(encode_point(point, None) if sf is None else encode_value(sf, "int16"))
        else:
            exponent = 0
            if isinstance(point.sf, int):
                exponent = point.sf
            elif isinstance(point.sf, str):
                exponent = scale_factors.get(point.sf, 0)
            registers.extend(encode_point(point, values.get(point.name), exponent))
    return registers
