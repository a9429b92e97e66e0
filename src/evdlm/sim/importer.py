"""Build a recording from a site's logs, to see what evdlm would have done there.

Two sources, one result (a recording in the gateway's format, so ``evdlm replay``, the KPIs and
the notebooks work on it):

(a) **Session CSV + grid-meter CSV** (:func:`import_sessions_csv`).

    Sessions, one row per charging session (header required, extra columns ignored)::

        charger,evse,start,end,energy_kwh,max_current_a,phases,announced
        WP01,1,2026-06-16T07:58:00+02:00,2026-06-16T17:10:00+02:00,23.4,16,3,true

    ``charger`` is a charger id of the site config; ``evse`` 1-based; ``start``/``end`` ISO 8601
    (naive times are site-local); ``energy_kwh`` the energy the car took; ``max_current_a`` the
    car's maximum per phase (optional, default the charger's); ``phases`` 1 or 3 (optional,
    default 3 on 3-phase chargers); ``announced`` whether the car tells the controller its
    departure time and energy (optional, default true: ISO 15118 or a driver app).

    Grid meter, one row per sample (any period; linearly interpolated)::

        timestamp,power_w,l1_w,l2_w,l3_w
        2026-06-16T00:00:00+02:00,35120,11800,11650,11670

    ``power_w`` is the measured import (+) / export (−) of the whole site, cars included;
    ``l1_w``..``l3_w`` optional per site phase. Optional ``pv_w`` (production, +).

(b) **OCPP MeterValues logs** (:func:`import_ocpp_log`), JSON lines, one message a line::

        {"charger": "WP01", "message": [2, "42", "MeterValues", {"connectorId": 1, "transactionId": 7,
         "meterValue": [{"timestamp": "2026-06-16T08:00:00Z", "sampledValue": [
            {"measurand": "Energy.Active.Import.Register", "unit": "Wh", "value": "1200"},
            {"measurand": "Current.Import", "phase": "L1", "unit": "A", "value": "15.8"}]}]}]}

    ``message`` is the OCPP-J CALL as sent (1.6 ``connectorId``/``transactionId`` or 2.0.1
    ``evseId``); ``{"charger": ..., "action": "MeterValues", "payload": {...}}`` is accepted too.
    Sessions are cut per (charger, evse, transaction id): start and end from the first and last
    sample, energy from the register, phases and maximum current from the per-phase currents.
    A grid-meter CSV (as above) is optional; without it the site has no other load.

How the day is rebuilt: each logged session becomes a car (arrival, departure, energy) that
follows evdlm's limits in the in-process simulation (:mod:`evdlm.sim.closed_loop`), and the
site's other load is the measured grid power minus what the logged cars drew. The logs do not
say how each car drew within its session, so for that subtraction a car is assumed to charge
at its maximum from arrival until its energy was delivered (uncontrolled charging, which is what
a site without load management sees).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from evdlm.config import parse_site_config
from evdlm.config.models import ChargerKind, SiteConfig
from evdlm.sim.closed_loop import Session, SimulationSpec, SiteSeries, simulate

NOMINAL_V = 230.0


@dataclass(frozen=True)
class MeterSeries:
    """A grid-meter series, epoch s and W (per phase optional)."""

    t_s: np.ndarray
    power_w: np.ndarray
    phase_w: np.ndarray | None  # shape (n, 3)
    pv_w: np.ndarray | None


def parse_time(text: str, timezone: str) -> float:
    """ISO 8601 to epoch s; a naive time is site-local."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(timezone))
    return value.timestamp()


def _truthy(text: str | None, default: bool) -> bool:
    if text is None or text.strip() == "":
        return default
    return text.strip().lower() in {"1", "true", "yes", "y"}


def parse_sessions_csv(lines: Iterable[str], config: SiteConfig, *, announced: bool = True) -> tuple[Session, ...]:
    chargers = {charger.id: charger for charger in config.chargers}
    sessions = []
    for number, row in enumerate(csv.DictReader(lines), start=2):
        charger = chargers.get(row["charger"].strip())
        if charger is None:
            raise ValueError(f"sessions line {number}: charger {row['charger']!r} is not in the site config")
        one_phase = charger.kind is ChargerKind.AC_1PHASE
        phases = int(row.get("phases") or (1 if one_phase else 3))
        sessions.append(
            Session(
                charger_id=charger.id,
                evse_id=int(row.get("evse") or 1),
                arrival_s=parse_time(row["start"], config.site.timezone),
                departure_s=parse_time(row["end"], config.site.timezone),
                energy_needed_kwh=float(row["energy_kwh"]),
                ev_max_current_a=float(row.get("max_current_a") or charger.max_current_a),
                phases=1 if one_phase else phases,
                announces_needs=_truthy(row.get("announced"), announced),
                transaction_id=f"{charger.id}-{number - 1}",
            )
        )
    return tuple(sessions)


