"""A real MQTT broker on 127.0.0.1 for tests and the demo: mosquitto if installed, else amqtt.

``async with mqtt_broker() as (host, port):`` starts one on an ephemeral port and stops it on
exit. :class:`LocalBroker` also offers ``stop()``/``start()`` on the same port, to test
reconnects, and with mosquitto ``freeze()``/``thaw()`` (SIGSTOP/SIGCONT: the TCP connections
stay open and nothing answers, as with a hung broker) and a TLS listener (:class:`BrokerTls`).
mosquitto speaks MQTT 5; the embedded amqtt broker only 3.1.1 (:attr:`LocalBroker.mqtt5` says
which).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from evdlm.core.lifetime import StartStop

START_TIMEOUT_S = 10.0

BrokerKind = Literal["auto", "mosquitto", "amqtt"]


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener (mosquitto only): the server's certificate and, to check clients, a CA."""

    ca_file: str
    cert_file: str
    key_file: str
    require_certificate: bool = False


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just handed out for ``host`` (mosquitto cannot bind port 0 and report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _wait_listening(host: str, port: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


class LocalBroker(StartStop):
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        kind: BrokerKind = "auto",
        tls: BrokerTls | None = None,
        options: Sequence[str] = (),
    ) -> None:
        """``options``: extra mosquitto.conf lines (``max_queued_messages 100000``, say)."""
        if kind == "auto":
            kind = "mosquitto" if shutil.which("mosquitto") else "amqtt"
        self.kind: Literal["mosquitto", "amqtt"] = "mosquitto" if kind == "mosquitto" else "amqtt"
        if tls is not None and self.kind != "mosquitto":
            raise RuntimeError("a TLS listener needs mosquitto")
        self.host = host
        self.port = port or free_port(host)
        self.tls = tls
        self.options = tuple(options)
        if self.options and self.kind != "mosquitto":
            raise RuntimeError("broker options need mosquitto")
        self.frozen = False
        self._process: asyncio.subprocess.Process | None = None
        self._amqtt: Any = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def mqtt5(self) -> bool:
        return self.kind == "mosquitto"

    @property
    def running(self) -> bool:
        return self._process is not None or self._amqtt is not None

    @property
    def pid(self) -> int | None:
        """The mosquitto process id (None for the embedded broker or when stopped)."""
        return self._process.pid if self._process is not None else None

    def freeze(self) -> None:
        """Stop the broker process (SIGSTOP): connections stay open, nothing is answered."""
        if self._process is None:
            raise RuntimeError("freeze() needs a running mosquitto")
        os.kill(self._process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """Let a frozen broker run on (SIGCONT)."""
        if self._process is not None and self.frozen:
            os.kill(self._process.pid, signal.SIGCONT)
        self.frozen = False

    async def start(self) -> None:
        if self.running:
            return
        if self.kind == "mosquitto":
            await self._start_mosquitto()
        else:
            await self._start_amqtt()
        await _wait_listening(self.host, self.port, START_TIMEOUT_S)

    async def _start_mosquitto(self) -> None:
        executable = shutil.which("mosquitto")
        if executable is None:
            raise RuntimeError("mosquitto is not installed")
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="evdlm-mosquitto-")
        conf = Path(self._dir.name) / "mosquitto.conf"
        lines = [f"listener {self.port} {self.host}", "allow_anonymous true", "persistence false", "log_dest none"]
        lines += self.options
        if self.tls is not None:
            if os.geteuid() == 0:
                # Started as root, mosquitto becomes user "mosquitto", who cannot read a test's
                # private key in a private temporary folder.
                lines.append("user root")
            lines += [f"cafile {self.tls.ca_file}", f"certfile {self.tls.cert_file}", f"keyfile {self.tls.key_file}"]
            if self.tls.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._process = await asyncio.create_subprocess_exec(
            executable, "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )

    async def _start_amqtt(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        await broker.start()
        self._amqtt = broker

    async def stop(self) -> None:
        if self._process is not None:
            self.thaw()  # a stopped process would not act on SIGTERM
            process, self._process = self._process, None
            process.terminate()
            try:
                async with asyncio.timeout(5.0):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._amqtt is not None:
            broker, self._amqtt = self._amqtt, None
            await broker.shutdown()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


@contextlib.asynccontextmanager
async def mqtt_broker(*, kind: BrokerKind = "auto") -> AsyncIterator[tuple[str, int]]:
    """Start a broker on 127.0.0.1 with an ephemeral port; yields ``(host, port)``."""
    async with LocalBroker(kind=kind) as broker:
        yield broker.host, broker.port
