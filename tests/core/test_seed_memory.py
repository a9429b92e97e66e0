"""A restarted controller takes charging cars from where they are, not from 0 A."""

from __future__ import annotations

from evdlm.config import SiteConfig
from evdlm.core.decide import DecisionContext, seed_memory
from evdlm.core.memory import ControlMemory, EvseMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits

from .conftest import NOW_S, charging


def _seeded(config: SiteConfig, state) -> float | None:  # type: ignore[no-untyped-def]
    inputs = BuildInputs(NOW_S, {}, {("A1", 1): state}, ControlMemory(), DemandLimits())
    memory = seed_memory(DecisionContext.from_config(config), inputs).memory
    return memory.evses[("A1", 1)].setpoint if ("A1", 1) in memory.evses else None


def test_a_restart_starts_from_the_offered_current(config: SiteConfig) -> None:
    assert _seeded(config, charging("A1", (20.0, 20.0, 20.0), offered_current_a=24.0)) == 24.0


def test_without_an_offered_current_the_measured_draw_is_the_start(config: SiteConfig) -> None:
    # A third-party charger reporting Current.Import only: a car at 26.4 A starts from 26 A, not 0 A.
    assert _seeded(config, charging("A1", (26.4, 25.9, None))) == 26.0
    assert _seeded(config, charging("A1", None)) is None  # nothing known: from 0 A as before


def test_a_session_resumed_after_the_first_cycle_starts_where_it_is(config: SiteConfig) -> None:
    # The controller restarted; A1's charger reconnected only after the first cycles, so A1 has a
    # memory (setpoint 0, no session). Its resumed session at 26 A starts from 26 A, not from 0 A.
    context = DecisionContext.from_config(config)
    idle = {key: EvseMemory(setpoint=0.0) for key in context.topology.slots.keys}
    resumed = charging("A1", (26.2, 26.0, 25.8), resumed=True)
    inputs = BuildInputs(NOW_S, {}, {("A1", 1): resumed}, ControlMemory(evses=idle), DemandLimits())
    assert seed_memory(context, inputs).memory.evses[("A1", 1)].setpoint == 26.0
    # A session that started under this controller's eyes is admitted as usual.
    started = charging("A1", (6.0, 6.0, 6.0))
    inputs = BuildInputs(NOW_S, {}, {("A1", 1): started}, ControlMemory(evses=idle), DemandLimits())
    assert seed_memory(context, inputs).memory.evses[("A1", 1)].setpoint == 0.0
    # Once seeded, the session's memory is its own: never seeded again.
    seeded = {**idle, ("A1", 1): EvseMemory(setpoint=20.0, transaction_id="tx-A1")}
    inputs = BuildInputs(NOW_S, {}, {("A1", 1): resumed}, ControlMemory(evses=seeded), DemandLimits())
    assert seed_memory(context, inputs).memory.evses[("A1", 1)].setpoint == 20.0
