"""The month's energy and cost, accounted cycle by cycle (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from evdlm.core.demand_window import month_of
from evdlm.core.energy_cost import MAX_HELD_S, CostState, account

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()


def run(samples: list[tuple[float, float | None, float, float, float]], month: str = "2026-12") -> CostState:
    """samples: (t, import W, EV W, import price, export price)."""
    state = CostState()
    for now_s, import_w, ev_w, import_price, export_price in samples:
        state = account(
            state, now_s, month, import_w=import_w, ev_w=ev_w, import_price=import_price, export_price=export_price
        )
    return state


def test_each_interval_is_priced_at_the_figures_that_held_over_it() -> None:
    # An hour importing 10 kW (cars 6 kW) at 0.30, then an hour exporting 2 kW (cars 3 kW on PV) at 0.05.
    samples = [(T0 + s, 10_000.0, 6_000.0, 0.30, 0.05) for s in range(0, 3600, 60)]
    samples += [(T0 + 3600 + s, -2_000.0, 3_000.0, 0.30, 0.05) for s in range(0, 3601, 60)]
    state = run(samples)
    assert state.import_kwh == pytest.approx(10.0)
    assert state.export_kwh == pytest.approx(2.0)
    assert state.import_cost == pytest.approx(3.0)
    assert state.export_credit == pytest.approx(0.1)
    assert state.net_cost == pytest.approx(2.9)
    assert state.ev_kwh == pytest.approx(9.0)
    # The cars' PV energy is priced at the export revenue forgone.
    assert state.ev_cost == pytest.approx(6.0 * 0.30 + 3.0 * 0.05)
    assert state.cost_per_kwh_delivered == pytest.approx(1.95 / 9.0)
    assert state.unaccounted_s == 0.0


def test_a_long_gap_or_an_unknown_import_is_not_guessed() -> None:
    state = run(
        [
            (T0, 5_000.0, 0.0, 0.2, 0.0),
            (T0 + 60, 5_000.0, 0.0, 0.2, 0.0),
            (T0 + 60 + MAX_HELD_S + 1, None, 0.0, 0.2, 0.0),  # evdlm was down; then no grid meter
            (T0 + 60 + MAX_HELD_S + 61, 5_000.0, 0.0, 0.2, 0.0),
            (T0 + 60 + MAX_HELD_S + 121, 5_000.0, 0.0, 0.2, 0.0),
        ]
    )
    assert state.import_kwh == pytest.approx(5.0 * 120 / 3600)
    assert state.unaccounted_s == pytest.approx(MAX_HELD_S + 1 + 60)


def test_a_new_billing_month_starts_from_zero() -> None:
    state = run([(T0, 5_000.0, 1_000.0, 0.2, 0.0), (T0 + 60, 5_000.0, 1_000.0, 0.2, 0.0)], month="2026-11")
    state = account(state, T0 + 120, "2026-12", import_w=5_000.0, ev_w=0.0, import_price=0.2, export_price=0.0)
    assert state.month == "2026-12" and state.import_kwh == 0.0 and state.ev_kwh == 0.0
    assert state.last_s == T0 + 120


def test_billing_months_follow_the_billing_day_in_local_time() -> None:
    # 2026-12-01 00:30 in Brussels is 2026-11-30 23:30 UTC: already December there.
    at_s = datetime(2026, 11, 30, 23, 30, tzinfo=UTC).timestamp()
    assert month_of(at_s, "Europe/Brussels") == "2026-12"
    assert month_of(at_s, "UTC") == "2026-11"
    assert month_of(datetime(2026, 12, 14, 12, tzinfo=UTC).timestamp(), "UTC", billing_day=15) == "2026-11"
    assert month_of(datetime(2026, 1, 3, 12, tzinfo=UTC).timestamp(), "UTC", billing_day=15) == "2025-12"
