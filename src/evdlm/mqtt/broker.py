"""A real MQTT broker on 127.0.0.1 for tests and the demo: mosquitto if installed, else amqtt.

``async with mqtt_broker() as (host, port):`` starts one on an ephemeral port and stops it on
exit. :class:`LocalBroker` also offers ``stop()``/``start()`` on the same port, to test
reconnects. mosquitto speaks MQTT 5; the embedded amqtt broker only 3.1.1
(:attr:`LocalBroker.mqtt5` says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from evdlm.core.lifetime import StartStop

START_TIMEOUT_S = 10.0

BrokerKind = Literal["auto", "mosquitto", "amqtt"]


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
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, kind: BrokerKind = "auto") -> None:
        if kind == "auto":
            kind = "mosquitto" if shutil.which("mosquitto") else "amqtt"
        self.kind: Literal["mosquitto", "amqtt"] = "mosquitto" if kind == "mosquitto" else "amqtt"
        self.host = host
        self.port = port or free_port(host)
        self._process: asyncio.subprocess.Process | None = None
        self._amqtt: Any = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def mqtt5(self) -> bool:
        return self.kind == "mosquitto"

    @property
    def running(self) -> bool:
        return self._process is not None or self._amqtt is not None

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
        conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\nlog_dest none\n",
            encoding="utf-8",
        )
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
