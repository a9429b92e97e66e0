"""The operator's view of the site: each cycle as a JSON document, its recent changes, the last hour.

``OperatorView.observe(report, topology)`` runs on the event loop after every cycle and does
O(EVSEs) array work only: it keeps the report (immutable), appends one history point and diffs
the dispatched limits, modes and binding kinds against the last cycle into the events ring. The
document itself (``state_json``) is built on first request, in a worker thread, at most once per
cycle however many clients ask, and shared by every poller and stream subscriber.

The numbers are the controller's own: limits are the dispatched ones (``Plan``), loads and
headroom are the problem's rows after them (``evdlm.core.binding.row_use``), the binding
constraint comes from :func:`evdlm.core.binding.explain`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import math
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from evdlm.control import CycleReport
from evdlm.core.binding import Binding, RowUse, explain, row_source, row_use
from evdlm.core.problem_builder import MODES, reason_text
from evdlm.core.topology import GRID_NODE, RowKind, Topology
from evdlm.core.types import Quality

HISTORY_S = 3600.0
HISTORY_MAX_POINTS = 720
EVENTS_MAX = 2000
EVENTS_PER_CYCLE_MAX = 50  # a site-wide change (a DR cut) is one summary line beyond this


def iso(now_s: float) -> str:
    return datetime.fromtimestamp(now_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Explained:
    """One cycle's rows after dispatch and each EVSE's binding constraint (topology order)."""

    rows: RowUse
    bindings: list[Binding]
    limits: np.ndarray  # dispatched limit per topology EVSE, own unit (0 where not commanded)
    commanded: np.ndarray  # bool per topology EVSE: told a limit this cycle (reachable)
    import_source: str  # what sets the import limit, in the operator's words


def explain_report(report: CycleReport, topology: Topology) -> Explained | None:
    decision = report.decision
    if decision is None:
        return None
    built, problem, allocation = decision.built, decision.built.problem, decision.result.allocation
    issued = decision.plan.issued.limit
    columns = np.asarray(built.columns, dtype=np.int64)
    column_limit = issued[columns] if columns.size else np.zeros(0)
    rows = row_use(
        np.asarray(built.row_limit, dtype=np.float64),
        np.asarray(built.row_uncontrolled, dtype=np.float64),
        problem.row_headroom,
        problem.coef_indptr,
        problem.coef_row,
        problem.coef_value,
        column_limit,
        problem.battery_coef_row,
        problem.battery_coef_value,
        allocation.battery_w,
    )
    dr = report.dr
    import_limit = built.row_limit[topology.import_row]
    dr_limited = bool(
        dr is not None
        and dr.import_limit_w is not None
        and not built.grid_fallback
        and dr.import_limit_w < topology.rows[topology.import_row].limit - 1.0
        and abs(import_limit - dr.import_limit_w) < 1.0
    )
    window = report.demand_window
    window_target_w = (
        window.target_w if window is not None and any(n.startswith("demand window") for n in built.notes) else None
    )
    bindings = explain(
        topology,
        mode=built.fleet.mode,
        reason=built.fleet.reason,
        states=built.states.values,
        columns=built.columns,
        problem_max=problem.setpoint_max,
        problem_previous=problem.setpoint_previous,
        coef_indptr=problem.coef_indptr,
        coef_row=problem.coef_row,
        coef_value=problem.coef_value,
        allocation=allocation,
        issued_limit=issued,
        demand_caps=built.demand_caps,
        rows=rows,
        grid_fallback=built.grid_fallback,
        dr_events=dr.events if dr is not None else (),
        dr_limited=dr_limited,
        window_target_w=window_target_w,
    )
    commanded = np.zeros(len(issued), dtype=np.bool_)
    commanded[list(decision.plan.reachable)] = True
    import_source = row_source(
        topology,
        topology.import_row,
        grid_fallback=built.grid_fallback,
        dr_events=dr.events if dr is not None else (),
        dr_limited=dr_limited,
        window_target_w=window_target_w,
    ).source
    return Explained(rows, bindings, np.asarray(issued, dtype=np.float64), commanded, import_source)


def _num(value: float | None, digits: int = 1) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def state_document(
    report: CycleReport, topology: Topology, site_id: str, explained: Explained | None
) -> dict[str, Any]:
    """The ``/api/v1/state`` document (docs/operator-view.md)."""
    decision = report.decision
    readings = report.meters.readings if report.meters is not None else {}
    grid_meter = topology.nodes[GRID_NODE].meter if GRID_NODE in topology.nodes else None
    grid_reading = readings.get(grid_meter) if grid_meter else None
    document: dict[str, Any] = {
        "site": site_id,
        "cycle": report.cycle,
        "time": iso(report.now_s),
        "now_s": report.now_s,
        "cycle_ms": round(report.duration_s * 1000.0, 2),
        "solver": decision.result.solver.value if decision is not None else None,
        "status": decision.result.status.value if decision is not None else "missed_deadline",
        "notes": list(decision.built.notes) if decision is not None else [],
    }
    dr = report.dr
    document["dr"] = {
        "active": bool(dr is not None and dr.events),
        "mode": dr.mode.value if dr is not None else None,
        "event_ids": list(dr.events) if dr is not None else [],
        "import_limit_w": _num(dr.import_limit_w) if dr is not None else None,
        "export_limit_w": _num(dr.export_limit_w) if dr is not None else None,
    }
    window = report.demand_window
    document["demand"] = (
        None
        if window is None
        else {
            "month_peak_w": _num(window.month_peak_w, 0),
            "month_peak_at": iso(window.month_peak_at_s) if window.month_peak_at_s is not None else None,
            "target_w": _num(window.target_w, 0),
            "window_limit_w": _num(window.limit_w, 0),
            "window_energy_wh": _num(window.window_energy_wh, 1),
            "window_end": iso(window.window_end_s),
            "raised_because": window.raised_because,
            "charge_estimate": _num(window.charge_estimate, 2),
        }
    )
    cost, prices = report.cost, report.price_per_kwh
    document["cost"] = (
        None
        if cost is None
        else {
            "month": cost.month,
            "import_kwh": _num(cost.import_kwh, 3),
            "export_kwh": _num(cost.export_kwh, 3),
            "import_cost": _num(cost.import_cost, 4),
            "export_credit": _num(cost.export_credit, 4),
            "net_cost": _num(cost.net_cost, 4),
            "ev_kwh": _num(cost.ev_kwh, 3),
            "ev_cost": _num(cost.ev_cost, 4),
            "cost_per_kwh_delivered": _num(cost.cost_per_kwh_delivered, 5),
            "unaccounted_s": _num(cost.unaccounted_s, 1),
            "import_price_per_kwh": _num(prices[0], 5) if prices is not None else None,
            "export_price_per_kwh": _num(prices[1], 5) if prices is not None else None,
        }
    )
    stale = set(decision.built.stale_devices) if decision is not None else set()
    document["devices"] = [
        {
            "name": name,
            "quality": reading.quality.value,
            "stale": name in stale,
            "detail": reading.reason or "",
            "power_w": _num(reading.power_w),
        }
        for name, reading in sorted(readings.items())
    ]
    import_w = grid_reading.power_w if grid_reading is not None and grid_reading.quality is Quality.OK else None
    if decision is None or explained is None:
        document.update(grid={"import_w": _num(import_w), "fallback": None}, nodes=[], evses=[])
        return document
    built = decision.built
    rows = explained.rows
    import_row = topology.import_row
    import_binding = explained.import_source
    document["grid"] = {
        "import_w": _num(import_w),
        "import_limit_w": _num(float(rows.limit[import_row])),
        "planned_import_w": _num(float(rows.load[import_row])),
        "limit_source": import_binding,
        "fallback": built.grid_fallback,
    }
    document["nodes"] = _nodes(topology, rows, built.overloaded_nodes)
    document["evses"] = _evses(topology, built, explained, decision.plan.issued.cut_from)
    return document


def _nodes(topology: Topology, rows: RowUse, overloaded: frozenset[str]) -> list[dict[str, Any]]:
    by_node: dict[str, list[int]] = {}
    for index, row in enumerate(topology.rows):
        if row.kind in (RowKind.PHASE_CURRENT, RowKind.NODE_POWER):
            by_node.setdefault(row.node, []).append(index)
    out = []
    for node_id, node in topology.nodes.items():
        phases = []
        power = None
        binding = False
        for index in by_node.get(node_id, []):
            row = topology.rows[index]
            entry = {
                "load": _num(float(rows.load[index])),
                "limit": _num(float(rows.limit[index])),
                "headroom": _num(float(rows.limit[index] - rows.load[index])),
            }
            binding = binding or rows.full(index)
            if row.kind is RowKind.PHASE_CURRENT:
                phases.append({"phase": f"L{row.phase}", **entry})
            else:
                power = {"unit": "W", **entry}
        out.append(
            {
                "name": node_id,
                "parent": node.parent,
                "unit": "A",
                "meter": node.meter,
                "phases": phases,
                "power": power,
                "binding": binding,
                "overloaded": node_id in overloaded,
            }
        )
    return out


def _evses(topology: Topology, built: Any, explained: Explained, cut_from: np.ndarray) -> list[dict[str, Any]]:
    slots = topology.slots
    fleet = built.fleet
    voltage_v = slots.voltage_v
    out = []
    limits = explained.limits
    for index, slot in enumerate(topology.evses):
        mode_code = int(fleet.mode[index])
        limit = float(limits[index])
        phases_used = int(fleet.phases_used[index])
        is_dc = bool(slots.is_dc[index])
        commanded = bool(explained.commanded[index])
        binding = explained.bindings[index]
        measured = fleet.measured_a[index]
        out.append(
            {
                "charger": slot.key[0],
                "evse": slot.key[1],
                "node": slot.node,
                "mode": MODES[mode_code].value,
                "reason": reason_text(int(fleet.reason[index]), float(cut_from[index])),
                "limit_a": None if is_dc or not commanded else _num(limit),
                "limit_w": _num(limit if is_dc else limit * voltage_v * phases_used, 0) if commanded else None,
                "draw_w": _num(float(fleet.measured_power_w[index]), 0),
                "draw_a": [_num(float(value)) for value in measured],
                "binding": {"kind": binding.kind.value, "source": binding.source},
            }
        )
    return out


def _diff(
    report: CycleReport,
    topology: Topology,
    explained: Explained | None,
    readings: dict[str, Any],
    last: dict[str, Any] | None,
) -> tuple[dict[str, Any], list[tuple[float, str, str, str]]]:
    """This cycle's comparable state, and the changes since ``last`` as (now_s, kind, subject, text)."""
    now_s = report.now_s
    events: list[tuple[float, str, str, str]] = []
    devices = {name: reading.quality.value for name, reading in readings.items()}
    dr_events = tuple(report.dr.events) if report.dr is not None else ()
    current: dict[str, Any] = {"devices": devices, "dr": dr_events, "topology": topology}
    if explained is not None and report.decision is not None:
        current["limits"] = explained.limits.copy()
        current["modes"] = np.asarray(report.decision.built.fleet.mode).copy()
        current["kinds"] = [binding.kind for binding in explained.bindings]
    if last is None or last["topology"] is not topology:
        events.append((now_s, "site", "site", f"observing {len(topology.evses)} EVSEs"))
        return current, events
    for name, quality in devices.items():
        before = last["devices"].get(name)
        if before is not None and before != quality:
            reason = readings[name].reason or ""
            events.append((now_s, "device", name, f"{before} → {quality}{': ' + reason if reason else ''}"))
    if dr_events != last["dr"]:
        text = f"DR events in force: {', '.join(dr_events)}" if dr_events else "no DR event in force"
        events.append((now_s, "dr", "site", text))
    if explained is None or "limits" not in last:
        return current, events
    changed = np.abs(current["limits"] - last["limits"]) > 1e-6
    changed |= current["modes"] != last["modes"]
    kinds = current["kinds"]
    indices = sorted(
        set(np.flatnonzero(changed).tolist()) | {i for i, kind in enumerate(kinds) if kind != last["kinds"][i]}
    )
    units = topology.slots.units
    for count, index in enumerate(indices):
        if count == EVENTS_PER_CYCLE_MAX:
            events.append((now_s, "limit", "site", f"and {len(indices) - count} more EVSEs changed"))
            break
        key = topology.evses[index].key
        subject = f"{key[0]}/{key[1]}"
        before, after = float(last["limits"][index]), float(current["limits"][index])
        binding = explained.bindings[index]
        if abs(after - before) > 1e-6:
            events.append((now_s, "limit", subject, f"limit {before:g} → {after:g} {units[index]} ({binding.source})"))
        elif current["modes"][index] != last["modes"][index]:
            was, now = MODES[int(last["modes"][index])].value, MODES[int(current["modes"][index])].value
            events.append((now_s, "mode", subject, f"{was} → {now}"))
        else:
            events.append((now_s, "binding", subject, f"now bound by {binding.source}"))
    return current, events


