"""Plots of runs (matplotlib, Agg: they work headless, in CI and in notebooks).

Each function draws on a new figure (or the given axes) and returns the figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure

from evdlm.replay import kpi
from evdlm.replay.frames import Run


def _clock_axis(ax: Any, tz: Any) -> None:
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=tz))  # type: ignore[no-untyped-call]


def _axes(ax: Any, size: tuple[float, float]) -> tuple[Figure, Any]:
    if ax is not None:
        return ax.figure, ax
    figure, ax = plt.subplots(figsize=size, layout="constrained")
    return figure, ax


def shade_dr(ax: Any, run: Run) -> None:
    """Shade every DR event of ``run`` on ``ax`` (x axis = site-local time)."""
    events = kpi.dr_compliance(run)
    for index, (event, row) in enumerate(events.iterrows()):
        ax.axvspan(row["start"], row["end"], color="tab:orange", alpha=0.15, label="DR event" if index == 0 else None)
        ax.annotate(str(event), (row["start"], 1.0), xycoords=("data", "axes fraction"), va="top", fontsize=7)


def plot_grid(run: Run, ax: Any = None) -> Figure:
    """Grid import against the contract and the limit in force, PV, cars; DR events shaded."""
    figure, ax = _axes(ax, (11, 4))
    cycles = run.cycles
    ax.plot(cycles.index, cycles["grid_import_w"] / 1000.0, lw=0.8, label="grid import")
    ax.plot(cycles.index, cycles["ev_power_w"] / 1000.0, lw=0.8, label="cars")
    if cycles["pv_w"].any():
        ax.plot(cycles.index, cycles["pv_w"] / 1000.0, lw=0.8, color="gold", label="PV")
    ax.plot(cycles.index, cycles["import_limit_w"] / 1000.0, lw=1.2, color="black", ls="--", label="limit in force")
    ax.plot(cycles.index, cycles["contract_limit_w"] / 1000.0, lw=0.8, color="red", label="contract")
    shade_dr(ax, run)
    ax.set_ylabel("kW")
    ax.set_title(f"{run.name}: grid import")
    ax.legend(loc="upper left", fontsize=8, ncols=3)
    _clock_axis(ax, cycles.index.tz)
    return figure


def circuit_load(run: Run) -> pd.DataFrame:
    """Per circuit (and each parent on its path) and cycle: the highest site-phase current of its cars, A.

    Derived from the chargers' MeterValues mapped onto site phases with each charger's rotation,
    so it shows the cars' share of each circuit (meters see building load too).
    """
    topology = run.topology
    evses = run.evses
    if evses.empty:
        return pd.DataFrame()
    slot_of = {f"{slot.key[0]}/{slot.key[1]}": slot for slot in topology.evses}
    site = np.zeros((len(evses), 3))
    currents = evses[["i1_a", "i2_a", "i3_a"]].fillna(0.0).to_numpy()
    rotation = np.array([[p - 1 for p in slot_of[e].site_phases] for e in evses["evse"]])
    for charger_phase in range(3):
        np.add.at(site, (np.arange(len(evses)), rotation[:, charger_phase]), currents[:, charger_phase])
    frames = []
    paths = {e: topology.nodes[slot_of[e].node].path for e in evses["evse"].unique()}
    for node in topology.nodes:
        inside = evses["evse"].map(lambda e, n=node: n in paths[e]).to_numpy()
        if not inside.any():
            continue
        per_phase = pd.DataFrame(site[inside], index=evses["time"][inside]).groupby(level=0).sum()
        frames.append(per_phase.max(axis=1).rename(node))
    return pd.concat(frames, axis=1).fillna(0.0).reindex(run.cycles.index).ffill().fillna(0.0)


def plot_circuits(run: Run, ax: Any = None) -> Figure:
    """Utilisation of each circuit's phase-current limit by the cars (% of the limit)."""
    figure, ax = _axes(ax, (11, 4))
    load = circuit_load(run)
    for node_id in load.columns:
        limit = run.topology.nodes[node_id].phase_current_limit_a
        ax.plot(load.index, 100.0 * load[node_id] / limit, lw=0.8, label=f"{node_id} ({limit:g} A)")
    ax.axhline(100.0, color="red", lw=0.8)
    shade_dr(ax, run)
    ax.set_ylabel("% of phase-current limit")
    ax.set_title(f"{run.name}: circuit utilisation by the cars")
    ax.legend(loc="upper left", fontsize=8, ncols=4)
    _clock_axis(ax, load.index.tz)
    return figure


def plot_sessions(run: Run, ax: Any = None) -> Figure:
    """Energy per session: delivered, and requested where the car announced it."""
    table = kpi.sessions(run)
    figure, ax = _axes(ax, (11, 4))
    positions = np.arange(len(table))
    ax.bar(positions, table["delivered_kwh"], color="tab:blue", label="delivered")
    requested = table["requested_kwh"].to_numpy()
    ax.scatter(positions, requested, color="black", marker="_", s=120, zorder=3, label="requested (announced)")
    unmet = table["unmet_kwh"].fillna(0.0).to_numpy() > 0.1
    ax.scatter(positions[unmet], requested[unmet], color="red", marker="v", zorder=4, label="unmet at departure")
    ax.set_xticks(positions, table["evse"], rotation=90, fontsize=6)
    ax.set_ylabel("kWh")
    ax.set_title(f"{run.name}: energy per session (in arrival order)")
    ax.legend(fontsize=8)
    return figure


def plot_compare(runs: Sequence[Run], column: str = "grid_import_w", ax: Any = None) -> Figure:
    """One column of several runs on one time axis, with the first run's limit in force."""
    figure, ax = _axes(ax, (11, 4))
    for run in runs:
        ax.plot(run.cycles.index, run.cycles[column] / 1000.0, lw=0.8, label=run.name)
    first = runs[0]
    ax.plot(
        first.cycles.index,
        first.cycles["import_limit_w"] / 1000.0,
        color="black",
        ls="--",
        lw=1,
        label="limit in force",
    )
    shade_dr(ax, first)
    ax.set_ylabel(f"{column} / 1000")
    ax.set_title(" vs ".join(run.name for run in runs))
    ax.legend(fontsize=8)
    _clock_axis(ax, first.cycles.index.tz)
    return figure
