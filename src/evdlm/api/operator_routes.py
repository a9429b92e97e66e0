"""The operator view's routes: the site's state, changes, last hour, live stream, probes and page.

- ``GET /api/v1/state``: the latest cycle (``evdlm.api.operator_view.state_document``), gzip to
  clients that accept it;
- ``GET /api/v1/history``: import vs its limit over the last hour (at most 720 points);
- ``GET /api/v1/events?since=SEQ``: recent changes with their reasons;
- ``GET /api/v1/stream``: Server-Sent Events, ``event: state`` with the document after each cycle
  (at most ``STREAM_MAX_HZ`` per client; a slow client gets the latest, never a backlog);
- ``GET /healthz`` (the process answers), ``GET /readyz`` (a recent cycle with a decision: 200,
  else 503);
- ``GET /`` and ``GET /static/{name}``: the page, shipped in the package (``evdlm/api/static``).

Handlers never wait on the control cycle: they read what the last cycle left.
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources
from pathlib import Path

from aiohttp import web

from evdlm.api.http import API_PREFIX, error, json_response
from evdlm.api.operator_view import OperatorView
from evdlm.core.clock import Clock

VIEW_KEY = web.AppKey("evdlm_operator_view", OperatorView)
CLOCK_KEY = web.AppKey("evdlm_operator_clock", Clock)
STREAMS_KEY = web.AppKey("evdlm_operator_streams", list[int])  # [open streams]
STREAM_MAX_HZ = 2.0
STREAM_KEEPALIVE_S = 15.0
STREAM_CLIENTS_MAX = 200
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def static_dir() -> Path:
    return Path(str(resources.files("evdlm.api").joinpath("static")))


def add_operator_routes(app: web.Application, view: OperatorView, clock: Clock) -> None:
    app[VIEW_KEY] = view
    app[CLOCK_KEY] = clock
    app[STREAMS_KEY] = [0]
    app.router.add_get(f"{API_PREFIX}/state", _state)
    app.router.add_get(f"{API_PREFIX}/history", _history)
    app.router.add_get(f"{API_PREFIX}/events", _events)
    app.router.add_get(f"{API_PREFIX}/stream", _stream)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/", _page)
    app.router.add_get("/static/{name}", _static)


async def _state(request: web.Request) -> web.Response:
    document = await request.app[VIEW_KEY].state_json()
    if document is None:
        return error("no control cycle yet", 503)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response = web.Response(body=document.gzip, content_type="application/json")
        response.headers["Content-Encoding"] = "gzip"
        return response
    return web.Response(body=document.json, content_type="application/json")


async def _history(request: web.Request) -> web.Response:
    return json_response(request.app[VIEW_KEY].history_json())


async def _events(request: web.Request) -> web.Response:
    try:
        since = int(request.query.get("since", "0"))
        limit = int(request.query.get("limit", "500"))
    except ValueError:
        return error("since and limit must be integers", 400)
    if since < 0 or not 1 <= limit <= 2000:
        return error("since must be >= 0 and limit 1..2000", 400)
    return json_response(request.app[VIEW_KEY].events_json(since, limit))


async def _healthz(request: web.Request) -> web.Response:
    return json_response({"alive": True})


async def _readyz(request: web.Request) -> web.Response:
    ready, detail = request.app[VIEW_KEY].readiness(request.app[CLOCK_KEY].now_s())
    return json_response({"ready": ready, "detail": detail}, 200 if ready else 503)


async def _stream(request: web.Request) -> web.StreamResponse:
    app = request.app
    streams = app[STREAMS_KEY]
    if streams[0] >= STREAM_CLIENTS_MAX:
        return error(f"at most {STREAM_CLIENTS_MAX} live streams", 503)
    view = app[VIEW_KEY]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    streams[0] += 1
    sent_cycle = -1
    try:
        while True:
            report = view.report
            if report is not None and report.cycle != sent_cycle:
                document = await view.state_json()
                if document is not None:
                    sent_cycle = report.cycle
                    await response.write(b"event: state\ndata: " + document.json + b"\n\n")
                await asyncio.sleep(1.0 / STREAM_MAX_HZ)
                continue
            async with view.changed:
                try:
                    await asyncio.wait_for(view.changed.wait(), STREAM_KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        streams[0] -= 1
    with contextlib.suppress(Exception):
        await response.write_eof()
    return response


def _file_response(path: Path) -> web.StreamResponse:
    content_type = STATIC_TYPES.get(path.suffix)
    if content_type is None or not path.is_file():
        return error("not found", 404)
    return web.Response(
        body=path.read_bytes(), content_type=content_type, charset="utf-8", headers={"Cache-Control": "no-cache"}
    )


async def _page(request: web.Request) -> web.StreamResponse:
    return _file_response(static_dir() / "index.html")


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if "/" in name or "\\" in name or name.startswith("."):
        return error("not found", 404)
    return _file_response(static_dir() / name)
