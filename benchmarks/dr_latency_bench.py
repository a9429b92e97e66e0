"""DR latency: how soon after a demand-response limit takes effect do the chargers and the site follow?

A simulated site (``evdlm.sim.site``: Modbus grid meter, MQTT broker, the real gateway and one
simulated OCPP station per charger, every EVSE with a car charging; real clock) runs until its
import is steady; then a utility publishes an IMPORT_CAPACITY_LIMIT event (retained, on
``dr/{site}/events/{id}``) that starts ``--lead-s`` ahead (the starts of successive events
spread over the cycle period), at ``--fraction`` of the measured import. The DR service applies
a lower limit known in advance one settle time + one cycle early (``dr_lead_s``), so with a
short ``--lead-s`` the limit is applied on receipt, with a long one before its start. Watching
from the publication on, it measures, relative to the event's start (negative: before it):

- ``decision``: the start of the first controller cycle whose import limit reflects it (and
  ``decision_after_publication``: the same from the publication);
- ``accepted``: the last SetChargingProfile answer (``CommandResult.at_s``, ACCEPTED) among
  the EVSEs that cycle cut (its limit below the one the EVSE last accepted): each such EVSE's
  first accepted limit below the one it held;
- ``all_cuts_accepted``: the same over every EVSE cut from that cycle until the metered
  import is under the limit (the closed loop may cut more cars in later cycles);
- ``import_under_limit``: the first moment the site's true import (the simulation, sampled
  every 0.1 s) is at or under the limit; ``metered_under_limit``: the same from the grid
  meter's readings as the controller holds them (Modbus, timestamped when read).

Repeats ``--repeats`` times (a new event each time, after the previous one ended and the cars
came back up) and prints one JSON object with p50 and max per figure.

    .venv/bin/python benchmarks/dr_latency_bench.py [--chargers 30] [--repeats 3]

Target: the limit reaches the chargers within 2 s of taking effect (``accepted_max_s`` ≤ 2). The
cars then take their own dead time and ramp (simulated: 2 s + 3 s time constant) to draw less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from evdlm.config.models import SiteConfig
from evdlm.control import CycleReport
from evdlm.core.clock import SystemClock
from evdlm.core.memory import EvseKey
from evdlm.core.types import CommandStatus
from evdlm.sim.ev import Car
from evdlm.sim.modbus_servers import sim_params_for
from evdlm.sim.site import SimulatedSite, dr_event, simulated_site

ROTATIONS = ("L1-L2-L3", "L2-L3-L1", "L3-L1-L2")


def dr_site_config(chargers: int, cycle_period_s: float = 1.0) -> SiteConfig:
    """``chargers`` 32 A three-phase chargers on three feeders, a grid meter and a DSO program.

    Sized so that every car charges above its minimum both before and under the event: each
    feeder carries 4.2 A per charger and phase, the grid connection 8.4 kW per charger.
    """
    feeders = 3
    feeder_a = math.ceil(chargers / feeders) * 14.0
    return SiteConfig.model_validate(
        {
            "site": {"id": "drbench"},
            "grid": {
                "import_limit_kw": round(chargers * 8.4, 1),
                "phase_current_limit_a": feeder_a * feeders,
                "meter": "grid_meter",
            },
            "circuits": [
                {
                    "id": "main",
                    "phase_current_limit_a": feeder_a * feeders,
                    "children": [
                        {"id": f"feeder{index + 1}", "phase_current_limit_a": feeder_a} for index in range(feeders)
                    ],
                }
            ],
            "chargers": [
                {
                    "id": f"CP{index + 1:02d}",
                    "ocpp_version": "1.6" if index % 2 else "2.0.1",
                    "circuit": f"feeder{index % feeders + 1}",
                    "phase_rotation": ROTATIONS[index // feeders % 3],
                    "max_current_a": 32,
                }
                for index in range(chargers)
            ],
            # A float32 meter map: the simulated SunSpec 203 meter overflows above 327 A summed
            # over the phases.
            "modbus_links": [{"name": "lan", "type": "tcp", "host": "127.0.0.1", "timeout_s": 0.3}],
            "devices": [
                {
                    "name": "grid_meter",
                    "role": "grid_meter",
                    "max_age_s": 3,
                    "modbus": {"link": "lan", "unit_id": 1, "profile": "janitza_umg604"},
                }
            ],
            "mqtt": {"host": "127.0.0.1"},
            "demand_response": {"programs": [{"id": "dso", "mandatory": True}]},
            "control": {"cycle_period_s": cycle_period_s, "fallback_import_limit_kw": round(chargers * 3.0, 1)},
        }
    )


@dataclass
class Trial:
    """One event's observations (epoch seconds of this machine's clock)."""

    event_id: str
    published_s: float
    start_s: float
    limit_w: float
    previous: dict[EvseKey, float]
    decision_at_s: float | None = None
    early_cycles: int = 0  # 1 when the first cycle applying the limit came before its start
    affected: dict[EvseKey, float] = field(default_factory=dict)
    # EVSEs cut by later cycles, until the metered import is under the limit (closed loop).
    later_cuts: dict[EvseKey, float] = field(default_factory=dict)
    accepted_at_s: dict[EvseKey, float] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    truth_under_at_s: float | None = None
    metered_under_at_s: float | None = None

    @property
    def accepted_all_at_s(self) -> float | None:
        if self.decision_at_s is None or not set(self.affected) <= set(self.accepted_at_s):
            return None
        return max((self.accepted_at_s[key] for key in self.affected), default=self.decision_at_s)

    @property
    def all_cuts_accepted_at_s(self) -> float | None:
        cut = set(self.affected) | set(self.later_cuts)
        if self.decision_at_s is None or not cut <= set(self.accepted_at_s):
            return None
        return max((self.accepted_at_s[key] for key in cut), default=self.decision_at_s)

    def slowest(self) -> str | None:
        if not self.accepted_at_s:
            return None
        key = max(self.accepted_at_s, key=lambda k: self.accepted_at_s[k] if k in self.affected else -math.inf)
        return f"{key[0]}/{key[1]}"

    def complete(self) -> bool:
        return None not in (self.accepted_all_at_s, self.truth_under_at_s, self.metered_under_at_s)


class Observer:
    """Follows cycle reports: accepted limits per EVSE, and the trial in progress."""

    def __init__(self, site: SimulatedSite) -> None:
        self.site = site
        self.accepted: dict[EvseKey, float] = {}
        self.trial: Trial | None = None
        self.cycles = 0

    def on_cycle(self, report: CycleReport) -> None:
        self.cycles += 1
        trial = self.trial
        decision = report.decision
        if (
            trial is not None
            and decision is not None
            and trial.decision_at_s is not None
            and trial.metered_under_at_s is None
        ):
            for command in decision.plan.commands:
                key = (command.charger_id, command.evse_id)
                if key not in trial.affected and command.limit < trial.previous.get(key, math.inf) - 0.05:
                    trial.later_cuts.setdefault(key, report.now_s)
        if trial is not None and decision is not None and trial.decision_at_s is None:
            import_limit = decision.built.row_limit[self.site.gateway.controller.context.topology.import_row]  # type: ignore[union-attr]
            if import_limit <= trial.limit_w + 1.0:
                # A limit published a settle time ahead is applied that early (negative latency).
                if report.now_s < trial.start_s:
                    trial.early_cycles += 1
                trial.decision_at_s = report.now_s
                for command in decision.plan.commands:
                    key = (command.charger_id, command.evse_id)
                    if command.limit < trial.previous.get(key, math.inf) - 0.05:
                        trial.affected[key] = command.limit
        for result in report.results:
            key = (result.command.charger_id, result.command.evse_id)
            if result.status is CommandStatus.ACCEPTED:
                self.accepted[key] = result.command.limit
            if trial is None or key in trial.accepted_at_s:
                continue
            # Its first accepted cut (the cycle that applied the event, or a later one when a
            # dispatch to that charger was still in flight then).
            if result.command.limit < trial.previous.get(key, math.inf) - 0.05 and result.at_s >= trial.published_s:
                if result.status is CommandStatus.ACCEPTED:
                    trial.accepted_at_s[key] = result.at_s
                elif result.status is not CommandStatus.UNCHANGED:
                    trial.refused.append(f"{key[0]}/{key[1]} {result.status.value} {result.detail}")


def truth_import_w(site: SimulatedSite) -> float:
    return site.grid_w()


def metered(site: SimulatedSite) -> tuple[float, float] | None:
    """(taken_at_s, power_w) of the grid meter's latest reading as the controller holds it."""
    devices = site.gateway.devices
    meter = site.config.grid.meter
    if devices is None or meter is None:
        return None
    reading = devices.snapshot(site.clock.now_s()).get(meter)
    if reading is None or reading.power_w is None or not reading.usable:
        return None
    return reading.taken_at_s, reading.power_w


