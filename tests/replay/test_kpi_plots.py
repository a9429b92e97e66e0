"""KPIs on hand-made frames (known answers) and on a simulated morning; plots draw headless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evdlm.config import parse_site_config
from evdlm.core.topology import build_topology
from evdlm.recording import read_recording
from evdlm.replay import kpi, plots
from evdlm.replay.frames import Run, counterfactual, load_run
from evdlm.replay.loop import replay_recording
from evdlm.sim.sample_day import workplace_50_config

START_S = 1_781_560_800.0  # 2026-06-16 00:00 Europe/Berlin (a Tuesday)


def _run(grid_w: list[float], import_limit_w: list[float], dr_cap: list[float | None], events: list[str]) -> Run:
    config = parse_site_config(workplace_50_config()).config
    n = len(grid_w)
    t_s = START_S + 60.0 * np.arange(n)
    cycles = pd.DataFrame(
        {
            "t_s": t_s,
            "cycle": np.arange(1, n + 1),
            "grid_import_w": grid_w,
            "pv_w": np.zeros(n),
            "ev_power_w": np.zeros(n),
            "import_limit_w": import_limit_w,
            "dr_import_limit_w": pd.Series(dr_cap, dtype=float),
            "dr_events": events,
            "status": "ok",
            "solver": "heuristic",
            "battery_w": 0.0,
            "contract_limit_w": 200_000.0,
            "period_s": 60.0,
        }
    )
    cycles["time"] = pd.to_datetime(cycles["t_s"], unit="s", utc=True).dt.tz_convert("Europe/Berlin")
    evses = pd.DataFrame(
        columns=["t_s", "evse", "transaction_id", "power_w", "i1_a", "i2_a", "i3_a", "limit_a", "time"]
    )
    return Run("hand", config, build_topology(config), cycles.set_index("time"), evses)


def test_peak_and_over_limit_figures() -> None:
    run = _run(
        [100e3, 210e3, 190e3, 95e3, 80e3],
        [200e3, 200e3, 200e3, 90e3, 90e3],
        [None, None, None, 90e3, 90e3],
        ["", "", "", "dso-1", "dso-1"],
    )
    peak = kpi.peak_import(run).iloc[0]
    assert peak["peak_import_w"] == 210e3
    assert peak["at"] == run.cycles.index[1]
    over = kpi.over_limits(run)
    assert over.loc["contract", "minutes_over"] == 1.0
    assert over.loc["contract", "energy_over_kwh"] == pytest.approx(10.0 / 60.0)  # 10 kW for a minute
    assert over.loc["in force", "minutes_over"] == 2.0  # 210 kW, and 95 kW under the 90 kW DR cap
    dr = kpi.dr_compliance(run).loc["dso-1"]
    assert dr["minutes_over_cap"] == 1.0
    assert dr["compliance_pct"] == pytest.approx(50.0)
    assert dr["seconds_to_comply"] == 60.0


def test_jain_index() -> None:
    assert kpi.jain_index(np.array([16.0, 16.0, 16.0])) == pytest.approx(1.0)
    assert kpi.jain_index(np.array([32.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    assert np.isnan(kpi.jain_index(np.array([])))


def test_tariff_periods_follow_local_time() -> None:
    config = parse_site_config(workplace_50_config()).config
    assert config.tariffs is not None
    times = pd.DatetimeIndex(
        pd.to_datetime([START_S + h * 3600 for h in (3, 12, 18, 23.5)], unit="s", utc=True)
    ).tz_convert("Europe/Berlin")
    assert list(kpi.import_price(config.tariffs, times)) == [0.28, 0.21, 0.38, 0.28]


def test_cost_integrates_import_and_export() -> None:
    run = _run([60e3, -6e3], [200e3, 200e3], [None, None], ["", ""])
    table = kpi.cost(run)
    total = table.loc["total"]
    assert total["import_kwh"] == pytest.approx(1.0)
    assert total["export_kwh"] == pytest.approx(0.1)
    assert total["net_cost"] == pytest.approx(0.28 - 0.1 * 0.07)


def test_kpis_on_a_simulated_morning(morning_recording: Path, tmp_path: Path) -> None:
    run = load_run(morning_recording, "recorded")
    assert len(run.cycles) == 240
    assert run.cycles["grid_import_w"].max() == kpi.peak_import(run).iloc[0]["peak_import_w"]
    table = kpi.sessions(run)
    assert len(table) > 10
    assert table["ongoing"].any()
    assert table.loc[table["ongoing"], "unmet_kwh"].isna().all()
    assert (table["delivered_kwh"] > 0).all()
    # Energy from the power samples agrees with the chargers' energy registers (±5 %).
    registers = run.evses.groupby("transaction_id")["energy_wh"].agg(lambda s: s.max() - s.min()) / 1000.0
    total_registers = registers.sum()
    assert table["delivered_kwh"].sum() == pytest.approx(total_registers, rel=0.05)
    fair = kpi.fairness(run)
    assert ((fair["jain"] > 0) & (fair["jain"] <= 1.0 + 1e-9)).all()
    summary = kpi.summary(run)
    assert summary.loc["minutes_over_contract", "recorded"] == 0.0
    assert kpi.pv_self_consumption(run).iloc[0]["pv_kwh"] > 0

    # A tighter grid limit: the estimated import of the counterfactual stays closer to the new limit.
    header = next(read_recording(morning_recording)).header
    assert header is not None
    tighter = str(header["config_yaml"]).replace("import_limit_kw: 200", "import_limit_kw: 120")
    replay_recording(morning_recording, config_text=tighter, out_dir=tmp_path / "cf")
    alternative = counterfactual(run, load_run(tmp_path / "cf", "120 kW"))
    assert alternative.cycles["import_limit_w"].max() == 120_000.0
    assert alternative.cycles["grid_import_w"].mean() < run.cycles["grid_import_w"].mean()
    assert kpi.energy_totals(alternative).iloc[0]["delivered_kwh"] < kpi.energy_totals(run).iloc[0]["delivered_kwh"]

    for figure in (
        plots.plot_grid(run),
        plots.plot_circuits(run),
        plots.plot_sessions(run),
        plots.plot_compare([run, alternative]),
    ):
        path = tmp_path / "figure.png"
        figure.savefig(path)
        assert path.stat().st_size > 10_000
