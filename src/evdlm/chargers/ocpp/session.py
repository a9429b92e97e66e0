"""What the 1.6 and 2.0.1 server sessions share: exception translation, bad-frame answers,
our one call in flight and the answer bound to it, a sequential job queue for boot-time
configuration, housekeeping and restrictions, and the session lifetime. The versions add thin
request builders (profiles, stop, availability).

Every frame is hostile until decoded: too deep, non-finite numbers and garbage get a CALLERROR
(a CALLRESULT is never answered), answers nobody waits for are dropped, and each of these is
logged at most once per :data:`HOSTILE_LOG_EVERY_S` per connection, with a count.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import ocpp.messages
from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import (
    OCPPError,
    PropertyConstraintViolationError,
    ProtocolError,
    UnknownCallErrorCodeError,
)
from ocpp.messages import Call, CallError, CallResult, MessageType, validate_payload
from ocpp.routing import after, on
from websockets.exceptions import ConnectionClosed

from evdlm.chargers.errors import ChargerCallError, ChargerError, ChargerOffline, ChargerTimeout
from evdlm.chargers.ocpp.link import ChargerLink, Job
from evdlm.chargers.ocpp.parse import FrameRejected, load_frame, parse_meter_values
from evdlm.chargers.planning import LinkSettings, ProfileSpec
from evdlm.core.clock import Clock
from evdlm.observability import LogThrottle

LOG = logging.getLogger("evdlm.chargers.ocpp")

# The library validates every frame against its JSON schema in the default thread pool. A
# small payload validates in well under a millisecond; the thread hop costs more than that,
# the GIL serialises it anyway, and 2000 validations per cycle at 1000 chargers would crowd
# out the controller's own blocking work in the shared pool. Validate inline instead
# (benchmarks/README.md, "OCPP scale": p50 0.9 s → 0.5 s for 1000 limits).
ocpp.messages.ASYNC_VALIDATION = False

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# A bounded queue: a charger flooding us with session ends must not grow memory without limit.
MAX_PENDING_JOBS = 64


def route(action: str) -> Callable[[F], F]:
    """``ocpp.routing.on`` with a type mypy can follow."""
    return cast(Callable[[F], F], on(action))


def after_route(action: str) -> Callable[[F], F]:
    return cast(Callable[[F], F], after(action))


async def unless_closed(call: Awaitable[T], closed: asyncio.Event) -> asyncio.Future[T] | None:
    """Await ``call`` unless ``closed`` is set first: the finished call (its result or error), or
    None when the connection closed first (the call is cancelled)."""
    pending = asyncio.ensure_future(call)
    closing = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait({pending, closing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()
    if not pending.done():
        pending.cancel()
        return None
    return pending


class WireLogger(logging.LoggerAdapter[logging.Logger]):
    """The ``ocpp`` package logs every frame at INFO; at 1000 chargers that is the whole log.
    Frames go to ``evdlm.chargers.wire`` at DEBUG instead."""

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


WIRE_LOG = WireLogger(logging.getLogger("evdlm.chargers.wire"), {})


# Hostile input (frames too deep, non-finite numbers, answers nobody awaits) is logged at most
# once per this long per connection and kind, the line counting the frames since the last one:
# a charger sending 10^5 of them must not write 10^5 lines.
HOSTILE_LOG_EVERY_S = 60.0

# OCPP-J: the unique id of a frame whose id cannot be read (2.0.1 §4.2.3).
UNREADABLE_ID = "-1"


def _frame_of(decoded: Any) -> Call | CallResult | CallError:
    """The library's ``unpack`` after the JSON step (which :func:`load_frame` did, safely)."""
    if not isinstance(decoded, list):
        raise ProtocolError(details={"cause": f"an OCPP message is a JSON array, not {type(decoded).__name__}"})
    if not decoded:
        raise ProtocolError(details={"cause": "Message does not contain MessageTypeId"})
    for cls in (Call, CallResult, CallError):
        if decoded[0] == cls.message_type_id:
            try:
                return cast(Call | CallResult | CallError, cls(*decoded[1:]))
            except TypeError:
                raise ProtocolError(details={"cause": "Message is missing elements."}) from None
    raise PropertyConstraintViolationError(details={"cause": f"MessageTypeId '{decoded[0]}' isn't valid"})


