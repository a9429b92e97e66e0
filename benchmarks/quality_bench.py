"""Allocation quality on a closed-loop workplace day: evdlm's decide() against acnportal's LLF.

Issue 14's measure. A workplace day of 1-phase 230 V EVSEs (N = 50, 200, 1000) behind a
3-phase tree whose limits bind in the busy hours; every car's arrival, departure and energy
seeded; evdlm's own ``decide()`` runs in closed loop through :func:`evdlm.sim.closed_loop.simulate`
(60 s cycles, MeterValues every 60 s, a new limit reaches the car two cycles after it was
decided, cars stop at their energy or departure); the baseline is acnportal's
least-laxity-first (``SortedSchedulingAlgo(least_laxity_first)``, 5-minute periods, whole-amp
pilots 0 or 6–32 A) on the same sessions and the same rows, in the same process, up to
N = 200 (it grows ~N²). A reference LLF written here after acnportal's (sorted by laxity,
greedy whole-amp fill under the same rows), labelled ``llf-reference``, runs at every N and is
the baseline where acnportal did not run (N = 1000, or acnportal not installed:
``pip install -e '.[bench]'``). Figures and the method: benchmarks/README.md.

    .venv/bin/evdlm bench quality [--n 50 200 1000] [--scenarios known unknown noisy] [--hours 6 21] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from evdlm.sim.closed_loop import CycleView, Session, SimulationSpec, SiteSeries, simulate
from evdlm.sim.session_kpis import SessionTracker, changes_per_hour, session_summary

HOUR_S = 3600.0
PERIOD_LLF_S = 300.0  # acnportal's usual 5-minute period
CYCLE_EVDLM_S = 60.0  # evdlm's cycle in this bench (the config's maximum)
VOLTAGE_V = 230.0
EVSE_MAX_A = 32
FEEDER_SIZE = 20  # EVSEs per feeder
BOARD_SIZE = 100  # EVSEs per board
FEEDER_LIMIT_A = 150.0  # per phase: 20 EVSEs on 3 phases could draw 224 A on one phase
BOARD_FRACTION = 0.6  # board limit per phase as a share of its EVSEs' maximum per phase
MAIN_FRACTION = 0.4  # main fuse per phase as a share of all EVSEs' maximum per phase
DAY_START_H = 6.0
DAY_END_H = 21.0
START_S = datetime(2026, 6, 16, tzinfo=UTC).timestamp()  # a Tuesday, midnight UTC
NOISE_S = 3600.0  # σ of the noisy departures
SCENARIOS = ("known", "unknown", "noisy")
# A car missing less than this is served and no longer waiting: the energy of one 5-minute period at
# the 6 A minimum (LLF never gives a pilot above the remaining amp-periods, so it leaves up to that).
SERVED_TOLERANCE_KWH = 6 * VOLTAGE_V / 1000.0 * PERIOD_LLF_S / HOUR_S + 0.005
ACNPORTAL_MAX_N = 200  # acnportal's LLF takes ~30 s per day at N = 200 and grows ~N²: above, the reference only

TARGETS = {
    "energy_pct": ">= 99.5 and >= LLF's",
    "sessions_served_pct": ">= 98",
    "violations": "0",
    "stops_per_session": "<= 2",
    "heuristic_p99_ms": "<= 1 at N = 1000",
    "raises_per_car_hour": "<= 30 (changes per car per hour, cuts excepted)",
}


# --- the site -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    n: int
    config_text: str
    # rows: node id -> (per-phase limit A, EVSE indices under it); the grid row is "grid"
    row_names: list[str]  # "<node>:L<phase>"
    row_limits: np.ndarray  # (rows,)
    row_matrix: np.ndarray  # (rows, n) 0/1
    evse_phase: np.ndarray  # (n,) site phase 0..2
    node_of_row: list[tuple[str, int]] = field(default_factory=list)


def evse_id(index: int) -> str:
    return f"Q{index + 1:04d}"


def build_site(n: int, horizon: bool = False) -> Site:
    main_a = float(round(MAIN_FRACTION * n * EVSE_MAX_A / 3.0))
    feeders = math.ceil(n / FEEDER_SIZE)
    boards = math.ceil(n / BOARD_SIZE)
    board_a = [
        float(min(main_a, round(BOARD_FRACTION * min(BOARD_SIZE, n - b * BOARD_SIZE) * EVSE_MAX_A / 3.0)))
        for b in range(boards)
    ]
    lines = [
        "schema_version: 1",
        f"site: {{id: quality-{n}, timezone: UTC}}",
        f"grid: {{import_limit_kw: {main_a * 3 * VOLTAGE_V / 1000 * 1.5:.0f}, phase_current_limit_a: {main_a:g}, meter: grid_meter}}",
        "circuits:",
        "  - id: main",
        f"    phase_current_limit_a: {main_a:g}",
        "    children:",
    ]
    for b in range(boards):
        lines += [f"      - id: board{b + 1}", f"        phase_current_limit_a: {board_a[b]:g}", "        children:"]
        for f in range(b * BOARD_SIZE // FEEDER_SIZE, min(feeders, (b + 1) * BOARD_SIZE // FEEDER_SIZE)):
            lines.append(
                f"          - {{id: feeder{f + 1}, phase_current_limit_a: {min(FEEDER_LIMIT_A, board_a[b]):g}}}"
            )
    lines.append("chargers:")
    rotations = ("L1-L2-L3", "L2-L3-L1", "L3-L1-L2")
    for i in range(n):
        lines.append(
            f'  - {{id: {evse_id(i)}, ocpp_version: "2.0.1", kind: ac_1phase, circuit: feeder{i // FEEDER_SIZE + 1}, '
            f"phase_rotation: {rotations[i % 3]}, max_current_a: {EVSE_MAX_A}}}"
        )
    lines += [
        "devices:",
        "  - {name: grid_meter, role: grid_meter, max_age_s: 120, sim: {model: grid_meter}}",
        "ocpp: {failsafe_current_a: 0, meter_sample_interval_s: 60, non_compliance_grace_s: 300}",
        f"control: {{cycle_period_s: {CYCLE_EVDLM_S:g}, safety_margin_a: 0, safety_margin_kw: 0,"
        f" settle_time_s: {2 * CYCLE_EVDLM_S:g},",
        f"          lease_refresh_s: {CYCLE_EVDLM_S:g}, lease_duration_s: {3 * CYCLE_EVDLM_S:g},",
        f"          fallback_import_limit_kw: {main_a * 3 * VOLTAGE_V / 1000:.0f},",
        f"          horizon: {{enabled: {'true' if horizon else 'false'}, every_s: 300, step_s: 900, hours: 16}}}}",
        "recording: {rotate_after_s: 3600}",
    ]
    # Rows, in the same shape for both schedulers.
    evse_phase = np.arange(n) % 3
    row_names: list[str] = []
    limits: list[float] = []
    members: list[np.ndarray] = []
    node_of_row: list[tuple[str, int]] = []

    def add(node: str, limit_a: float, under: np.ndarray) -> None:
        for phase in range(3):
            on = under & (evse_phase == phase)
            if on.any():
                row_names.append(f"{node}:L{phase + 1}")
                limits.append(limit_a)
                members.append(on.astype(float))
                node_of_row.append((node, phase))

    index = np.arange(n)
    add("grid", main_a, np.ones(n, dtype=bool))  # the main circuit has the same limit
    for b in range(boards):
        add(f"board{b + 1}", board_a[b], index // BOARD_SIZE == b)
    for f in range(feeders):
        add(f"feeder{f + 1}", min(FEEDER_LIMIT_A, board_a[f * FEEDER_SIZE // BOARD_SIZE]), index // FEEDER_SIZE == f)
    return Site(n, "\n".join(lines) + "\n", row_names, np.array(limits), np.array(members), evse_phase, node_of_row)


# --- the day --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Visit:
    evse: int
    arrival_s: float  # on the 5-minute grid, so both schedulers see the same times
    departure_s: float
    energy_kwh: float
    ev_max_a: float
    announced_departure_s: float  # σ = 1 h noise, for the noisy scenario


def workplace_day(n: int, seed: int, hours_end: float = DAY_END_H) -> list[Visit]:
    """One car per EVSE (92 % of bays used): arrivals 7–10 h, dwell 4–10 h, energy 5–40 kWh
    limited to 85 % of dwell × the car's maximum power."""
    rng = np.random.default_rng(seed)
    grid = PERIOD_LLF_S
    visits: list[Visit] = []
    for i in range(n):
        if rng.random() < 0.08:
            continue
        arrival_h = float(np.clip(rng.normal(8.4, 0.75), 7.0, 10.0))
        dwell_h = float(np.clip(rng.normal(7.5, 1.6), 4.0, 10.0))
        ev_max_a = float(rng.choice([16.0, 32.0], p=[0.3, 0.7]))
        arrival = START_S + round(arrival_h * HOUR_S / grid) * grid
        departure = min(arrival + round(dwell_h * HOUR_S / grid) * grid, START_S + hours_end * HOUR_S)
        dwell_s = departure - arrival
        if dwell_s < HOUR_S:
            continue
        cap_kwh = 0.85 * dwell_s / HOUR_S * ev_max_a * VOLTAGE_V / 1000.0
        energy = round(min(float(rng.uniform(5.0, 40.0)), cap_kwh), 2)
        noisy = departure + float(rng.normal(0.0, NOISE_S))
        noisy = max(noisy, arrival + 1800.0)
        noisy = START_S + round((noisy - START_S) / grid) * grid
        visits.append(Visit(i, arrival, departure, energy, ev_max_a, noisy))
    return visits


