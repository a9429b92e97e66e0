"""The sweep: its file, its axes, and one scenario's site config and sessions.

A sweep file (YAML, every key optional)::

    hours: 24                 # simulated period from `start` (default: first arrival's midnight, 24 h)
    start: "2026-06-16T00:00" # site-local unless it has an offset
    cycle_period_s: 30        # the controller's cycle in the simulation (default: the config's)
    sample_interval_s: 30     # MeterValues period of the simulated chargers (default 30)
    demand_charge_per_kw: 0   # per kW of the period's highest 15-minute mean import
    axes:
      chargers: [25, 50, 75]            # charger count; arrivals scale with it
      connection_kw: [100, 150, 200]    # grid.import_limit_kw (main fuse raised to match)
      circuits: [1.0, 1.25, {level1: 200}]  # a factor on every circuit's rating, or ratings by id (A)
      battery_kwh: [0, 100]             # a stationary battery of this size (0: none), C/2
      solver: [heuristic, lp]
      variants: {base: {}, tight: {control: {safety_margin_kw: 10}}}  # merged into the config
      tariffs: {site: null, flat: {default_import_price_per_kwh: 0.3, demand_charge_per_kw: 12}}

Scenarios are the product of the axes in that order, numbered from 1; an axis left out is the
site as configured. Everything is deterministic: the same sweep gives the same scenarios.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from ruamel.yaml import YAML

from evdlm.sim.closed_loop import DrWindow, Session, SimulationSpec, SiteSeries

AXES = ("chargers", "connection_kw", "circuits", "battery_kwh", "variants", "solver", "tariffs")
NOMINAL_V = 230.0
BATTERY_C_RATE = 0.5  # kW per kWh of a swept battery
CLONE_JITTER_S = 1800.0  # a cloned charger's sessions move by up to ±30 min (seeded)
CLONE_SEED = 19


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file (module docstring)."""

    axes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    hours: float | None = None
    start: str | None = None
    cycle_period_s: float | None = None
    sample_interval_s: float = 30.0
    demand_charge_per_kw: float = 0.0


@dataclass(frozen=True)
class PlanSite:
    """One site's base inputs: its config, sessions and other load (as logged or simulated)."""

    name: str
    config_text: str
    sessions: tuple[Session, ...]
    series: SiteSeries = field(default_factory=lambda: SiteSeries(lambda now_s: 0.0, lambda now_s: 0.0))
    dr: tuple[DrWindow, ...] = ()
    start_s: float | None = None
    duration_s: float | None = None

    @classmethod
    def from_spec(cls, name: str, spec: SimulationSpec) -> PlanSite:
        """The site of a simulated day (e.g. :func:`evdlm.sim.sample_day.workplace_day_spec`)."""
        return cls(name, spec.config_text, spec.sessions, spec.series, spec.dr, spec.start_s, spec.duration_s)


@dataclass(frozen=True)
class Scenario:
    """One point of the sweep (None: as the site is configured)."""

    scenario_id: str
    site: str
    chargers: int | None = None
    connection_kw: float | None = None
    circuits: float | Mapping[str, float] | None = None
    battery_kwh: float | None = None
    variant: str = "base"
    solver: str = "heuristic"
    tariff: str = "site"


@dataclass(frozen=True)
class PlanCase:
    """What one Dask task (or one serial step) gets: the site, the scenario and the sweep."""

    site: PlanSite
    scenario: Scenario
    sweep: Sweep


