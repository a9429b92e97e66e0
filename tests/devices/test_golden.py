"""Golden register dumps (tests/data/modbus): each profile decodes them to the expected numbers.

The dumps are decoded through the real readers over an in-memory transport that answers from
the captured blocks, so discovery, request planning and decoding are all exercised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evdlm.config.models import DeviceRole
from evdlm.devices.errors import ModbusExceptionResponse
from evdlm.devices.profile import SUNSPEC, load_profile
from evdlm.devices.readers import ProfileReader, SunSpecReader

DATA = Path(__file__).resolve().parents[1] / "data" / "modbus"
DUMPS = sorted(DATA.glob("*.json"))


class DumpTransport:
    """Answers reads from captured blocks; anything else is an illegal-address exception."""

    def __init__(self, blocks: list[dict[str, Any]], max_registers: int = 125) -> None:
        self.registers = {
            (block["function_code"], block["address"] + i): value
            for block in blocks
            for i, value in enumerate(block["registers"])
        }
        self.name = "dump"
        self.max_registers_per_request = max_registers
        self.requests: list[tuple[int, int, int]] = []

    async def read_registers(self, unit_id: int, function_code: int, address: int, count: int) -> list[int]:
        self.requests.append((function_code, address, count))
        keys = [(function_code, address + i) for i in range(count)]
        if not all(key in self.registers for key in keys):
            raise ModbusExceptionResponse(function_code, 2)
        return [self.registers[key] for key in keys]


def test_every_profile_has_a_golden_dump() -> None:
    profiles = {json.loads(path.read_text())["profile"] for path in DUMPS}
    assert {"sdm630", "sdm72d_m_v2", "janitza_umg96", "janitza_umg604", "em24", "sunspec"} <= profiles


@pytest.mark.parametrize("path", DUMPS, ids=[p.stem for p in DUMPS])
@pytest.mark.parametrize("max_registers", [125, 40])
async def test_golden_dump_decodes_to_expected(path: Path, max_registers: int) -> None:
    dump = json.loads(path.read_text())
    transport = DumpTransport(dump["blocks"], max_registers)
    role = DeviceRole(dump["role"])
    if dump["profile"] == SUNSPEC:
        reader: Any = SunSpecReader(transport, 1, role, invert_sign=False)  # type: ignore[arg-type]
    else:
        reader = ProfileReader(transport, 1, load_profile(dump["profile"]), invert_sign=False)  # type: ignore[arg-type]
    measurement = await reader.read()
    assert all(count <= max_registers for _, _, count in transport.requests)
    for field, expected in dump["expected"].items():
        actual = getattr(measurement, field)
        if expected is None:
            assert actual is None, field
        elif isinstance(expected, list):
            assert actual == pytest.approx(tuple(expected), rel=1e-9, abs=1e-9), field
        else:
            assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9), field


async def test_device_invert_sign_flips_a_golden_meter() -> None:
    dump = json.loads((DATA / "sunspec_meter_203.json").read_text())
    reader = SunSpecReader(DumpTransport(dump["blocks"]), 1, DeviceRole.GRID_METER, invert_sign=True)  # type: ignore[arg-type]
    measurement = await reader.read()
    assert measurement.power_w == pytest.approx(-6910.0)
    assert measurement.import_energy_wh == pytest.approx(56_750.0)


async def test_sunspec_identity_comes_from_the_common_model() -> None:
    dump = json.loads((DATA / "sunspec_inverter_103.json").read_text())
    reader = SunSpecReader(DumpTransport(dump["blocks"]), 1, DeviceRole.PV, invert_sign=False)  # type: ignore[arg-type]
    await reader.discover()
    assert reader.identity == {"Mn": "golden", "Md": "inverter-103", "Vr": None, "SN": "0001"}
