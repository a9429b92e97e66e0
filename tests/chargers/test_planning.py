"""Pure rules of the link: units, rounding, minimum, deadband, leases, compliance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evdlm.chargers.planning import (
    ChargerCapabilities,
    ComplianceState,
    Lease,
    LinkSettings,
    assess_compliance,
    dynamic_level_for,
    failsafe_limit,
    parse_rate_units,
    wire_limit,
    within_deadband,
)
from evdlm.core.types import ChargingCommand

SETTINGS = LinkSettings(
    nominal_voltage_v=230.0,
    lease_duration_s=60.0,
    lease_refresh_s=20.0,
    deadband_a=1.0,
    failsafe_current_a=6.0,
    non_compliance_grace_s=30.0,
    meter_sample_interval_s=10,
)
AC = ChargerCapabilities(
    rate_units=frozenset({"A", "W"}),
    unit_fixed=False,
    reported_max_stack_level=10,
    max_periods=24,
    dynamic_stack_level=1,
    phases=3,
    dc=False,
    min_current_a=6.0,
    max_current_a=32.0,
    min_power_w=0.0,
    max_power_w=None,
)


def command(limit: float, unit: str = "A", phases: int = 3) -> ChargingCommand:
    return ChargingCommand("CP", 1, limit, unit, phases)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(16.9, 16.0), (6.0, 6.0), (5.99, 0.0), (3.0, 0.0), (0.0, 0.0), (40.0, 32.0), (16.25, 16.0)],
)
def test_amps_whole_and_zero_or_minimum(limit: float, expected: float) -> None:
    assert wire_limit(command(limit), "A", AC, 230.0) == expected


def test_watts_use_configured_voltage_and_phases() -> None:
    assert wire_limit(command(10.0), "W", AC, 230.0) == 6900.0
    assert wire_limit(command(10.0, phases=1), "W", AC, 220.0) == 2200.0
    assert wire_limit(command(6900.0, "W"), "A", AC, 230.0) == 10.0
    assert wire_limit(command(11040.4, "W"), "W", AC, 230.0) == 11040.0  # whole watts, rounded down
    # Below the minimum in W (6 A × 230 V × 3) means pause.
    assert wire_limit(command(4000.0, "W"), "W", AC, 230.0) == 0.0


def test_unit_choice() -> None:
    only_amps = ChargerCapabilities(**{**AC.__dict__, "rate_units": frozenset({"A"})})
    assert only_amps.unit_for("W") == "A" and AC.unit_for("W") == "W"


def test_failsafe_in_watts_covers_every_phase() -> None:
    assert failsafe_limit("A", AC, SETTINGS) == 6.0
    assert failsafe_limit("W", AC, SETTINGS) == 4140.0


def test_levels_and_units() -> None:
    assert dynamic_level_for(None, None) == 1
    assert dynamic_level_for(0, None) == 0
    assert dynamic_level_for(10, 0) == 0
    assert parse_rate_units("Current,Power") == {"A", "W"} and parse_rate_units(None) == frozenset()


def test_deadband_and_refresh() -> None:
    lease = Lease(limit=16.0, unit="A", stack_level=1, sent_at_s=100.0, valid_to_s=160.0, phases=3)
    assert within_deadband(lease, 16.0, "A", 110.0, SETTINGS, 3)
    assert within_deadband(lease, 16.5, "A", 110.0, SETTINGS, 3)
    assert not within_deadband(lease, 17.0, "A", 110.0, SETTINGS, 3)  # a whole deadband
    assert not within_deadband(lease, 16.0, "A", 120.0, SETTINGS, 3)  # refresh due
    assert not within_deadband(lease, 16.0, "W", 110.0, SETTINGS, 3)
    assert not within_deadband(None, 16.0, "A", 110.0, SETTINGS, 3)
    assert not within_deadband(lease, 16.0, "A", 161.0, SETTINGS, 3)  # lapsed
    watts = Lease(limit=11040.0, unit="W", stack_level=1, sent_at_s=100.0, valid_to_s=160.0, phases=3)
    assert within_deadband(watts, 11040.0 + 600.0, "W", 110.0, SETTINGS, 3)  # 1 A × 230 V × 3 = 690 W
    assert not within_deadband(watts, 11040.0 + 700.0, "W", 110.0, SETTINGS, 3)


def test_pause_and_resume_always_sent() -> None:
    lease = Lease(limit=6.0, unit="A", stack_level=1, sent_at_s=100.0, valid_to_s=160.0, phases=3)
    paused = Lease(limit=0.0, unit="A", stack_level=1, sent_at_s=100.0, valid_to_s=160.0, phases=3)
    wide = LinkSettings(**{**SETTINGS.__dict__, "deadband_a": 10.0})
    assert not within_deadband(lease, 0.0, "A", 101.0, wide, 3)
    assert not within_deadband(paused, 6.0, "A", 101.0, wide, 3)


def test_compliance_grace_and_recovery() -> None:
    ok = ComplianceState(True, None)
    # Over the limit, but inside the grace after the limit took effect.
    state = assess_compliance(ok, 10.0, 100.0, 110.0, 30.0, 16.0, 16.0)
    assert state.compliant and state.over_since_s == 110.0
    state = assess_compliance(state, 10.0, 100.0, 139.0, 30.0, 16.0, 16.0)
    assert state.compliant
    state = assess_compliance(state, 10.0, 100.0, 141.0, 30.0, 16.0, 16.0)
    assert not state.compliant
    # Back within tolerance (1 A + 5 %): compliant again at once.
    state = assess_compliance(state, 10.0, 100.0, 150.0, 30.0, 10.0, 11.4)
    assert state == ComplianceState(True, None)
    # Nothing measured: keep what we knew.
    assert assess_compliance(state, 10.0, 100.0, 150.0, 30.0, None, None) is state


@given(
    limit=st.floats(min_value=0, max_value=500, allow_nan=False),
    unit=st.sampled_from(["A", "W"]),
    wire_unit=st.sampled_from(["A", "W"]),
    phases=st.sampled_from([1, 3]),
    charger_phases=st.sampled_from([1, 3]),
    voltage_v=st.floats(min_value=100, max_value=480),
    min_current_a=st.floats(min_value=0, max_value=16),
    max_current_a=st.floats(min_value=16, max_value=80),
)
def test_wire_limit_invariants(
    limit: float,
    unit: str,
    wire_unit: str,
    phases: int,
    charger_phases: int,
    voltage_v: float,
    min_current_a: float,
    max_current_a: float,
) -> None:
    """Whatever the controller asks: 0 or at least the minimum, never above the maximum, whole
    units (so the 1.6 schema's one decimal always holds), and never more than asked."""
    caps = ChargerCapabilities(
        **{**AC.__dict__, "phases": charger_phases, "min_current_a": min_current_a, "max_current_a": max_current_a}
    )
    command_limit = limit if unit == "A" else limit * 100
    sent = wire_limit(command(command_limit, unit, phases), wire_unit, caps, voltage_v)  # type: ignore[arg-type]
    used_phases = min(phases, charger_phases)
    sent_a = sent if wire_unit == "A" else sent / (voltage_v * used_phases)
    asked_a = command_limit if unit == "A" else command_limit / (voltage_v * used_phases)
    assert sent == int(sent)
    assert sent == 0 or sent_a >= min_current_a - 1e-6
    assert sent_a <= min(asked_a, max_current_a) + 1e-6
