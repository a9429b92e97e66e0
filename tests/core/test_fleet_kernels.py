"""The core's numba kernels: jitted equals plain Python on random fleets, and the numbers they
index (columns, modes, reasons) are defined in their own module and match what the Python side writes."""

from __future__ import annotations

import ast
import inspect
import math
import types
from dataclasses import replace
from enum import IntEnum

import numpy as np
import pytest

from evdlm.core import fleet, fleet_kernels, problem_builder
from evdlm.core.fleet_kernels import (
    MEMORY_FIELDS,
    STATE_FIELDS,
    MemoryColumn,
    Mode,
    Reason,
    StateColumn,
    columns_kernel,
    memory_kernel,
    view_kernel,
)
from evdlm.core.memory import EvseMemory
from evdlm.core.types import EvseState

NOW_S = 1_800_000_000.0
VOLTAGE_V = 230.0
SEEDS = range(60)


def _kernels() -> dict[str, object]:
    """Every numba dispatcher defined in fleet_kernels (kernels and their helpers)."""
    return {
        name: value
        for name, value in vars(fleet_kernels).items()
        if hasattr(value, "py_func") and value.py_func.__module__ == fleet_kernels.__name__
    }


def _maybe(rng: np.random.Generator, values: np.ndarray, nan_share: float = 0.3) -> np.ndarray:
    return np.where(rng.random(values.shape) < nan_share, np.nan, values)


def _fleet(rng: np.random.Generator) -> dict[str, object]:
    """A random fleet: static facts, a tree of nodes, states and memory with every branch likely."""
    size = int(rng.integers(0, 14))
    is_dc = rng.random(size) < 0.2
    wired = np.where(is_dc, 3, rng.choice([1, 3], size)).astype(np.int64)
    site_phase = np.array([rng.permutation(3) for _ in range(size)], dtype=np.int64).reshape(size, 3)
    max_setpoint = np.where(is_dc, rng.uniform(10_000, 50_000, size), rng.choice([16.0, 32.0], size))
    min_setpoint = np.where(is_dc, rng.uniform(0, 2_000, size), 6.0)
    n_nodes = int(rng.integers(1, 5))
    parent = [-1] + [int(rng.integers(0, node)) for node in range(1, n_nodes)]
    pair_node: list[int] = []
    pair_evse: list[int] = []
    for e in range(size):
        node = int(rng.integers(0, n_nodes))
        path = []
        while node >= 0:
            path.append(node)
            node = parent[node]
        for node in reversed(path):
            pair_node.append(node)
            pair_evse.append(e)

    state = np.zeros((size, STATE_FIELDS))
    for column in (StateColumn.ONLINE, StateColumn.CONNECTED, StateColumn.CHARGING):
        state[:, column] = rng.random(size) < 0.85
    for column in (StateColumn.CONTROLLABLE, StateColumn.COMPLIANT, StateColumn.PRESENT):
        state[:, column] = rng.random(size) < 0.9
    state[:, StateColumn.SAMPLED_AT] = NOW_S - rng.choice([0.0, 5.0, 15.0, 40.0], size)
    state[:, StateColumn.HAS_PHASE_CURRENT] = rng.random(size) < 0.8
    for column in (StateColumn.I1, StateColumn.I2, StateColumn.I3):
        state[:, column] = _maybe(rng, rng.choice([0.0, 0.2, 1.0, 2.5, 6.0, 16.0, 33.0], size), 0.1)
    state[:, StateColumn.POWER] = _maybe(rng, rng.uniform(-100, 25_000, size))
    state[:, StateColumn.EV_MAX_A] = _maybe(rng, rng.uniform(6, 32, size), 0.6)
    state[:, StateColumn.ENERGY_NEEDED] = _maybe(rng, rng.choice([0.0, 5_000.0, 40_000.0, 90_000.0], size), 0.4)
    state[:, StateColumn.DEPARTURE] = _maybe(rng, NOW_S + rng.uniform(-3_600, 40_000, size), 0.4)

    memory = np.full((size, MEMORY_FIELDS), np.nan)
    memory[:, MemoryColumn.SETPOINT] = np.where(
        rng.random(size) < 0.3,
        0.0,
        np.where(is_dc, rng.uniform(1_000, 40_000, size), rng.choice([6.0, 10.0, 16.0], size)),
    )
    for column in (MemoryColumn.ADMITTED, MemoryColumn.WANTING, MemoryColumn.PAUSED, MemoryColumn.CHANGED):
        memory[:, column] = _maybe(rng, NOW_S - rng.choice([0.0, 5.0, 30.0, 400.0], size), 0.4)
    memory[:, MemoryColumn.CUT_FROM] = _maybe(rng, rng.choice([8.0, 16.0, 32.0], size), 0.5)
    memory[:, MemoryColumn.CUT_AT] = _maybe(rng, NOW_S - rng.choice([0.0, 3.0, 20.0], size), 0.5)
    memory[:, MemoryColumn.PHASES] = _maybe(rng, rng.choice([1.0, 3.0], size), 0.5)
    memory[:, MemoryColumn.DEMAND_CAP] = _maybe(rng, rng.choice([6.0, 9.0, 14.0], size), 0.6)
    return {
        "is_dc": is_dc,
        "wired": wired,
        "site_phase": site_phase,
        "min_setpoint": min_setpoint,
        "max_setpoint": max_setpoint,
        "pair_node": np.array(pair_node, dtype=np.int64),
        "pair_evse": np.array(pair_evse, dtype=np.int64),
        "n_nodes": n_nodes,
        "state": state,
        "memory": memory,
        "same_session": rng.random(size) < 0.7,
        "settle_time_s": float(rng.choice([10.0, 30.0])),
    }


