"""Demand-charge control: keep each billing window's average import under the month's peak (pure).

A demand charge bills the month's highest average import over a window (15, 30 or 60 min),
fixed on the clock (quarter-hours: Belgium, most US utilities) or rolling. Capping the
instantaneous import at the target wastes what an average allows: a short spike early in a
window can be absorbed later in it, and power unused early may be spent before it ends. So each
cycle this turns "the window's average import ≤ target" into the import limit for now:

    limit = (target × window − energy imported so far in the window) / time left

(the time left counted no shorter than ``SETTLE_S``, so the end of a window never asks a car
for a spike it could not follow). The target is the month-to-date peak (what is paid for
anyway) or the configured floor, whichever is higher, raised only when the cars' departures
cannot otherwise be met, and then by the least amount: the highest average power the known
sessions need between now and any of their departures (earliest deadline first is feasible on
one shared limit exactly when that average fits), plus the load evdlm does not command. DR and
fuse limits still win: this is one more cap on the import row, never a raise.

A rolling window keeps the energy of its last window in 10-second buckets; its limit keeps every
window that ends within ``ROLLING_LOOKAHEAD`` of a window from now at the target, were the cars
held at it that long.

All times are epoch seconds; windows and billing months are aligned in the site's time zone
(a 15-min window is the same quarter-hour whatever the DST offset; the billing month starts at
local midnight of its billing day).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

SETTLE_S = 60.0  # the shortest "time left" a limit is computed over (cars follow in seconds)
BUCKET_S = 10.0  # rolling windows: energy kept per 10 s (pro rata within a bucket)
ROLLING_LOOKAHEAD = 1.0 / 3.0
STAND_ASIDE_SHARE = 0.03  # a target this close to the connection is not capped (decide_window)
ROLLING_NEAREST_S = 5.0  # the window ending this soon is checked too (a rolling window ends every moment)


@dataclass(frozen=True)
class DemandSettings:
    window_s: float
    rolling: bool
    timezone: str
    billing_day: int  # the billing month starts at local midnight of this day (1-28)
    floor_w: float  # never aim below this: the month's peak is paid up to it anyway
    rate_per_kw: float  # demand charge per kW of the month's peak
    # The contracted import limit: a target at or above it needs no cap (below).
    connection_w: float = math.inf


@dataclass(frozen=True)
class WindowState:
    """What the controller keeps between cycles (and across restarts: evdlm.demand_store)."""

    month: str = ""  # billing month key, "YYYY-MM" of the day it starts on
    month_peak_w: float = 0.0  # highest closed-window average this month
    month_peak_at_s: float | None = None  # when that window ended
    window_start_s: float | None = None  # fixed windows: the current window's start
    energy_wh: float = 0.0  # fixed windows: import energy in the current window so far
    buckets: tuple[tuple[float, float], ...] = ()  # rolling: (minute start, Wh), oldest first
    last_s: float | None = None  # the last sample
    last_import_w: float | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "month": self.month,
            "month_peak_w": self.month_peak_w,
            "month_peak_at_s": self.month_peak_at_s,
            "window_start_s": self.window_start_s,
            "energy_wh": self.energy_wh,
            "buckets": [list(bucket) for bucket in self.buckets],
            "last_s": self.last_s,
            "last_import_w": self.last_import_w,
        }


@dataclass(frozen=True)
class DemandDecision:
    """This cycle's import cap from the window, and why."""

    limit_w: float
    target_w: float
    window_start_s: float
    window_end_s: float
    window_energy_wh: float
    needed_w: float  # what the known sessions need on average (plus uncontrolled load)
    month_peak_w: float = 0.0
    month_peak_at_s: float | None = None
    raised_because: str | None = None  # set when the target is above the month's peak and floor
    uncontrolled_w: float = 0.0  # the load evdlm does not command the target was set beside (- = net PV)
    rate_per_kw: float = 0.0  # demand charge per kW of the month's peak (the estimate shown)

    @property
    def charge_estimate(self) -> float:
        """The month's demand charge so far: its peak (kW) x the rate, in the tariff's currency."""
        return self.month_peak_w / 1000.0 * self.rate_per_kw


