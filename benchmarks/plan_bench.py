"""Capacity planning on Dask: scenarios per second with 1 and 2 workers, one 24 h scenario at 200 EVSEs.

Issue 19's measure. The sweep is the shipped 50-charger workplace day
(:func:`evdlm.sim.sample_day.workplace_day_spec`: its sessions, office load, PV, DR events) over a
range of grid connections, every scenario re-simulated in closed loop through ``decide()``
(:mod:`evdlm.sim.planning`). The same sweep runs on a :class:`distributed.LocalCluster` of 1
worker and of 2 (single-threaded processes on 127.0.0.1), each warmed up first (imports, numba
kernels) so the figure is the sweep, not the start-up; the speed-up is the ratio. Then one 24 h
scenario of the 200-EVSE depot day (:func:`evdlm.sim.sample_day.depot_day_spec`) in this process.
The table of delivered % against connection kW is printed, with whether it is monotone.

    .venv/bin/evdlm bench plan [--kw 60 80 ...] [--hours 24] [--cycle-s 30] [--workers 1 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from evdlm.sim.planning import PlanSite, Sweep, cases_of, run_dask
from evdlm.sim.planning.metrics import run_case
from evdlm.sim.planning.runner import local_cluster
from evdlm.sim.planning.scenarios import PlanCase, Scenario
from evdlm.sim.sample_day import depot_day_spec, workplace_day_spec

DEFAULT_KW = [60, 80, 100, 120, 140, 160, 180, 200, 250, 300]


def workplace_site() -> PlanSite:
    spec = workplace_day_spec()
    return PlanSite("workplace-50", spec.config_text, spec.sessions, spec.series, spec.dr, spec.start_s)


def depot_site() -> PlanSite:
    spec = depot_day_spec()
    return PlanSite("bench-200", spec.config_text, spec.sessions, spec.series, spec.dr, spec.start_s)


def _warm_up() -> float:
    """Run one short scenario in this process (imports, numba kernels); returns its wall time."""
    started = time.perf_counter()
    site = workplace_site()
    run_case(PlanCase(site, Scenario("warm/1", site.name), Sweep(hours=0.5, cycle_period_s=60.0)))
    return time.perf_counter() - started


def sweep_on_cluster(cases: list[PlanCase], workers: int) -> dict[str, Any]:
    from distributed import Client

    with local_cluster(workers) as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        warm_s = client.run(_warm_up)
        started = time.perf_counter()
        table = run_dask(cases, client, progress=False)
        wall_s = time.perf_counter() - started
    return {
        "workers": workers,
        "scenarios": len(cases),
        "wall_s": round(wall_s, 2),
        "scenarios_per_s": round(len(cases) / wall_s, 3),
        "warm_up_s": [round(value, 2) for value in warm_s.values()],
        "failed": int((table["error"] != "").sum()),
        "table": table,
    }


def run(kw: list[float], hours: float, cycle_s: float, workers: list[int], depot_hours: float) -> dict[str, Any]:
    site = workplace_site()
    sweep = Sweep(axes={"connection_kw": tuple(kw)}, hours=hours, cycle_period_s=cycle_s)
    cases = cases_of([site], {site.name: sweep})
    runs = []
    for count in workers:
        result = sweep_on_cluster(cases, count)
        print(
            f"{count} worker(s): {result['scenarios']} scenarios in {result['wall_s']} s = "
            f"{result['scenarios_per_s']} scenarios/s (load {os.getloadavg()[0]:.2f})",
            file=sys.stderr,
            flush=True,
        )
        runs.append(result)
    table = runs[-1]["table"]
    figures = table[["connection_kw", "energy_pct", "sessions_served_pct", "unmet_kwh", "peak_import_kw"]]
    figures = figures.sort_values("connection_kw")
    monotone = bool(figures["energy_pct"].is_monotonic_increasing)
    tables_equal = all(
        run_["table"].drop(columns=["wall_s"]).equals(runs[0]["table"].drop(columns=["wall_s"])) for run_ in runs
    )
    _warm_up()
    depot = depot_site()
    depot_sweep = Sweep(hours=depot_hours, cycle_period_s=cycle_s)
    started = time.perf_counter()
    depot_row = run_case(PlanCase(depot, Scenario("bench-200/0001", depot.name), depot_sweep))
    depot_s = time.perf_counter() - started
    by_workers = {r["workers"]: r["scenarios_per_s"] for r in runs}
    speedup = round(by_workers[2] / by_workers[1], 2) if 1 in by_workers and 2 in by_workers else None
    return {
        "bench": "plan",
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "site": "workplace-50 (the shipped sample day)",
        "sweep": {"connection_kw": kw, "hours": hours, "cycle_period_s": cycle_s},
        "runs": [{k: v for k, v in r.items() if k != "table"} for r in runs],
        "speedup_2_over_1": speedup,
        "same_table_on_every_cluster": tables_equal,
        "delivered_pct_by_connection_kw": figures.to_dict(orient="records"),
        "delivered_pct_monotone_in_kw": monotone,
        "scenario_200_evses": {
            "evses": 200,
            "hours": depot_hours,
            "cycle_period_s": cycle_s,
            "cycles": depot_row["cycles"],
            "sessions": depot_row["sessions"],
            "energy_pct": depot_row["energy_pct"],
            "wall_s": round(depot_s, 2),
        },
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _text(report: dict[str, Any]) -> str:
    lines = [f"sweep: {report['site']}, {report['sweep']}"]
    for r in report["runs"]:
        lines.append(f"  {r['workers']} worker(s): {r['scenarios_per_s']} scenarios/s ({r['wall_s']} s)")
    lines.append(f"  speed-up 2 vs 1 worker: {report['speedup_2_over_1']}x")
    lines.append("  connection_kw  energy_pct  served_pct  unmet_kwh  peak_import_kw")
    for row in report["delivered_pct_by_connection_kw"]:
        lines.append(
            f"  {row['connection_kw']:13.0f}  {row['energy_pct']:10.2f}  {row['sessions_served_pct']:10.2f}"
            f"  {row['unmet_kwh']:9.1f}  {row['peak_import_kw']:14.1f}"
        )
    lines.append(f"  delivered % monotone in connection kW: {report['delivered_pct_monotone_in_kw']}")
    depot = report["scenario_200_evses"]
    lines.append(
        f"one {depot['hours']:g} h scenario at 200 EVSEs ({depot['cycles']} cycles of {depot['cycle_period_s']:g} s): "
        f"{depot['wall_s']} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kw", type=float, nargs="+", default=DEFAULT_KW, help="connection kW of the sweep")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours per scenario (default 24)")
    parser.add_argument("--cycle-s", type=float, default=30.0, help="simulated control cycle, s (default 30)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="cluster sizes (default 1 2)")
    parser.add_argument("--depot-hours", type=float, default=24.0, help="hours of the 200-EVSE scenario (default 24)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    args = parser.parse_args(argv)
    report = run(args.kw, args.hours, args.cycle_s, args.workers, args.depot_hours)
    print(json.dumps(report, indent=1) if args.json else _text(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
