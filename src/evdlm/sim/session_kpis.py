"""Per-session figures of a closed-loop run: energy delivered, sessions served, stops, waits, limit changes.

One :class:`SessionTracker` is the ``observer`` of :func:`evdlm.sim.closed_loop.simulate`; it
follows every session (by transaction id) cycle by cycle. :func:`session_summary` turns the
requested and delivered energies into the headline figures. The quality benchmark
(``benchmarks/quality_bench.py``) and capacity planning (:mod:`evdlm.sim.planning`) both use them,
so "delivered %" and "served" mean the same in both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from evdlm.sim.closed_loop import CycleView, Session

HOUR_S = 3600.0


class SessionTracker:
    """Per session (in ``sessions`` order): energy delivered, stops, the longest wait, limit
    changes and plugged-in time, from the cycles of a closed-loop run.

    A car *wanted* power during a cycle if it still missed more than ``served_tolerance_kwh`` or
    drew; wanting and not drawing is waiting, and starting to wait after drawing is a stop. A
    raise or a cut is a new limit on the wire above or below the previous one (a lease refresh
    at the same value is no change).
    """

    def __init__(self, sessions: Sequence[Session], served_tolerance_kwh: float) -> None:
        self.sessions = tuple(sessions)
        self.index_of = {session.transaction_id: i for i, session in enumerate(self.sessions)}
        if len(self.index_of) != len(self.sessions):
            raise ValueError("every session needs its own transaction_id")
        count = len(self.sessions)
        self.served_tolerance_kwh = served_tolerance_kwh
        self.requested_kwh = np.array([session.energy_needed_kwh for session in self.sessions], dtype=float)
        self.delivered_kwh = np.zeros(count)
        self.stops = np.zeros(count, dtype=int)
        self.wait_now_s = np.zeros(count)
        self.wait_max_s = np.zeros(count)
        self.previous_draw_a = np.zeros(count)
        self.last_limit_a = np.full(count, np.nan)
        self.raises = np.zeros(count, dtype=int)
        self.cuts = np.zeros(count, dtype=int)
        self.plugged_s = np.zeros(count)

    def __call__(self, view: CycleView) -> None:
        limits = view.decision.plan.limits
        tolerance_wh = self.served_tolerance_kwh * 1000.0
        for key, car in view.cars.items():
            i = self.index_of[car.session.transaction_id]
            self.plugged_s[i] += view.period_s
            told = limits.get(key)
            if told is not None:
                last = self.last_limit_a[i]
                if not math.isnan(last) and told > last + 1e-9:
                    self.raises[i] += 1
                elif not math.isnan(last) and told < last - 1e-9:
                    self.cuts[i] += 1
                self.last_limit_a[i] = told
            self.delivered_kwh[i] = car.delivered_wh / 1000.0
            remaining_wh = car.session.energy_needed_kwh * 1000.0 - car.delivered_wh
            drew = car.draw_a > 0.0
            wanted = remaining_wh > tolerance_wh or drew  # it wanted energy during this cycle
            if wanted and not drew:
                if self.previous_draw_a[i] > 0.0:
                    self.stops[i] += 1
                self.wait_now_s[i] += view.period_s
                self.wait_max_s[i] = max(self.wait_max_s[i], self.wait_now_s[i])
            else:
                self.wait_now_s[i] = 0.0
            self.previous_draw_a[i] = car.draw_a

    def summary(self) -> dict[str, Any]:
        """The headline figures (:func:`session_summary`) plus stops, waits and limit changes."""
        figures = session_summary(self.requested_kwh, self.delivered_kwh, self.served_tolerance_kwh)
        stops = self.stops
        figures.update(
            {
                "stops_per_session": round(float(stops.mean()), 3) if len(stops) else 0.0,
                "max_stops": int(stops.max()) if len(stops) else 0,
                "longest_wait_s": float(self.wait_max_s.max()) if len(self.wait_max_s) else 0.0,
            }
        )
        figures.update(changes_per_hour(self.raises, self.cuts, self.plugged_s))
        return figures


def session_summary(
    requested_kwh: np.ndarray, delivered_kwh: np.ndarray, served_tolerance_kwh: float
) -> dict[str, Any]:
    """Sessions, requested and delivered kWh, delivered % and the % of sessions fully served
    (delivered within ``served_tolerance_kwh`` of the request)."""
    requested = np.asarray(requested_kwh, dtype=float)
    delivered = np.asarray(delivered_kwh, dtype=float)
    served = delivered >= requested - served_tolerance_kwh
    total = float(requested.sum())
    return {
        "sessions": len(requested),
        "requested_kwh": round(total, 1),
        "delivered_kwh": round(float(delivered.sum()), 1),
        "energy_pct": round(100.0 * float(delivered.sum()) / total, 2) if total > 0 else 100.0,
        "sessions_served_pct": round(100.0 * float(served.mean()), 2) if len(served) else 100.0,
    }


def changes_per_hour(raises: np.ndarray, cuts: np.ndarray, plugged_s: np.ndarray) -> dict[str, float]:
    """Limit changes per car per plugged-in hour: all, cuts excepted (a cut always goes out), and
    the worst car's raises per hour (cars plugged in an hour or more)."""
    hours = float(plugged_s.sum()) / HOUR_S
    long_stays = plugged_s >= HOUR_S
    worst = float((raises[long_stays] / (plugged_s[long_stays] / HOUR_S)).max()) if long_stays.any() else 0.0
    return {
        "changes_per_car_hour": round(float((raises + cuts).sum()) / hours, 2) if hours else 0.0,
        "raises_per_car_hour": round(float(raises.sum()) / hours, 2) if hours else 0.0,
        "max_raises_per_car_hour": round(worst, 2),
    }
