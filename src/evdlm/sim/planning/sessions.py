"""Sessions for a planning run, from the importers' formats or ACN-Data-style JSON.

* ``.csv``: the session CSV of :mod:`evdlm.sim.importer` (``charger,evse,start,end,energy_kwh,...``);
* ``.jsonl`` / ``.log``: OCPP MeterValues logs, cut into sessions as :mod:`evdlm.sim.importer` does;
* ``.json``: ACN-Data-style sessions (Caltech's ACN-Data API and its downloads): an object with
  ``_items`` or a plain list, each item with ``connectionTime``, ``disconnectTime``,
  ``kWhDelivered``, ``stationID`` (or ``spaceID``), ``sessionID`` and optional ``userInputs``
  (``kWhRequested``, ``requestedDeparture``). Times are RFC 2822 (``Wed, 25 Apr 2018 11:08:04
  GMT``, as the API sends) or ISO 8601. A station whose id is a charger id of the site config
  charges there; the others are given the config's remaining chargers in order of the sorted
  station ids. The energy a car needs is what it took (``kWhDelivered``; ``requested=True``:
  the driver's ``kWhRequested`` where given); a car with ``userInputs`` announces its needs.
"""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from evdlm.config.models import ChargerKind, SiteConfig
from evdlm.sim.closed_loop import Session
from evdlm.sim.importer import parse_sessions_csv, parse_time, sessions_from_ocpp_log


def _acn_time(value: Any, timezone: str) -> float:
    text = str(value).strip()
    if text[:3].isalpha():  # "Wed, 25 Apr 2018 11:08:04 GMT"
        return parsedate_to_datetime(text).timestamp()
    return parse_time(text, timezone)


def parse_acn_json(document: Any, config: SiteConfig, *, requested: bool = False) -> tuple[Session, ...]:
    """Sessions of an ACN-Data-style JSON document (already decoded), sorted by arrival."""
    items = document.get("_items", document.get("items")) if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise ValueError("ACN JSON: expected a list of sessions or an object with `_items`")
    chargers = {charger.id: charger for charger in config.chargers}
    stations = sorted({str(item.get("stationID") or item.get("spaceID") or "") for item in items})
    free = [charger.id for charger in config.chargers if charger.id not in stations]
    mapping: dict[str, str] = {}
    for station in stations:
        if station in chargers:
            mapping[station] = station
        elif free:
            mapping[station] = free.pop(0)
        else:
            raise ValueError(
                f"ACN JSON: {len(stations)} stations but the site config has {len(chargers)} chargers; "
                "add chargers or give the stations charger ids"
            )
    timezone = config.site.timezone
    sessions = []
    for number, item in enumerate(items):
        station = str(item.get("stationID") or item.get("spaceID") or "")
        charger = chargers[mapping[station]]
        arrival_s = _acn_time(item["connectionTime"], timezone)
        departure_s = _acn_time(item["disconnectTime"], timezone)
        inputs = item.get("userInputs") or []
        latest = inputs[-1] if inputs else None
        energy_kwh = float(item["kWhDelivered"])
        if requested and latest is not None and latest.get("kWhRequested") is not None:
            energy_kwh = float(latest["kWhRequested"])
        announced_departure_s = None
        if latest is not None and latest.get("requestedDeparture"):
            announced_departure_s = _acn_time(latest["requestedDeparture"], timezone)
        one_phase = charger.kind is ChargerKind.AC_1PHASE
        if departure_s <= arrival_s or energy_kwh <= 0:
            continue
        sessions.append(
            Session(
                charger_id=charger.id,
                evse_id=1,
                arrival_s=arrival_s,
                departure_s=departure_s,
                energy_needed_kwh=round(energy_kwh, 3),
                ev_max_current_a=charger.max_current_a,
                phases=1 if one_phase else 3,
                announces_needs=latest is not None,
                transaction_id=str(item.get("sessionID") or f"acn-{number}"),
                announced_departure_s=announced_departure_s,
            )
        )
    return tuple(sorted(sessions, key=lambda session: (session.arrival_s, session.charger_id)))


def load_sessions(path: Path, config: SiteConfig, *, announced: bool = True) -> tuple[Session, ...]:
    """Sessions of ``path`` by its suffix (module docstring), each with its own transaction id."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as stream:
            sessions = parse_sessions_csv(stream, config, announced=announced)
    elif suffix == ".json":
        sessions = parse_acn_json(json.loads(path.read_text(encoding="utf-8")), config)
    elif suffix in {".jsonl", ".log"}:
        with path.open(encoding="utf-8") as stream:
            sessions = sessions_from_ocpp_log(stream, config, announced=announced)
    else:
        raise ValueError(f"{path}: sessions must be .csv (session CSV), .json (ACN-Data) or .jsonl (OCPP log)")
    if not sessions:
        raise ValueError(f"{path}: no sessions")
    return sessions
