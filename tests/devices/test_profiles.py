"""Register-map profiles: the built-ins load, plans respect request limits, users add YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from evdlm.config.semantic import builtin_profile_names
from evdlm.devices.codec import Measurement
from evdlm.devices.errors import ProfileError
from evdlm.devices.profile import (
    PROFILE_DIR,
    RegisterBlock,
    decode_profile,
    encode_profile,
    load_profile,
    parse_profile,
    plan_reads,
)

BUILTINS = ("sdm630", "sdm72d_m_v2", "janitza_umg96", "janitza_umg604", "em24")


def test_exactly_the_promised_builtins_ship() -> None:
    assert {path.stem for path in PROFILE_DIR.glob("*.yaml")} == set(BUILTINS)
    assert builtin_profile_names() == {*BUILTINS, "sunspec"}


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("limit", [125, 60, 16, 2])
def test_plan_covers_every_point_within_the_limit(name: str, limit: int) -> None:
    profile = load_profile(name)
    blocks = plan_reads(profile, limit)
    assert all(1 <= block.count <= min(limit, profile.max_registers_per_request) for block in blocks)
    for point in profile.points.values():
        fc = profile.point_function_code(point)
        assert any(b.function_code == fc and b.address <= point.address < b.address + b.count for b in blocks)


def test_sdm630_reads_in_two_requests_at_60_registers() -> None:
    blocks = plan_reads(load_profile("sdm630"), 125)
    assert [(b.function_code, b.address, b.count) for b in blocks] == [(4, 0, 54), (4, 70, 6)]


def test_user_profile_from_a_yaml_path(tmp_path: Path) -> None:
    (tmp_path / "my_meter.yaml").write_text(
        "model: Acme PM-1\nfunction_code: 3\ndata_type: int32\nword_order: big\ninvert_sign: true\n"
        "points:\n  power_w: {address: 100, scale: 0.1}\n  import_energy_wh: {address: 102, data_type: uint32}\n",
        encoding="utf-8",
    )
    profile = load_profile("my_meter.yaml", base_dir=tmp_path)
    assert profile.invert_sign
    registers = encode_profile(profile, Measurement(power_w=-1234.5, import_energy_wh=42.0))
    block = RegisterBlock(3, 100, tuple(registers[(3, 100 + i)] for i in range(4)))
    decoded = decode_profile(profile, [block])
    assert decoded.power_w == pytest.approx(-1234.5)
    assert decoded.import_energy_wh == 42.0
    assert decoded.phase_power_w is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model: x\npoints: {}\n", "points"),
        ("model: x\npoints:\n  watts: {address: 1}\n", "watts"),
        ("model: x\npoints:\n  power_w: {address: 1, colour: red}\n", "colour"),
        ("model: x\npoints: [\n", "not valid YAML"),
    ],
)
def test_malformed_profiles_are_rejected_with_the_reason(text: str, match: str) -> None:
    with pytest.raises(ProfileError, match=match):
        parse_profile(text, "bad.yaml")


def test_unknown_profile_name() -> None:
    with pytest.raises(ProfileError, match="unknown profile"):
        load_profile("no_such_meter")


def test_points_missing_from_the_blocks_decode_to_none() -> None:
    decoded = decode_profile(load_profile("sdm630"), [])
    assert decoded.power_w is None
    assert decoded.phase_voltage_v is None
