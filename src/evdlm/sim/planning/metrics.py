"""One scenario, simulated in closed loop, and its row of figures.

The columns (docs/planning.md says what each means):

* per session (:class:`evdlm.sim.session_kpis.SessionTracker`, as the quality benchmark):
  ``sessions``, ``requested_kwh``, ``delivered_kwh``, ``energy_pct``, ``sessions_served_pct``,
  ``unmet_kwh`` (what was still missing when each car left, or at the end of the period),
  ``fairness_jain`` (Jain's index over each session's delivered/requested, capped at 1);
* at the grid connection (the simulated grid meter, + = import): ``peak_import_kw`` (highest cycle),
  ``peak_15min_kw`` (highest 15-minute mean, what demand charges bill), ``minutes_at_limit``
  (import at or above 95 % of the import limit in force), ``minutes_over_limit`` (import above
  the limit in force by more than 0.5 kW);
* cost (the scenario's tariff): ``energy_cost`` (import × price − export × export price),
  ``demand_cost`` (``peak_15min_kw`` × the demand charge), ``currency``;
* availability (the NEVI classes of docs/availability.md), where a charger has
  ``min_power_floor_kw``: ``uptime_pct``, ``below_floor_port_h``, ``dr_curtailed_port_h``;
* ``error``: empty, or the exception of a scenario that failed twice.
"""

from __future__ import annotations

import time
import traceback
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from evdlm.config import parse_site_config
from evdlm.config.models import SiteConfig, Tariffs
from evdlm.core.availability import Availability, classify, port_samples
from evdlm.core.decide import SolverChoice
from evdlm.core.demand_window import DemandSettings, peak_rolling_window, peak_window
from evdlm.core.tariff import import_price_at
from evdlm.core.topology import GRID_NODE, Topology, build_topology
from evdlm.replay.kpi import jain_index
from evdlm.sim.closed_loop import CycleView, simulate
from evdlm.sim.planning.scenarios import PlanCase, Scenario, scenario_spec
from evdlm.sim.session_kpis import SessionTracker

SERVED_TOLERANCE_KWH = 0.1  # a car missing less than this is fully served
AT_LIMIT_SHARE = 0.95  # import at or above this share of the limit in force: at the limit
OVER_LIMIT_W = 500.0  # meter noise, as the replay KPIs
DEMAND_WINDOW_S = 900.0  # demand charges bill the highest 15-minute mean

SCENARIO_COLUMNS = [
    "scenario_id",
    "site",
    "chargers",
    "connection_kw",
    "circuits",
    "battery_kwh",
    "variant",
    "solver",
    "tariff",
]
FIGURE_COLUMNS = [
    "sessions",
    "requested_kwh",
    "delivered_kwh",
    "energy_pct",
    "sessions_served_pct",
    "unmet_kwh",
    "fairness_jain",
    "peak_import_kw",
    "peak_15min_kw",
    "minutes_at_limit",
    "minutes_over_limit",
    "energy_cost",
    "demand_cost",
    "currency",
    "uptime_pct",
    "below_floor_port_h",
    "dr_curtailed_port_h",
    "cycles",
    "wall_s",
    "error",
]
COLUMNS = SCENARIO_COLUMNS + FIGURE_COLUMNS
# Figures that depend on the machine, not the scenario (left out when runs are compared).
VOLATILE_COLUMNS = ("wall_s",)


