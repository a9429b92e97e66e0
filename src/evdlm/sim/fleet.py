"""Many simulated stations in one process, built from a SiteConfig.

    async with SimFleet(config, clock, url=f"ws://127.0.0.1:{port}") as fleet:
        await fleet.wait_connected()
        fleet.plug_in("CP01", 1, Car(phases=3, max_current_a=16))
        fleet.site_phase_current_a()   # what a site meter would see from the chargers

A charger's own L1..L3 map onto site phases through its configured phase rotation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from evdlm.config.models import Charger, SiteConfig
from evdlm.config.secrets import SecretUnavailable, resolve_secret
from evdlm.core.clock import Clock
from evdlm.sim.ev import Car
from evdlm.sim.ocpp_client import SimStation, StationSecurity
from evdlm.sim.station import Misbehaviour


def site_phase_currents(charger: Charger, drawn_a: tuple[float, float, float]) -> tuple[float, float, float]:
    """Charger phases L1..L3 → site phases L1..L3 with the configured rotation."""
    site = [0.0, 0.0, 0.0]
    for charger_phase, site_phase in enumerate(charger.site_phases):
        site[site_phase - 1] += drawn_a[charger_phase]
    return (site[0], site[1], site[2])


class SimFleet:
    """Every charger of a site config as a simulated station (see the module docstring)."""

    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        url: str,
        *,
        base_dir: Path = Path("."),
        misbehaviour: Mapping[str, Misbehaviour] | None = None,
        security: Mapping[str, StationSecurity] | None = None,
        tick_s: float = 1.0,
        boot_on_reconnect: bool = False,
        validate_frames: bool = True,
    ) -> None:
        self.config = config
        self.clock = clock
        self.stations: dict[str, SimStation] = {}
        for charger in config.chargers:
            station_security = (security or {}).get(charger.id)
            if station_security is None and charger.password is not None:
                try:
                    station_security = StationSecurity(password=resolve_secret(charger.password, base_dir))
                except SecretUnavailable:
                    station_security = None
            self.stations[charger.id] = SimStation(
                charger,
                url,
                clock,
                config.grid.nominal_voltage_v,
                security=station_security,
                misbehaviour=(misbehaviour or {}).get(charger.id),
                tick_s=tick_s,
                boot_on_reconnect=boot_on_reconnect,
                validate_frames=validate_frames,
            )
        self._chargers = {charger.id: charger for charger in config.chargers}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -------------------------------------------------------------- lifetime

    async def __aenter__(self) -> SimFleet:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        for charger_id in self.stations:
            self.start_station(charger_id)

    def start_station(self, charger_id: str) -> None:
        """(Re)start one station, e.g. after :meth:`kill_station`."""
        task = self._tasks.get(charger_id)
        if task is not None and not task.done():
            return
        station = self.stations[charger_id]
        station.stopped = False
        self._tasks[charger_id] = asyncio.create_task(station.run(), name=f"sim-station-{charger_id}")

    async def kill_station(self, charger_id: str) -> None:
        """Power cut: the connection drops without a close handshake and nothing runs until restarted."""
        task = self._tasks.pop(charger_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        for station in self.stations.values():
            station.stop()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def wait_connected(self, timeout_s: float = 30.0) -> None:
        """Until every running station is connected (wall seconds)."""
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(self.stations[charger_id].connected.wait() for charger_id in self._tasks))

    # -------------------------------------------------------------- cars and faults

    def station(self, charger_id: str) -> SimStation:
        return self.stations[charger_id]

    def plug_in(self, charger_id: str, evse_id: int, car: Car) -> None:
        self.stations[charger_id].plug_in(evse_id, car)

    def unplug(self, charger_id: str, evse_id: int) -> None:
        self.stations[charger_id].unplug(evse_id)

    def set_misbehaviour(self, charger_id: str, misbehaviour: Misbehaviour) -> None:
        self.stations[charger_id].misbehaviour = misbehaviour

    async def drop_connection(self, charger_id: str, *, reboot: bool = False) -> None:
        await self.stations[charger_id].drop_connection(reboot=reboot)

    # -------------------------------------------------------------- readings

    def drawn_current_a(self) -> dict[str, tuple[float, float, float]]:
        """Per station, current on the charger's own L1..L3."""
        return {charger_id: station.drawn_current_a() for charger_id, station in self.stations.items()}

    def phase_rotation(self, charger_id: str) -> tuple[int, int, int]:
        """Site phase (1..3) wired to the charger's L1, L2, L3."""
        return self._chargers[charger_id].site_phases

    def site_phase_current_a(self, circuit: str | None = None) -> tuple[float, float, float]:
        """Sum over stations (optionally only those on one circuit) mapped onto site phases."""
        total = [0.0, 0.0, 0.0]
        for charger_id, station in self.stations.items():
            charger = self._chargers[charger_id]
            if circuit is not None and charger.circuit != circuit:
                continue
            for index, value in enumerate(site_phase_currents(charger, station.drawn_current_a())):
                total[index] += value
        return (total[0], total[1], total[2])
