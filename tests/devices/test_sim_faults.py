"""Value faults of the Modbus simulators: the pure transforms, the units applying them, and what a
reader decodes from a faulted unit on loopback."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evdlm.config.models import DeviceRole, ModbusTcpLink
from evdlm.core.clock import FakeClock, SystemClock
from evdlm.devices import sunspec
from evdlm.devices.codec import Measurement, decode_value
from evdlm.devices.modbus_transport import ModbusTransport
from evdlm.devices.profile import RegisterBlock, decode_profile, load_profile
from evdlm.devices.readers import ProfileReader, SunSpecReader
from evdlm.sim.modbus_servers import (
    ActiveFault,
    Fault,
    FaultInjector,
    ProfileMeterUnit,
    SimModbusServer,
    SimUnit,
    apply_gain,
    apply_value_fault,
    chain_past_end,
    constant_load,
    drift_gain,
    reverse_ct,
    scale_power,
    shift_scale_factors,
    sunspec_meter_unit,
)

SITE = Measurement(
    power_w=14_030.0,
    phase_power_w=(4830.0, 4600.0, 4600.0),
    phase_current_a=(21.0, 20.0, 20.0),
    phase_voltage_v=(230.0, 230.0, 230.0),
    frequency_hz=50.0,
    import_energy_wh=1_000_000.0,
    export_energy_wh=500.0,
)
finite = st.floats(min_value=-1e5, max_value=1e5, allow_nan=False)


# ---------------------------------------------------------------- pure transforms


def test_scale_power_scales_power_only() -> None:
    low = scale_power(SITE, 0.01)
    assert low.power_w == pytest.approx(140.3)
    assert low.phase_power_w == pytest.approx((48.3, 46.0, 46.0))
    assert (low.phase_current_a, low.phase_voltage_v, low.import_energy_wh) == (
        SITE.phase_current_a,
        SITE.phase_voltage_v,
        SITE.import_energy_wh,
    )


def test_drift_gain_falls_linearly_then_holds() -> None:
    assert drift_gain(0.0, 0.8, 60.0) == 1.0
    assert drift_gain(30.0, 0.8, 60.0) == pytest.approx(0.9)
    assert drift_gain(60.0, 0.8, 60.0) == pytest.approx(0.8)
    assert drift_gain(600.0, 0.8, 60.0) == pytest.approx(0.8)
    assert drift_gain(-1.0, 0.8, 60.0) == 1.0
    assert drift_gain(5.0, 0.8, 0.0) == 0.8  # a step


def test_apply_gain_scales_power_and_current() -> None:
    low = apply_gain(SITE, 0.8)
    assert low.power_w == pytest.approx(0.8 * 14_030.0)
    assert low.phase_current_a == pytest.approx((16.8, 16.0, 16.0))
    assert low.phase_voltage_v == SITE.phase_voltage_v
    assert low.import_energy_wh == SITE.import_energy_wh


def test_reversed_ct_negates_one_phase_and_recomputes_the_total() -> None:
    reversed_l1 = reverse_ct(SITE, 0)
    assert reversed_l1.phase_power_w == (-4830.0, 4600.0, 4600.0)
    assert reversed_l1.power_w == pytest.approx(4370.0)
    assert reversed_l1.phase_current_a == SITE.phase_current_a  # magnitudes, as the SDM630 reports
    signed = reverse_ct(SITE, 2, signed_current=True)
    assert signed.phase_current_a == (21.0, 20.0, -20.0)
    assert signed.phase_power_w == (4830.0, 4600.0, -4600.0)


def test_reversed_ct_without_phase_powers_takes_a_third_off_twice() -> None:
    total_only = Measurement(power_w=9000.0)
    assert reverse_ct(total_only, 1).power_w == pytest.approx(3000.0)


@given(st.tuples(finite, finite, finite), st.integers(0, 2))
def test_reversed_ct_is_consistent_and_its_own_inverse(phases: tuple[float, float, float], phase: int) -> None:
    m = Measurement(power_w=sum(phases), phase_power_w=phases)
    once = reverse_ct(m, phase)
    assert once.power_w == pytest.approx(sum(p or 0.0 for p in once.phase_power_w or ()), abs=1e-6)
    assert reverse_ct(once, phase).phase_power_w == phases


def test_constant_load_is_another_sites_load_at_the_live_voltage() -> None:
    start = SITE
    live = Measurement(
        power_w=20_000.0,
        phase_power_w=(7000.0, 6500.0, 6500.0),
        phase_current_a=(30.0, 28.0, 28.0),
        phase_voltage_v=(232.0, 231.0, 229.0),
        frequency_hz=49.98,
        import_energy_wh=1_000_500.0,
        export_energy_wh=500.0,
    )
    other = constant_load(live, (10.0, 5.0, 8.0), 1.0, start, 3600.0)
    assert other.phase_current_a == (10.0, 5.0, 8.0)
    assert other.phase_power_w == pytest.approx((2320.0, 1155.0, 1832.0))
    assert other.power_w == pytest.approx(5307.0)
    assert other.phase_voltage_v == live.phase_voltage_v and other.frequency_hz == 49.98
    # The counters advance at the constant load's rate from where they were at the start.
    assert other.import_energy_wh == pytest.approx(1_000_000.0 + 5307.0)
    assert other.export_energy_wh == 500.0


def test_apply_value_fault_dispatches_and_frozen_repeats_the_held_values() -> None:
    held = SITE
    live = apply_gain(SITE, 1.5)
    assert apply_value_fault(Fault.frozen(), live, held=held, elapsed_s=30.0) is held
    assert apply_value_fault(Fault.scaled(0.5), live, held=held, elapsed_s=0.0).power_w == pytest.approx(
        0.5 * (live.power_w or 0.0)
    )
    drifted = apply_value_fault(Fault.drifting(0.8, over_s=60.0), live, held=held, elapsed_s=30.0)
    assert drifted.power_w == pytest.approx(0.9 * (live.power_w or 0.0))
    assert apply_value_fault(Fault.ct_reversed(1), live, held=held, elapsed_s=0.0).phase_power_w == pytest.approx(
        (7245.0, -6900.0, 6900.0)
    )
    assert apply_value_fault(Fault.constant((1.0, 1.0, 1.0)), live, held=held, elapsed_s=0.0).power_w == 690.0
    # Register and transport faults leave the measurement alone.
    assert apply_value_fault(Fault.sf_offset(-3), live, held=held, elapsed_s=0.0) is live
    assert apply_value_fault(Fault("silent"), live, held=held, elapsed_s=0.0) is live


def test_ct_reversed_rejects_a_phase_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="phase"):
        Fault.ct_reversed(3)


def _meter_203(w_sf: int = 1) -> list[int]:
    values: dict[str, float | str | None] = {"W": 14_030.0, "WphA": 4830.0, "WphB": 4600.0, "WphC": 4600.0}
    return sunspec.build_model_registers(203, values, {"W_SF": w_sf, "A_SF": -2})


def test_shift_scale_factors_moves_the_sf_not_the_raw_value() -> None:
    points = sunspec.model_definition(203).points
    original = _meter_203()
    shifted = shift_scale_factors(203, original, -3, ("W_SF",))
    w_sf = points["W_SF"].offset
    assert decode_value([shifted[w_sf]], "sunssf") == -2
    assert shifted[points["W"].offset] == original[points["W"].offset]
    assert [i for i, (a, b) in enumerate(zip(original, shifted, strict=True)) if a != b] == [w_sf]
    header = sunspec.ModelHeader(203, 40070, sunspec.model_length(203))
    decoded = sunspec.decode_points(header, [(40070, shifted)], ["W", "WphA"])
    assert decoded["W"] == pytest.approx(14.03) and decoded["WphA"] == pytest.approx(4.83)  # 1000× low
    plus4 = sunspec.decode_points(header, [(40070, shift_scale_factors(203, original, 3, ("W_SF",)))], ["W"])
    assert plus4["W"] == pytest.approx(14_030_000.0)  # 1000× high


def test_shift_scale_factors_leaves_unimplemented_and_unknown_sfs() -> None:
    original = sunspec.build_model_registers(203, {"W": 100.0}, {"W_SF": 0})  # A_SF not implemented (0x8000)
    assert shift_scale_factors(203, original, 2, ("A_SF", "NoSuchSF")) == original


def test_chain_past_end_makes_the_chain_point_beyond_register_65535() -> None:
    unit = sunspec_meter_unit(lambda now_s: SITE, serial="m")
    image = unit.image(0.0)
    corrupt = chain_past_end(image, unit.base_address, 1)
    meter = unit.headers[1]
    offset = meter.address - unit.base_address
    assert corrupt[offset] == 203
    assert meter.address + 2 + corrupt[offset + 1] > 0xFFFF  # where the next model would start
    assert [i for i, (a, b) in enumerate(zip(image, corrupt, strict=True)) if a != b] == [offset + 1]
    common = unit.headers[0]
    assert corrupt[common.address - unit.base_address + 1] == common.length  # model 1 untouched


# ---------------------------------------------------------------- units and the injector (no I/O)


def test_injector_keeps_the_injection_time_and_the_old_api() -> None:
    clock = FakeClock(1000.0)
    injector = FaultInjector(clock)
    injector.inject(Fault.drifting(0.8, over_s=60.0), unit_id=1)
    active = injector.active_for(1)
    assert active is not None and active.started_s == 1000.0
    assert injector.fault_for(1) == Fault.drifting(0.8, over_s=60.0)
    assert injector.fault_for(2) is None
    injector.inject(Fault("silent"))
    assert injector.fault_for(2) == Fault("silent")
    injector.clear()
    assert injector.fault_for(1) is None
    assert FaultInjector().fault_for(1) is None  # no clock: the start is the first read


SDM630_SPAN = 0x4C  # input registers 0 .. 0x4B hold every point of the profile


def _sdm630_image(unit: ProfileMeterUnit, now_s: float) -> list[int]:
    registers = unit.read(now_s, 4, 0, SDM630_SPAN)
    assert isinstance(registers, list)
    return registers


def _sdm630_reads(unit: ProfileMeterUnit, now_s: float) -> Measurement:
    return decode_profile(unit.profile, [RegisterBlock(4, 0, tuple(_sdm630_image(unit, now_s)))])


def test_profile_unit_freezes_what_it_presented_last_bit_identically() -> None:
    unit = ProfileMeterUnit(load_profile("sdm630"), lambda now_s: apply_gain(SITE, 1.0 + now_s / 100.0))
    _sdm630_image(unit, 0.0)
    last = _sdm630_image(unit, 1.0)
    unit.value_fault = ActiveFault(Fault.frozen(), started_s=1.5)
    assert _sdm630_image(unit, 2.0) == last
    assert _sdm630_image(unit, 30.0) == last
    assert _sdm630_reads(unit, 40.0).power_w == pytest.approx(1.01 * 14_030.0, rel=1e-6)
    unit.value_fault = None
    assert _sdm630_reads(unit, 50.0).power_w == pytest.approx(1.5 * 14_030.0, rel=1e-6)


def test_profile_unit_without_a_past_freezes_its_first_faulted_read() -> None:
    unit = ProfileMeterUnit(load_profile("sdm630"), lambda now_s: apply_gain(SITE, 1.0 + now_s / 100.0))
    unit.value_fault = ActiveFault(Fault.frozen())
    first = _sdm630_image(unit, 10.0)
    assert _sdm630_image(unit, 20.0) == first
    assert unit.value_fault.started_s == 10.0


def test_profile_unit_drifts_from_the_injection_time() -> None:
    unit = ProfileMeterUnit(load_profile("sdm630"), lambda now_s: SITE)
    unit.value_fault = ActiveFault(Fault.drifting(0.8, over_s=60.0), started_s=100.0)
    assert _sdm630_reads(unit, 130.0).power_w == pytest.approx(0.9 * 14_030.0, rel=1e-6)
    assert _sdm630_reads(unit, 400.0).phase_current_a == pytest.approx((16.8, 16.0, 16.0), rel=1e-6)


def test_sunspec_unit_applies_register_faults_and_value_faults() -> None:
    unit = sunspec_meter_unit(lambda now_s: SITE, serial="m", w_sf=1)
    meter = unit.headers[1]

    def read_meter() -> dict[str, float | str | None]:
        start = meter.address
        registers = unit.read(0.0, 3, start, meter.length + 2)
        assert isinstance(registers, list)
        return sunspec.decode_points(meter, [(start, registers)], ["W", "WphA", "AphA"])

    assert read_meter()["W"] == pytest.approx(14_030.0)
    unit.value_fault = ActiveFault(Fault.sf_offset(-3), started_s=0.0)
    assert read_meter()["W"] == pytest.approx(14.03)
    assert read_meter()["AphA"] == pytest.approx(21.0)  # A_SF untouched
    unit.value_fault = ActiveFault(Fault.scaled(0.01), started_s=0.0)
    assert read_meter()["WphA"] == pytest.approx(50.0)  # 48.3 W in tens of watts (W_SF 1)
    unit.value_fault = ActiveFault(Fault.chain_past_end(), started_s=0.0)
    length = unit.read(0.0, 3, meter.address + 1, 1)
    assert isinstance(length, list) and meter.address + 2 + length[0] > 0xFFFF
    assert read_meter()["W"] == pytest.approx(14_030.0)  # the values themselves are where they were
    unit.value_fault = None
    assert read_meter()["W"] == pytest.approx(14_030.0)


# ---------------------------------------------------------------- what a reader decodes (loopback)


def _link(port: int) -> ModbusTcpLink:
    return ModbusTcpLink(name="lan", type="tcp", host="127.0.0.1", port=port, timeout_s=0.3)


async def test_readers_decode_the_faulted_values() -> None:
    clock = SystemClock()
    units: dict[int, SimUnit] = {
        1: ProfileMeterUnit(load_profile("sdm630"), lambda now_s: SITE),
        2: sunspec_meter_unit(lambda now_s: SITE, "m"),
    }
    async with SimModbusServer(units, clock) as server, ModbusTransport(_link(server.port), clock) as transport:
        sdm = ProfileReader(transport, 1, load_profile("sdm630"), False)
        meter = SunSpecReader(transport, 2, DeviceRole.GRID_METER, False)
        assert (await sdm.read()).power_w == pytest.approx(14_030.0)
        assert (await meter.read()).power_w == pytest.approx(14_030.0)
        server.faults.inject(Fault.scaled(0.01), 1)
        server.faults.inject(Fault.sf_offset(-3), 2)
        assert (await sdm.read()).power_w == pytest.approx(140.3, rel=1e-6)
        low = await meter.read()
        assert low.power_w == pytest.approx(14.03) and low.phase_current_a == pytest.approx((21.0, 20.0, 20.0))
        server.faults.inject(Fault.ct_reversed(0), 1)
        reversed_l1 = await sdm.read()
        assert reversed_l1.phase_power_w == pytest.approx((-4830.0, 4600.0, 4600.0))
        assert reversed_l1.power_w == pytest.approx(4370.0)
        server.faults.clear()
        assert (await sdm.read()).power_w == pytest.approx(14_030.0)
        assert (await meter.read()).power_w == pytest.approx(14_030.0)
