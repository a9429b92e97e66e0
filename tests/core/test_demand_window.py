"""Demand-window arithmetic: clock-aligned windows, billing months, DST, spikes, restarts."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evdlm.core.demand_window import (
    SETTLE_S,
    DemandSettings,
    WindowState,
    advance,
    billing_month,
    decide_window,
    needed_power_w,
    window_bounds,
)
from evdlm.core.types import Quality, Reading
from evdlm.demand_charge import DemandKeeper, parse_state

BRUSSELS = DemandSettings(
    window_s=900.0, rolling=False, timezone="Europe/Brussels", billing_day=1, floor_w=0.0, rate_per_kw=10.0
)


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_windows_are_local_quarter_hours_and_hours_also_in_a_half_hour_zone() -> None:
    start, end = window_bounds(utc("2026-11-03 10:07:30"), BRUSSELS)
    assert (start, end) == (utc("2026-11-03 10:00:00"), utc("2026-11-03 10:15:00"))
    kolkata = replace(BRUSSELS, timezone="Asia/Kolkata", window_s=3600.0)  # UTC+5:30
    start, end = window_bounds(utc("2026-11-03 10:07:30"), kolkata)
    assert (start, end) == (utc("2026-11-03 09:30:00"), utc("2026-11-03 10:30:00"))  # local 15:00-16:00


@pytest.mark.parametrize(
    ("moment", "window"),
    [
        # Spring forward, Brussels 2026-03-29: 02:00 local is 03:00; UTC 01:00.
        ("2026-03-29 00:59:59", ("2026-03-29 00:45:00", "2026-03-29 01:00:00")),
        ("2026-03-29 01:00:00", ("2026-03-29 01:00:00", "2026-03-29 01:15:00")),
        # Fall back, 2026-10-25: 03:00 local is 02:00 again; UTC 01:00. Both 02:xx hours have their quarters.
        ("2026-10-25 00:50:00", ("2026-10-25 00:45:00", "2026-10-25 01:00:00")),
        ("2026-10-25 01:10:00", ("2026-10-25 01:00:00", "2026-10-25 01:15:00")),
    ],
)
def test_windows_last_fifteen_real_minutes_across_dst_changes(moment: str, window: tuple[str, str]) -> None:
    assert window_bounds(utc(moment), BRUSSELS) == (utc(window[0]), utc(window[1]))


def test_billing_months_start_at_local_midnight_of_the_billing_day() -> None:
    assert billing_month(utc("2026-10-31 22:59:59"), BRUSSELS) == "2026-10"  # 23:59:59 local (CET)
    assert billing_month(utc("2026-10-31 23:00:00"), BRUSSELS) == "2026-11"  # 00:00 local, 1 November
    mid = replace(BRUSSELS, billing_day=15)
    assert billing_month(utc("2026-11-14 12:00:00"), mid) == "2026-10"
    assert billing_month(utc("2026-11-15 12:00:00"), mid) == "2026-11"
    assert billing_month(utc("2027-01-10 12:00:00"), mid) == "2026-12"


def _run(state: WindowState, start_s: float, seconds: int, import_w: float) -> WindowState:
    for t in range(seconds):
        state = advance(state, start_s + t, import_w, BRUSSELS)
    return state


def test_closed_windows_set_the_months_peak_and_a_new_month_starts_from_nothing() -> None:
    start = utc("2026-10-31 22:00:00")  # 23:00 local: the last hour of October
    state = _run(WindowState(), start, 900, 20_000.0)
    state = _run(state, start + 900, 900, 50_000.0)
    state = advance(state, start + 1800, 10_000.0, BRUSSELS)
    assert state.month == "2026-10"
    assert state.month_peak_w == pytest.approx(50_000.0, rel=1e-6)
    assert state.month_peak_at_s == start + 1800
    state = _run(state, start + 1800, 1800, 10_000.0)  # into November, local midnight
    state = advance(state, start + 3600 + 900, 10_000.0, BRUSSELS)
    assert state.month == "2026-11"
    assert state.month_peak_w == pytest.approx(10_000.0, rel=1e-6)


def test_a_window_across_the_fall_back_hour_is_fifteen_real_minutes_of_energy() -> None:
    start = utc("2026-10-25 00:45:00")  # local 02:45 CEST; 01:00 UTC is 02:00 CET again
    state = _run(WindowState(), start, 1800, 36_000.0)
    state = advance(state, start + 1800, 36_000.0, BRUSSELS)
    assert state.window_start_s == utc("2026-10-25 01:15:00")
    assert state.energy_wh == pytest.approx(0.0, abs=1e-6)
    assert state.month_peak_w == pytest.approx(36_000.0, rel=1e-6)


def test_a_spike_early_in_a_window_is_compensated_within_it() -> None:
    """Month peak 40 kW; the building spikes to 80 kW for 3 minutes; the cars could take 100 kW.
    The limit holds them back for the rest of the window: the window averages 40 kW, not more."""
    start = utc("2026-11-03 10:00:00")
    state = WindowState(month="2026-11", month_peak_w=40_000.0, month_peak_at_s=start - 3600)
    state = advance(state, start, 0.0, BRUSSELS)
    import_w = 80_000.0
    limits = []
    for t in range(1, 900):
        now = start + t
        state = advance(state, now, import_w, BRUSSELS)
        decision = decide_window(state, now, BRUSSELS, needed_ev_w=0.0, uncontrolled_w=0.0)
        limits.append(decision.limit_w)
        building_w = 80_000.0 if t < 180 else 10_000.0
        import_w = max(building_w, min(100_000.0, decision.limit_w))  # cars fill up to the limit
    state = advance(state, start + 900, import_w, BRUSSELS)
    assert state.month_peak_w <= 40_000.0 * 1.005, state.month_peak_w
    assert min(limits[180:]) < 40_000.0 < max(limits)  # below the target after the spike, not before
    # Power unused early in a window is spent later in it: a quiet start lifts the limit above the target.
    quiet = advance(
        advance(replace(state, energy_wh=0.0, window_start_s=start + 900), start + 900, 0.0, BRUSSELS),
        start + 1200,
        0.0,
        BRUSSELS,
    )
    later = decide_window(quiet, start + 1200, BRUSSELS, needed_ev_w=0.0, uncontrolled_w=0.0)
    assert later.limit_w == pytest.approx(40_000.0 * 900 / 600, rel=1e-6)


def test_the_end_of_a_window_asks_for_no_spike_the_cars_cannot_follow() -> None:
    start = utc("2026-11-03 10:00:00")
    state = WindowState(month="2026-11", month_peak_w=40_000.0, window_start_s=start, energy_wh=0.0, last_s=start + 890)
    decision = decide_window(state, start + 890, BRUSSELS, needed_ev_w=0.0, uncontrolled_w=0.0)
    assert decision.limit_w == pytest.approx(40_000.0 * 900 / SETTLE_S)


def test_a_target_at_the_connection_needs_no_cap() -> None:
    """A month whose peak (or floor, or the departures' need) reached the contracted import limit,
    or came within 3 % of it: the connection's own limit keeps every window about the target, and
    the window steps aside (a cap would only hold cars back after a few seconds over, energy a
    saturated site never gets back)."""
    start = utc("2026-11-03 10:00:00")
    settings = replace(BRUSSELS, connection_w=1_200_000.0)
    state = WindowState(month="2026-11", month_peak_w=1_100_000.0, window_start_s=start, energy_wh=300_000.0)
    below = decide_window(state, start + 600, settings, needed_ev_w=0.0, uncontrolled_w=0.0)
    assert math.isfinite(below.limit_w) and below.limit_w < 1_100_000.0  # the window's energy so far is high
    # Within 3 % of the connection: the demand charge it could still save is small, the friction not.
    near = decide_window(
        replace(state, month_peak_w=1_170_000.0), start + 600, settings, needed_ev_w=0.0, uncontrolled_w=0.0
    )
    assert near.limit_w == math.inf
    at_floor = decide_window(
        state, start + 600, replace(settings, floor_w=1_200_000.0), needed_ev_w=0.0, uncontrolled_w=0.0
    )
    assert at_floor.limit_w == math.inf and at_floor.target_w == 1_200_000.0
    needed = decide_window(state, start + 600, settings, needed_ev_w=1_100_000.0, uncontrolled_w=150_000.0)
    assert needed.limit_w == math.inf and needed.raised_because is not None


def test_the_target_is_raised_only_as_far_as_the_departures_need() -> None:
    now = utc("2026-11-03 10:00:00")
    # 20 kWh due in 1 h and 30 kWh more in 2 h: 25 kW on average until the second (EDF is feasible).
    roomy = 1e9  # cars that could take any power
    assert needed_power_w([(20_000.0, now + 3600, roomy), (30_000.0, now + 7200, roomy)], now) == pytest.approx(
        25_000.0
    )
    assert needed_power_w([(40_000.0, now + 3600, roomy), (0.0, now + 60, roomy)], now) == pytest.approx(40_000.0)
    # A car that only just finishes at its own 11 kW needs it now, whatever the others' deadlines.
    tight = [(11_000.0, now + 3600, 11_000.0), (20_000.0, now + 36_000, 22_000.0)]
    assert needed_power_w(tight, now) == pytest.approx(11_000.0 + 20_000.0 / 10)
    state = advance(WindowState(month="2026-11", month_peak_w=20_000.0), now, 0.0, BRUSSELS)
    kept = decide_window(state, now, BRUSSELS, needed_ev_w=15_000.0, uncontrolled_w=4_000.0)
    assert kept.target_w == 20_000.0 and kept.raised_because is None
    raised = decide_window(state, now, BRUSSELS, needed_ev_w=25_000.0, uncontrolled_w=4_000.0)
    assert raised.target_w == pytest.approx(29_000.0)
    assert raised.raised_because is not None and "29.0 kW" in raised.raised_because
    floored = decide_window(state, now, replace(BRUSSELS, floor_w=50_000.0), needed_ev_w=0.0, uncontrolled_w=0.0)
    assert floored.target_w == 50_000.0


def _grid(now_s: float, import_w: float) -> dict[str, Reading]:
    return {"gm": Reading(device="gm", taken_at_s=now_s, quality=Quality.OK, power_w=import_w)}


def test_a_restart_mid_window_keeps_the_windows_energy_and_the_months_peak(tmp_path: Path) -> None:
    path = tmp_path / "demand.json"
    start = utc("2026-11-03 10:00:00")
    keeper = DemandKeeper(BRUSSELS, "gm", path)
    for t in range(0, 301):
        keeper.step(start + t, _grid(start + t, 60_000.0), {}, 0.0)
    keeper.save()
    energy_wh = keeper.state.energy_wh
    assert energy_wh == pytest.approx(60_000.0 * 300 / 3600, rel=1e-6)

    restarted = DemandKeeper(BRUSSELS, "gm", path)
    assert restarted.state == keeper.state
    # 60 s later (the restart): the gap counts at the last power measured; the window goes on.
    decision = restarted.step(start + 360, _grid(start + 360, 10_000.0), {}, 0.0)
    assert decision.window_start_s == start
    assert decision.window_energy_wh == pytest.approx(60_000.0 * 360 / 3600, rel=1e-6)


@pytest.mark.parametrize(
    "content",
    [
        {"format": 2, "month": "2026-11"},
        {"format": 1, "month": "2026-11", "month_peak_w": math.inf},
        {"format": 1, "month": "2026-11", "month_peak_w": -5.0},
        {"format": 1, "month": "Nov", "month_peak_w": 0.0},
        {"format": 1, "month": "2026-11", "month_peak_w": 0.0, "buckets": [[1.0]]},
        {"format": 1, "month": "2026-11", "month_peak_w": True},
    ],
)
def test_a_hostile_state_file_is_refused(content: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        parse_state(json.loads(json.dumps(content).replace("Infinity", "1e999")))


def test_a_corrupt_state_file_starts_a_fresh_window_and_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "demand.json"
    path.write_text("{not json")
    keeper = DemandKeeper(BRUSSELS, "gm", path)
    assert keeper.state == WindowState()
    assert not path.exists() and list(tmp_path.iterdir())  # set aside, not lost


def test_rolling_windows_keep_every_trailing_window_at_the_target() -> None:
    rolling = replace(BRUSSELS, rolling=True)
    start = utc("2026-11-03 10:00:00")
    state = WindowState(month="2026-11", month_peak_w=30_000.0)
    import_w = 0.0
    for t in range(0, 3600, 5):
        now = start + t
        state = advance(state, now, import_w, rolling)
        decision = decide_window(state, now, rolling, needed_ev_w=0.0, uncontrolled_w=0.0)
        import_w = min(90_000.0, decision.limit_w)
    assert state.month_peak_w <= 30_000.0 * 1.02, state.month_peak_w


def test_a_recorded_day_under_demand_control_replays_exactly(tmp_path: Path) -> None:
    """The window's cap is an input of each recorded cycle: replay reproduces every decision."""
    from evdlm.replay.loop import replay_recording
    from evdlm.sim.closed_loop import simulate
    from evdlm.sim.sample_day import workplace_day_spec

    spec = workplace_day_spec(hours=1.5, cycle_period_s=15.0)
    start = spec.start_s + 7.5 * 3600.0  # the morning arrivals
    spec = replace(
        spec,
        start_s=start,
        config_text=spec.config_text + "demand: {window_min: 15, rate_per_kw: 12, floor_kw: 40}\n",
        sessions=tuple(replace(s, announces_needs=True) for s in spec.sessions),
        dr=(),
    )
    cycles = simulate(spec, tmp_path)
    assert cycles == 360
    result = replay_recording(tmp_path)
    assert result.cycles == cycles and result.differing_cycles == 0
    # The recording's billed figures: six whole quarter-hours, their peak held at about the target.
    from evdlm.replay import kpi
    from evdlm.replay.frames import load_run

    run = load_run(tmp_path)
    billed = kpi.demand(run)
    assert list(billed.index) == ["2026-06"]
    peak_kw = float(billed["peak_window_kw"].iloc[0])
    assert 40.0 <= peak_kw < 200.0
    assert float(billed["demand_charge"].iloc[0]) == pytest.approx(peak_kw * 12.0)
    assert billed["window_start"].iloc[0].minute % 15 == 0
    # Independently: energy per UTC quarter-hour (the site's offset is whole hours) over 900 s.
    cycles = run.cycles
    quarter = cycles["t_s"] // 900.0
    energy_j = (cycles["grid_import_w"] * cycles["period_s"]).groupby(quarter).sum()
    seconds = cycles["period_s"].groupby(quarter).sum()
    assert peak_kw == pytest.approx((energy_j[seconds >= 900.0 - 1e-6] / 900.0).max() / 1000.0)
    assert kpi.summary(run).loc["demand_charge", run.name] == pytest.approx(peak_kw * 12.0)
