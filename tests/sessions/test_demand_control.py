"""Demand-window control in the controller: the import row held at the month's peak, why, and its file.

Two cars on a 45 A circuit (tests/sessions/conftest.py), the grid meter reading 5 A a phase of
building load (3.45 kW). With a month's peak of 10 kW the cars may share about 6.5 kW on average.
"""

from __future__ import annotations

import json
from pathlib import Path

from evdlm.api.operator_view import explain_report, state_document
from evdlm.control import Controller, state_message
from evdlm.core.clock import FakeClock
from evdlm.demand_charge import DemandKeeper
from evdlm.sessions.service import SessionService

from .conftest import NOW_S, SITE, FakeChargers, FakeMeters, session, site_config

DEMAND = "demand: {window_min: 15, rate_per_kw: 12, state_file: demand.json}\n"


async def test_the_import_is_held_at_the_months_peak_and_the_operator_sees_why(tmp_path: Path) -> None:
    config = site_config(SITE + DEMAND)
    clock = FakeClock(NOW_S)
    chargers = FakeChargers(session("A1"), session("A2"))
    # This month's peak so far (the clock is in January 2027): 10 kW, from the previous run's file.
    (tmp_path / "demand.json").write_text(
        json.dumps({"format": 1, "month": "2027-01", "month_peak_w": 10_000.0, "energy_wh": 0.0})
    )
    keeper = DemandKeeper.for_config(config, tmp_path)
    assert keeper is not None and keeper.state.month_peak_w == 10_000.0
    control = Controller(
        config,
        clock,
        FakeMeters(clock),
        chargers,
        sessions=SessionService(config, chargers, clock),
        demand_window=keeper,
    )
    reports = []
    for _ in range(4):
        clock.advance(1.0)
        reports.append(await control.run_cycle())
    report = reports[-1]
    assert report.demand_window is not None
    window = report.demand_window
    assert window.target_w == 10_000.0 and window.raised_because is None
    decision = report.decision
    assert decision is not None
    topology = control.context.topology
    import_limit_w = decision.built.row_limit[topology.import_row]
    assert import_limit_w < 60_000.0  # the grid's 60 kW is not what binds
    assert any(note.startswith("demand window") for note in decision.built.notes)
    # The cars together stay within what the window leaves them.
    cars_w = sum(command.limit for command in decision.plan.commands) * 230.0
    assert cars_w <= import_limit_w - 3 * 5.0 * 230.0 + 1.0
    document = state_document(report, topology, "s1", explain_report(report, topology))
    assert document["demand"]["target_w"] == 10_000.0
    assert {e["binding"]["kind"] for e in document["evses"]} & {"demand"}, document["evses"]
    assert state_message(report, "s1")["demand"]["monthPeakKW"] == 10.0
    await control.close()
    saved = json.loads((tmp_path / "demand.json").read_text())
    assert saved["month"] == "2027-01" and saved["month_peak_w"] == 10_000.0 and saved["last_s"] == NOW_S + 4.0
