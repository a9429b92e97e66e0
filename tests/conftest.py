"""Shared fixtures. Keep this small: module-specific fixtures live next to their tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from evdlm.sim.broker import mqtt_broker as start_mqtt_broker


@pytest.fixture
async def mqtt_broker() -> AsyncIterator[tuple[str, int]]:
    """A real MQTT broker on 127.0.0.1 (mosquitto, else embedded amqtt): ``(host, port)``."""
    async with start_mqtt_broker() as address:
        yield address


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _key_and_certificate(cwd: Path, name: str, common_name: str, ca: str | None, extension: str | None = None) -> None:
    """``name``.key and ``name``.crt: self-signed when ``ca`` is None, else signed by ``ca``."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key"]
    if ca is None:
        _openssl("req", "-x509", *key, "-out", f"{name}.crt", "-days", "1", "-subj", f"/CN={common_name}", cwd=cwd)
        return
    _openssl("req", *key, "-out", f"{name}.csr", "-subj", f"/CN={common_name}", cwd=cwd)
    args = ["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial"]
    args += ["-out", f"{name}.crt", "-days", "1"]
    if extension is not None:
        (cwd / f"{name}.ext").write_text(extension)
        args += ["-extfile", f"{name}.ext"]
    _openssl(*args, cwd=cwd)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway PKI in one folder: ``ca`` and an unrelated ``other-ca``, a ``server``
    certificate for 127.0.0.1, and client certificates ``CP1`` (a charger) and ``gateway``
    (evdlm at the broker), each as ``<name>.crt`` + ``<name>.key``."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    cwd = tmp_path_factory.mktemp("pki")
    _key_and_certificate(cwd, "ca", "evdlm test CA", None)
    _key_and_certificate(cwd, "other-ca", "other-ca", None)
    _key_and_certificate(cwd, "server", "127.0.0.1", "ca", "subjectAltName=IP:127.0.0.1\n")
    _key_and_certificate(cwd, "CP1", "CP1", "ca")
    _key_and_certificate(cwd, "gateway", "evdlm-gateway", "ca")
    return cwd
