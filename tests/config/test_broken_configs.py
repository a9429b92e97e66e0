"""Each broken config yields its own message, on the right line, naming the field.

A case edits one line of a small valid site; the edited line carries a `#!` marker and the
test expects the error on that line (1-based), so the cases read like the files a user writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from evdlm.config import ConfigError, parse_site_config

BASE = """\
schema_version: 1
site: {id: t, timezone: UTC}
grid:
  import_limit_kw: 50
  phase_current_limit_a: 80
  meter: gm
circuits:
  - id: main
    phase_current_limit_a: 80
    children:
      - {id: sub, phase_current_limit_a: 40}
chargers:
  - {id: CP1, ocpp_version: "1.6", circuit: main}
modbus_links:
  - {name: lan, type: tcp, host: 127.0.0.1}
devices:
  - {name: gm, role: grid_meter, modbus: {link: lan, profile: sunspec}}
control:
  fallback_import_limit_kw: 20
ocpp: {authorization: {accept_all: true}}
"""


@dataclass(frozen=True)
class Case:
    name: str
    old: str
    new: str
    field: str
    message: str
    line: int | None = None  # where no `#!` marker can sit on the blamed line


CASES = [
    Case("unknown key", "circuit: main}", "circuit: main, colour: red}  #!", "chargers[0].colour", "unknown field"),
    Case("NaN limit", "import_limit_kw: 50", "import_limit_kw: .nan  #!", "grid.import_limit_kw", "finite number"),
    Case(
        "infinite fallback",
        "fallback_import_limit_kw: 20",
        "fallback_import_limit_kw: .inf  #!",
        "control.fallback_import_limit_kw",
        "finite number",
    ),
    Case("wrong type", "import_limit_kw: 50", "import_limit_kw: fifty  #!", "grid.import_limit_kw", "valid number"),
    Case(
        "negative limit",
        "phase_current_limit_a: 80\n    children",
        "phase_current_limit_a: -80  #!\n    children",
        "circuits[0].phase_current_limit_a",
        "greater than 0",
    ),
    Case(
        "absurd limit",
        "import_limit_kw: 50",
        "import_limit_kw: 5000000  #!",
        "grid.import_limit_kw",
        "less than or equal",
    ),
    Case(
        "dangling circuit",
        "circuit: main}",
        "circuit: attic}  #!",
        "chargers[0].circuit",
        "circuit 'attic' is not defined",
    ),
    Case("dangling meter", "meter: gm", "meter: nowhere  #!", "grid.meter", "device 'nowhere' is not defined"),
    Case(
        "meter of wrong role",
        "{id: sub, phase_current_limit_a: 40}",
        "{id: sub, phase_current_limit_a: 40, meter: gm}  #!",
        "circuits[0].children[0].meter",
        "has role grid_meter, expected circuit_meter",
    ),
    Case(
        "duplicate charger id",
        '  - {id: CP1, ocpp_version: "1.6", circuit: main}',
        '  - {id: CP1, ocpp_version: "1.6", circuit: main}\n  - {id: CP1, ocpp_version: "1.6", circuit: sub}  #!',
        "chargers[1].id",
        "duplicate charger id 'CP1'",
    ),
    Case(
        "duplicate circuit id",
        "{id: sub, phase_current_limit_a: 40}",
        "{id: main, phase_current_limit_a: 40}  #!",
        "circuits[0].children[0].id",
        "duplicate circuit id 'main'",
    ),
    Case(
        "bad phase rotation",
        "circuit: main}",
        "circuit: main, phase_rotation: L1-L1-L3}  #!",
        "chargers[0].phase_rotation",
        "permutation",
    ),
    Case(
        "unknown OCPP version",
        'ocpp_version: "1.6"',
        'ocpp_version: "1.5"',
        "chargers[0].ocpp_version",
        "'1.6' or '2.0.1'",
    ),
    Case(
        "missing required field",
        "control:\n  fallback_import_limit_kw: 20",
        "control:  #!\n  cycle_period_s: 1",
        "control.fallback_import_limit_kw",
        "required field is missing",
    ),
    Case("bad time zone", "timezone: UTC}", "timezone: Mars/Olympus}  #!", "site.timezone", "unknown time zone"),
    Case(
        "undefined modbus link",
        "link: lan,",
        "link: bus,",
        "devices[0].modbus.link",
        "modbus link 'bus' is not defined",
    ),
    Case(
        "unknown profile",
        "profile: sunspec",
        "profile: acme9000",
        "devices[0].modbus.profile",
        "unknown profile 'acme9000'",
    ),
    Case("dc without max power", "circuit: main}", "circuit: main, kind: dc}  #!", "chargers[0]", "needs max_power_kw"),
    Case(
        "min above max",
        "circuit: main}",
        "circuit: main, min_current_a: 20, max_current_a: 16}  #!",
        "chargers[0]",
        "min_current_a is above max_current_a",
    ),
    Case(
        "two sources",
        "profile: sunspec}}",
        "profile: sunspec}, sim: {model: grid_meter}}  #!",
        "devices[0]",
        "exactly one source",
    ),
    Case(
        "password missing for profile 1",
        "ocpp: {authorization: {accept_all: true}}",
        "ocpp: {security_profile: 1, authorization: {accept_all: true}}",
        "chargers[0].password",
        "needs a password",
        line=13,
    ),
    Case(
        "fallback above import",
        "fallback_import_limit_kw: 20",
        "fallback_import_limit_kw: 70  #!",
        "control.fallback_import_limit_kw",
        "above the grid import limit",
    ),
    Case(
        "odd baud rate",
        "  - {name: lan, type: tcp, host: 127.0.0.1}",
        "  - {name: lan, type: rtu, serial_port: /dev/ttyUSB0, baudrate: 9601}  #!",
        "modbus_links[0].baudrate",
        "not a standard serial rate",
    ),
    Case(
        "lease refresh too slow",
        "fallback_import_limit_kw: 20",
        "fallback_import_limit_kw: 20\n  lease_duration_s: 30\n  lease_refresh_s: 20",
        "control",
        "at most half",
        line=18,
    ),
    Case("bad enum", "circuit: main}", "circuit: main, kind: ac_2phase}  #!", "chargers[0].kind", "ac_2phase"),
    Case(
        "DR without broker",
        "control:",
        "demand_response: {programs: [{id: p1}]}  #!\ncontrol:",
        "demand_response",
        "no mqtt: broker section",
    ),
    Case(
        "price feed without broker",
        "control:",
        'tariffs:\n  default_import_price_per_kwh: 0.3\n  price_feed: {topic: "p/{site}"}  #!\ncontrol:',
        "tariffs.price_feed",
        "needs the mqtt: broker section",
    ),
    Case(
        "price feed topic with a wildcard",
        "control:",
        "tariffs:\n  default_import_price_per_kwh: 0.3\n  price_feed: {topic: p/+/x}  #!\ncontrol:",
        "tariffs.price_feed.topic",
        "pattern",
    ),
]


def _apply(case: Case) -> tuple[str, int]:
    assert BASE.count(case.old) >= 1, case.name
    text = BASE.replace(case.old, case.new, 1)
    lines = text.splitlines()
    marked = [number for number, line in enumerate(lines, start=1) if "#!" in line]
    if case.line is not None:
        return text, case.line
    if marked:
        return text, marked[0]
    # Unmarked cases point at the line holding the edited text.
    first_new_line = case.new.splitlines()[0].strip()
    return text, next(number for number, line in enumerate(lines, start=1) if first_new_line in line)


def test_base_is_valid() -> None:
    loaded = parse_site_config(BASE, "base.yaml")
    assert loaded.config.site.id == "t"
    assert loaded.warnings == []


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_broken_config_is_located(case: Case) -> None:
    text, expected_line = _apply(case)
    with pytest.raises(ConfigError) as caught:
        parse_site_config(text, "site.yaml")
    errors = [issue for issue in caught.value.issues if issue.severity == "error"]
    matching = [issue for issue in errors if case.message in issue.message]
    assert matching, f"no error mentioning {case.message!r} in {[str(e) for e in errors]}"
    issue = matching[0]
    assert issue.file == "site.yaml"
    assert issue.field == case.field
    assert issue.line == expected_line, str(issue)
    assert str(issue).startswith(f"site.yaml:{issue.line}:{issue.column}: error: {case.field}:")


def test_yaml_syntax_error_is_located() -> None:
    text = BASE.replace("  meter: gm", "  meter: [gm")
    with pytest.raises(ConfigError) as caught:
        parse_site_config(text, "site.yaml")
    (issue,) = caught.value.issues
    assert issue.message.startswith("YAML syntax")
    assert issue.line is not None and issue.line >= 6


def test_duplicate_yaml_key_is_an_error() -> None:
    text = BASE.replace("  meter: gm", "  meter: gm\n  meter: gm")
    with pytest.raises(ConfigError) as caught:
        parse_site_config(text, "site.yaml")
    (issue,) = caught.value.issues
    assert "duplicate" in issue.message
    assert issue.line == 7


def test_every_error_is_reported_at_once() -> None:
    text = BASE.replace("import_limit_kw: 50", "import_limit_kw: -1").replace("timezone: UTC", "timezone: Nowhere")
    text = text.replace("circuit: main}", "circuit: main, colour: red}")
    with pytest.raises(ConfigError) as caught:
        parse_site_config(text, "site.yaml")
    fields = {issue.field for issue in caught.value.issues}
    assert {"grid.import_limit_kw", "site.timezone", "chargers[0].colour"} <= fields
    lines = [issue.line or 0 for issue in caught.value.issues]
    assert lines == sorted(lines)


def test_reference_errors_are_reported_together() -> None:
    text = BASE.replace("meter: gm", "meter: nowhere").replace("circuit: main}", "circuit: attic}")
    with pytest.raises(ConfigError) as caught:
        parse_site_config(text, "site.yaml")
    assert {issue.field for issue in caught.value.issues} >= {"grid.meter", "chargers[0].circuit"}


def test_child_above_parent_is_only_a_warning() -> None:
    text = BASE.replace("{id: sub, phase_current_limit_a: 40}", "{id: sub, phase_current_limit_a: 100}")
    loaded = parse_site_config(text, "site.yaml")
    (warning,) = loaded.warnings
    assert warning.severity == "warning"
    assert warning.field == "circuits[0].children[0].phase_current_limit_a"
    assert warning.line == 11
    assert "above its parent 'main'" in warning.message


def test_extension_keys_carry_anchors() -> None:
    text = BASE.replace(
        'chargers:\n  - {id: CP1, ocpp_version: "1.6", circuit: main}',
        'x-defaults:\n  ac: &ac {ocpp_version: "2.0.1", max_current_a: 16}\n'
        "chargers:\n  - {<<: *ac, id: CP1, circuit: main}",
    )
    charger = parse_site_config(text).config.chargers[0]
    assert (charger.ocpp_version, charger.max_current_a) == ("2.0.1", 16)