async def steady_import_w(site: SimulatedSite, observer: Observer, settle_s: float, timeout_s: float) -> float:
    """Until every EVSE holds an accepted limit > 0, every car draws, the import moved < 2 % over ``settle_s``."""
    deadline = time.monotonic() + timeout_s
    window: list[tuple[float, float]] = []
    keys = {(charger.id, evse) for charger in site.config.chargers for evse in range(1, charger.evses + 1)}
    while True:
        now = time.monotonic()
        window.append((now, truth_import_w(site)))
        window = [(at, value) for at, value in window if at >= now - settle_s]
        values = [value for _, value in window]
        full = window[0][0] <= now - settle_s + 0.3
        limited = all(observer.accepted.get(key, 0.0) > 0 for key in keys)
        drawing = all(max(current) > 1.0 for current in site.fleet.drawn_current_a().values())
        if full and limited and drawing and min(values) > 0 and max(values) - min(values) <= 0.02 * max(values):
            return statistics.fmean(values)
        if now > deadline:
            return statistics.fmean(values)
        if int(now) % 10 == 0:
            await site.heartbeat()
        await asyncio.sleep(0.25)


async def run_trial(
    site: SimulatedSite,
    observer: Observer,
    index: int,
    fraction: float,
    lead_s: float,
    event_s: float,
    timeout_s: float,
) -> Trial:
    baseline_w = statistics.fmean([truth_import_w(site) for _ in range(3)])
    limit_kw = math.floor(baseline_w * fraction / 1000.0)
    # Starts spread over the cycle period (golden-ratio steps): a limit waits for the next cycle,
    # so the decision delay depends on where in the period the start falls.
    phase_s = (index * 0.618034) % 1.0 * site.config.control.cycle_period_s
    published_s = site.clock.now_s()
    start_s = math.ceil(published_s + lead_s) + phase_s
    trial = Trial(f"bench-{index}-{int(start_s)}", published_s, start_s, limit_kw * 1000.0, dict(observer.accepted))
    observer.trial = trial
    await site.publish_dr_event(
        dr_event(site.config.site.id, "dso", trial.event_id, start_s, event_s, limit_kw, published_s)
    )
    # Everything is watched from the publication on: a limit known in advance may be applied,
    # answered and followed before its start (negative figures).
    deadline = time.monotonic() + lead_s + timeout_s
    while not trial.complete() and time.monotonic() < deadline:
        now_s = site.clock.now_s()
        if trial.truth_under_at_s is None and truth_import_w(site) <= trial.limit_w:
            trial.truth_under_at_s = now_s
        reading = metered(site)
        if (
            trial.metered_under_at_s is None
            and reading is not None
            and reading[0] >= trial.published_s
            and reading[1] <= trial.limit_w
        ):
            trial.metered_under_at_s = reading[0]
        await asyncio.sleep(0.1)
    observer.trial = None
    return trial


