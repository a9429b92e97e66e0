"""The billing month's energy and cost across cycles and restarts.

The accounting is pure (:mod:`evdlm.core.energy_cost`); this keeps the :class:`CostState`
between cycles, reads the grid meter and the cars' power from a cycle's inputs and the prices
from the schedule in force, and loads and saves ``tariffs.state_file`` (every minute and at stop)
so that a restart keeps the month's figures. The month is the demand charge's billing month
(``demand.billing_day``) or the calendar month, in the site's time zone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evdlm.config.models import SiteConfig
from evdlm.core.demand_window import month_of
from evdlm.core.energy_cost import CostState, account
from evdlm.core.types import EvseKey, EvseState, Reading
from evdlm.state_files import SaveTimer, load_state, save_document

log = logging.getLogger("evdlm.cost")

STATE_FORMAT = 1
SAVE_EVERY_S = 60.0
_NUMBERS = tuple(
    name for name in CostState.__dataclass_fields__ if name not in ("month",) and not name.startswith("last_")
)
_OPTIONAL = tuple(name for name in CostState.__dataclass_fields__ if name.startswith("last_"))


def parse_state(data: Any) -> CostState:
    """A :class:`CostState` from its file's JSON (hostile: every figure checked)."""
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ValueError("not a cost state file of format 1")
    month = data.get("month")
    if not isinstance(month, str) or len(month) != 7:
        raise ValueError(f"month must be YYYY-MM, not {month!r:.20}")
    values: dict[str, Any] = {"month": month}
    for name in (*_NUMBERS, *_OPTIONAL):
        value = data.get(name)
        if value is None and name in _OPTIONAL:
            values[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, not {value!r:.20}")
        if name in _NUMBERS and name not in ("import_cost", "export_credit", "ev_cost") and value < 0:
            raise ValueError(f"{name} must not be negative ({value})")
        values[name] = float(value)
    return CostState(**values)


class CostKeeper:
    """One site's month of energy and cost: ``step`` once per cycle."""

    def __init__(self, grid_meter: str | None, timezone: str, billing_day: int, state_file: Path | None) -> None:
        self.grid_meter = grid_meter
        self.timezone = timezone
        self.billing_day = billing_day
        self.state_file = state_file
        self.state = CostState()
        self._save_timer = SaveTimer(SAVE_EVERY_S)
        if state_file is not None:
            loaded = load_state(state_file, parse_state)
            if loaded is not None:
                self.state = loaded
                log.info(
                    "energy cost restored: month %s, %.1f kWh imported, %.2f net, %.1f kWh to cars",
                    loaded.month,
                    loaded.import_kwh,
                    loaded.net_cost,
                    loaded.ev_kwh,
                )

    @staticmethod
    def for_config(config: SiteConfig, state_dir: Path | None) -> CostKeeper | None:
        if config.tariffs is None:
            return None
        billing_day = config.demand.billing_day if config.demand is not None else 1
        state_file = state_dir / config.tariffs.state_file if state_dir is not None else None
        return CostKeeper(config.grid.meter, config.site.timezone, billing_day, state_file)

    def step(
        self,
        now_s: float,
        readings: Mapping[str, Reading],
        states: Mapping[EvseKey, EvseState],
        price_per_kwh: tuple[float, float],
    ) -> CostState:
        """Account the interval since the last cycle; ``price_per_kwh``: import and export now."""
        reading = readings.get(self.grid_meter) if self.grid_meter else None
        import_w = reading.power_w if reading is not None and reading.usable else None
        ev_w = sum(
            state.power_w
            for state in states.values()
            if state.charging and state.power_w is not None and math.isfinite(state.power_w) and state.power_w > 0
        )
        month = month_of(now_s, self.timezone, self.billing_day)
        before = self.state
        self.state = account(
            before,
            now_s,
            month,
            import_w=import_w,
            ev_w=ev_w,
            import_price=price_per_kwh[0],
            export_price=price_per_kwh[1],
        )
        if before.month and self.state.month != before.month:
            log.info(
                "billing month %s closed: %.1f kWh imported, %.1f exported, net %.2f; %.1f kWh to cars for %.2f",
                before.month,
                before.import_kwh,
                before.export_kwh,
                before.net_cost,
                before.ev_kwh,
                before.ev_cost,
            )
        return self.state

    def due_for_save(self, now_s: float) -> bool:
        return self.state_file is not None and self._save_timer.due(now_s)

    def save(self) -> None:
        if self.state_file is not None:
            save_document(self.state_file, {"format": STATE_FORMAT, **self.state.as_json()}, "energy cost state")
