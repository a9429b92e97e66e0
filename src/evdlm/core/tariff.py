"""Import and export prices: the config's time-of-use table and a dynamic feed's slots (pure).

The first listed period that covers a site-local time wins; outside every period the default
price applies. A dynamic feed (:mod:`evdlm.core.price_feed`, over MQTT) lays its slots over the
table: where a slot covers a moment its prices win, elsewhere (before the feed's first slot,
after its last, in a gap) the table's. Served to the horizon planner (a price per plan step),
to the cycle's cost accounting and to the replay's cost figures (a price per recorded cycle).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as clock_time
from functools import cached_property
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np

from evdlm.config.models import Tariffs

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _period_matches(start: clock_time, end: clock_time, at: clock_time) -> bool:
    if end == clock_time(0, 0):
        return at >= start
    if start <= end:
        return start <= at < end
    return at >= start or at < end  # across midnight


def import_price_at(tariffs: Tariffs, local: datetime) -> float:
    """Import price per kWh at the site-local time ``local``."""
    weekday = WEEKDAYS[local.weekday()]
    at = local.time()
    for period in tariffs.periods:
        if weekday in period.days and _period_matches(period.start, period.end, at):
            return period.import_price_per_kwh
    return tariffs.default_import_price_per_kwh


def import_prices(tariffs: Tariffs | None, timezone: str, start_s: float, step_s: float, n_steps: int) -> np.ndarray:
    """Import price per kWh at the start of each of ``n_steps`` steps from ``start_s`` (0 without
    tariffs: every hour costs the same)."""
    if tariffs is None:
        return np.zeros(n_steps)
    return PriceSchedule(tariffs, timezone).import_prices(start_s, step_s, n_steps)


@dataclass(frozen=True)
class PriceSlot:
    """One slot of a dynamic price feed: [start_s, end_s), prices per kWh (export None: the table's)."""

    start_s: float
    end_s: float
    import_per_kwh: float
    export_per_kwh: float | None = None


@dataclass(frozen=True)
class PriceSchedule:
    """The prices in force: the table of ``tariffs`` with a feed's ``slots`` (sorted, disjoint) over it."""

    tariffs: Tariffs
    timezone: str
    slots: tuple[PriceSlot, ...] = ()

    @cached_property
    def _starts(self) -> list[float]:
        return [slot.start_s for slot in self.slots]

    @cached_property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def slot_at(self, at_s: float) -> PriceSlot | None:
        """The feed's slot covering ``at_s`` (None: the table's prices apply there)."""
        index = bisect.bisect_right(self._starts, at_s) - 1
        if index >= 0 and at_s < self.slots[index].end_s:
            return self.slots[index]
        return None

    def import_price_at_s(self, at_s: float) -> float:
        slot = self.slot_at(at_s)
        if slot is not None:
            return slot.import_per_kwh
        return import_price_at(self.tariffs, datetime.fromtimestamp(at_s, UTC).astimezone(self._zone))

    def export_price_at_s(self, at_s: float) -> float:
        slot = self.slot_at(at_s)
        if slot is not None and slot.export_per_kwh is not None:
            return slot.export_per_kwh
        return self.tariffs.export_price_per_kwh

    def import_prices(self, start_s: float, step_s: float, n_steps: int) -> np.ndarray:
        """Import price per kWh at the start of each of ``n_steps`` steps from ``start_s``."""
        return np.array([self.import_price_at_s(start_s + step * step_s) for step in range(n_steps)])

    def export_prices(self, start_s: float, step_s: float, n_steps: int) -> np.ndarray:
        return np.array([self.export_price_at_s(start_s + step * step_s) for step in range(n_steps)])

    @property
    def covered_until_s(self) -> float | None:
        """End of the feed's last slot (None: no feed slots)."""
        return self.slots[-1].end_s if self.slots else None


class PriceSource(Protocol):
    """Where the cycle and the planner read the prices in force (no await, no I/O: the feed
    reads MQTT in its own task, :class:`evdlm.prices.PriceFeedService`)."""

    def schedule(self) -> PriceSchedule: ...
