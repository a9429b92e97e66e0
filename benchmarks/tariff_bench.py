"""Money on a closed-loop day: peak 15-minute demand, energy delivered and the monthly bill.

Each site's day is re-simulated closed loop through the real ``decide()``
(:func:`evdlm.sim.closed_loop.simulate`) three ways, from the same sessions (departures and
energy told, ISO 15118 style) and the same building and PV series:

- ``a_today``: the controller as before this feature (import capped at the grid limit);
- ``b_demand``: demand-window control (``demand:``: 15-minute clock-aligned windows, the
  month-to-date peak as the target, raised only when departures need it);
- ``c_demand_price``: (b) plus the live horizon planner over the site's time-of-use tariff
  (``control.horizon``), so energy moves to cheap hours within the deadlines and under the
  demand target;
- ``b_later_day`` and ``c_later_day``: (b) and (c) on a later day of the same month, after a
  first day like this one: the month's peak so far is (b)'s peak of the first day (given as
  ``demand.floor_kw``, which the target treats the same way).

Figures per run: energy delivered % and sessions fully served (``evdlm.sim.session_kpis``), the
peak 15-minute average import (clock-aligned windows of the grid meter's readings), energy cost of
the day (import kWh x the tariff's price at that time), and the estimated monthly bill = demand
rate x peak kW + 30 x the day's energy cost (a month of such days). The month's first day starts
with no peak, which is when the controller has the least to go by: the later-day variants show
the rest of the month. Target: (b) lowers the peak 15-minute demand by >= 20 % against (a) with
<= 1 point less energy delivered.

    .venv/bin/python benchmarks/tariff_bench.py [--sites workplace-50 depot-200] [--hours 24] [--json]
    evdlm bench tariff --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from evdlm.config import parse_site_config
from evdlm.core.topology import build_topology
from evdlm.sim.closed_loop import CycleView, SimulationSpec, simulate
from evdlm.sim.planning.metrics import GridTracker
from evdlm.sim.sample_day import depot_day_spec, workplace_day_spec
from evdlm.sim.session_kpis import SessionTracker, session_summary

WINDOW_S = 900.0
DEMAND_RATE_PER_KW = 12.0  # a typical European grid tariff's monthly capacity charge, per kW
DAYS_PER_MONTH = 30
SERVED_TOLERANCE_KWH = 0.5
TARGET_PEAK_CUT = 0.20
TARGET_ENERGY_POINTS = 1.0
DEPOT_TARIFFS = (
    "tariffs:\n"
    "  currency: EUR\n"
    "  default_import_price_per_kwh: 0.26\n"
    "  export_price_per_kwh: 0.05\n"
    "  periods:\n"
    "    - {start: '00:00', end: '06:00', import_price_per_kwh: 0.17}\n"
    "    - {start: '17:00', end: '21:00', import_price_per_kwh: 0.38}\n"
)


def _with(config_text: str, *, demand: bool, horizon: bool, floor_kw: float = 0.0) -> str:
    """The site's config with the variant's sections (appended: later YAML keys win only for new ones)."""
    text = config_text
    if "tariffs:" not in text:
        text += DEPOT_TARIFFS
    if demand:
        text += (
            f"demand: {{window_min: 15, window: fixed, rate_per_kw: {DEMAND_RATE_PER_KW:g}, floor_kw: {floor_kw:g}}}\n"
        )
    if horizon:
        # control: is one flow mapping on one or two lines in the sample configs: add horizon to it.
        marker = "control: {"
        assert marker in text, "the sample configs have a control: {...} mapping"
        text = text.replace(marker, "control: {horizon: {enabled: true, every_s: 300, step_s: 900, hours: 16}, ", 1)
    return text


DEPOT_CYCLE_S = 5.0  # the depot's own 1 s cycles make 86,400 per day and variant: 5 s, stated in the output


def _spec(site: str, hours: float, seed: int | None = None) -> SimulationSpec:
    """The site's day; ``seed`` draws another day of the same kind (None: the shipped one)."""
    seeded = {} if seed is None else {"seed": seed}
    if site == "workplace-50":
        spec = workplace_day_spec(hours=hours, **seeded)
    else:
        spec = depot_day_spec(hours=hours, **seeded)
        assert "control: {cycle_period_s: 1," in spec.config_text
        config_text = spec.config_text.replace(
            "control: {cycle_period_s: 1,", f"control: {{cycle_period_s: {DEPOT_CYCLE_S:g},", 1
        )
        spec = replace(spec, config_text=config_text)
    sessions = tuple(replace(session, announces_needs=True) for session in spec.sessions)
    sessions = tuple(
        replace(session, transaction_id=session.transaction_id or f"t{index}") for index, session in enumerate(sessions)
    )
    return replace(spec, sessions=sessions)


