"""Issue 16: ocpp.authorization — what an omitted section means, and what validate says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from evdlm.config import ConfigError, ConfigIssue, parse_site_config

BASE = """\
site: {id: s1}
grid: {import_limit_kw: 50, phase_current_limit_a: 80}
circuits: [{id: main, phase_current_limit_a: 80}]
chargers: [{id: CP1, ocpp_version: "1.6", circuit: main}]
control: {fallback_import_limit_kw: 20}
"""


def auth_warnings(text: str) -> list[ConfigIssue]:
    return [w for w in parse_site_config(text, "site.yaml").warnings if w.field.startswith("ocpp.authorization")]


def test_omitted_section_is_free_vending_and_warned() -> None:
    loaded = parse_site_config(BASE, "site.yaml")
    assert loaded.config.ocpp.authorization is None
    (warning,) = auth_warnings(BASE)
    assert warning.field == "ocpp.authorization"
    assert warning.message.startswith("free vending: every idTag is accepted; set ocpp.authorization")


def test_explicit_accept_all_is_not_warned() -> None:
    assert auth_warnings(BASE + "ocpp: {authorization: {accept_all: true}}\n") == []


def test_a_local_list_is_not_warned() -> None:
    text = BASE + "ocpp:\n  authorization:\n    local_list:\n      - {id_tag: 04A1B2C3D4}\n"
    assert auth_warnings(text) == []
    section = parse_site_config(text).config.ocpp.authorization
    assert section is not None and not section.accept_all
    assert (section.unknown, section.offline_policy, section.cache_answers) == ("Invalid", "local_list", True)
    assert section.local_list[0].status == "Accepted"


def test_a_site_without_chargers_is_not_warned() -> None:
    text = BASE.replace('chargers: [{id: CP1, ocpp_version: "1.6", circuit: main}]\n', "")
    assert auth_warnings(text) == []


def test_nobody_accepted_is_warned() -> None:
    text = BASE + "ocpp: {authorization: {local_list: [{id_tag: X1, status: Blocked}]}}\n"
    (warning,) = auth_warnings(text)
    assert "no idTag is accepted" in warning.message


def test_accept_all_with_a_list_is_warned() -> None:
    text = BASE + "ocpp: {authorization: {accept_all: true, local_list: [{id_tag: X1, status: Blocked}]}}\n"
    (warning,) = auth_warnings(text)
    assert warning.field == "ocpp.authorization.local_list" and "not consulted" in warning.message


def test_a_tag_too_long_for_16_is_warned() -> None:
    long_tag = "A" * 21
    text = BASE + f"ocpp: {{authorization: {{local_list: [{{id_tag: {long_tag}}}]}}}}\n"
    (warning,) = auth_warnings(text)
    assert warning.field == "ocpp.authorization.local_list[0].id_tag" and "1.6" in warning.message
    assert auth_warnings(text.replace('"1.6"', '"2.0.1"')) == []


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{local_list: [{id_tag: abc}, {id_tag: ABC}]}", "listed twice"),
        ("{local_list: [{id_tag: abc, expiry: '2027-01-01T00:00:00'}]}", "time zone"),
        (f"{{local_list: [{{id_tag: {'A' * 37}}}]}}", "at most 36"),
        ("{local_list: [{id_tag: abc, status: NoCredit}]}", "Accepted"),
        ("{unknown: Blocked}", "Invalid"),
        ("{offline_policy: cache}", "local_list"),
    ],
)
def test_bad_sections_are_errors(section: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_site_config(BASE + f"ocpp: {{authorization: {section}}}\n", "site.yaml")
    errors = [issue for issue in caught.value.issues if issue.severity == "error"]
    assert errors and message in errors[0].message, errors
    assert errors[0].field.startswith("ocpp.authorization"), errors


def test_expiry_with_a_zone_round_trips() -> None:
    for written in ("'2027-03-31T23:59:59+02:00'", "2027-03-31T21:59:59Z"):
        text = BASE + f"ocpp: {{authorization: {{local_list: [{{id_tag: V1, expiry: {written}}}]}}}}\n"
        section = parse_site_config(text).config.ocpp.authorization
        assert section is not None
        assert section.local_list[0].expiry == datetime(2027, 3, 31, 21, 59, 59, tzinfo=UTC)
    with pytest.raises(ConfigError, match="time zone"):
        parse_site_config(BASE + "ocpp: {authorization: {local_list: [{id_tag: V1, expiry: 2027-03-31}]}}\n")
