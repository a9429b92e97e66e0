"""The OCPP central system: websocket server, handshake checks, sessions, and the command path.

    async with OcppCentralSystem(site_config, clock) as central:
        states = central.evse_states()
        results = await central.apply(commands)
        central.restrict({("CP01", 1): "cannot be limited, site over its import limit"})  # every cycle

Chargers connect to ``ws(s)://host:port/<charge point id>`` with subprotocol ``ocpp1.6`` or
``ocpp2.0.1`` (the one configured for them). Unknown ids, a wrong subprotocol, wrong Basic-auth
credentials or a client certificate naming another charger are refused before the upgrade;
under Basic auth, failed logins are backed off per id and address (:class:`LoginGuard`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import math
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from evdlm.chargers.ocpp.authorization import Authorizer
from evdlm.chargers.ocpp.csms_merge import CsmsSmartCharging
from evdlm.chargers.ocpp.link import ChargerLink, EvseKey
from evdlm.chargers.ocpp.login_guard import LoginGuard, source_address
from evdlm.chargers.ocpp.relay import ChargerRelay, RelayTotals, upstream_endpoint, upstream_ssl_context
from evdlm.chargers.ocpp.relay_rules import evdlm_unique_id
from evdlm.chargers.ocpp.upstream_queue import UpstreamQueue, queue_path
from evdlm.chargers.ocpp.v16 import V16Session
from evdlm.chargers.ocpp.v201 import V201Session
from evdlm.chargers.planning import ChargerCapabilities, LinkSettings
from evdlm.config.models import Charger, SiteConfig
from evdlm.config.secrets import SecretUnavailable, resolve_secret
from evdlm.core.clock import Clock
from evdlm.core.lifetime import StartStop
from evdlm.core.types import ChargingCommand, CommandResult, CommandStatus, EvseState

LOG = logging.getLogger("evdlm.chargers.ocpp.server")

SUBPROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}

# The largest frame a charger may send (websockets closes the connection with 1009 beyond it):
# the biggest legitimate OCPP message, a 2.0.1 NotifyReport or a 1.6 SendLocalList, is far smaller.
MAX_FRAME_BYTES = 2**20


def link_settings(config: SiteConfig) -> LinkSettings:
    return LinkSettings(
        nominal_voltage_v=config.grid.nominal_voltage_v,
        lease_duration_s=config.control.lease_duration_s,
        lease_refresh_s=config.control.lease_refresh_s,
        deadband_a=config.control.deadband_a,
        failsafe_current_a=config.ocpp.failsafe_current_a,
        non_compliance_grace_s=config.ocpp.non_compliance_grace_s,
        meter_sample_interval_s=config.ocpp.meter_sample_interval_s,
    )


def charger_id_from_path(path: str) -> str:
    """The last non-empty path segment, URL-decoded (``/ocpp/CP01`` → ``CP01``)."""
    segments = [segment for segment in urlsplit(path).path.split("/") if segment]
    return unquote(segments[-1]) if segments else ""


def basic_auth_credentials(headers: Headers) -> tuple[str, str] | None:
    value = headers.get("Authorization")
    if value is None or not value.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def requested_subprotocols(headers: Headers) -> list[str]:
    return [item.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for item in value.split(",")]


class OcppCentralSystem(StartStop):
    """One process serving every configured charger; see the module docstring."""

    def __init__(self, config: SiteConfig, clock: Clock, *, base_dir: Path = Path(".")) -> None:
        self.config = config
        self.clock = clock
        self.settings = link_settings(config)
        self._base_dir = base_dir
        self._chargers: dict[str, Charger] = {charger.id: charger for charger in config.chargers}
        self._states: dict[EvseKey, EvseState] = {}
        self._listeners: list[Callable[[EvseState], None]] = []
        self._links = {
            charger.id: ChargerLink(charger, self.settings, clock, self._changed) for charger in config.chargers
        }
        for link in self._links.values():
            for state in link.states():
                self._states[(state.charger_id, state.evse_id)] = state
        self._passwords = self._resolve_passwords()
        self._sessions: dict[str, V16Session | V201Session] = {}
        self._server: Server | None = None
        self._restricted: dict[EvseKey, str] = {}
        self._unknown_restrictions: set[EvseKey] = set()  # warned about once
        self._logins = LoginGuard(clock)
        # Local Controller mode (ocpp.mode: local_controller): the CSMS upstream, per charger.
        self._local_controller = config.ocpp.mode == "local_controller"
        self._relays: dict[str, ChargerRelay] = {}
        self._retired_relays = RelayTotals()  # counts of relays whose charger has disconnected
        self._queues: dict[str, UpstreamQueue] = {}
        self._upstream_password: str | None = None
        self._upstream_ssl: ssl.SSLContext | None = None
        if self._local_controller and config.ocpp.upstream is not None:
            upstream = config.ocpp.upstream
            if upstream.password is not None:
                try:
                    self._upstream_password = resolve_secret(upstream.password, base_dir)
                except SecretUnavailable as exc:
                    LOG.error("ocpp.upstream password unavailable (%s): connecting without Basic auth", exc)
            self._upstream_ssl = upstream_ssl_context(upstream, base_dir)
        # One for every charger: the local list, and the answer cache a Local Controller fills.
        self.authorizer = Authorizer.from_config(config.ocpp.authorization)

    def _resolve_passwords(self) -> dict[str, str]:
        passwords: dict[str, str] = {}
        basic_auth = self.config.ocpp.security_profile in (1, 2)
        for charger in self.config.chargers:
            if charger.password is None:
                if basic_auth:
                    LOG.error("%s: no password configured under security profile 1/2: it will be refused", charger.id)
                continue
            try:
                passwords[charger.id] = resolve_secret(charger.password, self._base_dir)
            except SecretUnavailable as exc:
                # Fail closed for this charger only: it is refused at the handshake.
                LOG.error("%s: password unavailable (%s): the charger will be refused", charger.id, exc)
        return passwords

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        ocpp = self.config.ocpp
        self._server = await serve(
            self._serve,
            ocpp.host,
            ocpp.port,
            process_request=self._check_handshake,
            select_subprotocol=self._select_subprotocol,
            ssl=self._ssl_context(),
            # Per-message deflate costs ~100 kB per connection; OCPP frames are small.
            compression=None,
            max_size=MAX_FRAME_BYTES,
            logger=logging.getLogger("evdlm.chargers.ocpp.websockets"),
        )
        LOG.info(
            "OCPP central system on %s://%s:%s (security profile %s, %d chargers)",
            "wss" if ocpp.security_profile >= 2 else "ws",
            ocpp.host,
            self.port,
            ocpp.security_profile,
            len(self._chargers),
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def port(self) -> int:
        """The bound port (useful with ``ocpp.port: 0``)."""
        if self._server is None:
            raise RuntimeError("the central system is not started")
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the central system has no socket")

    def _ssl_context(self) -> ssl.SSLContext | None:
        ocpp = self.config.ocpp
        if ocpp.security_profile < 2:
            return None
        assert ocpp.cert_file is not None and ocpp.key_file is not None  # validated by OcppServer
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # OCPP security whitepaper: TLS 1.2 or higher
        context.load_cert_chain(self._base_dir / ocpp.cert_file, self._base_dir / ocpp.key_file)
        if ocpp.security_profile == 3:
            assert ocpp.ca_file is not None
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self._base_dir / ocpp.ca_file)
        return context

    # ------------------------------------------------------------------ handshake

    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the upgrade (an HTTP answer) or let it go on (None).

        Under Basic auth (profiles 1 and 2) every refused login — wrong credentials, an unknown
        id — counts for :class:`LoginGuard`, and an id or address it holds off is answered 429
        with ``Retry-After`` before its credentials are looked at (see LoginGuard for what an
        operator can expect). Profile 3 needs no guard: the TLS handshake already checked a
        client certificate.
        """
        charger_id = charger_id_from_path(request.path)
        charger = self._chargers.get(charger_id)
        peer = connection.remote_address
        source = source_address(peer)
        profile = self.config.ocpp.security_profile
        basic_auth = profile in (1, 2)
        if basic_auth:
            hold_s = self._logins.hold_s(charger_id if charger is not None else None, source)
            if hold_s > 0:
                response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many failed logins\n")
                response.headers["Retry-After"] = str(max(1, math.ceil(hold_s)))
                return response
        if charger is None:
            if basic_auth:
                self._logins.failed(None, source, f"unknown charge point id {charger_id[:64]!r}")
            else:
                LOG.warning("refused unknown charge point id %r from %s", charger_id[:64], peer)
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown charge point\n")
        expected = SUBPROTOCOLS[charger.ocpp_version]
        if expected not in requested_subprotocols(request.headers):
            LOG.warning(
                "%s: refused, it must speak %s (offered %s)",
                charger_id,
                expected,
                requested_subprotocols(request.headers),
            )
            return connection.respond(HTTPStatus.BAD_REQUEST, f"subprotocol {expected} required\n")
        if basic_auth:
            credentials = basic_auth_credentials(request.headers)
            password = self._passwords.get(charger_id)
            if (
                credentials is None
                or password is None
                or credentials[0] != charger_id
                or not hmac.compare_digest(credentials[1].encode(), password.encode())
            ):
                self._logins.failed(charger_id, source, "wrong or missing Basic auth credentials")
                response = connection.respond(HTTPStatus.UNAUTHORIZED, "authentication required\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="ocpp"'
                return response
            self._logins.succeeded(charger_id, source)
        if profile == 3 and self._client_certificate_name(connection) != charger_id:
            LOG.warning("%s: refused, client certificate is not issued to this charge point", charger_id)
            return connection.respond(HTTPStatus.FORBIDDEN, "client certificate does not match\n")
        return None

    @staticmethod
    def _client_certificate_name(connection: ServerConnection) -> str | None:
        ssl_object = connection.transport.get_extra_info("ssl_object")
        certificate = ssl_object.getpeercert() if ssl_object is not None else None
        if not certificate:
            return None
        for rdn in certificate.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return None

    def _select_subprotocol(
        self, connection: ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        charger = self._chargers.get(charger_id_from_path(connection.request.path if connection.request else ""))
        if charger is None:
            return None
        expected = SUBPROTOCOLS[charger.ocpp_version]
        return Subprotocol(expected) if expected in subprotocols else None

    # ------------------------------------------------------------------ sessions

    async def _serve(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        charger_id = charger_id_from_path(connection.request.path)
        charger = self._chargers[charger_id]
        link = self._links[charger_id]
        previous = self._sessions.get(charger_id)
        if previous is not None:
            # The charger reconnected before we noticed the old socket died: the new one wins.
            LOG.info("%s: new connection replaces the old one", charger_id)
            await previous._connection.close()
        session_class = V16Session if charger.ocpp_version == "1.6" else V201Session
        # Local Controller mode: the session reads and writes a relay instead of the socket.
        relay = self._relay(charger_id, charger, connection, link) if self._local_controller else None
        session = session_class(
            charger_id,
            relay.pipe if relay is not None else connection,
            link,
            self.settings,
            self.clock,
            self.config.ocpp.call_timeout_s,
            authorizer=self.authorizer,
        )
        if relay is not None:
            session._unique_id_generator = evdlm_unique_id  # evdlm's calls in their own id namespace
        self._sessions[charger_id] = session
        LOG.info("%s connected (OCPP %s) from %s", charger_id, charger.ocpp_version, connection.remote_address)
        try:
            if relay is not None:
                self._relays[charger_id] = relay
                await relay.run(session)
            else:
                await session.run()
        finally:
            if self._sessions.get(charger_id) is session:
                del self._sessions[charger_id]
            if relay is not None:
                self._retired_relays.add(relay)
                if self._relays.get(charger_id) is relay:
                    del self._relays[charger_id]
            LOG.info("%s disconnected", charger_id)

    def _relay(
        self, charger_id: str, charger: Charger, connection: ServerConnection, link: ChargerLink
    ) -> ChargerRelay:
        upstream = self.config.ocpp.upstream
        assert upstream is not None  # validated with ocpp.mode
        queue = self._queues.get(charger_id)
        if queue is None:
            queue = UpstreamQueue(
                queue_path(self._base_dir / upstream.queue_dir, charger_id), upstream.queue_max_messages
            )
            self._queues[charger_id] = queue
        endpoint = upstream_endpoint(
            upstream,
            charger_id,
            SUBPROTOCOLS[charger.ocpp_version],
            self._upstream_password,
            self._upstream_ssl,
            self.config.ocpp.call_timeout_s,
        )
        # The CSMS's profiles, kept beside the queue so a restart or a reconnection keeps them.
        smart = CsmsSmartCharging(
            charger, charger.ocpp_version, link, queue.path.with_name(queue.path.stem + ".profiles.json")
        )
        return ChargerRelay(
            charger_id, charger.ocpp_version, connection, endpoint, queue, link, self.authorizer, self.clock, smart
        )

    def relay_totals(self) -> RelayTotals | None:
        """Local Controller counters since start (None in standalone mode), for the metrics."""
        if not self._local_controller:
            return None
        totals = replace(self._retired_relays)
        for relay in self._relays.values():
            totals.add(relay)
        totals.queue_dropped = sum(queue.dropped for queue in self._queues.values())
        return totals

    def relay(self, charger_id: str) -> ChargerRelay | None:
        """Local Controller mode: the live relay of a charger (diagnostics and tests), or None."""
        return self._relays.get(charger_id)

    # ------------------------------------------------------------------ state

    def _changed(self, state: EvseState) -> None:
        self._states[(state.charger_id, state.evse_id)] = state
        for listener in self._listeners:
            listener(state)

    def evse_states(self) -> dict[EvseKey, EvseState]:
        """A snapshot of every configured EVSE (frozen values; the dict is a copy)."""
        return dict(self._states)

    def add_change_listener(self, listener: Callable[[EvseState], None]) -> Callable[[], None]:
        """Call ``listener`` (synchronously, keep it cheap) with every changed EvseState; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def capabilities(self) -> dict[str, ChargerCapabilities]:
        """What each charger accepts (units, stack levels, phases), as learned so far."""
        return {charger_id: link.capabilities for charger_id, link in self._links.items()}

    def online(self, charger_id: str) -> bool:
        return charger_id in self._sessions

    def ready(self, charger_id: str) -> bool:
        """Connected and configured (holding its fail-safe where it took one): commands will be sent."""
        link = self._links.get(charger_id)
        return link is not None and link.ready

    # ------------------------------------------------------------------ commands

    async def apply(self, commands: Sequence[ChargingCommand]) -> list[CommandResult]:
        """Send every command; concurrent across chargers, sequential within one (one call in flight).

        Returns one result per command, in order. Takes at most about ``call_timeout_s`` times
        the number of fallback attempts for the slowest charger.
        """
        results: list[CommandResult | None] = [None] * len(commands)
        by_charger: dict[str, list[int]] = {}
        for index, command in enumerate(commands):
            by_charger.setdefault(command.charger_id, []).append(index)

        async def run(charger_id: str, indices: list[int]) -> None:
            link = self._links.get(charger_id)
            batch = [commands[index] for index in indices]
            if link is None:
                outcome = [
                    CommandResult(command, CommandStatus.REJECTED, self.clock.now_s(), detail="unknown charger")
                    for command in batch
                ]
            else:
                try:
                    outcome = await link.apply(batch)
                except Exception as exc:  # a bug in one charger's path must not lose the others' results
                    LOG.exception("%s: applying commands failed", charger_id)
                    outcome = [
                        CommandResult(command, CommandStatus.FAILED, self.clock.now_s(), detail=repr(exc))
                        for command in batch
                    ]
            for index, result in zip(indices, outcome, strict=True):
                results[index] = result

        async with asyncio.TaskGroup() as group:
            for charger_id, indices in by_charger.items():
                group.create_task(run(charger_id, indices), name=f"apply-{charger_id}")
        return [result for result in results if result is not None]

    # ------------------------------------------------------------------ restrictions

    def restrict(self, wanted: Mapping[EvseKey, str], *, inherited: bool = False) -> None:
        """The EVSEs that must be stopped and blocked now, each with its reason; call every cycle.

        Non-blocking: it only compares ``wanted`` with the EVSEs restricted so far and hands
        each change to its charger's job queue. A newly restricted EVSE has its transaction
        stopped (1.6 RemoteStopTransaction, 2.0.1 RequestStopTransaction) and is set
        Inoperative (ChangeAvailability); while restricted, Authorize / StartTransaction /
        TransactionEvent on it are answered Blocked. An EVSE missing from ``wanted`` is set
        Operative again. A charger that reconnects gets its restrictions again. A changed
        reason for an EVSE already restricted only replaces the text (no calls, no log line).
        ``inherited``: restrictions a previous process left in force (released with Operative
        even though this process never sent Inoperative).
        """
        current = self._restricted
        if not wanted and not current:
            return  # the usual cycle: nothing restricted, nothing to compare
        for key in [key for key in current if key not in wanted]:
            del current[key]
            self._links[key[0]].release(key[1])
        for key, reason in wanted.items():
            previous = current.get(key)
            if previous == reason:
                continue
            link = self._links.get(key[0])
            if link is None or not 1 <= key[1] <= link.charger.evses:
                if key not in self._unknown_restrictions:
                    self._unknown_restrictions.add(key)
                    LOG.warning("restriction of unknown EVSE %s/%s ignored (%s)", key[0], key[1], reason)
                continue
            current[key] = reason
            link.restrict(key[1], reason, inherited=inherited)

    def restricted(self) -> dict[EvseKey, str]:
        """The EVSEs restricted now (as last passed to :meth:`restrict`) and why; a copy."""
        return dict(self._restricted)

    def session(self, charger_id: str) -> Any:
        """The live protocol session of a charger (diagnostics and tests), or None."""
        return self._sessions.get(charger_id)
