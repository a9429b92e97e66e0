"""An in-process site simulation that drives :func:`decide` and writes a real recording.

No sockets, no clock: cars, chargers and meters are a simple model stepped every cycle, the
decision is the gateway's own, and the record is written with the gateway's
:class:`~evdlm.recording.RecordingWriter`. It makes realistic days for the shipped sample, the
replay benchmark and tests, and is the back end of the importers (which give it sessions and
meter series measured on a real site instead of synthetic ones).

The model, deliberately simple:

* a car is the one EV model (:class:`evdlm.sim.ev.Car`, as behind the OCPP simulator) with no
  ramp, no minimum current and a dead time of one cycle: it draws ``min(limit it was told one
  cycle ago, its own maximum, the charger's)`` per phase on 1 or 3 phases until its energy is
  delivered, then 0 (SuspendedEV) until it leaves;
* chargers report MeterValues every ``sample_interval_s`` (staggered per charger), so the
  controller sees car currents that age, as on a real OCPP link; meters are read every cycle;
* the grid meter measures building load + cars − PV, per phase.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evdlm.config import parse_site_config
from evdlm.config.models import DeviceRole, SiteConfig
from evdlm.core.clock import FakeClock
from evdlm.core.decide import Decision, DecisionContext, SolverChoice, decide
from evdlm.core.horizon_targets import NO_TARGETS, PlanSnapshot, overlay_targets, plan_targets
from evdlm.core.memory import ControlMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits
from evdlm.core.topology import GRID_NODE, build_topology
from evdlm.core.types import EvseState, Quality, Reading
from evdlm.demand_charge import DemandKeeper
from evdlm.recording import EvseKey, RecordingWriter
from evdlm.sim.ev import Car, EvState, initial_state, step

EvPowerProfile = Callable[[float], float]  # epoch s -> W


@dataclass(frozen=True)
class Session:
    """One car's visit to one EVSE."""

    charger_id: str
    evse_id: int
    arrival_s: float
    departure_s: float
    energy_needed_kwh: float
    ev_max_current_a: float = 32.0  # per phase, the car's on-board charger
    phases: int = 3  # phases the car charges on (1 or 3)
    announces_needs: bool = False  # ISO 15118: departure time and energy sent to the charger
    transaction_id: str = ""
    # The departure the car announces, when it differs from when it really leaves (a driver's
    # estimate); None: the true departure.
    announced_departure_s: float | None = None


@dataclass(frozen=True)
class DrWindow:
    """A demand-response import cap in force from ``start_s`` to ``end_s``."""

    event_id: str
    start_s: float
    end_s: float
    import_limit_w: float


@dataclass(frozen=True)
class SiteSeries:
    """Site load other than the cars, as functions of time (W, + = consumption / production)."""

    building_w: EvPowerProfile
    pv_w: EvPowerProfile
    # Measured per phase (importers): replaces an even split of building_w − pv_w.
    other_phase_w: Callable[[float], tuple[float, float, float]] | None = None


@dataclass(frozen=True)
class SimulationSpec:
    config_text: str
    start_s: float
    duration_s: float
    sessions: tuple[Session, ...]
    series: SiteSeries
    dr: tuple[DrWindow, ...] = ()
    sample_interval_s: float = 30.0
    # The stationary battery's state of charge at the start (only with a `battery:` in the config).
    battery_soc_pct: float = 50.0


@dataclass
class _Car:
    session: Session
    ev: Car
    state: EvState
    limit_a: float = 0.0  # what the car follows now (the limit of one cycle ago: its dead time)
    told_a: float = 0.0  # the latest command
    sampled: EvseState | None = None

    @property
    def draw_a(self) -> float:
        """Per phase, what the car draws (before the last step's energy cap)."""
        return self.state.current_a

    @property
    def delivered_wh(self) -> float:
        return self.state.session_energy_wh


