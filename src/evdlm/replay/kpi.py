"""Key figures of a run, as pandas DataFrames (pure functions of :class:`~evdlm.replay.frames.Run`).

Energies integrate each cycle's value over the time to the next cycle (``period_s``).
Grid + = import. A limit counts as exceeded only above ``tolerance_w`` (meter noise).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evdlm.config.models import Tariffs
from evdlm.core.demand_window import DemandSettings, month_of, peak_rolling_window, peak_window
from evdlm.core.tariff import import_price_at
from evdlm.demand_charge import settings_for
from evdlm.replay.frames import Run

TOLERANCE_W = 500.0
# A session whose car drew less than this at its last sample had stopped by itself (full).
FULL_BELOW_W = 100.0


def _hours(run: Run) -> pd.Series:
    return run.cycles["period_s"] / 3600.0


def peak_import(run: Run) -> pd.DataFrame:
    """The highest grid import, when, and the limit in force then."""
    grid = run.cycles["grid_import_w"]
    at = grid.idxmax()
    row = run.cycles.loc[at]
    if isinstance(row, pd.DataFrame):
        row = row.iloc[0]
    return pd.DataFrame(
        {
            "peak_import_w": [float(grid.max())],
            "at": [at],
            "import_limit_w": [float(row["import_limit_w"])],
            "contract_limit_w": [float(row["contract_limit_w"])],
        }
    )


def over_limits(run: Run, tolerance_w: float = TOLERANCE_W) -> pd.DataFrame:
    """Minutes and energy above each limit: the contract, and the limit in force (DR, fallback)."""
    cycles = run.cycles
    rows = []
    for name, column in (
        ("contract", "contract_limit_w"),
        ("in force", "import_limit_w"),
        ("DR cap", "dr_import_limit_w"),
    ):
        limit = cycles[column]
        excess = (cycles["grid_import_w"] - limit).where(limit.notna())
        over = excess > tolerance_w
        rows.append(
            {
                "limit": name,
                "minutes_over": float((cycles["period_s"] * over).sum() / 60.0),
                "energy_over_kwh": float((excess.clip(lower=0.0) * over * _hours(run)).sum() / 1000.0),
                "worst_excess_w": float(excess.max()) if over.any() else 0.0,
            }
        )
    return pd.DataFrame(rows).set_index("limit")


def sessions(run: Run) -> pd.DataFrame:
    """Per charging session: arrival, departure, energy delivered and requested, unmet demand.

    ``requested_kwh`` is known when the car announced its need (ISO 15118 energyAmount, or an
    imported log); it is the delivered energy plus the first announced remainder. ``unmet_kwh``
    is what was still missing when the car left (NaN while ``ongoing`` at the end of the
    recording). ``full`` means the car had stopped drawing by
    itself before it left.
    """
    evses = run.evses.sort_values("t_s", kind="stable")
    if evses.empty:
        return pd.DataFrame(
            columns=[
                "evse",
                "circuit",
                "arrival",
                "departure",
                "delivered_kwh",
                "requested_kwh",
                "ongoing",
                "unmet_kwh",
                "full",
            ]
        )
    step_kwh = evses["power_w"] * evses["period_s"] / 3.6e6
    grouped = evses.assign(step_kwh=step_kwh).groupby("transaction_id", sort=False)
    first = grouped.first()
    last = grouped.last()
    announced = evses.dropna(subset=["energy_needed_wh"]).groupby("transaction_id", sort=False)
    first_need = announced.first()
    delivered_kwh = grouped["step_kwh"].sum()
    requested = pd.Series(np.nan, index=first.index)
    if not first_need.empty:
        # Delivered before the first announcement + what was then announced as still needed.
        energy_at = first_need["energy_wh"].fillna(0.0) - first["energy_wh"].reindex(first_need.index).fillna(0.0)
        requested.loc[first_need.index] = (energy_at + first_need["energy_needed_wh"]) / 1000.0
    out = pd.DataFrame(
        {
            "evse": first["evse"],
            "circuit": first["circuit"],
            "arrival": first["time"],
            "departure": last["time"],
            "delivered_kwh": delivered_kwh,
            "requested_kwh": requested,
        }
    )
    # A session still running when the recording ends has not departed: nothing is unmet yet.
    out["ongoing"] = last["t_s"] >= run.cycles["t_s"].iloc[-1]
    out["unmet_kwh"] = (out["requested_kwh"] - out["delivered_kwh"]).clip(lower=0.0).where(~out["ongoing"])
    out["full"] = last["power_w"] < FULL_BELOW_W
    return out.sort_values("arrival")


def energy_totals(run: Run) -> pd.DataFrame:
    """Energy delivered to cars, requested (where known) and unmet at departure, in total."""
    table = sessions(run)
    known = table["requested_kwh"].notna()
    return pd.DataFrame(
        {
            "sessions": [len(table)],
            "delivered_kwh": [float(table["delivered_kwh"].sum())],
            "sessions_with_request": [int(known.sum())],
            "requested_kwh": [float(table.loc[known, "requested_kwh"].sum())],
            "delivered_to_requesting_kwh": [float(table.loc[known, "delivered_kwh"].sum())],
            "unmet_kwh": [float(table["unmet_kwh"].sum())],
            "sessions_unmet": [int((table["unmet_kwh"] > 0.1).sum())],
        }
    )


def jain_index(values: np.ndarray) -> float:
    """Jain's fairness index, 1 = all equal, 1/n = one takes all (NaN for no values)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0 or not np.any(values):
        return float("nan")
    return float(values.sum() ** 2 / (values.size * np.square(values).sum()))


