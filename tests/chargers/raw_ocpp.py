"""A scripted charge point on a raw websocket, for tests that need exact frames and timing:
it sends what the test says, answers the central system's calls with per-action handlers
(which may hold an answer back), and records every frame it receives."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from evdlm.chargers.ocpp.server import OcppCentralSystem
from evdlm.config.models import SiteConfig
from evdlm.core.clock import Clock, FakeClock

Answer = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]

TIMESTAMP = "2026-11-21T08:00:00Z"
BOOT_16 = {"chargePointVendor": "Acme", "chargePointModel": "Raw"}
BOOT_201 = {"reason": "PowerUp", "chargingStation": {"model": "Raw", "vendorName": "Acme"}}


def _get_variables(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "getVariableResult": [
            {"attributeStatus": "UnknownVariable", "component": item["component"], "variable": item["variable"]}
            for item in payload["getVariableData"]
        ]
    }


def _set_variables(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "setVariableResult": [
            {"attributeStatus": "Accepted", "component": item["component"], "variable": item["variable"]}
            for item in payload["setVariableData"]
        ]
    }


DEFAULT_ANSWERS: dict[str, dict[str, Answer]] = {
    "1.6": {
        "GetConfiguration": lambda _: {"configurationKey": [], "unknownKey": []},
        "ChangeConfiguration": lambda _: {"status": "Accepted"},
        "SetChargingProfile": lambda _: {"status": "Accepted"},
        "ClearChargingProfile": lambda _: {"status": "Accepted"},
        "TriggerMessage": lambda _: {"status": "Accepted"},
        "ChangeAvailability": lambda _: {"status": "Accepted"},
        "RemoteStopTransaction": lambda _: {"status": "Accepted"},
    },
    "2.0.1": {
        "GetVariables": _get_variables,
        "SetVariables": _set_variables,
        "SetChargingProfile": lambda _: {"status": "Accepted"},
        "ClearChargingProfile": lambda _: {"status": "Accepted"},
        "TriggerMessage": lambda _: {"status": "Accepted"},
        "ChangeAvailability": lambda _: {"status": "Accepted"},
        "RequestStopTransaction": lambda _: {"status": "Accepted"},
    },
}


class RawCharger:
    """One scripted charge point; use :func:`raw_charger`."""

    def __init__(self, ws: ClientConnection, version: str, answers: dict[str, Answer]) -> None:
        self.ws = ws
        self.version = version
        self.answers = {**DEFAULT_ANSWERS[version], **answers}
        self.calls: list[tuple[str, dict[str, Any]]] = []  # the central system's CALLs, in order
        self._pending: dict[str, asyncio.Future[list[Any]]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [payload for name, payload in self.calls if name == action]

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        """Send a CALL and return the whole answer frame (CALLRESULT or CALLERROR)."""
        unique_id = f"cp-{next(self._ids)}"
        return await self.send_raw(json.dumps([2, unique_id, action, payload]), unique_id)

    async def send_raw(self, frame: str, unique_id: str, timeout_s: float = 3.0) -> list[Any]:
        """Send any text and return the answer frame for ``unique_id``."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending[unique_id] = future
        await self.ws.send(frame)
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        finally:
            self._pending.pop(unique_id, None)

    async def boot(self) -> None:
        answer = await self.call("BootNotification", BOOT_16 if self.version == "1.6" else BOOT_201)
        assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame[0] == 2:
                    self.calls.append((frame[2], frame[3]))
                    task = asyncio.create_task(self._answer(frame))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    future = self._pending.get(frame[1])
                    if future is not None and not future.done():
                        future.set_result(frame)
        except ConnectionClosed:
            pass

    async def _answer(self, frame: list[Any]) -> None:
        _, unique_id, action, payload = frame
        handler = self.answers.get(action)
        if handler is None:
            await self.ws.send(json.dumps([4, unique_id, "NotImplemented", "", {}]))
            return
        result = handler(payload)
        if inspect.isawaitable(result):
            result = await result
        with suppress(ConnectionClosed):
            await self.ws.send(json.dumps([3, unique_id, result]))


@asynccontextmanager
async def raw_charger(
    port: int,
    charger_id: str,
    version: str,
    *,
    answers: dict[str, Answer] | None = None,
    **connect_kwargs: Any,
) -> AsyncIterator[RawCharger]:
    subprotocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    async with connect(
        f"ws://127.0.0.1:{port}/{charger_id}",
        subprotocols=[subprotocol],  # type: ignore[list-item]
        **connect_kwargs,
    ) as ws:
        charger = RawCharger(ws, version, answers or {})
        reader = asyncio.create_task(charger.read())
        try:
            yield charger
        finally:
            reader.cancel()


@asynccontextmanager
async def central_system(config: SiteConfig, clock: Clock | None = None) -> AsyncIterator[OcppCentralSystem]:
    """The real central system on 127.0.0.1 (a port of its own), without a simulated fleet."""
    async with OcppCentralSystem(config, clock or FakeClock()) as central:
        yield central