def _yaml_load(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def parse_sweep(text: str) -> Sweep:
    """A :class:`Sweep` from YAML text (module docstring); unknown keys are errors."""
    data = _yaml_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError("sweep: expected a mapping")
    known = {"axes", "hours", "start", "cycle_period_s", "sample_interval_s", "demand_charge_per_kw"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"sweep: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    axes_in = data.get("axes") or {}
    unknown_axes = set(axes_in) - set(AXES)
    if unknown_axes:
        raise ValueError(f"sweep: unknown axes {sorted(unknown_axes)} (known: {list(AXES)})")
    axes: dict[str, tuple[Any, ...]] = {}
    for name, values in axes_in.items():
        if name in {"variants", "tariffs"}:
            if not isinstance(values, dict) or not values:
                raise ValueError(f"sweep: axis {name} is a mapping of name to settings")
            axes[name] = tuple(values.items())
        else:
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep: axis {name} is a non-empty list")
            axes[name] = tuple(values)
    start = data.get("start")
    return Sweep(
        axes=axes,
        hours=float(data["hours"]) if data.get("hours") is not None else None,
        start=str(start) if start is not None else None,
        cycle_period_s=float(data["cycle_period_s"]) if data.get("cycle_period_s") is not None else None,
        sample_interval_s=float(data.get("sample_interval_s", 30.0)),
        demand_charge_per_kw=float(data.get("demand_charge_per_kw", 0.0)),
    )


def load_sweep(path: Path | None) -> Sweep:
    return parse_sweep(path.read_text(encoding="utf-8")) if path is not None else Sweep()


def with_axes(sweep: Sweep, **axes: list[Any] | None) -> Sweep:
    """``sweep`` with the given axes replaced (command-line values win over the file's)."""
    merged = dict(sweep.axes)
    merged.update({name: tuple(values) for name, values in axes.items() if values})
    return replace(sweep, axes=merged)


def scenarios_of(site: str, sweep: Sweep) -> list[Scenario]:
    """Every scenario of the sweep for ``site``, in axis order, ids ``<site>/0001``..."""
    values = [sweep.axes.get(name, (None,)) for name in AXES]
    out = []
    for number, point in enumerate(itertools.product(*values), start=1):
        chargers, connection, circuits, battery, variant, solver, tariff = point
        out.append(
            Scenario(
                scenario_id=f"{site}/{number:04d}",
                site=site,
                chargers=int(chargers) if chargers is not None else None,
                connection_kw=float(connection) if connection is not None else None,
                circuits=circuits
                if isinstance(circuits, dict)
                else (float(circuits) if circuits is not None else None),
                battery_kwh=float(battery) if battery is not None else None,
                variant=variant[0] if variant is not None else "base",
                solver=str(solver) if solver is not None else "heuristic",
                tariff=tariff[0] if tariff is not None else "site",
            )
        )
    return out


def cases_of(sites: list[PlanSite], sweeps: Mapping[str, Sweep]) -> list[PlanCase]:
    """One case per scenario of every site (each site with its own sweep)."""
    return [
        PlanCase(site, scenario, sweeps[site.name])
        for site in sites
        for scenario in scenarios_of(site.name, sweeps[site.name])
    ]


# --------------------------------------------------------------------------- applying a scenario


def _merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _walk_circuits(circuits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for circuit in circuits:
        out.append(circuit)
        out += _walk_circuits(circuit.get("children") or [])
    return out


def _json_default(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    raise TypeError(f"cannot write {value!r} into a config")


def scenario_config(config_text: str, scenario: Scenario, sweep: Sweep) -> tuple[str, dict[str, Any], float]:
    """The scenario's site config as text (JSON, which is YAML), the config as a dict, and the
    demand charge per kW that applies (the tariff variant's, else the sweep's)."""
    data = _yaml_load(config_text)
    data = {key: value for key, value in data.items() if not str(key).startswith("x-")}
    demand_charge = sweep.demand_charge_per_kw
    variants = dict(sweep.axes.get("variants", ()))
    data = _merge(data, variants.get(scenario.variant) or {})
    tariffs = dict(sweep.axes.get("tariffs", ()))
    tariff = tariffs.get(scenario.tariff)
    if tariff is not None:
        tariff = dict(tariff)
        demand_charge = float(tariff.pop("demand_charge_per_kw", demand_charge))
        if tariff:  # a whole tariffs block in place of the site's
            data["tariffs"] = tariff
    if sweep.cycle_period_s is not None:
        control = data.setdefault("control", {})
        period_s = sweep.cycle_period_s
        control["cycle_period_s"] = period_s
        # A longer simulated cycle: the leases and the settle time must stay longer than it.
        control["lease_refresh_s"] = max(float(control.get("lease_refresh_s", 20.0)), period_s)
        control["lease_duration_s"] = max(float(control.get("lease_duration_s", 60.0)), 3.0 * period_s)
        control["settle_time_s"] = max(float(control.get("settle_time_s", 15.0)), 2.0 * period_s)
    if scenario.connection_kw is not None:
        grid = data["grid"]
        grid["import_limit_kw"] = scenario.connection_kw
        voltage_v = float(grid.get("nominal_voltage_v", NOMINAL_V))
        needed_a = math.ceil(scenario.connection_kw * 1000.0 / (3.0 * voltage_v))
        if "phase_current_limit_a" in grid:
            grid["phase_current_limit_a"] = max(float(grid["phase_current_limit_a"]), needed_a)
        control = data.setdefault("control", {})
        if "fallback_import_limit_kw" in control:
            control["fallback_import_limit_kw"] = min(
                float(control["fallback_import_limit_kw"]), scenario.connection_kw
            )
    if scenario.circuits is not None:
        every = _walk_circuits(data.get("circuits") or [])
        if isinstance(scenario.circuits, Mapping):
            known = {circuit["id"]: circuit for circuit in every}
            for circuit_id, amps in scenario.circuits.items():
                if circuit_id not in known:
                    raise ValueError(f"circuits: no circuit {circuit_id!r} in the site config")
                known[circuit_id]["phase_current_limit_a"] = float(amps)
        else:
            for circuit in every:
                circuit["phase_current_limit_a"] = round(float(circuit["phase_current_limit_a"]) * scenario.circuits, 1)
                if circuit.get("power_limit_kw") is not None:
                    circuit["power_limit_kw"] = round(float(circuit["power_limit_kw"]) * scenario.circuits, 1)
    if scenario.battery_kwh is not None:
        if scenario.battery_kwh <= 0:
            data.pop("battery", None)
        else:
            kw = round(scenario.battery_kwh * BATTERY_C_RATE, 1)
            existing = data.get("battery")
            if existing is None:
                devices = data.setdefault("devices", [])
                devices.append(
                    {"name": "plan_battery", "role": "battery", "max_age_s": 60, "sim": {"model": "battery"}}
                )
                existing = {"device": "plan_battery", "control": "sunspec_704"}
            data["battery"] = {
                **existing,
                "capacity_kwh": scenario.battery_kwh,
                "max_charge_kw": kw,
                "max_discharge_kw": kw,
            }
    if scenario.chargers is not None:
        data["chargers"] = _scaled_chargers(data.get("chargers") or [], scenario.chargers)
    return json.dumps(data, default=_json_default), data, demand_charge


def _clone_id(charger_id: str, copy: int) -> str:
    return charger_id if copy == 0 else f"{charger_id}-{copy + 1}"


def _scaled_chargers(chargers: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The first ``count`` chargers, or all of them and copies (``<id>-2``, ...) on the same circuits."""
    if count < 1:
        raise ValueError("chargers: at least 1")
    if not chargers:
        raise ValueError("chargers: the site config has none to scale")
    out = []
    for number in range(count):
        template = chargers[number % len(chargers)]
        out.append({**template, "id": _clone_id(str(template["id"]), number // len(chargers))})
    return out


def scaled_sessions(sessions: tuple[Session, ...], charger_ids: list[str], count: int) -> tuple[Session, ...]:
    """The sessions of ``count`` chargers: those of the kept chargers, and for each copy its
    template's sessions moved by a seeded jitter (so arrivals scale with the charger count)."""
    kept = set(charger_ids) if count >= len(charger_ids) else set(charger_ids[:count])
    out = [session for session in sessions if session.charger_id in kept]
    by_charger: dict[str, list[Session]] = {}
    for session in sessions:
        by_charger.setdefault(session.charger_id, []).append(session)
    for number in range(len(charger_ids), count):
        template = charger_ids[number % len(charger_ids)]
        copy = number // len(charger_ids)
        clone_id = _clone_id(template, copy)
        rng = np.random.default_rng([CLONE_SEED, number])
        shift_s = float(rng.uniform(-CLONE_JITTER_S, CLONE_JITTER_S))
        for index, session in enumerate(by_charger.get(template, [])):
            out.append(
                replace(
                    session,
                    charger_id=clone_id,
                    arrival_s=session.arrival_s + shift_s,
                    departure_s=session.departure_s + shift_s,
                    announced_departure_s=(
                        session.announced_departure_s + shift_s if session.announced_departure_s is not None else None
                    ),
                    transaction_id=f"{session.transaction_id or session.charger_id}-c{copy + 1}-{index}",
                )
            )
    return tuple(sorted(out, key=lambda session: (session.arrival_s, session.charger_id, session.evse_id)))


def with_transaction_ids(sessions: tuple[Session, ...]) -> tuple[Session, ...]:
    """Every session with a transaction id of its own (made up where missing or repeated)."""
    seen: set[str] = set()
    out = []
    for number, session in enumerate(sessions):
        tid = session.transaction_id or f"{session.charger_id}-{int(session.arrival_s)}"
        if tid in seen:
            tid = f"{tid}-{number}"
        seen.add(tid)
        out.append(replace(session, transaction_id=tid))
    return tuple(out)


def period_of(site: PlanSite, sweep: Sweep, timezone: str) -> tuple[float, float]:
    """(start_s, duration_s) of the simulated period: the sweep's, else the site's, else the
    first arrival's local midnight and 24 h (or up to the last departure, if later)."""
    if sweep.start is not None:
        start = datetime.fromisoformat(sweep.start)
        start_s = (start if start.tzinfo else start.replace(tzinfo=ZoneInfo(timezone))).timestamp()
    elif site.start_s is not None:
        start_s = site.start_s
    else:
        first = datetime.fromtimestamp(min(s.arrival_s for s in site.sessions), ZoneInfo(timezone))
        start_s = first.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    if sweep.hours is not None:
        return start_s, sweep.hours * 3600.0
    if site.duration_s is not None:
        return start_s, site.duration_s
    last_s = max(s.departure_s for s in site.sessions)
    return start_s, max(24 * 3600.0, math.ceil((last_s - start_s) / 3600.0) * 3600.0)


def scenario_spec(case: PlanCase) -> tuple[SimulationSpec, dict[str, Any], float]:
    """The simulation of one scenario, its config (dict) and the demand charge per kW."""
    scenario, site, sweep = case.scenario, case.site, case.sweep
    config_text, data, demand_charge = scenario_config(site.config_text, scenario, sweep)
    sessions = with_transaction_ids(site.sessions)
    if scenario.chargers is not None:
        base_ids = [str(charger["id"]) for charger in (_yaml_load(site.config_text).get("chargers") or [])]
        sessions = scaled_sessions(sessions, base_ids, scenario.chargers)
    timezone = str((data.get("site") or {}).get("timezone", "UTC"))
    start_s, duration_s = period_of(site, sweep, timezone)
    end_s = start_s + duration_s
    sessions = tuple(session for session in sessions if start_s <= session.arrival_s < end_s)
    period_s = float((data.get("control") or {}).get("cycle_period_s", 1.0))
    spec = SimulationSpec(
        config_text=config_text,
        start_s=start_s,
        duration_s=duration_s,
        sessions=sessions,
        series=site.series,
        dr=site.dr,
        sample_interval_s=max(sweep.sample_interval_s, period_s),
    )
    return spec, data, demand_charge
