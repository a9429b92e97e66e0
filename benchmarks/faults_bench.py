"""Meter faults: does the controller stop trusting a grid meter that lies, and how soon?

Issue 12, "Never trust one meter": a grid meter that answers with plausible but wrong values
(frozen, scaled, drifting, a reversed CT, another site's load, a SunSpec scale factor or model
chain gone wrong) must not be believed. The site (``faults_site.yaml``): one grid connection
whose 63 A per-phase fuse is the only binding limit (import limit 50 kW, above 3 × 63 A ×
230 V; fallback import limit 25 kW), a grid meter on Modbus TCP (SDM630, or SunSpec 203 for the
SunSpec cases), a flat building load of 10.5 A per phase with a ±2 % flicker, no PV, no battery,
and three 3-phase chargers each with a car that wants 32 A: 96 A per phase if nobody stops them.

Each fault runs on its own simulated site (``evdlm.sim.site``: the real gateway against the
loopback Modbus simulator and OCPP station simulators, a :class:`ScaledClock`): the cars charge
for ``--warm-up-s`` (steady state, every reading true), then the grid meter's unit gets the
fault (``evdlm.devices.sim.servers.Fault``) and the site runs ``--fault-s`` more. Per cycle:

- commanded %: the highest per-phase current the controller's commands allow through the
  fuse, Σ over EVSEs of the commanded limit on each site phase (a car using 3 phases loads all
  three, 1 phase its charger's L1 mapped by the rotation) + the simulation's true non-EV load
  on that phase, as % of the fuse rating (63 A);
- whether the controller used the grid meter: it did not when ``grid_meter`` is in the
  decision's ``built.stale_devices``;
- the grid meter's reading as the decision saw it: the hub's, after the controller's cross-checks
  (quality and reason).

One JSON object per fault (one line each; ``--json``: one JSON list):

- ``detected_after_s``: simulated seconds from the injection to the first cycle that did not
  use the meter (null: never);
- ``max_commanded_pct_of_limit``: from that cycle on (never detected: over the whole faulted
  run); ``max_commanded_pct_before_detection``: from the injection to it (null if none);
- ``quality`` / ``reason``: the grid meter's reading as the decision saw it at detection (never
  detected: at the end of the run); ``notes``: the decision's notes naming the grid meter then;
- ``suspect_readings_baseline``: SUSPECT readings of any device in the fault-free warm-up (must
  be 0: the false-alarm check); ``unused_cycles_baseline``: warm-up cycles that did not use the
  grid meter (must be 0 too); ``baseline_max_commanded_pct``: the warm-up's steady state. The
  warm-up counts from the first cycle that used the grid meter (its first reading);
- ``trusted_cycles_after_detection``: cycles after detection that used the meter again;
  ``last_commanded_pct``: the commanded % of the run's last cycle; ``max_true_pct``: the highest phase current the fuse really carried during the faulted run
  (the cars follow their limits after a dead time and a ramp).

Faults (``--faults``, default all): ``grid_frozen`` (SDM630; the cars leave, the meter freezes
on the building load alone and three new cars arrive with the freeze: the issue's case),
``sunspec_w_sf_minus2`` (W_SF reads −2 instead of +1: power 1000× low), ``sunspec_sf_plus4``
(W_SF +4: 1000× high), ``sdm630_power_100x_low``, ``sunspec_chain_past_65535`` (the meter
reboots, 1 s of exceptions, into a chain whose model 203 claims registers past 65535; the
exceptions make the reader rediscover), ``drift_20pct_low`` (power and current gain from 1 to
0.8 over 60 s: at the edge of what can be seen, below), ``drift_30pct_low`` (to 0.7),
``ct_l1_reversed``, ``other_site_load`` (a constant 12.4 / 8.7 / 10.9 A at
PF 0.97); and the absurd cases already handled before issue 12: ``nan`` (SDM630 float32 NaN),
``dead_server`` (no answer), ``modbus_exception``.

A meter reading low is caught once it reads below what the chargers under it report (3 A of
allowance for their samples' age). Reading ``g`` times the truth, that needs the chargers'
current C above (g * O + 3) / (1 - g) for a non-EV load O: with this site's 10.5 A building load
and 61 A of cars at most, 20 % low sits at the edge (C > 57 A: caught after 84-145 s, or not at
all when the closed loop settles the cars a little lower), 30 % low does not (C > 35 A). A
check that sees only this meter and the chargers cannot tell a drift smaller than the non-EV
share of the load from a smaller non-EV load; a second meter or the DSO's reading could.

    .venv/bin/python benchmarks/faults_bench.py [--faults grid_frozen ...] [--speed 10] [--json]
    evdlm bench faults --json

Last, the false-alarm audit (``--no-audit`` skips it): the meter checks run over the shipped
recordings of healthy meters (the 24 h 50-charger sample day and the demo's quick run), one
object each with ``suspect_readings`` (must be 0) out of ``meter_readings``.

Whole run: about 4 minutes at the default speed (11 sites of 60 + 90 simulated seconds each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evdlm.config import load_site_config
from evdlm.config.models import SiteConfig
from evdlm.control import CycleReport
from evdlm.core.clock import ScaledClock
from evdlm.core.types import Quality
from evdlm.replay.meter_audit import audit_meters
from evdlm.sim.ev import Car
from evdlm.sim.fleet import site_phase_currents
from evdlm.sim.modbus_servers import Fault, SimUnit, SunSpecUnit
from evdlm.sim.site import SimulatedSite, simulated_site
from evdlm.sim.site_physics import SiteSimParams
from evdlm.sim.station import Misbehaviour

SITE = Path(__file__).resolve().with_name("faults_site.yaml")
GRID_METER = "grid_meter"
RECORDINGS = Path(__file__).resolve().parents[1] / "tests" / "data" / "recordings"
AUDITED_RECORDINGS = (RECORDINGS / "workplace-50-day", RECORDINGS / "demo-quick.jsonl.gz")
BASE_LOAD_A = 10.5  # per phase, the building's load
BASE_LOAD_RIPPLE = 0.02  # ±2 %: a real building flickers, and a real meter with it
CAR_CURRENT_A = 32.0
OTHER_SITE_A = (12.4, 8.7, 10.9)


def site_config(profile: str = "sdm630") -> SiteConfig:
    """``faults_site.yaml`` with the grid meter speaking ``profile`` (``sdm630`` or ``sunspec``)."""
    config = load_site_config(SITE).config
    devices = [
        device.model_copy(update={"modbus": device.modbus.model_copy(update={"profile": profile})})
        if device.name == GRID_METER and device.modbus is not None
        else device
        for device in config.devices
    ]
    return config.model_copy(update={"devices": devices})


def sim_params(config: SiteConfig) -> SiteSimParams:
    """A flat building load of ``BASE_LOAD_A`` per phase (with a small flicker), no PV, no battery."""
    voltage_v = config.grid.nominal_voltage_v
    return SiteSimParams(
        voltage_v=voltage_v,
        base_load_w=3 * BASE_LOAD_A * voltage_v,
        base_load_swing=0.0,
        base_phase_split=(1 / 3, 1 / 3, 1 / 3),
        base_load_ripple=BASE_LOAD_RIPPLE,
        pv_peak_w=0.0,
        battery_max_charge_w=0.0,
        battery_max_discharge_w=0.0,
    )


# ---------------------------------------------------------------------------------- the faults


def _w_sf(unit: SimUnit) -> int:
    """The W scale factor the simulated SunSpec meter presents."""
    assert isinstance(unit, SunSpecUnit), "a SunSpec fault needs the SunSpec meter"
    meter = next(model for model in unit.models if model.model_id == 203)
    return int(meter.scale_factors["W_SF"])


@dataclass(frozen=True)
class Scenario:
    """One fault on the grid meter. ``fault`` makes it from the meter's simulated unit."""

    name: str
    profile: str
    fault: Callable[[SimUnit], Fault]
    lying: bool = True  # plausible-but-wrong values (issue 12); False: an absurd case handled before
    replug: bool = False  # the cars leave before the fault and new ones arrive with it
    reboot_s: float = 0.0  # Modbus exceptions first, this long (a SunSpec reader rediscovers after one)


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("grid_frozen", "sdm630", lambda unit: Fault.frozen(), replug=True),
        Scenario("sunspec_w_sf_minus2", "sunspec", lambda unit: Fault.sf_offset(-2 - _w_sf(unit))),
        Scenario("sunspec_sf_plus4", "sunspec", lambda unit: Fault.sf_offset(4 - _w_sf(unit))),
        Scenario("sdm630_power_100x_low", "sdm630", lambda unit: Fault.scaled(0.01)),
        Scenario("sunspec_chain_past_65535", "sunspec", lambda unit: Fault.chain_past_end(203), reboot_s=1.0),
        Scenario("drift_20pct_low", "sdm630", lambda unit: Fault.drifting(0.8, over_s=60.0)),
        Scenario("drift_30pct_low", "sdm630", lambda unit: Fault.drifting(0.7, over_s=60.0)),
        Scenario("ct_l1_reversed", "sdm630", lambda unit: Fault.ct_reversed(0)),
        Scenario("other_site_load", "sdm630", lambda unit: Fault.constant(OTHER_SITE_A, power_factor=0.97)),
        Scenario("nan", "sdm630", lambda unit: Fault("garbage"), lying=False),
        Scenario("dead_server", "sdm630", lambda unit: Fault("silent"), lying=False),
        Scenario("modbus_exception", "sdm630", lambda unit: Fault("exception"), lying=False),
    )
}


