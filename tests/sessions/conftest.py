"""A two-car site for the session-input tests: both on a 45 A circuit, so they share it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from evdlm.config import SiteConfig, parse_site_config
from evdlm.control import Controller
from evdlm.core.clock import FakeClock
from evdlm.core.types import ChargingCommand, CommandResult, CommandStatus, EvseState, Quality, Reading
from evdlm.sessions.service import SessionService

SITE = """\
site: {id: s1}
grid: {import_limit_kw: 60, phase_current_limit_a: 100, meter: gm}
circuits: [{id: main, phase_current_limit_a: 45}]
chargers:
  - {id: A1, ocpp_version: "1.6", circuit: main}
  - {id: A2, ocpp_version: "2.0.1", circuit: main, default_dwell_h: 10, default_energy_kwh: 15}
modbus_links: [{name: lan, type: tcp, host: 127.0.0.1}]
devices:
  - {name: gm, role: grid_meter, modbus: {link: lan, profile: sunspec}}
session_profiles:
  - {name: fleet, id_tags: ["FLEET-*", "04aabbcc"], priority: 0, default_dwell_h: 2, default_energy_kwh: 30}
  - {name: visitors, id_tags: ["V-*"], priority: 5}
control: {fallback_import_limit_kw: 20, safety_margin_a: 1, settle_time_s: 10, min_off_time_s: 60,
          ramp_up_a_per_s: 100}
"""
NOW_S = 1_800_000_000.0


def site_config(text: str = SITE) -> SiteConfig:
    return parse_site_config(text).config


def session(charger: str, transaction: str | None = None, **extra: object) -> EvseState:
    values: dict[str, object] = {
        "charger_id": charger,
        "evse_id": 1,
        "online": True,
        "connected": True,
        "charging": True,
        "updated_at_s": NOW_S,
        "transaction_id": transaction or f"tx-{charger}",
        "session_started_at_s": NOW_S - 600.0,
    }
    values.update(extra)
    return EvseState(**values)  # type: ignore[arg-type]


class FakeChargers:
    """The charger side of the controller: states the test sets, every command accepted."""

    def __init__(self, *states: EvseState) -> None:
        self.states = {(s.charger_id, s.evse_id): s for s in states}

    def evse_states(self) -> dict[tuple[str, int], EvseState]:
        return dict(self.states)

    def end(self, charger: str) -> None:
        key = (charger, 1)
        self.states[key] = replace(self.states[key], charging=False, transaction_id=None)

    async def apply(self, commands: Sequence[ChargingCommand]) -> list[CommandResult]:
        return [CommandResult(c, CommandStatus.ACCEPTED, NOW_S) for c in commands]


class FakeMeters:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def snapshot(self, now_s: float) -> dict[str, Reading]:
        a = 5.0
        return {
            "gm": Reading(
                device="gm",
                taken_at_s=self.clock.now_s(),
                quality=Quality.OK,
                power_w=3 * a * 230.0,
                phase_power_w=(a * 230.0, a * 230.0, a * 230.0),
                phase_current_a=(a, a, a),
                phase_voltage_v=(230.0, 230.0, 230.0),
            )
        }


def controller(config: SiteConfig, clock: FakeClock, chargers: FakeChargers, sessions: SessionService) -> Controller:
    return Controller(config, clock, FakeMeters(clock), chargers, sessions=sessions)


def limits(report: object) -> dict[str, float]:
    decision = report.decision  # type: ignore[attr-defined]
    assert decision is not None
    return {c.charger_id: c.limit for c in decision.plan.commands}