def parse_meter_csv(lines: Iterable[str], timezone: str) -> MeterSeries:
    rows = list(csv.DictReader(lines))
    if not rows:
        raise ValueError("grid meter CSV has no rows")
    rows.sort(key=lambda row: parse_time(row["timestamp"], timezone))
    t_s = np.array([parse_time(row["timestamp"], timezone) for row in rows])
    power_w = np.array([float(row["power_w"]) for row in rows])
    phase_w = None
    if all(row.get(f"l{p}_w") not in (None, "") for row in rows for p in (1, 2, 3)):
        phase_w = np.array([[float(row[f"l{p}_w"]) for p in (1, 2, 3)] for row in rows])
    pv_w = np.array([float(row["pv_w"]) for row in rows]) if all(row.get("pv_w") for row in rows) else None
    return MeterSeries(t_s, power_w, phase_w, pv_w)


def uncontrolled_power_w(session: Session, t_s: np.ndarray, voltage_v: float = NOMINAL_V) -> np.ndarray:
    """What the car drew without load management: its maximum from arrival until its energy is in."""
    power_w = session.ev_max_current_a * voltage_v * session.phases
    full_s = session.arrival_s + session.energy_needed_kwh * 3.6e6 / power_w if power_w > 0 else session.arrival_s
    end_s = min(full_s, session.departure_s)
    return np.where((t_s >= session.arrival_s) & (t_s < end_s), power_w, 0.0)


def _series(meter: MeterSeries | None, sessions: tuple[Session, ...], config: SiteConfig) -> SiteSeries:
    if meter is None:
        return SiteSeries(building_w=lambda now_s: 0.0, pv_w=lambda now_s: 0.0)
    voltage_v = config.grid.nominal_voltage_v
    baseline = np.zeros_like(meter.power_w)
    for session in sessions:
        baseline += uncontrolled_power_w(session, meter.t_s, voltage_v)
    other_w = meter.power_w - baseline
    phase_other = meter.phase_w - baseline[:, None] / 3.0 if meter.phase_w is not None else None
    t_s = meter.t_s
    pv = meter.pv_w

    def building_w(now_s: float) -> float:
        # The grid meter already nets PV off; the simulator subtracts pv_w again, so add it back.
        pv_now = float(np.interp(now_s, t_s, pv)) if pv is not None else 0.0
        return float(np.interp(now_s, t_s, other_w)) + pv_now

    def pv_w(now_s: float) -> float:
        return float(np.interp(now_s, t_s, pv)) if pv is not None else 0.0

    def other_phase_w(now_s: float) -> tuple[float, float, float]:
        assert phase_other is not None
        return (
            float(np.interp(now_s, t_s, phase_other[:, 0])),
            float(np.interp(now_s, t_s, phase_other[:, 1])),
            float(np.interp(now_s, t_s, phase_other[:, 2])),
        )

    return SiteSeries(
        building_w=building_w, pv_w=pv_w, other_phase_w=other_phase_w if phase_other is not None else None
    )


def _simulate(
    config_text: str,
    sessions: tuple[Session, ...],
    meter: MeterSeries | None,
    out_dir: Path,
    start_s: float | None,
    end_s: float | None,
    sample_interval_s: float,
) -> int:
    config = parse_site_config(config_text, "<import config>").config
    if not sessions:
        raise ValueError("no sessions to import")
    first_s = min(s.arrival_s for s in sessions) if start_s is None else start_s
    last_s = max(s.departure_s for s in sessions) if end_s is None else end_s
    if meter is not None:
        first_s = meter.t_s[0] if start_s is None else first_s
        last_s = meter.t_s[-1] if end_s is None else last_s
    spec = SimulationSpec(
        config_text=config_text,
        start_s=float(first_s),
        duration_s=float(last_s - first_s),
        sessions=sessions,
        series=_series(meter, sessions, config),
        sample_interval_s=sample_interval_s,
    )
    return simulate(spec, out_dir)


def import_sessions_csv(
    config_path: Path,
    sessions_csv: Path,
    meter_csv: Path | None,
    out_dir: Path,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    announced: bool = True,
    sample_interval_s: float = 30.0,
) -> int:
    """Write the recording of the logged day under evdlm to ``out_dir``; returns the cycle count."""
    config_text = config_path.read_text(encoding="utf-8")
    config = parse_site_config(config_text, str(config_path)).config
    with sessions_csv.open(encoding="utf-8", newline="") as stream:
        sessions = parse_sessions_csv(stream, config, announced=announced)
    meter = None
    if meter_csv is not None:
        with meter_csv.open(encoding="utf-8", newline="") as stream:
            meter = parse_meter_csv(stream, config.site.timezone)
    return _simulate(config_text, sessions, meter, out_dir, start_s, end_s, sample_interval_s)