def _zone(settings: DemandSettings) -> ZoneInfo:
    return ZoneInfo(settings.timezone)


def window_bounds(now_s: float, settings: DemandSettings) -> tuple[float, float]:
    """The fixed window holding ``now_s``: aligned to the local clock (a quarter-hour is a quarter-hour)."""
    local = datetime.fromtimestamp(now_s, UTC).astimezone(_zone(settings))
    seconds_into_day = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    into_window = seconds_into_day % settings.window_s
    start_s = now_s - into_window
    return start_s, start_s + settings.window_s


def billing_month(now_s: float, settings: DemandSettings) -> str:
    """The billing month holding ``now_s``: "YYYY-MM" of the month its billing day falls in."""
    return month_of(now_s, settings.timezone, settings.billing_day)


def month_of(now_s: float, timezone: str, billing_day: int = 1) -> str:
    """The billing month holding ``now_s`` as "YYYY-MM": it starts at local midnight of ``billing_day``."""
    local = datetime.fromtimestamp(now_s, UTC).astimezone(ZoneInfo(timezone))
    if local.day >= billing_day:
        return f"{local.year:04d}-{local.month:02d}"
    previous = local.replace(day=1) - timedelta(days=1)
    return f"{previous.year:04d}-{previous.month:02d}"


def peak_window(
    times_s: Iterable[float], import_w: Iterable[float], period_s: Iterable[float], settings: DemandSettings
) -> tuple[float, float | None]:
    """The highest average import (W) over the whole fixed windows the samples cover, and that
    window's start (None: no whole window). Each sample's power holds for its period; a window
    counts only once its samples fill it (a day's first and last part-windows are not billed at
    a part's average). Capacity planning and the replay's figures both bill with this."""
    sums: dict[float, list[float]] = {}
    for now_s, watts, seconds in zip(times_s, import_w, period_s, strict=True):
        if not math.isfinite(watts):
            continue  # the grid meter was not usable: that window is not whole
        window = sums.setdefault(window_bounds(now_s, settings)[0], [0.0, 0.0])
        window[0] += watts * seconds
        window[1] += seconds
    whole = {
        start: joules / seconds for start, (joules, seconds) in sums.items() if seconds >= settings.window_s - 1e-6
    }
    if not whole:
        return 0.0, None
    start = max(whole, key=whole.__getitem__)
    return whole[start], start


def peak_rolling_window(
    times_s: np.ndarray, import_w: np.ndarray, period_s: np.ndarray, window_s: float
) -> tuple[float, float | None]:
    """The highest average import (W) over any ``window_s`` the samples cover, and that window's
    start (None: the samples cover less than a window). Each sample's power holds for its period
    and counts in the windows that hold its end; samples without a usable import are left out."""
    usable = np.isfinite(import_w)
    times_s, period_s = times_s[usable], period_s[usable]
    ends_s = times_s + period_s
    if len(times_s) == 0 or ends_s[-1] - times_s[0] < window_s - 1e-6:
        return 0.0, None
    cumulative = np.concatenate([[0.0], np.cumsum(import_w[usable] * period_s)])
    first = np.searchsorted(ends_s, ends_s - window_s + 1e-6, side="left")  # first sample ending inside
    sums = cumulative[1:] - cumulative[first]
    whole = ends_s - times_s[0] >= window_s - 1e-6
    best = int(np.argmax(np.where(whole, sums, -np.inf)))
    return float(sums[best] / window_s), float(ends_s[best] - window_s)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def advance(state: WindowState, now_s: float, import_w: float | None, settings: DemandSettings) -> WindowState:
    """Account the import since the last sample (at the last power, split at window ends) and roll
    windows and months. ``import_w`` None (no usable meter): the time counts at the last power."""
    month = billing_month(now_s, settings)
    if state.month != month:  # a new billing month: its peak starts from nothing
        state = replace(state, month=month, month_peak_w=0.0, month_peak_at_s=None)
    # The power since the last sample is the last one measured (the first time: this one).
    power_w = 0.0
    if state.last_import_w is not None:
        power_w = state.last_import_w
    elif import_w is not None and math.isfinite(import_w):
        power_w = import_w
    start_s = state.last_s if state.last_s is not None and state.last_s <= now_s else now_s
    if settings.rolling:
        state = _advance_rolling(state, start_s, now_s, max(0.0, power_w), settings)
    else:
        state = _advance_fixed(state, start_s, now_s, max(0.0, power_w), settings)
    latest = import_w if _finite(import_w) else state.last_import_w
    return replace(state, last_s=now_s, last_import_w=latest)


