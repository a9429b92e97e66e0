"""Issue 16: ocpp.mode local_controller — what validate says of the link to the CSMS."""

from __future__ import annotations

import pytest

from evdlm.config import ConfigError, parse_site_config

BASE = """\
site: {id: s1}
grid: {import_limit_kw: 50, phase_current_limit_a: 80}
circuits: [{id: main, phase_current_limit_a: 80}]
chargers: [{id: CP1, ocpp_version: "1.6", circuit: main}]
control: {fallback_import_limit_kw: 20}
"""


def ocpp_warnings(upstream: str, extra: str = "") -> dict[str, str]:
    text = BASE + f"ocpp:\n  mode: local_controller\n  upstream: {upstream}\n{extra}"
    return {w.field: w.message for w in parse_site_config(text, "site.yaml").warnings if w.field.startswith("ocpp")}


def test_clear_text_to_a_remote_csms_and_no_credentials_are_warned() -> None:
    warnings = ocpp_warnings("{url: 'ws://csms.example.com/ocpp'}")
    assert "travel in clear" in warnings["ocpp.upstream.url"]
    assert "cannot authenticate" in warnings["ocpp.upstream"]
    # Without an authorization section the offline answer is what is at stake, not free vending.
    assert warnings["ocpp.authorization"].startswith("while the CSMS is unreachable every idTag is accepted")


def test_tls_with_a_password_on_a_loopback_csms_is_quiet() -> None:
    warnings = ocpp_warnings(
        "{url: 'wss://csms.example.com/ocpp', password: {env: CSMS_PASSWORD}}",
        "  authorization: {offline_policy: reject_all, local_list: [{id_tag: FLEET1}]}\n",
    )
    assert not any(field.startswith("ocpp.upstream") and "clear" in message for field, message in warnings.items())
    assert "ocpp.upstream" not in warnings and "ocpp.authorization" not in warnings
    assert "ocpp.upstream.url" not in ocpp_warnings("{url: 'ws://127.0.0.1:9100'}")  # loopback: no one to overhear


def test_local_controller_needs_an_upstream_and_a_websocket_url() -> None:
    with pytest.raises(ConfigError, match="upstream"):
        parse_site_config(BASE + "ocpp: {mode: local_controller}\n", "site.yaml")
    with pytest.raises(ConfigError, match="ws://"):
        parse_site_config(BASE + "ocpp: {mode: local_controller, upstream: {url: 'http://csms'}}\n", "site.yaml")
