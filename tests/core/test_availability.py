"""The availability classifier and ledger (pure): classes, precedence, seconds to the second, months, uptime."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from evdlm.config import parse_site_config
from evdlm.core.availability import (
    CONTROLLER_DOWN,
    Availability,
    AvailabilityLedger,
    ExclusionWindow,
    PortSample,
    classify,
    exclusion,
    grid_outage,
    month_of,
    port_samples,
    previous_months,
    uptime_pct,
)
from evdlm.core.decide import DecisionContext, decide
from evdlm.core.memory import ControlMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits
from evdlm.core.types import Quality, Reading

from .conftest import NOW_S, SITE, charging, meter

PORT = ("cp-1", 1)
FLOOR_W = 7000.0


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_precedence() -> None:
    everything = PortSample(
        online=False, fault="GroundFailure", floor_w=FLOOR_W, session=True, offered_w=0.0, dr_held=True, excluded="x"
    )
    assert classify(everything) == (Availability.EXCLUDED, "x")
    assert classify(PortSample(online=False, fault="GroundFailure")) == (Availability.OFFLINE, "no connection")
    assert classify(PortSample(online=True, fault="GroundFailure", floor_w=FLOOR_W, session=True, offered_w=0.0)) == (
        Availability.FAULT,
        "GroundFailure",
    )
    held = PortSample(online=True, floor_w=FLOOR_W, session=True, offered_w=4000.0, wanted_w=22_000.0, dr_held=True)
    assert classify(held)[0] is Availability.DR_CURTAILED
    assert classify(replace(held, dr_held=False))[0] is Availability.BELOW_FLOOR
    assert classify(PortSample(online=True)) == (Availability.UP, "")


def test_floor_rules() -> None:
    # No floor: up whenever online and not faulted, whatever its limit.
    assert classify(PortSample(online=True, session=True, offered_w=0.0))[0] is Availability.UP
    # No session (no car, or a paused one): available for the next car.
    assert classify(PortSample(online=True, floor_w=FLOOR_W, session=False, offered_w=0.0))[0] is Availability.UP
    # Its own bounds (a car taking 3.7 kW at most) are below the floor: it has all it would take.
    own = PortSample(online=True, floor_w=FLOOR_W, session=True, offered_w=3700.0, wanted_w=3700.0)
    assert classify(own)[0] is Availability.UP
    assert classify(replace(own, offered_w=2000.0))[0] is Availability.BELOW_FLOOR
    # At the floor (within float noise) is up.
    at_floor = PortSample(online=True, floor_w=FLOOR_W, session=True, offered_w=FLOOR_W - 0.5, wanted_w=22_000.0)
    assert classify(at_floor)[0] is Availability.UP


def run(
    ledger: AvailabilityLedger,
    start_s: float,
    phases: list[tuple[int, PortSample]],
    windows: tuple[ExclusionWindow, ...] = (),
    step_s: int = 5,
) -> float:
    """Cycles every ``step_s`` through ``phases`` (duration s, sample); one more cycle at the end."""
    t = start_s
    for duration_s, sample in phases:
        assert duration_s % step_s == 0
        for _ in range(duration_s // step_s):
            excluded = exclusion(windows, PORT[0], t)
            ledger.observe(t, {PORT: classify(replace(sample, excluded=excluded))})
            t += step_s
    ledger.observe(t, {PORT: classify(PortSample(online=True))})
    return t


def test_must_show_scenario_seconds_per_class_and_monthly_pct() -> None:
    """A charger fault, a comms outage, a DR event, a below-floor period and a maintenance window:
    the seconds of each class to the second, the outages and the month's uptime %."""
    up = PortSample(online=True, floor_w=FLOOR_W, session=True, offered_w=22_000.0, wanted_w=22_000.0)
    fault = PortSample(online=True, fault="GroundFailure:E42", floor_w=FLOOR_W)
    comms = PortSample(online=False, floor_w=FLOOR_W)
    dr = PortSample(online=True, floor_w=FLOOR_W, session=True, offered_w=4140.0, wanted_w=22_000.0, dr_held=True)
    floor = PortSample(online=True, floor_w=FLOOR_W, session=True, offered_w=4140.0, wanted_w=22_000.0)
    # 10:00 + 9180 s: the window covers the 200 s after the below-floor period and 400 s up.
    windows = (ExclusionWindow(at("2026-11-10T12:33:00"), at("2026-11-10T12:36:20"), "maintenance"),)
    start_s = at("2026-11-10T10:00:00")
    ledger = AvailabilityLedger()
    end_s = run(
        ledger,
        start_s,
        [
            (3600, up),
            (1805, fault),
            (600, up),
            (245, comms),
            (600, up),
            (1200, dr),
            (730, floor),
            (400, up),
            (200, up),  # maintenance: the window
            (620, up),
        ],
        windows,
    )
    seconds = ledger.seconds(PORT, "2026-11")
    assert seconds == {
        "up": 3600 + 600 + 600 + 400 + 620,
        "fault": 1805,
        "offline": 245,
        "below_floor": 730,
        "dr_curtailed": 1200,
        "excluded": 200,
    }
    assert sum(seconds.values()) == end_s - start_s
    causes = ledger.ports[PORT].months["2026-11"].causes
    assert causes == {
        "fault:GroundFailure:E42": 1805,
        "offline:no connection": 245,
        "dr_curtailed:dr import limit": 1200,
        "below_floor:site limit": 730,
        "excluded:maintenance": 200,
    }
    # Four outages (the excluded window is none); each interval with its exact bounds.
    assert ledger.outage_count(PORT, "2026-11") == 4
    intervals = [(o.kind.value, o.end_s - o.start_s, o.cause) for o in ledger.ports[PORT].recent_outages()]
    assert intervals == [
        ("fault", 1805, "GroundFailure:E42"),
        ("offline", 245, "no connection"),
        ("dr_curtailed", 1200, "dr import limit"),
        ("below_floor", 730, "site limit"),
        ("excluded", 200, "maintenance"),
    ]
    assert ledger.ports[PORT].recent_outages()[0].start_s == start_s + 3600
    # NEVI: (up + excluded) / total.
    total = 10_000
    month_pct, t12m_pct = ledger.uptime(PORT, "2026-11")
    assert month_pct == pytest.approx(100.0 * (5820 + 200) / total)
    assert t12m_pct == pytest.approx(month_pct)
    # DR counted as excluded where the operator says so.
    assert ledger.uptime(PORT, "2026-11", excluded_classes=["dr_curtailed"])[0] == pytest.approx(
        100.0 * (5820 + 200 + 1200) / total
    )


