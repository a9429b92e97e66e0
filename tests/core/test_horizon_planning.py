"""Live horizon planning: the plan's first step becomes per-session targets the cycle lays on the
EVSE states, recorded, replayed exactly, and planned off the cycle's path."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from evdlm_solvers import plan_horizon

from evdlm.config import parse_site_config
from evdlm.core.clock import FakeClock
from evdlm.core.decide import DecisionContext, SolverChoice, decide
from evdlm.core.demand_window import DemandDecision
from evdlm.core.horizon_targets import (
    NO_TARGETS,
    PlanSnapshot,
    PlanTargets,
    horizon_problem,
    overlay_targets,
    plan_targets,
    plannable_max_kw,
)
from evdlm.core.memory import ControlMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits
from evdlm.core.tariff import PriceSchedule, PriceSlot
from evdlm.core.topology import build_topology
from evdlm.core.types import EvseState, Quality, Reading
from evdlm.horizon_planner import HorizonPlanner
from evdlm.recording import read_recording
from evdlm.replay import replay_recording
from evdlm.sim.closed_loop import simulate
from evdlm.sim.sample_day import workplace_day_spec

NOW_S = 1_781_600_000.0
# Two 32 A 1-phase chargers on a 40 A main fuse: one car can run at full power, not two.
SITE = """
site: {id: plan}
grid: {import_limit_kw: 50, phase_current_limit_a: 40, meter: grid}
circuits: [{id: garage, phase_current_limit_a: 40}]
chargers:
  - {id: A, ocpp_version: "1.6", circuit: garage, kind: ac_1phase, max_current_a: 32}
  - {id: B, ocpp_version: "1.6", circuit: garage, kind: ac_1phase, max_current_a: 32}
modbus_links: [{name: lan, type: tcp, host: 127.0.0.1}]
devices:
  - {name: grid, role: grid_meter, modbus: {link: lan, profile: sunspec}}
tariffs:
  default_import_price_per_kwh: 0.30
  periods: [{start: '00:00', end: '06:00', import_price_per_kwh: 0.10}]
