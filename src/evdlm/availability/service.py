"""The gateway's availability ledger: fed every decided cycle, saved every few minutes and at stop.

Per cycle (:meth:`AvailabilityService.observe`, on the event loop, O(EVSEs)): each configured
EVSE is classified (:mod:`evdlm.core.availability`) from the states the decision was built from,
the decision itself, the DR import limit in force, the grid meter and the config's exclusion
windows; the seconds since its previous cycle are credited to the class it had then, and to
``evdlm_port_availability_seconds_total``. The uptime gauges are refreshed once a minute.
A cycle whose decision missed its deadline is not observed: the previous class holds (for at
most the ledger's hold, then ``offline`` / ``controller down``).

The ledger is encoded on the event loop (a consistent snapshot) and written by a thread of its
own. Settings other than ``enabled`` and ``state_file`` follow a reload (they are read from the
controller's config every cycle).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from evdlm import strict_json
from evdlm.availability.report import classes_of_cycle, exclusion_windows, max_hold_s, port_rows
from evdlm.availability.store import ledger_json, load_ledger
from evdlm.config.models import AvailabilitySettings, SiteConfig
from evdlm.control import CycleReport
from evdlm.core.availability import Availability, AvailabilityLedger, ExclusionWindow, month_of
from evdlm.core.clock import Clock
from evdlm.core.decide import DecisionContext
from evdlm.core.types import EvseKey
from evdlm.observability import Metrics
from evdlm.state_files import write_atomically

log = logging.getLogger("evdlm.availability")

GAUGE_PERIOD_S = 60.0
RECENT_OUTAGES = 10


class ControllerView(Protocol):
    config: SiteConfig
    context: DecisionContext


class AvailabilityService:
    def __init__(self, config: SiteConfig, clock: Clock, state_dir: Path, metrics: Metrics) -> None:
        settings = config.availability or AvailabilitySettings()
        self.clock = clock
        self.metrics = metrics
        self.path = state_dir / settings.state_file
        hold_s = max_hold_s(config)
        self.ledger = load_ledger(self.path, max_hold_s=hold_s) or AvailabilityLedger(max_hold_s=hold_s)
        self.settings = settings
        self._windows_of: tuple[AvailabilitySettings | None, tuple[ExclusionWindow, ...]] = (None, ())
        self._saved_s = clock.now_s()
        self._gauges_s = float("-inf")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evdlm-availability")
        self._closed = False
        self._counters: dict[tuple[EvseKey, Availability], Any] = {}

    def _windows(self, settings: AvailabilitySettings) -> tuple[ExclusionWindow, ...]:
        if self._windows_of[0] is not settings:
            self._windows_of = (settings, exclusion_windows(settings))
        return self._windows_of[1]

    def observe(self, report: CycleReport, controller: ControllerView) -> None:
        """Classify and credit one cycle (nothing when its decision missed its deadline)."""
        decision = report.decision
        if decision is None or self._closed:
            return
        self.settings = controller.config.availability or self.settings
        self.ledger.max_hold_s = max_hold_s(controller.config)
        readings = report.meters.readings if report.meters is not None else {}
        classes = classes_of_cycle(
            controller.context.topology,
            decision,
            report.now_s,
            report.dr.import_limit_w if report.dr is not None else None,
            readings,
            self._windows(self.settings),
        )
        counters = self._counters
        for key, kind, seconds in self.ledger.observe(report.now_s, classes):
            child = counters.get((key, kind))
            if child is None:  # a labels() lookup per port and cycle costs more than the rest
                child = counters[(key, kind)] = self.metrics.port_availability_seconds.labels(
                    site=self.metrics.site, charger=key[0], evse=str(key[1]), **{"class": kind.value}
                )
            child.inc(seconds)
        if report.now_s - self._gauges_s >= GAUGE_PERIOD_S:
            self._gauges_s = report.now_s
            self._set_gauges(report.now_s)
        if report.now_s - self._saved_s >= self.settings.save_every_s:
            self._saved_s = report.now_s
            self._save_async(report.now_s)

    def _set_gauges(self, now_s: float) -> None:
        gauge, site = self.metrics.port_uptime_ratio, self.metrics.site
        month = month_of(now_s)
        for key in self.ledger.ports:
            month_pct, t12m_pct = self.ledger.uptime(key, month, now_s, self.settings.excluded_classes)
            for window, value in (("month", month_pct), ("t12m", t12m_pct)):
                if value is not None:
                    gauge.labels(site=site, charger=key[0], evse=str(key[1]), window=window).set(value / 100.0)

    def _save_async(self, now_s: float) -> None:
        text = strict_json.dumps(ledger_json(self.ledger, now_s), separators=(",", ":"))
        self._writer.submit(self._write, text)

    def _write(self, text: str) -> None:
        try:
            write_atomically(self.path, text)
        except OSError as exc:
            log.error("availability ledger not saved to %s: %s", self.path, exc)

    def close(self) -> None:
        """evdlm stops: credit up to now, save, and stop the writer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        now_s = self.clock.now_s()
        self.ledger.close(now_s)
        self._save_async(now_s)
        self._writer.shutdown(wait=True)

    # ------------------------------------------------------------ the HTTP API's view

    def document(self) -> dict[str, Any]:
        """``GET /api/v1/availability``: per port, this month's seconds per class, month and t12m
        uptime %, and its latest outages."""
        now_s = self.clock.now_s()
        month = month_of(now_s)
        excluded = tuple(self.settings.excluded_classes)
        ports = []
        for row in port_rows(self.ledger, month, now_s, excluded):
            outages = self.ledger.outages((row["charger"], row["evse"]), now_s)[-RECENT_OUTAGES:]
            ports.append(
                {
                    **row,
                    "last_outages": [
                        {"start_s": o.start_s, "end_s": o.end_s, "class": o.kind.value, "cause": o.cause}
                        for o in outages
                    ],
                }
            )
        return {"month": month, "at_s": now_s, "excluded_classes": list(excluded), "ports": ports}
