"""SunSpec discovery, request planning and decoding (pure, over in-memory device images)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evdlm.devices import sunspec
from evdlm.devices.battery import storage_rates_pct
from evdlm.devices.codec import Measurement, encode_value
from evdlm.devices.errors import DiscoveryError, ModbusExceptionResponse
from evdlm.sim.modbus_servers import SimModel, SunSpecUnit


def reader_for(unit: SunSpecUnit) -> sunspec.ReadFn:
    async def read(address: int, count: int) -> list[int]:
        reply = unit.read(0.0, 3, address, count)
        if not isinstance(reply, list):
            raise ModbusExceptionResponse(3, 2)
        return reply

    return read


def meter_unit(base_address: int = 40000, values: dict[str, float | str | None] | None = None) -> SunSpecUnit:
    return SunSpecUnit(
        [
            SimModel(1, lambda now_s: {"Mn": "acme", "Md": "m"}),
            SimModel(203, lambda now_s: values or {"W": 1230.0, "TotWhImp": 5000.0}, {"W_SF": 1, "TotWh_SF": 0}),
        ],
        base_address=base_address,
    )


@pytest.mark.parametrize("base", [40000, 0, 50000])
async def test_discovery_finds_the_marker_and_walks_the_chain(base: int) -> None:
    headers = await sunspec.discover_models(reader_for(meter_unit(base)))
    assert [h.model_id for h in headers] == [1, 203]
    assert headers[0].address == base + 2
    # The chain, not a hard-coded offset, locates model 203: after model 1's L registers.
    assert headers[1].address == base + 2 + 2 + headers[0].length


async def test_no_marker_anywhere_is_a_discovery_error() -> None:
    async def read(address: int, count: int) -> list[int]:
        return [0] * count

    with pytest.raises(DiscoveryError, match="no SunSpec marker"):
        await sunspec.discover_models(read)


async def test_a_chain_that_never_ends_is_bounded() -> None:
    async def read(address: int, count: int) -> list[int]:
        return list(sunspec.SUNS_MARKER) if address == 40000 else [1, 0]  # model 1 of length 0, forever

    with pytest.raises(DiscoveryError, match="longer than"):
        await sunspec.discover_models(read)


def test_every_supported_model_has_a_definition() -> None:
    for model_id in (
        1,
        201,
        202,
        203,
        204,
        211,
        212,
        213,
        214,
        101,
        102,
        103,
        111,
        112,
        113,
        701,
        702,
        704,
        124,
        713,
        802,
    ):
        assert sunspec.model_definition(model_id).points["ID"].offset == 0


def test_values_travel_with_their_scale_factors() -> None:
    header = sunspec.ModelHeader(203, 40070, sunspec.model_length(203))
    model = sunspec.model_definition(203)
    for limit in (125, 60, 30, 17):  # 17: TotWhImp … TotWh_SF, the widest pair
        requests = sunspec.plan_model_reads(header, sunspec.METER_POINTS, limit)
        assert all(count <= limit for _, count in requests)
        for name in sunspec.METER_POINTS:
            point = model.points[name]
            sf = model.points[str(point.sf)]
            value_address, sf_address = header.address + point.offset, header.address + sf.offset
            assert any(
                start <= value_address
                and value_address + point.size <= start + count
                and start <= sf_address < start + count
                for start, count in requests
            ), (limit, name)


def test_a_link_too_small_for_value_and_sf_still_reads_both() -> None:
    header = sunspec.ModelHeader(203, 0, sunspec.model_length(203))
    requests = sunspec.plan_model_reads(header, ["TotWhImp"], 8)
    covered = {address for start, count in requests for address in range(start, start + count)}
    model = sunspec.model_definition(203)
    assert model.points["TotWhImp"].offset in covered
    assert model.points["TotWh_SF"].offset in covered


def _decode_203(values: dict[str, float | str | None], sfs: dict[str, int]) -> dict[str, float | str | None]:
    registers = sunspec.build_model_registers(203, values, sfs)
    header = sunspec.ModelHeader(203, 100, registers[1])
    return sunspec.decode_points(header, [(100, registers)], ["W", "WphA", "Hz", "TotWhImp", "TotWhExp"])


def test_scale_factors_apply_and_sentinels_become_none() -> None:
    out = _decode_203({"W": -12340.0, "Hz": 49.95, "TotWhImp": 1_000_000.0}, {"W_SF": 1, "Hz_SF": -2, "TotWh_SF": 0})
    assert out["W"] == pytest.approx(-12340.0)
    assert out["Hz"] == pytest.approx(49.95)
    assert out["TotWhImp"] == 1_000_000.0
    assert out["WphA"] is None  # int16 0x8000: not implemented
    assert out["TotWhExp"] is None  # acc32 0: not implemented


def test_a_value_whose_scale_factor_is_not_implemented_is_none() -> None:
    out = _decode_203({"W": 1000.0, "TotWhImp": 5.0}, {"TotWh_SF": 0})  # W_SF left 0x8000
    assert out["W"] is None
    assert out["TotWhImp"] == 5.0


def test_float_models_map_nan_to_none() -> None:
    registers = sunspec.build_model_registers(213, {"W": 1500.5, "Hz": None}, {})
    header = sunspec.ModelHeader(213, 0, registers[1])
    out = sunspec.decode_points(header, [(0, registers)], ["W", "Hz"])
    assert out == {"W": 1500.5, "Hz": None}


def test_accumulator_wrap_modulus_follows_the_scale_factor() -> None:
    registers = sunspec.build_model_registers(203, {"TotWhImp": 10.0}, {"TotWh_SF": 1})
    header = sunspec.ModelHeader(203, 0, registers[1])
    assert sunspec.accumulator_modulus(header, [(0, registers)], "TotWhImp") == 2**32 * 10.0
    assert sunspec.accumulator_modulus(header, [(0, registers)], "W") is None


def test_points_beyond_a_short_model_are_none() -> None:
    registers = sunspec.build_model_registers(203, {"W": 100.0, "TotWhImp": 7.0}, {"W_SF": 0, "TotWh_SF": 0})
    short = sunspec.ModelHeader(203, 0, 30)  # a device implementing only the first 30 registers
    out = sunspec.decode_points(short, [(0, registers)], ["W", "TotWhImp"])
    assert out["TotWhImp"] is None


def test_storage_rates_pin_the_battery_to_one_power() -> None:
    assert storage_rates_pct(5000.0, 10_000.0) == (-50.0, 50.0)  # discharge 5 kW
    assert storage_rates_pct(-2500.0, 10_000.0) == (25.0, -25.0)  # charge 2.5 kW
    assert storage_rates_pct(50_000.0, 10_000.0) == (-100.0, 100.0)  # clamped to the rating


def test_int_encoding_of_negative_rates() -> None:
    assert encode_value(-5000, "int16") == [0xEC78]


@given(
    st.integers(-32767, 32767),
    st.integers(-3, 3),
    st.integers(1, 2**32 - 1),
)
def test_int_and_sf_round_trip(raw_w: int, exponent: int, raw_wh: int) -> None:
    power_w = raw_w * 10.0**exponent
    energy_wh = float(raw_wh)
    registers = sunspec.build_model_registers(
        203, {"W": power_w, "TotWhImp": energy_wh}, {"W_SF": exponent, "TotWh_SF": 0}
    )
    header = sunspec.ModelHeader(203, 0, registers[1])
    out = sunspec.decode_points(header, [(0, registers)], ["W", "TotWhImp"])
    assert out["W"] == pytest.approx(power_w, rel=1e-12, abs=1e-12)
    assert out["TotWhImp"] == energy_wh


def test_one_point_table_serves_the_decoders_and_the_simulator() -> None:
    """The simulator's SunSpec units write with the table the decoders read with."""
    measured = Measurement(
        power_w=1200.0,
        phase_power_w=(400.0, 500.0, 300.0),
        phase_current_a=(1.8, 2.2, 1.3),
        phase_voltage_v=(230.0, 231.0, 229.0),
        frequency_hz=50.0,
        import_energy_wh=1e6,
        export_energy_wh=2e5,
    )
    for table, family in ((sunspec.METER_MAP, 203), (sunspec.INVERTER_MAP, 103), (sunspec.DER_AC_MAP, 701)):
        points = sunspec.model_definition(family).points
        encoded = table.encode(measured)
        assert set(encoded) == set(table.points) and set(table.points) <= set(points)
        decoded = table.decode(encoded)
        for field in ("power_w", "phase_current_a", "phase_voltage_v", "frequency_hz", "import_energy_wh"):
            assert getattr(decoded, field) == getattr(measured, field)