# ------------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class Sample:
    """One controller cycle as the benchmark saw it."""

    at_s: float
    meter_used: bool | None  # None: the decision missed its deadline (nothing decided)
    commanded_pct: float | None
    true_pct: float
    quality: Quality | None
    reason: str | None
    suspect_readings: int  # SUSPECT readings of any device in the hub snapshot
    notes: tuple[str, ...]


@dataclass
class Observer:
    """Called after every cycle (``SimulatedSite.on_cycle``): what the commands let through the fuse."""

    site: SimulatedSite
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = self.site.config
        self.fuse_a = config.grid.phase_current_limit_a
        self.voltage_v = config.grid.nominal_voltage_v
        self.chargers = {charger.id: charger for charger in config.chargers}

    def commanded_phase_a(self, report: CycleReport) -> tuple[float, float, float] | None:
        """Σ over EVSEs of the commanded limit on each site phase, A (None: no decision)."""
        if report.decision is None:
            return None
        total = [0.0, 0.0, 0.0]
        for command in report.decision.plan.commands:
            phases = max(1, command.phases)
            limit_a = command.limit if command.unit == "A" else command.limit / (self.voltage_v * phases)
            per_charger_phase = (limit_a, limit_a if phases == 3 else 0.0, limit_a if phases == 3 else 0.0)
            for phase, current in enumerate(site_phase_currents(self.chargers[command.charger_id], per_charger_phase)):
                total[phase] += current
        return (total[0], total[1], total[2])

    def on_cycle(self, report: CycleReport) -> None:
        site = self.site
        snapshot = site.simulation.advance(site.clock.now_s())
        base_a = [watts / self.voltage_v for watts in snapshot.base_phase_w]
        true_pct = 100.0 * max(abs(watts) for watts in snapshot.grid_phase_w) / self.voltage_v / self.fuse_a
        commanded = self.commanded_phase_a(report)
        commanded_pct = (
            None
            if commanded is None
            else 100.0 * max(c + b for c, b in zip(commanded, base_a, strict=True)) / self.fuse_a
        )
        # The readings as the decision saw them: the hub's, after the controller's cross-checks.
        readings = report.meters.readings if report.meters is not None else {}
        grid = readings.get(GRID_METER)
        decision = report.decision
        self.samples.append(
            Sample(
                at_s=report.now_s,
                meter_used=None if decision is None else GRID_METER not in decision.built.stale_devices,
                commanded_pct=commanded_pct,
                true_pct=true_pct,
                quality=None if grid is None else grid.quality,
                reason=None if grid is None else grid.reason,
                suspect_readings=sum(reading.quality is Quality.SUSPECT for reading in readings.values()),
                notes=() if decision is None else tuple(n for n in decision.built.notes if "grid" in n),
            )
        )