@dataclass(frozen=True)
class StateDocument:
    """One cycle's document as served: JSON, and gzip for the clients that take it (a tenth of
    the bytes for the event loop to write, 50 clients at 2 Hz being 100 writes a second)."""

    json: bytes
    gzip: bytes

    @staticmethod
    def of(document: dict[str, Any]) -> StateDocument:
        # orjson: a tenth of json's time for the 280 KB of 1000 EVSEs (every number in the
        # document is finite or None already: _num); zlib runs without the GIL.
        raw = orjson.dumps(document)
        return StateDocument(raw, gzip.compress(raw, compresslevel=1, mtime=0))


@dataclass(frozen=True)
class Event:
    seq: int
    now_s: float
    kind: str  # limit, mode, binding, device, dr
    subject: str
    text: str

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "now_s": self.now_s,
            "time": iso(self.now_s),
            "kind": self.kind,
            "subject": self.subject,
            "text": self.text,
        }


class OperatorView:
    """The latest cycle, the events ring and the last hour, for the HTTP routes.

    ``observe`` (on the loop, after each cycle) only hands the report over; a worker task explains
    it in a thread (bindings, rows, the diff against the last one explained) and publishes the
    result on the loop. Under load it skips to the latest report: events then diff the two cycles
    it explained, so no change is lost, only merged.
    """

    def __init__(self, site_id: str, cycle_period_s: float = 1.0) -> None:
        self.site_id = site_id
        self.cycle_period_s = cycle_period_s
        self.report: CycleReport | None = None  # the latest explained
        self.topology: Topology | None = None
        self._explained: Explained | None = None
        self._json: tuple[int, StateDocument] | None = None  # (cycle, document)
        self._building: tuple[int, asyncio.Future[StateDocument]] | None = None
        self.history: deque[tuple[float, float | None, float | None]] = deque()
        self.events: deque[Event] = deque(maxlen=EVENTS_MAX)
        self._seq = 0
        self._last: dict[str, Any] | None = None  # last explained cycle's limits, modes, kinds, devices, dr
        self._pending: tuple[CycleReport, Topology] | None = None
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.changed = asyncio.Condition()

    def observe(self, report: CycleReport, topology: Topology) -> None:
        """Hand a cycle over (O(1); the explaining happens off the loop)."""
        self._pending = (report, topology)
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="evdlm-operator-view")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, None
            if pending is None:
                continue
            report, topology = pending
            explained, current, events = await asyncio.to_thread(self._explain, report, topology, self._last)
            self._last = current
            self.history.append(current["history"])
            while self.history and self.history[0][0] < report.now_s - HISTORY_S:
                self.history.popleft()
            for now_s, kind, subject, text in events:
                self._seq += 1
                self.events.append(Event(self._seq, now_s, kind, subject, text))
            self.report, self.topology, self._explained = report, topology, explained
            async with self.changed:
                self.changed.notify_all()

    @staticmethod
    def _explain(
        report: CycleReport, topology: Topology, last: dict[str, Any] | None
    ) -> tuple[Explained | None, dict[str, Any], list[tuple[float, str, str, str]]]:
        explained = explain_report(report, topology)
        grid_meter = topology.nodes[GRID_NODE].meter if GRID_NODE in topology.nodes else None
        readings = report.meters.readings if report.meters is not None else {}
        grid = readings.get(grid_meter) if grid_meter else None
        import_w = grid.power_w if grid is not None and grid.quality is Quality.OK else None
        limit_w = float(explained.rows.limit[topology.import_row]) if explained is not None else None
        current, events = _diff(report, topology, explained, readings, last)
        current["history"] = (report.now_s, _num(import_w, 0), _num(limit_w, 0))
        return explained, current, events

    # ------------------------------------------------------------------ for the routes

    async def state_json(self) -> StateDocument | None:
        """The latest cycle's document, built once per cycle in a worker thread."""
        report, topology = self.report, self.topology
        if report is None or topology is None:
            return None
        if self._json is not None and self._json[0] == report.cycle:
            return self._json[1]
        if self._building is not None and self._building[0] == report.cycle:
            return await asyncio.shield(self._building[1])
        explained = self._explained
        site_id = self.site_id
        future = asyncio.ensure_future(
            asyncio.to_thread(lambda: StateDocument.of(state_document(report, topology, site_id, explained)))
        )
        self._building = (report.cycle, future)
        try:
            document = await asyncio.shield(future)
        finally:
            if self._building is not None and self._building[1] is future:
                self._building = None
        if self._json is None or self._json[0] < report.cycle:
            self._json = (report.cycle, document)
        return document

    def history_json(self) -> dict[str, Any]:
        points = list(self.history)
        stride = max(1, math.ceil(len(points) / HISTORY_MAX_POINTS))
        picked = points[::stride]
        if points and picked[-1] is not points[-1]:
            picked.append(points[-1])
        return {
            "points": [{"now_s": now_s, "import_w": imported, "limit_w": limit} for now_s, imported, limit in picked]
        }

    def events_json(self, since: int = 0, limit: int = 500) -> dict[str, Any]:
        chosen = [event.as_json() for event in self.events if event.seq > since][-limit:]
        return {"events": chosen, "last_seq": self._seq}

    def readiness(self, now_s: float) -> tuple[bool, str]:
        report = self.report
        if report is None:
            return False, "no control cycle yet (kernels compiling or the controller not started)"
        age_s = now_s - report.now_s
        if age_s > 3 * self.cycle_period_s + 1.0:
            return False, f"last cycle {age_s:.1f} s ago"
        if report.decision is None:
            return False, "the last decision missed its deadline"
        return True, f"cycle {report.cycle}, {age_s:.1f} s ago"
