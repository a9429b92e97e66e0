"""The sweep's outputs: one table (Parquet + CSV) and a frontier plot per site."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evdlm.sim.planning.metrics import SCENARIO_COLUMNS, VOLATILE_COLUMNS

SUMMARY_COLUMNS = [column for column in SCENARIO_COLUMNS if column != "site"] + [
    "energy_pct",
    "sessions_served_pct",
    "unmet_kwh",
    "peak_import_kw",
    "minutes_at_limit",
    "energy_cost",
    "demand_cost",
    "fairness_jain",
    "error",
]


def write_table(frame: pd.DataFrame, out_dir: Path, stem: str = "plan") -> tuple[Path, Path]:
    """``<stem>.parquet`` and ``<stem>.csv`` in ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet, csv = out_dir / f"{stem}.parquet", out_dir / f"{stem}.csv"
    frame.to_parquet(parquet, index=False)
    frame.to_csv(csv, index=False)
    return parquet, csv


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """The table without the columns that depend on the machine (wall time)."""
    return frame.drop(columns=[column for column in VOLATILE_COLUMNS if column in frame.columns])


def frontier(frame: pd.DataFrame, site: str) -> pd.DataFrame:
    """Delivered % by connection kW (rows) and charger count (columns) for ``site``: at each
    point the best scenario over the other axes (battery, circuits, variants, solver, tariff)."""
    rows = frame[(frame["site"] == site) & (frame["error"] == "")].copy()
    rows["chargers"] = rows["chargers"].fillna(-1).astype(int)
    rows["connection_kw"] = rows["connection_kw"].astype(float)
    best = rows.groupby(["connection_kw", "chargers"])["energy_pct"].max().unstack("chargers")
    return best.sort_index()


def frontier_plot(frame: pd.DataFrame, site: str, path: Path) -> Path:
    """Delivered % against connection kW, one line per charger count (PNG at ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = frontier(frame, site)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for chargers in table.columns:
        label = "as configured" if chargers < 0 else f"{chargers} chargers"
        series = table[chargers].dropna()
        ax.plot(series.index, series.to_numpy(), marker="o", label=label)
    ax.set_xlabel("grid connection (kW)")
    ax.set_ylabel("energy delivered (%)")
    ax.set_title(f"{site}: delivered energy vs connection")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_text(frame: pd.DataFrame) -> str:
    """The table's main columns as fixed-width text (what `evdlm plan` prints)."""
    columns = [column for column in SUMMARY_COLUMNS if column in frame.columns]
    shown = frame[columns].copy()
    for column in ("chargers", "connection_kw", "circuits", "battery_kwh"):
        if column in shown and shown[column].isna().all():
            shown = shown.drop(columns=[column])
    for column in ("variant", "solver", "tariff"):
        if column in shown and shown[column].nunique() <= 1:
            shown = shown.drop(columns=[column])
    return str(shown.to_string(index=False, na_rep="-"))