# --- accounting shared by both schedulers ----------------------------------------------------


def _summary(
    visits: list[Visit],
    delivered_kwh: np.ndarray,
    stops: np.ndarray,
    longest_wait_s: np.ndarray,
    violations: int,
    worst_excess_a: float,
) -> dict[str, Any]:
    requested = np.array([v.energy_kwh for v in visits])
    return {
        **session_summary(requested, delivered_kwh, SERVED_TOLERANCE_KWH),
        "violations": int(violations),
        "worst_excess_a": round(worst_excess_a, 2),
        "stops_per_session": round(float(stops.mean()), 3),
        "max_stops": int(stops.max()) if len(stops) else 0,
        "longest_wait_s": float(longest_wait_s.max()) if len(longest_wait_s) else 0.0,
    }


def _percentile_ms(samples: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(samples), q)) * 1000.0, 4) if samples else None


# --- evdlm in closed loop --------------------------------------------------------------------


def run_evdlm(site: Site, visits: list[Visit], scenario: str, hours_start: float, hours_end: float) -> dict[str, Any]:
    sessions = tuple(
        Session(
            charger_id=evse_id(v.evse),
            evse_id=1,
            arrival_s=v.arrival_s,
            departure_s=v.departure_s,
            energy_needed_kwh=v.energy_kwh,
            ev_max_current_a=v.ev_max_a,
            phases=1,
            announces_needs=scenario != "unknown",
            transaction_id=f"s{index}",
            announced_departure_s=v.announced_departure_s if scenario == "noisy" else None,
        )
        for index, v in enumerate(visits)
    )
    zero = SiteSeries(building_w=lambda now_s: 0.0, pv_w=lambda now_s: 0.0)
    spec = SimulationSpec(
        config_text=site.config_text,
        start_s=START_S + hours_start * HOUR_S,
        duration_s=(hours_end - hours_start) * HOUR_S,
        sessions=sessions,
        series=zero,
        sample_interval_s=CYCLE_EVDLM_S,
    )
    # Per car: energy, stops, waits and limit changes (the accounting capacity planning shares).
    tracker = SessionTracker(sessions, SERVED_TOLERANCE_KWH)
    heuristic_s: list[float] = []
    chain_s: list[float] = []
    violations = 0
    worst = 0.0
    rows = [
        (node if node != "grid" else "__grid__", phase, limit)
        for (node, phase), limit in zip(site.node_of_row, site.row_limits, strict=True)
    ]
    solvers: dict[str, int] = {}

    def observe(view: CycleView) -> None:
        nonlocal violations, worst
        tracker(view)
        for node, phase, limit in rows:
            key = node if node != "__grid__" else grid_node
            excess = view.node_phase_a[key][phase] - limit
            if excess > 1e-6:
                violations += 1
                worst = max(worst, excess)
        result = view.decision.result
        solvers[result.solver.value] = solvers.get(result.solver.value, 0) + 1
        if view.decision.built.problem.n_evse > 0:
            heuristic_s.append(result.timings.heuristic_s)
            chain_s.append(result.timings.total_s)

    from evdlm.core.topology import GRID_NODE

    grid_node = GRID_NODE
    started = time.perf_counter()
    cycles = simulate(spec, None, observer=observe)
    summary = _summary(visits, tracker.delivered_kwh, tracker.stops, tracker.wait_max_s, violations, worst)
    summary.update(
        {
            "scheduler": "evdlm",
            "period_s": CYCLE_EVDLM_S,
            "cycles": cycles,
            "heuristic_p50_ms": _percentile_ms(heuristic_s, 50),
            "heuristic_p99_ms": _percentile_ms(heuristic_s, 99),
            "chain_p50_ms": _percentile_ms(chain_s, 50),
            "chain_p99_ms": _percentile_ms(chain_s, 99),
            "solvers": solvers,
            "wall_s": round(time.perf_counter() - started, 2),
        }
    )
    summary.update(changes_per_hour(tracker.raises, tracker.cuts, tracker.plugged_s))
    return summary