def fairness(run: Run) -> pd.DataFrame:
    """Per cycle: Jain index of the current given to the cars that wanted power.

    A car wanted power unless it had stopped by itself (drawing clearly less than its limit
    while the limit was above its minimum): those are excluded, they are full, not starved.
    """
    evses = run.evses
    measured = evses[["i1_a", "i2_a", "i3_a"]].fillna(0.0).max(axis=1)
    limit = evses["limit_a"].fillna(0.0)
    wanting = ~((limit >= 6.0) & (measured + 2.0 < limit) & (evses["power_w"] < FULL_BELOW_W))
    frame = evses.loc[wanting, ["time", "t_s"]].assign(limit_a=limit[wanting])
    out = frame.groupby("time")["limit_a"].agg(jain=lambda s: jain_index(s.to_numpy()), cars="size")
    return out


def dr_compliance(run: Run, tolerance_w: float = TOLERANCE_W) -> pd.DataFrame:
    """Per DR event: its cap, the import during it, time over the cap, and time to comply."""
    cycles = run.cycles
    rows = []
    events = sorted({event for value in cycles["dr_events"] if value for event in value.split(",")})
    for event in events:
        during = cycles[cycles["dr_events"].str.split(",").apply(lambda ids, e=event: e in ids)]
        cap = during["dr_import_limit_w"]
        excess = during["grid_import_w"] - cap
        over = excess > tolerance_w
        complying = ~over
        start = during.index[0]
        first_ok = complying.idxmax() if complying.any() else None
        rows.append(
            {
                "event": event,
                "start": start,
                "end": during.index[-1] + pd.to_timedelta(during["period_s"].iloc[-1], unit="s"),
                "cap_w": float(cap.min()),
                "max_import_w": float(during["grid_import_w"].max()),
                "mean_import_w": float(during["grid_import_w"].mean()),
                "minutes_over_cap": float((during["period_s"] * over).sum() / 60.0),
                "energy_over_cap_kwh": float((excess.clip(lower=0) * over * during["period_s"]).sum() / 3.6e6),
                "compliance_pct": float(100.0 * (during["period_s"] * complying).sum() / during["period_s"].sum()),
                "seconds_to_comply": (first_ok - start).total_seconds() if first_ok is not None else float("nan"),
            }
        )
    return pd.DataFrame(rows).set_index("event") if rows else pd.DataFrame()


def pv_self_consumption(run: Run) -> pd.DataFrame:
    """PV energy, the part exported (grid import < 0), and the self-consumed share."""
    cycles = run.cycles
    hours = _hours(run)
    pv_kwh = float((cycles["pv_w"] * hours).sum() / 1000.0)
    export_kwh = float((-cycles["grid_import_w"]).clip(lower=0.0).mul(hours).sum() / 1000.0)
    self_kwh = max(0.0, pv_kwh - export_kwh)
    return pd.DataFrame(
        {
            "pv_kwh": [pv_kwh],
            "exported_kwh": [export_kwh],
            "self_consumed_kwh": [self_kwh],
            "self_consumption_pct": [100.0 * self_kwh / pv_kwh if pv_kwh > 0 else float("nan")],
        }
    )


def import_price(tariffs: Tariffs, times: pd.DatetimeIndex) -> np.ndarray:
    """Import price per kWh at each time (site-local times; the first matching period wins)."""
    # Prices change at most every minute: evaluate once per distinct local minute.
    codes, minutes = pd.factorize(times.floor("min"))
    unique_prices = np.array([import_price_at(tariffs, stamp.to_pydatetime()) for stamp in minutes])
    prices: np.ndarray = unique_prices[codes]
    return prices


