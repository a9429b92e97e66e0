"""A charge point operator's central system (CSMS) on loopback, OCPP 1.6 and 2.0.1.

For tests and the demo: charge points (or a local controller relaying for them) connect to
``ws://127.0.0.1:PORT/<charge point id>`` with subprotocol ``ocpp1.6`` or ``ocpp2.0.1``; the
version is picked per connection, the first of the requested subprotocols the simulator speaks.
It accepts every boot, records every CALL a charge point sends (``received``, the wire payload
with its camelCase keys), keeps transactions (``transactions``), and sends smart-charging calls
on request. :meth:`CsmsSimulator.restart` drops everyone (close code 1001) and listens again on
the same port, as a CSMS does when it is redeployed.

Answers are the library's, schema-checked; answers the simulator hands back from its own calls
are plain dicts with the library's snake_case keys (``{"status": "Accepted"}``); a CALLERROR is
raised as the library's :class:`ocpp.exceptions.OCPPError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import ssl
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar, cast

from ocpp.charge_point import remove_nones
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from evdlm.chargers.ocpp.server import basic_auth_credentials, charger_id_from_path, requested_subprotocols
from evdlm.chargers.ocpp.session import unless_closed
from evdlm.core.lifetime import StartStop

LOG = logging.getLogger("evdlm.sim.csms")

HEARTBEAT_INTERVAL_S = 30
CALL_TIMEOUT_S = 10.0
REPORT_TIMEOUT_S = 10.0  # get_charging_profiles: how long to wait for the last ReportChargingProfiles
VERSIONS = {"ocpp1.6": "1.6", "ocpp2.0.1": "2.0.1"}

F = TypeVar("F", bound=Callable[..., Any])


def route(action: str) -> Callable[[F], F]:
    """``ocpp.routing.on`` with a type mypy can follow."""
    return cast(Callable[[F], F], on(action))


class _WireLogger(logging.LoggerAdapter[logging.Logger]):
    """The library logs every frame at INFO: those go to DEBUG here."""

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


WIRE_LOG = _WireLogger(logging.getLogger("evdlm.sim.csms.wire"), {})


class NotConnected(LookupError):
    """No charge point of this id is connected (or it went away while a call waited)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pick_subprotocol(requested: Sequence[str]) -> str | None:
    return next((name for name in requested if name in VERSIONS), None)


