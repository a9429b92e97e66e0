"""The month's energy cost in the controller: prices in force (table and feed), the cars' cost per
kWh, where it shows (MQTT state, metrics, operator view, recording) and its file across a restart.

The grid meter of tests/sessions/conftest.py reads 3.45 kW; each car draws 4.6 kW.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from evdlm.api.operator_view import explain_report, state_document
from evdlm.control import Controller, state_message
from evdlm.core.clock import FakeClock
from evdlm.energy_cost import CostKeeper
from evdlm.observability import Metrics
from evdlm.prices import PriceFeedService
from evdlm.recording import RecordingWriter
from evdlm.replay import kpi
from evdlm.replay.frames import load_run

from .conftest import NOW_S, SITE, FakeChargers, FakeMeters, session, site_config

TARIFFS = (
    "tariffs: {currency: EUR, default_import_price_per_kwh: 0.30, export_price_per_kwh: 0.05, state_file: cost.json}\n"
)
CAR_W = 4_600.0
GRID_W = 3 * 5.0 * 230.0


def feed(start_s: float, hours: int, price: float) -> bytes:
    slots = [
        {
            "start": datetime.fromtimestamp(start_s + h * 3600, UTC).isoformat(),
            "end": datetime.fromtimestamp(start_s + (h + 1) * 3600, UTC).isoformat(),
            "import_per_kwh": price,
        }
        for h in range(hours)
    ]
    return json.dumps({"currency": "EUR", "slots": slots}).encode()


async def test_the_months_cost_is_accounted_shown_and_kept(tmp_path: Path) -> None:
    config = site_config(SITE + TARIFFS)
    clock = FakeClock(NOW_S)
    chargers = FakeChargers(session("A1", power_w=CAR_W), session("A2", power_w=CAR_W))
    prices = PriceFeedService(config, None, clock)
    keeper = CostKeeper.for_config(config, tmp_path)
    assert keeper is not None
    metrics = Metrics("s1")
    recorder = RecordingWriter(tmp_path / "recordings", "s1", SITE + TARIFFS, clock)
    control = Controller(
        config, clock, FakeMeters(clock), chargers, metrics=metrics, prices=prices, cost=keeper, recorder=recorder
    )
    for _ in range(60):  # a minute at the table's 0.30
        clock.advance(1.0)
        report = await control.run_cycle()
    assert report.price_per_kwh == (0.30, 0.05)
    # A feed message lays 0.10 over the next hour (accept() is what the MQTT task calls).
    assert prices.accept(feed(clock.now_s(), 1, 0.10), origin="test")
    for _ in range(60):
        clock.advance(1.0)
        report = await control.run_cycle()
    assert report.price_per_kwh == (0.10, 0.05)
    cost = report.cost
    assert cost is not None and cost.month == "2027-01"
    # 119 one-second intervals accounted (the first cycle has no interval before it), each at the
    # price of the cycle that began it: 60 at 0.30 (cycles 1-60) and 59 at 0.10 (cycles 61-119).
    import_kwh = GRID_W * 119 / 3.6e6
    assert cost.import_kwh == pytest.approx(import_kwh)
    assert cost.import_cost == pytest.approx(GRID_W * (60 * 0.30 + 59 * 0.10) / 3.6e6)
    assert cost.ev_kwh == pytest.approx(2 * CAR_W * 119 / 3.6e6)
    assert cost.cost_per_kwh_delivered == pytest.approx((60 * 0.30 + 59 * 0.10) / 119)
    message = state_message(report, "s1")["cost"]
    assert message["importPricePerKWh"] == 0.10 and message["evKWh"] == round(cost.ev_kwh, 3)
    document = state_document(report, control.context.topology, "s1", explain_report(report, control.context.topology))
    assert document["cost"]["cost_per_kwh_delivered"] == round(cost.cost_per_kwh_delivered or 0.0, 5)
    text = generate_latest(metrics.registry).decode()
    assert 'evdlm_price_per_kwh{direction="import",site="s1"} 0.1' in text
    assert 'evdlm_month_energy_kwh{flow="ev",site="s1"}' in text
    await control.close()
    # The replay's cost figures use the prices the recording says were in force (the feed's too):
    # the same money, plus the last cycle's second (the replay counts each cycle to the next).
    assert recorder.path is not None
    totals = kpi.cost(load_run(recorder.path)).loc["total"]
    last_s = 1.0 / 3.6e6
    assert totals["import_cost"] == pytest.approx(cost.import_cost + GRID_W * 0.10 * last_s)
    assert totals["ev_cost"] == pytest.approx(cost.ev_cost + 2 * CAR_W * 0.10 * last_s)
    assert totals["cost_per_kwh_delivered"] == pytest.approx(cost.cost_per_kwh_delivered, rel=1e-2)
    saved = json.loads((tmp_path / "cost.json").read_text())
    assert saved["month"] == "2027-01" and saved["ev_kwh"] == pytest.approx(cost.ev_kwh)
    # A restart keeps the month (and counts the gap at the last figures when short).
    again = CostKeeper.for_config(config, tmp_path)
    assert again is not None and again.state.ev_kwh == pytest.approx(cost.ev_kwh)
    clock.advance(10.0)
    state = again.step(clock.now_s(), FakeMeters(clock).snapshot(clock.now_s()), chargers.evse_states(), (0.3, 0.05))
    assert state.ev_kwh == pytest.approx(cost.ev_kwh + 2 * CAR_W * 10 / 3.6e6)


async def test_a_hostile_cost_file_is_set_aside(tmp_path: Path) -> None:
    config = site_config(SITE + TARIFFS)
    for content in ('{"format": 1, "month": "2027-01", "import_kwh": NaN}', '{"format": 1, "month": "x"}', "[]"):
        (tmp_path / "cost.json").write_text(content)
        keeper = CostKeeper.for_config(config, tmp_path)
        assert keeper is not None and keeper.state.month == "" and keeper.state.import_kwh == 0.0
        assert not (tmp_path / "cost.json").exists()
        assert list(tmp_path.glob("cost.json.corrupt-*"))


async def test_without_tariffs_there_is_no_cost() -> None:
    config = site_config(SITE)
    clock = FakeClock(NOW_S)
    assert CostKeeper.for_config(config, None) is None
    assert PriceFeedService.for_config(config, None, clock, None, None) is None
    control = Controller(config, clock, FakeMeters(clock), FakeChargers(replace(session("A1"), power_w=CAR_W)))
    clock.advance(1.0)
    report = await control.run_cycle()
    assert report.cost is None and "cost" not in state_message(report, "s1")
    await control.close()
