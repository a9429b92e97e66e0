"""Closed-loop headroom, stale inputs, held and uncontrolled chargers, phase mapping."""

from __future__ import annotations

import numpy as np
import pytest

from evdlm.core.memory import ControlMemory, EvseMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits, EvseMode, build_problem
from evdlm.core.topology import Topology
from evdlm.core.types import Quality, Reading

from .conftest import NOW_S, charging, meter


def _inputs(states, readings, memory=None, demand=None):  # type: ignore[no-untyped-def]
    return BuildInputs(
        now_s=NOW_S,
        readings=readings,
        evse_states={(s.charger_id, s.evse_id): s for s in states},
        memory=memory or ControlMemory(),
        demand=demand or DemandLimits(),
    )


def _row(topology: Topology, name: str) -> int:
    return next(i for i, row in enumerate(topology.rows) if row.name == name)


def _column_coefs(built, topology: Topology, charger: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    problem = built.problem
    column = built.columns.index(topology.evse_index[(charger, 1)])
    start, end = problem.coef_indptr[column], problem.coef_indptr[column + 1]
    return {
        topology.rows[r].name: float(v)
        for r, v in zip(problem.coef_row[start:end], problem.coef_value[start:end], strict=True)
    }


def test_headroom_subtracts_measured_non_ev_load(topology, settings) -> None:  # type: ignore[no-untyped-def]
    # A1 draws 10 A on every phase; circuit a's meter shows 25 A on L1 (15 A of other load).
    states = [charging("A1", (10.0, 10.0, 10.0))]
    readings = {"gm": meter("gm", (40.0, 30.0, 30.0)), "am": meter("am", (25.0, 10.0, 10.0))}
    built = build_problem(topology, settings, _inputs(states, readings))
    headroom = built.problem.row_headroom
    assert headroom[_row(topology, "a/L1")] == pytest.approx(40 - 1 - 15)
    assert headroom[_row(topology, "a/L2")] == pytest.approx(40 - 1 - 0)
    assert headroom[_row(topology, "grid/L1")] == pytest.approx(100 - 1 - 30)
    # Import: 100 A·230 V measured minus A1's 30 A·230 V.
    assert headroom[topology.import_row] == pytest.approx(50_000 - 1000 - (100 - 30) * 230)
    assert built.stale_devices == ()
    assert not built.grid_fallback


def test_stale_circuit_meter_counts_circuit_fully_loaded(topology, settings) -> None:  # type: ignore[no-untyped-def]
    states = [charging("A1", (10.0, 10.0, 10.0)), charging("B1", (16.0, 0.0, 0.0))]
    readings = {"gm": meter("gm", (30.0, 30.0, 30.0)), "am": meter("am", (10.0, 10.0, 10.0), quality=Quality.STALE)}
    built = build_problem(topology, settings, _inputs(states, readings))
    for phase in (1, 2, 3):
        assert built.problem.row_headroom[_row(topology, f"a/L{phase}")] == 0.0
        assert built.problem.row_headroom[_row(topology, f"b/L{phase}")] > 0.0
    assert built.stale_devices == ("am",)
    assert any("counted as fully loaded" in note for note in built.notes)


def test_stale_grid_meter_puts_site_on_fallback(topology, settings) -> None:  # type: ignore[no-untyped-def]
    states = [charging("A1", (10.0, 10.0, 10.0))]
    readings = {"gm": meter("gm", (30.0, 30.0, 30.0), quality=Quality.STALE), "am": meter("am", (10.0, 10.0, 10.0))}
    built = build_problem(topology, settings, _inputs(states, readings))
    assert built.grid_fallback
    assert built.row_limit[topology.import_row] == 20_000
    assert built.problem.row_headroom[topology.import_row] == pytest.approx(20_000 - 1000)


def test_demand_response_cap_lowers_import_limit(topology, settings) -> None:  # type: ignore[no-untyped-def]
    readings = {"gm": meter("gm", (0.0, 0.0, 0.0)), "am": meter("am", (0.0, 0.0, 0.0))}
    built = build_problem(topology, settings, _inputs([], readings, demand=DemandLimits(import_limit_w=12_000)))
    assert built.row_limit[topology.import_row] == 12_000
    looser = build_problem(topology, settings, _inputs([], readings, demand=DemandLimits(import_limit_w=90_000)))
    assert looser.row_limit[topology.import_row] == 50_000  # the most restrictive limit wins


def test_phase_rotation_and_single_phase_cars(topology, settings) -> None:  # type: ignore[no-untyped-def]
    # A2 (rotation L2-L3-L1) carries a 1-phase car: it draws on its L1 = site L2 only.
    states = [charging("A2", (16.0, 0.0, 0.0)), charging("B1", None), charging("A1", None)]
    readings = {"gm": meter("gm", (0.0, 16.0, 0.0)), "am": meter("am", (0.0, 16.0, 0.0))}
    built = build_problem(topology, settings, _inputs(states, readings))
    assert _column_coefs(built, topology, "A2") == {
        "grid/L2": 1.0,
        "a/L2": 1.0,
        "grid/import": 230.0,
        "grid/export": -230.0,
    }
    # B1 is a 1-phase charger wired L3-L1-L2: its only phase is site L3, through b's kW row.
    assert _column_coefs(built, topology, "B1") == {
        "grid/L3": 1.0,
        "b/L3": 1.0,
        "b/kW": 230.0,
        "grid/import": 230.0,
        "grid/export": -230.0,
    }
    # A1 reports nothing yet: worst case, all three phases.
    assert sum(1 for name in _column_coefs(built, topology, "A1") if "/L" in name) == 6


def test_dc_charger_loads_all_phases_by_power(topology, settings) -> None:  # type: ignore[no-untyped-def]
    states = [charging("B2", None, power_w=0.0)]
    readings = {"gm": meter("gm", (0.0, 0.0, 0.0)), "am": meter("am", (0.0, 0.0, 0.0))}
    built = build_problem(topology, settings, _inputs(states, readings))
    coefs = _column_coefs(built, topology, "B2")
    assert coefs["b/L1"] == pytest.approx(1 / 690) and coefs["b/kW"] == 1.0
    column = built.columns.index(topology.evse_index[("B2", 1)])
    assert (built.problem.setpoint_min[column], built.problem.setpoint_max[column]) == (2000.0, 10_000.0)


def test_uncontrolled_charger_is_counted_at_its_maximum(topology, settings) -> None:  # type: ignore[no-untyped-def]
    states = [charging("A1", (6.0, 6.0, 6.0), compliant=False), charging("A2", (0.0, 0.0, 0.0))]
    readings = {"gm": meter("gm", (6.0, 6.0, 6.0)), "am": meter("am", (6.0, 6.0, 6.0))}
    built = build_problem(topology, settings, _inputs(states, readings))
    a1 = topology.evse_index[("A1", 1)]
    assert built.views[a1].mode is EvseMode.UNCONTROLLED
    assert a1 not in built.columns
    # Circuit a: measured 6 A is all A1's, and A1 may rise to 32 A: 26 A more than measured.
    assert built.problem.row_headroom[_row(topology, "a/L1")] == pytest.approx(40 - 1 - 6 - 26)


def test_cut_charger_is_held_at_its_old_limit_until_it_comes_down(topology, settings) -> None:  # type: ignore[no-untyped-def]
    memory = ControlMemory(
        evses={("A1", 1): EvseMemory(setpoint=10.0, transaction_id="tx-A1", cut_from=30.0, cut_at_s=NOW_S - 2)}
    )
    readings = {"gm": meter("gm", (28.0, 28.0, 28.0)), "am": meter("am", (28.0, 28.0, 28.0))}
    a1 = topology.evse_index[("A1", 1)]
    # The last sample predates the cut: it bounds nothing, the old 30 A limit counts.
    stale_sample = charging("A1", (28.0, 28.0, 28.0), updated_at_s=NOW_S - 5)
    still_high = build_problem(topology, settings, _inputs([stale_sample], readings, memory))
    assert still_high.views[a1].mode is EvseMode.HELD
    assert still_high.problem.row_headroom[_row(topology, "a/L1")] == pytest.approx(40 - 1 - 30)
    # A sample after the cut bounds it: its draw only falls from there.
    fresh_sample = charging("A1", (28.0, 28.0, 28.0), updated_at_s=NOW_S - 1)
    coming_down = build_problem(topology, settings, _inputs([fresh_sample], readings, memory))
    assert coming_down.views[a1].mode is EvseMode.HELD
    assert coming_down.problem.row_headroom[_row(topology, "a/L1")] == pytest.approx(40 - 1 - 28)
    came_down = build_problem(topology, settings, _inputs([charging("A1", (10.0, 10.0, 10.0))], readings, memory))
    assert came_down.views[a1].mode is EvseMode.ACTIVE


def test_overload_is_measured_not_projected(topology, settings) -> None:  # type: ignore[no-untyped-def]
    readings = {"gm": meter("gm", (45.0, 30.0, 30.0)), "am": meter("am", (45.0, 30.0, 30.0))}
    built = build_problem(topology, settings, _inputs([charging("A1", (30.0, 30.0, 30.0))], readings))
    assert built.overloaded_nodes == frozenset({"a"})
    calm = {"gm": meter("gm", (35.0, 30.0, 30.0)), "am": meter("am", (35.0, 30.0, 30.0))}
    assert (
        build_problem(topology, settings, _inputs([charging("A1", (30.0, 30.0, 30.0))], calm)).overloaded_nodes
        == frozenset()
    )


def test_recently_paused_car_stays_paused_for_min_off_time(topology, settings) -> None:  # type: ignore[no-untyped-def]
    memory = ControlMemory(evses={("A1", 1): EvseMemory(setpoint=0.0, transaction_id="tx-A1", paused_at_s=NOW_S - 30)})
    readings = {"gm": meter("gm", (0.0, 0.0, 0.0)), "am": meter("am", (0.0, 0.0, 0.0))}
    built = build_problem(topology, settings, _inputs([charging("A1", (0.0, 0.0, 0.0))], readings, memory))
    column = built.columns.index(topology.evse_index[("A1", 1)])
    assert built.problem.setpoint_max[column] < built.problem.setpoint_min[column]


def test_offline_charger_with_session_is_counted_not_commanded(topology, settings) -> None:  # type: ignore[no-untyped-def]
    memory = ControlMemory(evses={("A1", 1): EvseMemory(setpoint=20.0, transaction_id="tx-A1")})
    readings = {"gm": meter("gm", (0.0, 0.0, 0.0)), "am": meter("am", (0.0, 0.0, 0.0))}
    built = build_problem(topology, settings, _inputs([charging("A1", None, online=False)], readings, memory))
    a1 = topology.evse_index[("A1", 1)]
    assert built.views[a1].mode is EvseMode.OFFLINE
    assert built.views[a1].assumed_a == (20.0, 20.0, 20.0)
    assert np.isclose(built.problem.row_headroom[_row(topology, "a/L1")], 40 - 1 - 0 - 20)


def test_unreported_draw_is_never_subtracted_from_a_meter(topology, settings) -> None:  # type: ignore[no-untyped-def]
    # A1 was told 20 A but reports no current: the 25 A on the meter all count as other load.
    memory = ControlMemory(evses={("A1", 1): EvseMemory(setpoint=20.0, transaction_id="tx-A1")})
    readings = {"gm": meter("gm", (25.0, 25.0, 25.0)), "am": meter("am", (25.0, 25.0, 25.0))}
    built = build_problem(topology, settings, _inputs([charging("A1", None)], readings, memory))
    assert built.problem.row_headroom[_row(topology, "a/L1")] == pytest.approx(40 - 1 - 25)


def test_dc_draw_comes_from_reported_power(topology, settings) -> None:  # type: ignore[no-untyped-def]
    readings = {"gm": meter("gm", (10.0, 10.0, 10.0)), "am": meter("am", (0.0, 0.0, 0.0))}
    built = build_problem(topology, settings, _inputs([charging("B2", None, power_w=6900.0)], readings))
    assert built.views[topology.evse_index[("B2", 1)]].measured_a == pytest.approx((10.0, 10.0, 10.0))
    assert built.problem.row_headroom[_row(topology, "grid/L1")] == pytest.approx(100 - 1 - 0)


def test_paused_car_is_admitted_with_hysteresis_never_below_its_minimum(topology, settings) -> None:  # type: ignore[no-untyped-def]
    readings = {"gm": meter("gm", (0.0, 0.0, 0.0)), "am": meter("am", (0.0, 0.0, 0.0))}
    states = [charging("A1", (0.0, 0.0, 0.0)), charging("A2", (0.0, 0.0, 0.0), ev_max_current_a=7.0)]
    built = build_problem(topology, settings, _inputs(states, readings))
    lowest = {topology.evses[i].key[0]: built.problem.setpoint_min[c] for c, i in enumerate(built.columns)}
    assert lowest == {"A1": 8.0, "A2": 6.0}  # A2's car takes at most 7 A: no room for hysteresis


def test_single_phase_is_learned_only_from_reported_phases(topology, settings) -> None:  # type: ignore[no-untyped-def]
    readings = {"gm": meter("gm", (16.0, 0.0, 0.0)), "am": meter("am", (16.0, 0.0, 0.0))}
    only_l1 = build_problem(topology, settings, _inputs([charging("A1", (16.0, None, None))], readings))  # type: ignore[arg-type]
    assert only_l1.views[topology.evse_index[("A1", 1)]].phases_used == 3
    all_three = build_problem(topology, settings, _inputs([charging("A1", (16.0, 0.0, 0.0))], readings))
    assert all_three.views[topology.evse_index[("A1", 1)]].phases_used == 1


def test_battery_is_not_relied_on_while_the_grid_meter_is_stale(config, topology, settings) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace as dc_replace

    from evdlm.config.models import Battery

    with_battery = dc_replace(
        settings,
        battery=Battery(device="gm", max_charge_kw=10, max_discharge_kw=10, capacity_kwh=20),
        battery_max_discharge_w=10_000.0,
        battery_max_charge_w=10_000.0,
    )
    battery = Reading("gm", NOW_S, Quality.OK, power_w=5000.0, soc_pct=60.0)
    fresh = {"gm": meter("gm", (10.0, 10.0, 10.0)), "am": meter("am", (0.0, 0.0, 0.0))}
    inputs = BuildInputs(NOW_S, fresh, {}, ControlMemory(), DemandLimits(), battery)
    assert build_problem(topology, with_battery, inputs).problem.battery_discharge_max_w == 10_000
    stale = {**fresh, "gm": meter("gm", (10.0, 10.0, 10.0), quality=Quality.STALE)}
    blind = build_problem(
        topology, with_battery, BuildInputs(NOW_S, stale, {}, ControlMemory(), DemandLimits(), battery)
    )
    assert blind.grid_fallback
    # It may keep discharging what it does now (5 kW), never charge, and earns no import headroom.
    assert (blind.problem.battery_discharge_max_w, blind.problem.battery_charge_max_w) == (5000.0, 0.0)
    assert topology.import_row not in blind.problem.battery_coef_row.tolist()


def test_car_above_its_limit_after_settling_is_uncontrolled(topology, settings) -> None:  # type: ignore[no-untyped-def]
    memory = ControlMemory(
        evses={("A1", 1): EvseMemory(setpoint=10.0, transaction_id="tx-A1", changed_at_s=NOW_S - 30)}
    )
    readings = {"gm": meter("gm", (32.0, 32.0, 32.0)), "am": meter("am", (32.0, 32.0, 32.0))}
    a1 = topology.evse_index[("A1", 1)]
    rogue = build_problem(topology, settings, _inputs([charging("A1", (32.0, 32.0, 32.0))], readings, memory))
    assert rogue.views[a1].mode is EvseMode.UNCONTROLLED
    assert rogue.views[a1].assumed_a == (32.0, 32.0, 32.0)
    # A sample from before the settle time ended proves nothing yet.
    early = charging("A1", (32.0, 32.0, 32.0), updated_at_s=NOW_S - 25)
    assert build_problem(topology, settings, _inputs([early], readings, memory)).views[a1].mode is EvseMode.ACTIVE
    following = build_problem(topology, settings, _inputs([charging("A1", (10.5, 10.5, 10.5))], readings, memory))
    assert following.views[a1].mode is EvseMode.ACTIVE


def test_demand_cap_is_remembered_until_the_car_uses_it(topology, settings) -> None:  # type: ignore[no-untyped-def]
    from evdlm.core.decide import DecisionContext, decide

    readings = {"gm": meter("gm", (1.0, 1.0, 1.0)), "am": meter("am", (1.0, 1.0, 1.0))}
    a1 = topology.evse_index[("A1", 1)]
    steady = ControlMemory(
        evses={("A1", 1): EvseMemory(setpoint=16.0, transaction_id="tx-A1", changed_at_s=NOW_S - 60)}
    )
    full_car = charging("A1", (1.0, 1.0, 1.0))
    built = build_problem(topology, settings, _inputs([full_car], readings, steady))
    assert built.demand_caps == {a1: 6.0}  # max(minimum 6 A, 1 A drawn + 2 A)
    # The cap survives the cut it causes (no sawtooth back up while the car keeps taking 1 A).
    context = DecisionContext(topology, settings, 0.2)
    memory = decide(context, _inputs([full_car], readings, steady)).plan.memory
    assert memory.evse(("A1", 1)).demand_cap_a == 6.0
    for step in range(1, 30):
        later = BuildInputs(NOW_S + step, readings, {("A1", 1): full_car}, memory, DemandLimits())
        decision = decide(context, later)
        memory = decision.plan.memory
        assert decision.plan.commands[0].limit <= 6.0
    # It is lifted once the car draws what the cap allows.
    using = charging("A1", (6.0, 6.0, 6.0))
    assert build_problem(topology, settings, _inputs([using], readings, memory)).demand_caps == {}
    # A new session starts without it.
    new_car = charging("A1", (0.0, 0.0, 0.0), transaction_id="tx-next")
    assert build_problem(topology, settings, _inputs([new_car], readings, memory)).demand_caps == {}


def test_only_the_charger_s_own_sample_time_dates_its_draw(topology, settings) -> None:  # type: ignore[no-untyped-def]
    # A charger sampling every 60 s: its last sample (32 A) is older than the cut to 10 A 30 s ago,
    # but a lease refresh just moved updated_at_s. The old draw must not make it look rogue
    # (uncontrolled: no longer commanded, counted at its maximum) nor bound it as fresh.
    memory = ControlMemory(
        evses={("A1", 1): EvseMemory(setpoint=10.0, transaction_id="tx-A1", changed_at_s=NOW_S - 30)}
    )
    readings = {"gm": meter("gm", (12.0, 12.0, 12.0)), "am": meter("am", (12.0, 12.0, 12.0))}
    a1 = topology.evse_index[("A1", 1)]
    refreshed = charging("A1", (32.0, 32.0, 32.0), updated_at_s=NOW_S, sampled_at_s=NOW_S - 40)
    assert build_problem(topology, settings, _inputs([refreshed], readings, memory)).views[a1].mode is EvseMode.ACTIVE
    # The same draw sampled after the settle time is a car that does not follow.
    sampled = charging("A1", (32.0, 32.0, 32.0), updated_at_s=NOW_S, sampled_at_s=NOW_S - 1)
    assert (
        build_problem(topology, settings, _inputs([sampled], readings, memory)).views[a1].mode is EvseMode.UNCONTROLLED
    )
