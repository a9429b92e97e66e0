"""A small planning site for the tests: the shipped workplace day cut to 10-16 chargers and 4 hours."""

from __future__ import annotations

from evdlm.sim.planning import PlanSite, Sweep
from evdlm.sim.sample_day import workplace_day_spec

START = "2026-06-16T07:00"  # site-local (Europe/Berlin): the morning's arrivals


def small_site() -> PlanSite:
    spec = workplace_day_spec()
    return PlanSite("workplace-50", spec.config_text, spec.sessions, spec.series, spec.dr)


def twelve_scenarios() -> Sweep:
    """2 charger counts × 3 connections × 2 batteries = 12 short scenarios (4 h at 60 s cycles)."""
    return Sweep(
        axes={"chargers": (10, 16), "connection_kw": (90.0, 110.0, 140.0), "battery_kwh": (0, 50)},
        hours=4.0,
        start=START,
        cycle_period_s=60.0,
        sample_interval_s=60.0,
    )
