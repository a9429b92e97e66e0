"""Prometheus metrics and structured logging for the gateway (prometheus-client lives here only)."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from evdlm.core.clock import Clock

CYCLE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The controller's metrics, in a registry of their own (tests make as many as they like)."""

    def __init__(self, site_id: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"site": site_id}
        self.cycle_seconds = Histogram(
            "evdlm_cycle_seconds",
            "Duration of a whole control cycle",
            ["site"],
            registry=self.registry,
            buckets=CYCLE_BUCKETS_S,
        ).labels(**labels)
        self.solve_seconds = Histogram(
            "evdlm_solve_seconds", "Solver chain wall time", ["site"], registry=self.registry, buckets=CYCLE_BUCKETS_S
        ).labels(**labels)
        self.cycle_overruns = Counter(
            "evdlm_cycle_overruns", "Cycles that took longer than the period", ["site"], registry=self.registry
        ).labels(**labels)
        self.cycles = Counter("evdlm_cycles", "Control cycles run", ["site"], registry=self.registry).labels(**labels)
        self.solver_used = Counter(
            "evdlm_solver_used",
            "Which stage produced the dispatched allocation",
            ["site", "solver", "status"],
            registry=self.registry,
        )
        self.check_violations = Counter(
            "evdlm_check_violations",
            "Allocations a solver produced that the checker rejected",
            ["site", "solver"],
            registry=self.registry,
        )
        self.headroom = Gauge(
            "evdlm_headroom", "Headroom per constraint row (A or W)", ["site", "row"], registry=self.registry
        )
        self.row_load = Gauge(
            "evdlm_row_uncontrolled",
            "Load the controller does not command, per row (A or W)",
            ["site", "row"],
            registry=self.registry,
        )
        self.stale_devices = Gauge(
            "evdlm_stale_devices", "Devices whose reading is not usable", ["site"], registry=self.registry
        ).labels(**labels)
        self.device_ok = Gauge(
            "evdlm_device_ok", "1 when the device's reading is usable", ["site", "device"], registry=self.registry
        )
        self.meter_suspect = Gauge(
            "evdlm_meter_suspect",
            "1 while the meter's reading is SUSPECT (cross-checks failed or not yet trusted again)",
            ["site", "device"],
            registry=self.registry,
        )
        self.meter_suspect_total = Counter(
            "evdlm_meter_suspect_events",
            "Times a meter was found SUSPECT, by the check that failed (physics, downstream, frozen)",
            ["site", "device", "check"],
            registry=self.registry,
        )
        self.meter_measured_a = Gauge(
            "evdlm_meter_measured_amperes",
            "Current a metered node's meter measures, per site phase",
            ["site", "node", "phase"],
            registry=self.registry,
        )
        self.meter_chargers_a = Gauge(
            "evdlm_meter_chargers_amperes",
            "Current the chargers below a metered node report drawing, per site phase",
            ["site", "node", "phase"],
            registry=self.registry,
        )
        self.grid_fallback = Gauge(
            "evdlm_grid_fallback",
            "1 while the site runs on the fallback import limit",
            ["site"],
            registry=self.registry,
        ).labels(**labels)
        self.commands = Counter(
            "evdlm_commands", "Charging commands by outcome", ["site", "status"], registry=self.registry
        )
        self.session_commands = Counter(
            "evdlm_session_commands",
            "Session commands (departure, energy, priority, pause) by channel and result",
            ["site", "channel", "result"],
            registry=self.registry,
        )
        self.evse_modes = Gauge("evdlm_evses", "EVSEs per mode this cycle", ["site", "mode"], registry=self.registry)
        self.dr_import_limit_w = Gauge(
            "evdlm_dr_import_limit_watts", "DR import limit in force (NaN for none)", ["site"], registry=self.registry
        ).labels(**labels)
        self.dr_failsafe = Gauge(
            "evdlm_dr_failsafe", "1 while DR is in FAILSAFE", ["site"], registry=self.registry
        ).labels(**labels)
        self.grid_import_w = Gauge(
            "evdlm_grid_import_watts", "Measured grid import (NaN when stale)", ["site"], registry=self.registry
        ).labels(**labels)
        # Demand-charge control (evdlm.demand_charge; docs/demand-charge.md).
        self.demand_month_peak_w = Gauge(
            "evdlm_demand_month_peak_watts",
            "The billing month's highest window-average import so far",
            ["site"],
            registry=self.registry,
        ).labels(**labels)
        self.demand_target_w = Gauge(
            "evdlm_demand_target_watts",
            "The window-average import aimed at (month peak, floor or raised)",
            ["site"],
            registry=self.registry,
        ).labels(**labels)
        self.demand_window_limit_w = Gauge(
            "evdlm_demand_window_limit_watts",
            "Import cap now that keeps the window's average at the target",
            ["site"],
            registry=self.registry,
        ).labels(**labels)
        self.demand_charge_estimate = Gauge(
            "evdlm_demand_charge_estimate",
            "The month's demand charge so far (peak kW x rate), in the tariff's currency",
            ["site"],
            registry=self.registry,
        ).labels(**labels)
        # Energy and its cost this billing month (evdlm.energy_cost; docs/prices.md).
        self.month_energy_kwh = Gauge(
            "evdlm_month_energy_kwh",
            "Energy this billing month, kWh: import and export at the grid meter, ev delivered to cars",
            ["site", "flow"],
            registry=self.registry,
        )
        self.month_energy_cost = Gauge(
            "evdlm_month_energy_cost",
            "Money this billing month in the tariff's currency: import cost, export credit, net, ev (the cars' energy)",
            ["site", "part"],
            registry=self.registry,
        )
        self.cost_per_kwh_delivered = Gauge(
            "evdlm_cost_per_kwh_delivered",
            "The cars' energy cost this billing month per kWh delivered, in the tariff's currency",
            ["site"],
            registry=self.registry,
        ).labels(**labels)
        self.price_per_kwh = Gauge(
            "evdlm_price_per_kwh",
            "Price in force now per kWh (direction import or export), in the tariff's currency",
            ["site", "direction"],
            registry=self.registry,
        )
        self.price_feed_messages = Counter(
            "evdlm_price_feed_messages",
            "Price feed messages by outcome (accepted, rejected, too_large, rate_limited, superseded)",
            ["site", "outcome"],
            registry=self.registry,
        )
        self.price_feed_covered_until = Gauge(
            "evdlm_price_feed_covered_until_seconds",
            "End of the price feed's last slot, Unix seconds (0: no feed slots)",
            ["site"],
            registry=self.registry,
        ).labels(**labels)
        self.horizon_plans = Counter(
            "evdlm_horizon_plans", "Horizon plans made, by outcome", ["site", "status"], registry=self.registry
        )
        self.horizon_plan_seconds = Histogram(
            "evdlm_horizon_plan_seconds",
            "Time to make one horizon plan",
            ["site"],
            buckets=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
            registry=self.registry,
        ).labels(**labels)
        # Per-port availability (evdlm.availability; docs/availability.md). A dashboard is built
        # on these two names and their labels: keep them.
        self.port_availability_seconds = Counter(
            "evdlm_port_availability_seconds",
            "Seconds each EVSE spent in each availability class (up, fault, offline, below_floor, dr_curtailed, excluded)",
            ["site", "charger", "evse", "class"],
            registry=self.registry,
        )
        self.port_uptime_ratio = Gauge(
            "evdlm_port_uptime_ratio",
            "NEVI uptime of each EVSE, 0..1: this UTC month (window=month) and the trailing 12 months (window=t12m)",
            ["site", "charger", "evse", "window"],
            registry=self.registry,
        )
        self.site = site_id

    def observe_horizon_plan(self, status: str, seconds: float) -> None:
        self.horizon_plans.labels(site=self.site, status=status).inc()
        self.horizon_plan_seconds.observe(seconds)

    def expose_counters(self, metric: str, documentation: str, source: Callable[[], Any]) -> None:
        """Publish a component's counter dataclass as ``metric{site, what}``, read at scrape time.

        ``source`` returns the dataclass (or None while the component is not running); its integer
        fields are the counts. Nothing is paid per cycle: the component keeps plain integers.
        """
        self.registry.register(_CountersCollector(metric, documentation, self.site, source))

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics; returns the bound port (0 picks one)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)


