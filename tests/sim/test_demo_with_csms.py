"""``evdlm demo --with-csms``: the demo site as the OCPP Local Controller of a simulated CSMS."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from evdlm.cli import main
from evdlm.replay.loop import replay_recording
from evdlm.sim import demo
from evdlm.sim.demo import CSMS_LIMIT_A, RESPONSE_ALLOWANCE_S, DemoOptions, run_demo, summary_table


async def test_demo_with_csms_relays_to_the_csms_and_merges_its_profile(tmp_path: Path) -> None:
    # Four simulated minutes (about 8 s): every car has arrived by +1.3 min, the CSMS sends its
    # profile at +1.2 min (30 %).
    output = io.StringIO()
    console = Console(file=output, width=200)
    result = await run_demo(
        DemoOptions(sim_minutes=4.0, speed=30.0, out_dir=tmp_path, live=False, with_csms=True), console
    )
    report = result.csms
    assert report is not None
    assert report.error is None
    # Every charger booted at the CSMS, through evdlm, as itself (Basic auth user = its id).
    assert len(report.chargers) == 8
    for charger_id in report.chargers:
        assert report.boots[charger_id] >= 1, charger_id
        assert report.identities[charger_id] == charger_id
    assert any(transaction["started"] for transaction in report.transactions.values())
    assert {transaction["id_tag"] for transaction in report.transactions.values()} == {"SIMTAG"}
    assert report.received["BootNotification"] >= 8
    # Relayed live throughout (counted when sent; the last few may still be in flight at the end).
    assert report.forwarded_up >= sum(report.received.values()) > 100
    assert report.answered_locally == 0
    # The CSMS's profile: accepted by evdlm, kept as an upper bound, never forwarded.
    assert report.profile_answer == "Accepted"
    assert report.csms_limit_in_problem == CSMS_LIMIT_A
    assert report.csms_calls_to_chargers == 0
    assert report.profile_on_chargers == 0
    # The composite the CSMS read back: in A, at most 10 A throughout, at most evdlm's limit now.
    periods = report.composite_periods()
    assert periods and report.composite_unit() == "A"
    assert max(limit for _, limit in periods) <= CSMS_LIMIT_A
    assert report.evdlm_limit_a is not None and periods[0][1] <= report.evdlm_limit_a
    assert report.composite_ok()
    # The site honoured the bound once it had time to follow.
    assert report.profile_at_s is not None
    highest = result.limit_after(report.charger_id, report.profile_at_s + RESPONSE_ALLOWANCE_S)
    assert highest is not None and highest <= CSMS_LIMIT_A
    # The summary says so.
    console.print(summary_table(result))
    text = output.getvalue()
    assert "8/8 chargers booted there, 8 with their own identity" in text
    assert "within both" in text and "NOT within both" not in text
    assert "never: 0 CSMS calls passed to the chargers" in text
    # The recording of a Local Controller run replays exactly (the CSMS limit is recorded).
    replayed = replay_recording(tmp_path / "recordings")
    assert replayed.cycles > 150
    assert replayed.differing_cycles == 0


def test_cli_with_csms_flag_reaches_the_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[DemoOptions] = []

    def fake_demo_main(options: DemoOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(demo, "demo_main", fake_demo_main)
    assert main(["demo", "--quick", "--no-live", "--with-csms", "--out", str(tmp_path)]) == 0
    assert main(["demo", "--quick", "--no-live", "--out", str(tmp_path)]) == 0
    assert [(o.with_csms, o.sim_minutes, o.speed, o.live) for o in seen] == [
        (True, 20.0, 40.0, False),
        (False, 20.0, 40.0, False),
    ]