def test_month_boundary_is_split_to_the_second() -> None:
    ledger = AvailabilityLedger(max_hold_s=600)
    ledger.observe(at("2026-10-31T23:59:00"), {PORT: (Availability.FAULT, "X")})
    ledger.observe(at("2026-11-01T00:01:30"), {PORT: (Availability.UP, "")})
    assert ledger.seconds(PORT, "2026-10")["fault"] == 60
    assert ledger.seconds(PORT, "2026-11")["fault"] == 90
    assert ledger.outage_count(PORT, "2026-10") == 1 and ledger.outage_count(PORT, "2026-11") == 0
    assert month_of(at("2026-12-31T23:59:59")) == "2026-12"
    assert previous_months("2026-02", 3) == ["2025-12", "2026-01", "2026-02"]


def test_gap_beyond_the_hold_is_controller_down_and_so_is_the_time_after_close() -> None:
    ledger = AvailabilityLedger(max_hold_s=60)
    t0 = at("2026-11-02T00:00:00")
    ledger.observe(t0, {PORT: (Availability.UP, "")})
    ledger.observe(t0 + 600, {PORT: (Availability.UP, "")})  # a stuck cycle: 60 s held, 540 s nobody watched
    assert ledger.seconds(PORT, "2026-11") == pytest.approx(
        {"up": 60, "offline": 540, "fault": 0, "below_floor": 0, "dr_curtailed": 0, "excluded": 0}
    )
    ledger.observe(t0 + 630, {PORT: (Availability.UP, "")})
    ledger.close(t0 + 650)  # a clean stop: credited up to it
    ledger.observe(t0 + 950, {PORT: (Availability.UP, "")})  # restarted 300 s later
    seconds = ledger.seconds(PORT, "2026-11")
    assert seconds["up"] == 60 + 30 + 20
    assert seconds["offline"] == 540 + 300
    assert ledger.ports[PORT].months["2026-11"].causes == {f"offline:{CONTROLLER_DOWN}": 840}
    # Reading "now" includes the time held since the last observation (not yet credited).
    assert ledger.seconds(PORT, "2026-11", now_s=t0 + 960)["up"] == 120


def test_trailing_twelve_months() -> None:
    ledger = AvailabilityLedger(max_hold_s=40 * 86_400)
    for month in range(1, 13):
        start = at(f"2026-{month:02d}-01T00:00:00")
        ledger.observe(start, {PORT: (Availability.UP, "")})
        ledger.observe(start + 1000, {PORT: (Availability.FAULT if month == 3 else Availability.UP, "E")})
        ledger.observe(start + 1100, {PORT: (Availability.UP, "")})
    ledger.observe(at("2027-01-01T00:00:00"), {PORT: (Availability.UP, "")})
    month_pct, t12m_pct = ledger.uptime(PORT, "2026-12")
    assert month_pct == 100.0
    year_s = at("2027-01-01T00:00:00") - at("2026-01-01T00:00:00")
    assert t12m_pct == pytest.approx(100.0 * (year_s - 100) / year_s)
    assert ledger.uptime(PORT, "2026-03")[0] == pytest.approx(100.0 * (31 * 86_400 - 100) / (31 * 86_400))
    assert uptime_pct({}) is None


