"""The ledger's state file (round trip, hostile files), the gateway-side service, and `evdlm availability`."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evdlm.availability.service import AvailabilityService
from evdlm.availability.store import ledger_json, load_ledger, parse_ledger, save_ledger
from evdlm.cli import main
from evdlm.config import parse_site_config
from evdlm.core.availability import Availability, AvailabilityLedger
from evdlm.core.clock import FakeClock
from evdlm.core.types import EvseState, Quality, Reading
from evdlm.observability import Metrics
from evdlm.recording import RecordingWriter


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def sample_ledger() -> AvailabilityLedger:
    ledger = AvailabilityLedger(max_hold_s=600)
    t = at("2026-11-01T00:00:00")
    for key in (("cp-1", 1), ("cp-1", 2)):
        ledger.observe(t, {key: (Availability.UP, "")})
    ledger.observe(t + 500, {("cp-1", 1): (Availability.FAULT, "GroundFailure"), ("cp-1", 2): (Availability.UP, "")})
    ledger.observe(t + 800, {("cp-1", 1): (Availability.UP, ""), ("cp-1", 2): (Availability.BELOW_FLOOR, "site limit")})
    ledger.observe(t + 1000, {("cp-1", 1): (Availability.UP, ""), ("cp-1", 2): (Availability.UP, "")})
    return ledger


def test_round_trip(tmp_path: Path) -> None:
    ledger = sample_ledger()
    path = tmp_path / "var/availability.json"
    assert save_ledger(path, ledger, at("2026-11-01T00:20:00"))
    loaded = load_ledger(path)
    assert loaded is not None
    assert ledger_json(loaded, 0.0) == ledger_json(ledger, 0.0)
    assert loaded.seconds(("cp-1", 1), "2026-11")["fault"] == 300
    assert loaded.ports[("cp-1", 1)].recent_outages()[0].cause == "GroundFailure"


@pytest.mark.parametrize(
    "text",
    [
        '{"format": 1, "ports": [',  # cut short
        '{"format": 2, "ports": []}',  # another version
        '{"format": 1, "ports": [{"charger": "cp", "evse": 1, "months": {"2026-11": {"seconds": {"up": -5}}}}]}',
        '{"format": 1, "ports": [{"charger": "cp", "evse": 1, "months": {"2026-11": {"seconds": {"bogus": 5}}}}]}',
        '{"format": 1, "ports": [{"charger": "cp", "evse": 1, "outages": [[10, 5, "fault", "x"]]}]}',
        '{"format": 1, "ports": [{"charger": "cp", "evse": 1, "last_s": NaN}]}',
        "\udcff not utf-8",
    ],
)
def test_a_hostile_file_is_set_aside_and_a_fresh_ledger_starts(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "var/availability.json"
    path.parent.mkdir()
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    config = parse_site_config(SITE).config
    with caplog.at_level(logging.WARNING):
        service = AvailabilityService(config, FakeClock(at("2026-11-02T00:00:00")), tmp_path, Metrics("t"))
    assert service.ledger.ports == {}
    assert not path.exists()
    kept = list(path.parent.glob("availability.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == text.encode("utf-8", "surrogateescape")
    assert "unusable" in caplog.text and "availability.json" in caplog.text
    service.close()  # a fresh ledger is saved over it
    assert parse_ledger(json.loads(path.read_text()))


def rows(output: str) -> dict[str, dict[str, str]]:
    return {f"{row['charger']}/{row['evse']}": row for row in csv.DictReader(io.StringIO(output))}


def test_cli_csv_from_the_state_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "availability.json"
    save_ledger(path, sample_ledger(), at("2026-11-01T00:20:00"))
    assert main(["availability", str(path), "--month", "2026-11", "--csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "charger,evse,up_s,fault_s,offline_s,below_floor_s,dr_curtailed_s,excluded_s,"
        "uptime_month_pct,uptime_t12m_pct,outages"
    )
    table = rows(out)
    # Saved at +1200 s: the last 200 s held up are counted up to the save.
    assert table["cp-1/1"]["up_s"] == "900" and table["cp-1/1"]["fault_s"] == "300"
    assert table["cp-1/1"]["uptime_month_pct"] == "75.000" and table["cp-1/1"]["outages"] == "1"
    assert (
        table["cp-1/2"]["below_floor_s"] == "200" and table["cp-1/2"]["uptime_t12m_pct"] == f"{100 * 1000 / 1200:.3f}"
    )
    assert main(["availability", str(path), "--month", "2026-10", "--csv"]) == 0
    assert rows(capsys.readouterr().out)["cp-1/1"]["uptime_month_pct"] == ""  # no time that month
    assert main(["availability", str(path)]) == 0  # the table, for the month of the save
    assert "2026-11" in capsys.readouterr().out
    assert main(["availability", str(path), "--month", "2026-13"]) == 2
    (tmp_path / "bad.json").write_text("{")
    assert main(["availability", str(tmp_path / "bad.json")]) == 1
    assert (tmp_path / "bad.json").exists()  # the CLI reads; it never sets a file aside


SITE = """\
site: {id: rec}
grid: {import_limit_kw: 50, phase_current_limit_a: 100, meter: gm}
circuits: [{id: a, phase_current_limit_a: 63}]
chargers:
  - {id: A1, ocpp_version: "1.6", circuit: a, min_power_floor_kw: 7}
  - {id: A2, ocpp_version: "1.6", circuit: a}
