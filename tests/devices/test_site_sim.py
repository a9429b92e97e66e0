"""The pure site simulation: energy balance, PV curve, battery physics and revert timers."""

from __future__ import annotations

import pytest

from evdlm.sim.site_physics import CircuitSimSpec, SiteSimParams, SiteSimulation, pv_power_w

NOON_UTC_S = 1_800_000_000.0 - (1_800_000_000.0 % 86400) + 11 * 3600  # 12:00 local at UTC+1
PARAMS = SiteSimParams()


def test_pv_is_zero_at_night_and_peaks_at_solar_noon() -> None:
    midnight = NOON_UTC_S - 12 * 3600
    assert pv_power_w(PARAMS, midnight) == 0.0
    noon = NOON_UTC_S + 1 * 3600  # 13:00 local is the middle of 06:00–20:00
    assert pv_power_w(PARAMS, noon) == pytest.approx(PARAMS.pv_peak_w)
    assert 0 < pv_power_w(PARAMS, noon - 4 * 3600) < PARAMS.pv_peak_w


def test_grid_is_base_plus_ev_minus_pv_minus_battery() -> None:
    sim = SiteSimulation(PARAMS, NOON_UTC_S, circuits={"garage_meter": CircuitSimSpec(frozenset({"CP01"}), 0.2)})
    sim.set_ev_load("CP01/1", (16.0, 16.0, 16.0))
    sim.set_ev_load("CP09", (0.0, 10.0, 0.0))
    snap = sim.advance(NOON_UTC_S)
    ev_w = (48.0 + 10.0) * PARAMS.voltage_v
    assert snap.grid_w == pytest.approx(sum(snap.base_phase_w) + ev_w - snap.pv_w - snap.battery_w, abs=1e-6)
    garage = sim.circuit_meter("garage_meter", NOON_UTC_S)
    assert garage.power_w == pytest.approx(0.2 * sum(snap.base_phase_w) + 48.0 * PARAMS.voltage_v)
    assert sim.grid_meter(NOON_UTC_S).power_w == pytest.approx(snap.grid_w)


def test_ev_source_callable_feeds_the_load() -> None:
    sim = SiteSimulation(PARAMS, NOON_UTC_S, ev_source=lambda: {"CP02": (0.0, 0.0, 32.0)})
    assert sim.advance(NOON_UTC_S).ev_phase_a == (0.0, 0.0, 32.0)


def test_self_consumption_without_commands_and_soc_integration() -> None:
    params = SiteSimParams(pv_peak_w=0.0, base_load_w=6000.0, base_load_swing=0.0, battery_capacity_wh=10_000.0)
    sim = SiteSimulation(params, 0.0)
    snap = sim.advance(0.0)
    assert snap.battery_w == pytest.approx(6000.0)  # covers the whole load
    assert snap.grid_w == pytest.approx(0.0, abs=1e-6)
    after = sim.advance(1800.0)  # half an hour at 6 kW out of 10 kWh, 95 % efficiency
    assert after.battery_soc_pct == pytest.approx(50.0 - 100 * 3000 / 0.95 / 10_000)


def test_storage_command_forces_the_battery_and_reverts_after_its_timer() -> None:
    sim = SiteSimulation(SiteSimParams(pv_peak_w=0.0), 0.0)
    sim.write_storage_control(0.0, 3, in_wrte_pct=30.0, out_wrte_pct=-30.0, revert_s=60.0)
    forced = sim.advance(10.0)
    assert forced.battery_forced
    assert forced.battery_w == pytest.approx(-3000.0)  # charging at 30 % of 10 kW
    reverted = sim.advance(61.0 + 10.0)
    assert not reverted.battery_forced
    assert reverted.battery_w > 0  # back to self-consumption: covers the load
    assert sim.command.storctl_mod == 0


def test_power_setpoint_704_and_soc_limits() -> None:
    params = SiteSimParams(pv_peak_w=0.0, battery_initial_soc_pct=5.0)
    sim = SiteSimulation(params, 0.0)
    sim.write_power_setpoint(0.0, True, 4000.0, 30.0)
    assert sim.advance(1.0).battery_w == 0.0  # empty: cannot discharge
    sim.write_power_setpoint(1.0, True, -4000.0, 30.0)
    assert sim.advance(2.0).battery_w == pytest.approx(-4000.0)