def cost(run: Run, freq: str = "1h") -> pd.DataFrame:
    """Energy cost under the config's tariff, per ``freq`` and a total row (import − export credit)."""
    tariffs = run.config.tariffs
    if tariffs is None:
        raise ValueError(f"{run.name}: the config has no tariffs")
    cycles = run.cycles
    hours = _hours(run)
    import_kwh = cycles["grid_import_w"].clip(lower=0.0) * hours / 1000.0
    export_kwh = (-cycles["grid_import_w"]).clip(lower=0.0) * hours / 1000.0
    # The prices the controller had in force (a feed's, recorded each cycle), else the table's.
    recorded_import = cycles.get("import_price_per_kwh")
    table_import = import_price(tariffs, cycles.index)
    price = table_import if recorded_import is None else recorded_import.fillna(pd.Series(table_import, cycles.index))
    recorded_export = cycles.get("export_price_per_kwh")
    export_price = (
        tariffs.export_price_per_kwh
        if recorded_export is None
        else recorded_export.fillna(tariffs.export_price_per_kwh)
    )
    ev_kwh = cycles["ev_power_w"].clip(lower=0.0) * hours / 1000.0
    # The cars' energy at the import price while the site imports, at the export revenue forgone
    # while it exports (as evdlm.core.energy_cost counts it live).
    ev_price = np.where(cycles["grid_import_w"] > 0.0, price, export_price)
    frame = pd.DataFrame(
        {
            "import_kwh": import_kwh,
            "export_kwh": export_kwh,
            "import_cost": import_kwh * price,
            "export_credit": export_kwh * export_price,
            "ev_kwh": ev_kwh,
            "ev_cost": ev_kwh * ev_price,
        },
        index=cycles.index,
    )
    table = frame.resample(freq).sum()
    table["net_cost"] = table["import_cost"] - table["export_credit"]
    table.loc["total"] = table.sum()
    table["cost_per_kwh_delivered"] = table["ev_cost"] / table["ev_kwh"].where(table["ev_kwh"] > 0)
    table.attrs["currency"] = tariffs.currency
    return table


def demand(run: Run) -> pd.DataFrame:
    """Per billing month: the peak billing window's average import and its start (site-local),
    and the demand charge (rate x peak). Windows, months and rate are the config's ``demand:``
    section (the controller's own arithmetic, :mod:`evdlm.core.demand_window`); without one,
    15-minute windows on the local quarter-hours and no rate."""
    config = run.config
    settings = settings_for(config) or DemandSettings(900.0, False, config.site.timezone, 1, 0.0, 0.0)
    cycles = run.cycles
    months = [month_of(t, settings.timezone, settings.billing_day) for t in cycles["t_s"]]
    rows = []
    for month, part in cycles.groupby(months, sort=True):
        times_s = part["t_s"].to_numpy()
        watts = part["grid_import_w"].to_numpy()
        periods = part["period_s"].to_numpy()
        if settings.rolling:
            peak_w, start_s = peak_rolling_window(times_s, watts, periods, settings.window_s)
        else:
            peak_w, start_s = peak_window(times_s, watts, periods, settings)
        rows.append(
            {
                "month": month,
                "peak_window_kw": peak_w / 1000.0,
                "window_start": pd.Timestamp(start_s, unit="s", tz="UTC").tz_convert(settings.timezone)
                if start_s is not None
                else pd.NaT,
                "demand_charge": peak_w / 1000.0 * settings.rate_per_kw,
            }
        )
    return pd.DataFrame(rows).set_index("month")


def summary(run: Run) -> pd.DataFrame:
    """The headline figures of a run, one column per run (concatenate runs to compare them)."""
    peak = peak_import(run).iloc[0]
    over = over_limits(run)
    totals = energy_totals(run).iloc[0]
    pv = pv_self_consumption(run).iloc[0]
    fair = fairness(run)
    figures: dict[str, float] = {
        "peak_import_kw": peak["peak_import_w"] / 1000.0,
        "minutes_over_contract": over.loc["contract", "minutes_over"],
        "minutes_over_limit_in_force": over.loc["in force", "minutes_over"],
        "energy_over_limit_in_force_kwh": over.loc["in force", "energy_over_kwh"],
        "delivered_kwh": totals["delivered_kwh"],
        "requested_kwh": totals["requested_kwh"],
        "unmet_kwh": totals["unmet_kwh"],
        "sessions_unmet": totals["sessions_unmet"],
        "mean_jain": float(fair["jain"].mean()) if not fair.empty else float("nan"),
        "pv_self_consumption_pct": pv["self_consumption_pct"],
    }
    if run.config.tariffs is not None:
        totals = cost(run).loc["total"]
        figures["net_cost"] = float(totals["net_cost"])
        figures["cost_per_kwh_delivered"] = float(totals["cost_per_kwh_delivered"])
    billed = demand(run)
    figures["peak_window_kw"] = float(billed["peak_window_kw"].max()) if not billed.empty else float("nan")
    if run.config.demand is not None:
        figures["demand_charge"] = float(billed["demand_charge"].sum())
    dr = dr_compliance(run)
    if not dr.empty:
        figures["dr_minutes_over_cap"] = float(dr["minutes_over_cap"].sum())
    return pd.DataFrame({run.name: figures})
