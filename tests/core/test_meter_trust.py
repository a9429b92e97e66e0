"""Meter cross-checks (pure): a meter that lies plausibly becomes SUSPECT, then trusted again."""

from __future__ import annotations

import numpy as np

from evdlm.config import load_site_config
from evdlm.config.models import MeterChecks
from evdlm.core.meter_trust import (
    DOWNSTREAM,
    FROZEN,
    PHYSICS,
    Assessment,
    MeterTrust,
    NodeFlow,
    assess,
    node_charger_current_a,
)
from evdlm.core.topology import build_topology
from evdlm.core.types import Quality, Reading
from evdlm.data import DEMO_SITE_PATH

CHECKS = MeterChecks()  # tolerance max(3 A, 5 %), hold 15 s, frozen after 20 s / 6 A, trusted after 60 s
V = 230.0
METERS = {"grid": "grid_meter"}


def grid_reading(t: float, amps: tuple[float, float, float], *, quality: Quality = Quality.OK) -> Reading:
    return Reading(
        "grid_meter",
        t,
        quality,
        power_w=sum(amps) * V,
        phase_power_w=(amps[0] * V, amps[1] * V, amps[2] * V),
        phase_current_a=amps,
        reason=None if quality is Quality.OK else "scale",
    )


def run(
    seconds: int,
    meter_a,
    chargers_a,
    *,
    state: MeterTrust | None = None,
    start_s: float = 0.0,
    generation_a: float = 0.0,
    reported_a=None,
) -> list[Assessment]:  # type: ignore[no-untyped-def]
    """One assessment per second; ``meter_a``, ``chargers_a`` (what they surely draw) and
    ``reported_a`` (their samples; default: the same) are functions of t."""
    out = []
    state = state or MeterTrust()
    for step in range(seconds):
        t = start_s + step
        drawn = chargers_a(t)
        flows = {"grid": NodeFlow(drawn, generation_a, sum(reported_a(t) if reported_a else drawn))}
        result = assess(state, {"grid_meter": grid_reading(t, meter_a(t))}, METERS, flows, t, CHECKS, V)
        state = result.state
        out.append(result)
    return out


def test_a_frozen_low_meter_under_loaded_chargers_is_suspect_after_the_hold_time() -> None:
    # The case: 10.5 A per phase while three 32 A cars draw 96 A through the node.
    results = run(30, lambda t: (10.5, 10.5, 10.5), lambda t: (96.0, 96.0, 96.0))
    qualities = [r.readings["grid_meter"].quality for r in results]
    first = qualities.index(Quality.SUSPECT)
    assert first == CHECKS.hold_s  # failing from t=0, SUSPECT once it failed for 15 s
    assert all(q is Quality.SUSPECT for q in qualities[first:])
    reason = results[first].readings["grid_meter"].reason or ""
    assert "10.5 A L1" in reason and "96.0 A" in reason
    assert [c.check for c in results[first].changes] == [DOWNSTREAM]


def test_a_meter_reading_above_the_chargers_is_trusted() -> None:
    results = run(120, lambda t: (40.0 + t % 3, 38.0, 35.0), lambda t: (30.0, 30.0, 30.0))
    assert all(r.readings["grid_meter"].quality is Quality.OK for r in results)
    assert all(not r.changes for r in results)
    estimate = results[-1].estimates[0]
    assert estimate.residual_a[1] == 8.0  # 38 measured − 30 from the chargers: building load


def test_a_car_that_stops_between_two_samples_is_no_false_alarm() -> None:
    # The chargers report 32 A for 10 s after the meter already saw the car stop (sample lag);
    # the meter jitters as real ones do.
    results = run(60, lambda t: (12.0 + t % 2 / 10, 12.0, 12.0) if t >= 20 else (44.0 + t % 2 / 10, 44.0, 44.0),
                  lambda t: (0.0, 0.0, 0.0) if t >= 30 else (32.0, 32.0, 32.0))  # fmt: skip
    assert all(r.readings["grid_meter"].quality is Quality.OK for r in results)


def test_pv_below_the_meter_may_explain_a_low_reading() -> None:
    # Chargers 30 A, meter −5 A (exporting): PV feeding up to 40 A per phase explains it.
    results = run(60, lambda t: (-5.0, -5.0, -5.0), lambda t: (30.0, 30.0, 30.0), generation_a=40.0)
    assert all(r.readings["grid_meter"].quality is Quality.OK for r in results)


def test_frozen_values_while_the_chargers_move_are_suspect_even_above_their_load() -> None:
    # Constant 60 A (another site's load, plausible, above the chargers) while the cars ramp 6 → 30 A.
    results = run(40, lambda t: (60.0, 60.0, 60.0), lambda t: (min(30.0, 6.0 + t), 6.0, 6.0))
    qualities = [r.readings["grid_meter"].quality for r in results]
    first = qualities.index(Quality.SUSPECT)
    assert first == CHECKS.frozen_after_s
    assert results[first].changes[0].check == FROZEN
    assert "unchanged for 20 s" in (results[first].readings["grid_meter"].reason or "")


