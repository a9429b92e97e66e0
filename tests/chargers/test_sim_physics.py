"""Pure simulator parts: the EV model and how a charger stacks its profiles."""

from __future__ import annotations

import math

import pytest

from evdlm.config.models import Charger
from evdlm.sim.composite import InstalledProfile, SchedulePeriod, composite_limit_a, profile_limit_at
from evdlm.sim.ev import Car, EvState, initial_state, step, target_current_a
from evdlm.sim.fleet import site_phase_currents
from evdlm.sim.station import Misbehaviour, StationModel

T0 = 1_800_000_000.0


def profile(profile_id: int, connector: int, level: int, limit: float, **kwargs: object) -> InstalledProfile:
    fields: dict[str, object] = {
        "profile_id": profile_id,
        "connector_id": connector,
        "stack_level": level,
        "purpose": "TxDefaultProfile",
        "kind": "Absolute",
        "unit": "A",
        "periods": (SchedulePeriod(0.0, limit),),
        "start_s": T0,
    }
    fields.update(kwargs)
    return InstalledProfile(**fields)  # type: ignore[arg-type]


def test_ev_ramps_after_dead_time_and_pauses_below_minimum() -> None:
    car = Car(max_current_a=16, ramp_time_constant_s=2.0)
    state = initial_state(car)
    state = step(car, state, 16.0, 2.0, 230.0)
    assert 9.0 < state.current_a < 11.0  # 1 - e^-1 of the way
    for _ in range(20):
        state = step(car, state, 16.0, 1.0, 230.0)
    assert state.current_a == pytest.approx(16.0, abs=0.01)
    assert target_current_a(car, state, 5.0) == 0.0  # IEC 61851: under 6 A the car pauses
    assert target_current_a(car, state, 32.0) == 16.0  # and never above its own maximum
    assert target_current_a(car, state, None) == 16.0


def test_ev_stops_when_full_and_soc_rises_with_energy() -> None:
    car = Car(phases=1, max_current_a=10, capacity_wh=1000.0, soc_pct=90.0, full_soc_pct=95.0, ramp_time_constant_s=0.0)
    state = step(car, initial_state(car), 10.0, 1.0, 230.0)
    state = step(car, state, 10.0, 3600.0 * 50 / 2300, 230.0)  # 50 Wh at 2.3 kW
    assert state.soc_pct >= 95.0 and state.session_energy_wh == pytest.approx(50.0 + 2300 / 3600 / 2, rel=0.05)
    assert target_current_a(car, state, 10.0) == 0.0


def test_ev_without_ramp_follows_at_once_and_stops_at_its_energy() -> None:
    """The closed-loop simulation's car: no ramp, no minimum, the session's energy, no SoC."""
    car = Car(
        phases=1, max_current_a=16, min_current_a=0.0, capacity_wh=math.inf, soc_pct=0.0,
        ramp_time_constant_s=0.0, energy_limit_wh=1000.0,
    )  # fmt: skip
    state = step(car, initial_state(car), 10.0, 60.0, 230.0)
    assert state.current_a == 10.0 and state.power_w == 2300.0
    assert state.session_energy_wh == 2300.0 * 60.0 / 3600.0 and state.soc_pct == 0.0
    for _ in range(30):
        state = step(car, state, 32.0, 60.0, 230.0)  # 16 A at most: 3680 W, the rest in the last step
    assert state.session_energy_wh == pytest.approx(1000.0)
    assert target_current_a(car, state, 16.0) == 0.0 and step(car, state, 16.0, 60.0, 230.0).power_w == 0.0


def test_highest_level_wins_and_connector_beats_station_on_ties() -> None:
    failsafe = profile(1, 0, 0, 6.0)
    dynamic = profile(101, 1, 1, 16.0, valid_to_s=T0 + 60, duration_s=65)
    assert composite_limit_a([failsafe, dynamic], 1, T0 + 10, None, None, 230, 3) == 16.0
    assert composite_limit_a([failsafe, dynamic], 2, T0 + 10, None, None, 230, 3) == 6.0
    # The lease ends: the fail-safe takes over.
    assert composite_limit_a([failsafe, dynamic], 1, T0 + 61, None, None, 230, 3) == 6.0
    same_level = profile(101, 1, 0, 20.0)
    assert composite_limit_a([failsafe, same_level], 1, T0 + 10, None, None, 230, 3) == 20.0
    assert composite_limit_a([], 1, T0, None, None, 230, 3) is None


