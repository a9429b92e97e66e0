"""Plausibility: implausible readings are INVALID with a reason, never OK."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evdlm.core.types import Quality
from evdlm.devices.codec import Measurement
from evdlm.devices.quality import CounterState, Plausibility, implausibility, to_reading, unwrap_counters

GOOD = Measurement(
    power_w=3000.0,
    phase_power_w=(1000.0, 1000.0, 1000.0),
    phase_current_a=(4.3, 4.3, 4.3),
    phase_voltage_v=(230.0, 231.0, 229.0),
    frequency_hz=50.0,
    import_energy_wh=1000.0,
    export_energy_wh=10.0,
)


def test_a_sane_measurement_is_ok() -> None:
    reading = to_reading("m", 5.0, GOOD, None)
    assert reading.quality is Quality.OK
    assert reading.taken_at_s == 5.0
    assert reading.reason is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"power_w": math.nan}, "power"),
        ({"power_w": 3.4e38}, "power"),
        ({"power_w": None}, "no power value"),
        ({"phase_current_a": (4.0, math.nan, 4.0)}, "current"),
        ({"phase_voltage_v": (230.0, 2300.0, 230.0)}, "voltage"),
        ({"frequency_hz": 0.0}, "frequency"),
        ({"soc_pct": 140.0}, "state of charge"),
        ({"import_energy_wh": -5.0}, "import_energy_wh"),
        ({"phase_power_w": (1000.0, 1000.0, 5000.0)}, "sum"),
    ],
)
def test_implausible_values_make_the_reading_invalid(change: dict[str, object], reason: str) -> None:
    reading = to_reading("m", 0.0, Measurement(**{**GOOD.__dict__, **change}), None)  # type: ignore[arg-type]
    assert reading.quality is Quality.INVALID
    assert reading.reason is not None and reason in reading.reason


def test_counter_going_backwards_is_invalid() -> None:
    later = Measurement(**{**GOOD.__dict__, "import_energy_wh": 999.0})
    assert "went backwards" in (implausibility(later, GOOD) or "")
    assert implausibility(GOOD, later) is None


def test_a_wrapping_accumulator_is_unwrapped_not_invalid() -> None:
    wrap = 2.0**32
    before = Measurement(power_w=1.0, import_energy_wh=wrap - 100.0, energy_wrap_wh=wrap)
    after = Measurement(power_w=1.0, import_energy_wh=50.0, energy_wrap_wh=wrap)
    first, state = unwrap_counters(before, CounterState())
    second, state = unwrap_counters(after, state)
    assert second.import_energy_wh == wrap + 50.0
    assert implausibility(second, first) is None
    third, _ = unwrap_counters(Measurement(power_w=1.0, import_energy_wh=40.0, energy_wrap_wh=wrap), state)
    assert "went backwards" in (implausibility(third, second) or "")


def test_stale_after_max_age() -> None:
    reading = to_reading("m", 100.0, GOOD, None)
    assert reading.aged(102.0, 3.0).quality is Quality.OK
    stale = reading.aged(104.0, 3.0)
    assert stale.quality is Quality.STALE and stale.reason is not None


@given(
    st.floats(-1e6, 1e6),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
)
def test_consistent_phase_splits_are_always_plausible(total_w: float, a: float, b: float) -> None:
    share_a = a / 2
    share_b = (1 - share_a) * b
    phases = (total_w * share_a, total_w * share_b, total_w * (1 - share_a - share_b))
    assert implausibility(Measurement(power_w=total_w, phase_power_w=phases), None) is None


# ------------------------------------------------------------------ physics (SUSPECT)

LOADED = Measurement(
    power_w=3 * 10.5 * 230.0,
    phase_power_w=(10.5 * 230.0, 10.5 * 230.0, 10.5 * 230.0),
    phase_current_a=(10.5, 10.5, 10.5),
    phase_voltage_v=(230.0, 230.0, 230.0),
)


def _scaled(m: Measurement, factor: float) -> Measurement:
    assert m.power_w is not None and m.phase_power_w is not None
    return replace(
        m, power_w=m.power_w * factor, phase_power_w=tuple(p * factor for p in m.phase_power_w if p is not None)
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("factor", "words"),
    [
        (1e-3, "below a power factor"),  # SunSpec W_SF −2 instead of +1: 7.2 W at 10.5 A per phase
        (1e-2, "below a power factor"),  # SDM630 power 100× low: 72 W
        (1e3, "exceeds V·I"),  # SunSpec W_SF +4: 7.2 MW
    ],
)
def test_a_power_off_by_a_scale_factor_is_suspect(factor: float, words: str) -> None:
    reading = to_reading("m", 1.0, _scaled(LOADED, factor), None)
    assert reading.quality is Quality.SUSPECT
    assert reading.reason is not None and words in reading.reason and "L1" in reading.reason


def test_consistent_power_current_and_voltage_are_ok_down_to_low_loads() -> None:
    assert to_reading("m", 1.0, LOADED, None).quality is Quality.OK
    # pf 0.5 of a motor-heavy building is real; 2 A per phase at pf 0 is below the threshold's floor.
    half = _scaled(LOADED, 0.5)
    assert to_reading("m", 1.0, half, None).quality is Quality.OK
    light = Measurement(power_w=0.0, phase_power_w=(0.0, 0.0, 0.0), phase_current_a=(2.0, 2.0, 2.0))
    assert to_reading("m", 1.0, light, None).quality is Quality.OK


def test_without_voltages_the_nominal_voltage_stands_in() -> None:
    no_voltage = replace(LOADED, phase_voltage_v=None)
    assert to_reading("m", 1.0, no_voltage, None).quality is Quality.OK
    assert to_reading("m", 1.0, _scaled(no_voltage, 1e3), None).quality is Quality.SUSPECT


def test_a_total_is_checked_against_the_phases_v_i_when_phase_powers_are_missing() -> None:
    total_only = replace(LOADED, phase_power_w=None, power_w=72.0)
    reading = to_reading("m", 1.0, total_only, None)
    assert reading.quality is Quality.SUSPECT and reading.reason is not None and "total" in reading.reason


def test_the_low_power_factor_check_can_be_off_behind_generation() -> None:
    limits = Plausibility(min_power_factor=None)
    assert to_reading("m", 1.0, _scaled(LOADED, 1e-3), None, limits).quality is Quality.OK
    assert to_reading("m", 1.0, _scaled(LOADED, 1e3), None, limits).quality is Quality.SUSPECT
