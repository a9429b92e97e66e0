"""The column form of a cycle: caches that change nothing, lazy memory that reads like a dict."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from evdlm.config import parse_site_config
from evdlm.core.decide import Decision, DecisionContext, decide
from evdlm.core.fleet import FleetCache, MemoryMapping, StateColumns
from evdlm.core.fleet_kernels import columns_kernel, memory_kernel, view_kernel, warm_up
from evdlm.core.memory import NO_MEMORY, ControlMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits
from evdlm.recording import CycleInputsRecord, decode_memory, encode_memory, read_recording

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "recordings" / "demo-quick.jsonl.gz"


def _records(count: int) -> list[CycleInputsRecord]:
    return list(itertools.islice(read_recording(SAMPLE), count))


def _inputs(record: CycleInputsRecord, memory: ControlMemory) -> BuildInputs:
    dr = record.dr
    return BuildInputs(
        record.now_s,
        record.readings,
        record.evse_states,
        memory,
        DemandLimits(dr.get("import_limit_w"), dr.get("export_limit_w")),
    )


def _same_decision(a: Decision, b: Decision) -> None:
    assert a.plan.commands == b.plan.commands
    assert a.plan.memory == b.plan.memory
    assert a.built.columns == b.built.columns
    assert a.built.row_uncontrolled == b.built.row_uncontrolled
    for name in ("row_headroom", "setpoint_min", "setpoint_max", "setpoint_previous", "urgency", "coef_value"):
        assert np.array_equal(getattr(a.built.problem, name), getattr(b.built.problem, name)), name
    assert np.array_equal(a.result.allocation.setpoint, b.result.allocation.setpoint)


def test_cached_and_fresh_decisions_are_identical() -> None:
    """The fleet cache and the lazily made memory change no decision, cycle after cycle."""
    records = _records(400)
    config = parse_site_config(str(records[0].header["config_yaml"]), "<recorded>").config  # type: ignore[index]
    cached = DecisionContext.from_config(config)
    memory_cached = memory_plain = decode_memory(records[0].header["memory"])  # type: ignore[index]
    changed_cycles = 0
    for record in records:
        with_cache = decide(cached, _inputs(record, memory_cached))
        # A fresh context each cycle, and the memory as plain objects (as a recording header holds it).
        fresh = decide(DecisionContext.from_config(config), _inputs(record, memory_plain))
        _same_decision(with_cache, fresh)
        changed_cycles += with_cache.plan.memory != memory_cached
        memory_cached = with_cache.plan.memory
        memory_plain = decode_memory(encode_memory(fresh.plan.memory))
    assert isinstance(memory_cached.evses, MemoryMapping)
    assert changed_cycles > 50  # the sample moves: this compared real decisions, not a quiet site


def test_a_busy_cache_falls_back_to_fresh_reads() -> None:
    record = _records(3)[-1]
    config = parse_site_config(str(_records(1)[0].header["config_yaml"]), "<recorded>").config  # type: ignore[index]
    context = DecisionContext.from_config(config)
    memory = ControlMemory()
    expected = decide(DecisionContext.from_config(config), _inputs(record, memory))
    with context.cache.lock:  # an overrun decision still running in its thread
        during = decide(context, _inputs(record, memory))
    _same_decision(expected, during)


def test_memory_mapping_reads_like_a_dict() -> None:
    records = _records(120)
    config = parse_site_config(str(records[0].header["config_yaml"]), "<recorded>").config  # type: ignore[index]
    context = DecisionContext.from_config(config)
    memory = ControlMemory()
    for record in records:
        memory = decide(context, _inputs(record, memory)).plan.memory
    evses = memory.evses
    plain = dict(evses.items())
    assert isinstance(evses, MemoryMapping)
    assert list(evses) == [slot.key for slot in context.topology.evses]
    assert evses.keys() == plain.keys() and len(evses) == len(plain)
    assert ("nobody", 1) not in evses and evses.get(("nobody", 1)) is None
    assert memory.evse(("nobody", 1)) is NO_MEMORY
    assert evses == plain and plain == evses
    assert any(item.setpoint > 0 for item in plain.values())
    # Through a recording header and back: the same memory.
    assert decode_memory(encode_memory(memory)) == memory
    # Objects are made once and then kept.
    key = next(iter(evses))
    assert evses[key] is evses[key]


def test_state_columns_reread_only_changed_states() -> None:
    first, second = _records(60)[-2:]
    config = parse_site_config(str(_records(1)[0].header["config_yaml"]), "<recorded>").config  # type: ignore[index]
    slots = DecisionContext.from_config(config).topology.slots
    cache = FleetCache()
    before = cache.states(slots, first.evse_states)
    assert cache.states(slots, dict(first.evse_states)) is before  # the same objects: nothing to read
    after = cache.states(slots, second.evse_states)
    fresh = StateColumns.read(slots, second.evse_states, None)
    assert np.array_equal(after.values, fresh.values, equal_nan=True)
    assert list(after.transaction_id) == list(fresh.transaction_id)
    # An EVSE whose state changed is read again, and the earlier columns are left as they were.
    key = next(key for key, state in second.evse_states.items() if state.online)
    changed = {**second.evse_states, key: replace(second.evse_states[key], online=False)}
    again = cache.states(slots, changed)
    index = slots.key_index[key]
    assert again.values[index].tolist() != after.values[index].tolist()
    assert np.array_equal(after.values, fresh.values, equal_nan=True)


def test_the_first_cycle_compiles_nothing_after_the_warm_up() -> None:
    """The gateway compiles every kernel before its first cycle; a cycle must call them with the
    same argument types (a read-only or differently typed array would compile them again, for
    seconds on a cold cache, inside a cycle's deadline)."""
    from evdlm_solvers import heuristic

    kernels = [view_kernel, columns_kernel, memory_kernel, heuristic._allocate_kernel]
    assert warm_up() >= 0.0 and heuristic.warm_up() >= 0.0
    before = [list(kernel.signatures) for kernel in kernels]
    records = _records(40)
    config = parse_site_config(str(records[0].header["config_yaml"]), "<recorded>").config  # type: ignore[index]
    context, memory = DecisionContext.from_config(config), ControlMemory()
    for record in records:
        decision = decide(context, _inputs(record, memory))
        memory = decision.plan.memory
    assert decision.built.columns  # cars were charging: every kernel ran
    assert [list(kernel.signatures) for kernel in kernels] == before


@pytest.mark.parametrize("count", [0, 1])
def test_empty_and_tiny_state_maps(count: int) -> None:
    """No EVSE reported yet (the first cycle after a start) decides without error."""
    record = _records(1)[0]
    config = parse_site_config(str(record.header["config_yaml"]), "<recorded>").config  # type: ignore[index]
    context = DecisionContext.from_config(config)
    states = dict(itertools.islice(record.evse_states.items(), count))
    decision = decide(context, replace(_inputs(record, ControlMemory()), evse_states=states))
    # Only EVSEs that are online get a command; the others are offline, with nothing to send.
    assert [(c.charger_id, c.evse_id) for c in decision.plan.commands] == [k for k, s in states.items() if s.online]
    assert decision.built.mode_counts().get("offline", 0) == len(context.topology.evses) - len(decision.plan.commands)


def test_a_site_without_chargers_decides() -> None:
    from evdlm.config import parse_site_config
    from evdlm.core.decide import DecisionContext, decide
    from evdlm.core.memory import ControlMemory
    from evdlm.core.problem_builder import BuildInputs, DemandLimits

    config = parse_site_config(
        "site: {id: empty}\ngrid: {import_limit_kw: 50, phase_current_limit_a: 80}\n"
        "circuits: [{id: main, phase_current_limit_a: 80}]\ncontrol: {fallback_import_limit_kw: 20}\n"
    ).config
    decision = decide(DecisionContext.from_config(config), BuildInputs(0.0, {}, {}, ControlMemory(), DemandLimits()))
    assert decision.plan.commands == ()