def session_car(session: Session, phases: int, charger_max_a: float, period_s: float) -> Car:
    """The EV model of one session: follows the limit of one cycle ago at once, up to its own
    and the charger's maximum, until it has the session's energy."""
    return Car(
        phases=phases,
        max_current_a=min(session.ev_max_current_a, charger_max_a),
        min_current_a=0.0,
        capacity_wh=math.inf,
        soc_pct=0.0,
        dead_time_s=period_s,
        ramp_time_constant_s=0.0,
        energy_limit_wh=session.energy_needed_kwh * 1000.0,
        id_tag=session.transaction_id,
    )


SimCar = _Car  # what an observer reads (read only)


@dataclass(frozen=True)
class CycleView:
    """One simulated cycle as an observer sees it, after the decision (read only).

    ``cars`` are the plugged-in cars; their ``draw_a`` and ``delivered_wh`` are what they drew
    and got during the cycle that ended at ``now_s`` + ``period_s`` (the physics of this cycle
    ran before the decision), ``told_a`` the limit just decided. ``node_phase_a`` is the true
    current of the cars per circuit node and site phase during this cycle.
    """

    now_s: float
    period_s: float
    cars: Mapping[EvseKey, _Car]
    node_phase_a: Mapping[str, list[float]]
    decision: Decision
    # The meter readings the decision was built from (the grid meter's power is the site's import).
    readings: Mapping[str, Reading] = field(default_factory=dict)


def _devices(config: SiteConfig, role: DeviceRole) -> list[str]:
    return [device.name for device in config.devices if device.role is role]


def _phase_tuple(values: Sequence[float], digits: int) -> tuple[float | None, float | None, float | None]:
    return (round(values[0], digits), round(values[1], digits), round(values[2], digits))


