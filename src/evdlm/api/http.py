"""The HTTP API: an aiohttp app factory, the session routes, and a server with a lifetime.

    app = create_app(token="…")            # auth, JSON errors, body limit
    add_session_routes(app, sessions)       # /api/v1/sessions…
    async with HttpApiServer(app, "127.0.0.1", 8080) as server: ...

Routes (docs/sessions.md):

- ``GET /api/v1/sessions``: every configured EVSE's current session inputs;
- ``GET /api/v1/sessions/{charger_id}/{evse_id}``: one EVSE's (404: not in the config);
- ``POST /api/v1/sessions/{charger_id}/{evse_id}``: a session command, the same JSON body as on
  MQTT; 200 with the answer, or 400 (invalid), 404 (unknown EVSE), 409 (no session there, or
  another transaction named), 413 (body over 4 KiB) with ``{"error": reason, …}``.

With a token configured every request needs ``Authorization: Bearer <token>`` (401 otherwise).
Handlers do O(1) work on the event loop and never wait on the control cycle; the cycle reads
the service's latest frozen overrides.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from evdlm import strict_json
from evdlm.config.models import HttpApi
from evdlm.config.secrets import resolve_secret
from evdlm.core.lifetime import StartStop
from evdlm.core.session_inputs import MAX_PAYLOAD_BYTES, Answer, EvseKey, Refusal

log = logging.getLogger("evdlm.api")

API_PREFIX = "/api/v1"
_STATUS = {
    Refusal.BAD_REQUEST: 400,
    Refusal.UNKNOWN_EVSE: 404,
    Refusal.NO_SESSION: 409,
    Refusal.TOO_LARGE: 413,
}


class SessionApi(Protocol):
    def inputs(self, key: EvseKey) -> dict[str, Any] | None: ...

    def all_inputs(self) -> list[dict[str, Any]]: ...

    def submit(self, key: EvseKey, payload: bytes | Mapping[str, Any], channel: str) -> Answer: ...

    def refuse(self, key: EvseKey, reason: str, channel: str, kind: Refusal = Refusal.BAD_REQUEST) -> Answer: ...


BODY_LIMIT_KEY = web.AppKey("evdlm_body_limit", int)
SESSIONS_KEY = web.AppKey("evdlm_sessions", SessionApi)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(document: Any, status: int = 200) -> web.Response:
    return web.Response(text=strict_json.dumps(document), status=status, content_type="application/json")


def error(message: str, status: int, extra: dict[str, Any] | None = None) -> web.Response:
    return json_response({"error": message, **(extra or {})}, status)


def create_app(*, token: str | None = None, max_body_bytes: int = MAX_PAYLOAD_BYTES) -> web.Application:
    """An API app: bearer auth (when ``token``), JSON errors, ``max_body_bytes`` per request body.

    Features add their routes (``add_session_routes``; the operator view its own) before it runs.
    """

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is not None and not _public(request):
            given = request.headers.get("Authorization", "")
            scheme, _, credential = given.partition(" ")
            if request.method == "GET" and not given and "access_token" in request.query:
                # A browser's EventSource cannot send headers: the page passes the token this way.
                scheme, credential = "bearer", request.query["access_token"]
            if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), token.encode()):
                response = error("missing or wrong bearer token", 401)
                response.headers["WWW-Authenticate"] = 'Bearer realm="evdlm"'
                return response
        if request.content_length is not None and request.content_length > request.app[BODY_LIMIT_KEY]:
            return error(f"request body of {request.content_length} bytes is over {request.app[BODY_LIMIT_KEY]}", 413)
        try:
            return await handler(request)
        except web.HTTPException as exc:  # the router's 404 and 405, as JSON like every other answer
            if exc.status < 400:
                raise
            return error(exc.reason, exc.status)

    app = web.Application(middlewares=[guard], client_max_size=max_body_bytes)
    app[BODY_LIMIT_KEY] = max_body_bytes
    return app


# Served without the token: the page and its static files carry no site data (the page asks
# for the token and sends it on every API request), and liveness probes.
PUBLIC_PATHS = frozenset({"/", "/healthz"})
PUBLIC_PREFIXES = ("/static/",)


def _public(request: web.Request) -> bool:
    return request.method == "GET" and (request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES))


async def read_body(request: web.Request) -> bytes | None:
    """The request body, or None when it is over the app's limit (read no further than that)."""
    limit = request.app[BODY_LIMIT_KEY]
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _key(request: web.Request) -> EvseKey:
    return (request.match_info["charger_id"], int(request.match_info["evse_id"]))


def add_session_routes(app: web.Application, sessions: SessionApi) -> None:
    app[SESSIONS_KEY] = sessions
    app.router.add_get(f"{API_PREFIX}/sessions", _list_sessions)
    app.router.add_get(f"{API_PREFIX}/sessions/{{charger_id}}/{{evse_id:[0-9]{{1,3}}}}", _get_session)
    app.router.add_post(f"{API_PREFIX}/sessions/{{charger_id}}/{{evse_id:[0-9]{{1,3}}}}", _post_session)


async def _list_sessions(request: web.Request) -> web.Response:
    return json_response({"sessions": request.app[SESSIONS_KEY].all_inputs()})


async def _get_session(request: web.Request) -> web.Response:
    key = _key(request)
    inputs = request.app[SESSIONS_KEY].inputs(key)
    if inputs is None:
        return error(f"no EVSE {key[0]}/{key[1]} in the site config", 404)
    return json_response(inputs)


async def _post_session(request: web.Request) -> web.Response:
    key = _key(request)
    sessions = request.app[SESSIONS_KEY]
    body = await read_body(request)
    if body is None:
        limit = request.app[BODY_LIMIT_KEY]
        answer = sessions.refuse(key, f"request body is over {limit} bytes", "http", Refusal.TOO_LARGE)
    else:
        answer = sessions.submit(key, body, "http")
    if answer.accepted:
        return json_response(answer.as_json())
    status = _STATUS[answer.refusal or Refusal.BAD_REQUEST]
    return error(answer.reason, status, answer.as_json())


class HttpApiServer(StartStop):
    """``app`` served on ``host``:``port`` for the lifetime of ``async with``; ``port`` is the bound one."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @staticmethod
    def from_config(
        settings: HttpApi,
        base_dir: Path,
        sessions: SessionApi,
        features: Sequence[Callable[[web.Application], None]] = (),
    ) -> HttpApiServer:
        """The configured server with the session routes and each of ``features``' routes."""
        token = resolve_secret(settings.token, base_dir) if settings.token is not None else None
        if token is not None and not token:
            raise ValueError("the HTTP API token is empty")
        app = create_app(token=token)
        add_session_routes(app, sessions)
        for add_routes in features:
            add_routes(app)
        return HttpApiServer(app, settings.host, settings.port)

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break
        log.info("HTTP API on http://%s:%d%s", self.host, self.port, API_PREFIX)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
