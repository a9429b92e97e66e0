"""Importers: logged sessions (CSV or OCPP MeterValues) become a replayable recording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evdlm.config import parse_site_config
from evdlm.replay import kpi, replay_recording
from evdlm.replay.frames import load_run
from evdlm.sim.importer import import_ocpp_log, import_sessions_csv, parse_meter_csv, sessions_from_ocpp_log
from evdlm.sim.sample_day import workplace_50_config

SESSIONS = """charger,evse,start,end,energy_kwh,max_current_a,phases,announced
WP01,1,2026-06-16T08:00:00+02:00,2026-06-16T09:00:00+02:00,8.0,16,3,true
WP02,1,2026-06-16T08:05:00,2026-06-16T09:30:00,40.0,32,3,
WP10,1,2026-06-16T08:10:00+02:00,2026-06-16T09:00:00+02:00,3.0,,,false
"""
METER = """timestamp,power_w,l1_w,l2_w,l3_w
2026-06-16T07:55:00+02:00,40000,13000,13500,13500
2026-06-16T08:30:00+02:00,80000,27000,26500,26500
2026-06-16T09:35:00+02:00,50000,16000,17000,17000
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(workplace_50_config(cycle_period_s=5.0))
    return path


def test_sessions_csv_and_meter_make_a_replayable_recording(config_path: Path, tmp_path: Path) -> None:
    (tmp_path / "sessions.csv").write_text(SESSIONS)
    (tmp_path / "meter.csv").write_text(METER)
    out = tmp_path / "imported"
    cycles = import_sessions_csv(config_path, tmp_path / "sessions.csv", tmp_path / "meter.csv", out)
    assert cycles == (100 * 60) // 5  # 07:55 to 09:35 in 5-s cycles
    assert replay_recording(out).differing_cycles == 0
    run = load_run(out)
    table = kpi.sessions(run).set_index("evse")
    assert set(table.index) == {"WP01/1", "WP02/1", "WP10/1"}
    assert table.loc["WP01/1", "requested_kwh"] == pytest.approx(8.0, rel=0.01)
    assert table.loc["WP01/1", "delivered_kwh"] == pytest.approx(8.0, rel=0.02)  # 11 kW for an hour: enough
    assert table.loc["WP02/1", "unmet_kwh"] > 0  # 40 kWh in 85 min is more than 22 kW gives
    assert table.loc["WP10/1", "requested_kwh"] != table.loc["WP10/1", "requested_kwh"]  # not announced: NaN
    # The other load is the meter minus the (uncontrolled) logged cars: before any car, the meter itself.
    assert run.cycles["grid_import_w"].iloc[0] == pytest.approx(40_000.0, abs=1.0)


def test_meter_csv_naive_times_are_site_local() -> None:
    series = parse_meter_csv(["timestamp,power_w", "2026-06-16T00:00:00,1000"], "Europe/Berlin")
    assert series.t_s[0] == 1_781_560_800.0
    assert series.phase_w is None


def _call(charger: str, payload: dict[str, object]) -> str:
    return json.dumps({"charger": charger, "message": [2, "1", "MeterValues", payload]})


def _values(at: str, energy_wh: float, currents: tuple[float, ...]) -> dict[str, object]:
    sampled: list[dict[str, object]] = [
        {"measurand": "Energy.Active.Import.Register", "unit": "Wh", "value": str(energy_wh)}
    ]
    sampled += [
        {"measurand": "Current.Import", "phase": f"L{n + 1}", "unit": "A", "value": str(value)}
        for n, value in enumerate(currents)
    ]
    return {"timestamp": at, "sampledValue": sampled}


def ocpp_log() -> list[str]:
    lines = []
    for minute in range(0, 61, 10):
        at = f"2026-06-16T06:{minute:02d}:00Z" if minute < 60 else "2026-06-16T07:00:00Z"
        # OCPP 1.6, three phases at 16 A.
        lines.append(
            _call(
                "WP03",
                {"connectorId": 1, "transactionId": 7, "meterValue": [_values(at, 1000 + 185 * minute, (16, 16, 16))]},
            )
        )
        # OCPP 2.0.1 shape (evseId), a car on one phase at 20 A, in kWh.
        payload = {"evseId": 1, "meterValue": [_values(at, 0.077 * minute, (20,))]}
        payload["meterValue"][0]["sampledValue"][0]["unit"] = "kWh"  # type: ignore[index]
        lines.append(json.dumps({"charger": "WP04", "action": "MeterValues", "payload": payload}))
    lines.append(json.dumps({"charger": "WP03", "message": [2, "9", "Heartbeat", {}]}))
    return lines


def test_ocpp_log_sessions() -> None:
    config = parse_site_config(workplace_50_config()).config
    sessions = {s.charger_id: s for s in sessions_from_ocpp_log(ocpp_log(), config)}
    assert sessions["WP03"].energy_needed_kwh == pytest.approx(11.1)
    assert sessions["WP03"].phases == 3
    assert sessions["WP03"].ev_max_current_a == 16
    assert sessions["WP04"].energy_needed_kwh == pytest.approx(4.62)
    assert sessions["WP04"].phases == 1
    assert sessions["WP03"].departure_s - sessions["WP03"].arrival_s == 3600.0


def test_ocpp_log_import_replays(config_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "ocpp.jsonl"
    log.write_text("\n".join(ocpp_log()) + "\n")
    out = tmp_path / "imported"
    assert import_ocpp_log(config_path, log, None, out) == 720
    assert replay_recording(out).differing_cycles == 0
    delivered = kpi.sessions(load_run(out))["delivered_kwh"].sum()
    assert delivered == pytest.approx(11.1 + 4.62, rel=0.05)