# --- least laxity first ----------------------------------------------------------------------


def _llf_inputs(visits: list[Visit], scenario: str, hours_start: float) -> list[tuple[int, int, int, int]]:
    """(arrival, departure, estimated departure, evse) in periods from the window's start."""
    origin = START_S + hours_start * HOUR_S
    out = []
    for v in visits:
        arrival = max(0, round((v.arrival_s - origin) / PERIOD_LLF_S))  # a car already there: from the start
        departure = round((v.departure_s - origin) / PERIOD_LLF_S)
        if scenario == "noisy":
            estimate = round((v.announced_departure_s - origin) / PERIOD_LLF_S)
        elif scenario == "unknown":
            estimate = arrival + round(8 * HOUR_S / PERIOD_LLF_S)  # a default stay of 8 h
        else:
            estimate = departure
        out.append((arrival, departure, max(estimate, arrival + 1), v.evse))
    return out


def _accounting_from_rates(
    site: Site, visits: list[Visit], timing: list[tuple[int, int, int, int]], rates: np.ndarray
) -> dict[str, Any]:
    """rates: (n, periods) what each EVSE's car actually drew (A)."""
    load = site.row_matrix @ rates
    excess = load - site.row_limits[:, None]
    violations = int((excess > 1e-6).sum())
    worst = float(excess.max()) if excess.size else 0.0
    period_h = PERIOD_LLF_S / HOUR_S
    delivered = np.zeros(len(visits))
    stops = np.zeros(len(visits), dtype=int)
    wait_max = np.zeros(len(visits))
    for i, ((arrival, departure, _estimate, evse), visit) in enumerate(zip(timing, visits, strict=True)):
        got = 0.0
        waiting = 0.0
        previous = 0.0
        for t in range(arrival, min(departure, rates.shape[1])):
            rate = rates[evse, t]
            wanted = got < visit.energy_kwh - SERVED_TOLERANCE_KWH
            if not wanted:
                break
            if rate <= 0.0:
                if previous > 0.0:
                    stops[i] += 1
                waiting += PERIOD_LLF_S
                wait_max[i] = max(wait_max[i], waiting)
            else:
                waiting = 0.0
            got += rate * VOLTAGE_V / 1000.0 * period_h
            previous = rate
        delivered[i] = min(got, visit.energy_kwh)
    return _summary(visits, delivered, stops, wait_max, violations, max(worst, 0.0))


