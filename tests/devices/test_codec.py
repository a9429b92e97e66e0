"""Register codecs against known IEEE 754 / two's-complement encodings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evdlm.devices.codec import Measurement, decode_string, decode_value, encode_string, encode_value, orient


@pytest.mark.parametrize(
    ("registers", "data_type", "word_order", "expected"),
    [
        ([0x4366, 0x8000], "float32", "big", 230.5),  # Eastron/Janitza: high word first
        ([0x4248, 0x0000], "float32", "big", 50.0),
        ([0x0000, 0x447A], "float32", "little", 1000.0),
        ([0x0901, 0x0000], "int32", "little", 2305),  # Carlo Gavazzi: low word first
        ([0xFFFF, 0xFFFE], "int32", "big", -2),
        ([0x8000], "int16", "big", -32768),
        ([0xFFFF], "uint16", "big", 65535),
        ([0x0001, 0x0000, 0x0000, 0x0000], "uint64", "big", 2**48),
    ],
)
def test_decode_known_values(registers: list[int], data_type: str, word_order: str, expected: float) -> None:
    assert decode_value(registers, data_type, word_order) == expected  # type: ignore[arg-type]


def test_decode_rejects_wrong_register_count() -> None:
    with pytest.raises(ValueError, match="takes 2 registers"):
        decode_value([1], "float32")


def test_float_nan_survives_decoding() -> None:
    assert math.isnan(decode_value([0x7FC0, 0x0000], "float32"))


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from(["big", "little"]))
def test_int32_round_trip(value: int, word_order: str) -> None:
    assert decode_value(encode_value(value, "int32", word_order), "int32", word_order) == value  # type: ignore[arg-type]


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_round_trip(value: float) -> None:
    assert decode_value(encode_value(value, "float32"), "float32") == value


def test_strings_are_nul_padded_ascii() -> None:
    registers = encode_string("SunSpec", 8)
    assert len(registers) == 8
    assert decode_string(registers) == "SunSpec"


def test_orient_flips_powers_and_swaps_counters() -> None:
    m = Measurement(
        power_w=-1000.0,
        phase_power_w=(-400.0, -300.0, None),
        phase_current_a=(2.0, 1.5, 0.0),
        import_energy_wh=10.0,
        export_energy_wh=20.0,
    )
    flipped = orient(m, True)
    assert flipped.power_w == 1000.0
    assert flipped.phase_power_w == (400.0, 300.0, None)
    assert flipped.phase_current_a == (2.0, 1.5, 0.0)
    assert (flipped.import_energy_wh, flipped.export_energy_wh) == (20.0, 10.0)
    assert orient(m, False) is m
