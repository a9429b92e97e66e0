"""Limits do not flap by an amp: a small raise waits until the limit has stood a while; cuts never wait."""

from __future__ import annotations

import numpy as np
import pytest
from evdlm_solvers import Allocation

from evdlm.config import SiteConfig
from evdlm.core.decide import DecisionContext
from evdlm.core.dispatch import plan_commands
from evdlm.core.memory import ControlMemory, EvseMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits, build_problem

from .conftest import NOW_S, charging, meter

STEP_A, WAIT_S = 2.0, 60.0


def _told(config: SiteConfig, allocated_a: float, changed_ago_s: float) -> float:
    """What A1 (remembered at 16 A, changed ``changed_ago_s`` ago) is told for an allocation."""
    context = DecisionContext.from_config(config)
    memory = ControlMemory(
        evses={("A1", 1): EvseMemory(setpoint=16.0, transaction_id="tx-A1", changed_at_s=NOW_S - changed_ago_s)}
    )
    readings = {"gm": meter("gm", (20.0, 20.0, 20.0)), "am": meter("am", (16.0, 16.0, 16.0))}
    inputs = BuildInputs(NOW_S, readings, {("A1", 1): charging("A1", (16.0, 16.0, 16.0))}, memory, DemandLimits())
    built = build_problem(context.topology, context.settings, inputs)
    setpoint = np.array(
        [allocated_a if index == context.topology.evse_index[("A1", 1)] else 0.0 for index in built.columns]
    )
    allocation = Allocation(setpoint=setpoint, battery_w=0.0, admitted=setpoint > 0)
    plan = plan_commands(
        context.topology, built, allocation, memory, NOW_S, 10.0, raise_step_a=STEP_A, raise_wait_s=WAIT_S
    )
    return plan.limits[("A1", 1)]


@pytest.mark.parametrize(
    ("allocated_a", "changed_ago_s", "told_a"),
    [
        (17.0, 10.0, 16.0),  # +1 A, 10 s after the last change: held
        (17.9, 10.0, 16.0),  # still below the 2 A step once rounded down to whole amps
        (17.0, 61.0, 17.0),  # +1 A after the limit stood 60 s: sent
        (18.0, 10.0, 18.0),  # +2 A: worth a message at once
        (15.0, 1.0, 15.0),  # a cut always goes out at once
        (0.0, 1.0, 0.0),  # so does a pause
    ],
)
def test_a_small_raise_waits_and_a_cut_never_does(
    config: SiteConfig, allocated_a: float, changed_ago_s: float, told_a: float
) -> None:
    assert _told(config, allocated_a, changed_ago_s) == told_a