def _close_window(state: WindowState, average_w: float, end_s: float) -> WindowState:
    if average_w > state.month_peak_w:
        return replace(state, month_peak_w=average_w, month_peak_at_s=end_s)
    return state


def _advance_fixed(
    state: WindowState, start_s: float, now_s: float, power_w: float, settings: DemandSettings
) -> WindowState:
    window_s = settings.window_s
    if state.window_start_s is None:
        # The first sample: what came before it in this window is not known; counted at this power.
        window_start, _ = window_bounds(now_s, settings)
        return replace(state, window_start_s=window_start, energy_wh=power_w * (now_s - window_start) / 3600.0)
    window_start = state.window_start_s
    energy_wh = state.energy_wh
    t = max(start_s, window_start)
    while True:
        window_end = window_start + window_s
        until = min(now_s, window_end)
        if until > t:
            energy_wh += power_w * (until - t) / 3600.0
        if now_s < window_end:
            break
        state = _close_window(state, energy_wh * 3600.0 / window_s, window_end)
        # A long gap (a restart hours later) closes every window it spans, each at that power.
        window_start, energy_wh, t = window_end, 0.0, window_end
        if now_s - window_start > 48 * 3600:  # jump: days away are one window each at most
            window_start, _ = window_bounds(now_s, settings)
            t = window_start
    return replace(state, window_start_s=window_start, energy_wh=energy_wh)


def _advance_rolling(
    state: WindowState, start_s: float, now_s: float, power_w: float, settings: DemandSettings
) -> WindowState:
    buckets = dict(state.buckets)
    t = start_s
    while t < now_s:
        bucket = math.floor(t / BUCKET_S) * BUCKET_S
        until = min(now_s, bucket + BUCKET_S)
        buckets[bucket] = buckets.get(bucket, 0.0) + power_w * (until - t) / 3600.0
        t = until
        if now_s - t > settings.window_s + BUCKET_S:  # a long gap: only the last window matters
            t = now_s - settings.window_s - BUCKET_S
    oldest = now_s - settings.window_s - BUCKET_S
    kept = tuple(sorted((start, wh) for start, wh in buckets.items() if start >= oldest))
    state = replace(state, buckets=kept)
    # Every moment ends a rolling window: the month's peak is the highest trailing average seen.
    trailing = _trailing_wh(kept, now_s - settings.window_s, now_s)
    return _close_window(state, trailing * 3600.0 / settings.window_s, now_s)


def _trailing_wh(buckets: Iterable[tuple[float, float]], from_s: float, to_s: float) -> float:
    """Energy in the buckets overlapping [from_s, to_s), pro rata where they overlap in part."""
    total = 0.0
    for start, wh in buckets:
        overlap = min(to_s, start + BUCKET_S) - max(from_s, start)
        if overlap > 0:
            total += wh * overlap / BUCKET_S
    return total


