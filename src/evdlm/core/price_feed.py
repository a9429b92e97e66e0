"""A dynamic price feed's message, checked (pure: no I/O, no clock).

A utility, an aggregator or a day-ahead market bridge publishes the coming prices as one JSON
document (docs/prices.md)::

    {"currency": "EUR",
     "slots": [{"start": "2026-12-06T00:00:00+01:00", "end": "2026-12-06T01:00:00+01:00",
                "import_per_kwh": 0.214, "export_per_kwh": 0.061}, ...]}

Each accepted message replaces the previous feed whole (a day-ahead publication is complete;
merging two would keep prices the publisher withdrew). Every part is checked before anything
is used, and a message with one bad part is refused whole with the reason: prices of a
half-read schedule would be worse than the table's.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from evdlm import strict_json
from evdlm.core.tariff import PriceSlot

MAX_MESSAGE_BYTES = 256 * 1024  # 1000 slots of ~120 bytes, with room
MAX_SLOTS = 1000  # a week of quarter-hours is 672
MIN_SLOT_S = 60.0
MAX_SLOT_S = 86_400.0
MAX_AHEAD_S = 8 * 86_400.0  # no market publishes further ahead than this
PRICE_BOUND_PER_KWH = (-10.0, 100.0)  # as the config's static prices
ALLOWED_KEYS = frozenset({"currency", "slots", "source", "issued_at"})
SLOT_KEYS = frozenset({"start", "end", "import_per_kwh", "export_per_kwh"})


class PriceFeedError(ValueError):
    """A feed message that cannot be used; the text says why."""


def _instant_s(value: Any, where: str) -> float:
    if not isinstance(value, str) or len(value) > 40:
        raise PriceFeedError(f"{where}: an ISO 8601 time with its UTC offset is expected, not {value!r:.60}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise PriceFeedError(f"{where}: {value!r} is not an ISO 8601 time") from error
    if moment.tzinfo is None:
        raise PriceFeedError(f"{where}: {value!r} has no UTC offset (a local time is ambiguous at DST changes)")
    return moment.timestamp()


def _price(value: Any, where: str) -> float:
    low, high = PRICE_BOUND_PER_KWH
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PriceFeedError(f"{where}: a finite number is expected, not {value!r:.60}")
    if not low <= value <= high:
        raise PriceFeedError(f"{where}: {value} per kWh is outside [{low:g}, {high:g}]")
    return float(value)


def _slot(item: Any, index: int) -> PriceSlot:
    where = f"slots[{index}]"
    if not isinstance(item, dict):
        raise PriceFeedError(f"{where}: an object is expected")
    unknown = set(item) - SLOT_KEYS
    if unknown:
        raise PriceFeedError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    for key in ("start", "end", "import_per_kwh"):
        if key not in item:
            raise PriceFeedError(f"{where}: {key} is missing")
    start_s = _instant_s(item["start"], f"{where}.start")
    end_s = _instant_s(item["end"], f"{where}.end")
    length_s = end_s - start_s
    if not MIN_SLOT_S <= length_s <= MAX_SLOT_S:
        raise PriceFeedError(f"{where}: a slot of {length_s:g} s (from start to end) is outside 60 s to 24 h")
    export = item.get("export_per_kwh")
    return PriceSlot(
        start_s,
        end_s,
        _price(item["import_per_kwh"], f"{where}.import_per_kwh"),
        None if export is None else _price(export, f"{where}.export_per_kwh"),
    )


def parse_price_feed(payload: bytes, *, currency: str, now_s: float) -> tuple[PriceSlot, ...]:
    """The slots of a feed message still to come at ``now_s`` (sorted), or :class:`PriceFeedError`."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise PriceFeedError(f"message of {len(payload)} bytes is over {MAX_MESSAGE_BYTES}")
    try:
        document = strict_json.loads(payload)
    except (ValueError, UnicodeDecodeError) as error:
        raise PriceFeedError(f"not JSON: {error}") from error
    if not isinstance(document, dict):
        raise PriceFeedError("a JSON object is expected")
    unknown = set(document) - ALLOWED_KEYS
    if unknown:
        raise PriceFeedError(f"unknown field {sorted(unknown)[0]!r}")
    if document.get("currency") != currency:
        raise PriceFeedError(f"currency {document.get('currency')!r:.20} is not the site's {currency}")
    items = document.get("slots")
    if not isinstance(items, list) or not items:
        raise PriceFeedError("slots: a non-empty list is expected")
    if len(items) > MAX_SLOTS:
        raise PriceFeedError(f"{len(items)} slots is over {MAX_SLOTS}")
    slots = [_slot(item, index) for index, item in enumerate(items)]
    for index in range(1, len(slots)):
        if slots[index].start_s < slots[index - 1].end_s:
            raise PriceFeedError(f"slots[{index}] starts before slots[{index - 1}] ends (slots are in order, apart)")
    if slots[-1].end_s > now_s + MAX_AHEAD_S:
        raise PriceFeedError(
            f"the last slot ends {(slots[-1].end_s - now_s) / 86_400.0:.1f} days ahead (at most "
            f"{MAX_AHEAD_S / 86_400.0:g}: is the clock or the publisher wrong?)"
        )
    current = tuple(slot for slot in slots if slot.end_s > now_s)
    if not current:
        raise PriceFeedError("every slot has ended")
    return current