def test_purposes_combine() -> None:
    station_max = profile(5, 0, 0, 10.0, purpose="ChargePointMaxProfile")
    tx_default = profile(1, 0, 0, 16.0)
    tx = profile(7, 1, 0, 25.0, purpose="TxProfile", transaction_id="9", kind="Relative", start_s=None)
    assert composite_limit_a([tx_default, tx], 1, T0 + 5, "9", T0, 230, 3) == 25.0  # TxProfile replaces default
    assert composite_limit_a([tx_default, tx], 1, T0 + 5, "8", T0, 230, 3) == 16.0  # other transaction
    assert composite_limit_a([station_max, tx_default], 1, T0 + 5, None, None, 230, 3) == 10.0
    watts = profile(2, 1, 3, 6900.0, unit="W")
    assert composite_limit_a([watts], 1, T0 + 5, None, None, 230, 3) == pytest.approx(10.0)
    assert composite_limit_a([watts], 1, T0 + 5, None, None, 230, 1) == pytest.approx(30.0)


def test_schedule_periods_and_recurrence() -> None:
    stepped = profile(3, 1, 0, 0.0, periods=(SchedulePeriod(0.0, 8.0), SchedulePeriod(600.0, 16.0)))
    assert profile_limit_at(stepped, T0 + 10, None) == 8.0
    assert profile_limit_at(stepped, T0 + 700, None) == 16.0
    assert profile_limit_at(stepped, T0 - 1, None) is None
    daily = profile(4, 1, 0, 0.0, kind="Recurring", recurrency_kind="Daily", duration_s=3600.0)
    assert profile_limit_at(daily, T0 + 86_400 * 3 + 100, None) == 0.0
    assert profile_limit_at(daily, T0 + 86_400 * 3 + 4000, None) is None


def test_station_misbehaviour_and_offer() -> None:
    charger = Charger(id="CP", ocpp_version="1.6", circuit="main", max_current_a=16)
    model = StationModel(charger, 230.0, Misbehaviour(only_amps=True, only_stack_level_0=True))
    assert model.set_profile(profile(101, 1, 1, 10.0)) == "Rejected"
    assert model.set_profile(profile(101, 1, 0, 6900.0, unit="W")) == "Rejected"
    assert model.set_profile(profile(101, 1, 0, 10.0)) == "Accepted"
    assert model.offered_current_a(1, T0 + 1) == 10.0
    assert model.set_profile(profile(101, 1, 0, 5.0)) == "Accepted"
    assert model.offered_current_a(1, T0 + 1) == 0.0  # PWM cannot signal below 6 A
    model.misbehaviour = Misbehaviour(ignore_profiles=True)
    assert model.offered_current_a(1, T0 + 1) == 16.0
    assert model.clear_profiles(profile_id=101) and not model.profiles


def test_phase_rotation_mapping() -> None:
    charger = Charger(id="CP", ocpp_version="1.6", circuit="main", phase_rotation="L2-L3-L1")
    assert site_phase_currents(charger, (10.0, 0.0, 0.0)) == (0.0, 10.0, 0.0)
    assert site_phase_currents(charger, (1.0, 2.0, 3.0)) == (3.0, 1.0, 2.0)


def test_single_phase_car_draws_on_l1_only() -> None:
    charger = Charger(id="CP", ocpp_version="1.6", circuit="main")
    model = StationModel(charger, 230.0)
    model.plug_in(1, Car(phases=1), "1", T0)
    model.connectors[1].ev = EvState(current_a=12.0, soc_pct=50.0, session_energy_wh=0.0)
    assert model.drawn_current_a() == (12.0, 0.0, 0.0)
    assert model.power_w(1) == pytest.approx(2760.0)
