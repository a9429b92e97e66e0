"""Shared builders for the charger tests: small site configs, a started server and fleet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from evdlm.chargers.ocpp.server import OcppCentralSystem
from evdlm.config.models import SiteConfig
from evdlm.core.clock import ScaledClock
from evdlm.sim.fleet import SimFleet
from evdlm.sim.ocpp_client import StationSecurity
from evdlm.sim.station import Misbehaviour

# Simulated seconds per wall second: leases of 20 s last 0.5 s of test time.
SPEED = 40.0


def site_config(
    chargers: list[dict[str, Any]],
    *,
    ocpp: Mapping[str, Any] | None = None,
    control: Mapping[str, Any] | None = None,
) -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "test"},
            "grid": {"import_limit_kw": 100, "phase_current_limit_a": 160, "nominal_voltage_v": 230},
            "circuits": [{"id": "main", "phase_current_limit_a": 160}],
            "chargers": [{"circuit": "main", **charger} for charger in chargers],
            "ocpp": {
                "host": "127.0.0.1",
                "port": 0,
                "failsafe_current_a": 6,
                "call_timeout_s": 2,
                "non_compliance_grace_s": 20,
                "meter_sample_interval_s": 1,
                **(ocpp or {}),
            },
            "control": {
                "fallback_import_limit_kw": 50,
                "lease_duration_s": 400,
                "lease_refresh_s": 150,
                "cycle_period_s": 1,
                "deadband_a": 1,
                **(control or {}),
            },
        }
    )


def clock() -> ScaledClock:
    return ScaledClock(start_s=time.time(), speed=SPEED)


@dataclass
class Rig:
    central: OcppCentralSystem
    fleet: SimFleet
    clock: ScaledClock


@asynccontextmanager
async def rig(
    config: SiteConfig,
    *,
    misbehaviour: Mapping[str, Misbehaviour] | None = None,
    security: Mapping[str, StationSecurity] | None = None,
    scheme: str = "ws",
    wait: bool = True,
) -> AsyncIterator[Rig]:
    sim_clock = clock()
    async with OcppCentralSystem(config, sim_clock) as central:
        url = f"{scheme}://127.0.0.1:{central.port}"
        async with SimFleet(config, sim_clock, url, misbehaviour=misbehaviour, security=security, tick_s=0.5) as fleet:
            if wait:
                await fleet.wait_connected(timeout_s=10)
                await wait_for(lambda: all(central.ready(c.id) for c in config.chargers), "chargers configured")
            yield Rig(central, fleet, sim_clock)


async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Poll ``predicate`` (wall time, bounded)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