def _view_arguments(f: dict[str, object]) -> tuple[object, ...]:
    return (
        f["is_dc"], f["wired"], f["site_phase"], f["max_setpoint"], f["pair_node"], f["pair_evse"], f["n_nodes"],
        VOLTAGE_V, f["state"], f["memory"], f["same_session"], NOW_S, f["settle_time_s"], 6.0, 1.0, 2.0, 0.5,
    )  # fmt: skip


def _assert_same(jitted: tuple[np.ndarray, ...], plain: tuple[np.ndarray, ...]) -> None:
    assert len(jitted) == len(plain)
    for position, (a, b) in enumerate(zip(jitted, plain, strict=True)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"output {position}")
        assert np.asarray(a).dtype == np.asarray(b).dtype, position


@pytest.mark.parametrize("seed", SEEDS)
def test_view_kernel_equals_its_python_function(seed: int) -> None:
    arguments = _view_arguments(_fleet(np.random.default_rng(seed)))
    _assert_same(view_kernel(*arguments), view_kernel.py_func(*arguments))


def test_the_random_fleets_reach_every_mode_and_reason() -> None:
    modes: set[int] = set()
    reasons: set[int] = set()
    for seed in SEEDS:
        mode, reason = view_kernel(*_view_arguments(_fleet(np.random.default_rng(seed))))[:2]
        modes |= set(mode.tolist())
        reasons |= set(reason.tolist())
    assert modes == set(Mode) and reasons == set(Reason)