def _unique_id_in(decoded: Any) -> str:
    if isinstance(decoded, list) and len(decoded) >= 2 and isinstance(decoded[1], str):
        return decoded[1]
    return UNREADABLE_ID


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
        # time these names must resolve to the library's attributes).
        id: str
        _call_lock: asyncio.Lock
        _response_timeout: float
        _ocpp_version: str
        _call_result: Any
        _unique_id_generator: Callable[[], Any]

        async def _send(self, message: str) -> None: ...
        async def _handle_call(self, msg: Any) -> Any: ...
        async def start(self) -> None: ...

    def _init_session(self, link: ChargerLink, settings: LinkSettings, clock: Clock) -> None:
        self.link = link
        self.settings = settings
        self.clock = clock
        self._jobs: asyncio.Queue[Job] = asyncio.Queue(maxsize=MAX_PENDING_JOBS)
        self._seen_call = False
        self._closed = asyncio.Event()
        # The unique id of our one call in flight and where its answer goes; None between calls.
        self._awaited: tuple[str, asyncio.Future[CallResult | CallError]] | None = None
        self._hostile_log = LogThrottle(LOG, clock, HOSTILE_LOG_EVERY_S)
        self.dropped_answers = 0  # unsolicited or late CALLRESULT / CALLERROR frames on this connection
        self.rejected_frames = 0  # frames refused before decoding (too deep, non-finite, unreadable)

    # -------------------------------------------------------------- inbound frames

    async def route_message(self, raw_msg: str | bytes) -> None:
        """Like the library's, but hostile-safe: the JSON is checked before it is parsed (depth)
        and while (non-finite numbers); a frame we cannot decode is answered with a CALLERROR
        (the library only logs it, leaving the charger waiting for its timeout); an answer is
        kept only when it answers our call in flight (the library queues every one, unbounded).
        """
        try:
            decoded = load_frame(raw_msg)
        except FrameRejected as rejected:
            await self._rejected(rejected)
            return
        try:
            msg = _frame_of(decoded)
        except OCPPError as error:
            # ProtocolError for a frame of the wrong shape, PropertyConstraintViolation for an
            # unknown MessageTypeId.
            if isinstance(error, PropertyConstraintViolationError):
                code = self.unknown_message_type_code
            else:
                code = self.bad_structure_code
            LOG.warning("%s: undecodable frame answered with %s: %s", self.id, code, _plain(error.details))
            await self._send(
                CallError(_unique_id_in(decoded), code, error.description, _plain(error.details)).to_json()
            )
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
        elif isinstance(msg, CallResult | CallError) and not self._answer(msg.unique_id, msg):
            self._drop_answer(msg.unique_id, "CALLRESULT" if isinstance(msg, CallResult) else "CALLERROR")

    def _answer(self, unique_id: str, msg: CallResult | CallError) -> bool:
        """Hand ``msg`` to our call in flight if it answers that call; False when nothing awaits it."""
        awaited = self._awaited
        if awaited is None or awaited[0] != unique_id or awaited[1].done():
            return False
        awaited[1].set_result(msg)
        return True

    def _drop_answer(self, unique_id: str | None, kind: str) -> None:
        # A late answer (its call timed out) or one to nothing we sent: nobody will read it.
        self.dropped_answers += 1
        self._hostile_log.warning(
            "answer",
            "%s: %s (id %r) dropped: no call of ours awaits it; %d dropped on this connection",
            self.id,
            kind,
            unique_id,
            self.dropped_answers,
        )

    async def _rejected(self, rejected: FrameRejected) -> None:
        """A frame refused before decoding: a CALL gets the CALLERROR, an answer fails the call it
        answers (OCPP-J: an answer is never answered), anything else is dropped. Logged at most
        once per HOSTILE_LOG_EVERY_S per fault."""
        self.rejected_frames += 1
        code = {
            "unreadable": self.unreadable_frame_code,
            "too_deep": self.format_violation,
            "non_finite": self.format_violation,
            "out_of_range": "TypeConstraintViolation",
        }[rejected.fault]
        unique_id = rejected.unique_id
        if rejected.message_type_id in (MessageType.CallResult, MessageType.CallError):
            if unique_id is not None and self._answer(unique_id, CallError(unique_id, code, rejected.reason, {})):
                self._hostile_log.warning(
                    rejected.fault,
                    "%s: answer %r refused (%s): the call fails with %s",
                    self.id,
                    unique_id,
                    rejected.reason,
                    code,
                )
            else:
                self._drop_answer(unique_id, f"answer refused ({rejected.reason})")
            return
        if rejected.fault == "unreadable":
            # OCPP-J 2.0.1 §4.2.3: the id of a frame that is not JSON cannot be known.
            unique_id = UNREADABLE_ID
        self._hostile_log.warning(
            rejected.fault,
            "%s: frame refused with %s (%s); %d refused on this connection",
            self.id,
            code,
            rejected.reason,
            self.rejected_frames,
        )
        await self._send(
            CallError(
                unique_id or UNREADABLE_ID, code, _DESCRIPTIONS[rejected.fault], {"cause": rejected.reason}
            ).to_json()
        )

    def _error_code(self, error: OCPPError) -> str:
        code = str(error.code)
        return self.error_code_map.get(code, code)

    # -------------------------------------------------------------- outbound calls

    async def call(
        self, payload: Any, suppress: bool = True, unique_id: Any = None, skip_schema_validation: bool = False
    ) -> Any:
        """The library's ``call``, but its answer comes through a future bound to this call's
        unique id (set by :meth:`route_message`) instead of the library's shared, unbounded
        queue that kept every unsolicited answer a charger sent.

        One call in flight (the library's lock); TimeoutError after ``response_timeout``; a
        CALLERROR raises the library's exception for its code (or :class:`ChargerCallError`
        for a code OCPP does not define) unless ``suppress``.
        """
        camel_case_payload = snake_to_camel_case(serialize_as_dict(payload))
        unique_id = str(unique_id) if unique_id is not None else str(self._unique_id_generator())
        request = Call(unique_id=unique_id, action=type(payload).__name__, payload=remove_nones(camel_case_payload))
        if not skip_schema_validation:
            await validate_payload(request, self._ocpp_version)
        async with self._call_lock:
            answer: asyncio.Future[CallResult | CallError] = asyncio.get_running_loop().create_future()
            # Bound before sending: a fast charger may answer before _send returns.
            self._awaited = (unique_id, answer)
            try:
                await self._send(request.to_json())
                async with asyncio.timeout(self._response_timeout):
                    response = await answer
            except TimeoutError:
                raise TimeoutError(
                    f"no answer to {request.action} {unique_id} within {self._response_timeout} s"
                ) from None
            finally:
                self._awaited = None
        if isinstance(response, CallError):
            if suppress:
                return None
            try:
                error = response.to_exception()
            except UnknownCallErrorCodeError:
                raise ChargerCallError(str(response.error_code), str(response.error_description)) from None
            raise error
        if not skip_schema_validation:
            response.action = request.action
            await validate_payload(response, self._ocpp_version)
        return getattr(self._call_result, request.action)(**camel_to_snake_case(response.payload))

    async def call_checked(self, payload: Any, *, trusted_payload: bool = False) -> Any:
        """``call`` with ``suppress=False``, translating library and transport errors.

        Races the connection's end so a charger that disconnects mid-call is reported offline
        at once rather than after ``call_timeout_s``.
        """
        pending = await unless_closed(
            self.call(payload, suppress=False, skip_schema_validation=trusted_payload), self._closed
        )
        if pending is None:
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

    def meter_sample(self, evse_id: int, meter_value: Sequence[Mapping[str, Any]]) -> None:
        """Decode ``meterValue[]`` into the EVSE's state; values that are not finite numbers are
        left out, and the reason logged (at most once per HOSTILE_LOG_EVERY_S per connection)."""
        sample = parse_meter_values(meter_value, self.version)
        if sample.dropped:
            self._hostile_log.warning(
                "meter", "%s/%s: meter values dropped: %s", self.id, evse_id, "; ".join(sample.dropped)
            )
            if sample.empty:
                return  # nothing but garbage: the EVSE's state stays as it was
        self.link.meter_sample(evse_id, sample)

    def session_ended(self, evse_id: int | None) -> None:
        """Queue the clear of the EVSE's dynamic profile; it is dropped when it runs if a newer
        session or limit came on that EVSE meanwhile (the per-EVSE command sequence)."""
        if evse_id is not None:
            self.enqueue(self.link.clear_after_session(evse_id))


PROFILE_STATUSES = ("Accepted", "Rejected", "NotSupported")


def checked_profile_status(status: Any) -> str:
    """SetChargingProfile's answer, which must be one of the enum values of both versions."""
    if status not in PROFILE_STATUSES:
        raise ChargerCallError("FormatViolation", f"SetChargingProfile answered with status {status!r}")
    return str(status)


_DESCRIPTIONS = {
    "unreadable": "Frame is not valid JSON",
    "too_deep": "Frame nested too deep",
    "non_finite": "Frame holds a number that is not JSON (NaN or Infinity)",
    "out_of_range": "Frame holds a number out of range",
}

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
