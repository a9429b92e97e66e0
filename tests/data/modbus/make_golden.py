"""Write the golden register dumps in this directory (run once; the JSON files are committed).

Each dump holds the raw registers a device presents for a set of example values, and the
values a correct decoder must return. The register-map dumps are encoded from the example
values with the profile (float32 / int32 as the vendor manuals specify); the SunSpec dumps are
whole device images (marker, model chain, end marker) built from pysunspec2's model
definitions. Values are chosen exactly representable at each register's resolution, so the
expected numbers are exact.

    .venv/bin/python tests/data/modbus/make_golden.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from evdlm.devices.codec import Measurement
from evdlm.devices.profile import encode_profile, load_profile
from evdlm.sim.modbus_servers import SimModel, SunSpecUnit

HERE = Path(__file__).resolve().parent

METER = Measurement(
    power_w=6912.5,
    phase_power_w=(2500.0, 2212.5, 2200.0),
    phase_current_a=(11.5, 10.25, 10.0),
    phase_voltage_v=(230.5, 231.0, 229.5),
    frequency_hz=50.0,
    import_energy_wh=1_234_500.0,
    export_energy_wh=56_750.0,  # 56.75 kWh: exact in float32 kWh
)


def _expected(m: Measurement) -> dict[str, Any]:
    return {
        "power_w": m.power_w,
        "phase_power_w": list(m.phase_power_w) if m.phase_power_w else None,
        "phase_current_a": list(m.phase_current_a) if m.phase_current_a else None,
        "phase_voltage_v": list(m.phase_voltage_v) if m.phase_voltage_v else None,
        "frequency_hz": m.frequency_hz,
        "import_energy_wh": m.import_energy_wh,
        "export_energy_wh": m.export_energy_wh,
        "soc_pct": m.soc_pct,
    }


def profile_dump(name: str, measurement: Measurement, source: str) -> dict[str, Any]:
    profile = load_profile(name)
    registers = encode_profile(profile, measurement)
    # One contiguous block per function code, as a register-range capture would store it, so
    # any request plan (any max_registers_per_request) can be answered from it.
    blocks = []
    for function_code in sorted({fc for fc, _ in registers}):
        addresses = [address for fc, address in registers if fc == function_code]
        start, end = min(addresses), max(addresses) + 1
        blocks.append(
            {
                "function_code": function_code,
                "address": start,
                "registers": [registers.get((function_code, a), 0) for a in range(start, end)],
            }
        )
    return {
        "device": profile.model,
        "profile": name,
        "role": "grid_meter",
        "source": source,
        "blocks": blocks,
        "expected": _expected(measurement),
    }


def sunspec_dump(role: str, models: list[SimModel], expected: Measurement, source: str) -> dict[str, Any]:
    unit = SunSpecUnit(models)
    image = unit.image(0.0)
    return {
        "device": source,
        "profile": "sunspec",
        "role": role,
        "source": source,
        "blocks": [{"function_code": 3, "address": unit.base_address, "registers": image}],
        "expected": _expected(expected),
    }


def common(model: str) -> SimModel:
    return SimModel(1, lambda now_s: {"Mn": "golden", "Md": model, "SN": "0001", "DA": 1})


def main() -> None:
    dumps: dict[str, dict[str, Any]] = {}
    for name in ("sdm630", "sdm72d_m_v2", "janitza_umg96", "janitza_umg604"):
        dumps[name] = profile_dump(name, METER, "example values encoded per the vendor register map")
    # EM24 resolution: 0.1 V, 0.001 A, 0.1 W, 0.1 Hz, 0.1 kWh.
    dumps["em24"] = profile_dump(
        "em24",
        Measurement(
            power_w=6912.5,
            phase_power_w=(2500.0, 2212.5, 2200.0),
            phase_current_a=(11.5, 10.25, 10.0),
            phase_voltage_v=(230.5, 231.0, 229.5),
            frequency_hz=50.0,
            import_energy_wh=1_234_500.0,
            export_energy_wh=56_700.0,
        ),
        "example values encoded per the Carlo Gavazzi EM24 map (int32, low word first)",
    )
    meter_values = {
        "A": 31.75, "AphA": 11.5, "AphB": 10.25, "AphC": 10.0,
        "PhVphA": 230.5, "PhVphB": 231.0, "PhVphC": 229.5, "Hz": 50.0,
        "W": 6910.0, "WphA": 2500.0, "WphB": 2210.0, "WphC": 2200.0,
        "TotWhImp": 1_234_500.0, "TotWhExp": 56_750.0,
    }  # fmt: skip
    dumps["sunspec_meter_203"] = sunspec_dump(
        "grid_meter",
        [
            common("meter-203"),
            SimModel(
                203,
                lambda now_s: dict(meter_values),
                {"A_SF": -2, "V_SF": -1, "Hz_SF": -2, "W_SF": 1, "TotWh_SF": 1},
            ),
        ],
        Measurement(
            power_w=6910.0,
            phase_power_w=(2500.0, 2210.0, 2200.0),
            phase_current_a=(11.5, 10.25, 10.0),
            phase_voltage_v=(230.5, 231.0, 229.5),
            frequency_hz=50.0,
            import_energy_wh=1_234_500.0,
            export_energy_wh=56_750.0,
        ),
        "SunSpec three-phase meter, model 203 (int16 + scale factors)",
    )
    dumps["sunspec_meter_213"] = sunspec_dump(
        "grid_meter",
        [common("meter-213"), SimModel(213, lambda now_s: {**meter_values, "W": 6912.5, "WphB": 2212.5})],
        METER,
        "SunSpec three-phase meter, model 213 (float32)",
    )
    dumps["sunspec_inverter_103"] = sunspec_dump(
        "pv",
        [
            common("inverter-103"),
            SimModel(
                103,
                lambda now_s: {
                    "A": 21.6,
                    "AphA": 7.2,
                    "AphB": 7.2,
                    "AphC": 7.2,
                    "PhVphA": 230.0,
                    "PhVphB": 230.0,
                    "PhVphC": 230.0,
                    "W": 4960.0,
                    "Hz": 49.98,
                    "WH": 8_765_432.0,
                    "St": 4,
                },
                {"A_SF": -1, "V_SF": -1, "W_SF": 1, "Hz_SF": -2, "WH_SF": 0},
            ),
        ],
        Measurement(
            power_w=4960.0,
            phase_current_a=(7.2, 7.2, 7.2),
            phase_voltage_v=(230.0, 230.0, 230.0),
            frequency_hz=49.98,
            import_energy_wh=8_765_432.0,
        ),
        "SunSpec three-phase inverter, model 103",
    )
    dumps["sunspec_battery_124_802"] = sunspec_dump(
        "battery",
        [
            common("battery"),
            SimModel(
                124,
                lambda now_s: {
                    "WChaMax": 10_000.0,
                    "StorCtl_Mod": 0,
                    "ChaState": 61.5,
                    "InWRte": 100.0,
                    "OutWRte": 100.0,
                },
                {"WChaMax_SF": 0, "ChaState_SF": -1, "InOutWRte_SF": -2},
            ),
            SimModel(
                802,
                lambda now_s: {"SoC": 61.5, "W": -3200.0, "WChaRteMax": 10_000.0, "WDisChaRteMax": 10_000.0},
                {"SoC_SF": -1, "W_SF": 0, "WChaDisChaMax_SF": 0},
            ),
        ],
        Measurement(power_w=-3200.0, soc_pct=61.5),
        "SunSpec storage 124 + battery 802, charging at 3.2 kW",
    )
    for name, dump in dumps.items():
        text = json.dumps(dump, indent=1)
        # One line per register list keeps the dumps readable and diffable.
        text = re.sub(
            r"\[\s*([-0-9.,\s]+?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text
        )
        (HERE / f"{name}.json").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
