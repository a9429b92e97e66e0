"""Per-link poll scheduling: which unit next, how long it may hold the link, when to retry it.

Pure functions over frozen :class:`UnitSchedule` values; :class:`~evdlm.devices.hub.DeviceHub`
runs one loop per Modbus link with them (a device read in process is a link of its own). The
rules, and why:

* **Rank.** The meters the safety ladder stands on (the grid meter, and the meters of circuits
  with chargers below them) are polled before the others (PV, battery, other meters): when
  the link cannot carry everything in a period, what goes stale should be what matters least.
  Within a rank, units that answer come before units that fail, then the one due first.
* **Backoff.** Every request to a silent unit holds the link for a full timeout. A unit whose
  poll failed is retried after one period, then exponentially less often (jittered, capped at
  :data:`MAX_RETRY_S`); its first answer restores its period. A link that is down is not the
  unit's fault: the transport spaces its own reconnects, and requests fail at once meanwhile.
* **Hold.** Where giving a request up frees the link (Modbus TCP, for the price of a
  reconnect, see :attr:`~evdlm.devices.modbus_transport.ModbusTransport.abandonable`), it may
  keep the link only until another answering unit needs it to stay fresh
  (:func:`hold_until_s`), so one silent unit cannot make its neighbours stale whatever the
  link's timeout.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

from evdlm.config.models import Circuit, SiteConfig
from evdlm.devices.modbus_transport import backoff_delay_s

# Longest wait between two probes of a silent unit: how late a unit that comes back is noticed.
MAX_RETRY_S = 30.0

SAFETY_RANK = 0  # grid meter, meters of circuits with chargers below
OTHER_RANK = 1  # PV, battery, meters of circuits without chargers


class PollOutcome(Enum):
    ANSWERED = "answered"  # the device answered (even with nonsense: INVALID is still an answer)
    FAILED = "failed"  # silent, refusing (exception response) or undecodable: back off
    LINK_DOWN = "link_down"  # the link itself is down: the transport backs off, not the unit


@dataclass(frozen=True)
class UnitSchedule:
    """One polled device's place in its link's schedule (times in the clock's seconds)."""

    name: str
    period_s: float
    max_age_s: float
    rank: int = OTHER_RANK
    next_due_s: float = -math.inf  # due at once
    failures: int = 0  # polls in a row that FAILED (LINK_DOWN neither counts nor resets)
    answered_at_s: float | None = None  # when it last answered
    answering: bool = False  # its last poll was ANSWERED


def safety_critical_devices(config: SiteConfig) -> frozenset[str]:
    """The grid meter and the meter of every circuit with a charger anywhere below it."""
    loaded = {charger.circuit for charger in config.chargers}
    names: set[str] = set()

    def walk(circuits: Sequence[Circuit]) -> bool:
        any_loaded = False
        for circuit in circuits:
            below = walk(circuit.children)  # walk every child: each may name a meter
            below = below or circuit.id in loaded
            if below and circuit.meter is not None:
                names.add(circuit.meter)
            any_loaded = any_loaded or below
        return any_loaded

    walk(config.circuits)
    if config.grid.meter is not None:
        names.add(config.grid.meter)
    return frozenset(names)


def pick_next(units: Sequence[UnitSchedule], now_s: float) -> int | None:
    """Index of the unit to poll now, or None when none is due.

    Among the due units: rank first, then those answering before those failing, then the
    earliest due.
    """
    due = [index for index, unit in enumerate(units) if unit.next_due_s <= now_s]
    if not due:
        return None
    return min(due, key=lambda index: (units[index].rank, not units[index].answering, units[index].next_due_s))


def next_due_s(units: Sequence[UnitSchedule]) -> float:
    """When the next unit falls due (``inf`` without units)."""
    return min((unit.next_due_s for unit in units), default=math.inf)


def hold_until_s(units: Sequence[UnitSchedule], index: int, now_s: float) -> float:
    """Until when the poll of ``units[index]`` starting at ``now_s`` may keep the link.

    Each other unit that answers and that the poll must yield to bounds it: a failing unit's
    probe yields to every answering unit, an answering unit's poll only to those of its rank or
    a higher one. Such a unit needs the link by half the life its reading has left (at least
    half its period, so a poll always gets a fair try), and never before it is due anyway.
    ``inf`` when nothing bounds the poll (its own timeouts do).

    With the demo's numbers (period 1 s, max age 3 s) a neighbour that has just answered lets a
    poll run 1.5 s; at real-time speed the link's timeout (0.5-1 s) ends a silent unit's
    request first, so the bound only bites when requests are slow against the readings' ages.
    """
    unit = units[index]
    bound = math.inf
    for other_index, other in enumerate(units):
        if other_index == index or not other.answering or other.answered_at_s is None:
            continue
        if unit.answering and other.rank > unit.rank:
            continue
        life_left_s = other.answered_at_s + other.max_age_s - now_s
        bound = min(bound, max(other.next_due_s, now_s + max(life_left_s, other.period_s) / 2.0))
    return bound


def retry_delay_s(failures: int, period_s: float, rng: random.Random, max_s: float = MAX_RETRY_S) -> float:
    """Delay before polling a unit again after ``failures`` failed polls in a row.

    One period after the first failure (a single lost answer is no reason to poll less), then
    :func:`~evdlm.devices.modbus_transport.backoff_delay_s` from the period up to ``max_s``
    (at least the period): 1×, 1-2×, 2-4×, ... the period, jittered.
    """
    return max(period_s, backoff_delay_s(failures, period_s, max(max_s, period_s), rng))


def after_poll(
    unit: UnitSchedule, outcome: PollOutcome, started_s: float, finished_s: float, rng: random.Random
) -> UnitSchedule:
    """The unit's schedule after a poll that started and finished at the given times."""
    if outcome is PollOutcome.ANSWERED:
        return replace(
            unit,
            next_due_s=max(started_s + unit.period_s, finished_s),
            failures=0,
            answered_at_s=finished_s,
            answering=True,
        )
    if outcome is PollOutcome.LINK_DOWN:
        return replace(unit, next_due_s=max(started_s + unit.period_s, finished_s), answering=False)
    failures = unit.failures + 1
    return replace(
        unit,
        next_due_s=max(started_s + retry_delay_s(failures, unit.period_s, rng), finished_s),
        failures=failures,
        answering=False,
    )
