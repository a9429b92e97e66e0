"""The availability ledger's state file (``var/availability.json``): written atomically, read as hostile.

A file that does not parse, or whose shape is wrong, is set aside as ``<name>.corrupt-<time>``
with one warning (:mod:`evdlm.state_files`) and a fresh ledger starts: the availability history
is worth keeping for a post-mortem, never worth a gateway that does not start.

The time between the last save (or the clean stop) and the next start is counted ``offline``
with cause ``controller down`` by the ledger itself (its hold is bounded): nothing watched the
ports then, so nothing can claim they were up.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path
from typing import Any

from evdlm import strict_json
from evdlm.core.availability import (
    DEFAULT_MAX_HOLD_S,
    DEFAULT_MAX_OUTAGES,
    Availability,
    AvailabilityLedger,
    MonthTotals,
    Outage,
    PortLedger,
)
from evdlm.state_files import load_state, write_atomically

log = logging.getLogger("evdlm.availability")

LEDGER_FORMAT = 1
_MONTH_LENGTH = 7  # YYYY-MM


def ledger_json(ledger: AvailabilityLedger, saved_s: float) -> dict[str, Any]:
    """The ledger as a JSON document (see :func:`parse_ledger`)."""
    ports = []
    for (charger_id, evse_id), port in sorted(ledger.ports.items()):
        ports.append(
            {
                "charger": charger_id,
                "evse": evse_id,
                "last_s": port.last_s,
                "last_class": port.last_kind.value,
                "last_cause": port.last_cause,
                "months": {
                    month: {"seconds": totals.seconds, "causes": totals.causes, "outages": totals.outages}
                    for month, totals in sorted(port.months.items())
                },
                "outages": [outage.as_list() for outage in port.outages],
                "open": port.open.as_list() if port.open is not None else None,
            }
        )
    return {"format": LEDGER_FORMAT, "saved_s": saved_s, "max_hold_s": ledger.max_hold_s, "ports": ports}


def save_ledger(path: Path, ledger: AvailabilityLedger, saved_s: float) -> bool:
    """Write the ledger atomically; False (one error line) when it could not be written."""
    try:
        write_atomically(path, strict_json.dumps(ledger_json(ledger, saved_s), separators=(",", ":")))
    except (OSError, ValueError) as exc:
        log.error("availability ledger not saved to %s: %s", path, exc)
        return False
    return True


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number ≥ 0, not {value!r}")
    return float(value)


def _outage(value: Any) -> Outage:
    if not isinstance(value, list) or len(value) != 4 or not isinstance(value[3], str):
        raise ValueError(f"outage {value!r} must be [start_s, end_s, class, cause]")
    start_s, end_s = _number(value[0], "outage start"), _number(value[1], "outage end")
    if end_s < start_s:
        raise ValueError(f"outage {value!r} ends before it starts")
    return Outage(start_s, end_s, Availability(value[2]), value[3])


def _seconds(value: Any, what: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object")
    return {str(name): _number(seconds, f"{what}[{name}]") for name, seconds in value.items()}


def parse_ledger(
    data: Any, *, max_hold_s: float | None = None, max_outages: int = DEFAULT_MAX_OUTAGES
) -> AvailabilityLedger:
    """The ledger a state file holds; ``ValueError`` / ``TypeError`` / ``KeyError`` for a bad shape."""
    if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
        raise ValueError(f"not a format {LEDGER_FORMAT} availability ledger")
    hold = max_hold_s if max_hold_s is not None else _number(data.get("max_hold_s", DEFAULT_MAX_HOLD_S), "max_hold_s")
    ledger = AvailabilityLedger(max_hold_s=hold, max_outages=max_outages)
    entries = data["ports"]
    if not isinstance(entries, list):
        raise ValueError("'ports' must be a list")
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError(f"port {entry!r} is not an object")
        charger_id, evse_id = entry["charger"], entry["evse"]
        if not isinstance(charger_id, str) or isinstance(evse_id, bool) or not isinstance(evse_id, int):
            raise ValueError(f"port {charger_id!r}/{evse_id!r} needs a charger id and an EVSE number")
        months: dict[str, MonthTotals] = {}
        raw_months = entry.get("months", {})
        if not isinstance(raw_months, dict):
            raise ValueError("'months' must be an object")
        for month, totals in raw_months.items():
            if len(month) != _MONTH_LENGTH or month[4] != "-" or not isinstance(totals, dict):
                raise ValueError(f"month {month!r} is not YYYY-MM with totals")
            seconds = _seconds(totals.get("seconds", {}), f"{month} seconds")
            for name in seconds:
                Availability(name)  # a class this version knows
            outages = totals.get("outages", 0)
            if isinstance(outages, bool) or not isinstance(outages, int) or outages < 0:
                raise ValueError(f"{month} outages must be a count")
            months[month] = MonthTotals(seconds, _seconds(totals.get("causes", {}), f"{month} causes"), outages)
        raw_outages = entry.get("outages", [])
        if not isinstance(raw_outages, list):
            raise ValueError("'outages' must be a list")
        last_s = entry.get("last_s")
        ledger.ports[(charger_id, evse_id)] = PortLedger(
            months=months,
            outages=deque((_outage(item) for item in raw_outages), maxlen=max_outages),
            open=_outage(entry["open"]) if entry.get("open") is not None else None,
            last_s=None if last_s is None else _number(last_s, "last_s"),
            last_kind=Availability(entry.get("last_class", "offline")),
            last_cause=str(entry.get("last_cause", "")),
        )
    return ledger


def load_ledger(path: Path, *, max_hold_s: float | None = None) -> AvailabilityLedger | None:
    """The ledger saved at ``path``, or None (absent, or unusable and set aside with a warning)."""
    ledger = load_state(path, lambda data: parse_ledger(data, max_hold_s=max_hold_s))
    if ledger is not None:
        log.info("availability ledger of %d port(s) loaded from %s", len(ledger.ports), path)
    return ledger
