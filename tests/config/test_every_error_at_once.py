"""`evdlm validate` says everything at once: cross-field errors beside the field errors, and a
misspelt key as one "unknown field 'X' (did you mean 'Y'?)" instead of "missing" + "unknown"."""

from __future__ import annotations

import pytest

from evdlm.config import ConfigError, ConfigIssue, parse_site_config

from .test_broken_configs import BASE  # the small valid site


def _errors(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        parse_site_config(text, "site.yaml")
    return [issue for issue in caught.value.issues if issue.severity == "error"]


def test_dangling_circuit_is_reported_beside_field_errors() -> None:
    text = BASE.replace("circuit: main}", 'circuit: attic}\n  - {id: CP2, ocpp_version: "1.7", circuit: main}')
    text = text.replace("profile: sunspec}}", "profile: sunspec}, max_age_s: -1}")
    by_field = {issue.field: issue.message for issue in _errors(text)}
    assert "circuit 'attic' is not defined" in by_field["chargers[0].circuit"]
    assert "'1.6' or '2.0.1'" in by_field["chargers[1].ocpp_version"]
    assert "greater than" in by_field["devices[0].max_age_s"]


def test_an_item_with_a_bad_field_is_still_cross_checked() -> None:
    # The bad max_current_a is left out (its default stands in) so the circuit is checked too.
    text = BASE.replace("circuit: main}", "circuit: attic, max_current_a: -3}")
    by_field = {issue.field: issue.message for issue in _errors(text)}
    assert set(by_field) == {"chargers[0].circuit", "chargers[0].max_current_a"}


def test_references_to_a_failing_item_are_not_errors() -> None:
    # devices[0] fails (unknown role), so grid.meter: gm must not be called undefined.
    text = BASE.replace("role: grid_meter,", "role: grid_metre,").replace("circuit: main}", "circuit: attic}")
    fields = {issue.field for issue in _errors(text)}
    assert fields == {"devices[0].role", "chargers[0].circuit"}


def test_typo_of_a_required_field_is_one_error_with_a_suggestion() -> None:
    text = BASE.replace('ocpp_version: "1.6"', 'ocpp_versoin: "1.6"')
    (issue,) = _errors(text)
    assert issue.field == "chargers[0].ocpp_versoin"
    assert issue.message == "unknown field 'ocpp_versoin' (did you mean 'ocpp_version'?)"
    assert issue.line == 13


def test_typo_of_an_optional_field_gets_a_suggestion() -> None:
    text = BASE.replace("circuit: main}", "circuit: main, max_curent_a: 16}")
    (issue,) = _errors(text)
    assert issue.field == "chargers[0].max_curent_a"
    assert "did you mean 'max_current_a'?" in issue.message


def test_typo_inside_a_union_member_and_a_nested_circuit() -> None:
    text = BASE.replace("host: 127.0.0.1}", "host: 127.0.0.1, prot: 502}")
    text = text.replace("{id: sub, phase_current_limit_a: 40}", "{id: sub, phase_current_limt_a: 40}")
    messages = {issue.field: issue.message for issue in _errors(text)}
    assert messages == {
        "modbus_links[0].prot": "unknown field 'prot' (did you mean 'port'?)",
        "circuits[0].children[0].phase_current_limt_a": (
            "unknown field 'phase_current_limt_a' (did you mean 'phase_current_limit_a'?)"
        ),
    }


def test_a_misspelt_required_key_is_cross_checked_under_its_meaning() -> None:
    text = BASE.replace("circuit: main}", "circut: attic}")
    # Both on the key as written (its line), the typo first.
    assert [(issue.field, issue.message) for issue in _errors(text)] == [
        ("chargers[0].circut", "unknown field 'circut' (did you mean 'circuit'?)"),
        ("chargers[0].circut", "circuit 'attic' is not defined under circuits"),
    ]


def test_no_suggestion_for_a_key_like_no_field() -> None:
    text = BASE.replace("circuit: main}", "circuit: main, colour: red}")
    (issue,) = _errors(text)
    assert issue.message.startswith("unknown field (check the spelling")


def test_a_bad_required_number_does_not_hide_the_cross_checks() -> None:
    # grid is required and import_limit_kw has no default: a stand-in keeps the section.
    text = BASE.replace("import_limit_kw: 50", "import_limit_kw: -1").replace("circuit: main}", "circuit: attic}")
    text = text.replace("fallback_import_limit_kw: 20", "fallback_import_limit_kw: fifty")
    by_field = {issue.field: issue.message for issue in _errors(text)}
    assert set(by_field) == {"grid.import_limit_kw", "control.fallback_import_limit_kw", "chargers[0].circuit"}
    assert "circuit 'attic' is not defined" in by_field["chargers[0].circuit"]


def test_a_missing_required_number_does_not_hide_the_cross_checks() -> None:
    text = BASE.replace("control:\n  fallback_import_limit_kw: 20", "control:\n  cycle_period_s: 1")
    text = text.replace("meter: gm", "meter: nowhere")
    by_field = {issue.field: issue.message for issue in _errors(text)}
    assert by_field == {
        "control.fallback_import_limit_kw": "required field is missing",
        "grid.meter": "device 'nowhere' is not defined under devices",
    }


def test_errors_come_out_in_file_order() -> None:
    text = BASE.replace("import_limit_kw: 50", "import_limit_kw: -1").replace("timezone: UTC", "timezone: Nowhere")
    text = text.replace("circuit: main}", "circuit: attic, colour: red}")
    issues = _errors(text)
    assert {issue.field for issue in issues} == {
        "site.timezone",
        "grid.import_limit_kw",
        "chargers[0].circuit",
        "chargers[0].colour",
    }
    positions = [(issue.line or 0, issue.column or 0) for issue in issues]
    assert positions == sorted(positions)