def test_frozen_values_with_steady_chargers_are_not_suspect() -> None:
    results = run(100, lambda t: (60.0, 60.0, 60.0), lambda t: (30.0, 30.0, 30.0))
    assert all(r.readings["grid_meter"].quality is Quality.OK for r in results)


def test_a_reversed_ct_on_one_phase_is_suspect() -> None:
    results = run(20, lambda t: (-40.0, 40.0, 40.0), lambda t: (30.0, 30.0, 30.0))
    reason = results[-1].readings["grid_meter"].reason or ""
    assert results[-1].readings["grid_meter"].quality is Quality.SUSPECT and "L1" in reason


def test_a_suspect_meter_is_trusted_again_only_after_being_consistent_for_the_trust_time() -> None:
    bad = run(20, lambda t: (10.0, 10.0, 10.0), lambda t: (50.0, 50.0, 50.0))
    assert bad[-1].readings["grid_meter"].quality is Quality.SUSPECT
    good = run(80, lambda t: (60.0, 60.0, 60.0 + t % 2), lambda t: (50.0, 50.0, 50.0), state=bad[-1].state, start_s=20)
    qualities = [r.readings["grid_meter"].quality for r in good]
    # Last bad at t=19; consistent from t=20; trusted at t=19+60.
    assert qualities.index(Quality.OK) == 79 - 20
    assert "consistent again for 31 of 60 s" in (good[30].readings["grid_meter"].reason or "")
    assert [c.suspect for r in good for c in r.changes] == [False]


def test_a_physics_suspect_reading_is_held_too() -> None:
    state = MeterTrust()
    flows = {"grid": NodeFlow((10.0, 10.0, 10.0))}
    first = assess(
        state, {"grid_meter": grid_reading(0, (20, 20, 20), quality=Quality.SUSPECT)}, METERS, flows, 0, CHECKS, V
    )
    assert first.changes[0].check == PHYSICS
    later = assess(first.state, {"grid_meter": grid_reading(5, (20, 20, 20))}, METERS, flows, 5, CHECKS, V)
    assert later.readings["grid_meter"].quality is Quality.SUSPECT


def test_stale_readings_pass_through_and_checks_can_be_switched_off() -> None:
    stale = Reading("grid_meter", 0.0, Quality.STALE, reason="old")
    flows = {"grid": NodeFlow((50.0, 50.0, 50.0))}
    result = assess(MeterTrust(), {"grid_meter": stale}, METERS, flows, 100.0, CHECKS, V)
    assert result.readings["grid_meter"] is stale
    off = MeterChecks(enabled=False)
    state = MeterTrust()
    for t in range(60):
        result = assess(state, {"grid_meter": grid_reading(t, (1.0, 1.0, 1.0))}, METERS, flows, t, off, V)
        state = result.state
        assert result.readings["grid_meter"].quality is Quality.OK


def test_a_total_only_meter_is_compared_on_sums() -> None:
    # 1-phase cars on L1 only: a total-only meter spread evenly must not fail L1 against them.
    total_only = lambda t: Reading("grid_meter", t, Quality.OK, power_w=60.0 * V)  # noqa: E731
    state = MeterTrust()
    for t in range(30):
        result = assess(
            state, {"grid_meter": total_only(t)}, METERS, {"grid": NodeFlow((50.0, 0.0, 0.0))}, t, CHECKS, V
        )
        state = result.state
        assert result.readings["grid_meter"].quality is Quality.OK


def test_charger_currents_are_summed_onto_every_metered_node_above_them() -> None:
    topology = build_topology(load_site_config(DEMO_SITE_PATH).config)
    measured = np.zeros((topology.slots.size, 3))
    measured[:, 0] = 10.0
    sums = node_charger_current_a(topology, measured)
    assert sums["grid"][0] == 10.0 * topology.slots.size
    assert set(sums) == {node.id for node in topology.nodes.values() if node.meter is not None}


def test_limits_moving_under_a_steady_meter_are_no_sign_of_a_frozen_one() -> None:
    # The cars draw a steady 57 A; their limits (and so what they surely draw) move with DR,
    # their samples do not: a noise-free meter that stays put is right.
    results = run(
        90,
        lambda t: (60.0, 60.0, 60.0),
        lambda t: (57.0 if t < 30 else 40.0, 57.0, 57.0),
        reported_a=lambda t: (57.0, 57.0, 57.0),
    )
    assert all(r.readings["grid_meter"].quality is Quality.OK for r in results)