@pytest.mark.parametrize("seed", SEEDS)
def test_columns_kernel_equals_its_python_function(seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = _fleet(rng)
    viewed = view_kernel(*_view_arguments(f))
    mode, phases_used, measured = viewed[0], viewed[2], viewed[3]
    columns = (mode == Mode.ACTIVE).nonzero()[0].astype(np.int64)
    arguments = (
        columns, f["is_dc"], f["min_setpoint"], f["max_setpoint"], VOLTAGE_V, f["state"], f["memory"],
        f["same_session"], phases_used, measured, NOW_S, f["settle_time_s"], 60.0, float(rng.choice([4.0, 100.0])),
        1.0, 2.0, 2.0, 0.1, 10.0,
    )  # fmt: skip
    _assert_same(columns_kernel(*arguments), columns_kernel.py_func(*arguments))


@pytest.mark.parametrize("seed", SEEDS)
def test_memory_kernel_equals_its_python_function(seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = _fleet(rng)
    viewed = view_kernel(*_view_arguments(f))
    memory = f["memory"]
    assert isinstance(memory, np.ndarray)
    size = memory.shape[0]
    previous = memory[:, MemoryColumn.SETPOINT]
    target = np.where(rng.random(size) < 0.3, previous, rng.choice([0.0, 6.0, 12.0, 32.0], size))
    arguments = (
        f["is_dc"], VOLTAGE_V, memory, rng.random(size) < 0.2, viewed[0], viewed[2], viewed[3], target,
        _maybe(rng, rng.choice([6.0, 10.0], size), 0.6), NOW_S, f["settle_time_s"], 1.0,
    )  # fmt: skip
    _assert_same(memory_kernel(*arguments), memory_kernel.py_func(*arguments))


@pytest.mark.parametrize("seed", range(20))
def test_scalar_helpers_equal_their_python_functions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kernels = fleet_kernels
    measured = rng.uniform(0, 32, (4, 3))
    for _ in range(50):
        needed = float(rng.choice([np.nan, 0.0, 1_000.0, 30_000.0, 80_000.0]))
        departure = float(rng.choice([np.nan, NOW_S - 60, NOW_S + 600, NOW_S + 7_200, NOW_S + 50_000]))
        max_power = float(rng.choice([0.0, 1_380.0, 11_000.0, 22_000.0]))
        laxity = (needed, departure, max_power, NOW_S, 0.1, 10.0)
        assert kernels._laxity_weight(*laxity) == kernels._laxity_weight.py_func(*laxity)
        began, holds = float(rng.choice([np.nan, 0.0, NOW_S - 30])), bool(rng.random() < 0.5)
        since, since_py = kernels._since(began, holds, NOW_S), kernels._since.py_func(began, holds, NOW_S)
        assert since == since_py or (math.isnan(since) and math.isnan(since_py))
        a, b = float(rng.choice([np.nan, 1.0, 2.0])), float(rng.choice([np.nan, 1.0, 2.0]))
        assert kernels._same(a, b) == kernels._same.py_func(a, b)
        value, dc = float(rng.uniform(0, 40_000)), bool(rng.random() < 0.5)
        assert kernels._per_phase_a(value, dc, VOLTAGE_V) == kernels._per_phase_a.py_func(value, dc, VOLTAGE_V)
        e = int(rng.integers(0, 4))
        assert kernels._max_a(measured, e) == kernels._max_a.py_func(measured, e)


def test_every_kernel_has_a_parity_test() -> None:
    tested = {"view_kernel", "columns_kernel", "memory_kernel", "_laxity_weight", "_since", "_same"}
    tested |= {"_per_phase_a", "_max_a"}
    assert set(_kernels()) == tested


# ------------------------------------------------------------------ the numbers the kernels use


def _module_level_assignments(module: types.ModuleType) -> set[str]:
    tree = ast.parse(inspect.getsource(module))
    names: set[str] = set()
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name):
                    names.add(leaf.id)
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
    return names


def test_every_number_a_kernel_reads_is_defined_in_the_kernels_module() -> None:
    """numba caches a kernel keyed by its own source file: a number it reads from another module
    could change without invalidating the cache, and a stale kernel would run. Every global a
    kernel reads is a module (math, np), another kernel of this file, or a constant or enum
    assigned in this file."""
    own = _module_level_assignments(fleet_kernels)
    checked = 0
    for name, kernel in _kernels().items():
        code = kernel.py_func.__code__  # type: ignore[attr-defined]
        for global_name in code.co_names:
            if global_name not in vars(fleet_kernels):
                continue  # an attribute name (np.zeros, math.isnan, StateColumn.PRESENT's "PRESENT")
            value = vars(fleet_kernels)[global_name]
            if isinstance(value, types.ModuleType):
                assert value in (math, np), (name, global_name)
                continue
            assert global_name in own, f"{name} reads {global_name}, not defined in fleet_kernels"
            if isinstance(value, IntEnum) or (isinstance(value, type) and issubclass(value, IntEnum)):
                enum = value if isinstance(value, type) else type(value)
                assert enum.__module__ == fleet_kernels.__name__, (name, global_name)
            checked += 1
    assert checked > 30  # the kernels do read their columns and modes through this check


def test_the_python_side_imports_the_numbers_from_the_kernels_module() -> None:
    for module in (fleet, problem_builder):
        for name, value in vars(module).items():
            if isinstance(value, IntEnum) and name.startswith(("S_", "M_")):
                assert type(value).__module__ == fleet_kernels.__name__, (module.__name__, name)
    assert fleet.STATE_FIELDS is STATE_FIELDS and fleet.MEMORY_FIELDS is MEMORY_FIELDS
    assert problem_builder.Reason is Reason
    # MODES[code] is the EvseMode of a mode code, by name.
    assert [mode.name for mode in problem_builder.MODES] == [code.name for code in Mode]


STATE_FIELD_OF = {
    StateColumn.ONLINE: ("online", True),
    StateColumn.CONNECTED: ("connected", True),
    StateColumn.CHARGING: ("charging", True),
    StateColumn.CONTROLLABLE: ("controllable", False),
    StateColumn.COMPLIANT: ("compliant", False),
    StateColumn.SAMPLED_AT: ("sampled_at_s", NOW_S - 7.0),
    StateColumn.POWER: ("power_w", 4_321.0),
    StateColumn.EV_MAX_A: ("ev_max_current_a", 13.0),
    StateColumn.ENERGY_NEEDED: ("energy_needed_wh", 12_345.0),
    StateColumn.DEPARTURE: ("departure_at_s", NOW_S + 3_600.0),
    StateColumn.PRIORITY: ("priority", 2),
    StateColumn.PAUSED: ("paused", True),
    StateColumn.PLANNED_W: ("planned_power_w", 3_210.0),
    StateColumn.CSMS_LIMIT: ("csms_limit", 10.0),
}


def test_state_columns_are_where_the_python_side_writes_them() -> None:
    """Each field of an EvseState lands in its StateColumn, and in no other."""
    base = EvseState("CP", 1, online=False, connected=False, charging=False, updated_at_s=NOW_S)
    row = np.array(fleet._state_row(base))
    assert row.shape == (STATE_FIELDS,) and len(fleet._ABSENT_STATE) == STATE_FIELDS
    assert row[StateColumn.PRESENT] == 1.0 and fleet._ABSENT_STATE[StateColumn.PRESENT] == 0.0
    assert row[StateColumn.SAMPLED_AT] == NOW_S  # updated_at_s when the state does not say
    for column, (field, value) in STATE_FIELD_OF.items():
        changed = np.array(fleet._state_row(replace(base, **{field: value})))  # type: ignore[arg-type]
        differs = ~((changed == row) | (np.isnan(changed) & np.isnan(row)))
        assert differs.nonzero()[0].tolist() == [column], field
        assert changed[column] == float(value), field
    currents = np.array(fleet._state_row(replace(base, phase_current_a=(1.0, 2.0, 3.0))))
    assert currents[StateColumn.HAS_PHASE_CURRENT] == 1.0
    assert currents[[StateColumn.I1, StateColumn.I2, StateColumn.I3]].tolist() == [1.0, 2.0, 3.0]
    assert set(STATE_FIELD_OF) | {StateColumn.PRESENT, StateColumn.HAS_PHASE_CURRENT} | {
        StateColumn.I1,
        StateColumn.I2,
        StateColumn.I3,
    } == set(StateColumn)


MEMORY_FIELD_OF = {
    MemoryColumn.SETPOINT: ("setpoint", 16.0),
    MemoryColumn.ADMITTED: ("admitted_since_s", NOW_S - 1.0),
    MemoryColumn.WANTING: ("wanting_since_s", NOW_S - 2.0),
    MemoryColumn.PAUSED: ("paused_at_s", NOW_S - 3.0),
    MemoryColumn.CHANGED: ("changed_at_s", NOW_S - 4.0),
    MemoryColumn.CUT_FROM: ("cut_from", 32.0),
    MemoryColumn.CUT_AT: ("cut_at_s", NOW_S - 5.0),
    MemoryColumn.PHASES: ("phases_used", 1),
    MemoryColumn.DEMAND_CAP: ("demand_cap_a", 9.0),
}


def test_memory_columns_are_where_the_python_side_writes_them() -> None:
    assert set(MEMORY_FIELD_OF) == set(MemoryColumn)
    base = EvseMemory()
    row = np.array(fleet._memory_row(base))
    assert row.shape == (MEMORY_FIELDS,)
    for column, (field, value) in MEMORY_FIELD_OF.items():
        changed = np.array(fleet._memory_row(replace(base, **{field: value})))  # type: ignore[arg-type]
        differs = ~((changed == row) | (np.isnan(changed) & np.isnan(row)))
        assert differs.nonzero()[0].tolist() == [column], field
        assert changed[column] == float(value), field
    full = EvseMemory(**{field: value for field, value in MEMORY_FIELD_OF.values()}, transaction_id="tx")  # type: ignore[arg-type]
    assert fleet.memory_object(fleet._memory_row(full), "tx") == full