def run_llf_acnportal(
    site: Site, visits: list[Visit], scenario: str, hours_start: float, hours_end: float
) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas fragmentation warnings while the network is built
        return _run_llf_acnportal(site, visits, scenario, hours_start, hours_end)


def _run_llf_acnportal(
    site: Site, visits: list[Visit], scenario: str, hours_start: float, hours_end: float
) -> dict[str, Any]:
    from acnportal import acnsim  # type: ignore[import-untyped]
    from acnportal.algorithms import SortedSchedulingAlgo, least_laxity_first  # type: ignore[import-untyped]

    network = acnsim.ChargingNetwork()
    ids = [evse_id(i) for i in range(site.n)]
    angles = (0.0, -120.0, 120.0)
    for i, station in enumerate(ids):
        evse = acnsim.FiniteRatesEVSE(station, [0, *range(6, EVSE_MAX_A + 1)])
        network.register_evse(evse, VOLTAGE_V, angles[int(site.evse_phase[i])])
    for name, limit, member in zip(site.row_names, site.row_limits, site.row_matrix, strict=True):
        # Every EVSE of a row is on the same site phase: the magnitude is the plain sum.
        network.add_constraint(acnsim.Current([ids[j] for j in np.flatnonzero(member)]), float(limit), name=name)
    timing = _llf_inputs(visits, scenario, hours_start)
    events = acnsim.EventQueue()
    for index, ((arrival, departure, estimate, evse), visit) in enumerate(zip(timing, visits, strict=True)):
        battery = acnsim.Battery(visit.energy_kwh, 0.0, visit.ev_max_a * VOLTAGE_V / 1000.0)
        ev = acnsim.EV(
            arrival, departure, visit.energy_kwh, ids[evse], f"s{index}", battery, estimated_departure=estimate
        )
        events.add_event(acnsim.PluginEvent(arrival, ev))
    scheduler = SortedSchedulingAlgo(least_laxity_first)
    solve_s: list[float] = []
    inner = scheduler.schedule

    def timed(active: Any) -> Any:
        started = time.perf_counter()
        try:
            return inner(active)
        finally:
            solve_s.append(time.perf_counter() - started)

    scheduler.schedule = timed  # type: ignore[method-assign]
    start = datetime.fromtimestamp(START_S + hours_start * HOUR_S, UTC)
    sim = acnsim.Simulator(network, scheduler, events, start, period=PERIOD_LLF_S / 60.0, verbose=False)
    started = time.perf_counter()
    sim.run()
    periods = round((hours_end - hours_start) * HOUR_S / PERIOD_LLF_S)
    rates = np.zeros((site.n, periods))
    actual = sim.charging_rates
    width = min(periods, actual.shape[1])
    order = [network.station_ids.index(station) for station in ids]
    rates[:, :width] = actual[order, :width]
    summary = _accounting_from_rates(site, visits, timing, rates)
    summary.update(
        {
            "scheduler": "llf-acnportal",
            "period_s": PERIOD_LLF_S,
            "cycles": len(solve_s),
            "solve_p50_ms": _percentile_ms(solve_s, 50),
            "solve_p99_ms": _percentile_ms(solve_s, 99),
            "wall_s": round(time.perf_counter() - started, 2),
        }
    )
    return summary


