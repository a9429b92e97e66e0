"""`evdlm plan` end to end: one site serially, a portfolio on a local Dask cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from evdlm.cli import main

from .helpers import small_site


def _write_site(folder: Path, name: str, chargers: int, as_json: bool = False) -> Path:
    site = small_site()
    config = folder / f"{name}.yaml"
    config.write_text(site.config_text.replace("id: workplace-50", f"id: {name}"), encoding="utf-8")
    kept = [s for s in site.sessions if int(s.charger_id[2:]) <= chargers]
    stamp = lambda t: datetime.fromtimestamp(t, UTC).isoformat()  # noqa: E731
    if as_json:
        items = [
            {
                "sessionID": f"{name}-{i}",
                "stationID": s.charger_id,
                "connectionTime": stamp(s.arrival_s),
                "disconnectTime": stamp(s.departure_s),
                "kWhDelivered": s.energy_needed_kwh,
            }
            for i, s in enumerate(kept)
        ]
        (folder / f"{name}.sessions.json").write_text(json.dumps({"_items": items}), encoding="utf-8")
    else:
        lines = ["charger,evse,start,end,energy_kwh,max_current_a,phases,announced"]
        lines += [
            f"{s.charger_id},1,{stamp(s.arrival_s)},{stamp(s.departure_s)},{s.energy_needed_kwh},"
            f"{s.ev_max_current_a:g},{s.phases},{str(s.announces_needs).lower()}"
            for s in kept
        ]
        (folder / f"{name}.sessions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def test_plan_one_site_serially(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_site(tmp_path, "garage", 10)
    out = tmp_path / "out"
    args = ["plan", str(config), "--sessions", str(tmp_path / "garage.sessions.csv"), "--serial", "--no-progress"]
    args += ["--connection-kw", "90", "130", "--chargers", "8", "10", "--hours", "5", "--cycle-s", "60"]
    args += ["--out", str(out)]
    (tmp_path / "sweep.yaml").write_text('start: "2026-06-16T06:00"\n', encoding="utf-8")
    args += ["--sweep", str(tmp_path / "sweep.yaml")]
    assert main(args) == 0
    table = pd.read_parquet(out / "plan.parquet")
    assert len(table) == 4 and (table["error"] == "").all()
    assert list(table["scenario_id"]) == [f"garage/{n:04d}" for n in range(1, 5)]
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "plan.csv", keep_default_na=False, na_values=[""]).iloc[:, :3],
        table.iloc[:, :3],
        check_dtype=False,
    )
    assert (out / "frontier-garage.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "garage/0004" in printed and "energy_pct" in printed


def test_plan_a_portfolio_on_a_local_cluster(tmp_path: Path) -> None:
    sites = tmp_path / "sites"
    sites.mkdir()
    _write_site(sites, "north", 8)
    _write_site(sites, "south", 6, as_json=True)
    (sites / "sweep.yaml").write_text(
        'hours: 4\nstart: "2026-06-16T06:00"\ncycle_period_s: 60\naxes: {connection_kw: [80, 120]}\n', encoding="utf-8"
    )
    (sites / "south.sweep.yaml").write_text(
        'hours: 4\nstart: "2026-06-16T06:00"\ncycle_period_s: 60\naxes: {connection_kw: [70, 90, 110]}\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert main(["plan", "--portfolio", str(sites), "--workers", "2", "--no-progress", "--out", str(out)]) == 0
    table = pd.read_parquet(out / "plan.parquet")
    assert list(table["site"]) == ["north"] * 2 + ["south"] * 3
    assert (table["error"] == "").all()
    assert (out / "frontier-north.png").exists() and (out / "frontier-south.png").exists()


def test_plan_without_sessions_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["plan", str(tmp_path / "site.yaml")]) == 2


def test_plan_on_an_existing_scheduler(tmp_path: Path) -> None:
    from evdlm.sim.planning.runner import local_cluster

    config = _write_site(tmp_path, "garage", 6)
    out = tmp_path / "out"
    args = ["plan", str(config), "--sessions", str(tmp_path / "garage.sessions.csv"), "--no-progress"]
    args += ["--connection-kw", "80", "120", "--hours", "3", "--cycle-s", "60", "--out", str(out)]
    with local_cluster(1) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert main([*args, "--scheduler", cluster.scheduler_address]) == 0
    assert len(pd.read_csv(out / "plan.csv")) == 2
