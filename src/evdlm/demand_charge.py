"""The demand window across cycles and restarts: state, its file, and what each cycle needs of it.

The arithmetic is pure (:mod:`evdlm.core.demand_window`); this keeps the :class:`WindowState`
between cycles, reads the grid import and the sessions' needs from a cycle's inputs, and loads
and saves the state file (``demand.state_file``) so that a restart mid-window keeps the window's
energy and the month's peak. The gateway's controller and the closed-loop simulator (planning,
benchmarks) use the same keeper, so the figures they report come from the same code.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evdlm.config.models import ChargerKind, SiteConfig
from evdlm.core.demand_window import (
    DemandDecision,
    DemandSettings,
    WindowState,
    advance,
    decide_window,
    needed_power_w,
)
from evdlm.core.types import EvseKey, EvseState, Reading
from evdlm.state_files import SaveTimer, load_state, save_document

log = logging.getLogger("evdlm.demand")

STATE_FORMAT = 1
NEED_MARGIN = 1.03  # the departures' average need, plus this share, is what the target must allow
SAVE_EVERY_S = 60.0


def settings_for(config: SiteConfig) -> DemandSettings | None:
    demand = config.demand
    if demand is None or not demand.enabled:
        return None
    return DemandSettings(
        window_s=demand.window_min * 60.0,
        rolling=demand.window == "rolling",
        timezone=config.site.timezone,
        billing_day=demand.billing_day,
        floor_w=demand.floor_kw * 1000.0,
        rate_per_kw=demand.rate_per_kw,
        connection_w=config.grid.import_limit_kw * 1000.0,
    )


def _number(value: Any, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return float(value)


def parse_state(data: Any) -> WindowState:
    """A state file's content (hostile until checked: every number finite, the shapes right)."""
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ValueError(f"not a format {STATE_FORMAT} demand state file")
    month = data.get("month")
    if not isinstance(month, str) or len(month) != 7:
        raise ValueError(f"month must be 'YYYY-MM', not {month!r}")
    buckets_raw = data.get("buckets", [])
    if not isinstance(buckets_raw, list) or len(buckets_raw) > 2880:  # an hour of 10 s buckets, and room
        raise ValueError("buckets must be a list of at most 2880")
    buckets = []
    for bucket in buckets_raw:
        if not isinstance(bucket, list) or len(bucket) != 2:
            raise ValueError(f"a bucket is [start_s, wh], not {bucket!r}")
        buckets.append(
            (float(_number(bucket[0], "bucket start") or 0.0), float(_number(bucket[1], "bucket Wh") or 0.0))
        )
    peak = _number(data.get("month_peak_w"), "month_peak_w") or 0.0
    energy = _number(data.get("energy_wh", 0.0), "energy_wh") or 0.0
    if peak < 0 or energy < 0:
        raise ValueError("month_peak_w and energy_wh cannot be negative")
    return WindowState(
        month=month,
        month_peak_w=peak,
        month_peak_at_s=_number(data.get("month_peak_at_s"), "month_peak_at_s", optional=True),
        window_start_s=_number(data.get("window_start_s"), "window_start_s", optional=True),
        energy_wh=energy,
        buckets=tuple(buckets),
        last_s=_number(data.get("last_s"), "last_s", optional=True),
        last_import_w=_number(data.get("last_import_w"), "last_import_w", optional=True),
    )


def save_state(path: Path, state: WindowState) -> None:
    save_document(path, {"format": STATE_FORMAT, **state.as_json()}, "demand window state")


