"""A restarted controller takes charging cars from where they are, not from 0 A."""

from __future__ import annotations

from evdlm.config import SiteConfig
from evdlm.core.decide import DecisionContext, seed_memory
from evdlm.core.memory import ControlMemory
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