def _as_dict(answer: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(answer) and not isinstance(answer, type):
        return dict(remove_nones(dataclasses.asdict(answer)))
    return dict(answer or {})


class _SessionMixin:
    """What both versions' sessions share: the CALL log and the end-of-connection signal."""

    csms: CsmsSimulator
    id: str
    closed: asyncio.Event

    async def _handle_call(self, msg: Any) -> Any:
        # Every CALL, handled or not, valid or not, in arrival order.
        self.csms.received.setdefault(self.id, []).append((msg.action, dict(msg.payload)))
        return await super()._handle_call(msg)  # type: ignore[misc]

    def _accepted(self, id_tag: str | None) -> str:
        accepted = self.csms.accepted_id_tags
        return "Accepted" if accepted is None or id_tag in accepted else "Invalid"

    def _transaction(self, transaction_id: str, id_tag: str | None = None) -> dict[str, Any]:
        transaction = self.csms.transactions.setdefault(
            transaction_id,
            {"charge_point": self.id, "id_tag": id_tag, "started": False, "stopped": False, "meter_values": 0},
        )
        if id_tag is not None:
            transaction["id_tag"] = id_tag
        return transaction


class _Csms16(_SessionMixin, ChargePoint16):  # type: ignore[misc]
    version = "1.6"

    def __init__(self, csms: CsmsSimulator, charge_point_id: str, connection: ServerConnection) -> None:
        ChargePoint16.__init__(self, charge_point_id, connection, response_timeout=CALL_TIMEOUT_S, logger=WIRE_LOG)
        self.csms = csms
        self.closed = asyncio.Event()

    @route("BootNotification")
    def on_boot_notification(self, **_: Any) -> Any:
        return result16.BootNotification(current_time=_now(), interval=HEARTBEAT_INTERVAL_S, status="Accepted")

    @route("Heartbeat")
    def on_heartbeat(self) -> Any:
        return result16.Heartbeat(current_time=_now())

    @route("StatusNotification")
    def on_status_notification(self, **_: Any) -> Any:
        return result16.StatusNotification()

    @route("Authorize")
    def on_authorize(self, id_tag: str) -> Any:
        return result16.Authorize(id_tag_info={"status": self._accepted(id_tag)})

    @route("StartTransaction")
    def on_start_transaction(self, id_tag: str, **_: Any) -> Any:
        transaction_id = next(self.csms._transaction_ids)
        self._transaction(str(transaction_id), id_tag)["started"] = True
        return result16.StartTransaction(transaction_id=transaction_id, id_tag_info={"status": self._accepted(id_tag)})

    @route("StopTransaction")
    def on_stop_transaction(self, transaction_id: int, id_tag: str | None = None, **_: Any) -> Any:
        self._transaction(str(transaction_id), id_tag)["stopped"] = True
        if id_tag is None:
            return result16.StopTransaction()
        return result16.StopTransaction(id_tag_info={"status": self._accepted(id_tag)})

    @route("MeterValues")
    def on_meter_values(self, transaction_id: int | None = None, **_: Any) -> Any:
        if transaction_id is not None:
            self._transaction(str(transaction_id))["meter_values"] += 1
        return result16.MeterValues()

    @route("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        return result16.DataTransfer(status="UnknownVendorId")

    @route("DiagnosticsStatusNotification")
    def on_diagnostics_status_notification(self, **_: Any) -> Any:
        return result16.DiagnosticsStatusNotification()

    @route("FirmwareStatusNotification")
    def on_firmware_status_notification(self, **_: Any) -> Any:
        return result16.FirmwareStatusNotification()


class _Csms201(_SessionMixin, ChargePoint201):  # type: ignore[misc]
    version = "2.0.1"

    def __init__(self, csms: CsmsSimulator, charge_point_id: str, connection: ServerConnection) -> None:
        ChargePoint201.__init__(self, charge_point_id, connection, response_timeout=CALL_TIMEOUT_S, logger=WIRE_LOG)
        self.csms = csms
        self.closed = asyncio.Event()

    @route("BootNotification")
    def on_boot_notification(self, **_: Any) -> Any:
        return result201.BootNotification(current_time=_now(), interval=HEARTBEAT_INTERVAL_S, status="Accepted")

    @route("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return result201.Heartbeat(current_time=_now())

    @route("StatusNotification")
    def on_status_notification(self, **_: Any) -> Any:
        return result201.StatusNotification()

    @route("Authorize")
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        return result201.Authorize(id_token_info={"status": self._accepted(id_token.get("id_token"))})

    @route("TransactionEvent")
    def on_transaction_event(self, event_type: str, transaction_info: dict[str, Any], **kwargs: Any) -> Any:
        token = kwargs.get("id_token")
        id_tag = token.get("id_token") if isinstance(token, dict) else None
        transaction = self._transaction(str(transaction_info["transaction_id"]), id_tag)
        if event_type == "Started":
            transaction["started"] = True
        elif event_type == "Ended":
            transaction["stopped"] = True
        if kwargs.get("meter_value"):
            transaction["meter_values"] += 1
        if token is None:
            return result201.TransactionEvent()
        return result201.TransactionEvent(id_token_info={"status": self._accepted(id_tag)})

    @route("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return result201.MeterValues()  # outside transactions: no transaction to count them for

    @route("NotifyEVChargingNeeds")
    def on_notify_ev_charging_needs(self, **_: Any) -> Any:
        return result201.NotifyEVChargingNeeds(status="Accepted")

    @route("NotifyChargingLimit")
    def on_notify_charging_limit(self, **_: Any) -> Any:
        return result201.NotifyChargingLimit()

    @route("ClearedChargingLimit")
    def on_cleared_charging_limit(self, **_: Any) -> Any:
        return result201.ClearedChargingLimit()

    @route("ReportChargingProfiles")
    def on_report_charging_profiles(
        self, request_id: int, charging_profile: list[dict[str, Any]], tbc: bool = False, **_: Any
    ) -> Any:
        report = self.csms._reports.get(request_id)
        if report is not None:
            report.profiles.extend(charging_profile)
            if not tbc:
                report.done.set()
        return result201.ReportChargingProfiles()

    @route("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        return result201.DataTransfer(status="UnknownVendorId")

    @route("NotifyEvent")
    def on_notify_event(self, **_: Any) -> Any:
        return result201.NotifyEvent()

    @route("NotifyReport")
    def on_notify_report(self, **_: Any) -> Any:
        return result201.NotifyReport()

    @route("SecurityEventNotification")
    def on_security_event_notification(self, **_: Any) -> Any:
        return result201.SecurityEventNotification()

    @route("FirmwareStatusNotification")
    def on_firmware_status_notification(self, **_: Any) -> Any:
        return result201.FirmwareStatusNotification()

    @route("LogStatusNotification")
    def on_log_status_notification(self, **_: Any) -> Any:
        return result201.LogStatusNotification()


_Session = _Csms16 | _Csms201


@dataclasses.dataclass
class _Report:
    profiles: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class CsmsSimulator(StartStop):
    """A CSMS on loopback; ``async with CsmsSimulator(...) as csms`` (see the module docstring).

    ``accepted_id_tags``: the idTags / idTokens answered Accepted (None: every one), the others
    Invalid. ``basic_auth``: charge point id → password; when given, a charge point must present
    its own id as the user name with that password, else it is refused with HTTP 401 before the
    upgrade (as are ids not in the mapping). Without it everyone is let in and the user name of
    any Basic credentials presented is still recorded in ``identities``.
    """

    def __init__(
        self,
        *,
        accepted_id_tags: Collection[str] | None = None,
        basic_auth: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context``: serve wss:// (OCPP security profiles 2/3; a context that requires a
        client certificate makes it profile 3, and ``client_certificates`` records the names)."""
        self.ssl_context = ssl_context
        self.client_certificates: dict[str, str | None] = {}  # charge point id -> the certificate's CN
        self.accepted_id_tags = frozenset(accepted_id_tags) if accepted_id_tags is not None else None
        self.basic_auth = dict(basic_auth) if basic_auth is not None else None
        self.host = host
        self.port = port
        self.url = ""
        self.received: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.identities: dict[str, str | None] = {}
        self.transactions: dict[str, dict[str, Any]] = {}
        self._sessions: dict[str, _Session] = {}
        self._connected_events: dict[str, asyncio.Event] = {}
        self._transaction_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._reports: dict[int, _Report] = {}
        self._server: Server | None = None

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        self._server = await serve(
            self._serve,
            self.host,
            self.port,
            subprotocols=[Subprotocol(name) for name in VERSIONS],
            select_subprotocol=self._select_subprotocol,
            process_request=self._check_handshake,
            compression=None,
            ping_interval=None,
            ssl=self.ssl_context,
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        self.url = f"{'wss' if self.ssl_context is not None else 'ws'}://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Close every connection (code 1001) and stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def restart(self, down_s: float = 1.0) -> None:
        """Close every socket (1001), stop listening for ``down_s``, listen again on the same
        port. ``received`` and ``transactions`` are kept; transaction ids keep counting."""
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()

    # ------------------------------------------------------------------ handshake

    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        charge_point_id = charger_id_from_path(request.path)
        if not charge_point_id:
            return connection.respond(HTTPStatus.NOT_FOUND, "no charge point id in the path\n")
        if _pick_subprotocol(requested_subprotocols(request.headers)) is None:
            return connection.respond(HTTPStatus.BAD_REQUEST, "subprotocol ocpp1.6 or ocpp2.0.1 required\n")
        if self.basic_auth is not None:
            credentials = basic_auth_credentials(request.headers)
            password = self.basic_auth.get(charge_point_id)
            if credentials is None or password is None or credentials != (charge_point_id, password):
                LOG.info("%s: refused, wrong or missing Basic auth credentials", charge_point_id)
                response = connection.respond(HTTPStatus.UNAUTHORIZED, "authentication required\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="ocpp"'
                return response
        return None

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
        picked = _pick_subprotocol(subprotocols)
        return Subprotocol(picked) if picked is not None else None

    # ------------------------------------------------------------------ sessions

    async def _serve(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        charge_point_id = charger_id_from_path(connection.request.path)
        credentials = basic_auth_credentials(connection.request.headers)
        if self.ssl_context is not None:
            self.client_certificates[charge_point_id] = _peer_common_name(connection)
        session: _Session = (
            _Csms16(self, charge_point_id, connection)
            if connection.subprotocol == "ocpp1.6"
            else _Csms201(self, charge_point_id, connection)
        )
        previous = self._sessions.get(charge_point_id)
        if previous is not None:
            LOG.info("%s: new connection replaces the old one", charge_point_id)
            await previous._connection.close()
        self._sessions[charge_point_id] = session
        self.identities[charge_point_id] = credentials[0] if credentials is not None else None
        self.received.setdefault(charge_point_id, [])
        self._connected_event(charge_point_id).set()
        LOG.info("%s connected (OCPP %s)", charge_point_id, session.version)
        try:
            await session.start()
        except ConnectionClosed:
            pass
        finally:
            session.closed.set()
            if self._sessions.get(charge_point_id) is session:
                del self._sessions[charge_point_id]
                self._connected_event(charge_point_id).clear()
            LOG.info("%s disconnected", charge_point_id)

    def _connected_event(self, charge_point_id: str) -> asyncio.Event:
        return self._connected_events.setdefault(charge_point_id, asyncio.Event())

    def connected(self, charge_point_id: str) -> bool:
        return charge_point_id in self._sessions

    async def wait_connected(self, charge_point_id: str, timeout_s: float = 5.0) -> None:
        """Until ``charge_point_id`` has a websocket open here (TimeoutError after ``timeout_s``)."""
        async with asyncio.timeout(timeout_s):
            await self._connected_event(charge_point_id).wait()

    def count(self, charge_point_id: str, action: str) -> int:
        """How many ``action`` CALLs the charge point sent (over every connection)."""
        return sum(1 for name, _ in self.received.get(charge_point_id, []) if name == action)

    def _session(self, charge_point_id: str) -> _Session:
        session = self._sessions.get(charge_point_id)
        if session is None:
            raise NotConnected(charge_point_id)
        return session

    # ------------------------------------------------------------------ calls

    async def call(self, charge_point_id: str, payload: Any) -> Any:
        """Send any call object of the connection's version; the library's answer object.

        A CALLERROR raises :class:`ocpp.exceptions.OCPPError`; the connection closing while
        waiting raises :class:`NotConnected`; no answer in time, :class:`TimeoutError`.
        """
        session = self._session(charge_point_id)
        pending = await unless_closed(session.call(payload, suppress=False), session.closed)
        if pending is None:
            raise NotConnected(f"{charge_point_id}: disconnected while waiting for {type(payload).__name__}")
        return pending.result()

    def _version(self, charge_point_id: str) -> str:
        return self._session(charge_point_id).version

    async def set_charging_profile(self, charge_point_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        """SetChargingProfile; ``profile`` is 1.6 csChargingProfiles or 2.0.1 chargingProfile
        (snake_case keys). The answer payload, e.g. ``{"status": "Accepted"}``."""
        if self._version(charge_point_id) == "1.6":
            payload: Any = call16.SetChargingProfile(connector_id=evse_id, cs_charging_profiles=profile)
        else:
            payload = call201.SetChargingProfile(evse_id=evse_id, charging_profile=profile)
        return _as_dict(await self.call(charge_point_id, payload))

    async def clear_charging_profile(self, charge_point_id: str, **criteria: Any) -> dict[str, Any]:
        """ClearChargingProfile with the version's own fields: 1.6 ``id``, ``connector_id``,
        ``charging_profile_purpose``, ``stack_level``; 2.0.1 ``charging_profile_id``,
        ``charging_profile_criteria``. No criteria: clear everything."""
        if self._version(charge_point_id) == "1.6":
            payload: Any = call16.ClearChargingProfile(**criteria)
        else:
            payload = call201.ClearChargingProfile(**criteria)
        return _as_dict(await self.call(charge_point_id, payload))

    async def get_composite_schedule(
        self, charge_point_id: str, evse_id: int, duration_s: int, unit: str | None = None
    ) -> dict[str, Any]:
        """GetCompositeSchedule; ``unit`` "A" or "W" (None: the charge point's choice)."""
        if self._version(charge_point_id) == "1.6":
            payload: Any = call16.GetCompositeSchedule(
                connector_id=evse_id, duration=duration_s, charging_rate_unit=unit
            )
        else:
            payload = call201.GetCompositeSchedule(duration=duration_s, evse_id=evse_id, charging_rate_unit=unit)
        return _as_dict(await self.call(charge_point_id, payload))

    async def get_charging_profiles(self, charge_point_id: str, evse_id: int | None = None) -> list[dict[str, Any]]:
        """2.0.1 GetChargingProfiles: every profile the ReportChargingProfiles answers carry
        (snake_case keys), [] on NoProfiles. 1.6 has no such message: NotImplementedError."""
        if self._version(charge_point_id) == "1.6":
            raise NotImplementedError("OCPP 1.6 has no GetChargingProfiles")
        request_id = next(self._request_ids)
        report = self._reports[request_id] = _Report()
        try:
            answer = await self.call(
                charge_point_id,
                call201.GetChargingProfiles(request_id=request_id, charging_profile={}, evse_id=evse_id),
            )
            if answer.status != "Accepted":
                return []
            async with asyncio.timeout(REPORT_TIMEOUT_S):
                await report.done.wait()
            return report.profiles
        finally:
            del self._reports[request_id]


def _peer_common_name(connection: ServerConnection) -> str | None:
    """The client certificate's common name on a TLS connection (None: no certificate)."""
    tls = connection.transport.get_extra_info("ssl_object")
    certificate = tls.getpeercert() if tls is not None else None
    for entry in (certificate or {}).get("subject", ()):
        for key, value in entry:
            if key == "commonName":
                return str(value)
    return None
