"""Pure register codecs and the decoded-measurement value shared by every profile.

Modbus registers are 16-bit words sent big-endian; a 32- or 64-bit value spans several words
whose order vendors disagree on (``big``: high word first, as SunSpec, Eastron and Janitza;
``little``: low word first, as Carlo Gavazzi). Nothing here performs I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from evdlm.core.types import PhaseValues, Quantities

DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
    "acc32", "acc64", "sunssf", "enum16", "bitfield16", "bitfield32", "string", "pad",
]  # fmt: skip
WordOrder = Literal["big", "little"]

REGISTER_COUNT: dict[str, int] = {
    "int16": 1, "uint16": 1, "sunssf": 1, "enum16": 1, "bitfield16": 1, "pad": 1,
    "int32": 2, "uint32": 2, "float32": 2, "acc32": 2, "bitfield32": 2,
    "int64": 4, "uint64": 4, "float64": 4, "acc64": 4,
}  # fmt: skip

_STRUCT: dict[str, str] = {
    "int16": ">h", "uint16": ">H", "sunssf": ">h", "enum16": ">H", "bitfield16": ">H", "pad": ">H",
    "int32": ">i", "uint32": ">I", "acc32": ">I", "bitfield32": ">I", "float32": ">f",
    "int64": ">q", "uint64": ">Q", "acc64": ">Q", "float64": ">d",
}  # fmt: skip


def registers_to_bytes(registers: Sequence[int], word_order: WordOrder = "big") -> bytes:
    """Concatenate 16-bit registers into bytes, high word first (reversing ``little`` order)."""
    words = list(registers) if word_order == "big" else list(reversed(registers))
    return b"".join(int(word & 0xFFFF).to_bytes(2, "big") for word in words)


def bytes_to_registers(data: bytes, word_order: WordOrder = "big") -> list[int]:
    """Inverse of :func:`registers_to_bytes` (used by the simulators and golden dumps)."""
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words if word_order == "big" else list(reversed(words))


def decode_value(registers: Sequence[int], data_type: DataType, word_order: WordOrder = "big") -> int | float:
    """Decode one numeric value from exactly the registers it occupies."""
    expected = REGISTER_COUNT[data_type]
    if len(registers) != expected:
        raise ValueError(f"{data_type} takes {expected} registers, got {len(registers)}")
    value: int | float = struct.unpack(_STRUCT[data_type], registers_to_bytes(registers, word_order))[0]
    return value


def encode_value(value: float, data_type: DataType, word_order: WordOrder = "big") -> list[int]:
    """Encode one numeric value into registers (simulators, golden dumps)."""
    fmt = _STRUCT[data_type]
    packed = struct.pack(fmt, value if data_type.startswith("float") else round(value))
    return bytes_to_registers(packed, word_order)


def decode_string(registers: Sequence[int]) -> str:
    """SunSpec strings: ASCII, NUL padded."""
    return registers_to_bytes(registers).split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()


def encode_string(text: str, register_count: int) -> list[int]:
    data = text.encode("ascii")[: register_count * 2].ljust(register_count * 2, b"\x00")
    return bytes_to_registers(data)


@dataclass(frozen=True, kw_only=True)
class Measurement(Quantities):
    """What a decoder extracted from one device, before quality checks and timestamps.

    Energy counters follow the power's orientation: ``import_energy_wh`` accumulates positive
    power (grid import, PV production, battery discharge), ``export_energy_wh`` negative power.
    ``energy_wrap_wh`` is the modulus at which the counters wrap (SunSpec accumulators), or
    None when they do not.
    """

    energy_wrap_wh: float | None = None


def _negate(values: PhaseValues | None) -> PhaseValues | None:
    if values is None:
        return None
    a, b, c = (None if value is None else -value for value in values)
    return (a, b, c)


def orient(measurement: Measurement, invert: bool) -> Measurement:
    """Flip a measurement to the opposite sign convention (powers negated, counters swapped).

    Currents are magnitudes on every meter evdlm supports and stay as they are.
    """
    if not invert:
        return measurement
    return replace(
        measurement,
        power_w=None if measurement.power_w is None else -measurement.power_w,
        phase_power_w=_negate(measurement.phase_power_w),
        import_energy_wh=measurement.export_energy_wh,
        export_energy_wh=measurement.import_energy_wh,
    )
