"""``evdlm demo``: the embedded default site, simulated on loopback, with the real controller.

A scripted workplace morning in compressed time: cars arrive one after another (one on a
single phase, one that fills up early, one with a departure time), the PV rises, the DSO sends
an import-limit event over MQTT, and the garage sub-meter goes silent for a while. A live view
shows the site; the run ends with a summary (peak import against the limit in force, energy
delivered, DR compliance) and a plot.

With ``with_csms`` (``evdlm demo --with-csms``) an operator's CSMS simulator listens on loopback
too and evdlm runs as its OCPP Local Controller (``ocpp.mode: local_controller``): the chargers
boot at the CSMS through evdlm under their own identities, and at 30 % of the run the CSMS sets
a 10 A TxDefaultProfile on one charger and reads its GetCompositeSchedule back. evdlm keeps that
profile as an upper bound and never forwards it (docs/local-controller.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ocpp.exceptions import OCPPError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from evdlm.config import load_site_config
from evdlm.config.models import OcppUpstream, SecretRef, SiteConfig
from evdlm.control import CycleReport
from evdlm.core.clock import ScaledClock
from evdlm.data import DEMO_SITE_PATH
from evdlm.gateway import compile_kernels
from evdlm.sim.csms import CsmsSimulator, NotConnected
from evdlm.sim.ev import Car
from evdlm.sim.modbus_servers import Fault
from evdlm.sim.site import SimulatedSite, dr_event, simulated_site

log = logging.getLogger("evdlm.sim.demo")

# When limits are checked after a change: chargers and cars need up to this long to follow.
RESPONSE_ALLOWANCE_S = 15.0
# The summary lists the import-limit changes one by one up to this many (more means flapping).
MAX_CHANGES_LISTED = 6

# --with-csms: the operator's profile, on which charger, when (share of the run), and how far ahead
# its composite schedule is read back (s).
CSMS_CHARGER = "CP01"
CSMS_EVSE = 1
CSMS_LIMIT_A = 10.0
CSMS_PROFILE_ID = 4242  # none of evdlm's own profile ids (1, 100 + EVSE): recognisable on a charger
CSMS_PROFILE_AT = 0.30
CSMS_COMPOSITE_S = 600


@dataclass(frozen=True)
class DemoOptions:
    config_path: Path = DEMO_SITE_PATH
    sim_minutes: float = 60.0
    speed: float = 30.0
    out_dir: Path = Path("demo-out")
    live: bool = True
    start_local: time = time(8, 0)
    # Run evdlm as the OCPP Local Controller of a simulated operator CSMS on loopback.
    with_csms: bool = False


@dataclass
class Sample:
    t_s: float
    grid_w: float
    import_limit_w: float
    dr_limit_w: float | None
    pv_w: float
    battery_w: float
    ev_w: float
    limits: dict[str, float]
    grid_fallback: bool = False  # the fallback import limit was in force (grid meter not usable)
    suspect_readings: int = 0  # readings the meter cross-checks marked SUSPECT this cycle


@dataclass
class CsmsReport:
    """What the simulated CSMS saw and did in a ``--with-csms`` run."""

    url: str
    chargers: list[str]
    boots: dict[str, int] = field(default_factory=dict)  # BootNotifications the CSMS got, per charger
    identities: dict[str, str | None] = field(default_factory=dict)  # Basic auth user it was let in with
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)  # CALLs the CSMS got, per action
    charger_id: str = CSMS_CHARGER
    evse_id: int = CSMS_EVSE
    profile: dict[str, Any] | None = None  # the SetChargingProfile it sent (snake_case)
    profile_answer: str | None = None
    profile_at_s: float | None = None
    composite: dict[str, Any] | None = None  # the GetCompositeSchedule answer
    composite_at_s: float | None = None
    evdlm_limit_a: float | None = None  # what the charger held for evdlm when the composite was read
    csms_limit_in_problem: float | None = None  # EvseState.csms_limit then (the upper bound evdlm kept)
    forwarded_up: int = 0  # charger CALLs the relay forwarded live
    answered_locally: int = 0  # charger CALLs evdlm answered (CSMS unreachable)
    csms_calls_to_chargers: int = 0  # CSMS CALLs the relay passed to a charger
    profile_on_chargers: int = 0  # chargers holding the CSMS's profile id at the end
    error: str | None = None

    def composite_periods(self) -> list[tuple[int, float]]:
        """(start s, limit) of the composite read back, 1.6 or 2.0.1 shape; [] if none."""
        answer = self.composite or {}
        schedule = answer.get("charging_schedule") or answer.get("schedule") or {}
        return [
            (int(period["start_period"]), float(period["limit"]))
            for period in schedule.get("charging_schedule_period", [])
        ]

    def composite_unit(self) -> str:
        answer = self.composite or {}
        schedule = answer.get("charging_schedule") or answer.get("schedule") or {}
        return str(schedule.get("charging_rate_unit", "?"))

    def composite_ok(self) -> bool:
        """The composite read back is at most the CSMS's limit throughout, and now at most what
        the charger held for evdlm."""
        periods = self.composite_periods()
        if not periods or self.composite_unit() != "A":
            return False
        if max(limit for _, limit in periods) > CSMS_LIMIT_A:
            return False
        return self.evdlm_limit_a is None or periods[0][1] <= self.evdlm_limit_a


@dataclass
class DemoResult:
    samples: list[Sample] = field(default_factory=list)
    dr_window: tuple[float, float] | None = None
    dr_limit_w: float | None = None
    outage_window: tuple[float, float] | None = None
    cycles: int = 0
    overruns: int = 0
    cycle_durations_s: list[float] = field(default_factory=list)
    cycle_p50_ms: float = 0.0
    cycle_p99_ms: float = 0.0
    plot_path: Path | None = None
    recording_dir: Path | None = None
    csms: CsmsReport | None = None

    # ---------------------------------------------------------------- figures

    def limit_after(self, charger_id: str, since_s: float) -> float | None:
        """The highest limit evdlm gave a charger from ``since_s`` on (None: none given)."""
        limits = [s.limits[charger_id] for s in self.samples if s.t_s >= since_s and charger_id in s.limits]
        return max(limits) if limits else None

    def peak(self) -> tuple[float, float, float]:
        """Peak import (W), when (s from start) and the limit in force then (W)."""
        best = max(self.samples, key=lambda s: s.grid_w)
        return best.grid_w, best.t_s, best.import_limit_w

    def seconds_over_limit(self) -> float:
        """Time the import exceeded the limit in force, outside each change's response allowance."""
        over = 0.0
        changed_at = -math.inf
        previous_limit = None
        for a, b in zip(self.samples, self.samples[1:], strict=False):
            if previous_limit is None or not math.isclose(a.import_limit_w, previous_limit):
                changed_at = a.t_s
            previous_limit = a.import_limit_w
            if a.t_s - changed_at > RESPONSE_ALLOWANCE_S and a.grid_w > a.import_limit_w:
                over += b.t_s - a.t_s
        return over

    def import_limit_changes(self) -> list[tuple[float, float, float, str]]:
        """Every change of the import limit in force: (s from start, from W, to W, cause).

        The cause is what changed with it: ``grid fallback`` (the grid meter became unusable or
        usable again), ``DR`` (the DR import limit changed), else ``other``. Cycles without a
        decision are skipped.
        """
        changes: list[tuple[float, float, float, str]] = []
        previous: Sample | None = None
        for sample in self.samples:
            if math.isnan(sample.import_limit_w):
                continue
            if previous is not None and not math.isclose(sample.import_limit_w, previous.import_limit_w):
                if sample.grid_fallback != previous.grid_fallback:
                    cause = "grid fallback"
                elif not _same_limit(sample.dr_limit_w, previous.dr_limit_w):
                    cause = "DR"
                else:
                    cause = "other"
                changes.append((sample.t_s, previous.import_limit_w, sample.import_limit_w, cause))
            previous = sample
        return changes

    def grid_fallback_cycles(self) -> tuple[int, int]:
        """Cycles on the grid fallback limit: in all, and during the garage-meter outage."""
        fallback = [s for s in self.samples if s.grid_fallback]
        window = self.outage_window
        during = [s for s in fallback if window is not None and window[0] <= s.t_s < window[1]]
        return len(fallback), len(during)

    def energy_kwh(self) -> float:
        return sum(a.ev_w * (b.t_s - a.t_s) for a, b in zip(self.samples, self.samples[1:], strict=False)) / 3.6e6

    def dr_compliance(self) -> tuple[float, float | None]:
        """Share of DR time with import at or under the DR limit (after the allowance), and the
        time from the event's start until import first came under it (s)."""
        if self.dr_window is None or self.dr_limit_w is None:
            return (math.nan, None)
        start, end = self.dr_window
        inside = [s for s in self.samples if start + RESPONSE_ALLOWANCE_S <= s.t_s < end]
        ok = sum(1 for s in inside if s.grid_w <= self.dr_limit_w + 1.0)
        reaction = next(
            (s.t_s - start for s in self.samples if s.t_s >= start and s.grid_w <= self.dr_limit_w + 1.0), None
        )
        return (ok / len(inside) if inside else math.nan, reaction)


