"""The control cycle: snapshot → decide (off the event loop, within a budget) → dispatch → record.

The decision itself is :func:`evdlm.core.decide.decide` (pure). This module owns timing,
concurrency and the outputs: one dispatch in flight per charger (a slow charger never delays
the others or the next cycle), battery setpoints, MQTT state, metrics, logs and recording. A
cycle that overruns its period is logged and counted; the next one starts at once rather than
piling up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from evdlm_solvers import SolverName, SolveStatus

from evdlm.config.models import DeviceRole, SiteConfig
from evdlm.core.clock import Clock
from evdlm.core.decide import Decision, DecisionContext, SolverChoice, decide
from evdlm.core.demand_window import DemandDecision
from evdlm.core.energy_cost import CostState
from evdlm.core.memory import ControlMemory, EvseKey
from evdlm.core.meter_trust import Assessment, MeterTrust, assess, checks_for, flows_for, metered_nodes
from evdlm.core.problem_builder import BuildInputs, BuiltProblem, DemandLimits, EvseMode
from evdlm.core.restriction import restrictions
from evdlm.core.tariff import PriceSource
from evdlm.core.types import ChargingCommand, CommandResult, CommandStatus, EvseState, Reading
from evdlm.demand_charge import DemandKeeper
from evdlm.dr.engine import Effective
from evdlm.energy_cost import CostKeeper
from evdlm.observability import Metrics, RepeatedWarning
from evdlm.recording import RecordingWriter, key_text
from evdlm.restricted_file import load_restrictions, save_restrictions

log = logging.getLogger("evdlm.control")

REPEAT_WARNING_EVERY_S = 300.0  # a failure that repeats every cycle is logged again at most this often


class ReadingSource(Protocol):
    def snapshot(self, now_s: float) -> dict[str, Reading]: ...


class ChargerSystem(Protocol):
    def evse_states(self) -> dict[EvseKey, EvseState]: ...

    async def apply(self, commands: Sequence[ChargingCommand]) -> list[CommandResult]: ...


class BatteryActuator(Protocol):
    async def set_power_w(self, power_w: float) -> float: ...

    async def release(self) -> None: ...


class DemandSource(Protocol):
    # A snapshot: no await, no I/O (the DR service does its I/O in its own tasks).
    def effective(self, now_s: float) -> Effective: ...


class SessionSource(Protocol):
    # No await, no I/O: the session service handles commands in its own tasks.
    def overlay(self, states: dict[EvseKey, EvseState], now_s: float) -> dict[EvseKey, EvseState]: ...

    def take_events(self) -> list[dict[str, Any]]: ...


class TargetSource(Protocol):
    # No await, no I/O: the planner plans in its own task and thread.
    def overlay(self, states: dict[EvseKey, EvseState], now_s: float) -> dict[EvseKey, EvseState]: ...

    def observe(
        self,
        built: BuiltProblem,
        states: dict[EvseKey, EvseState],
        now_s: float,
        demand: DemandDecision | None = None,
    ) -> None: ...


class StatePublisher(Protocol):
    async def publish_cycle(self, report: CycleReport) -> None: ...


@dataclass(frozen=True)
class CycleReport:
    cycle: int
    now_s: float
    decision: Decision | None  # None when the decision missed its hard deadline
    commands_sent: int
    results: tuple[CommandResult, ...]  # results that arrived during this cycle
    duration_s: float
    dr: Effective | None
    evse_modes: dict[str, int] = field(default_factory=dict)
    meters: Assessment | None = None  # the meters' cross-checks: SUSPECT readings and estimates
    demand_window: DemandDecision | None = None  # the demand window's cap this cycle, and why
    cost: CostState | None = None  # the billing month's energy and cost so far (with tariffs)
    price_per_kwh: tuple[float, float] | None = None  # import and export price in force now


class Controller:
    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        readings: ReadingSource,
        chargers: ChargerSystem,
        *,
        metrics: Metrics | None = None,
        demand: DemandSource | None = None,
        sessions: SessionSource | None = None,
        planner: TargetSource | None = None,
        battery: BatteryActuator | None = None,
        recorder: RecordingWriter | None = None,
        publisher: StatePublisher | None = None,
        solver: SolverChoice = SolverChoice.CHAIN,
        memory: ControlMemory | None = None,
        restrictions_file: Path | None = None,
        demand_window: DemandKeeper | None = None,
        prices: PriceSource | None = None,
        cost: CostKeeper | None = None,
    ) -> None:
        self.clock = clock
        self.readings = readings
        self.chargers = chargers
        self.metrics = metrics or Metrics(config.site.id)
        self.demand = demand
        self.sessions = sessions
        self.planner = planner
        self.battery = battery
        self.recorder = recorder
        self.publisher = publisher
        self.solver = solver
        self.memory = memory or ControlMemory()
        self.cycle_number = 0
        self.overruns = 0
        self._inflight: dict[str, asyncio.Task[list[CommandResult]]] = {}
        self._dispatched: dict[str, tuple[tuple[tuple[int, float, str], ...], float]] = {}
        self._deciding: asyncio.Future[Decision] | None = None
        # One thread writes recordings and state files: off the event loop, in order.
        self._file_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evdlm-writer")
        self._background: set[asyncio.Task[Any]] = set()
        self._finished_results: list[CommandResult] = []
        self._battery_task: asyncio.Future[None] | None = None
        self._battery_failing = RepeatedWarning(log, clock, REPEAT_WARNING_EVERY_S)
        self._closed = False
        self._last_limits: dict[EvseKey, float] = {}
        self._command_failures: dict[EvseKey, tuple[CommandStatus, str]] = {}  # last failure logged per EVSE
        self.meter_trust = MeterTrust()
        # EVSEs stopped and blocked (uncontrollable while over a limit); kept across restarts, so
        # a restarted controller releases the stations the last one set Inoperative.
        self.restrictions_file = restrictions_file
        # The demand window (money, not safety): the import cap that keeps the window's average
        # under the month's peak; its state survives restarts in its own file.
        self.demand_window = demand_window
        # Money, reported only: the prices in force and the month's energy cost (docs/prices.md).
        self.prices = prices
        self.cost = cost
        self._uncontrolled_import_w = 0.0  # the last decision's estimate, for the window's target
        self.restricted: dict[EvseKey, str] = (
            load_restrictions(restrictions_file) if restrictions_file is not None else {}
        )
        self.apply_config(config)

    # ------------------------------------------------------------------ config

    def apply_config(self, config: SiteConfig) -> None:
        """Use ``config`` from the next cycle on (topology, limits, control settings)."""
        self.config = config
        self.context = DecisionContext.from_config(config, self.solver)
        self.battery_device = config.battery.device if config.battery is not None else None
        self._meters = metered_nodes(self.context.topology)
        self._meter_checks = checks_for(config)
        self._pv_devices = tuple(d.name for d in config.devices if d.role is DeviceRole.PV)
        self._battery_max_w = self.context.settings.battery_max_discharge_w
        # The chargers' currents at the last decision, per EVSE of this topology: what they surely
        # drew and what they reported (FleetView.drawn_a, measured_a), for the meter checks.
        self._chargers_a: tuple[Any, Any] | None = None

    # ------------------------------------------------------------------ one cycle

    async def run_cycle(self) -> CycleReport:
        started = time.perf_counter()
        now_s = self.clock.now_s()
        self.cycle_number += 1
        effective = self.demand.effective(now_s) if self.demand is not None else None
        limits = DemandLimits(
            import_limit_w=effective.import_limit_w if effective else None,
            export_limit_w=effective.export_limit_w if effective else None,
        )
        meters = self._check_meters(self.readings.snapshot(now_s), now_s)
        readings = meters.readings
        states = self.chargers.evse_states()
        if self.sessions is not None:  # departure, energy, priority and pause per session
            states = self.sessions.overlay(states, now_s)
        if self.planner is not None:  # the horizon plan's power per session now
            states = self.planner.overlay(states, now_s)
        window = None
        if self.demand_window is not None:
            window = self.demand_window.step(now_s, readings, states, self._uncontrolled_import_w)
            limits = replace(limits, window_import_limit_w=window.limit_w)
            if self.demand_window.due_for_save(now_s):
                self._file_writer.submit(self.demand_window.save)
        cost, price_per_kwh = self._account_cost(now_s, readings, states)
        inputs = BuildInputs(
            now_s=now_s,
            readings=readings,
            evse_states=states,
            memory=self.memory,
            demand=limits,
            battery_reading=readings.get(self.battery_device) if self.battery_device else None,
        )
        # The chain honours its own budget; the hard deadline catches anything that does not.
        deadline_s = self.context.solve_budget_s * 2 + 0.5
        decision: Decision | None
        try:
            decision = await asyncio.wait_for(asyncio.to_thread(decide, self.context, inputs), deadline_s)
        except TimeoutError:
            decision = None
            log.error(
                "cycle %d: decision missed its %.2f s deadline; limits and leases left as they are",
                self.cycle_number,
                deadline_s,
            )

        commands_sent = 0
        if decision is not None:
            self.memory = decision.plan.memory
            self._chargers_a = (decision.built.fleet.drawn_a, decision.built.fleet.measured_a)
            self._uncontrolled_import_w = decision.built.row_uncontrolled[self.context.topology.import_row]
            commands_sent = self._dispatch(decision.plan.commands, now_s)
            self._log_changes(decision)
            self._restrict(decision)
            if self.planner is not None:
                self.planner.observe(decision.built, states, now_s, window)
            if self.battery is not None:
                self._drive_battery(decision.result.allocation.battery_w)

        # The cycle's own work ends here, with its dispatch under way; its duration is measured
        # to this point. Waiting for the chargers' answers within the period delays nothing (the
        # loop would sleep until the next cycle) and puts them in this cycle's report.
        duration_s = time.perf_counter() - started
        remaining_s = self.config.control.cycle_period_s * 0.8 - duration_s
        pending = [task for task in self._inflight.values() if not task.done()]
        if pending and remaining_s > 0:
            await asyncio.wait(pending, timeout=remaining_s)
        results = self._collect_results()

        modes = decision.built.mode_counts() if decision is not None else {}
        report = CycleReport(
            self.cycle_number,
            now_s,
            decision,
            commands_sent,
            tuple(results),
            duration_s,
            effective,
            dict(modes),
            meters,
            window,
            cost,
            price_per_kwh,
        )
        self._observe(report, readings)
        if self.recorder is not None and decision is not None:
            self._record(report, inputs, states, readings)
        if self.publisher is not None:
            self._spawn(self.publisher.publish_cycle(report))
        return report

    def _account_cost(
        self, now_s: float, readings: dict[str, Reading], states: dict[EvseKey, EvseState]
    ) -> tuple[CostState | None, tuple[float, float] | None]:
        """The month's energy and cost with this cycle's sample, and the prices in force now."""
        if self.prices is None:
            return None, None
        schedule = self.prices.schedule()
        price_per_kwh = (schedule.import_price_at_s(now_s), schedule.export_price_at_s(now_s))
        if self.cost is None:
            return None, price_per_kwh
        state = self.cost.step(now_s, readings, states, price_per_kwh)
        if self.cost.due_for_save(now_s):
            self._file_writer.submit(self.cost.save)
        return state, price_per_kwh

    def _restrict(self, decision: Decision) -> None:
        """Stop and block uncontrollable EVSEs while the site is over a limit because of them."""
        restrict = getattr(self.chargers, "restrict", None)
        if restrict is None:
            return
        over_limit = decision.result.status is SolveStatus.OVER_LIMIT
        wanted = restrictions(self.context.topology, decision.built, over_limit, self.restricted)
        for key in wanted.keys() - self.restricted.keys():
            log.warning("EVSE %s/%d stopped and blocked: %s", key[0], key[1], wanted[key])
        for key in self.restricted.keys() - wanted.keys():
            log.info("EVSE %s/%d released: its rows have room for its maximum again", key[0], key[1])
        if wanted != self.restricted and self.restrictions_file is not None:
            # Off the cycle's path, in order with the other files this controller writes.
            self._file_writer.submit(save_restrictions, self.restrictions_file, dict(wanted))
        self.restricted = wanted
        restrict(wanted)

    def _check_meters(self, readings: dict[str, Reading], now_s: float) -> Assessment:
        """Cross-check the grid and circuit meters against the chargers below them (SUSPECT)."""
        flows = flows_for(
            self.context.topology,
            self._chargers_a,
            readings,
            self._pv_devices,
            self.battery_device,
            self._battery_max_w,
        )
        assessment = assess(
            self.meter_trust,
            readings,
            self._meters,
            flows,
            now_s,
            self._meter_checks,
            self.context.topology.nominal_voltage_v,
        )
        self.meter_trust = assessment.state
        for change in assessment.changes:
            if change.suspect:
                self.metrics.meter_suspect_total.labels(
                    site=self.metrics.site, device=change.device, check=change.check
                ).inc()
                log.warning(
                    "meter %s SUSPECT (%s check): %s; counted as not usable",
                    change.device,
                    change.check,
                    change.reason,
                    extra={"fields": {"event": "meter_suspect", "device": change.device, "check": change.check}},
                )
            else:
                log.info("meter %s trusted again: %s", change.device, change.reason)
        return assessment

    def _dispatch(self, commands: Sequence[ChargingCommand], now_s: float) -> int:
        """Hand each charger its commands when they changed, or often enough for the link to
        refresh leases in time (it re-sends a profile once ``lease_refresh_s`` has passed)."""
        by_charger: dict[str, list[ChargingCommand]] = {}
        for command in commands:
            by_charger.setdefault(command.charger_id, []).append(command)
        recall_s = self.config.control.lease_refresh_s / 4.0
        sent = 0
        for charger_id, batch in by_charger.items():
            if charger_id in self._inflight and not self._inflight[charger_id].done():
                # One dispatch in flight per charger: its link still works on the previous one.
                continue
            limits = tuple((c.evse_id, c.limit, c.unit) for c in batch)
            last = self._dispatched.get(charger_id)
            if last is not None and last[0] == limits and now_s - last[1] < recall_s:
                continue  # unchanged, and its lease is not yet due: nothing for the link to do
            self._dispatched[charger_id] = (limits, now_s)
            self._inflight[charger_id] = asyncio.create_task(self.chargers.apply(batch), name=f"dispatch:{charger_id}")
            sent += len(batch)
        return sent

    def _collect_results(self) -> list[CommandResult]:
        results = self._finished_results
        self._finished_results = []
        for charger_id, task in list(self._inflight.items()):
            if not task.done():
                continue
            del self._inflight[charger_id]
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                log.error("dispatch to %s failed: %s", charger_id, error)
                self._dispatched.pop(charger_id, None)
                continue
            outcomes = task.result()
            if any(r.status not in (CommandStatus.ACCEPTED, CommandStatus.UNCHANGED) for r in outcomes):
                self._dispatched.pop(charger_id, None)  # try again next cycle
            results.extend(outcomes)
        return results

    def _drive_battery(self, power_w: float) -> None:
        """Hand the battery its setpoint every cycle: the battery control refreshes the revert
        timer with it (and rate-limits its own writes); a lapsed timer hands the battery back to
        its own control. One write in flight at a time."""
        if self._battery_task is not None and not self._battery_task.done():
            return
        battery = self.battery
        assert battery is not None

        async def send() -> None:
            try:
                await battery.set_power_w(power_w)
            except Exception as exc:  # the device layer translates its errors; retried next cycle
                # Every cycle while the battery is away: said once, then every few minutes.
                self._battery_failing.failed(
                    type(exc).__name__, "battery setpoint %.0f W not written: %s", power_w, exc
                )
            else:
                self._battery_failing.cleared("battery setpoint %.0f W written again", power_w)

        self._battery_task = asyncio.ensure_future(send())
        self._background.add(self._battery_task)
        self._battery_task.add_done_callback(self._background.discard)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _log_changes(self, decision: Decision) -> None:
        for command in decision.plan.commands:
            key = (command.charger_id, command.evse_id)
            old = self._last_limits.get(key)
            if old is None or not math.isclose(old, command.limit, abs_tol=0.05):
                log.info(
                    "limit %s/%d %s → %g %s: %s",
                    command.charger_id,
                    command.evse_id,
                    "—" if old is None else f"{old:g}",
                    command.limit,
                    command.unit,
                    command.reason,
                    extra={
                        "fields": {
                            "event": "limit_change",
                            "charger": command.charger_id,
                            "evse": command.evse_id,
                            "from": old,
                            "to": command.limit,
                            "unit": command.unit,
                            "reason": command.reason,
                        }
                    },
                )
                self._last_limits[key] = command.limit
        result = decision.result
        if result.reason:
            # A fallback or an overloaded site deserves attention; deferring raises is routine.
            routine = result.solver is SolverName.HEURISTIC and result.status is SolveStatus.OK
            log.log(
                logging.DEBUG if routine else logging.WARNING,
                "cycle %d: %s produced the allocation (%s): %s",
                self.cycle_number,
                result.solver.value,
                result.status.value,
                result.reason,
            )
        for note in decision.built.notes:
            log.debug("cycle %d: %s", self.cycle_number, note)

    def _observe(self, report: CycleReport, readings: dict[str, Reading]) -> None:
        m = self.metrics
        m.cycles.inc()
        m.cycle_seconds.observe(report.duration_s)
        if report.duration_s > self.config.control.cycle_period_s:
            self.overruns += 1
            m.cycle_overruns.inc()
            log.warning(
                "cycle %d took %.3f s (period %.3f s)",
                report.cycle,
                report.duration_s,
                self.config.control.cycle_period_s,
            )
        for outcome in report.results:
            m.commands.labels(site=m.site, status=outcome.status.value).inc()
            key = (outcome.command.charger_id, outcome.command.evse_id)
            failure = (
                None
                if outcome.status in (CommandStatus.ACCEPTED, CommandStatus.UNCHANGED)
                else (outcome.status, outcome.detail)
            )
            if self._command_failures.get(key) == failure:
                continue  # one line per change: a charger that cannot be limited says so every cycle
            if failure is None:
                del self._command_failures[key]
                log.info("command %s/%d accepted again", key[0], key[1])
            else:
                self._command_failures[key] = failure
                log.warning(
                    "command %s/%d %g %s: %s %s",
                    outcome.command.charger_id,
                    outcome.command.evse_id,
                    outcome.command.limit,
                    outcome.command.unit,
                    outcome.status.value,
                    outcome.detail,
                )
        for name, reading in readings.items():
            m.device_ok.labels(site=m.site, device=name).set(1.0 if reading.usable else 0.0)
        if report.meters is not None:
            suspect = report.meters.suspect
            for device in self._meters.values():
                m.meter_suspect.labels(site=m.site, device=device).set(1.0 if device in suspect else 0.0)
            for estimate in report.meters.estimates:
                for phase, (measured, chargers) in enumerate(
                    zip(estimate.measured_a, estimate.chargers_a, strict=True)
                ):
                    labels = {"site": m.site, "node": estimate.node, "phase": f"L{phase + 1}"}
                    m.meter_measured_a.labels(**labels).set(measured)
                    m.meter_chargers_a.labels(**labels).set(chargers)
        grid = readings.get(self.config.grid.meter) if self.config.grid.meter else None
        if report.demand_window is not None and self.demand_window is not None:
            state = self.demand_window.state
            m.demand_month_peak_w.set(state.month_peak_w)
            m.demand_target_w.set(report.demand_window.target_w)
            m.demand_window_limit_w.set(report.demand_window.limit_w)
            m.demand_charge_estimate.set(report.demand_window.charge_estimate)
        if report.price_per_kwh is not None:
            m.price_per_kwh.labels(site=m.site, direction="import").set(report.price_per_kwh[0])
            m.price_per_kwh.labels(site=m.site, direction="export").set(report.price_per_kwh[1])
        if report.cost is not None:
            observe_cost(m, report.cost)
        m.grid_import_w.set(grid.power_w if grid is not None and grid.usable and grid.power_w is not None else math.nan)
        if report.dr is not None:
            m.dr_import_limit_w.set(report.dr.import_limit_w if report.dr.import_limit_w is not None else math.nan)
            # STARTING (the DR state not known yet after a start) runs on the failsafe limits too.
            m.dr_failsafe.set(1.0 if report.dr.mode.value in ("FAILSAFE", "STARTING") else 0.0)
        decision = report.decision
        if decision is None:
            return
        result = decision.result
        m.solve_seconds.observe(result.timings.total_s)
        m.solver_used.labels(site=m.site, solver=result.solver.value, status=result.status.value).inc()
        if "failed check" in result.reason:
            m.check_violations.labels(
                site=m.site, solver="heuristic" if "heuristic failed" in result.reason else "lp"
            ).inc()
        m.stale_devices.set(len(decision.built.stale_devices))
        m.grid_fallback.set(1.0 if decision.built.grid_fallback else 0.0)
        for mode in EvseMode:
            m.evse_modes.labels(site=m.site, mode=mode.value).set(report.evse_modes.get(mode.value, 0))
        headroom = decision.built.problem.row_headroom
        for index, row in enumerate(self.context.topology.rows):
            m.headroom.labels(site=m.site, row=row.name).set(float(headroom[index]))
            m.row_load.labels(site=m.site, row=row.name).set(decision.built.row_uncontrolled[index])

    def _record(
        self, report: CycleReport, inputs: BuildInputs, states: dict[EvseKey, EvseState], readings: dict[str, Reading]
    ) -> None:
        assert self.recorder is not None and report.decision is not None
        decision = report.decision
        dr = report.dr
        outcome = {
            "status": decision.result.status.value,
            "solver": decision.result.solver.value,
            "reason": decision.result.reason,
            "solve_s": round(decision.result.timings.total_s, 6),
            "cycle_s": round(report.duration_s, 6),
            "import_limit_w": decision.built.row_limit[self.context.topology.import_row],
            "battery_w": decision.result.allocation.battery_w,
            "stale": list(decision.built.stale_devices),
            "suspect": report.meters.suspect if report.meters is not None else {},
            "meters": meter_estimates(report),
            # The prices in force (a feed's change in time): the replay's cost figures use them.
            "price_per_kwh": list(report.price_per_kwh) if report.price_per_kwh is not None else None,
            "results": [
                [key_text((r.command.charger_id, r.command.evse_id)), r.status.value, r.detail]
                for r in report.results
                if r.status is not CommandStatus.UNCHANGED
            ],
        }
        # Encoding and compressing a cycle costs tens of ms at 1000 EVSEs: one writer thread keeps
        # it off the event loop and the cycles in order.
        future = self._file_writer.submit(
            self.recorder.write_cycle,
            now_s=inputs.now_s,
            cycle=report.cycle,
            memory_before=inputs.memory,
            readings=readings,
            evse_states=states,
            dr={
                "import_limit_w": inputs.demand.import_limit_w,
                "export_limit_w": inputs.demand.export_limit_w,
                "window_import_limit_w": inputs.demand.window_import_limit_w,
                "mode": dr.mode.value if dr else None,
                "events": list(dr.events) if dr else [],
            },
            commands=decision.plan.limits,
            outcome=outcome,
            events=self.sessions.take_events() if self.sessions is not None else None,
        )
        future.add_done_callback(_log_recording_failure)

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event, *, max_cycles: int | None = None, on_cycle: Any = None) -> None:
        """Cycle every ``cycle_period_s`` until ``stop`` is set (or ``max_cycles`` ran)."""
        period_s = self.config.control.cycle_period_s
        next_s = self.clock.now_s()
        try:
            while not stop.is_set() and (max_cycles is None or self.cycle_number < max_cycles):
                report = await self.run_cycle()
                if on_cycle is not None:
                    on_cycle(report)
                next_s += period_s
                now_s = self.clock.now_s()
                if next_s < now_s:
                    next_s = now_s  # overran: start the next cycle now, never a burst of catch-up cycles
                wait_s = next_s - now_s
                if wait_s > 0:
                    sleeper = asyncio.ensure_future(self.clock.sleep(wait_s))
                    stopper = asyncio.ensure_future(stop.wait())
                    await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    for task in (sleeper, stopper):
                        task.cancel()
        finally:
            await self.close()

    async def close(self) -> None:
        # Once: run() closes on its way out and the gateway again on its own (one battery release).
        if self._closed:
            return
        self._closed = True
        for task in list(self._inflight.values()) + list(self._background):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), *self._background, return_exceptions=True)
        self._inflight.clear()
        if self.battery is not None:
            try:
                await self.battery.release()
            except Exception as exc:
                log.warning("battery not released: %s (its revert timer returns it to its own control)", exc)
        self._file_writer.shutdown(wait=True)
        if self.demand_window is not None:
            self.demand_window.save()  # the window's energy and the month's peak, for the next start
        if self.cost is not None:
            self.cost.save()
        if self.recorder is not None:
            self.recorder.close()


def _log_recording_failure(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:
        log.error("cycle not recorded: %s", error)


def meter_estimates(report: CycleReport) -> dict[str, dict[str, list[float]]]:
    """The estimator view per metered node: measured, the chargers' reported and the rest (A per phase)."""
    if report.meters is None:
        return {}
    return {
        e.node: {
            "measured_a": [round(v, 2) for v in e.measured_a],
            "chargers_a": [round(v, 2) for v in e.chargers_a],
            "residual_a": [round(v, 2) for v in e.residual_a],
        }
        for e in report.meters.estimates
    }


