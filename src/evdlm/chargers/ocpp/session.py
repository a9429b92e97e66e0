"""What the 1.6 and 2.0.1 server sessions share: exception translation, bad-frame answers,
a sequential job queue for boot-time configuration, housekeeping and restrictions, and the
session lifetime. The versions add thin request builders (profiles, stop, availability)."""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import ocpp.messages
from ocpp.exceptions import FormatViolationError, OCPPError, PropertyConstraintViolationError
from ocpp.messages import CallError, MessageType, unpack
from ocpp.routing import after, on
from websockets.exceptions import ConnectionClosed

from evdlm.chargers.errors import ChargerCallError, ChargerError, ChargerOffline, ChargerTimeout
from evdlm.chargers.ocpp.link import ChargerLink, Job
from evdlm.chargers.planning import LinkSettings, ProfileSpec
from evdlm.core.clock import Clock

LOG = logging.getLogger("evdlm.chargers.ocpp")

# The library validates every frame against its JSON schema in the default thread pool. A
# small payload validates in well under a millisecond; the thread hop costs more than that,
# the GIL serialises it anyway, and 2000 validations per cycle at 1000 chargers would crowd
# out the controller's own blocking work in the shared pool. Validate inline instead
# (benchmarks/README.md, "OCPP scale": p50 0.9 s → 0.5 s for 1000 limits).
ocpp.messages.ASYNC_VALIDATION = False

F = TypeVar("F", bound=Callable[..., Any])

# A bounded queue: a charger flooding us with session ends must not grow memory without limit.
MAX_PENDING_JOBS = 64


def route(action: str) -> Callable[[F], F]:
    """``ocpp.routing.on`` with a type mypy can follow."""
    return cast(Callable[[F], F], on(action))


def after_route(action: str) -> Callable[[F], F]:
    return cast(Callable[[F], F], after(action))


class WireLogger(logging.LoggerAdapter[logging.Logger]):
    """The ``ocpp`` package logs every frame at INFO; at 1000 chargers that is the whole log.
    Frames go to ``evdlm.chargers.wire`` at DEBUG instead."""

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


WIRE_LOG = WireLogger(logging.getLogger("evdlm.chargers.wire"), {})


def unique_id_of(raw: str | bytes) -> str:
    """The message id of a frame we could not decode, or "-1" (OCPP-J 2.0.1 §4.2.3) when unreadable."""
    try:
        decoded = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "-1"
    if isinstance(decoded, list) and len(decoded) >= 2 and isinstance(decoded[1], str):
        return decoded[1]
    return "-1"


