"""``GET /api/v1/availability``: every port's availability this month (docs/availability.md).

    add_availability_routes(app, gateway.availability)

Per port: seconds per class this UTC month, this month's and the trailing 12 months' NEVI uptime
%, the month's outage count and the latest outages (start, end, class, cause). The handler reads
the live ledger (O(ports), no I/O) and never waits on the control cycle. aiohttp itself stays in
:mod:`evdlm.api.http`: this module only adds a route through the app it is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from evdlm.api.http import API_PREFIX, json_response

if TYPE_CHECKING:
    from aiohttp import web


class AvailabilitySource(Protocol):
    def document(self) -> dict[str, Any]: ...


def add_availability_routes(app: web.Application, source: AvailabilitySource) -> None:
    async def availability(request: web.Request) -> web.Response:
        return json_response(source.document())

    app.router.add_get(f"{API_PREFIX}/availability", availability)
