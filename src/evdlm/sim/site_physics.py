"""A pure site simulation: base load, PV, battery physics and EV load from outside.

No I/O: the Modbus simulator servers and the in-process ``sim:`` devices read it. Time comes
from the caller (``now_s`` of the injected clock), so a :class:`~evdlm.core.clock.ScaledClock`
compresses a day into minutes. The battery integrates its state of charge between calls.

Grid balance per site phase (W, + import)::

    grid = base + EV − PV − battery_discharge

PV and the battery are three-phase balanced; base load is split with a fixed imbalance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from evdlm.config.models import SiteConfig
from evdlm.core.clock import Clock
from evdlm.devices.codec import Measurement

PhaseTriple = tuple[float, float, float]
# Per EV key (a charger id, or "charger/evse"): current drawn on site phases L1..L3, in A.
EvLoad = Mapping[str, PhaseTriple]


@dataclass(frozen=True)
class SiteSimParams:
    """Shape of the simulated site. Hours are local solar time (UTC + ``utc_offset_h``)."""

    voltage_v: float = 230.0
    frequency_hz: float = 50.0
    base_load_w: float = 9_000.0  # daily mean of the building load
    base_load_swing: float = 0.35  # relative amplitude of its daily cycle (peak ~14:00)
    base_phase_split: PhaseTriple = (0.40, 0.33, 0.27)
    # Relative amplitude of a fast, deterministic flicker on each phase's base load (periods of
    # seconds to a minute), so that successive readings differ as on a real building; 0 = none.
    base_load_ripple: float = 0.0
    pv_peak_w: float = 25_000.0
    sunrise_h: float = 6.0
    sunset_h: float = 20.0
    utc_offset_h: float = 1.0
    battery_capacity_wh: float = 30_000.0
    battery_max_charge_w: float = 10_000.0
    battery_max_discharge_w: float = 10_000.0
    battery_soc_min_pct: float = 5.0
    battery_soc_max_pct: float = 95.0
    battery_initial_soc_pct: float = 50.0
    battery_efficiency: float = 0.95  # one way, charge and discharge
    # Counters start here, as on a meter that has run for a while (SunSpec reads an
    # accumulator of 0 as "not implemented").
    initial_energy_wh: float = 1_000_000.0


@dataclass(frozen=True)
class CircuitSimSpec:
    """What a simulated circuit meter measures: some EVs and a share of the base load."""

    ev_keys: frozenset[str]
    base_share: float = 0.0


@dataclass
class BatteryCommand:
    """The control registers as the simulated battery last received them.

    ``storctl_mod``/``in_wrte_pct``/``out_wrte_pct`` mirror SunSpec 124, ``wset_w`` 704;
    ``written_at_s`` and ``revert_s`` implement the revert timer.
    """

    storctl_mod: int = 0
    in_wrte_pct: float = 100.0
    out_wrte_pct: float = 100.0
    wset_enabled: bool = False
    wset_w: float = 0.0
    revert_s: float = 0.0
    written_at_s: float = 0.0


@dataclass(frozen=True)
class SiteSnapshot:
    """The simulated site at one instant (all oriented to evdlm's convention)."""

    at_s: float
    base_phase_w: PhaseTriple
    ev_phase_a: PhaseTriple
    pv_w: float
    battery_w: float  # + discharge
    battery_soc_pct: float
    grid_phase_w: PhaseTriple
    grid_import_wh: float
    grid_export_wh: float
    pv_energy_wh: float
    battery_discharge_wh: float
    battery_charge_wh: float
    battery_forced: bool
    voltage_v: float
    frequency_hz: float

    @property
    def grid_w(self) -> float:
        return sum(self.grid_phase_w)


@dataclass
class _State:
    at_s: float
    soc_pct: float
    grid_import_wh: float = 0.0
    grid_export_wh: float = 0.0
    pv_energy_wh: float = 0.0
    battery_discharge_wh: float = 0.0
    battery_charge_wh: float = 0.0
    circuit_import_wh: dict[str, float] = field(default_factory=dict)


def pv_power_w(params: SiteSimParams, now_s: float) -> float:
    """Clear-sky bell between sunrise and sunset: ``peak × sin(π x)^1.5``, x the day fraction lit."""
    hour = ((now_s / 3600.0) + params.utc_offset_h) % 24.0
    if not params.sunrise_h < hour < params.sunset_h:
        return 0.0
    x = (hour - params.sunrise_h) / (params.sunset_h - params.sunrise_h)
    return params.pv_peak_w * float(math.sin(math.pi * x) ** 1.5)


_RIPPLE_PERIODS_S = (5.3, 13.7, 41.0)  # incommensurate: the sum never repeats within a run


def ripple(now_s: float, phase: int) -> float:
    """A deterministic flicker in [-1, 1]: the mean of three sines, shifted per phase."""
    return (
        sum(math.sin(2.0 * math.pi * now_s / period + 2.1 * phase + k) for k, period in enumerate(_RIPPLE_PERIODS_S))
        / 3.0
    )


def base_load_phase_w(params: SiteSimParams, now_s: float) -> PhaseTriple:
    """Building load with a daily cosine cycle peaking at 14:00, split over the phases
    (with ``base_load_ripple``, each phase flickers around its share)."""
    hour = ((now_s / 3600.0) + params.utc_offset_h) % 24.0
    total_w = params.base_load_w * (1.0 + params.base_load_swing * math.cos(2.0 * math.pi * (hour - 14.0) / 24.0))
    a, b, c = (total_w * share for share in params.base_phase_split)
    if params.base_load_ripple:
        r = params.base_load_ripple
        a, b, c = (a * (1.0 + r * ripple(now_s, 0)), b * (1.0 + r * ripple(now_s, 1)), c * (1.0 + r * ripple(now_s, 2)))
    return (a, b, c)


class SiteSimulation:
    """The simulated site. Feed EV load with :meth:`set_ev_load` or an ``ev_source`` callable."""

    def __init__(
        self,
        params: SiteSimParams,
        start_s: float,
        *,
        ev_source: Callable[[], EvLoad] | None = None,
        circuits: Mapping[str, CircuitSimSpec] | None = None,
    ) -> None:
        self.params = params
        self.circuits = dict(circuits or {})
        self.command = BatteryCommand()
        self._ev_source = ev_source
        self._ev_load: dict[str, PhaseTriple] = {}
        e0 = params.initial_energy_wh
        self._state = _State(
            at_s=start_s,
            soc_pct=params.battery_initial_soc_pct,
            grid_import_wh=e0,
            grid_export_wh=e0,
            pv_energy_wh=e0,
            battery_discharge_wh=e0,
            battery_charge_wh=e0,
        )
        self._last = self._compute(start_s)

    # ------------------------------------------------------------ inputs

    def set_ev_load(self, key: str, phase_current_a: PhaseTriple) -> None:
        """Current drawn by one EV (or charger) on site phases L1..L3, in A."""
        self._ev_load[key] = phase_current_a

    def set_ev_source(self, source: Callable[[], EvLoad] | None) -> None:
        """A callable returning all EV currents, polled at every step (e.g. charger sims)."""
        self._ev_source = source

    def ev_load(self) -> dict[str, PhaseTriple]:
        load = dict(self._ev_load)
        if self._ev_source is not None:
            load.update(self._ev_source())
        return load

    def write_storage_control(
        self, now_s: float, storctl_mod: int, in_wrte_pct: float, out_wrte_pct: float, revert_s: float
    ) -> None:
        self.advance(now_s)
        self.command.storctl_mod = storctl_mod
        self.command.in_wrte_pct = in_wrte_pct
        self.command.out_wrte_pct = out_wrte_pct
        self.command.revert_s = revert_s
        self.command.written_at_s = now_s

    def write_power_setpoint(self, now_s: float, enabled: bool, wset_w: float, revert_s: float) -> None:
        self.advance(now_s)
        self.command.wset_enabled = enabled
        self.command.wset_w = wset_w
        self.command.revert_s = revert_s
        self.command.written_at_s = now_s

    # ------------------------------------------------------------ physics

    def _command_active(self, now_s: float) -> bool:
        cmd = self.command
        if not (cmd.storctl_mod or cmd.wset_enabled):
            return False
        # A revert time of 0 means "no timeout" (SunSpec); the simulators always set one.
        return cmd.revert_s <= 0 or now_s - cmd.written_at_s <= cmd.revert_s

    def _battery_w(self, now_s: float, net_w: float, soc_pct: float) -> tuple[float, bool]:
        """Battery power (+ discharge) and whether a command forces it.

        Without a command the battery does self-consumption (drives the grid towards zero).
        Limits from the registers clamp it; SoC bounds stop it.
        """
        p = self.params
        desired = net_w  # discharge to cover net load, charge (negative) from surplus
        forced = self._command_active(now_s)
        if forced:
            cmd = self.command
            if cmd.wset_enabled:
                desired = cmd.wset_w
            low, high = -p.battery_max_charge_w, p.battery_max_discharge_w
            if cmd.storctl_mod & 0x1:  # charge power ≤ InWRte % (negative forces discharge)
                low = max(low, -cmd.in_wrte_pct / 100.0 * p.battery_max_charge_w)
            if cmd.storctl_mod & 0x2:  # discharge power ≤ OutWRte % (negative forces charge)
                high = min(high, cmd.out_wrte_pct / 100.0 * p.battery_max_charge_w)
            desired = min(max(desired, low), high) if low <= high else low
        else:
            if self.command.storctl_mod or self.command.wset_enabled:
                # The revert timer ran out: back to the battery's own control.
                self.command = BatteryCommand()
        desired = min(max(desired, -p.battery_max_charge_w), p.battery_max_discharge_w)
        if desired > 0 and soc_pct <= p.battery_soc_min_pct:
            desired = 0.0
        if desired < 0 and soc_pct >= p.battery_soc_max_pct:
            desired = 0.0
        return desired, forced

    def _compute(self, now_s: float) -> SiteSnapshot:
        p = self.params
        st = self._state
        base = base_load_phase_w(p, now_s)
        ev_a = [0.0, 0.0, 0.0]
        for currents in self.ev_load().values():
            for i in range(3):
                ev_a[i] += currents[i]
        ev_w = [current * p.voltage_v for current in ev_a]
        pv_w = pv_power_w(p, now_s)
        net_w = sum(base) + sum(ev_w) - pv_w
        battery_w, forced = self._battery_w(now_s, net_w, st.soc_pct)
        g1, g2, g3 = (base[i] + ev_w[i] - pv_w / 3.0 - battery_w / 3.0 for i in range(3))
        return SiteSnapshot(
            at_s=now_s,
            base_phase_w=base,
            ev_phase_a=(ev_a[0], ev_a[1], ev_a[2]),
            pv_w=pv_w,
            battery_w=battery_w,
            battery_soc_pct=st.soc_pct,
            grid_phase_w=(g1, g2, g3),
            grid_import_wh=st.grid_import_wh,
            grid_export_wh=st.grid_export_wh,
            pv_energy_wh=st.pv_energy_wh,
            battery_discharge_wh=st.battery_discharge_wh,
            battery_charge_wh=st.battery_charge_wh,
            battery_forced=forced,
            voltage_v=p.voltage_v,
            frequency_hz=p.frequency_hz,
        )

    def advance(self, now_s: float) -> SiteSnapshot:
        """Integrate from the last call to ``now_s`` (powers held constant over the step)."""
        st = self._state
        dt_h = max(0.0, now_s - st.at_s) / 3600.0
        if dt_h > 0:
            last = self._last
            grid_w = last.grid_w
            st.grid_import_wh += max(grid_w, 0.0) * dt_h
            st.grid_export_wh += max(-grid_w, 0.0) * dt_h
            st.pv_energy_wh += last.pv_w * dt_h
            p = self.params
            if last.battery_w >= 0:
                st.battery_discharge_wh += last.battery_w * dt_h
                stored_wh = -last.battery_w * dt_h / p.battery_efficiency
            else:
                st.battery_charge_wh += -last.battery_w * dt_h
                stored_wh = -last.battery_w * dt_h * p.battery_efficiency
            st.soc_pct = min(100.0, max(0.0, st.soc_pct + 100.0 * stored_wh / p.battery_capacity_wh))
            for name, spec in self.circuits.items():
                st.circuit_import_wh[name] = (
                    st.circuit_import_wh.get(name, p.initial_energy_wh)
                    + max(0.0, sum(self._circuit_phase_w(last, spec))) * dt_h
                )
            st.at_s = now_s
        if now_s >= st.at_s:
            self._last = self._compute(now_s)
        return self._last

    def _circuit_phase_w(self, snap: SiteSnapshot, spec: CircuitSimSpec) -> PhaseTriple:
        load = self.ev_load()
        ev_a = [0.0, 0.0, 0.0]
        for key, currents in load.items():
            # Keys are charger ids, or "charger/evse" for chargers with several EVSEs.
            if key.split("/", 1)[0] in spec.ev_keys:
                for i in range(3):
                    ev_a[i] += currents[i]
        a, b, c = (snap.base_phase_w[i] * spec.base_share + ev_a[i] * self.params.voltage_v for i in range(3))
        return (a, b, c)

    # ------------------------------------------------------------ what devices measure

    def grid_meter(self, now_s: float) -> Measurement:
        snap = self.advance(now_s)
        v = snap.voltage_v
        return Measurement(
            power_w=snap.grid_w,
            phase_power_w=snap.grid_phase_w,
            phase_current_a=tuple(abs(w) / v for w in snap.grid_phase_w),  # type: ignore[arg-type]
            phase_voltage_v=(v, v, v),
            frequency_hz=snap.frequency_hz,
            import_energy_wh=snap.grid_import_wh,
            export_energy_wh=snap.grid_export_wh,
        )

    def circuit_meter(self, name: str, now_s: float) -> Measurement:
        snap = self.advance(now_s)
        spec = self.circuits.get(name, CircuitSimSpec(frozenset(), 0.0))
        phase_w = self._circuit_phase_w(snap, spec)
        v = snap.voltage_v
        return Measurement(
            power_w=sum(phase_w),
            phase_power_w=phase_w,
            phase_current_a=tuple(abs(w) / v for w in phase_w),  # type: ignore[arg-type]
            phase_voltage_v=(v, v, v),
            frequency_hz=snap.frequency_hz,
            import_energy_wh=self._state.circuit_import_wh.get(name, self.params.initial_energy_wh),
            export_energy_wh=self.params.initial_energy_wh,
        )

    def pv(self, now_s: float) -> Measurement:
        snap = self.advance(now_s)
        v = snap.voltage_v
        per_phase_w = snap.pv_w / 3.0
        return Measurement(
            power_w=snap.pv_w,
            phase_power_w=(per_phase_w, per_phase_w, per_phase_w),
            phase_current_a=(per_phase_w / v, per_phase_w / v, per_phase_w / v),
            phase_voltage_v=(v, v, v),
            frequency_hz=snap.frequency_hz,
            import_energy_wh=snap.pv_energy_wh,
        )

    def battery(self, now_s: float) -> Measurement:
        snap = self.advance(now_s)
        return Measurement(
            power_w=snap.battery_w,
            import_energy_wh=snap.battery_discharge_wh,
            export_energy_wh=snap.battery_charge_wh,
            soc_pct=snap.battery_soc_pct,
        )


def sim_readers(config: SiteConfig, simulation: SiteSimulation, clock: Clock) -> dict[str, Callable[[], Measurement]]:
    """The in-process readers of ``config``'s ``sim:`` devices, for ``DeviceHub(readers=...)``.

    Each reads ``simulation`` at ``clock``'s now when polled (the method is looked up per read,
    so a test may replace it on the simulation).
    """
    readers: dict[str, Callable[[], Measurement]] = {}
    for device in config.devices:
        if device.sim is not None:
            readers[device.name] = _sim_reader(device.sim.model, device.name, simulation, clock)
    return readers


def _sim_reader(model: str, name: str, simulation: SiteSimulation, clock: Clock) -> Callable[[], Measurement]:
    if model == "grid_meter":
        return lambda: simulation.grid_meter(clock.now_s())
    if model == "pv":
        return lambda: simulation.pv(clock.now_s())
    if model == "battery":
        return lambda: simulation.battery(clock.now_s())
    return lambda: simulation.circuit_meter(name, clock.now_s())