def stats(values: Sequence[float | None]) -> dict[str, float | None]:
    found = [value for value in values if value is not None]
    if not found:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(found), 3), "max": round(max(found), 3)}


async def bench(
    chargers: int,
    repeats: int,
    *,
    fraction: float = 0.6,
    lead_s: float = 3.0,
    event_s: float = 30.0,
    settle_s: float = 5.0,
    timeout_s: float = 30.0,
    steady_timeout_s: float = 90.0,
    station_tick_s: float = 0.25,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = log or (lambda _message: None)
    config = dr_site_config(chargers)
    clock = SystemClock()
    # No PV and a flat building load: the site's import moves only with the cars.
    params = sim_params_for(config, pv_peak_w=0.0, base_load_swing=0.0)
    trials: list[Trial] = []
    async with simulated_site(config, clock, sim_params=params, station_tick_s=station_tick_s) as site:
        observer = Observer(site)
        site.on_cycle = observer.on_cycle
        dr_service = site.gateway.dr
        for charger in site.config.chargers:
            for evse_id in range(1, charger.evses + 1):
                site.fleet.plug_in(charger.id, evse_id, Car(phases=3, max_current_a=32))
        site.start_controller()
        for index in range(repeats):
            baseline_w = await steady_import_w(site, observer, settle_s, timeout_s=steady_timeout_s)
            say(f"trial {index + 1}: steady import {baseline_w / 1000:.1f} kW")
            trial = await run_trial(site, observer, index, fraction, lead_s, event_s, timeout_s)
            trials.append(trial)
            say(
                f"trial {index + 1}: limit {trial.limit_w / 1000:.0f} kW, {len(trial.affected)} EVSEs cut, "
                f"complete={trial.complete()}"
            )
            # Let the event end before the next one (and the cars come back up: steady_import_w).
            while index + 1 < repeats and site.clock.now_s() < trial.start_s + event_s + 1.0:
                await site.heartbeat()
                await asyncio.sleep(1.0)
        await site.stop_controller()

    def since(trial: Trial, at_s: float | None) -> float | None:
        return None if at_s is None else at_s - trial.start_s

    decision = [since(t, t.decision_at_s) for t in trials]
    accepted = [since(t, t.accepted_all_at_s) for t in trials]
    all_cuts = [since(t, t.all_cuts_accepted_at_s) for t in trials]
    truth = [since(t, t.truth_under_at_s) for t in trials]
    meter = [since(t, t.metered_under_at_s) for t in trials]
    accepted_stats = stats(accepted)
    accepted_max = accepted_stats["max"]
    return {
        "benchmark": "dr_latency",
        "chargers": chargers,
        "evses": config.evse_count,
        "repeats": repeats,
        "cycle_period_s": config.control.cycle_period_s,
        "lead_s": lead_s,
        "limits_kw": [round(t.limit_w / 1000, 1) for t in trials],
        "evses_cut": [len(t.affected) for t in trials],
        "dr_lead_s": getattr(dr_service, "lead_s", None),
        "decision_s": stats(decision),
        "decision_after_publication_s": stats(
            [None if t.decision_at_s is None else t.decision_at_s - t.published_s for t in trials]
        ),
        "accepted_s": accepted_stats,
        "all_cuts_accepted_s": stats(all_cuts),
        "evses_cut_later": [len(t.later_cuts) for t in trials],
        "import_under_limit_s": stats(truth),
        "metered_under_limit_s": stats(meter),
        "per_trial": [
            {
                "decision_s": None if d is None else round(d, 3),
                "accepted_s": None if a is None else round(a, 3),
                "import_under_limit_s": None if u is None else round(u, 3),
                "metered_under_limit_s": None if m is None else round(m, 3),
                "evses_cut": len(t.affected),
                "evses_cut_not_accepted": len(set(t.affected) - set(t.accepted_at_s)),
                "evses_cut_later": len(t.later_cuts),
                "all_cuts_accepted_s": None
                if t.all_cuts_accepted_at_s is None
                else round(t.all_cuts_accepted_at_s - t.start_s, 3),
                "evses_accepted_within_2_s": sum(
                    1 for key in t.affected if t.accepted_at_s.get(key, math.inf) - t.start_s <= 2.0
                ),
                "slowest_evse": t.slowest(),
                "start_phase_s": round(t.start_s % 1.0, 3),
            }
            for t, d, a, u, m in zip(trials, decision, accepted, truth, meter, strict=True)
        ],
        "early_cycles": sum(t.early_cycles for t in trials),
        "refused": [entry for t in trials for entry in t.refused][:10],
        "all_complete": all(t.complete() for t in trials),
        "accepted_within_2_s": accepted_max is not None
        and accepted_max <= 2.0
        and all(a is not None for a in accepted),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--chargers", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.6, help="DR limit as a fraction of the steady import")
    parser.add_argument("--lead-s", type=float, default=3.0, help="event published this far ahead of its start")
    parser.add_argument("--event-s", type=float, default=30.0, help="event duration")
    parser.add_argument("--settle-s", type=float, default=5.0, help="import steady this long before an event")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="per event, after its start")
    parser.add_argument(
        "--steady-timeout-s", type=float, default=90.0, help="longest wait for a steady import before an event"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    result = asyncio.run(
        bench(
            args.chargers,
            args.repeats,
            fraction=args.fraction,
            lead_s=args.lead_s,
            event_s=args.event_s,
            settle_s=args.settle_s,
            timeout_s=args.timeout_s,
            steady_timeout_s=args.steady_timeout_s,
            log=progress,
        )
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
