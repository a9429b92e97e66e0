"""Register-map profiles: a meter model described as data (one YAML file), no code.

A profile names, for each quantity evdlm reads, the register address, function code, data
type, word order and scale (multiplier to the unit in the quantity's name). Profile-wide
defaults keep the files short; ``invert_sign`` says the meter reports the opposite of evdlm's
convention for the quantity it measures. :func:`plan_reads` groups the points into as few
requests as the link allows; :func:`decode_profile` turns the answered blocks into a
:class:`~evdlm.devices.codec.Measurement`. Both are pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from evdlm.devices.codec import REGISTER_COUNT, DataType, Measurement, WordOrder, decode_value, encode_value
from evdlm.devices.errors import ProfileError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
SUNSPEC = "sunspec"

Quantity = Literal[
    "power_w", "power_l1_w", "power_l2_w", "power_l3_w",
    "current_l1_a", "current_l2_a", "current_l3_a",
    "voltage_l1_v", "voltage_l2_v", "voltage_l3_v",
    "frequency_hz", "import_energy_wh", "export_energy_wh", "soc_pct",
]  # fmt: skip
NumericType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegisterPoint(_Strict):
    address: int = Field(ge=0, le=0xFFFF, description="Protocol (0-based) register address.")
    function_code: Literal[3, 4] | None = Field(default=None, description="3 holding, 4 input; default: profile's.")
    data_type: NumericType | None = Field(default=None, description="Default: the profile's data_type.")
    word_order: WordOrder | None = Field(default=None, description="big: high word first. Default: profile's.")
    scale: float = Field(default=1.0, description="Multiplier from the raw value to the quantity's unit.")


class RegisterProfile(_Strict):
    model: str = Field(description="Vendor and model, for logs.")
    function_code: Literal[3, 4] = 3
    data_type: NumericType = "float32"
    word_order: WordOrder = "big"
    invert_sign: bool = Field(
        default=False, description="True when the meter reports export (or consumption) as positive power."
    )
    max_registers_per_request: int = Field(
        default=125, ge=1, le=125, description="The device's own limit (the link's may be lower)."
    )
    points: dict[Quantity, RegisterPoint] = Field(min_length=1)

    def point_type(self, point: RegisterPoint) -> NumericType:
        return point.data_type or self.data_type

    def point_function_code(self, point: RegisterPoint) -> int:
        return point.function_code or self.function_code


@dataclass(frozen=True)
class ReadBlock:
    """One request: ``count`` registers from ``address`` with ``function_code``."""

    function_code: int
    address: int
    count: int


@dataclass(frozen=True)
class RegisterBlock:
    """One answered request (a captured register dump is a list of these)."""

    function_code: int
    address: int
    registers: tuple[int, ...]

    def covers(self, function_code: int, address: int, count: int) -> bool:
        return (
            function_code == self.function_code
            and address >= self.address
            and address + count <= self.address + len(self.registers)
        )

    def slice(self, address: int, count: int) -> tuple[int, ...]:
        start = address - self.address
        return self.registers[start : start + count]


def parse_profile(text: str, source: str = "<profile>") -> RegisterProfile:
    """Parse and validate a profile YAML document."""
    try:
        data = YAML(typ="safe").load(StringIO(text))
    except YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML: {exc}") from exc
    try:
        return RegisterProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{source}: {exc}") from exc


def builtin_profile_path(name: str) -> Path | None:
    path = PROFILE_DIR / f"{name}.yaml"
    return path if path.is_file() else None


def load_profile(name_or_path: str, base_dir: Path | None = None) -> RegisterProfile:
    """A built-in profile by name, else a YAML file (relative paths against ``base_dir``)."""
    path = builtin_profile_path(name_or_path)
    if path is None:
        path = Path(name_or_path)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
    if not path.is_file():
        raise ProfileError(f"unknown profile {name_or_path!r}: no built-in profile and no file {path}")
    return parse_profile(path.read_text(encoding="utf-8"), str(path))


def plan_reads(profile: RegisterProfile, max_registers: int) -> list[ReadBlock]:
    """Group the profile's points into the fewest requests of at most ``max_registers`` each.

    Points are merged greedily in address order per function code; the unread registers
    between them are read too (every supported meter answers them), which costs far less than
    a second round trip.
    """
    limit = min(max_registers, profile.max_registers_per_request)
    spans: dict[int, list[tuple[int, int]]] = {}
    for point in profile.points.values():
        count = REGISTER_COUNT[profile.point_type(point)]
        spans.setdefault(profile.point_function_code(point), []).append((point.address, point.address + count))
    blocks: list[ReadBlock] = []
    for function_code in sorted(spans):
        start, end = -1, -1
        for lo, hi in sorted(spans[function_code]):
            if start >= 0 and max(end, hi) - start <= limit:
                end = max(end, hi)
                continue
            if start >= 0:
                blocks.append(ReadBlock(function_code, start, end - start))
            if hi - lo > limit:
                raise ProfileError(
                    f"{profile.model}: a point at {lo} needs {hi - lo} registers, above the limit {limit}"
                )
            start, end = lo, hi
        if start >= 0:
            blocks.append(ReadBlock(function_code, start, end - start))
    return blocks


def decode_profile(profile: RegisterProfile, blocks: Sequence[RegisterBlock]) -> Measurement:
    """Decode the quantities of ``profile`` from answered register blocks (pure).

    A point not covered by any block is None. The profile's ``invert_sign`` is not applied here
    (see :func:`evdlm.devices.codec.orient`).
    """
    values: dict[str, float | None] = {}
    for quantity, point in profile.points.items():
        data_type: DataType = profile.point_type(point)
        count = REGISTER_COUNT[data_type]
        function_code = profile.point_function_code(point)
        block = next((b for b in blocks if b.covers(function_code, point.address, count)), None)
        if block is None:
            values[quantity] = None
            continue
        raw = decode_value(block.slice(point.address, count), data_type, point.word_order or profile.word_order)
        values[quantity] = float(raw) * point.scale

    def phases(prefix: str, unit: str) -> tuple[float | None, float | None, float | None] | None:
        triple = (
            values.get(f"{prefix}_l1_{unit}"),
            values.get(f"{prefix}_l2_{unit}"),
            values.get(f"{prefix}_l3_{unit}"),
        )
        return None if all(value is None for value in triple) else triple

    return Measurement(
        power_w=values.get("power_w"),
        phase_power_w=phases("power", "w"),
        phase_current_a=phases("current", "a"),
        phase_voltage_v=phases("voltage", "v"),
        frequency_hz=values.get("frequency_hz"),
        import_energy_wh=values.get("import_energy_wh"),
        export_energy_wh=values.get("export_energy_wh"),
        soc_pct=values.get("soc_pct"),
    )


def encode_profile(profile: RegisterProfile, measurement: Measurement) -> dict[tuple[int, int], int]:
    """Registers ``{(function_code, address): word}`` a meter of this profile would present.

    The inverse of :func:`decode_profile`, used by the simulators (any YAML profile gets a
    simulator for free) and to write golden dumps from documented example values.
    """
    phase_fields = {"power": "phase_power_w", "current": "phase_current_a", "voltage": "phase_voltage_v"}
    registers: dict[tuple[int, int], int] = {}
    for quantity, point in profile.points.items():
        parts = quantity.split("_")
        value: float | None
        if parts[1] in ("l1", "l2", "l3"):
            triple = getattr(measurement, phase_fields[parts[0]])
            value = None if triple is None else triple[int(parts[1][1]) - 1]
        else:
            value = getattr(measurement, quantity)
        if value is None:
            continue
        data_type = profile.point_type(point)
        words = encode_value(value / point.scale, data_type, point.word_order or profile.word_order)
        for i, word in enumerate(words):
            registers[(profile.point_function_code(point), point.address + i)] = word
    return registers
