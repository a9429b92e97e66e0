"""The sweep on a 2-worker LocalCluster on 127.0.0.1 equals the same sweep run serially."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from evdlm.sim.closed_loop import SiteSeries
from evdlm.sim.planning import cases_of, run_dask, run_serial
from evdlm.sim.planning.report import comparable
from evdlm.sim.planning.runner import local_cluster

from .helpers import small_site, twelve_scenarios

distributed = pytest.importorskip("distributed")


def _cluster() -> Any:
    return local_cluster(2)  # distributed.LocalCluster, 1 thread per worker process, on 127.0.0.1


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with _cluster() as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def serial_table() -> pd.DataFrame:
    site = small_site()
    return run_serial(cases_of([site], {site.name: twelve_scenarios()}))


def test_twelve_scenarios_on_two_workers_equal_the_serial_run(client: Any, serial_table: pd.DataFrame) -> None:
    site = small_site()
    cases = cases_of([site], {site.name: twelve_scenarios()})
    assert len(cases) == 12
    streamed: list[str] = []
    table = run_dask(cases, client, on_row=lambda row: streamed.append(row["scenario_id"]))
    assert len(streamed) == 12  # every row came back on its own
    assert list(table["scenario_id"]) == sorted(streamed)
    assert (table["error"] == "").all()
    assert len(client.scheduler_info()["workers"]) == 2
    pd.testing.assert_frame_equal(comparable(table), comparable(serial_table))
    # The figures are figures: more connection, no less energy, for each charger count and battery.
    for _, group in table.groupby(["chargers", "battery_kwh"]):
        assert group.sort_values("connection_kw")["energy_pct"].is_monotonic_increasing


def test_a_scenario_that_raises_is_reported_with_its_error(client: Any) -> None:
    site = small_site()
    sweep = replace(twelve_scenarios(), axes={"chargers": (10,), "connection_kw": (-5.0, 110.0)})
    cases = cases_of([site], {site.name: sweep})
    for table in (run_dask(cases, client), run_serial(cases)):
        assert len(table) == 2
        failed, ok = table.iloc[0], table.iloc[1]
        assert failed["connection_kw"] == -5.0
        assert "ConfigError" in failed["error"] and "import_limit_kw" in failed["error"]
        assert pd.isna(failed["energy_pct"])
        assert ok["error"] == "" and ok["energy_pct"] > 0


def test_killing_a_worker_mid_sweep_still_completes_the_sweep(serial_table: pd.DataFrame) -> None:
    site = small_site()
    cases = cases_of([site], {site.name: twelve_scenarios()})
    with _cluster() as cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        victim = max(pids.values())
        killed: list[int] = []

        def kill_once(row: dict[str, Any]) -> None:
            if not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        table = run_dask(cases, client, on_row=kill_once)
        assert killed
        assert victim not in client.run(os.getpid).values()  # that process is gone (the nanny restarted one)
    assert (table["error"] == "").all()
    pd.testing.assert_frame_equal(comparable(table), comparable(serial_table))


def test_a_scenario_that_fails_once_is_retried(client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "failed-once"

    # Defined here, so it travels by value: the workers cannot import this test module.
    def building_w(now_s: float) -> float:
        """Raises the first time any process calls it (the marker file says so)."""
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return 20_000.0
        raise RuntimeError("a passing glitch")

    flaky = replace(small_site(), series=SiteSeries(building_w, lambda now_s: 0.0))
    sweep = replace(twelve_scenarios(), axes={"chargers": (10,), "connection_kw": (110.0,)})
    table = run_dask(cases_of([flaky], {flaky.name: sweep}), client)
    assert marker.exists()  # it did fail once
    assert table["error"].tolist() == [""] and table["energy_pct"].iloc[0] > 0