class DemandKeeper:
    """One site's demand window: ``step`` once per cycle, before the decision."""

    def __init__(
        self,
        settings: DemandSettings,
        grid_meter: str | None,
        state_file: Path | None = None,
        evse_max_w: Mapping[EvseKey, float] | None = None,
        voltage_v: float = 230.0,
    ) -> None:
        self.settings = settings
        self.grid_meter = grid_meter
        self.state_file = state_file
        self.evse_max_w = dict(evse_max_w or {})  # what each EVSE can deliver at most (its charger)
        self._voltage_v = voltage_v
        # The load evdlm does not command, as the decisions estimated it, over the last window: its
        # median (a car's raise shows in the grid meter before its own sample does, so single
        # estimates err high while cars ramp).
        self._uncontrolled: deque[tuple[float, float]] = deque()
        self.state = WindowState()
        if state_file is not None:
            loaded = load_state(state_file, parse_state)
            if loaded is not None:
                self.state = loaded
                log.info(
                    "demand window restored: month %s peak %.1f kW, window energy %.2f kWh",
                    loaded.month,
                    loaded.month_peak_w / 1000.0,
                    loaded.energy_wh / 1000.0,
                )
        self.last: DemandDecision | None = None
        self._save_timer = SaveTimer(SAVE_EVERY_S)
        self._raise_logged_s = -math.inf

    @staticmethod
    def for_config(config: SiteConfig, state_dir: Path | None) -> DemandKeeper | None:
        settings = settings_for(config)
        if settings is None:
            return None
        assert config.demand is not None
        state_file = state_dir / config.demand.state_file if state_dir is not None else None
        voltage_v = config.grid.nominal_voltage_v
        evse_max_w = {}
        for charger in config.chargers:
            if charger.kind is ChargerKind.DC:
                most_w = (charger.max_power_kw or 0.0) * 1000.0
            else:
                phases = 1 if charger.kind is ChargerKind.AC_1PHASE else 3
                most_w = charger.max_current_a * voltage_v * phases
            for evse_id in range(1, charger.evses + 1):
                evse_max_w[(charger.id, evse_id)] = most_w
        return DemandKeeper(settings, config.grid.meter, state_file, evse_max_w, voltage_v)

    def step(
        self,
        now_s: float,
        readings: Mapping[str, Reading],
        states: Mapping[EvseKey, EvseState],
        uncontrolled_w: float,
    ) -> DemandDecision:
        """Account the import up to now and decide this cycle's cap. ``uncontrolled_w``: the import
        the controller does not command (its last estimate), for the target's raise."""
        reading = readings.get(self.grid_meter) if self.grid_meter else None
        import_w = reading.power_w if reading is not None and reading.usable else None
        self.state = advance(self.state, now_s, import_w, self.settings)
        reserve_s = self.settings.window_s
        sessions = []
        for key, state in states.items():
            needed_wh, departure_s = state.energy_needed_wh, state.departure_at_s
            if not state.connected or needed_wh is None or departure_s is None:
                continue
            if not (math.isfinite(needed_wh) and math.isfinite(departure_s)):
                continue
            # What the car can still take by then: raising the site's peak for more buys nothing.
            most_w = self.evse_max_w.get(key, math.inf)
            if state.ev_max_current_a is not None and math.isfinite(state.ev_max_current_a):
                most_w = min(most_w, state.ev_max_current_a * self._voltage_v * 3)
            takeable_wh = most_w * max(0.0, departure_s - reserve_s - now_s) / 3600.0
            sessions.append((min(needed_wh, takeable_wh), departure_s, most_w))
        if math.isfinite(uncontrolled_w):
            self._uncontrolled.append((now_s, uncontrolled_w))
        while self._uncontrolled and self._uncontrolled[0][0] < now_s - self.settings.window_s:
            self._uncontrolled.popleft()
        other_w = statistics.median(value for _, value in self._uncontrolled) if self._uncontrolled else 0.0
        decision = decide_window(
            self.state,
            now_s,
            self.settings,
            # Each car done a window before it leaves: room for the allocation's own friction
            # (minimum currents, whole amps, the cars' lag) within the least raise.
            needed_ev_w=needed_power_w(sessions, now_s, reserve_s=reserve_s) * NEED_MARGIN,
            uncontrolled_w=other_w,
        )
        # A raise is told once per window at most (its figures move every cycle).
        if decision.raised_because is not None and now_s - self._raise_logged_s >= self.settings.window_s:
            self._raise_logged_s = now_s
            log.warning("demand window: %s", decision.raised_because)
        self.last = decision
        return decision

    def due_for_save(self, now_s: float) -> bool:
        return self.state_file is not None and self._save_timer.due(now_s)

    def save(self) -> None:
        if self.state_file is not None:
            save_state(self.state_file, self.state)