class _CountersCollector(Collector):
    def __init__(self, metric: str, documentation: str, site: str, source: Callable[[], Any]) -> None:
        self.metric, self.documentation, self.site, self.source = metric, documentation, site, source

    def collect(self) -> Iterator[CounterMetricFamily]:
        counters = self.source()
        family = CounterMetricFamily(self.metric, self.documentation, labels=["site", "what"])
        if counters is not None:
            for item in fields(counters):
                value = getattr(counters, item.name)
                if isinstance(value, int) and not isinstance(value, bool):
                    family.add_metric([self.site, item.name], float(value))
        yield family


class LogThrottle:
    """At most one log line per ``every_s`` (of ``clock``) for each key; the line that ends a
    quiet spell says how many were left out. Keys are a fixed, small set (bounded memory).

    For input a hostile or broken peer can repeat at will (frames, DR messages): a flood stays
    visible without becoming a flood of synchronous writes on the event loop."""

    def __init__(self, logger: logging.Logger, clock: Clock, every_s: float) -> None:
        self._logger = logger
        self._clock = clock
        self._every_s = every_s
        self._next_s: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Log ``msg`` unless ``key`` logged less than ``every_s`` ago; True when it did."""
        now_s = self._clock.now_s()
        if now_s < self._next_s.get(key, -math.inf):
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return False
        self._next_s[key] = now_s + self._every_s
        left_out = self._left_out.pop(key, 0)
        if left_out:
            msg += " (and %d more like it since the last such line)"
            args = (*args, left_out)
        self._logger.warning(msg, *args)
        return True


class RepeatedWarning:
    """A condition that repeats every cycle (a device write failing): one warning when it starts
    or its kind changes, then at most one per ``every_s`` (of ``clock``) while it lasts, saying
    how many repeats it stands for; one info line when it clears."""

    def __init__(self, logger: logging.Logger, clock: Clock, every_s: float) -> None:
        self._logger = logger
        self._clock = clock
        self._every_s = every_s
        self._kind: str | None = None  # of the failure in force, None when all is well
        self._logged_s = -math.inf
        self._repeats = 0  # since the last line
        self._total = 0  # since the condition started

    @property
    def active(self) -> bool:
        return self._kind is not None

    def failed(self, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg`` (a warning) unless the same ``kind`` logged less than ``every_s`` ago."""
        now_s = self._clock.now_s()
        self._total = self._total + 1 if self._kind is not None else 1
        if kind == self._kind and now_s - self._logged_s < self._every_s:
            self._repeats += 1
            return False
        if kind == self._kind and self._repeats:
            msg += " (%d times in the last %.0f s)"
            args = (*args, self._repeats + 1, now_s - self._logged_s)
        self._kind, self._logged_s, self._repeats = kind, now_s, 0
        self._logger.warning(msg, *args)
        return True

    def cleared(self, msg: str, *args: object) -> bool:
        """Log ``msg`` (info) with the number of failures if a failure was in force."""
        if self._kind is None:
            return False
        self._logger.info(msg + " (after %d failures)", *args, self._total)
        self._kind, self._logged_s, self._repeats, self._total = None, -math.inf, 0, 0
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={"fields": {...}}`` adds structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