def _same_limit(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b))


def _start_of_demo(timezone: str, at: time) -> float:
    zone = ZoneInfo(timezone)
    today = datetime.now(zone).date()
    return datetime.combine(today, at, tzinfo=zone).timestamp()


def _cars(minutes: float) -> list[tuple[float, str, Car]]:
    """(arrival s from start, charger, car): arrivals spread over the first third of the run."""
    spread_s = minutes * 60.0 / 3.0
    plan = [
        ("CP01", Car(phases=3, max_current_a=32, soc_pct=20)),
        ("CP02", Car(phases=3, max_current_a=16, soc_pct=35)),
        ("CP04", Car(phases=3, max_current_a=16, soc_pct=40)),  # priority charger (fleet car)
        ("CP05", Car(phases=1, max_current_a=32, soc_pct=30)),
        ("CP03", Car(phases=3, max_current_a=32, soc_pct=50, capacity_wh=4_000, full_soc_pct=95)),  # fills up early
        ("CP07", Car(phases=3, max_current_a=32, soc_pct=25)),
        ("CP06", Car(phases=1, max_current_a=16, soc_pct=60)),
        ("CP08", Car(phases=3, max_current_a=32, soc_pct=15)),
    ]
    return [(spread_s * index / len(plan), charger, car) for index, (charger, car) in enumerate(plan)]


