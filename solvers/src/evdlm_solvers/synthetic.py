"""Seeded random sites for tests and benchmarks.

A site is a 3-level tree: grid connection -> switchboards -> feeders -> chargers. Every
node has one current row per site phase; the grid connection also has an import power
row and, with PV or a battery, an export row. Chargers mix 3-phase AC, 1-phase AC (on a
known site phase through the charger's phase rotation, or all three while unknown) and
DC. Limits are drawn against the chargers' maxima so some rows are tight.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from evdlm_solvers.problem import (
    UNIT_CURRENT_A,
    UNIT_POWER_W,
    Allocation,
    FloatArray,
    IntArray,
    Problem,
)

PHASE_VOLTAGE_V = 230.0
"""Nominal phase-to-neutral voltage used for AC power and DC per-phase current, V."""


@dataclass(frozen=True)
class SiteShape:
    """How random sites are drawn.

    Parameters
    ----------
    tightness : float
        0 gives limits near the sum of the chargers' maxima, 1 gives limits that admit only
        part of the cars at their minimum.
    overloaded_row_probability : float
        Probability that a feeder phase row starts with negative headroom.
    battery_probability : float
        Probability that the site has a battery.
    dc_fraction, single_phase_fraction : float
        Shares of DC chargers and of 1-phase AC cars; the rest are 3-phase AC.
    phase_known_fraction : float
        Share of 1-phase cars whose site phase the builder has learnt; the others load all
        three phase rows (worst case).
    rotation_period_s, min_on_time_s : float
        Copied into the problem.
    """

    tightness: float = 0.5
    overloaded_row_probability: float = 0.0
    battery_probability: float = 0.3
    dc_fraction: float = 0.1
    single_phase_fraction: float = 0.3
    phase_known_fraction: float = 0.7
    rotation_period_s: float = 900.0
    min_on_time_s: float = 300.0


def random_site(n_evse: int, seed: int | np.random.Generator, shape: SiteShape | None = None) -> Problem:
    """Draw a random site's problem for one cycle.

    Parameters
    ----------
    n_evse : int
        Number of EVSE columns (>= 1).
    seed : int or numpy.random.Generator
        Seed for reproducible sites.
    shape : SiteShape, optional
        Distribution parameters; defaults to ``SiteShape()``.

    Returns
    -------
    Problem
        A problem with ``3 * (1 + n_switchboards + n_feeders)`` current rows, a grid import
        power row and (with PV or battery) an export power row.
    """
    shape = shape or SiteShape()
    rng = np.random.default_rng(seed)

    # Tree: chargers -> feeders (2..16 chargers) -> switchboards (1..8 feeders) -> grid.
    feeder_of = _group(rng, n_evse, 2, 16)
    n_feeders = int(feeder_of.max()) + 1
    board_of_feeder = _group(rng, n_feeders, 1, 8)
    n_boards = int(board_of_feeder.max()) + 1
    grid_node = 0
    board_node = 1 + np.arange(n_boards)
    feeder_node = 1 + n_boards + np.arange(n_feeders)
    n_nodes = 1 + n_boards + n_feeders
    import_row = 3 * n_nodes
    has_battery = bool(rng.random() < shape.battery_probability)
    has_pv = bool(rng.random() < 0.5)
    has_export_row = has_battery or has_pv
    export_row = import_row + 1
    n_rows = import_row + 1 + int(has_export_row)

    kind = rng.choice(
        3,
        size=n_evse,
        p=[
            1.0 - shape.dc_fraction - shape.single_phase_fraction,
            shape.single_phase_fraction,
            shape.dc_fraction,
        ],
    )
    three_phase_ac, single_phase_ac, dc = kind == 0, kind == 1, kind == 2
    phase_count = np.where(single_phase_ac, 1, 3)
    evse_unit = np.where(dc, UNIT_POWER_W, UNIT_CURRENT_A)
    power_per_unit_w = np.where(dc, 1.0, PHASE_VOLTAGE_V * phase_count)
    setpoint_min = np.where(dc, np.where(rng.random(n_evse) < 0.5, 0.0, 2000.0), 6.0)
    setpoint_max = np.where(
        dc,
        rng.choice([50_000.0, 150_000.0], size=n_evse),
        np.where(three_phase_ac, rng.choice([16.0, 32.0], size=n_evse), 32.0),
    )
    rotation = rng.integers(0, 3, size=n_evse)
    phase_known = rng.random(n_evse) < shape.phase_known_fraction

    # Coefficients: per phase row at feeder, board and grid; then the W rows.
    indptr = np.zeros(n_evse + 1, dtype=np.int64)
    entry_rows: list[list[int]] = []
    entry_values: list[list[float]] = []
    max_phase_current_a = np.zeros((n_nodes, 3))
    for j in range(n_evse):
        nodes = (feeder_node[feeder_of[j]], board_node[board_of_feeder[feeder_of[j]]], grid_node)
        if dc[j]:
            phases, per_phase = [0, 1, 2], 1.0 / (3.0 * PHASE_VOLTAGE_V)
        elif single_phase_ac[j] and phase_known[j]:
            phases, per_phase = [int(rotation[j])], 1.0
        else:
            phases, per_phase = [0, 1, 2], 1.0
        rows_j = [3 * node + phase for node in nodes for phase in phases]
        values_j = [per_phase] * len(rows_j)
        for node in nodes:
            for phase in phases:
                max_phase_current_a[node, phase] += per_phase * setpoint_max[j]
        rows_j.append(import_row)
        values_j.append(power_per_unit_w[j])
        if has_export_row:
            rows_j.append(export_row)
            values_j.append(-power_per_unit_w[j])
        entry_rows.append(rows_j)
        entry_values.append(values_j)
        indptr[j + 1] = indptr[j] + len(rows_j)
    coef_row = np.fromiter((r for rows_j in entry_rows for r in rows_j), dtype=np.int64)
    coef_value = np.fromiter((v for values_j in entry_values for v in values_j), np.float64)

    # Limits below the sum of maxima by a random factor; the fuse sizes are what a real
    # installer would pick (rounded up to a standard rating).
    ratings_a = np.array(
        [
            16.0,
            20.0,
            25.0,
            32.0,
            40.0,
            50.0,
            63.0,
            80.0,
            100.0,
            125.0,
            160.0,
            200.0,
            250.0,
            315.0,
            400.0,
            630.0,
            800.0,
            1000.0,
            1250.0,
            1600.0,
            2000.0,
            2500.0,
            3200.0,
            4000.0,
            5000.0,
            6300.0,
        ]
    )
    node_max_a = max_phase_current_a.max(axis=1)
    factor = rng.uniform(1.0 - 0.8 * shape.tightness, 1.0 - 0.4 * shape.tightness, n_nodes)
    wanted_a = np.maximum(node_max_a * factor, 16.0)
    limit_a = ratings_a[np.minimum(np.searchsorted(ratings_a, wanted_a), ratings_a.size - 1)]
    limit_a = np.minimum(limit_a, np.maximum(wanted_a, 16.0) * 1.25)
    base_a = limit_a[:, None] * rng.uniform(0.0, 0.25, (n_nodes, 3))
    headroom_a = (limit_a[:, None] - base_a).ravel()
    if shape.overloaded_row_probability > 0.0:
        feeder_rows = (3 * feeder_node[:, None] + np.arange(3)).ravel()
        overloaded = feeder_rows[rng.random(feeder_rows.size) < shape.overloaded_row_probability]
        headroom_a[overloaded] = -rng.uniform(0.5, 10.0, overloaded.size)

    max_power_w = float(power_per_unit_w @ setpoint_max)
    pv_w = rng.uniform(0.0, 0.3) * max_power_w if has_pv else 0.0
    import_headroom_w = max_power_w * rng.uniform(1.0 - 0.9 * shape.tightness, 1.0 - 0.3 * shape.tightness) + pv_w
    row_headroom = np.concatenate([headroom_a, [import_headroom_w]])
    if has_export_row:
        # Export limit minus today's surplus; 0 export limit sites need the EVs or battery.
        export_headroom_w = rng.uniform(0.0, 0.5) * max_power_w
        row_headroom = np.concatenate([row_headroom, [export_headroom_w]])
    row_unit = np.concatenate([np.full(3 * n_nodes, UNIT_CURRENT_A), np.full(n_rows - 3 * n_nodes, UNIT_POWER_W)])
    parent_node = np.concatenate([[-1], np.zeros(n_boards, np.int64), board_node[board_of_feeder]])
    row_parent = np.concatenate(
        [
            np.where(parent_node[:, None] < 0, -1, 3 * parent_node[:, None] + np.arange(3)).ravel(),
            np.full(n_rows - 3 * n_nodes, -1),
        ]
    )

    charging = rng.random(n_evse) < 0.6
    setpoint_previous = np.where(charging, setpoint_min + rng.random(n_evse) * (setpoint_max - setpoint_min), 0.0)
    ramp_up_max = np.where(rng.random(n_evse) < 0.5, np.inf, np.where(dc, 10_000.0, 4.0))
    priority = rng.choice(3, size=n_evse, p=[0.1, 0.8, 0.1])
    urgency = rng.lognormal(0.0, 0.5, n_evse)
    urgency /= urgency.mean()
    waiting_s = np.where(charging, 0.0, rng.uniform(0.0, 1.2 * shape.rotation_period_s, n_evse))
    on_time_s = np.where(charging, rng.uniform(0.0, 3600.0, n_evse), 0.0)
    battery_power_w = rng.uniform(0.05, 0.3) * max_power_w if has_battery else 0.0
    if has_battery:
        battery_coef_row = np.array([import_row, export_row])
        battery_coef_value = np.array([-1.0, 1.0])
    else:
        battery_coef_row = np.zeros(0, np.int64)
        battery_coef_value = np.zeros(0)
    return Problem(
        row_headroom=row_headroom,
        row_unit=row_unit,
        row_parent=row_parent,
        coef_indptr=indptr,
        coef_row=coef_row,
        coef_value=coef_value,
        evse_unit=evse_unit,
        power_per_unit_w=power_per_unit_w,
        setpoint_min=setpoint_min,
        setpoint_max=setpoint_max,
        setpoint_previous=setpoint_previous,
        ramp_up_max=ramp_up_max,
        charging=charging,
        priority=priority,
        urgency=urgency,
        waiting_s=waiting_s,
        on_time_s=on_time_s,
        rotation_period_s=shape.rotation_period_s,
        min_on_time_s=shape.min_on_time_s,
        battery_discharge_max_w=battery_power_w,
        battery_charge_max_w=battery_power_w,
        battery_coef_row=battery_coef_row,
        battery_coef_value=battery_coef_value,
    )


def _group(rng: np.random.Generator, n_items: int, smallest: int, largest: int) -> IntArray:
    """Assign ``n_items`` consecutive items to groups of random size in [smallest, largest]."""
    sizes = rng.integers(smallest, largest + 1, size=n_items // smallest + 1)
    return np.repeat(np.arange(sizes.size), sizes)[:n_items]


def next_cycle(
    problem: Problem,
    allocation: Allocation,
    cycle_duration_s: float,
    row_headroom: FloatArray | None = None,
) -> Problem:
    """The next cycle's problem if the cars follow ``allocation`` exactly.

    Feeds back what the gateway would: previous setpoints, the admitted set as
    ``charging``, waiting and on-times advanced by ``cycle_duration_s`` (s).

    Parameters
    ----------
    problem : Problem
        This cycle's problem.
    allocation : Allocation
        What was dispatched.
    cycle_duration_s : float
        Time to the next cycle, s.
    row_headroom : ndarray, optional
        Next cycle's headroom (row unit); unchanged by default.
    """
    admitted = allocation.admitted
    return dataclasses.replace(
        problem,
        row_headroom=problem.row_headroom if row_headroom is None else row_headroom,
        setpoint_previous=allocation.setpoint,
        charging=admitted,
        waiting_s=np.where(admitted, 0.0, problem.waiting_s + cycle_duration_s),
        on_time_s=np.where(admitted, problem.on_time_s + cycle_duration_s, 0.0),
    )