def _max(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(max(present), 1) if present else None


def summarize(scenario: Scenario, samples: Sequence[Sample], injected_at_s: float) -> dict[str, Any]:
    """The figures of one run from its cycles (see the module docstring)."""
    # The warm-up counts from the first cycle that used the grid meter (before it, the meter has
    # not been read yet: SunSpec discovery takes a poll or two).
    first_used = next((s.at_s for s in samples if s.meter_used), injected_at_s)
    baseline = [s for s in samples if first_used <= s.at_s < injected_at_s]
    faulted = [s for s in samples if s.at_s >= injected_at_s]
    detected_at = next((i for i, s in enumerate(faulted) if s.meter_used is False), None)
    before = faulted if detected_at is None else faulted[:detected_at]
    after = faulted if detected_at is None else faulted[detected_at:]
    at = faulted[detected_at] if detected_at is not None else (faulted[-1] if faulted else None)
    return {
        "fault": scenario.name,
        "meter": scenario.profile,
        "lying": scenario.lying,
        "detected_after_s": None if detected_at is None else round(faulted[detected_at].at_s - injected_at_s, 1),
        "max_commanded_pct_of_limit": _max([s.commanded_pct for s in after]),
        "max_commanded_pct_before_detection": None if detected_at is None else _max([s.commanded_pct for s in before]),
        "quality": None if at is None or at.quality is None else at.quality.value,
        "reason": None if at is None else at.reason,
        "notes": [] if at is None else list(at.notes),
        "suspect_readings_baseline": sum(s.suspect_readings for s in baseline),
        "unused_cycles_baseline": sum(s.meter_used is False for s in baseline),
        "baseline_max_commanded_pct": _max([s.commanded_pct for s in baseline]),
        "baseline_max_true_pct": _max([s.true_pct for s in baseline]),
        "trusted_cycles_after_detection": 0 if detected_at is None else sum(s.meter_used is True for s in after),
        "last_commanded_pct": _max([faulted[-1].commanded_pct]) if faulted else None,
        "max_true_pct": _max([s.true_pct for s in faulted]),
        "cycles": {"baseline": len(baseline), "faulted": len(faulted)},
    }


async def run_scenario(
    scenario: Scenario,
    *,
    speed: float = 10.0,
    warm_up_s: float = 60.0,
    fault_s: float = 90.0,
    leave_s: float = 15.0,
    station_tick_s: float = 1.0,
) -> dict[str, Any]:
    """One fault on a fresh simulated site; the summary of its cycles (simulated seconds throughout)."""
    config = site_config(scenario.profile)
    clock = ScaledClock(SCENARIO_START_S, speed)
    async with simulated_site(config, clock, sim_params=sim_params(config), station_tick_s=station_tick_s) as site:
        observer = Observer(site)
        site.on_cycle = observer.on_cycle
        evses = [(charger.id, evse_id) for charger in site.config.chargers for evse_id in range(1, charger.evses + 1)]
        for charger_id, evse_id in evses:
            site.fleet.plug_in(charger_id, evse_id, Car(phases=3, max_current_a=CAR_CURRENT_A))
        site.start_controller()
        await clock.sleep(warm_up_s)
        if scenario.replug:
            for charger_id, evse_id in evses:
                site.fleet.unplug(charger_id, evse_id)
            await clock.sleep(leave_s)  # the cars stop; the meter shows the building alone
        device = next(d for d in site.config.devices if d.name == GRID_METER)
        assert device.modbus is not None
        server = site.simulators.servers[device.modbus.link]
        unit_id = device.modbus.unit_id
        injected_at_s = clock.now_s()
        if scenario.reboot_s > 0:
            server.faults.inject(Fault("exception"), unit_id)
            await clock.sleep(scenario.reboot_s)
        server.faults.inject(scenario.fault(site.simulators.units[GRID_METER]), unit_id)
        if scenario.replug:
            for charger_id, evse_id in evses:
                site.fleet.plug_in(charger_id, evse_id, Car(phases=3, max_current_a=CAR_CURRENT_A))
        await clock.sleep(fault_s - scenario.reboot_s)
        await site.stop_controller()
        return summarize(scenario, observer.samples, injected_at_s)


# ------------------------------------------------------------- a station that cannot be limited

# Every scenario starts at the same simulated time of day: the simulated PV (and so what the grid
# meter nets out) follows the clock's hour, and a start taken from the wall clock made detection
# times depend on when the bench ran (a meter drifting low was caught in 84 s at 13:28 UTC and in
# 104-116 s at 15:50 UTC). 2026-06-16 13:30 UTC, about when the published figures were measured.
SCENARIO_START_S = 1_781_616_600.0

UNLIMITABLE_BASE_LOAD_A = 35.0  # with one car at its 32 A on top, the 63 A fuse is overloaded
UNLIMITABLE = "CP01"
CAR_LET_GO_A = 1.0  # below this the stopped car's decaying current is noise on a 63 A fuse


async def run_unlimitable_station(
    *, speed: float = 10.0, settle_s: float = 40.0, run_s: float = 60.0
) -> dict[str, Any]:
    """A station without smart charging (SetChargingProfile answered NotImplemented) takes a car.

    The two other stations charge first. Then a car arrives at the unlimitable one and draws its
    32 A: with the building's 35 A the fuse carries 67 A even with the others paused, so the
    controller must stop that transaction and keep the station blocked. Figures: how long the
    fuse really carried more than its rating after the car arrived (``over_fuse_s``), when the
    station's transaction was stopped (``stopped_after_s``), when its car stopped drawing after that
    (``car_off_after_stop_s``: the car's own response), the highest true current from then on as %
    of the rating, and whether the station stayed blocked to the end.
    """
    config = site_config()
    voltage_v = config.grid.nominal_voltage_v
    params = replace(sim_params(config), base_load_w=3 * UNLIMITABLE_BASE_LOAD_A * voltage_v)
    clock = ScaledClock(SCENARIO_START_S, speed)
    fuse_a = config.grid.phase_current_limit_a
    misbehaviour = {UNLIMITABLE: Misbehaviour(no_smart_charging=True)}
    true_a: list[tuple[float, float]] = []
    async with simulated_site(config, clock, sim_params=params, misbehaviour=misbehaviour) as site:

        def on_cycle(report: CycleReport) -> None:
            snapshot = site.simulation.advance(clock.now_s())
            true_a.append((clock.now_s(), max(snapshot.grid_phase_w) / voltage_v))

        site.on_cycle = on_cycle
        for charger_id in ("CP02", "CP03"):
            site.fleet.plug_in(charger_id, 1, Car(phases=3, max_current_a=CAR_CURRENT_A))
        site.start_controller()
        await clock.sleep(settle_s)
        arrived_s = clock.now_s()
        site.fleet.plug_in(UNLIMITABLE, 1, Car(phases=3, max_current_a=CAR_CURRENT_A))
        station = site.fleet.station(UNLIMITABLE)
        stopped_s: float | None = None
        car_off_s: float | None = None  # when the stopped station's car last drew current (after the stop)
        while clock.now_s() - arrived_s < run_s:
            connector = station.model.connectors[1]
            if stopped_s is None and connector.transaction_id is None and not connector.operative:
                stopped_s = clock.now_s()
            still_drawing = connector.ev is not None and connector.ev.current_a > CAR_LET_GO_A
            if stopped_s is not None and (car_off_s is None or still_drawing):
                # The last time its car still drew, and from then on: a car follows its offer with a
                # delay, so an offer withdrawn at the stop can still be taken for a few seconds.
                car_off_s = clock.now_s()
            await clock.sleep(0.5)
        blocked = not station.model.connectors[1].operative
        await site.stop_controller()
    after = [(t, a) for t, a in true_a if t >= arrived_s]
    over_s = sum(1 for _, a in after if a > fuse_a)  # one cycle a second
    # The controller's response: from when the stopped car has let go of its current (a car takes
    # a moment to follow an offer going to 0, and a busy machine stretches that moment in scaled
    # time), and never sooner than 2 s after the stop.
    response_from_s = (
        None if stopped_s is None else max(stopped_s + 2.0, car_off_s if car_off_s is not None else math.inf)
    )
    response = [a for t, a in after if response_from_s is not None and t >= response_from_s]
    return {
        "fault": "station_no_smart_charging",
        "over_fuse_s": over_s,
        "stopped_after_s": None if stopped_s is None else round(stopped_s - arrived_s, 1),
        "car_off_after_stop_s": None if stopped_s is None or car_off_s is None else round(car_off_s - stopped_s, 1),
        "max_true_pct_before_stop": _max([100.0 * a / fuse_a for t, a in after if stopped_s is None or t < stopped_s]),
        "max_true_pct_after_stop": _max([100.0 * a / fuse_a for a in response]),
        "blocked_at_end": blocked,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--faults",
        nargs="+",
        choices=list(SCENARIOS),
        default=list(SCENARIOS),
        metavar="FAULT",
        help=f"which faults, each on a fresh site (default all: {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--stations",
        nargs="*",
        default=["station_no_smart_charging"],
        choices=["station_no_smart_charging"],
        help="charger faults after the meter faults (default: a station without smart charging)",
    )
    parser.add_argument("--speed", type=float, default=10.0, help="simulated seconds per wall second")
    parser.add_argument("--warm-up-s", type=float, default=60.0, help="fault-free charging before the fault")
    parser.add_argument("--fault-s", type=float, default=90.0, help="how long the site runs with the fault")
    parser.add_argument("--json", action="store_true", help="one JSON list instead of one object per line")
    parser.add_argument("--no-audit", action="store_true", help="skip the false-alarm audit of the shipped recordings")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--verbose", action="store_true", help="the gateway's warnings on stderr")
    args = parser.parse_args(argv)
    if not args.verbose:
        # Quality changes and failed polls are the point of the exercise: the JSON reports them.
        logging.getLogger("evdlm").setLevel(logging.CRITICAL)
    results = []
    for name in args.faults:
        started = time.perf_counter()
        result = asyncio.run(
            run_scenario(SCENARIOS[name], speed=args.speed, warm_up_s=args.warm_up_s, fault_s=args.fault_s)
        )
        results.append(result)
        if not args.quiet:
            print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        if not args.json:
            print(json.dumps(result), flush=True)
    if "station_no_smart_charging" in args.stations:
        unlimitable = asyncio.run(run_unlimitable_station(speed=args.speed))
        results.append(unlimitable)
        if not args.json:
            print(json.dumps(unlimitable), flush=True)
    if not args.no_audit:
        # False alarms: the meter checks over recorded days of healthy meters must find nothing.
        for recording in AUDITED_RECORDINGS:
            audit = {"fault": "none", "recording": recording.name, **audit_meters(recording).summary()}
            results.append(audit)
            if not args.json:
                print(json.dumps(audit), flush=True)
    if args.json:
        print(json.dumps(results, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