modbus_links: [{name: lan, type: tcp, host: 127.0.0.1}]
devices:
  - {name: gm, role: grid_meter, modbus: {link: lan, profile: sunspec}}
control: {fallback_import_limit_kw: 20, cycle_period_s: 5, min_off_time_s: 0, ramp_up_a_per_s: 100}
availability:
  maintenance_windows:
    - {start: "2026-11-05T10:10:00Z", end: "2026-11-05T10:11:00Z", chargers: [A2]}
"""


def test_cli_rebuilds_the_ledger_from_a_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Recorded cycles through the same classifier: a fault, a comms outage, a DR event that holds
    A1 below its floor, and a maintenance window, to the second."""
    start_s = at("2026-11-05T10:00:00")
    writer = RecordingWriter(tmp_path / "rec", "rec", SITE, FakeClock(start_s))
    config = parse_site_config(SITE).config
    assert config.availability is not None
    from evdlm.core.memory import ControlMemory

    t = start_s
    for cycle in range(1, 181):  # 15 min at 5 s
        minute = (t - start_s) // 60
        drawn_a = 0.0 if minute in (8, 9) else 16.0  # the car follows the DR cut at once
        a1 = EvseState("A1", 1, online=minute not in (3, 4), connected=True, charging=True, updated_at_s=t,
                       transaction_id="tx1", phase_current_a=(drawn_a,) * 3, sampled_at_s=t)  # fmt: skip
        a2 = EvseState("A2", 1, online=True, connected=False, charging=False, updated_at_s=t,
                       fault="GroundFailure" if minute in (6, 7) else None)  # fmt: skip
        dr = {
            "import_limit_w": 4000.0 if minute in (8, 9) else None,
            "export_limit_w": None,
            "mode": None,
            "events": [],
        }
        grid = Reading("gm", t, Quality.OK, power_w=drawn_a * 690.0, phase_power_w=(drawn_a * 230.0,) * 3)
        writer.write_cycle(
            now_s=t,
            cycle=cycle,
            memory_before=ControlMemory(),
            readings={"gm": grid},
            evse_states={("A1", 1): a1, ("A2", 1): a2},
            dr=dr,
            commands={},
            outcome={},
        )
        t += 5
    writer.close()
    assert main(["availability", str(tmp_path / "rec"), "--month", "2026-11", "--csv"]) == 0
    table = rows(capsys.readouterr().out)
    a1, a2 = table["A1/1"], table["A2/1"]
    # 180 cycles: 179 intervals of 5 s credited (the last cycle ends the recording).
    assert a1["offline_s"] == "120" and a1["dr_curtailed_s"] == "120"
    assert int(a1["up_s"]) + 240 == 895 and a1["outages"] == "2"
    assert a2["fault_s"] == "120" and a2["excluded_s"] == "60" and a2["up_s"] == str(895 - 180)
    assert a2["outages"] == "1"