def state_message(report: CycleReport, site_id: str) -> dict[str, Any]:
    """The retained site state published on ``dlm/{site}/state``."""
    decision = report.decision
    out: dict[str, Any] = {"site": site_id, "at": report.now_s, "cycle": report.cycle, "modes": report.evse_modes}
    if decision is not None:
        out.update(
            status=decision.result.status.value,
            solver=decision.result.solver.value,
            stale=list(decision.built.stale_devices),
            suspect=report.meters.suspect if report.meters is not None else {},
            meters=meter_estimates(report),
            gridFallback=decision.built.grid_fallback,
            limits={key_text((c.charger_id, c.evse_id)): [c.limit, c.unit] for c in decision.plan.commands},
        )
    if report.dr is not None:
        out["dr"] = report.dr.as_json(report.now_s)
    window = report.demand_window
    if window is not None:
        out["demand"] = {
            "monthPeakKW": round(window.month_peak_w / 1000.0, 3),
            "monthPeakAt": window.month_peak_at_s,
            "targetKW": round(window.target_w / 1000.0, 3),
            "windowLimitKW": round(window.limit_w / 1000.0, 3),
            "windowEnergyKWh": round(window.window_energy_wh / 1000.0, 4),
            "windowEnd": window.window_end_s,
            "raisedBecause": window.raised_because,
            "chargeEstimate": round(window.charge_estimate, 2),
        }
    if report.cost is not None:
        out["cost"] = cost_message(report.cost, report.price_per_kwh)
    return out


