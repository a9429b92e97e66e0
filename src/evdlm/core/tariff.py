"""Time-of-use import prices from the config's tariffs (pure).

The first listed period that covers a site-local time wins; outside every period the default
price applies. Served to the horizon planner (a price per plan step) and to the replay's cost
figures (a price per recorded cycle).
"""

from __future__ import annotations

from datetime import UTC, datetime
from datetime import time as clock_time
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
    zone = ZoneInfo(timezone)
    return np.array(
        [
            import_price_at(tariffs, datetime.fromtimestamp(start_s + step * step_s, UTC).astimezone(zone))
            for step in range(n_steps)
        ]
    )