# --------------------------------------------------------------------------- OCPP logs


@dataclass(frozen=True)
class _Sample:
    t_s: float
    energy_wh: float | None
    currents_a: tuple[float, float, float]


def _meter_values(line: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """(charger, action, payload) of one log line, or None if it is not a CALL."""
    charger = str(line.get("charger") or line.get("charge_point_id") or "")
    message = line.get("message")
    if isinstance(message, list) and len(message) == 4 and message[0] == 2:
        return charger, str(message[2]), dict(message[3])
    if "action" in line and isinstance(line.get("payload"), dict):
        return charger, str(line["action"]), dict(line["payload"])
    return None


def _sample(meter_value: dict[str, Any], timezone: str) -> _Sample:
    energy_wh: float | None = None
    currents = [0.0, 0.0, 0.0]
    single: float | None = None
    for sampled in meter_value.get("sampledValue", []):
        measurand = sampled.get("measurand", "Energy.Active.Import.Register")
        value = float(sampled["value"])
        unit = sampled.get("unit") or sampled.get("unitOfMeasure", {}).get("unit")
        if measurand == "Energy.Active.Import.Register" and sampled.get("phase") is None:
            energy_wh = value * 1000.0 if unit == "kWh" else value
        elif measurand == "Current.Import":
            phase = str(sampled.get("phase") or "")
            if phase[:2] in {"L1", "L2", "L3"}:
                currents[int(phase[1]) - 1] = max(currents[int(phase[1]) - 1], value)
            else:
                single = value
    if single is not None and not any(currents):
        currents[0] = single
    return _Sample(
        parse_time(str(meter_value["timestamp"]), timezone), energy_wh, (currents[0], currents[1], currents[2])
    )


def sessions_from_ocpp_log(lines: Iterable[str], config: SiteConfig, *, announced: bool = True) -> tuple[Session, ...]:
    """Sessions cut from MeterValues, per (charger, evse, transaction id)."""
    chargers = {charger.id: charger for charger in config.chargers}
    samples: dict[tuple[str, int, str], list[_Sample]] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        parsed = _meter_values(json.loads(text))
        if parsed is None or parsed[1] != "MeterValues":
            continue
        charger_id, _, payload = parsed
        if charger_id not in chargers:
            raise ValueError(f"OCPP log line {number}: charger {charger_id!r} is not in the site config")
        evse_id = int(payload.get("evseId", payload.get("connectorId", 1)) or 1)
        transaction = str(payload.get("transactionId", "none"))
        for meter_value in payload.get("meterValue", []):
            samples.setdefault((charger_id, evse_id, transaction), []).append(
                _sample(meter_value, config.site.timezone)
            )
    sessions = []
    for (charger_id, evse_id, transaction), series in samples.items():
        series.sort(key=lambda sample: sample.t_s)
        charger = chargers[charger_id]
        energies = [s.energy_wh for s in series if s.energy_wh is not None]
        energy_kwh = (max(energies) - min(energies)) / 1000.0 if energies else 0.0
        peak_a = max((max(s.currents_a) for s in series), default=0.0)
        three = any(s.currents_a[1] > 0.5 or s.currents_a[2] > 0.5 for s in series)
        one_phase = charger.kind is ChargerKind.AC_1PHASE or not three
        if len(series) < 2 or energy_kwh <= 0:
            continue
        sessions.append(
            Session(
                charger_id=charger_id,
                evse_id=evse_id,
                arrival_s=series[0].t_s,
                departure_s=series[-1].t_s,
                energy_needed_kwh=round(energy_kwh, 3),
                ev_max_current_a=min(charger.max_current_a, max(charger.min_current_a, round(peak_a))),
                phases=1 if one_phase else 3,
                announces_needs=announced,
                transaction_id=f"{charger_id}-{transaction}",
            )
        )
    return tuple(sorted(sessions, key=lambda s: s.arrival_s))


def import_ocpp_log(
    config_path: Path,
    log_path: Path,
    meter_csv: Path | None,
    out_dir: Path,
    *,
    announced: bool = True,
    sample_interval_s: float = 30.0,
) -> int:
    """Write the recording of an OCPP-logged day under evdlm to ``out_dir``; returns the cycle count."""
    config_text = config_path.read_text(encoding="utf-8")
    config = parse_site_config(config_text, str(config_path)).config
    with log_path.open(encoding="utf-8") as stream:
        sessions = sessions_from_ocpp_log(stream, config, announced=announced)
    meter = None
    if meter_csv is not None:
        with meter_csv.open(encoding="utf-8", newline="") as stream:
            meter = parse_meter_csv(stream, config.site.timezone)
    return _simulate(config_text, sessions, meter, out_dir, None, None, sample_interval_s)