def observe_cost(m: Metrics, cost: CostState) -> None:
    """The month's energy and cost as metrics."""
    for flow, kwh in (("import", cost.import_kwh), ("export", cost.export_kwh), ("ev", cost.ev_kwh)):
        m.month_energy_kwh.labels(site=m.site, flow=flow).set(kwh)
    for part, money in (
        ("import", cost.import_cost),
        ("export_credit", cost.export_credit),
        ("net", cost.net_cost),
        ("ev", cost.ev_cost),
    ):
        m.month_energy_cost.labels(site=m.site, part=part).set(money)
    per_kwh = cost.cost_per_kwh_delivered
    m.cost_per_kwh_delivered.set(per_kwh if per_kwh is not None else math.nan)


def cost_message(cost: CostState, price_per_kwh: tuple[float, float] | None) -> dict[str, Any]:
    """The month's energy and cost for the MQTT state (camelCase, as the rest of it)."""
    per_kwh = cost.cost_per_kwh_delivered
    return {
        "month": cost.month,
        "importKWh": round(cost.import_kwh, 3),
        "exportKWh": round(cost.export_kwh, 3),
        "netCost": round(cost.net_cost, 4),
        "evKWh": round(cost.ev_kwh, 3),
        "evCost": round(cost.ev_cost, 4),
        "costPerKWhDelivered": round(per_kwh, 5) if per_kwh is not None else None,
        "unaccountedS": round(cost.unaccounted_s, 1),
        "importPricePerKWh": price_per_kwh[0] if price_per_kwh is not None else None,
        "exportPricePerKWh": price_per_kwh[1] if price_per_kwh is not None else None,
    }
