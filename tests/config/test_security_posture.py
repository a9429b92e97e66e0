"""`validate` and `run` say what the config leaves open: the MQTT broker, the DR channel, OCPP.

Issue 13: on the default broker an unauthenticated client could inject and cancel DR events,
force FAILSAFE with a forged bridge/status, take over the gateway's client id and overwrite
dlm/<site>/status, and nothing warned. evdlm cannot see what the broker enforces, so these are
warnings about what the config makes possible, located like every other finding.
"""

from __future__ import annotations

import pytest

from evdlm.cli import main
from evdlm.config import ConfigError, ConfigIssue, parse_site_config
from evdlm.config.semantic import is_loopback
from evdlm.data import DEMO_SITE_PATH

BASE = """\
site: {id: s1}
grid: {import_limit_kw: 50, phase_current_limit_a: 80, meter: gm}
circuits: [{id: main, phase_current_limit_a: 80}]
chargers: [{id: CP1, ocpp_version: "1.6", circuit: main}]
modbus_links: [{name: lan, type: tcp, host: 127.0.0.1}]
devices: [{name: gm, role: grid_meter, modbus: {link: lan, profile: sunspec}}]
control: {fallback_import_limit_kw: 20}
"""
DR = "demand_response: {programs: [{id: dso}]%s}\n"
SECURE_MQTT = "mqtt: {host: broker.example, port: 8883, tls: true, username: evdlm-s1, password: {env: S1_MQTT_PW}}\n"


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S1_MQTT_PW", "not-a-real-password")


def warnings(text: str) -> list[ConfigIssue]:
    # Free vending (no ocpp.authorization) is warned about too; tests/config/test_authorization.py has it.
    return [w for w in parse_site_config(text, "site.yaml").warnings if w.field != "ocpp.authorization"]


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_no_broker_and_a_loopback_charger_listener_say_nothing() -> None:
    assert warnings(BASE) == []


def test_a_secure_site_says_nothing() -> None:
    text = BASE + SECURE_MQTT + DR % ", publishers: [bridge-s1]" + "ocpp: {host: 0.0.0.0, security_profile: 2, "
    text += "cert_file: gw.crt, key_file: gw.key}\n"
    text = text.replace("circuit: main}", "circuit: main, password: {env: S1_MQTT_PW}}")
    assert warnings(text) == []


def test_a_loopback_lab_broker_is_said_to_be_lab_only_once() -> None:
    text = BASE + "mqtt: {host: 127.0.0.1, port: 1883}\n" + DR % ""
    (warning,) = warnings(text)
    assert (warning.field, warning.line) == ("mqtt.username", line_of(text, "mqtt:"))
    assert str(warning).startswith(f"site.yaml:{warning.line}:1: warning: mqtt.username: no username")
    message = warning.message
    assert "lab only" in message and "every process on this machine" in message
    # Every harm the tester showed is named, so the operator knows what "anonymous" costs.
    for harm in ("inject and cancel DR events", "dr/s1/bridge/status", "client id", "dlm/s1/status"):
        assert harm in message
    assert "deploy/mosquitto/" in message


def test_the_demo_warns_once_and_truly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DEMO_SITE_PATH)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning:") == 1 and captured.err.count("lab only") == 1
    assert "mqtt.username" in captured.err and "1 warning" in captured.out


def test_an_anonymous_remote_broker_is_open_and_in_clear_text() -> None:
    text = BASE + "mqtt: {host: 10.0.0.5}\n" + DR % ""
    by_field = {w.field: w for w in warnings(text)}
    assert set(by_field) == {"mqtt.username", "mqtt.tls"}
    assert "any client that reaches 10.0.0.5:1883" in by_field["mqtt.username"].message
    assert "lab only" not in by_field["mqtt.username"].message
    assert "readable and changeable" in by_field["mqtt.tls"].message


def test_mqtt_devices_are_named_among_what_an_anonymous_client_can_forge() -> None:
    text = (
        BASE.replace("devices: [", "devices: [{name: pv, role: pv, mqtt: {topic: site/pv}}, ")
        + "mqtt: {host: 127.0.0.1}\n"
    )
    (warning,) = warnings(text)
    assert "false readings to the MQTT devices" in warning.message
    assert "DR events" not in warning.message  # no DR configured: not claimed


def test_a_client_certificate_is_authentication_too() -> None:
    text = BASE + "mqtt: {host: broker.example, port: 8883, tls: true, cert_file: gw.pem}\n" + DR % ""
    (warning,) = warnings(text)
    assert warning.field == "demand_response.publishers"  # not "anonymous": the CN is its user name


def test_a_password_over_plain_text_is_named() -> None:
    text = BASE + SECURE_MQTT.replace("tls: true", "tls: false") + DR % ", publishers: [bridge-s1]"
    (warning,) = warnings(text)
    assert warning.field == "mqtt.tls"
    assert "evdlm's password" in warning.message and "broker.example:8883" in warning.message


@pytest.mark.parametrize("host", ["localhost", "127.0.0.2", "::1"])
def test_loopback_broker_without_tls_is_fine(host: str) -> None:
    text = BASE + SECURE_MQTT.replace("broker.example", f"'{host}'").replace("tls: true", "tls: false")
    text += DR % ", publishers: [bridge-s1]"
    assert warnings(text) == []


def test_dr_without_named_publishers_is_warned_where_it_is_configured() -> None:
    text = BASE + SECURE_MQTT + DR % ""
    (warning,) = warnings(text)
    assert (warning.field, warning.line) == ("demand_response.publishers", line_of(text, "demand_response:"))
    assert "dr/s1/events/#" in warning.message and "broker ACL" in warning.message


def test_disabled_dr_needs_no_publishers() -> None:
    assert warnings(BASE + SECURE_MQTT + "demand_response: {enabled: false}\n") == []


def test_evdlm_itself_as_a_dr_publisher_is_warned() -> None:
    text = BASE + SECURE_MQTT + DR % ", publishers: [bridge-s1, evdlm-s1]"
    (warning,) = warnings(text)
    assert warning.field == "demand_response.publishers[1]"
    assert "evdlm's own broker user" in warning.message


@pytest.mark.parametrize("name", ["'bridge s1'", "'bridge:s1'", "''"])
def test_a_publisher_name_the_broker_files_cannot_hold_is_an_error(name: str) -> None:
    text = BASE + SECURE_MQTT + DR % f", publishers: [{name}]"
    with pytest.raises(ConfigError) as caught:
        parse_site_config(text, "site.yaml")
    (issue,) = caught.value.issues
    assert issue.field == "demand_response.publishers[0]"
    assert issue.line == line_of(text, "demand_response:")


@pytest.mark.parametrize(
    ("ocpp", "warned"),
    [
        ("{host: 0.0.0.0}", True),
        ("{host: '::', port: 9100}", True),
        ("{host: 192.168.10.2, security_profile: 0}", True),
        ("{host: 127.0.0.1}", False),
        ("{host: localhost}", False),
        ("{host: 0.0.0.0, security_profile: 1}", False),
    ],
)
def test_an_open_charger_listener_is_warned(ocpp: str, warned: bool) -> None:
    text = BASE.replace("circuit: main}", "circuit: main, password: {env: S1_MQTT_PW}}") + f"ocpp: {ocpp}\n"
    found = [w for w in warnings(text) if w.field == "ocpp.security_profile"]
    assert bool(found) is warned, found
    if warned:
        assert found[0].line == line_of(text, "ocpp:")
        assert "without authentication" in found[0].message and "any charger id" in found[0].message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("gw.localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("broker.example", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
