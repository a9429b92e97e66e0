"""The site's status in one line: what a commissioning engineer needs on the first day.

Grid meter usable or not (and why), the fallback import limit when it is in force, chargers
connected k of N, devices whose readings are not usable, the demand-response state. The line
is logged when that state changes (a warning while the site runs degraded), and as a summary
every few minutes while nothing changes, so `evdlm run` at the default level says what it is
doing with nothing connected instead of staying silent.

:func:`site_status` is pure (a cycle's report and the config in, a :class:`SiteStatus` out);
:class:`SiteStatusLog` decides which lines to log, on the report's clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evdlm.config.models import SiteConfig
from evdlm.core.types import Quality

if TYPE_CHECKING:  # the controller's types; this module is used by the gateway beside it
    from evdlm.control import CycleReport

log = logging.getLogger("evdlm.status")

SUMMARY_EVERY_S = 300.0
"""A summary line this often while the status stays the same."""
COUNT_CHANGE_EVERY_S = 30.0
"""Changes of the number of chargers connected alone (chargers coming one by one at start-up)
are logged at most this often; anything else that changes is logged at once."""


@dataclass(frozen=True)
class SiteStatus:
    site: str
    grid_meter: str | None  # None: the site has no grid meter (open loop)
    grid_quality: Quality | None  # the grid meter's reading quality; None without a reading
    grid_reason: str  # why the grid meter is not usable ("" when it is)
    fallback_kw: float | None  # the fallback import limit in force, None while the meter is usable
    chargers_connected: int
    chargers_total: int
    devices_total: int
    not_usable: tuple[tuple[str, str], ...]  # (device, quality) of every reading not usable, sorted
    dr_mode: str | None  # None: no demand response configured
    dr_import_limit_kw: float | None

    @property
    def grid_usable(self) -> bool:
        return self.grid_meter is None or self.grid_quality is Quality.OK

    @property
    def degraded(self) -> bool:
        """Running on fallbacks: worth a warning."""
        return (
            not self.grid_usable
            or self.fallback_kw is not None
            or bool(self.not_usable)
            or (self.chargers_total > 0 and self.chargers_connected == 0)
            or self.dr_mode == "FAILSAFE"
        )

    @property
    def level(self) -> int:
        return logging.WARNING if self.degraded else logging.INFO

    def key(self) -> tuple[Any, ...]:
        """What counts as a change (never the numbers in reasons, such as a reading's age)."""
        return (
            self.grid_quality,
            self.fallback_kw,
            self.chargers_connected,
            self.chargers_total,
            self.not_usable,
            self.dr_mode,
            self.dr_import_limit_kw,
        )

    def urgent_key(self) -> tuple[Any, ...]:
        """:meth:`key` with the charger count reduced to none / some / all."""
        connected, total = self.chargers_connected, self.chargers_total
        chargers = "none" if connected == 0 else ("all" if connected >= total else "some")
        return (*self.key()[:2], chargers, *self.key()[4:])

    def line(self) -> str:
        parts = []
        if self.grid_meter is None:
            parts.append("no grid meter (open loop)")
        elif self.grid_usable:
            parts.append(f"grid meter {self.grid_meter} OK")
        else:
            quality = self.grid_quality.value if self.grid_quality is not None else "no reading"
            why = f": {self.grid_reason}" if self.grid_reason else ""
            parts.append(f"grid meter {self.grid_meter} NOT usable ({quality}{why})")
        if self.fallback_kw is not None:
            parts.append(f"fallback import limit {self.fallback_kw:g} kW in force")
        parts.append(f"{self.chargers_connected} of {self.chargers_total} chargers connected")
        if self.not_usable:
            listed = ", ".join(f"{name} ({quality})" for name, quality in self.not_usable)
            parts.append(f"{len(self.not_usable)} of {self.devices_total} devices not usable: {listed}")
        elif self.devices_total:
            parts.append(f"{self.devices_total} of {self.devices_total} devices usable")
        if self.dr_mode is not None:
            limit = f", import ≤ {self.dr_import_limit_kw:g} kW" if self.dr_import_limit_kw is not None else ""
            parts.append(f"DR {self.dr_mode}{limit}")
        return f"site {self.site}: " + "; ".join(parts)

    def fields(self) -> dict[str, Any]:
        """Structured fields for JSON logs."""
        return {
            "event": "site_status",
            "grid_meter_usable": self.grid_usable,
            "fallback_import_limit_kw": self.fallback_kw,
            "chargers_connected": self.chargers_connected,
            "chargers_total": self.chargers_total,
            "devices_not_usable": [name for name, _ in self.not_usable],
            "dr_mode": self.dr_mode,
        }


def site_status(report: CycleReport, config: SiteConfig) -> SiteStatus | None:
    """The status after one cycle; None when the cycle decided nothing (its deadline passed)."""
    decision = report.decision
    if decision is None:
        return None
    built = decision.built
    readings = report.meters.readings if report.meters is not None else {}
    meter = config.grid.meter
    grid = readings.get(meter) if meter is not None else None
    if meter is not None and grid is None:
        grid_reason = "never read"
    elif grid is not None and not grid.usable:
        grid_reason = grid.reason or ""
    else:
        grid_reason = ""
    fallback_kw = min(config.control.fallback_import_limit_kw, config.grid.import_limit_kw)
    chargers = {charger.id for charger in config.chargers}
    connected = {state.charger_id for state in built.states.sources if state is not None and state.online} & chargers
    devices = {device.name for device in config.devices}
    not_usable = tuple(
        sorted(
            (name, reading.quality.value)
            for name, reading in readings.items()
            if name in devices and not reading.usable
        )
    )
    # A configured device the hub has no reading for at all counts as missing.
    not_usable = tuple(sorted({*not_usable, *((name, Quality.MISSING.value) for name in devices - readings.keys())}))
    dr = report.dr
    return SiteStatus(
        site=config.site.id,
        grid_meter=meter,
        grid_quality=grid.quality if grid is not None else None,
        grid_reason=grid_reason,
        fallback_kw=fallback_kw if built.grid_fallback else None,
        chargers_connected=len(connected),
        chargers_total=len(chargers),
        devices_total=len(devices),
        not_usable=not_usable,
        dr_mode=dr.mode.value if dr is not None else None,
        dr_import_limit_kw=(
            round(dr.import_limit_w / 1000.0, 3) if dr is not None and dr.import_limit_w is not None else None
        ),
    )


class SiteStatusLog:
    """Which status lines to log: one on each change (a warning while degraded), a summary every
    ``summary_every_s`` while nothing changes; changes of the charger count alone at most every
    ``count_every_s``. Time is the cycle's (``CycleReport.now_s``)."""

    def __init__(self, *, summary_every_s: float = SUMMARY_EVERY_S, count_every_s: float = COUNT_CHANGE_EVERY_S):
        self.summary_every_s = summary_every_s
        self.count_every_s = count_every_s
        self._logged: SiteStatus | None = None
        self._logged_s = 0.0
        self._summary_s = 0.0

    def observe(self, report: CycleReport, config: SiteConfig) -> list[tuple[int, str, SiteStatus]]:
        """The lines to log after this cycle: (level, message, status)."""
        status = site_status(report, config)
        if status is None:
            return []
        now_s = report.now_s
        last = self._logged
        if last is None or status.key() != last.key():
            if last is None or status.urgent_key() != last.urgent_key() or now_s - self._logged_s >= self.count_every_s:
                self._logged, self._logged_s, self._summary_s = status, now_s, now_s
                return [(status.level, f"site status: {status.line()}", status)]
            return []
        if now_s - self._summary_s >= self.summary_every_s:
            self._summary_s = now_s
            return [(status.level, f"site summary: {status.line()}", status)]
        return []

    def emit(self, report: CycleReport, config: SiteConfig, logger: logging.Logger = log) -> None:
        """Log what :meth:`observe` returns."""
        for level, message, status in self.observe(report, config):
            logger.log(level, "%s", message, extra={"fields": status.fields()})
