"""Handshake refusals and security profiles 1–3 (certificates made with the openssl CLI)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from charger_rig import rig, site_config, wait_for

from evdlm.core.types import ChargingCommand, CommandStatus
from evdlm.sim.fleet import SimFleet
from evdlm.sim.ocpp_client import StationSecurity

PASSWORD_ENV = "EVDLM_TEST_CP_PASSWORD"


def auth_config(profile: int = 1, **ocpp: object):  # type: ignore[no-untyped-def]
    return site_config(
        [
            {"id": "CP1", "ocpp_version": "1.6", "password": {"env": PASSWORD_ENV}},
            {"id": "CP2", "ocpp_version": "2.0.1", "password": {"env": PASSWORD_ENV}},
        ],
        ocpp={"security_profile": profile, **ocpp},
    )


async def test_basic_auth_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret-pass")
    config = auth_config()
    async with rig(config, security={"CP2": StationSecurity(password="wrong")}, wait=False) as r:
        await r.fleet.station("CP1").connected.wait()
        await wait_for(lambda: r.fleet.station("CP2").last_refusal == 401, "wrong password refused")
        assert r.central.online("CP1") and not r.central.online("CP2")
        url = f"ws://127.0.0.1:{r.central.port}"
        # An id the site does not know, and a charger speaking the other OCPP version.
        strangers = site_config(
            [
                {"id": "NOBODY", "ocpp_version": "1.6"},
                {"id": "CP1", "ocpp_version": "2.0.1", "password": {"env": PASSWORD_ENV}},
            ]
        )
        async with SimFleet(strangers, r.clock, url) as other:
            await wait_for(lambda: other.station("NOBODY").last_refusal == 404, "unknown id refused")
            await wait_for(lambda: other.station("CP1").last_refusal == 400, "wrong subprotocol refused")
        assert r.central.online("CP1")


def client_context(pki: Path, certificate: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if certificate is not None:
        context.load_cert_chain(pki / f"{certificate}.crt", pki / f"{certificate}.key")
    return context


async def test_tls_with_basic_auth(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret-pass")
    config = auth_config(2, cert_file=str(pki / "server.crt"), key_file=str(pki / "server.key"))
    security = {
        "CP1": StationSecurity(password="s3cret-pass", ssl_context=client_context(pki)),
        "CP2": StationSecurity(password="nope", ssl_context=client_context(pki)),
    }
    async with rig(config, security=security, scheme="wss", wait=False) as r:
        await r.fleet.station("CP1").connected.wait()
        await wait_for(lambda: r.central.ready("CP1"), "configured over TLS")
        assert (await r.central.apply([ChargingCommand("CP1", 1, 10, "A", 3)]))[0].status is CommandStatus.ACCEPTED
        await wait_for(lambda: r.fleet.station("CP2").last_refusal == 401, "wrong password refused over TLS")


async def test_mutual_tls(pki: Path) -> None:
    config = site_config(
        [{"id": "CP1", "ocpp_version": "1.6"}, {"id": "CP9", "ocpp_version": "1.6"}],
        ocpp={
            "security_profile": 3,
            "cert_file": str(pki / "server.crt"),
            "key_file": str(pki / "server.key"),
            "ca_file": str(pki / "ca.crt"),
        },
    )
    security = {
        "CP1": StationSecurity(ssl_context=client_context(pki, "CP1")),
        # CP9 connects with the certificate issued to CP1: valid chain, wrong identity.
        "CP9": StationSecurity(ssl_context=client_context(pki, "CP1")),
    }
    async with rig(config, security=security, scheme="wss", wait=False) as r:
        await r.fleet.station("CP1").connected.wait()
        await wait_for(lambda: r.fleet.station("CP9").last_refusal == 403, "certificate of another charger refused")
        assert r.central.online("CP1") and not r.central.online("CP9")
