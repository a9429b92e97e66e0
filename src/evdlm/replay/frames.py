"""A recording as pandas DataFrames (one per cycle, one per EVSE with a session and cycle).

:func:`load_run` reads a recording (the gateway's, a replayed one, or an imported one);
:func:`counterfactual` estimates what the cars would have drawn under a replayed run's limits.

Why an estimate: replay is open loop. The cars' draws in a recording answer the limits the
gateway sent; under other limits they would have drawn otherwise. The first-order model
used here: a car that drew clearly less than its limit was limited by itself (it would draw
the same under any higher limit); a car at its limit would have drawn up to the new limit
(capped by the car's and charger's maximum). The grid import moves by the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evdlm.config import parse_site_config
from evdlm.config.models import DeviceRole, SiteConfig
from evdlm.core.site_settings import SiteSettings
from evdlm.core.topology import Topology, build_topology
from evdlm.recording import key_text, read_recording

# A car drawing this much below its limit was limited by itself, not by the controller (A).
SELF_LIMITED_SLACK_A = 2.0


@dataclass(frozen=True)
class Run:
    """One recording as frames. Times are tz-aware in the site's time zone.

    ``cycles`` (one row per cycle): grid_import_w, pv_w, ev_power_w, import_limit_w (in force:
    contract, DR or fallback), contract_limit_w, dr_import_limit_w, dr_events, status, solver,
    battery_w, period_s.
    ``evses`` (one row per cycle and EVSE with a charging session): evse, circuit,
    transaction_id, power_w, i1_a/i2_a/i3_a (charger phases), energy_wh, limit_a (the limit the
    EVSE held after the cycle), energy_needed_wh, departure_at_s, ev_max_current_a.
    """

    name: str
    config: SiteConfig
    topology: Topology
    cycles: pd.DataFrame
    evses: pd.DataFrame

    @property
    def timezone(self) -> str:
        return self.config.site.timezone


def _config(text: str) -> SiteConfig:
    return parse_site_config(text, "<recorded config>").config


def load_run(path: Path, name: str | None = None) -> Run:
    """Read the recording at ``path`` into frames (no decisions are recomputed)."""
    config: SiteConfig | None = None
    pv_meters: list[str] = []
    grid_meter: str | None = None
    cycle_rows: list[tuple[Any, ...]] = []
    evse_rows: list[tuple[Any, ...]] = []
    circuit_of: dict[tuple[str, int], str] = {}
    for record in read_recording(path):
        if record.header is not None and config is None:
            config = _config(str(record.header["config_yaml"]))
            grid_meter = config.grid.meter
            pv_meters = [device.name for device in config.devices if device.role is DeviceRole.PV]
            circuit_of = {(c.id, n): c.circuit for c in config.chargers for n in range(1, c.evses + 1)}
        grid = record.readings.get(grid_meter) if grid_meter else None
        pv_w = sum((r.power_w or 0.0) for m in pv_meters if (r := record.readings.get(m)) is not None and r.usable)
        ev_power_w = 0.0
        for key, state in record.evse_states.items():
            if not state.charging:
                continue
            power_w = state.power_w or 0.0
            ev_power_w += power_w
            currents = state.phase_current_a or (None, None, None)
            evse_rows.append(
                (
                    record.now_s,
                    key_text(key),
                    circuit_of.get(key, ""),
                    state.transaction_id,
                    power_w,
                    currents[0],
                    currents[1],
                    currents[2],
                    state.energy_wh,
                    record.commands.get(key, np.nan),
                    state.energy_needed_wh,
                    state.departure_at_s,
                    state.ev_max_current_a,
                )
            )
        dr = record.dr
        prices = record.outcome.get("price_per_kwh") or (np.nan, np.nan)
        cycle_rows.append(
            (
                record.now_s,
                record.cycle,
                grid.power_w if grid is not None and grid.usable else np.nan,
                pv_w,
                ev_power_w,
                record.outcome.get("import_limit_w", np.nan),
                dr.get("import_limit_w"),
                ",".join(dr.get("events", [])),
                record.outcome.get("status"),
                record.outcome.get("solver"),
                record.outcome.get("battery_w", 0.0),
                prices[0],
                prices[1],
            )
        )
    if config is None:
        raise ValueError(f"{path}: no recording header found")
    cycles = pd.DataFrame(
        cycle_rows,
        columns=[
            "t_s",
            "cycle",
            "grid_import_w",
            "pv_w",
            "ev_power_w",
            "import_limit_w",
            "dr_import_limit_w",
            "dr_events",
            "status",
            "solver",
            "battery_w",
            "import_price_per_kwh",  # as the controller had them in force (NaN: not recorded)
            "export_price_per_kwh",
        ],
    )
    cycles["dr_import_limit_w"] = cycles["dr_import_limit_w"].astype(float)
    cycles["contract_limit_w"] = SiteSettings.from_config(config).import_limit_w
    # Each cycle stands for the time to the next one (the last one for a nominal period).
    cycles["period_s"] = cycles["t_s"].diff().shift(-1).fillna(config.control.cycle_period_s)
    cycles["time"] = pd.to_datetime(cycles["t_s"], unit="s", utc=True).dt.tz_convert(config.site.timezone)
    evses = pd.DataFrame(
        evse_rows,
        columns=[
            "t_s",
            "evse",
            "circuit",
            "transaction_id",
            "power_w",
            "i1_a",
            "i2_a",
            "i3_a",
            "energy_wh",
            "limit_a",
            "energy_needed_wh",
            "departure_at_s",
            "ev_max_current_a",
        ],
    )
    for column in (
        "i1_a",
        "i2_a",
        "i3_a",
        "energy_wh",
        "limit_a",
        "energy_needed_wh",
        "departure_at_s",
        "ev_max_current_a",
    ):
        evses[column] = evses[column].astype(float)
    evses["time"] = pd.to_datetime(evses["t_s"], unit="s", utc=True).dt.tz_convert(config.site.timezone)
    evses = evses.merge(cycles[["t_s", "period_s"]], on="t_s", how="left")
    return Run(
        name=name or path.name,
        config=config,
        topology=build_topology(config),
        cycles=cycles.set_index("time"),
        evses=evses,
    )


def counterfactual(recorded: Run, replayed: Run, name: str | None = None) -> Run:
    """``replayed`` with estimated car draws and grid import under its limits (see the module doc).

    Both runs must cover the same cycles (a replay of ``recorded``). ``power_w``, the energy
    counters and ``grid_import_w`` of the result are estimates; the recorded values are kept as
    ``recorded_power_w`` and ``recorded_grid_import_w``.
    """
    voltage_v = recorded.topology.nominal_voltage_v
    max_a = {f"{c.id}/{n}": c.max_current_a for c in recorded.config.chargers for n in range(1, c.evses + 1)}
    base = recorded.evses
    alt = replayed.evses
    if len(base) != len(alt) or not np.array_equal(base["t_s"].to_numpy(), alt["t_s"].to_numpy()):
        raise ValueError("the runs do not cover the same cycles: replay the recording first")
    measured_a = base[["i1_a", "i2_a", "i3_a"]].fillna(0.0).max(axis=1).to_numpy()
    phases = (base[["i1_a", "i2_a", "i3_a"]].fillna(0.0) > 0.5).sum(axis=1).clip(lower=1).to_numpy()
    base_limit = base["limit_a"].to_numpy()
    alt_limit = alt["limit_a"].to_numpy()
    car_max = base["ev_max_current_a"].fillna(base["evse"].map(max_a)).to_numpy()
    self_limited = measured_a + SELF_LIMITED_SLACK_A < np.nan_to_num(base_limit, nan=np.inf)
    demand_a = np.where(self_limited, measured_a, car_max)
    estimate_a = np.minimum(demand_a, np.nan_to_num(alt_limit, nan=0.0))
    evses = alt.copy()
    evses["recorded_power_w"] = base["power_w"].to_numpy()
    evses["power_w"] = estimate_a * phases * voltage_v
    # Energy counters: the estimate integrated per session from the recorded session start.
    step_wh = evses["power_w"] * evses["period_s"] / 3600.0
    first = base.groupby("transaction_id")["energy_wh"].transform("min").fillna(0.0)
    evses["energy_wh"] = first + step_wh.groupby(evses["transaction_id"]).cumsum() - step_wh
    cycles = replayed.cycles.copy()
    ev_estimate = evses.groupby("t_s")["power_w"].sum()
    ev_recorded = base.groupby("t_s")["power_w"].sum()
    delta = (ev_estimate - ev_recorded).reindex(cycles["t_s"]).fillna(0.0).to_numpy()
    cycles["recorded_grid_import_w"] = recorded.cycles["grid_import_w"].to_numpy()
    cycles["grid_import_w"] = cycles["recorded_grid_import_w"] + delta
    cycles["ev_power_w"] = ev_estimate.reindex(cycles["t_s"]).fillna(0.0).to_numpy()
    return Run(
        name=name or replayed.name,
        config=replayed.config,
        topology=replayed.topology,
        cycles=cycles,
        evses=evses,
    )