class GridTracker:
    """Grid import, the limit in force, cost and availability, cycle by cycle."""

    def __init__(self, config: SiteConfig, topology: Topology, tariffs: Tariffs | None) -> None:
        self.config = config
        self.topology = topology
        self.grid_meter = config.grid.meter
        self.tariffs = tariffs
        self.zone = ZoneInfo(config.site.timezone)
        self.prices: dict[int, float] = {}
        self.import_w: list[float] = []
        self.period_s: list[float] = []
        self.now_s: list[float] = []
        self.at_limit_s = 0.0
        self.over_limit_s = 0.0
        self.energy_cost = 0.0
        self.with_floor = any(charger.min_power_floor_kw is not None for charger in config.chargers)
        self.class_s: dict[str, float] = {}

    def _price(self, now_s: float) -> float:
        assert self.tariffs is not None
        minute = int(now_s // 60)
        price = self.prices.get(minute)
        if price is None:
            local = datetime.fromtimestamp(minute * 60.0, UTC).astimezone(self.zone)
            price = self.prices[minute] = import_price_at(self.tariffs, local)
        return price

    def __call__(self, view: CycleView) -> None:
        reading = view.readings.get(self.grid_meter) if self.grid_meter is not None else None
        if reading is not None and reading.power_w is not None:
            import_w = float(reading.power_w)
        else:  # no grid meter: the cars are the site
            import_w = sum(view.node_phase_a[GRID_NODE]) * self.topology.nominal_voltage_v
        limit_w = float(view.decision.built.row_limit[self.topology.import_row])
        self.import_w.append(import_w)
        self.period_s.append(view.period_s)
        self.now_s.append(view.now_s)
        if import_w >= AT_LIMIT_SHARE * limit_w:
            self.at_limit_s += view.period_s
        if import_w > limit_w + OVER_LIMIT_W:
            self.over_limit_s += view.period_s
        if self.tariffs is not None:
            kwh = import_w * view.period_s / 3.6e6
            price = self._price(view.now_s) if kwh > 0 else self.tariffs.export_price_per_kwh
            self.energy_cost += kwh * price
        if self.with_floor:
            dr_cap = view.decision.built.row_limit[self.topology.import_row]
            contract = float(self.topology.slots.row_limit[self.topology.import_row])
            samples = port_samples(
                self.topology,
                view.decision,
                view.now_s,
                dr_import_limit_w=float(dr_cap) if dr_cap < contract - 1e-6 else None,
            )
            for sample in samples.values():
                kind, _cause = classify(sample)
                self.class_s[kind] = self.class_s.get(kind, 0.0) + view.period_s

    def peak_fixed_window_kw(self, window_s: float = DEMAND_WINDOW_S) -> tuple[float, float | None]:
        """The highest mean import over the windows a fixed-window tariff bills (aligned on the
        site's local clock, as evdlm.core.demand_window aligns them; only whole windows), kW, and
        that window's start."""
        settings = DemandSettings(window_s, False, self.config.site.timezone, 1, 0.0, 0.0)
        peak_w, start = peak_window(self.now_s, self.import_w, self.period_s, settings)
        return peak_w / 1000.0, start

    def peak_window_kw(self) -> float:
        """The highest mean import over any 15 minutes, kW (a run shorter than that: its mean)."""
        if not self.import_w:
            return 0.0
        values, periods = np.asarray(self.import_w), np.asarray(self.period_s)
        peak_w, start = peak_rolling_window(np.asarray(self.now_s), values, periods, DEMAND_WINDOW_S)
        return (peak_w if start is not None else float(values.mean())) / 1000.0


def _scenario_fields(scenario: Scenario) -> dict[str, Any]:
    circuits = scenario.circuits
    return {
        "scenario_id": scenario.scenario_id,
        "site": scenario.site,
        "chargers": scenario.chargers,
        "connection_kw": scenario.connection_kw,
        "circuits": None if circuits is None else str(circuits if not isinstance(circuits, dict) else dict(circuits)),
        "battery_kwh": scenario.battery_kwh,
        "variant": scenario.variant,
        "solver": scenario.solver,
        "tariff": scenario.tariff,
    }


def run_case(case: PlanCase) -> dict[str, Any]:
    """Simulate one scenario in closed loop through ``decide()`` and return its row (raises on
    any error: the runner reports it)."""
    started = time.perf_counter()
    spec, _data, demand_charge = scenario_spec(case)
    config = parse_site_config(spec.config_text, f"<scenario {case.scenario.scenario_id}>").config
    topology = build_topology(config)
    sessions = spec.sessions
    tracker = SessionTracker(sessions, SERVED_TOLERANCE_KWH)
    grid = GridTracker(config, topology, config.tariffs)

    def observe(view: CycleView) -> None:
        tracker(view)
        grid(view)

    cycles = simulate(spec, None, solver=SolverChoice(case.scenario.solver), observer=observe)
    figures = tracker.summary()
    requested = tracker.requested_kwh
    delivered = np.minimum(tracker.delivered_kwh, requested)
    ratio = np.divide(delivered, requested, out=np.ones_like(requested), where=requested > 0)
    peak_window_kw = grid.peak_window_kw()
    uptime = None
    if grid.with_floor and grid.class_s:
        total = sum(grid.class_s.values())
        uptime = 100.0 * (grid.class_s.get(Availability.UP, 0.0) + grid.class_s.get(Availability.EXCLUDED, 0.0))
        uptime /= total
    row = _scenario_fields(case.scenario)
    row.update(
        {
            "sessions": figures["sessions"],
            "requested_kwh": figures["requested_kwh"],
            "delivered_kwh": figures["delivered_kwh"],
            "energy_pct": figures["energy_pct"],
            "sessions_served_pct": figures["sessions_served_pct"],
            "unmet_kwh": round(float(np.clip(requested - tracker.delivered_kwh, 0.0, None).sum()), 2),
            "fairness_jain": round(jain_index(ratio), 4) if len(ratio) else None,
            "peak_import_kw": round(max(grid.import_w, default=0.0) / 1000.0, 2),
            "peak_15min_kw": round(peak_window_kw, 2),
            "minutes_at_limit": round(grid.at_limit_s / 60.0, 1),
            "minutes_over_limit": round(grid.over_limit_s / 60.0, 1),
            "energy_cost": round(grid.energy_cost, 2) if config.tariffs is not None else None,
            "demand_cost": round(peak_window_kw * demand_charge, 2),
            "currency": config.tariffs.currency if config.tariffs is not None else None,
            "uptime_pct": round(uptime, 3) if uptime is not None else None,
            "below_floor_port_h": round(grid.class_s.get(Availability.BELOW_FLOOR, 0.0) / 3600.0, 3)
            if grid.with_floor
            else None,
            "dr_curtailed_port_h": round(grid.class_s.get(Availability.DR_CURTAILED, 0.0) / 3600.0, 3)
            if grid.with_floor
            else None,
            "cycles": cycles,
            "wall_s": round(time.perf_counter() - started, 3),
            "error": "",
        }
    )
    return row


def error_row(scenario: Scenario, error: BaseException) -> dict[str, Any]:
    """The row of a scenario that failed: its axes, empty figures and the error."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(_scenario_fields(scenario))
    # A ScenarioFailed carries "<type>: <message>" already.
    text = str(error) if type(error).__name__ == "ScenarioFailed" else None
    row["error"] = text or traceback.format_exception_only(type(error), error)[-1].strip()
    return row
