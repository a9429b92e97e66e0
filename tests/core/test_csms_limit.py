"""Local Controller mode: the operator CSMS's limit is an upper bound on its EVSE (EvseState.csms_limit)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from evdlm.chargers.ocpp.csms_profiles import CsmsProfileStore
from evdlm.chargers.ocpp.parse import iso_utc
from evdlm.core.decide import DecisionContext, decide
from evdlm.core.memory import ControlMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits, build_problem
from evdlm.core.topology import Topology
from evdlm.core.types import EvseState
from evdlm.recording import decode_evse, encode_evse

from .conftest import NOW_S, charging, meter


def _inputs(states: list[EvseState], readings: dict) -> BuildInputs:  # type: ignore[type-arg]
    return BuildInputs(
        now_s=NOW_S,
        readings=readings,
        evse_states={(s.charger_id, s.evse_id): s for s in states},
        memory=ControlMemory(),
        demand=DemandLimits(),
    )


ROOMY = {"gm": meter("gm", (0.0, 0.0, 0.0)), "am": meter("am", (0.0, 0.0, 0.0))}


def _limit(topology: Topology, settings, state: EvseState, readings=ROOMY) -> float:  # type: ignore[no-untyped-def]
    decision = decide(DecisionContext(topology, settings, 0.2), _inputs([state], readings))
    (command,) = [c for c in decision.plan.commands if (c.charger_id, c.evse_id) == (state.charger_id, 1)]
    return command.limit


def _highest(topology: Topology, settings, state: EvseState) -> float:  # type: ignore[no-untyped-def]
    built = build_problem(topology, settings, _inputs([state], ROOMY))
    column = built.columns.index(topology.evse_index[(state.charger_id, 1)])
    return float(built.problem.setpoint_max[column])


def test_csms_limit_below_the_site_s_room_caps_the_evse(topology, settings) -> None:  # type: ignore[no-untyped-def]
    car = charging("A1", (0.0, 0.0, 0.0))
    assert _limit(topology, settings, car) > 8.0  # a roomy site gives more
    assert _limit(topology, settings, replace(car, csms_limit=8.0, csms_limit_unit="A")) <= 8.0


def test_csms_tx_profile_of_32_a_on_a_10_a_site_gives_at_most_10_a(topology, settings) -> None:  # type: ignore[no-untyped-def]
    """The issue's target: the CSMS asks 32 A, the fuse allows 10 A: the charger gets ≤ 10 A."""
    store = CsmsProfileStore("1.6")
    answer = store.set_profile(
        1,
        {
            "charging_profile_id": 7,
            "stack_level": 0,
            "charging_profile_purpose": "TxProfile",
            "charging_profile_kind": "Absolute",
            "charging_schedule": {
                "charging_rate_unit": "A",
                "start_schedule": iso_utc(NOW_S - 60),
                "charging_schedule_period": [{"start_period": 0, "limit": 32.0}],
            },
        },
        NOW_S,
        "1",
    )
    assert answer == {"status": "Accepted"}
    csms = store.limit_at(1, NOW_S, 3, 230.0, transaction_id="1")
    assert csms == (32.0, "A")
    car = charging("A1", (0.0, 0.0, 0.0), transaction_id="1", csms_limit=csms[0], csms_limit_unit=csms[1])
    # Circuit a: 40 A fuse, 1 A margin, 29 A of other load measured: 10 A left for the car.
    busy = {"gm": meter("gm", (29.0, 29.0, 29.0)), "am": meter("am", (29.0, 29.0, 29.0))}
    assert 0.0 < _limit(topology, settings, car, busy) <= 10.0


def test_csms_limit_in_watts_is_converted_to_the_column_unit(topology, settings) -> None:  # type: ignore[no-untyped-def]
    three_phase = charging("A1", (10.0, 10.0, 10.0))
    assert _highest(topology, settings, replace(three_phase, csms_limit=6900.0, csms_limit_unit="W")) == pytest.approx(
        10.0
    )
    assert _highest(topology, settings, replace(three_phase, csms_limit=9.0, csms_limit_unit="A")) == 9.0
    # The 1-phase charger: W ÷ (V × 1).
    single = charging("B1", (10.0, None, None))
    assert _highest(topology, settings, replace(single, csms_limit=2300.0, csms_limit_unit="W")) == pytest.approx(10.0)
    # DC columns are W: a limit in A counts V × 3.
    dc = charging("B2", power_w=5000.0)
    assert _highest(topology, settings, replace(dc, csms_limit=4000.0, csms_limit_unit="W")) == 4000.0
    assert _highest(topology, settings, replace(dc, csms_limit=5.0, csms_limit_unit="A")) == pytest.approx(3450.0)
    # A limit above the EVSE's own maximum changes nothing; none changes nothing.
    assert _highest(topology, settings, replace(three_phase, csms_limit=63.0, csms_limit_unit="A")) == _highest(
        topology, settings, three_phase
    )


def test_csms_limit_below_the_minimum_pauses_the_car(topology, settings) -> None:  # type: ignore[no-untyped-def]
    car = charging("A1", (0.0, 0.0, 0.0), csms_limit=0.0, csms_limit_unit="A")
    assert _limit(topology, settings, car) == 0.0
    car = charging("A1", (0.0, 0.0, 0.0), csms_limit=4.0, csms_limit_unit="A")
    assert _limit(topology, settings, car) == 0.0  # 0 or ≥ the 6 A minimum


def test_recording_round_trips_the_csms_limit() -> None:
    state = charging("A1", (1.0, 2.0, 3.0), csms_limit=12.5, csms_limit_unit="W")
    assert decode_evse(encode_evse(state)) == state
    plain = charging("A1")
    assert "csms_limit" not in encode_evse(plain) and decode_evse(encode_evse(plain)) == plain