def run_llf_reference(
    site: Site, visits: list[Visit], scenario: str, hours_start: float, hours_end: float
) -> dict[str, Any]:
    """Reference LLF (not acnportal's code, written after it): every 5 minutes sort the cars
    still wanting energy by laxity (estimated departure − now − remaining amp-periods at the
    EVSE's 32 A), then give each in turn the largest whole-amp pilot in {0, 6..32}, at most its
    remaining amp-periods, that keeps every row within its limit. Cars draw min(pilot, their own
    maximum)."""
    timing = _llf_inputs(visits, scenario, hours_start)
    periods = round((hours_end - hours_start) * HOUR_S / PERIOD_LLF_S)
    period_h = PERIOD_LLF_S / HOUR_S
    rates = np.zeros((site.n, periods))
    remaining = np.array([v.energy_kwh for v in visits])
    ev_max = np.array([v.ev_max_a for v in visits])
    solve_s: list[float] = []
    started = time.perf_counter()
    per_amp_kwh = VOLTAGE_V / 1000.0 * period_h
    for t in range(periods):
        tick = time.perf_counter()
        active = [i for i, (a, d, _e, _x) in enumerate(timing) if a <= t < d and remaining[i] > 1e-9]
        laxity = {
            i: (timing[i][2] - t) - remaining[i] / (EVSE_MAX_A * per_amp_kwh) for i in active
        }  # in periods, as acnportal
        headroom = site.row_limits.copy()
        pilots: dict[int, int] = {}
        for i in sorted(active, key=lambda i: laxity[i]):
            evse = timing[i][3]
            rows = site.row_matrix[:, evse] > 0
            room = float(headroom[rows].min())
            # As acnportal: no pilot above the remaining amp-periods (so a tail under 6 A·period stays).
            upper = min(float(EVSE_MAX_A), room, remaining[i] / per_amp_kwh)
            pilot = math.floor(upper + 1e-9)
            if pilot < 6:
                continue
            pilots[i] = pilot
            headroom[rows] -= pilot
        solve_s.append(time.perf_counter() - tick)
        for i, pilot in pilots.items():
            rate = min(float(pilot), ev_max[i], remaining[i] / per_amp_kwh)
            rates[timing[i][3], t] = rate
            remaining[i] -= rate * per_amp_kwh
    summary = _accounting_from_rates(site, visits, timing, rates)
    summary.update(
        {
            "scheduler": "llf-reference",
            "period_s": PERIOD_LLF_S,
            "cycles": periods,
            "solve_p50_ms": _percentile_ms(solve_s, 50),
            "solve_p99_ms": _percentile_ms(solve_s, 99),
            "wall_s": round(time.perf_counter() - started, 2),
        }
    )
    return summary