class SessionBase(ABC):
    """Mixed into the version's ``ocpp`` ChargePoint subclass (server side)."""

    version: str
    # Error codes renamed between versions (1.6 "FormationViolation" vs 2.0.1 "FormatViolation").
    error_code_map: ClassVar[dict[str, str]]
    unreadable_frame_code: str
    bad_structure_code: str

    unknown_message_type_code: str

    if TYPE_CHECKING:
        # Provided by the ocpp ChargePoint this is mixed into (declared for mypy only: at run
        # time these names must resolve to the library's methods).
        id: str
        _response_queue: asyncio.Queue[Any]

        async def _send(self, message: str) -> None: ...
        async def _handle_call(self, msg: Any) -> Any: ...
        async def call(
            self, payload: Any, suppress: bool = True, unique_id: Any = None, skip_schema_validation: bool = False
        ) -> Any: ...
        async def start(self) -> None: ...

    def _init_session(self, link: ChargerLink, settings: LinkSettings, clock: Clock) -> None:
        self.link = link
        self.settings = settings
        self.clock = clock
        self._jobs: asyncio.Queue[Job] = asyncio.Queue(maxsize=MAX_PENDING_JOBS)
        self._seen_call = False
        self._closed = asyncio.Event()

    # -------------------------------------------------------------- inbound frames

    async def route_message(self, raw_msg: str | bytes) -> None:
        """Like the library's, but a frame we cannot decode is answered with a CALLERROR
        (the library only logs it, leaving the charger waiting for its timeout)."""
        try:
            msg = unpack(raw_msg)
        except OCPPError as error:
            # unpack raises FormatViolation for invalid JSON, PropertyConstraintViolation for an
            # unknown MessageTypeId and ProtocolError for a frame of the wrong shape.
            if isinstance(error, FormatViolationError):
                code = self.unreadable_frame_code
            elif isinstance(error, PropertyConstraintViolationError):
                code = self.unknown_message_type_code
            else:
                code = self.bad_structure_code
            LOG.warning("%s: undecodable frame answered with %s: %s", self.id, code, _plain(error.details))
            await self._send(CallError(unique_id_of(raw_msg), code, error.description, _plain(error.details)).to_json())
            return
        if msg.message_type_id == MessageType.Call:
            if not self._seen_call:
                self._seen_call = True
                if msg.action != "BootNotification":
                    # Reconnected without rebooting (1.6 chargers rarely boot again): recover state.
                    self.enqueue(self.recover)
            try:
                await self._handle_call(msg)
            except OCPPError as error:
                code = self._error_code(error)
                LOG.warning("%s: %s refused with %s: %s", self.id, msg.action, code, error.details or error.description)
                await self._send(CallError(msg.unique_id, code, error.description, _plain(error.details)).to_json())
        elif msg.message_type_id in (MessageType.CallResult, MessageType.CallError):
            self._response_queue.put_nowait(msg)

    def _error_code(self, error: OCPPError) -> str:
        code = str(error.code)
        return self.error_code_map.get(code, code)

    # -------------------------------------------------------------- outbound calls

    async def call_checked(self, payload: Any, *, trusted_payload: bool = False) -> Any:
        """``call`` with ``suppress=False``, translating library and transport errors.

        Races the connection's end so a charger that disconnects mid-call is reported offline
        at once rather than after ``call_timeout_s``.
        """
        pending = asyncio.ensure_future(self.call(payload, suppress=False, skip_schema_validation=trusted_payload))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({pending, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not pending.done():
            pending.cancel()
            raise ChargerOffline(f"{self.id}: connection closed during {type(payload).__name__}")
        try:
            return pending.result()
        except OCPPError as error:
            raise ChargerCallError(str(error.code), str(error.description)) from error
        except TimeoutError as error:
            raise ChargerTimeout(f"{self.id}: no answer to {type(payload).__name__}") from error
        except ConnectionClosed as error:
            raise ChargerOffline(f"{self.id}: connection closed during {type(payload).__name__}") from error

    # -------------------------------------------------------------- jobs

    def enqueue(self, job: Job) -> bool:
        """Queue ``job`` behind the others; False (and a warning) when the queue is full."""
        try:
            self._jobs.put_nowait(job)
        except asyncio.QueueFull:
            LOG.warning("%s: housekeeping queue full, job dropped", self.id)
            return False
        return True

    async def _run_jobs(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except ChargerError as exc:
                LOG.warning("%s: %s", self.id, exc)
            except Exception:
                # A bug in one job must not take the charger's connection down with it.
                LOG.exception("%s: housekeeping job failed", self.id)

    async def run(self) -> None:
        """Serve the connection until it closes; jobs end with it."""
        self.link.attach(self)  # type: ignore[arg-type]
        try:
            async with asyncio.TaskGroup() as group:
                jobs = group.create_task(self._run_jobs(), name=f"ocpp-jobs-{self.id}")
                try:
                    await self.start()
                except ConnectionClosed:
                    pass
                finally:
                    self._closed.set()
                    jobs.cancel()
        finally:
            self.link.detach(self)  # type: ignore[arg-type]

    # This version's error code for a malformed message (1.6 FormationViolation, 2.0.1 FormatViolation).
    format_violation: ClassVar[str]

    async def setup(self) -> None:
        """After BootNotification: read smart-charging config, configure sampling, install the fail-safe.

        Ends ready whatever the charger refuses (a station without smart charging included):
        never ready would answer every command "configuration in progress" while the core
        counted the EVSEs as controllable.
        """
        try:
            await self._setup()
        except ChargerTimeout:
            # A charger busy right after boot: try again rather than stay unconfigured.
            LOG.warning("%s: configuration timed out, retrying", self.id)
            self.enqueue(self.setup)
        except ChargerCallError as exc:
            # Each step handles its own refusals; one that slips through must not leave the
            # charger unconfigured for the rest of the connection.
            LOG.error("%s: configuration step refused (%s): carrying on with what we have", self.id, exc)
            self.link.mark_ready()

    @abstractmethod
    async def _setup(self) -> None:
        """The configuration itself, under the link's lock."""

    @abstractmethod
    def profile_request(self, spec: ProfileSpec) -> Any:
        """This version's SetChargingProfile request for ``spec``."""

    async def set_profile(self, spec: ProfileSpec) -> str:
        # The hot path (every EVSE, every lease refresh) skips the library's schema checks: the
        # request is built by profile_payload_16/201 (schema-checked in the tests) and the answer
        # is one enum, checked here. Validation was ~40 % of the server's CPU at 1000 chargers.
        try:
            request = self.profile_request(spec)
        except ValueError as exc:  # e.g. a transaction id this version cannot carry
            raise ChargerCallError(self.format_violation, f"SetChargingProfile not sent: {exc}") from exc
        try:
            result = await self.call_checked(request, trusted_payload=True)
        except TypeError as exc:  # the answer did not fit the response dataclass
            raise ChargerCallError(self.format_violation, f"malformed SetChargingProfile answer: {exc}") from exc
        return checked_profile_status(result.status)

    # The version's name of the stop request (for the log).
    stop_action: str

    @abstractmethod
    async def stop_transaction(self, transaction_id: str) -> str:
        """RemoteStopTransaction (1.6) / RequestStopTransaction (2.0.1); the answer's status."""

    @abstractmethod
    async def change_availability(self, evse_id: int, operative: bool) -> str:
        """ChangeAvailability of one EVSE; Accepted / Rejected / Scheduled."""

    @abstractmethod
    async def recover(self) -> None:
        """After a reconnect without boot: configure if this process has not yet, refresh state."""

    def session_ended(self, evse_id: int | None) -> None:
        if evse_id is not None:
            self.enqueue(lambda: self.link.clear_session(evse_id))


PROFILE_STATUSES = ("Accepted", "Rejected", "NotSupported")


def checked_profile_status(status: Any) -> str:
    """SetChargingProfile's answer, which must be one of the enum values of both versions."""
    if status not in PROFILE_STATUSES:
        raise ChargerCallError("FormatViolation", f"SetChargingProfile answered with status {status!r}")
    return str(status)


# CALLERROR details echo parts of the bad frame: bounded, so garbage is not mirrored back in bulk.
MAX_DETAIL_CHARS = 200


def _plain(details: Any) -> dict[str, Any]:
    """CALLERROR details must be JSON: keep scalars, stringify library objects, cut long text."""
    if not isinstance(details, dict):
        return {}
    plain: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, int | float | bool):
            plain[str(key)] = value
        else:
            plain[str(key)] = str(value)[:MAX_DETAIL_CHARS]
    return plain
