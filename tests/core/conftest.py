"""A small site for the pure-core tests: grid 100 A / 50 kW, circuit `a` (40 A, metered), `b` (32 A, 15 kW)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from evdlm.config import SiteConfig, parse_site_config
from evdlm.core.site_settings import SiteSettings
from evdlm.core.topology import Topology, build_topology
from evdlm.core.types import EvseState, Quality, Reading

SITE = """\
site: {id: core}
grid: {import_limit_kw: 50, export_limit_kw: 10, phase_current_limit_a: 100, meter: gm}
circuits:
  - id: a
    phase_current_limit_a: 40
    meter: am
  - id: b
    phase_current_limit_a: 32
    power_limit_kw: 15
chargers:
  - {id: A1, ocpp_version: "1.6", circuit: a}
  - {id: A2, ocpp_version: "1.6", circuit: a, phase_rotation: L2-L3-L1}
  - {id: B1, ocpp_version: "2.0.1", circuit: b, kind: ac_1phase, phase_rotation: L3-L1-L2}
  - {id: B2, ocpp_version: "2.0.1", circuit: b, kind: dc, max_power_kw: 10, min_power_kw: 2}
modbus_links: [{name: lan, type: tcp, host: 127.0.0.1}]
devices:
  - {name: gm, role: grid_meter, modbus: {link: lan, profile: sunspec}}
  - {name: am, role: circuit_meter, modbus: {link: lan, unit_id: 2, profile: sunspec}}
control: {fallback_import_limit_kw: 20, safety_margin_a: 1, safety_margin_kw: 1, settle_time_s: 10,
          min_off_time_s: 60, ramp_up_a_per_s: 100}
"""
NOW_S = 1_800_000_000.0


@pytest.fixture
def config() -> SiteConfig:
    return parse_site_config(SITE).config


@pytest.fixture
def topology(config: SiteConfig) -> Topology:
    return build_topology(config)


@pytest.fixture
def settings(config: SiteConfig) -> SiteSettings:
    # As if PV sat behind the grid meter (its load may be negative), which this small site lacks.
    return replace(SiteSettings.from_config(config), grid_generation=True)


def charging(charger: str, currents: tuple[float, float, float] | None = None, **extra: object) -> EvseState:
    values = {
        "charger_id": charger,
        "evse_id": 1,
        "online": True,
        "connected": True,
        "charging": True,
        "updated_at_s": NOW_S,
        "transaction_id": f"tx-{charger}",
        "phase_current_a": currents,
    }
    values.update(extra)
    return EvseState(**values)  # type: ignore[arg-type]


def meter(
    name: str, phase_a: tuple[float, float, float], voltage_v: float = 230.0, quality: Quality = Quality.OK
) -> Reading:
    return Reading(
        device=name,
        taken_at_s=NOW_S,
        quality=quality,
        power_w=sum(phase_a) * voltage_v,
        phase_power_w=(phase_a[0] * voltage_v, phase_a[1] * voltage_v, phase_a[2] * voltage_v),
    )
