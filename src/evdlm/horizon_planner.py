"""The live horizon planner: plans every few minutes off the cycle's path, serves the latest.

The controller hands it each cycle's problem (:meth:`observe`, a reference, no copy) and lays
the latest targets on the next cycle's EVSE states (:meth:`overlay`): neither waits on the
plan, which runs in a worker thread (10 ms to 1 s at 1000 EVSEs). A plan that fails or times
out is logged and the cycle goes on with its own fill until the next one; a plan older than
``valid_for_s`` is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from types import TracebackType
from typing import Self

from evdlm.config.models import SiteConfig
from evdlm.core.clock import Clock
from evdlm.core.demand_window import DemandDecision
from evdlm.core.horizon_targets import NO_TARGETS, PlanSnapshot, PlanTargets, overlay_targets, plan_targets
from evdlm.core.memory import EvseKey
from evdlm.core.problem_builder import BuiltProblem
from evdlm.core.tariff import PriceSource
from evdlm.core.topology import Topology, build_topology
from evdlm.core.types import EvseState
from evdlm.observability import Metrics

log = logging.getLogger("evdlm.horizon")


class HorizonPlanner:
    def __init__(
        self, config: SiteConfig, clock: Clock, metrics: Metrics | None = None, prices: PriceSource | None = None
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self.prices = prices  # the prices in force (a feed over the table), read at each plan
        self.targets: PlanTargets = NO_TARGETS
        self.plans_made = 0
        self.plans_failed = 0
        self._snapshot: PlanSnapshot | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.apply_config(config)

    def apply_config(self, config: SiteConfig) -> None:
        self.config = config
        self.topology: Topology = build_topology(config)
        self._snapshot = None  # a problem of the old topology does not fit the new one
        self._wake.set()

    # ------------------------------------------------------------------ the cycle's side

    def observe(
        self,
        built: BuiltProblem,
        states: dict[EvseKey, EvseState],
        now_s: float,
        demand: DemandDecision | None = None,
    ) -> None:
        """The cycle's problem, states and demand window's decision, for the next plan (kept by
        reference: all frozen)."""
        self._snapshot = PlanSnapshot(now_s, built, states, demand)

    def overlay(self, states: dict[EvseKey, EvseState], now_s: float) -> dict[EvseKey, EvseState]:
        """``states`` with the latest plan's targets laid on (the cycle calls this; no waiting)."""
        if not self.config.control.horizon.enabled:
            return states
        return overlay_targets(states, self.targets, now_s)

    # ------------------------------------------------------------------ the planner's side

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="evdlm-horizon")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def plan_now(self) -> PlanTargets | None:
        """Make one plan from the last observed cycle (None: nothing observed yet)."""
        snapshot, config, topology = self._snapshot, self.config, self.topology
        if snapshot is None:
            return None
        if self.prices is not None:
            snapshot = dataclasses.replace(snapshot, prices=self.prices.schedule())
        try:
            targets = await asyncio.to_thread(plan_targets, topology, config, snapshot)
        except Exception:  # a planner bug must not stop the controller: log it, plan again later
            self.plans_failed += 1
            log.exception("horizon plan failed; the cycle's own fill decides until the next plan")
            return None
        if config is not self.config:
            return None  # the config changed while planning: this plan is of the old site
        if targets.status != "optimal":
            self.plans_failed += 1
            log.warning(
                "horizon plan %s after %.2f s (%d cars); the cycle's own fill decides until the next plan",
                targets.status,
                targets.solve_time_s,
                len(snapshot.built.columns),
            )
        else:
            self.plans_made += 1
            log.info(
                "horizon plan: %d cars, %.1f kW planned now, %.1f kWh expected unmet, %.0f ms",
                len(targets.power_w),
                sum(watts for _, watts in targets.power_w.values()) / 1000.0,
                targets.unmet_energy_kwh,
                targets.solve_time_s * 1000.0,
            )
        self.targets = targets
        if self.metrics is not None:
            self.metrics.observe_horizon_plan(targets.status, targets.solve_time_s)
        return targets

    async def _run(self) -> None:
        while True:
            settings = self.config.control.horizon
            if settings.enabled:
                await self.plan_now()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), settings.every_s)

    @property
    def age_s(self) -> float:
        """Seconds since the plan in use was made (inf: none yet)."""
        planned = self.targets.planned_at_s
        return math.inf if not math.isfinite(planned) else self.clock.now_s() - planned
