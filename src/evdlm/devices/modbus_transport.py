"""The one module that imports pymodbus: client transports per link, and a loopback server adapter.

pymodbus changes its API inside 3.x (``device_id=`` replaced ``slave=``, ``count=`` became
keyword-only, the datastore moved to ``pymodbus.simulator``), so everything it touches lives
here and everything else talks to :class:`ModbusTransport` and :class:`RegisterServer`.
Exceptions are translated at this boundary into :mod:`evdlm.devices.errors`.

A transport serves one link (a TCP gateway or one RS-485 line): several unit ids share it and
their requests are serialized with an :class:`asyncio.Lock`, because a Modbus line carries one
transaction at a time and many TCP gateways mishandle concurrent requests. A request that
gets no answer in time (or that the poll scheduler gives up, see
:attr:`ModbusTransport.abandonable`) closes the connection, so that its late answer can never
be read as another request's.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException, NoSuchIdException
from pymodbus.server import ModbusTcpServer

from evdlm.config.models import ModbusRtuLink, ModbusRtuOverTcpLink, ModbusTcpLink
from evdlm.core.clock import Clock
from evdlm.core.lifetime import StartStop
from evdlm.devices.errors import (
    BadResponseError,
    DeviceTimeoutError,
    ModbusExceptionResponse,
    TransportError,
)

ModbusLinkConfig = ModbusTcpLink | ModbusRtuOverTcpLink | ModbusRtuLink

READ_HOLDING = 3
READ_INPUT = 4
MAX_REGISTER_ADDRESS = 0xFFFF

logger = logging.getLogger("evdlm.devices.modbus")
# pymodbus logs every failed connect and timeout at WARNING; this module reports them once, as
# DeviceErrors that the hub logs on quality transitions, so its own lines are only noise.
logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library swallowed.

    On Python 3.11 ``asyncio.wait_for`` (which pymodbus awaits every response with) drops a
    cancellation that arrives together with the response; the task would then run on with
    ``cancelling() > 0`` and its TaskGroup would wait for it forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def backoff_delay_s(failures: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with "equal jitter".

    Parameters
    ----------
    failures : int
        Consecutive failed connection attempts (>= 1).
    initial_s, max_s : float
        First and largest nominal delay, in seconds.
    rng : random.Random
        Jitter source (injected so tests are repeatable).

    Returns
    -------
    float
        A delay in ``[d/2, d]`` where ``d = min(max_s, initial_s * 2**(failures-1))``; the jitter
        keeps many gateways restarting together from reconnecting in lockstep.
    """
    nominal_s = min(max_s, initial_s * 2.0 ** max(0, failures - 1))
    return nominal_s / 2.0 + rng.uniform(0.0, nominal_s / 2.0)