def run_variant(spec: SimulationSpec, variant: str, floor_kw: float = 0.0) -> dict[str, Any]:
    """One variant's day. ``floor_kw``: the peak already paid for this month (a configured floor,
    or on a later day the month's peak so far): the target's least, and billed at the least."""
    demand = variant != "a_today"
    horizon = variant.startswith("c_")
    config_text = _with(spec.config_text, demand=demand, horizon=horizon, floor_kw=floor_kw)
    config = parse_site_config(config_text, "<tariff bench>").config
    zone = ZoneInfo(config.site.timezone)
    tracker = SessionTracker(spec.sessions, SERVED_TOLERANCE_KWH)
    # Import, its cost and the billed windows: the same accounting as capacity planning's.
    grid = GridTracker(config, build_topology(config), config.tariffs)

    def observe(view: CycleView) -> None:
        tracker(view)
        grid(view)

    started = time.monotonic()
    simulate(replace(spec, config_text=config_text), None, observer=observe)
    elapsed_s = time.monotonic() - started
    peak_kw, peak_start = grid.peak_fixed_window_kw(WINDOW_S)
    summary = session_summary(tracker.requested_kwh, tracker.delivered_kwh, SERVED_TOLERANCE_KWH)
    import_kwh = sum(max(0.0, w) * p for w, p in zip(grid.import_w, grid.period_s, strict=True)) / 3.6e6
    # The month's bill charges its highest window: this day's, or the one before it.
    demand_charge = max(peak_kw, floor_kw) * DEMAND_RATE_PER_KW
    return {
        "variant": variant,
        **summary,
        "peak_15min_kw": round(peak_kw, 1),
        "peak_window_local": datetime.fromtimestamp(peak_start, UTC).astimezone(zone).strftime("%H:%M")
        if peak_start is not None
        else None,
        "import_kwh": round(import_kwh, 1),
        "energy_cost_day": round(grid.energy_cost, 2),
        "cost_per_kwh_delivered": round(grid.energy_cost / summary["delivered_kwh"], 4)
        if summary["delivered_kwh"]
        else None,
        "demand_charge_month": round(demand_charge, 2),
        "bill_month_estimate": round(demand_charge + DAYS_PER_MONTH * grid.energy_cost, 2),
        "seconds": round(elapsed_s, 1),
    }


VARIANTS = ("a_today", "b_demand", "c_demand_price", "b_later_day", "c_later_day")
LATER_DAY = {"b_later_day", "c_later_day"}


def bench_site(
    site: str, hours: float, variants: Sequence[str] = VARIANTS, floor_kw: float = 0.0, seed: int | None = None
) -> dict[str, Any]:
    """``floor_kw``: the ``demand.floor_kw`` of the first-day variants (0: none; a saturated site
    would set its connection)."""
    spec = _spec(site, hours, seed)
    first_days = [variant for variant in dict.fromkeys(("a_today", *variants)) if variant not in LATER_DAY]
    if LATER_DAY & set(variants) and "b_demand" not in first_days:
        first_days.append("b_demand")  # the later days start from its peak
    runs = {variant: run_variant(spec, variant, floor_kw if variant != "a_today" else 0.0) for variant in first_days}
    for variant in (v for v in VARIANTS if v in LATER_DAY and v in variants):
        month_peak_kw = max(floor_kw, runs["b_demand"]["peak_15min_kw"])
        runs[variant] = {**run_variant(spec, variant, month_peak_kw), "month_peak_before_kw": month_peak_kw}
    a, b = runs["a_today"], runs.get("b_demand", runs["a_today"])
    peak_cut = 1.0 - b["peak_15min_kw"] / a["peak_15min_kw"] if a["peak_15min_kw"] > 0 else 0.0
    energy_points = a["energy_pct"] - b["energy_pct"]
    return {
        "site": site,
        "hours": hours,
        "floor_kw": floor_kw,
        "seed": seed,
        "cycle_s": parse_site_config(spec.config_text, site).config.control.cycle_period_s,
        "runs": list(runs.values()),
        "b_peak_cut_pct": round(100.0 * peak_cut, 1),
        "b_energy_points_lost": round(energy_points, 2),
        **(
            {"b_later_day_energy_points_lost": round(a["energy_pct"] - runs["b_later_day"]["energy_pct"], 2)}
            if "b_later_day" in runs
            else {}
        ),
        "target": f"b lowers the peak 15-min demand by >= {TARGET_PEAK_CUT:.0%} with <= {TARGET_ENERGY_POINTS:g} point less energy",
        "target_met": peak_cut >= TARGET_PEAK_CUT and energy_points <= TARGET_ENERGY_POINTS,
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| site | variant | energy % | served % | peak 15-min kW | energy cost/day | cost/kWh to cars | demand charge/month | bill/month (est.) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        for run in result["runs"]:
            lines.append(
                f"| {result['site']} | {run['variant']} | {run['energy_pct']:.2f} | {run['sessions_served_pct']:.1f} | "
                f"{run['peak_15min_kw']:.1f} | {run['energy_cost_day']:.2f} | {run['cost_per_kwh_delivered'] or 0:.4f} | "
                f"{run['demand_charge_month']:.2f} | "
                f"{run['bill_month_estimate']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sites", nargs="+", default=["workplace-50", "depot-200"], choices=["workplace-50", "depot-200"]
    )
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="a_today is always run")
    parser.add_argument("--floor-kw", type=float, default=0.0, help="demand.floor_kw of the first-day variants")
    parser.add_argument(
        "--seed", type=int, default=None, help="another day of the same kind (default: the shipped day)"
    )
    parser.add_argument("--json", action="store_true", help="JSON only (no table)")
    args = parser.parse_args(argv)
    results = [bench_site(site, args.hours, args.variants, args.floor_kw, args.seed) for site in args.sites]
    document = {"benchmark": "tariff", "results": results, "targets_met": all(r["target_met"] for r in results)}
    if not args.json:
        print(table(results), file=sys.stderr)
    print(json.dumps(document), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