def _table(site: SimulatedSite, report: CycleReport, sample: Sample, elapsed_s: float) -> Table:
    local = datetime.fromtimestamp(report.now_s, ZoneInfo(site.config.site.timezone))
    title = (
        f"evdlm demo — {site.config.site.id} — {local:%H:%M:%S} (+{elapsed_s / 60:.1f} min) — "
        f"grid {sample.grid_w / 1000:.1f} kW / limit {sample.import_limit_w / 1000:.1f} kW — PV {sample.pv_w / 1000:.1f} kW — "
        f"battery {sample.battery_w / 1000:+.1f} kW"
    )
    dr = report.dr
    if dr is not None and dr.import_limit_w is not None:
        title += f" — DR {dr.import_limit_w / 1000:.1f} kW {dr.mode.value}"
    table = Table(title=title, expand=False)
    for column in ("charger", "mode", "limit", "drawn A (L1/L2/L3)", "reason"):
        table.add_column(column)
    decision = report.decision
    controller = site.gateway.controller
    if decision is None or controller is None:
        return table
    views = {slot.key: decision.built.views[index] for index, slot in enumerate(controller.context.topology.evses)}
    drawn = site.fleet.drawn_current_a()
    for command in decision.plan.commands:
        key = (command.charger_id, command.evse_id)
        current = drawn.get(command.charger_id, (0.0, 0.0, 0.0))
        table.add_row(
            command.charger_id,
            views[key].mode.value,
            f"{command.limit:g} {command.unit}",
            " / ".join(f"{value:4.1f}" for value in current),
            command.reason,
        )
    return table


