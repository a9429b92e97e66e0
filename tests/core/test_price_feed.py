"""The price feed's message checks and the schedule laid over the tariff table (pure)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, time
from typing import Any

import pytest

from evdlm.config.models import TariffPeriod, Tariffs
from evdlm.core.price_feed import MAX_SLOTS, PriceFeedError, parse_price_feed
from evdlm.core.tariff import PriceSchedule, PriceSlot

NOW_S = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()
HOUR_S = 3600.0

TARIFFS = Tariffs(
    default_import_price_per_kwh=0.30,
    export_price_per_kwh=0.05,
    periods=[TariffPeriod(start=time(0, 0), end=time(6, 0), import_price_per_kwh=0.20)],
)


def iso(at_s: float, offset: str = "+00:00") -> str:
    return datetime.fromtimestamp(at_s, UTC).isoformat().replace("+00:00", offset)


def feed(*slots: tuple[float, float, float], currency: str = "EUR", **extra: Any) -> bytes:
    document = {
        "currency": currency,
        "slots": [
            {"start": iso(start_s), "end": iso(end_s), "import_per_kwh": price, "export_per_kwh": price / 4}
            for start_s, end_s, price in slots
        ],
        **extra,
    }
    return json.dumps(document).encode()


def hourly(n: int, first_s: float = NOW_S, price: float = 0.1) -> bytes:
    return feed(*((first_s + i * HOUR_S, first_s + (i + 1) * HOUR_S, price + i / 100) for i in range(n)))


def test_a_day_ahead_feed_is_read_in_order() -> None:
    slots = parse_price_feed(hourly(24), currency="EUR", now_s=NOW_S)
    assert len(slots) == 24
    assert slots[0] == PriceSlot(NOW_S, NOW_S + HOUR_S, 0.1, 0.025)
    assert slots[-1].end_s == NOW_S + 24 * HOUR_S


def test_slots_already_ended_are_dropped() -> None:
    slots = parse_price_feed(hourly(4, first_s=NOW_S - 2 * HOUR_S), currency="EUR", now_s=NOW_S)
    assert [slot.start_s for slot in slots] == [NOW_S, NOW_S + HOUR_S]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            b'{"currency": "EUR", "slots": [{"start": "2026-12-05T12:00:00Z", "end": "2026-12-05T13:00:00Z", '
            b'"import_per_kwh": NaN}]}',
            "not JSON",
        ),
        (hourly(2).replace(b'"import_per_kwh": 0.1,', b'"import_per_kwh": 1e999,'), "a finite number"),
        (feed((NOW_S, NOW_S + HOUR_S, 0.1), currency="USD"), "currency 'USD'"),
        (feed((NOW_S, NOW_S + HOUR_S, 0.1), (NOW_S + 1800, NOW_S + 2 * HOUR_S, 0.2)), "starts before"),
        (feed((NOW_S, NOW_S + HOUR_S, 500.0)), "outside [-10, 100]"),
        (feed((NOW_S, NOW_S + 30, 0.1)), "outside 60 s to 24 h"),
        (feed((NOW_S + HOUR_S, NOW_S, 0.1)), "outside 60 s to 24 h"),
        (feed((NOW_S + 9 * 86_400, NOW_S + 9 * 86_400 + HOUR_S, 0.1)), "days ahead"),
        (feed((NOW_S - 2 * HOUR_S, NOW_S - HOUR_S, 0.1)), "every slot has ended"),
        (hourly(MAX_SLOTS + 1, price=0.0), "over 1000"),
        (b"[1, 2]", "a JSON object"),
        (b'{"currency": "EUR", "slots": []}', "non-empty list"),
        (feed((NOW_S, NOW_S + HOUR_S, 0.1), extra_field=1), "unknown field 'extra_field'"),
        (b"x" * 300_000, "over 262144"),
        (b"\xff\xfe", "not JSON"),
        (
            json.dumps(
                {
                    "currency": "EUR",
                    "slots": [{"start": "2026-12-05T12:00:00", "end": "2026-12-05T13:00:00", "import_per_kwh": 0.1}],
                }
            ).encode(),
            "no UTC offset",
        ),
        (
            json.dumps(
                {
                    "currency": "EUR",
                    "slots": [{"start": "tomorrow", "end": "2026-12-05T13:00:00Z", "import_per_kwh": 0.1}],
                }
            ).encode(),
            "not an ISO 8601 time",
        ),
        (
            json.dumps(
                {
                    "currency": "EUR",
                    "slots": [{"start": "2026-12-05T12:00:00Z", "end": "2026-12-05T13:00:00Z", "import_per_kwh": True}],
                }
            ).encode(),
            "a finite number",
        ),
        (
            json.dumps({"currency": "EUR", "slots": [{"end": "2026-12-05T13:00:00Z", "import_per_kwh": 1}]}).encode(),
            "start is missing",
        ),
    ],
)
def test_a_bad_message_is_refused_whole_with_its_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PriceFeedError, match=re.escape(reason)):
        parse_price_feed(payload, currency="EUR", now_s=NOW_S)


def test_the_feed_wins_where_it_covers_and_the_table_elsewhere() -> None:
    slots = parse_price_feed(hourly(2), currency="EUR", now_s=NOW_S)
    schedule = PriceSchedule(TARIFFS, "Europe/Brussels", slots)
    assert schedule.import_price_at_s(NOW_S) == 0.1
    assert schedule.import_price_at_s(NOW_S + HOUR_S + 1) == 0.11
    assert schedule.export_price_at_s(NOW_S + 10) == pytest.approx(0.025)
    # After the feed: the table (13:00 UTC = 14:00 Brussels: the default price).
    assert schedule.import_price_at_s(NOW_S + 2 * HOUR_S) == 0.30
    assert schedule.export_price_at_s(NOW_S + 2 * HOUR_S) == 0.05
    # Before it: 04:30 Brussels is in the table's night period.
    assert schedule.import_price_at_s(datetime(2026, 12, 5, 3, 30, tzinfo=UTC).timestamp()) == 0.20
    prices = schedule.import_prices(NOW_S - HOUR_S, HOUR_S, 4)
    assert list(prices) == [0.30, 0.1, 0.11, 0.30]
    assert schedule.covered_until_s == NOW_S + 2 * HOUR_S


def test_a_slot_without_an_export_price_keeps_the_tables() -> None:
    payload = json.dumps(
        {"currency": "EUR", "slots": [{"start": iso(NOW_S), "end": iso(NOW_S + HOUR_S), "import_per_kwh": -0.02}]}
    ).encode()
    schedule = PriceSchedule(TARIFFS, "Europe/Brussels", parse_price_feed(payload, currency="EUR", now_s=NOW_S))
    assert schedule.import_price_at_s(NOW_S) == -0.02  # negative prices happen on sunny days
    assert schedule.export_price_at_s(NOW_S) == 0.05


def test_slots_in_local_offsets_across_the_autumn_dst_change() -> None:
    """Brussels 2026-10-25: 03:00 CEST becomes 02:00 CET. Slots given in local offsets are exact
    instants: the repeated hour 02:00-03:00 is two slots, one per offset."""
    night = [
        ("2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", 0.11),
        ("2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", 0.12),  # 02:00 CEST to 02:00 CET
        ("2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00", 0.13),
    ]
    payload = json.dumps(
        {"currency": "EUR", "slots": [{"start": a, "end": b, "import_per_kwh": p} for a, b, p in night]}
    ).encode()
    start_s = datetime(2026, 10, 24, 23, 0, tzinfo=UTC).timestamp()
    slots = parse_price_feed(payload, currency="EUR", now_s=start_s)
    assert [slot.end_s - slot.start_s for slot in slots] == [HOUR_S, HOUR_S, HOUR_S]
    schedule = PriceSchedule(TARIFFS, "Europe/Brussels", slots)
    assert list(schedule.import_prices(start_s, HOUR_S, 3)) == [0.11, 0.12, 0.13]
