"""The last rung (pure): uncontrollable EVSEs are stopped while their node is over its limit."""

from __future__ import annotations

from evdlm.config import SiteConfig
from evdlm.core.decide import DecisionContext, decide
from evdlm.core.memory import ControlMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits
from evdlm.core.restriction import restrictions

from .conftest import NOW_S, charging, meter


def _decide(config: SiteConfig, circuit_a_amps: float, *, a1_stopped: bool = False):  # type: ignore[no-untyped-def]
    context = DecisionContext.from_config(config)
    a1 = (
        charging("A1", None, charging=False, transaction_id=None)
        if a1_stopped
        else charging("A1", (32.0, 32.0, 32.0), controllable=False)
    )
    states = {
        ("A1", 1): a1,
        ("A2", 1): charging("A2", (16.0, 16.0, 16.0)),
    }
    readings = {
        "gm": meter("gm", (circuit_a_amps, circuit_a_amps, circuit_a_amps)),
        "am": meter("am", (circuit_a_amps, circuit_a_amps, circuit_a_amps)),
    }
    inputs = BuildInputs(NOW_S, readings, states, ControlMemory(), DemandLimits())
    return context.topology, decide(context, inputs)


def test_an_uncontrollable_evse_on_an_overloaded_circuit_is_stopped(config: SiteConfig) -> None:
    # Circuit a (40 A) reads 48 A: A1 refuses profiles and draws 32 A; A2 alone cannot make room.
    topology, decision = _decide(config, 48.0)
    assert "a" in decision.built.overloaded_nodes
    wanted = restrictions(topology, decision.built, False, {})
    assert list(wanted) == [("A1", 1)]
    assert "refuses charging profiles" in wanted[("A1", 1)] and "a is over its limit" in wanted[("A1", 1)]


def test_nothing_is_stopped_while_the_site_is_within_its_limits(config: SiteConfig) -> None:
    topology, decision = _decide(config, 35.0)
    assert not decision.built.overloaded_nodes
    assert restrictions(topology, decision.built, False, {}) == {}


def test_a_stopped_evse_stays_blocked_until_its_rows_have_room_for_its_maximum(config: SiteConfig) -> None:
    # Stopped: A1 has no session and draws nothing; circuit a reads 16 A (A2 alone).
    topology, busy = _decide(config, 16.0, a1_stopped=True)
    # Headroom on a: 40 − 1 − (16 − 16 of A2 measured) = 39 A ≥ 32 A: room for A1 at its maximum.
    assert restrictions(topology, busy.built, False, {("A1", 1): "why"}) == {}
    topology, full = _decide(config, 30.0, a1_stopped=True)
    # 40 − 1 − (30 − 16) = 25 A < 32 A: A1 stays blocked, with its reason.
    assert restrictions(topology, full.built, False, {("A1", 1): "why"}) == {("A1", 1): "why"}
