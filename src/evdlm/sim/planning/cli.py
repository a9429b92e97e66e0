"""`evdlm plan`: read the site(s), build the sweep, run it (Dask or serially), write the outputs."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from evdlm.config import ConfigError, parse_site_config
from evdlm.sim.planning.report import frontier_plot, summary_text, write_table
from evdlm.sim.planning.runner import check_workers, local_client, remote_client, run_dask, run_serial
from evdlm.sim.planning.scenarios import PlanSite, Sweep, cases_of, load_sweep, with_axes
from evdlm.sim.planning.sessions import load_sessions

SESSION_SUFFIXES = (".sessions.csv", ".sessions.json", ".sessions.jsonl", ".ocpp.jsonl")
EXIT_FAILED_SCENARIOS = 3


@dataclass(frozen=True)
class PlanOptions:
    config: Path | None = None
    sessions: Path | None = None
    meter: Path | None = None
    portfolio: Path | None = None
    sweep: Path | None = None
    axes: dict[str, list[Any] | None] = field(default_factory=dict)
    hours: float | None = None
    cycle_period_s: float | None = None
    out: Path = Path("plan-out")
    workers: int = 2
    scheduler: str | None = None
    serial: bool = False
    progress: bool = True


def site_from_files(config_path: Path, sessions_path: Path, meter_path: Path | None) -> PlanSite:
    """A :class:`PlanSite` from a site config, its sessions and optionally its grid-meter CSV
    (the site's other load; without it the cars are the only load)."""
    from evdlm.sim.importer import _series, parse_meter_csv

    text = config_path.read_text(encoding="utf-8")
    config = parse_site_config(text, str(config_path)).config
    sessions = load_sessions(sessions_path, config)
    meter = None
    if meter_path is not None:
        with meter_path.open(encoding="utf-8", newline="") as stream:
            meter = parse_meter_csv(stream, config.site.timezone)
    return PlanSite(config.site.id, text, sessions, _series(meter, sessions, config))


def portfolio_sites(folder: Path) -> list[tuple[PlanSite, Path | None]]:
    """Every site of ``folder``: ``NAME.yaml`` with ``NAME.sessions.csv`` (or ``.json``, ``.jsonl``,
    ``NAME.ocpp.jsonl``), optional ``NAME.meter.csv`` and ``NAME.sweep.yaml``."""
    out = []
    for config_path in sorted(folder.glob("*.yaml")):
        if config_path.name == "sweep.yaml" or config_path.name.endswith(".sweep.yaml"):
            continue
        stem = config_path.name.removesuffix(".yaml")
        sessions = next(
            (folder / f"{stem}{suffix}" for suffix in SESSION_SUFFIXES if (folder / f"{stem}{suffix}").exists()), None
        )
        if sessions is None:
            raise ValueError(f"{config_path}: no sessions file ({', '.join(stem + s for s in SESSION_SUFFIXES)})")
        meter = folder / f"{stem}.meter.csv"
        sweep = folder / f"{stem}.sweep.yaml"
        shared = folder / "sweep.yaml"
        out.append(
            (
                site_from_files(config_path, sessions, meter if meter.exists() else None),
                sweep if sweep.exists() else (shared if shared.exists() else None),
            )
        )
    if not out:
        raise ValueError(f"{folder}: no site configs (*.yaml)")
    return out


def _sweep(path: Path | None, options: PlanOptions) -> Sweep:
    sweep = with_axes(load_sweep(path), **options.axes)
    if options.hours is not None:
        sweep = replace(sweep, hours=options.hours)
    if options.cycle_period_s is not None:
        sweep = replace(sweep, cycle_period_s=options.cycle_period_s)
    return sweep


def run_plan(options: PlanOptions) -> pd.DataFrame:
    """Build the cases, run them as options say, write the table and plots; returns the table."""
    if options.portfolio is not None:
        found = portfolio_sites(options.portfolio)
        sites = [site for site, _ in found]
        sweeps = {site.name: _sweep(sweep_path or options.sweep, options) for site, sweep_path in found}
    else:
        assert options.config is not None and options.sessions is not None
        site = site_from_files(options.config, options.sessions, options.meter)
        sites, sweeps = [site], {site.name: _sweep(options.sweep, options)}
    names = [site.name for site in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"two sites with the same site.id: {names}")
    cases = cases_of(sites, sweeps)
    where = "serially" if options.serial else (options.scheduler or f"a LocalCluster of {options.workers} workers")
    print(f"{len(cases)} scenarios over {len(sites)} site(s), {where}", file=sys.stderr)
    if options.serial:
        frame = run_serial(cases, progress=options.progress)
    elif options.scheduler is not None:
        with remote_client(options.scheduler) as client:
            workers = check_workers(client)
            print(f"{workers} workers at {options.scheduler}", file=sys.stderr)
            frame = run_dask(cases, client, progress=options.progress)
    else:
        with local_client(options.workers) as client:
            frame = run_dask(cases, client, progress=options.progress)
    parquet, csv = write_table(frame, options.out)
    print(f"table: {parquet} and {csv}", file=sys.stderr)
    for name in names:
        if ((frame["site"] == name) & (frame["error"] == "") & frame["connection_kw"].notna()).any():
            path = frontier_plot(frame, name, options.out / f"frontier-{name}.png")
            print(f"frontier: {path}", file=sys.stderr)
    return frame


def plan_main(options: PlanOptions) -> int:
    try:
        frame = run_plan(options)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"evdlm plan: {exc}", file=sys.stderr)
        return 2
    print(summary_text(frame))
    failed = frame[frame["error"] != ""]
    for _, row in failed.iterrows():
        print(f"FAILED {row['scenario_id']}: {row['error']}", file=sys.stderr)
    return EXIT_FAILED_SCENARIOS if len(failed) else 0