def _acnportal_version() -> str:
    from importlib.metadata import version

    return version("acnportal")


def acnportal_available() -> bool:
    try:
        import acnportal  # noqa: F401
    except ImportError:
        return False
    return True


# --- driver ----------------------------------------------------------------------------------


def run(
    sizes: list[int],
    scenarios: list[str],
    seed: int,
    hours_start: float,
    hours_end: float,
    baseline: str,
    acnportal_max_n: int = ACNPORTAL_MAX_N,
    horizon: bool = False,
) -> dict[str, Any]:
    if baseline == "auto":
        baseline = "acnportal" if acnportal_available() else "reference"
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n in sizes:
        site = build_site(n, horizon)
        visits = workplace_day(n, seed + n, hours_end)
        runners = [run_evdlm, run_llf_reference]
        if baseline == "acnportal" and n <= acnportal_max_n:
            runners.insert(1, run_llf_acnportal)
        for scenario in scenarios:
            for runner in runners:
                figures = runner(site, visits, scenario, hours_start, hours_end)
                figures.update({"n": n, "scenario": scenario, "rows": len(site.row_names)})
                figures["load_average_1min"] = round(os.getloadavg()[0], 2)
                results.append(figures)
                print(_line(figures), file=sys.stderr, flush=True)
        for scenario in scenarios:
            ours = _find(results, n, scenario, "evdlm")
            llfs = [r for r in results if r["n"] == n and r["scenario"] == scenario and r["scheduler"] != "evdlm"]
            theirs = next((r for r in llfs if r["scheduler"] == "llf-acnportal"), llfs[0])
            ours["compared_with"] = theirs["scheduler"]
            ours["energy_vs_llf_pp"] = round(ours["energy_pct"] - theirs["energy_pct"], 2)
            ours["targets_met"] = _targets(ours, theirs)
    return {
        "bench": "quality",
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "horizon_planning": horizon,
        "window_h": [hours_start, hours_end],
        "baseline": f"acnportal {_acnportal_version()} SortedSchedulingAlgo(least_laxity_first) up to N = {acnportal_max_n}, "
        "and the reference LLF of quality_bench.py at every N"
        if baseline == "acnportal"
        else "reference LLF in quality_bench.py only (acnportal not installed or not asked for)",
        "served_tolerance_kwh": round(SERVED_TOLERANCE_KWH, 3),
        "evdlm_cycle_s": CYCLE_EVDLM_S,
        "llf_period_s": PERIOD_LLF_S,
        "targets": TARGETS,
        "results": results,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }


def _find(results: list[dict[str, Any]], n: int, scenario: str, scheduler: str) -> dict[str, Any]:
    return next(r for r in results if r["n"] == n and r["scenario"] == scenario and r["scheduler"] == scheduler)


def _targets(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, bool | None]:
    p99 = ours["heuristic_p99_ms"]
    return {
        "energy_pct": ours["energy_pct"] >= 99.5 and ours["energy_pct"] >= theirs["energy_pct"],
        "sessions_served_pct": ours["sessions_served_pct"] >= 98.0,
        "violations": ours["violations"] == 0,
        "stops_per_session": ours["stops_per_session"] <= 2.0,
        "heuristic_p99_ms": (p99 is not None and p99 <= 1.0) if ours["n"] >= 1000 else None,
        "raises_per_car_hour": ours["raises_per_car_hour"] <= 30.0,
    }


def _line(r: dict[str, Any]) -> str:
    solve = (
        f"heuristic p50/p99 {r['heuristic_p50_ms']}/{r['heuristic_p99_ms']} ms"
        if r["scheduler"] == "evdlm"
        else f"solve p50/p99 {r['solve_p50_ms']}/{r['solve_p99_ms']} ms"
    )
    if "raises_per_car_hour" in r:
        solve += (
            f"  changes/car/h {r['changes_per_car_hour']:.2f} (raises {r['raises_per_car_hour']:.2f}, "
            f"worst car {r['max_raises_per_car_hour']:.1f})"
        )
    return (
        f"N={r['n']:<5} {r['scenario']:<8} {r['scheduler']:<14} energy {r['energy_pct']:6.2f} %  "
        f"served {r['sessions_served_pct']:6.2f} %  violations {r['violations']}  "
        f"stops/session {r['stops_per_session']:.2f} (max {r['max_stops']})  longest wait {r['longest_wait_s']:.0f} s  "
        f"{solve}  load {r.get('load_average_1min', '')}  ({r['wall_s']} s)"
    )


def _table(report: dict[str, Any]) -> str:
    out = [
        f"baseline: {report['baseline']}; evdlm cycle {report['evdlm_cycle_s']:g} s, LLF period {report['llf_period_s']:g} s",
        "targets: " + "; ".join(f"{k} {v}" for k, v in TARGETS.items()),
    ]
    for r in report["results"]:
        line = _line(r)
        if r["scheduler"] == "evdlm":
            met = r["targets_met"]
            line += "  targets: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in met.items() if v is not None)
        out.append(line)
    out.append(f"whole run {report['wall_s']} s, load average {report['load_average_1min']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 200, 1000], help="EVSE counts")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--hours",
        type=float,
        nargs=2,
        default=[DAY_START_H, DAY_END_H],
        metavar=("FROM", "TO"),
        help="simulated window, hours of the day (default 6 21)",
    )
    parser.add_argument(
        "--baseline",
        choices=["auto", "acnportal", "reference"],
        default="auto",
        help="LLF from acnportal (needs the [bench] extra) or the reference LLF here",
    )
    parser.add_argument(
        "--acnportal-max-n",
        type=int,
        default=ACNPORTAL_MAX_N,
        help="run acnportal's LLF up to this N (slow above); the reference LLF runs at every N",
    )
    parser.add_argument(
        "--horizon",
        action="store_true",
        help="evdlm with live horizon planning (control.horizon.enabled: a plan every 5 min feeds admission)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    args = parser.parse_args(argv)
    if args.baseline == "acnportal" and not acnportal_available():
        parser.error("acnportal is not installed: pip install -e '.[bench]' (or --baseline reference)")
    report = run(
        args.n,
        args.scenarios,
        args.seed,
        args.hours[0],
        args.hours[1],
        args.baseline,
        args.acnportal_max_n,
        args.horizon,
    )
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
