"""Plausibility: implausible readings are INVALID with a reason, never OK."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evdlm.core.types import Quality
from evdlm.devices.codec import Measurement
from evdlm.devices.quality import CounterState, implausibility, to_reading, unwrap_counters

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