def needed_power_w(sessions: Iterable[tuple[float, float, float]], now_s: float, reserve_s: float = 0.0) -> float:
    """The least site power that delivers every session's (energy Wh, departure s, its own maximum W)
    by its departure less ``reserve_s``.

    Shared fairly over time, one limit serves every deadline exactly when, for every departure d,
    the energy due by d fits in (d - now) at that power: the highest (energy due by d) / (d - now)
    (earliest deadline first). A car that can only just finish at its own maximum cannot wait for
    its turn, though: such *urgent* cars need their maximum now, on top of what the others need
    shared. The result is the larger of the two. Departures closer than one minute count over one
    minute (late: as soon as possible).
    """
    due: list[tuple[float, float]] = []
    urgent_w = 0.0
    relaxed: list[tuple[float, float]] = []
    for energy_wh, departure_s, most_w in sessions:
        if energy_wh <= 0:
            continue
        deadline_s = max(departure_s - reserve_s, now_s + 60.0)
        due.append((deadline_s, energy_wh))
        if most_w * (deadline_s - now_s) / 3600.0 <= energy_wh * 1.0001:
            urgent_w += most_w
        else:
            relaxed.append((deadline_s, energy_wh))
    return max(_shared_w(due, now_s), urgent_w + _shared_w(relaxed, now_s))


def _shared_w(due: list[tuple[float, float]], now_s: float) -> float:
    needed_w, energy_so_far = 0.0, 0.0
    for deadline_s, energy_wh in sorted(due):
        energy_so_far += energy_wh
        needed_w = max(needed_w, energy_so_far * 3600.0 / (deadline_s - now_s))
    return needed_w


def decide_window(
    state: WindowState,
    now_s: float,
    settings: DemandSettings,
    *,
    needed_ev_w: float,
    uncontrolled_w: float,
) -> DemandDecision:
    """This cycle's cap on the import (W) from ``state`` (already advanced to ``now_s``)."""
    base_w = max(state.month_peak_w, settings.floor_w)
    needed_w = needed_ev_w + max(0.0, uncontrolled_w)
    target_w = base_w
    raised = None
    if needed_w > base_w + 1.0:
        target_w = needed_w
        if needed_ev_w > 0.0:  # the other load alone above the peak is not evdlm's raise
            raised = (
                f"raising this month's peak to {target_w / 1000:.1f} kW (from {base_w / 1000:.1f} kW): the cars' "
                f"departures need {needed_ev_w / 1000:.1f} kW on average on top of "
                f"{max(0.0, uncontrolled_w) / 1000:.1f} kW of other load"
            )
    window_s = settings.window_s
    if settings.rolling:
        # Held for the lookahead, then off: each window ending x from now (x up to the lookahead)
        # holds the trailing (window - x) of energy plus limit * x; every one stays at the target.
        lookahead_s = max(SETTLE_S, window_s * ROLLING_LOOKAHEAD)
        budget_wh = target_w * window_s / 3600.0
        limit_w = math.inf
        for x in (ROLLING_NEAREST_S, *np.arange(BUCKET_S, lookahead_s + 1e-9, BUCKET_S).tolist()):
            kept_wh = _trailing_wh(state.buckets, now_s + x - window_s, now_s)
            limit_w = min(limit_w, (budget_wh - kept_wh) * 3600.0 / x)
        start_s, end_s, energy_wh = now_s - window_s, now_s, _trailing_wh(state.buckets, now_s - window_s, now_s)
    else:
        start_s = state.window_start_s if state.window_start_s is not None else window_bounds(now_s, settings)[0]
        end_s = start_s + window_s
        energy_wh = state.energy_wh
        left_s = max(SETTLE_S, end_s - now_s)
        limit_w = (target_w * window_s / 3600.0 - energy_wh) * 3600.0 / left_s
    if target_w >= settings.connection_w * (1.0 - STAND_ASIDE_SHARE):
        # At (or within a few % of) the connection, its own limit keeps every window's average
        # about the target, and a cap has little money left to guard: it only adds friction,
        # making up for a few seconds over by holding back later, which cars at a saturated site
        # cannot take back (the depot day lost 0.8 point of energy to a cap at its connection,
        # 1.5 points to one at 97.7 % of it).
        limit_w = math.inf
    return DemandDecision(
        limit_w=max(0.0, limit_w),
        target_w=target_w,
        window_start_s=start_s,
        window_end_s=end_s,
        window_energy_wh=energy_wh,
        needed_w=needed_w,
        month_peak_w=state.month_peak_w,
        month_peak_at_s=state.month_peak_at_s,
        raised_because=raised,
        uncontrolled_w=uncontrolled_w,
        rate_per_kw=settings.rate_per_kw,
    )