class ModbusTransport:
    """One shared, serialized, self-reconnecting client for one configured link.

    ``read_registers``/``write_registers`` raise only :class:`~evdlm.devices.errors.DeviceError`
    subclasses. Connection attempts are lazy (made by the next request) and spaced by
    :func:`backoff_delay_s`; while backing off, requests fail at once with
    :class:`~evdlm.devices.errors.TransportError` rather than waiting, so a dead gateway never
    holds up a poll cycle.
    """

    def __init__(
        self,
        link: ModbusLinkConfig,
        clock: Clock,
        *,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.link = link
        self.name = link.name
        self.max_registers_per_request = link.max_registers_per_request
        self._clock = clock
        self._lock = asyncio.Lock()
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._client: Any = None
        self._failures = 0
        self._next_attempt_at_s = float("-inf")
        self.requests = 0  # counters for benchmarks and metrics
        self.errors = 0
        self.connects = 0

    def _make_client(self) -> Any:
        link = self.link
        # retries=0 and reconnect_delay=0: this class owns retry and reconnect policy (with
        # jittered backoff and the injected clock); pymodbus's own loops would hide failures.
        if isinstance(link, ModbusRtuLink):
            return AsyncModbusSerialClient(
                link.serial_port,
                framer=FramerType.RTU,
                baudrate=link.baudrate,
                parity=link.parity,
                stopbits=link.stopbits,
                bytesize=link.bytesize,
                timeout=link.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        framer = FramerType.RTU if isinstance(link, ModbusRtuOverTcpLink) else FramerType.SOCKET
        return AsyncModbusTcpClient(
            link.host, port=link.port, framer=framer, timeout=link.timeout_s, retries=0, reconnect_delay=0
        )

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    @property
    def abandonable(self) -> bool:
        """Whether giving a request up before its timeout frees the link for the other units.

        On Modbus TCP it does, for the price of a reconnect (one round trip on a LAN): the
        connection is closed, the next request opens a new one. On a serial line it does not:
        the device still answers on the wire whatever the client does, into the next request.
        Behind an RTU-over-TCP gateway neither: its serial side stays busy with the abandoned
        request until its own timeout, and the next request waits there instead of here.
        """
        return isinstance(self.link, ModbusTcpLink)

    async def __aenter__(self) -> ModbusTransport:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _ensure_connected(self) -> Any:
        if self.connected:
            return self._client
        now_s = self._clock.now_s()
        if now_s < self._next_attempt_at_s:
            raise TransportError(
                f"link {self.name}: not connected (next attempt in {self._next_attempt_at_s - now_s:.1f} s)"
            )
        self.close()
        client = self._make_client()
        try:
            async with asyncio.timeout(self.link.timeout_s + 1.0):
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            ok = False
            logger.debug("link %s: connect raised %r", self.name, exc)
        except BaseException:
            # Cancelled mid-connect (the poll was abandoned, the hub is closing): no half-open client.
            client.close()
            raise
        if not ok:
            client.close()
            self._failures += 1
            delay_s = backoff_delay_s(self._failures, self._backoff_initial_s, self._backoff_max_s, self._rng)
            self._next_attempt_at_s = self._clock.now_s() + delay_s
            raise TransportError(
                f"link {self.name}: cannot connect (attempt {self._failures}, retry in {delay_s:.1f} s)"
            )
        if self._failures:
            logger.info("link %s: connected after %d failed attempts", self.name, self._failures)
        self._failures = 0
        self._client = client
        self.connects += 1
        return client

    async def _call(self, what: str, call: Callable[[Any], Awaitable[Any]]) -> Any:
        async with self._lock:
            client = await self._ensure_connected()
            self.requests += 1
            try:
                # pymodbus enforces timeout_s itself; the outer bound is a belt for its own bugs.
                async with asyncio.timeout(self.link.timeout_s * 2 + 1.0):
                    response = await call(client)
                raise_if_cancelling()
            except (ModbusIOException, TimeoutError) as exc:
                self.errors += 1
                # Drop the connection: a late answer would otherwise be read as the answer to the
                # next request. RTU frames carry no transaction id to tell them apart; Modbus TCP
                # frames do, but a server that handles requests concurrently may stamp its late
                # answer with the id of the latest request on the connection (pymodbus's own
                # server does: tests/devices/test_link_scheduling.py), and many TCP gateways are
                # no better. A reconnect costs one round trip; another unit's values, nothing less
                # than a wrong reading.
                self.close()
                raise DeviceTimeoutError(
                    f"link {self.name}: {what}: no response within {self.link.timeout_s:g} s"
                ) from exc
            except (ConnectionException, ModbusException, OSError) as exc:
                self.errors += 1
                self.close()
                raise TransportError(f"link {self.name}: {what}: {exc}") from exc
            except asyncio.CancelledError:
                # Abandoned while out (the poll scheduler gave the link to others, or the hub is
                # closing): its answer may still come, so as after a timeout.
                self.close()
                raise
            except Exception as exc:
                # Whatever else pymodbus raises (ValueError for an address it will not encode,
                # struct.error for a frame shorter than its byte count, ...) is reported as a bad
                # answer from this device, never as an unexpected error with a traceback on every
                # poll. After an undecodable frame the stream may be out of step: start afresh.
                self.errors += 1
                self.close()
                logger.debug("link %s: %s: the Modbus library raised", self.name, what, exc_info=True)
                raise BadResponseError(f"link {self.name}: {what}: error in the Modbus library: {exc!r}") from exc
            if response.isError():
                self.errors += 1
                raise ModbusExceptionResponse(
                    int(getattr(response, "function_code", 0)) & 0x7F, int(getattr(response, "exception_code", 0))
                )
            return response

    async def read_registers(self, unit_id: int, function_code: int, address: int, count: int) -> list[int]:
        """Read ``count`` 16-bit registers with FC 3 (holding) or FC 4 (input)."""
        if function_code not in (READ_HOLDING, READ_INPUT):
            raise ValueError(f"unsupported read function code {function_code}")
        if not 1 <= count <= self.max_registers_per_request:
            raise ValueError(f"count {count} outside 1..{self.max_registers_per_request} for link {self.name}")
        if not 0 <= address <= MAX_REGISTER_ADDRESS - count + 1:
            # Addresses come from the device itself (a SunSpec chain's lengths), so this is the
            # device's fault, reported like any other bad answer.
            raise BadResponseError(
                f"link {self.name}: unit {unit_id}: registers {address}..{address + count - 1} "
                f"are outside the Modbus address space 0..{MAX_REGISTER_ADDRESS}"
            )

        async def call(client: Any) -> Any:
            method = client.read_holding_registers if function_code == READ_HOLDING else client.read_input_registers
            return await method(address, count=count, device_id=unit_id)

        response = await self._call(f"unit {unit_id} FC{function_code} @{address}+{count}", call)
        registers = list(response.registers)
        if len(registers) != count:
            raise BadResponseError(f"link {self.name}: asked {count} registers at {address}, got {len(registers)}")
        return registers

    async def write_registers(self, unit_id: int, address: int, values: Sequence[int]) -> None:
        """Write holding registers with FC 16."""

        async def call(client: Any) -> Any:
            return await client.write_registers(address, list(values), device_id=unit_id)

        await self._call(f"unit {unit_id} FC16 @{address}+{len(values)}", call)


# ---------------------------------------------------------------- loopback server (simulators)

# What a register handler answers: registers (reads) or [] (writes), an exception code, or
# None to stay silent (the client times out).
ServerReply = list[int] | int | None
ReadHandler = Callable[[int, int, int, int], Awaitable[ServerReply]]
WriteHandler = Callable[[int, int, list[int]], Awaitable[ServerReply]]

ILLEGAL_ADDRESS = int(ExcCodes.ILLEGAL_ADDRESS)
DEVICE_FAILURE = int(ExcCodes.DEVICE_FAILURE)


class _HandlerContext(ModbusServerContext):  # type: ignore[misc]
    """A server context that asks Python handlers instead of a static datastore.

    pymodbus uses a ``ModbusServerContext`` with ``old_simulator`` set as is, calling
    ``async_getValues``/``async_setValues`` per request; that is the hook that lets simulated
    values follow the simulation and lets the fault injector answer late, wrong or not at all.
    """

    def __init__(self, unit_ids: Sequence[int], read: ReadHandler, write: WriteHandler) -> None:
        # The base initializer only logs a deprecation warning and wraps static blocks.
        self.old_simulator = True
        self.simdevices = []
        self._unit_ids = list(unit_ids)
        self._read = read
        self._write = write

    def device_ids(self) -> list[int]:
        return list(self._unit_ids)

    @staticmethod
    def _answer(reply: ServerReply) -> Any:
        if reply is None:
            # With ignore_missing_devices the server sends nothing: a silent device.
            raise NoSuchIdException("silent")
        if isinstance(reply, int):
            return ExcCodes(reply)
        return reply

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> Any:
        if device_id not in self._unit_ids:
            raise NoSuchIdException(f"no unit {device_id}")
        return self._answer(await self._read(device_id, func_code, address, count))

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: Any) -> Any:
        if device_id not in self._unit_ids:
            raise NoSuchIdException(f"no unit {device_id}")
        reply = self._answer(await self._write(device_id, address, [int(value) for value in values]))
        return None if isinstance(reply, list) else reply


class RegisterServer(StartStop):
    """A Modbus TCP (or RTU-over-TCP) server on loopback answering from Python handlers.

    ``port=0`` binds an ephemeral port; :attr:`port` reads the bound one back.
    ``async with`` starts and stops it; :meth:`stop` / :meth:`start` simulate a device that goes
    down and comes back on the same port.
    """

    def __init__(
        self,
        unit_ids: Sequence[int],
        read: ReadHandler,
        write: WriteHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rtu_framing: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self._context = _HandlerContext(unit_ids, read, write)
        self._framer = FramerType.RTU if rtu_framing else FramerType.SOCKET
        self._server: Any = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        server = ModbusTcpServer(
            self._context, framer=self._framer, address=(self.host, self.port), ignore_missing_devices=True
        )
        await server.serve_forever(background=True)
        listener: Any = server.transport  # an asyncio.Server once listening
        self.port = int(listener.sockets[0].getsockname()[1])
        self._server = server

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        # Close the live connections too, or clients would keep talking to a "stopped" device.
        for connection in list(server.active_connections.values()):
            connection.close()
        await server.shutdown()
