"""The month's energy and what it cost, accounted cycle by cycle (pure: no I/O, no clock).

Each cycle hands in the grid meter's power, the cars' power and the prices in force; the
interval since the previous cycle is accounted at the previous cycle's figures (a reading holds
until the next one, as the recording and the replay's cost figures count it). The cars' energy
is priced at the import price while the site imports and at the export price while it exports
(PV the cars take is export revenue forgone), which gives the cost per kWh delivered. A gap
longer than ``MAX_HELD_S`` (evdlm was down, the grid meter was not usable) is not guessed: its
seconds are counted as unaccounted and shown beside the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

MAX_HELD_S = 300.0  # a figure is held this long at most; longer gaps are unaccounted


@dataclass(frozen=True)
class CostState:
    """Month-to-date energy and money (currency of the site's tariffs), and the last sample."""

    month: str = ""
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    import_cost: float = 0.0
    export_credit: float = 0.0
    ev_kwh: float = 0.0
    ev_cost: float = 0.0
    unaccounted_s: float = 0.0  # time the import was not known (gaps over MAX_HELD_S, no grid meter)
    last_s: float | None = None
    last_import_w: float | None = None
    last_ev_w: float | None = None
    last_import_price: float | None = None
    last_export_price: float | None = None

    @property
    def net_cost(self) -> float:
        return self.import_cost - self.export_credit

    @property
    def cost_per_kwh_delivered(self) -> float | None:
        return self.ev_cost / self.ev_kwh if self.ev_kwh > 0.0 else None

    def as_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def account(
    state: CostState,
    now_s: float,
    month: str,
    *,
    import_w: float | None,
    ev_w: float,
    import_price: float,
    export_price: float,
) -> CostState:
    """``state`` with the interval since its last sample accounted, and this sample kept.

    A new ``month`` starts from zero (the interval across the boundary counts in the old one).
    ``import_w`` None or non-finite: not known this cycle (the interval from here is unaccounted).
    """
    figures = state
    last_s = state.last_s
    if last_s is not None and now_s > last_s:
        interval_s = now_s - last_s
        hours = interval_s / 3600.0
        if interval_s > MAX_HELD_S or not _usable(state.last_import_w):
            figures = replace(figures, unaccounted_s=figures.unaccounted_s + interval_s)
        else:
            assert state.last_import_w is not None and state.last_import_price is not None
            assert state.last_export_price is not None and state.last_ev_w is not None
            import_kwh = max(0.0, state.last_import_w) * hours / 1000.0
            export_kwh = max(0.0, -state.last_import_w) * hours / 1000.0
            ev_kwh = max(0.0, state.last_ev_w) * hours / 1000.0
            ev_price = state.last_import_price if state.last_import_w > 0.0 else state.last_export_price
            figures = replace(
                figures,
                import_kwh=figures.import_kwh + import_kwh,
                export_kwh=figures.export_kwh + export_kwh,
                import_cost=figures.import_cost + import_kwh * state.last_import_price,
                export_credit=figures.export_credit + export_kwh * state.last_export_price,
                ev_kwh=figures.ev_kwh + ev_kwh,
                ev_cost=figures.ev_cost + ev_kwh * ev_price,
            )
    if month != figures.month:
        figures = CostState(month=month)
    return replace(
        figures,
        last_s=now_s,
        last_import_w=import_w if _usable(import_w) else None,
        last_ev_w=ev_w if math.isfinite(ev_w) else 0.0,
        last_import_price=import_price,
        last_export_price=export_price,
    )