def test_outage_list_is_bounded() -> None:
    ledger = AvailabilityLedger(max_outages=3)
    t = at("2026-11-01T00:00:00")
    for index in range(10):
        ledger.observe(t + 20 * index, {PORT: (Availability.FAULT, f"E{index}")})
        ledger.observe(t + 20 * index + 10, {PORT: (Availability.UP, "")})
    # The newest 3 closed ones, and E9 still open (its end is credited by the next cycle).
    assert [o.cause for o in ledger.ports[PORT].recent_outages()] == ["E6", "E7", "E8", "E9"]
    assert len(ledger.ports[PORT].outages) == 3
    assert ledger.outage_count(PORT, "2026-11") == 10


def test_grid_outage_from_the_grid_meter() -> None:
    dark = Reading("gm", NOW_S, Quality.OK, phase_voltage_v=(3.0, 2.0, 0.0))
    assert grid_outage(dark, 230.0)
    assert not grid_outage(Reading("gm", NOW_S, Quality.OK, phase_voltage_v=(229.0, 3.0, 231.0)), 230.0)
    assert not grid_outage(Reading.missing("gm", NOW_S, "timeout"), 230.0)
    window = ExclusionWindow(100.0, 200.0, "maintenance", frozenset({"A1"}))
    assert exclusion([window], "A1", 100.0) == "maintenance"
    assert exclusion([window], "A1", 200.0) is None and exclusion([window], "A2", 150.0) is None


# ---------------------------------------------------------------- from a real decision

FLOOR_SITE = SITE.replace(
    '- {id: A1, ocpp_version: "1.6", circuit: a}', '- {id: A1, ocpp_version: "1.6", circuit: a, min_power_floor_kw: 7}'
)


def decided(grid_a: float, circuit_a: float, dr_import_w: float | None):  # type: ignore[no-untyped-def]
    config = parse_site_config(FLOOR_SITE).config
    context = DecisionContext.from_config(config)
    states = {
        ("A1", 1): charging("A1", (0.0, 0.0, 0.0)),
        ("A2", 1): charging("A2", (0.0, 0.0, 0.0), paused=True),
    }
    inputs = BuildInputs(
        now_s=NOW_S,
        readings={"gm": meter("gm", (grid_a,) * 3), "am": meter("am", (circuit_a,) * 3)},
        evse_states=states,
        memory=ControlMemory(),
        demand=DemandLimits(import_limit_w=dr_import_w),
    )
    return context.topology, decide(context, inputs)


def test_samples_from_a_decision() -> None:
    assert "min_power_floor_kw: 7" in FLOOR_SITE
    topology, decision = decided(grid_a=5.0, circuit_a=0.0, dr_import_w=None)
    samples = port_samples(topology, decision, NOW_S, dr_import_limit_w=None)
    assert set(samples) == {("A1", 1), ("A2", 1), ("B1", 1), ("B2", 1)}
    a1 = samples[("A1", 1)]
    assert a1.session and a1.floor_w == 7000.0 and a1.offered_w is not None and a1.offered_w >= 7000.0
    assert classify(a1)[0] is Availability.UP
    assert samples[("B1", 1)] == PortSample(online=False)  # no state: never connected, no floor
    assert classify(samples[("B1", 1)])[0] is Availability.OFFLINE

    # The circuit is full of other load: held below its floor by the site.
    topology, decision = decided(grid_a=38.0, circuit_a=38.0, dr_import_w=None)
    a1 = port_samples(topology, decision, NOW_S, dr_import_limit_w=None)[("A1", 1)]
    assert classify(a1) == (Availability.BELOW_FLOOR, "site limit"), a1

    # A DR import cap of 5 kW with 3 kW of other load: DR is what holds it down.
    topology, decision = decided(grid_a=3000.0 / 690.0, circuit_a=0.0, dr_import_w=5000.0)
    a1 = port_samples(topology, decision, NOW_S, dr_import_limit_w=5000.0)[("A1", 1)]
    assert classify(a1) == (Availability.DR_CURTAILED, "dr import limit"), a1

    # A window over A1.
    window = ExclusionWindow(NOW_S - 1, NOW_S + 1, "maintenance", frozenset({"A1"}))
    a1 = port_samples(topology, decision, NOW_S, dr_import_limit_w=5000.0, windows=[window])[("A1", 1)]
    assert classify(a1) == (Availability.EXCLUDED, "maintenance")