control: {fallback_import_limit_kw: 20, safety_margin_a: 0, ramp_up_a_per_s: 100, horizon: {enabled: true}}
"""


def _state(charger: str, transaction: str, **needs: float) -> EvseState:
    return EvseState(
        charger_id=charger,
        evse_id=1,
        online=True,
        connected=True,
        charging=True,
        updated_at_s=NOW_S,
        transaction_id=transaction,
        phase_current_a=(0.0, 0.0, 0.0),
        sampled_at_s=NOW_S,
        **needs,  # type: ignore[arg-type]
    )


def _snapshot(
    states: dict[tuple[str, int], EvseState], demand: DemandDecision | None = None
) -> tuple[object, PlanSnapshot]:
    config = parse_site_config(SITE + (DEMAND if demand is not None else ""), "<test>").config
    context = DecisionContext.from_config(config, SolverChoice.CHAIN)
    grid = Reading("grid", NOW_S, Quality.OK, power_w=1000.0, phase_current_a=(4.0, 1.0, 1.0))
    limits = DemandLimits(None, None, demand.limit_w if demand is not None else None)
    decision = decide(context, BuildInputs(NOW_S, {"grid": grid}, states, ControlMemory(), limits))
    return config, PlanSnapshot(NOW_S, decision.built, states, demand)


DEMAND = "demand: {window_min: 15, window: fixed, rate_per_kw: 12}\n"


def _window(limit_w: float, target_w: float, uncontrolled_w: float) -> DemandDecision:
    """The demand window's decision, mid-window (the window's arithmetic is tested apart)."""
    return DemandDecision(
        limit_w=limit_w,
        target_w=target_w,
        window_start_s=NOW_S - 300.0,
        window_end_s=NOW_S + 600.0,
        window_energy_wh=0.0,
        needed_w=0.0,
        uncontrolled_w=uncontrolled_w,
    )


def test_the_car_that_leaves_first_is_planned_now_and_the_other_waits() -> None:
    # 2026-06-16 09:33 UTC: expensive all day; A leaves in 2 h needing 14 kWh, B in 9 h needing 14 kWh.
    states = {
        ("A", 1): _state("A", "tA", departure_at_s=NOW_S + 2 * 3600, energy_needed_wh=14_000),
        ("B", 1): _state("B", "tB", departure_at_s=NOW_S + 9 * 3600, energy_needed_wh=14_000),
    }
    config, snapshot = _snapshot(states)
    targets = plan_targets(build_topology(config), config, snapshot)  # type: ignore[arg-type]
    assert targets.status == "optimal"
    assert targets.power_w[("A", 1)] == ("tA", pytest.approx(7360.0, abs=1.0))  # 32 A x 230 V
    assert targets.power_w[("B", 1)][1] < 2000.0  # the rest of the 40 A fuse at most
    assert targets.valid_until_s == NOW_S + config.control.horizon.valid_for_s  # type: ignore[attr-defined]
    assert targets.unmet_energy_kwh == pytest.approx(0.0, abs=1e-6)


def test_a_price_feed_moves_the_plan_to_the_hours_it_makes_cheap() -> None:
    # The table says 0.30 all day here (09:33 UTC on); a feed makes 13:33-15:33 cost 0.05. One car
    # leaving in 8 h needing 14 kWh (2 h at full power) is planned into the feed's cheap hours.
    states = {("A", 1): _state("A", "tA", departure_at_s=NOW_S + 8 * 3600, energy_needed_wh=14_000)}
    config, snapshot = _snapshot(states)
    topology = build_topology(config)  # type: ignore[arg-type]
    cheap = PriceSlot(NOW_S + 4 * 3600, NOW_S + 6 * 3600, 0.05, 0.01)
    fed = dataclasses.replace(snapshot, prices=PriceSchedule(config.tariffs, "UTC", (cheap,)))  # type: ignore[attr-defined]
    problem, _, _ = horizon_problem(topology, config, fed)  # type: ignore[arg-type]
    step_h = problem.step_duration_s / 3600.0
    assert list(problem.import_price_per_kwh[15:18]) == [0.30, 0.05, 0.05]
    assert problem.export_price_per_kwh[16] == 0.01 and problem.export_price_per_kwh[0] == 0.0
    plan = plan_horizon(problem)
    assert plan.power_kw[0, 16:24].sum() * step_h == pytest.approx(14.0, abs=1e-6)
    targets = plan_targets(topology, config, fed)  # type: ignore[arg-type]
    assert targets.status == "optimal" and targets.power_w[("A", 1)][1] == pytest.approx(0.0, abs=1.0)


def test_a_car_that_told_nothing_gets_no_target_and_a_plan_of_another_session_is_not_used() -> None:
    states = {
        ("A", 1): _state("A", "tA", departure_at_s=NOW_S + 3600, energy_needed_wh=5_000),
        ("B", 1): _state("B", "tB"),  # no departure, no energy: its fill decides
    }
    config, snapshot = _snapshot(states)
    targets = plan_targets(build_topology(config), config, snapshot)  # type: ignore[arg-type]
    assert set(targets.power_w) == {("A", 1)}
    laid = overlay_targets(states, targets, NOW_S + 60)
    assert laid[("A", 1)].planned_power_w == targets.power_w[("A", 1)][1]
    assert laid[("B", 1)].planned_power_w is None
    # Another car at A (a new transaction), or the plan expired: no target.
    other = {("A", 1): dataclasses.replace(states[("A", 1)], transaction_id="tA2")}
    assert overlay_targets(other, targets, NOW_S + 60)[("A", 1)].planned_power_w is None
    assert overlay_targets(states, targets, targets.valid_until_s)[("A", 1)].planned_power_w is None
    assert overlay_targets(states, NO_TARGETS, NOW_S) == states


def test_a_target_decides_who_runs_in_the_cycle() -> None:
    # The fill alone gives the 40 A fuse to A, which leaves first; a plan (say, B's owner pays for
    # speed, or A is cheaper later) that puts B at full power and A at 0 makes B run and A wait.
    states = {
        ("A", 1): _state("A", "tA", departure_at_s=NOW_S + 2 * 3600, energy_needed_wh=14_000),
        ("B", 1): _state("B", "tB", departure_at_s=NOW_S + 9 * 3600, energy_needed_wh=14_000),
    }
    config, _ = _snapshot(states)
    context = DecisionContext.from_config(config, SolverChoice.CHAIN)  # type: ignore[arg-type]
    grid = Reading("grid", NOW_S, Quality.OK, power_w=1000.0, phase_current_a=(4.0, 1.0, 1.0))
    without = decide(context, BuildInputs(NOW_S, {"grid": grid}, states, ControlMemory(), DemandLimits(None, None)))
    assert (without.plan.limits[("A", 1)], without.plan.limits[("B", 1)]) == (32.0, 0.0)
    targets = PlanTargets(NOW_S, NOW_S + 900, {("A", 1): ("tA", 0.0), ("B", 1): ("tB", 7360.0)}, "optimal", 0.01, 0.0)
    laid = overlay_targets(states, targets, NOW_S)
    planned = decide(context, BuildInputs(NOW_S, {"grid": grid}, laid, ControlMemory(), DemandLimits(None, None)))
    assert (planned.plan.limits[("A", 1)], planned.plan.limits[("B", 1)]) == (0.0, 32.0)


def test_under_demand_control_the_plan_has_the_site_s_room_and_the_window_s_target() -> None:
    states = {
        ("A", 1): _state("A", "tA", departure_at_s=NOW_S + 9 * 3600, energy_needed_wh=14_000),
        ("B", 1): _state("B", "tB", departure_at_s=NOW_S + 9 * 3600, energy_needed_wh=14_000),
    }
    config, free = _snapshot(states)
    topology = build_topology(config)  # type: ignore[arg-type]
    room_kw = horizon_problem(topology, config, free)[0].grid_import_limit_kw  # type: ignore[arg-type]
    # The window holds the import at 3 kW now (1 kW of it the building): the cycle's room is small.
    window = _window(limit_w=3000.0, target_w=9000.0, uncontrolled_w=1500.0)
    config, capped = _snapshot(states, window)
    assert capped.built.window_cut_w > 0.0
    without, _, _ = horizon_problem(topology, config, dataclasses.replace(capped, demand=None))  # type: ignore[arg-type]
    assert without.demand_target_kw is None
    assert without.grid_import_limit_kw[0] < 3.0  # no demand decision: the room now, as before
    problem, _, _ = horizon_problem(topology, config, capped)  # type: ignore[arg-type]
    # The site's physical room (the window's cap left out) for every step, the target net of the
    # keeper's uncontrolled load, and a penalty above what a 1 kW raise costs per 15-min kWh.
    np.testing.assert_allclose(problem.grid_import_limit_kw, room_kw)
    assert problem.demand_target_kw == pytest.approx(7.5)
    assert problem.demand_rate_per_kw == 12.0
    assert problem.unmet_energy_penalty_per_kwh == pytest.approx(10.0 + 12.0 * 4)
    # Each car planned done a window (15 min) before it leaves: 9 h less 15 min is step 35.
    np.testing.assert_array_equal(problem.departure_step, [35, 35])


def test_under_demand_control_the_plan_defers_under_the_target_and_leaves_the_rest_to_the_fill() -> None:
    # 7.5 kW for the cars under the target: one 32 A car at a time (7.36 kW), both done in 9 h. The
    # plan defers one; the other, planned to run, gets no target: the cycle's fill shares the room.
    states = {
        ("A", 1): _state("A", "tA", departure_at_s=NOW_S + 9 * 3600, energy_needed_wh=14_000),
        ("B", 1): _state("B", "tB", departure_at_s=NOW_S + 9 * 3600, energy_needed_wh=14_000),
    }
    config, snapshot = _snapshot(states, _window(limit_w=20_000.0, target_w=9000.0, uncontrolled_w=1500.0))
    targets = plan_targets(build_topology(config), config, snapshot)  # type: ignore[arg-type]
    assert targets.status == "optimal"
    assert len(targets.power_w) == 1
    ((_, watts),) = targets.power_w.values()
    assert watts < 6.0 * 230.0  # the rest of the target, below the car's minimum: it waits


def test_a_car_resting_for_its_minimum_off_time_is_planned_at_what_it_takes() -> None:
    states = {
        ("A", 1): _state("A", "tA", departure_at_s=NOW_S + 9 * 3600, energy_needed_wh=14_000),
        ("B", 1): _state("B", "tB", departure_at_s=NOW_S + 9 * 3600, energy_needed_wh=14_000, ev_max_current_a=16.0),
    }
    config, snapshot = _snapshot(states)
    topology = build_topology(config)  # type: ignore[arg-type]
    built = snapshot.built
    keys = [topology.evses[index].key for index in built.columns]
    # Both held at 0 this cycle (as within the minimum off time); A's session is paused besides.
    resting = dataclasses.replace(built, problem=dataclasses.replace(built.problem, setpoint_max=np.zeros(len(keys))))
    paused = {**states, ("A", 1): dataclasses.replace(states[("A", 1)], paused=True)}
    max_kw = plannable_max_kw(topology, resting, [paused[key] for key in keys])
    expected = {("A", 1): 0.0, ("B", 1): 16.0 * 230.0 / 1000.0}
    np.testing.assert_allclose(max_kw, [expected[key] for key in keys])


def test_planned_targets_are_recorded_and_replay_exactly(tmp_path: Path) -> None:
    day = workplace_day_spec()
    text = day.config_text.replace("rotation_period_s: 900}", "rotation_period_s: 900, horizon: {enabled: true}}")
    assert text != day.config_text
    spec = dataclasses.replace(day, config_text=text, start_s=day.start_s + 8 * 3600.0, duration_s=15 * 60.0)
    simulate(spec, tmp_path)
    planned = [
        state.planned_power_w
        for record in read_recording(tmp_path)
        for state in record.evse_states.values()
        if state.planned_power_w is not None
    ]
    assert planned and all(math.isfinite(watts) and watts >= 0.0 for watts in planned)
    result = replay_recording(tmp_path)
    assert result.cycles > 0 and result.differing_cycles == 0


async def test_the_planner_plans_in_its_own_task_and_the_cycle_only_reads() -> None:
    states = {("A", 1): _state("A", "tA", departure_at_s=NOW_S + 2 * 3600, energy_needed_wh=14_000)}
    config, snapshot = _snapshot(states)
    async with HorizonPlanner(config, FakeClock(NOW_S)) as planner:  # type: ignore[arg-type]
        assert planner.overlay(states, NOW_S)[("A", 1)].planned_power_w is None  # nothing planned yet
        planner.observe(snapshot.built, states, NOW_S)
        targets = await planner.plan_now()
        assert targets is not None and targets.status == "optimal"
        assert planner.overlay(states, NOW_S + 1)[("A", 1)].planned_power_w == pytest.approx(7360.0, abs=1.0)
        assert planner.plans_made == 1
        # Switched off by a reload: the cycle no longer uses targets.
        off = config.model_copy(  # type: ignore[attr-defined]
            update={
                "control": config.control.model_copy(
                    update={"horizon": config.control.horizon.model_copy(update={"enabled": False})}
                )
            }  # type: ignore[attr-defined]
        )
        planner.apply_config(off)
        assert planner.overlay(states, NOW_S + 2)[("A", 1)].planned_power_w is None
    await asyncio.sleep(0)
