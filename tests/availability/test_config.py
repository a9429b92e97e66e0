"""The availability section and the per-charger floor: validated, with file and field."""

from __future__ import annotations

import pytest

from evdlm.config import ConfigError, parse_site_config

BASE = """\
site: {id: s}
grid: {import_limit_kw: 50, phase_current_limit_a: 100}
circuits: [{id: a, phase_current_limit_a: 63}]
chargers: [{id: A1, ocpp_version: "1.6", circuit: a, min_power_floor_kw: 7}]
control: {fallback_import_limit_kw: 20}
"""


def test_a_valid_section() -> None:
    config = parse_site_config(
        BASE
        + """availability:
  maintenance_windows:
    - {start: 2026-11-03T02:00:00+01:00, end: 2026-11-03T04:00:00Z, chargers: [A1], reason: utility_outage}
  excluded_classes: [dr_curtailed]
"""
    ).config
    assert config.chargers[0].min_power_floor_kw == 7.0
    assert config.availability is not None and config.availability.enabled
    window = config.availability.maintenance_windows[0]
    assert window.start.timestamp() + 3600 * 3 == window.end.timestamp()
    assert config.availability.state_file == "var/availability.json"


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ("maintenance_windows: [{start: 2026-11-03T04:00:00Z, end: 2026-11-03T02:00:00Z}]", "start must be before end"),
        ("maintenance_windows: [{start: 2026-11-03T02:00:00, end: 2026-11-03T04:00:00Z}]", "time zone"),
        ("maintenance_windows: [{start: 2026-11-03T02:00:00Z, end: 2026-11-03T04:00:00Z, chargers: [A9]}]", "A9"),
        ("maintenance_windows: [{start: 2026-11-03T02:00:00Z, end: 2026-11-03T04:00:00Z, reason: lunch}]", "reason"),
        ("excluded_classes: [below_floor]", "excluded_classes"),
        ("save_every_s: .nan", "save_every_s"),
    ],
)
def test_invalid(section: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_site_config(BASE + "availability:\n  " + section + "\n")
    assert needle in str(caught.value)


def test_floor_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="min_power_floor_kw"):
        parse_site_config(BASE.replace("min_power_floor_kw: 7", "min_power_floor_kw: -1"))