def simulate(
    spec: SimulationSpec,
    out_dir: Path | None,
    *,
    solver: SolverChoice = SolverChoice.CHAIN,
    observer: Callable[[CycleView], None] | None = None,
) -> int:
    """Run the simulation and write its recording to ``out_dir``; returns the cycle count.

    ``out_dir`` None: write no recording (benchmarks). ``observer`` is called after every
    cycle's decision with a :class:`CycleView`.
    """
    config = parse_site_config(spec.config_text, "<simulated site>").config
    topology = build_topology(config)
    context = DecisionContext.from_config(config, solver)
    voltage_v = topology.nominal_voltage_v
    period_s = config.control.cycle_period_s
    grid_meter = config.grid.meter
    pv_meters = _devices(config, DeviceRole.PV)
    circuit_meters = {
        node.meter: node_id for node_id, node in topology.nodes.items() if node.meter and node_id != GRID_NODE
    }
    charger_index = {slot.key: slot for slot in topology.evses}
    sessions_by_evse: dict[EvseKey, list[Session]] = {}
    for session in sorted(spec.sessions, key=lambda s: s.arrival_s):
        sessions_by_evse.setdefault((session.charger_id, session.evse_id), []).append(session)
    failsafe_a = config.ocpp.failsafe_current_a
    horizon = config.control.horizon
    # A stationary battery behind the grid meter: it follows the last decided setpoint (+ =
    # discharge) at once, within its power and state-of-charge window.
    battery = config.battery
    battery_soc_pct = spec.battery_soc_pct
    battery_w = 0.0
    targets = NO_TARGETS
    # Demand-charge control, as the gateway's controller runs it (evdlm.demand_charge).
    demand_window = DemandKeeper.for_config(config, None)
    uncontrolled_import_w = 0.0

    writer = (
        RecordingWriter(
            out_dir,
            config.site.id,
            spec.config_text,
            FakeClock(spec.start_s),
            rotate_after_s=config.recording.rotate_after_s,
            max_disk_bytes=float("inf"),
        )
        if out_dir is not None
        else None
    )
    memory = ControlMemory()
    cars: dict[EvseKey, _Car] = {}
    last_sample: dict[EvseKey, float] = {}
    cycles = math.floor(spec.duration_s / period_s)
    try:
        for cycle in range(1, cycles + 1):
            now_s = spec.start_s + (cycle - 1) * period_s
            # Arrivals and departures.
            for key, queue in sessions_by_evse.items():
                car = cars.get(key)
                if car is not None and now_s >= car.session.departure_s:
                    del cars[key]
                    car = None
                if car is None and queue and queue[0].arrival_s <= now_s:
                    session = queue.pop(0)
                    if session.departure_s > now_s:
                        slot = charger_index[key]
                        phases = 1 if slot.wired_phase_count == 1 else session.phases
                        ev = session_car(session, phases, slot.charger.max_current_a, period_s)
                        cars[key] = _Car(
                            session,
                            ev,
                            initial_state(ev),
                            limit_a=failsafe_a if failsafe_a > 0 else 0.0,
                            told_a=failsafe_a,
                        )
            # Cars draw what they were told a cycle ago (the charger's and car's lag).
            site_phase_a = {node_id: [0.0, 0.0, 0.0] for node_id in topology.nodes}
            ev_total_w = 0.0
            for key, car in cars.items():
                slot = charger_index[key]
                car.state = step(car.ev, car.state, car.limit_a, period_s, voltage_v)
                phases = car.ev.phases
                power_w = car.state.power_w
                ev_total_w += power_w
                per_phase_a = power_w / (voltage_v * phases) if phases else 0.0
                for charger_phase in range(phases):
                    site_phase = slot.site_phases[charger_phase] - 1
                    for node in topology.nodes[slot.node].path:
                        site_phase_a[node][site_phase] += per_phase_a
                car.limit_a = car.told_a
            # EVSE states: a MeterValues sample every sample_interval_s, else the last one.
            states: dict[EvseKey, EvseState] = {}
            for key, slot in charger_index.items():
                car = cars.get(key)
                if car is None:
                    states[key] = EvseState(
                        key[0], key[1], online=True, connected=False, charging=False, updated_at_s=spec.start_s
                    )
                    last_sample.pop(key, None)
                    continue
                due = key not in last_sample or now_s - last_sample[key] >= spec.sample_interval_s - 1e-9
                if due or car.sampled is None:
                    session = car.session
                    phases = 1 if slot.wired_phase_count == 1 else session.phases
                    draw = round(car.draw_a, 1)
                    currents = (draw, draw if phases == 3 else 0.0, draw if phases == 3 else 0.0)
                    car.sampled = EvseState(
                        charger_id=key[0],
                        evse_id=key[1],
                        online=True,
                        connected=True,
                        charging=True,
                        updated_at_s=now_s,
                        transaction_id=session.transaction_id or f"{key[0]}-{int(session.arrival_s)}",
                        phase_current_a=currents,
                        power_w=round(draw * voltage_v * phases, 0),
                        offered_current_a=car.told_a,
                        energy_wh=round(car.delivered_wh, 0),
                        departure_at_s=(
                            (
                                session.departure_s
                                if session.announced_departure_s is None
                                else session.announced_departure_s
                            )
                            if session.announces_needs
                            else None
                        ),
                        energy_needed_wh=(
                            round(max(0.0, session.energy_needed_kwh * 1000.0 - car.delivered_wh), 0)
                            if session.announces_needs
                            else None
                        ),
                        ev_max_current_a=session.ev_max_current_a if session.announces_needs else None,
                        accepted_limit=car.told_a,
                        accepted_unit="A",
                    )
                    last_sample[key] = now_s
                states[key] = car.sampled
            # Meters.
            readings: dict[str, Reading] = {}
            pv_w = max(0.0, spec.series.pv_w(now_s))
            building_w = spec.series.building_w(now_s)
            battery_reading = None
            if battery is not None:
                capacity_wh = battery.capacity_kwh * 1000.0
                if battery_w > 0.0:  # discharge: not below the minimum state of charge
                    room_wh = max(0.0, (battery_soc_pct - battery.soc_min_pct) / 100.0 * capacity_wh)
                    battery_w = min(battery_w, battery.max_discharge_kw * 1000.0, room_wh * 3600.0 / period_s)
                else:  # charge: not above the maximum
                    room_wh = max(0.0, (battery.soc_max_pct - battery_soc_pct) / 100.0 * capacity_wh)
                    battery_w = -min(-battery_w, battery.max_charge_kw * 1000.0, room_wh * 3600.0 / period_s)
                battery_soc_pct -= battery_w * period_s / 3600.0 / capacity_wh * 100.0
                building_w -= battery_w  # the grid meter sees a discharge as less import
                battery_reading = Reading(
                    battery.device, now_s, Quality.OK, power_w=round(battery_w, 0), soc_pct=round(battery_soc_pct, 2)
                )
                readings[battery.device] = battery_reading
            if grid_meter is not None:
                grid_phase_a = site_phase_a[GRID_NODE]
                if spec.series.other_phase_w is not None:
                    other = spec.series.other_phase_w(now_s)
                else:
                    even_w = (building_w - pv_w) / 3.0
                    other = (even_w, even_w, even_w)
                if battery is not None and spec.series.other_phase_w is not None:
                    other = (other[0] - battery_w / 3.0, other[1] - battery_w / 3.0, other[2] - battery_w / 3.0)
                phase_w = (
                    other[0] + grid_phase_a[0] * voltage_v,
                    other[1] + grid_phase_a[1] * voltage_v,
                    other[2] + grid_phase_a[2] * voltage_v,
                )
                grid_w = phase_w[0] + phase_w[1] + phase_w[2]
                readings[grid_meter] = Reading(
                    device=grid_meter,
                    taken_at_s=now_s,
                    quality=Quality.OK,
                    power_w=round(grid_w, 0),
                    phase_power_w=_phase_tuple(list(phase_w), 0),
                )
            for pv_meter in pv_meters:
                readings[pv_meter] = Reading(pv_meter, now_s, Quality.OK, power_w=round(pv_w / len(pv_meters), 0))
            for meter, node_id in circuit_meters.items():
                phase_a = site_phase_a[node_id]
                readings[meter] = Reading(
                    device=meter,
                    taken_at_s=now_s,
                    quality=Quality.OK,
                    power_w=round(sum(phase_a) * voltage_v, 0),
                    phase_current_a=_phase_tuple(phase_a, 1),
                )
            active = [window for window in spec.dr if window.start_s <= now_s < window.end_s]
            import_cap_w = min((window.import_limit_w for window in active), default=None)
            dr: dict[str, Any] = {
                "import_limit_w": import_cap_w,
                "export_limit_w": None,
                "mode": "NORMAL",
                "events": [window.event_id for window in active],
            }
            if horizon.enabled:  # the live planner's schedule, in simulated time
                states = overlay_targets(states, targets, now_s)
            window, window_w = None, None
            if demand_window is not None:
                window = demand_window.step(now_s, readings, states, uncontrolled_import_w)
                window_w = window.limit_w
                dr["window_import_limit_w"] = window_w
            limits = DemandLimits(import_cap_w, None, window_w)
            inputs = BuildInputs(now_s, readings, states, memory, limits, battery_reading)
            decision = decide(context, inputs)
            uncontrolled_import_w = decision.built.row_uncontrolled[topology.import_row]
            if horizon.enabled and now_s - targets.planned_at_s >= horizon.every_s:
                targets = plan_targets(topology, config, PlanSnapshot(now_s, decision.built, states, window))
            commands = decision.plan.limits
            for key, limit in commands.items():
                if key in cars:
                    cars[key].told_a = limit
            result = decision.result
            if battery is not None:
                battery_w = result.allocation.battery_w
            if observer is not None:
                observer(CycleView(now_s, period_s, cars, site_phase_a, decision, readings))
            if writer is None:
                memory = decision.plan.memory
                continue
            writer.write_cycle(
                now_s=now_s,
                cycle=cycle,
                memory_before=memory,
                readings=readings,
                evse_states=states,
                dr=dr,
                commands=commands,
                outcome={
                    "status": result.status.value,
                    "solver": result.solver.value,
                    "reason": result.reason,
                    "import_limit_w": decision.built.row_limit[topology.import_row],
                    "battery_w": result.allocation.battery_w,
                    "stale": list(decision.built.stale_devices),
                    "results": [],
                    "source": "simulation",
                },
            )
            memory = decision.plan.memory
    finally:
        if writer is not None:
            writer.close()
    return cycles