async def run_demo(options: DemoOptions, console: Console | None = None) -> DemoResult:
    console = console or Console()
    loaded = load_site_config(options.config_path)
    config = loaded.config
    start_s = _start_of_demo(config.site.timezone, options.start_local)
    # The gateway listens while it compiles its kernels (a real site's chargers must not wait), but
    # the demo's scripted minutes would run on without a controller: compile before the clock starts
    # (about 20 s on a fresh install, well under a second from numba's cache).
    with console.status("compiling the numba kernels (first run after install only)"):
        await asyncio.to_thread(compile_kernels)
    clock = ScaledClock(start_s, options.speed)
    duration_s = options.sim_minutes * 60.0
    out_dir = options.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(recording_dir=out_dir / "recordings")
    dr_start_s = duration_s * 0.40
    dr_end_s = duration_s * 0.60
    outage = (duration_s * 0.75, duration_s * 0.80)
    result.outage_window = outage
    program = (
        config.demand_response.programs[0].id if config.demand_response and config.demand_response.programs else None
    )
    dr_limit_kw = 25.0

    async with contextlib.AsyncExitStack() as stack:
        csms: CsmsSimulator | None = None
        if options.with_csms:
            # The operator's CSMS: the demo cars' idTags are its customers; each charger must come
            # in as itself (Basic auth user = charger id), which evdlm's relay does for it.
            password = secrets.token_urlsafe(16)
            csms = await stack.enter_async_context(
                CsmsSimulator(
                    accepted_id_tags={car.id_tag for _, _, car in _cars(options.sim_minutes)},
                    basic_auth={charger.id: password for charger in config.chargers},
                )
            )
            config = _local_controller_config(config, csms.url, out_dir, password)
            result.csms = CsmsReport(url=csms.url, chargers=[charger.id for charger in config.chargers])
        site = await stack.enter_async_context(
            simulated_site(config, clock, workdir=out_dir, config_text=options.config_path.read_text())
        )
        controller = site.gateway.controller
        assert controller is not None
        arrivals = _cars(options.sim_minutes)
        stop = asyncio.Event()
        garage_link = next((d.modbus.link for d in site.config.devices if d.name == "garage_meter" and d.modbus), None)
        garage_unit = next(
            (d.modbus.unit_id for d in site.config.devices if d.name == "garage_meter" and d.modbus), None
        )
        live = (
            Live(console=console, refresh_per_second=4, transient=False)
            if options.live and console.is_terminal
            else None
        )
        state = {
            "dr_sent": False,
            "outage": False,
            "csms_sent": False,
            "last_heartbeat_s": -math.inf,
            "last_print_s": -math.inf,
        }
        csms_exchange: asyncio.Task[None] | None = None

        async def script(elapsed_s: float) -> None:
            nonlocal csms_exchange
            while arrivals and arrivals[0][0] <= elapsed_s:
                _, charger_id, car = arrivals.pop(0)
                site.fleet.plug_in(charger_id, 1, car)
                log.info("car plugged in at %s", charger_id)
            if elapsed_s - state["last_heartbeat_s"] >= 30:
                state["last_heartbeat_s"] = elapsed_s
                await site.heartbeat()
            if program is not None and not state["dr_sent"] and elapsed_s >= dr_start_s - 120:
                state["dr_sent"] = True
                event = dr_event(
                    config.site.id,
                    program,
                    "demo-congestion-1",
                    start_s + dr_start_s,
                    dr_end_s - dr_start_s,
                    dr_limit_kw,
                    clock.now_s(),
                )
                await site.publish_dr_event(event)
                result.dr_window = (dr_start_s, dr_end_s)
                result.dr_limit_w = max(dr_limit_kw, config.demand_response.programs[0].import_floor_kw) * 1000.0  # type: ignore[union-attr]
            csms_due = not state["csms_sent"] and elapsed_s >= duration_s * CSMS_PROFILE_AT
            if csms is not None and result.csms is not None and csms_due:
                state["csms_sent"] = True
                csms_exchange = asyncio.create_task(_csms_exchange(csms, site, result.csms, start_s), name="demo-csms")
            if garage_link is not None and garage_unit is not None:
                server = site.simulators.servers[garage_link]
                in_outage = outage[0] <= elapsed_s < outage[1]
                if in_outage and not state["outage"]:
                    server.faults.inject(Fault("silent"), garage_unit)
                    state["outage"] = True
                elif not in_outage and state["outage"]:
                    server.faults.clear(garage_unit)
                    state["outage"] = False

        def on_cycle(report: CycleReport) -> None:
            elapsed_s = report.now_s - start_s
            decision = report.decision
            snapshot = site.simulation.advance(report.now_s)
            sample = Sample(
                t_s=elapsed_s,
                grid_w=snapshot.grid_w,
                import_limit_w=decision.built.row_limit[controller.context.topology.import_row]
                if decision
                else math.nan,
                dr_limit_w=report.dr.import_limit_w if report.dr is not None else None,
                pv_w=snapshot.pv_w,
                battery_w=snapshot.battery_w,
                ev_w=sum(snapshot.ev_phase_a) * config.grid.nominal_voltage_v,
                limits={c.charger_id: c.limit for c in decision.plan.commands} if decision else {},
                grid_fallback=decision.built.grid_fallback if decision else False,
                suspect_readings=len(report.meters.suspect) if report.meters is not None else 0,
            )
            result.samples.append(sample)
            result.cycle_durations_s.append(report.duration_s)
            if live is not None:
                live.update(_table(site, report, sample, elapsed_s))
            elif elapsed_s - state["last_print_s"] >= 300:
                state["last_print_s"] = elapsed_s
                console.print(progress_line(sample, report.evse_modes), soft_wrap=True, highlight=False, markup=False)
            if elapsed_s >= duration_s:
                stop.set()

        async def drive() -> None:
            while not stop.is_set():
                await script(clock.now_s() - start_s)
                await clock.sleep(1.0)

        if site.gateway.http_api is not None:
            console.print(
                f"operator view: http://127.0.0.1:{site.gateway.http_api.port}/ (live while the demo runs)",
                soft_wrap=True,
                highlight=False,
                markup=False,
            )
        with live if live is not None else contextlib.nullcontext():
            driver = asyncio.create_task(drive(), name="demo-script")
            try:
                await site.gateway.run(stop, on_cycle=on_cycle)
            finally:
                stop.set()
                await driver
                if csms_exchange is not None:
                    await csms_exchange
        result.cycles = controller.cycle_number
        result.overruns = controller.overruns
        if csms is not None and result.csms is not None:
            _collect_csms(csms, site, result.csms)
    durations = sorted(result.cycle_durations_s)
    if durations:
        result.cycle_p50_ms = durations[len(durations) // 2] * 1000
        result.cycle_p99_ms = durations[min(len(durations) - 1, int(len(durations) * 0.99))] * 1000
    result.plot_path = plot_demo(result, out_dir / "demo.png", config.site.id)
    return result


def _local_controller_config(config: SiteConfig, url: str, out_dir: Path, password: str) -> SiteConfig:
    """The demo site as the Local Controller of the CSMS at ``url``; its queue (and the CSMS's
    stored profiles) in ``out_dir/lc-queue``, emptied first: every run starts clean."""
    queue_dir = out_dir / "lc-queue"
    shutil.rmtree(queue_dir, ignore_errors=True)
    password_file = out_dir / "csms-password"
    password_file.unlink(missing_ok=True)
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n", encoding="utf-8")
    upstream = OcppUpstream(url=url, password=SecretRef(file=str(password_file)), queue_dir=str(queue_dir))
    return config.model_copy(
        update={"ocpp": config.ocpp.model_copy(update={"mode": "local_controller", "upstream": upstream})}
    )


def _csms_profile(version: str, now_s: float) -> dict[str, Any]:
    """The operator's TxDefaultProfile of CSMS_LIMIT_A from now on, as the CSMS simulator takes it."""
    start = datetime.fromtimestamp(now_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    periods = [{"start_period": 0, "limit": CSMS_LIMIT_A}]
    if version == "1.6":
        return {
            "charging_profile_id": CSMS_PROFILE_ID,
            "stack_level": 0,
            "charging_profile_purpose": "TxDefaultProfile",
            "charging_profile_kind": "Absolute",
            "charging_schedule": {
                "charging_rate_unit": "A",
                "start_schedule": start,
                "charging_schedule_period": periods,
            },
        }
    return {
        "id": CSMS_PROFILE_ID,
        "stack_level": 0,
        "charging_profile_purpose": "TxDefaultProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": [
            {"id": 1, "charging_rate_unit": "A", "start_schedule": start, "charging_schedule_period": periods}
        ],
    }


async def _csms_exchange(csms: CsmsSimulator, site: SimulatedSite, report: CsmsReport, start_s: float) -> None:
    """The CSMS sets its profile, waits for the site to follow, reads the composite back."""
    clock = site.clock
    ocpp = site.gateway.ocpp
    charger = next(c for c in site.config.chargers if c.id == report.charger_id)
    report.profile = _csms_profile(charger.ocpp_version, clock.now_s())
    report.profile_at_s = clock.now_s() - start_s
    try:
        answer = await csms.set_charging_profile(report.charger_id, report.evse_id, report.profile)
        report.profile_answer = str(answer.get("status"))
        await clock.sleep(RESPONSE_ALLOWANCE_S)
        before = _held_limit_a(site, report)
        report.composite = await csms.get_composite_schedule(report.charger_id, report.evse_id, CSMS_COMPOSITE_S, "A")
        after = _held_limit_a(site, report)
        report.composite_at_s = clock.now_s() - start_s
        # The composite was computed between the two readings; the lease changes at most once there.
        held = [limit for limit in (before, after) if limit is not None]
        report.evdlm_limit_a = max(held) if held else None
        state = ocpp.evse_states().get((report.charger_id, report.evse_id)) if ocpp is not None else None
        report.csms_limit_in_problem = state.csms_limit if state is not None else None
    except (NotConnected, OCPPError, TimeoutError) as error:
        report.error = f"{type(error).__name__}: {error}"
        log.warning("the CSMS's smart-charging exchange failed: %s", report.error)


def _held_limit_a(site: SimulatedSite, report: CsmsReport) -> float | None:
    ocpp = site.gateway.ocpp
    relay = ocpp.relay(report.charger_id) if ocpp is not None else None
    if relay is None or relay.smart is None:
        return None
    return relay.smart.link.held_limit(report.evse_id, site.clock.now_s())[0]


def _collect_csms(csms: CsmsSimulator, site: SimulatedSite, report: CsmsReport) -> None:
    """What the CSMS saw and what the relay counted, before the site closes."""
    report.boots = {charger_id: csms.count(charger_id, "BootNotification") for charger_id in report.chargers}
    report.identities = dict(csms.identities)
    report.transactions = {key: dict(value) for key, value in csms.transactions.items()}
    report.received = dict(Counter(action for calls in csms.received.values() for action, _ in calls))
    totals = site.gateway.ocpp.relay_totals() if site.gateway.ocpp is not None else None
    if totals is not None:
        report.forwarded_up = totals.forwarded_up
        report.answered_locally = totals.answered_locally
        report.csms_calls_to_chargers = totals.csms_calls
    report.profile_on_chargers = sum(
        1 for station in site.fleet.stations.values() if CSMS_PROFILE_ID in station.model.profiles
    )


def plot_demo(result: DemoResult, path: Path, site_id: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = demo_figure(result, site_id)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def demo_figure(result: DemoResult, site_id: str) -> Any:
    """The demo's plot: site power above, each charger's limit below. The x axis spans the samples
    (the site's start-up takes simulated minutes at a high speed), the y axes leave room above the
    highest line, and the legends sit right of the axes, off the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.t_s / 60 for s in result.samples]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, height_ratios=(3, 2), layout="constrained")
    power_kw = {
        "grid import (measured)": ([s.grid_w / 1000 for s in result.samples], {"color": "black"}),
        "import limit in force": (
            [s.import_limit_w / 1000 for s in result.samples],
            {"color": "red", "linestyle": "--"},
        ),
        "EV charging": ([s.ev_w / 1000 for s in result.samples], {"color": "tab:blue"}),
        "PV": ([s.pv_w / 1000 for s in result.samples], {"color": "tab:orange"}),
        "battery (+ discharge)": ([s.battery_w / 1000 for s in result.samples], {"color": "tab:green"}),
    }
    for label, (values, style) in power_kw.items():
        top.plot(minutes, values, label=label, **style)
    if result.dr_window is not None:
        top.axvspan(result.dr_window[0] / 60, result.dr_window[1] / 60, color="red", alpha=0.08, label="DR event")
    if result.outage_window is not None:
        top.axvspan(
            result.outage_window[0] / 60,
            result.outage_window[1] / 60,
            color="grey",
            alpha=0.15,
            label="garage meter silent",
        )
    top.set_ylabel("kW")
    top.set_title(f"evdlm demo — {site_id}")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0.0)
    top.grid(alpha=0.3)
    finite = [v for values, _ in power_kw.values() for v in values if math.isfinite(v)]
    if finite:
        low, high = min(0.0, min(finite)), max(finite)
        top.set_ylim(low - 0.03 * (high - low or 1.0), high + 0.1 * (high - low or 1.0))
    chargers = sorted({key for s in result.samples for key in s.limits})
    highest_a = 0.0
    for charger in chargers:
        limits = [s.limits.get(charger, 0.0) for s in result.samples]
        highest_a = max(highest_a, *limits)
        bottom.step(minutes, limits, where="post", label=charger)
    bottom.set_ylabel("limit (A per phase)")
    bottom.set_xlabel("minutes since start")
    if chargers:
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, ncols=2, borderaxespad=0.0)
    bottom.set_ylim(-0.5, max(highest_a, 1.0) * 1.1)
    bottom.grid(alpha=0.3)
    if minutes:
        top.set_xlim(minutes[0], max(minutes[-1], minutes[0] + 1e-3))  # shared with the bottom axes
    return figure


def progress_line(sample: Sample, modes: dict[str, int]) -> str:
    """One progress line of a run without the live table (stdout not a terminal)."""
    counted = ", ".join(f"{count} {mode}" for mode, count in sorted(modes.items())) or "no EVSEs"
    return (
        f"+{sample.t_s / 60:5.1f} min  grid {sample.grid_w / 1000:5.1f} kW  "
        f"limit {sample.import_limit_w / 1000:5.1f} kW  EV {sample.ev_w / 1000:5.1f} kW  "
        f"PV {sample.pv_w / 1000:4.1f} kW  EVSEs {counted}"
    )


def summary_lines(table: Table) -> list[str]:
    """The summary as ``figure: value`` lines, one per row (for output that is not a terminal)."""
    figures, values = table.columns[0].cells, table.columns[1].cells
    return [f"{figure}: {value}" for figure, value in zip(figures, values, strict=True)]


def summary_table(result: DemoResult) -> Table:
    peak_w, peak_t, peak_limit_w = result.peak()
    compliance, reaction = result.dr_compliance()
    table = Table(title="evdlm demo — summary", show_header=False)
    table.add_column("figure")
    table.add_column("value")
    table.add_row("cycles (overruns)", f"{result.cycles} ({result.overruns})")
    table.add_row("cycle time p50 / p99", f"{result.cycle_p50_ms:.1f} ms / {result.cycle_p99_ms:.1f} ms")
    table.add_row(
        "peak import (limit then)", f"{peak_w / 1000:.1f} kW at +{peak_t / 60:.1f} min ({peak_limit_w / 1000:.1f} kW)"
    )
    table.add_row(
        "time over the limit in force",
        f"{result.seconds_over_limit():.0f} s (outside {RESPONSE_ALLOWANCE_S:g} s response allowances)",
    )
    changes = result.import_limit_changes()
    causes = {cause: sum(1 for change in changes if change[3] == cause) for cause in ("DR", "grid fallback", "other")}
    text = f"{len(changes)}"
    if changes:
        text += f" ({', '.join(f'{n} {cause}' for cause, n in causes.items() if n)})"
    if 0 < len(changes) <= MAX_CHANGES_LISTED:
        text += ": " + ", ".join(
            f"+{t_s / 60:.1f} min {from_w / 1000:.1f} → {to_w / 1000:.1f} kW {cause}"
            for t_s, from_w, to_w, cause in changes
        )
    table.add_row("import-limit changes", text)
    fallback, during_outage = result.grid_fallback_cycles()
    table.add_row(
        "grid meter not usable (fallback limit)",
        f"{fallback} cycles ({during_outage} during the garage-meter outage)",
    )
    table.add_row("SUSPECT meter readings", str(sum(s.suspect_readings for s in result.samples)))
    table.add_row("EV energy delivered", f"{result.energy_kwh():.1f} kWh")
    if result.dr_window is not None:
        table.add_row(
            "DR compliance",
            f"{compliance * 100:.1f} % of the event under {result.dr_limit_w / 1000:.1f} kW"  # type: ignore[operator]
            + (f"; under it {reaction:.0f} s after the start" if reaction is not None else "; never under it"),
        )
    if result.csms is not None:
        _csms_rows(table, result, result.csms)
    if result.plot_path is not None:
        table.add_row("plot", str(result.plot_path))
    if result.recording_dir is not None:
        table.add_row("recording", str(result.recording_dir))
    return table


def _csms_rows(table: Table, result: DemoResult, report: CsmsReport) -> None:
    booted = [charger_id for charger_id in report.chargers if report.boots.get(charger_id, 0) > 0]
    as_themselves = [charger_id for charger_id in booted if report.identities.get(charger_id) == charger_id]
    table.add_row(
        "CSMS (evdlm as Local Controller)",
        f"{report.url}: {len(booted)}/{len(report.chargers)} chargers booted there, "
        f"{len(as_themselves)} with their own identity (Basic auth)",
    )
    started = sum(1 for t in report.transactions.values() if t.get("started"))
    stopped = sum(1 for t in report.transactions.values() if t.get("stopped"))
    tags = sorted({str(t.get("id_tag")) for t in report.transactions.values()})
    table.add_row(
        "transactions seen by the CSMS",
        f"{len(report.transactions)} ({started} started, {stopped} stopped; idTags {', '.join(tags) or '-'})",
    )
    listed = ", ".join(f"{action} {n}" for action, n in sorted(report.received.items(), key=lambda kv: -kv[1]))
    table.add_row(
        "messages relayed to the CSMS",
        f"{sum(report.received.values())} CALLs received ({listed}); relay: {report.forwarded_up} forwarded live, "
        f"{report.answered_locally} answered locally",
    )
    if report.profile is None:
        table.add_row("CSMS profile", "not sent (the run ended before 30 %)")
        return
    table.add_row(
        "CSMS profile",
        f"TxDefaultProfile {CSMS_LIMIT_A:g} A (id {CSMS_PROFILE_ID}) on {report.charger_id}/{report.evse_id} at "
        f"+{(report.profile_at_s or 0.0) / 60:.1f} min: {report.profile_answer or report.error} "
        f"(kept by evdlm as an upper bound: {_amps(report.csms_limit_in_problem)} in the problem)",
    )
    periods = report.composite_periods()
    if report.composite is None or not periods:
        table.add_row("composite read back by the CSMS", report.error or str(report.composite))
    else:
        shape = ", ".join(f"{limit:g} {report.composite_unit()} from {start} s" for start, limit in periods)
        table.add_row(
            "composite read back by the CSMS",
            f"+{(report.composite_at_s or 0.0) / 60:.1f} min, {CSMS_COMPOSITE_S} s: {shape}; evdlm's limit then "
            f"{_amps(report.evdlm_limit_a)}, CSMS {CSMS_LIMIT_A:g} A: "
            + ("within both" if report.composite_ok() else "NOT within both"),
        )
        highest = result.limit_after(report.charger_id, (report.profile_at_s or 0.0) + RESPONSE_ALLOWANCE_S)
        table.add_row(f"{report.charger_id} limits after the CSMS profile", f"at most {_amps(highest)}")
    table.add_row(
        "CSMS profile on the chargers",
        f"never: {report.csms_calls_to_chargers} CSMS calls passed to the chargers (smart charging answered by "
        f"evdlm), profile {CSMS_PROFILE_ID} held by {report.profile_on_chargers} chargers",
    )


def _amps(value: float | None) -> str:
    return "none" if value is None else f"{value:g} A"


def demo_main(options: DemoOptions) -> int:
    console = Console()
    console.print(
        f"[bold]evdlm demo[/bold]: {options.sim_minutes:g} simulated minutes at {options.speed:g}× "
        f"(about {options.sim_minutes * 60 / options.speed:.0f} s); Modbus, OCPP and MQTT on 127.0.0.1"
        + ("; evdlm as the Local Controller of a simulated CSMS" if options.with_csms else ""),
        soft_wrap=True,
    )
    result = asyncio.run(run_demo(options, console))
    print_summary(console, result)
    return 0


def print_summary(console: Console, result: DemoResult) -> None:
    """The summary: a table on a terminal, else one unwrapped ``figure: value`` line per row."""
    table = summary_table(result)
    if console.is_terminal:
        console.print(table)
        return
    console.print(str(table.title), soft_wrap=True, highlight=False, markup=False)
    for line in summary_lines(table):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
