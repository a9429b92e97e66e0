"""Solver benchmark: heuristic, LP (highspy) and the same LP through cvxpy on synthetic sites.

``python benchmarks/solver_bench.py --n 50 200 1000 5000 --json`` (or ``evdlm bench solver``)
prints one JSON object per site size. Results and how to read them: benchmarks/README.md
(solver section). Each site is drawn once (a site's topology does not change between cycles)
and then run for several cycles with jittered headroom and the allocation fed back, as the
gateway does. Timings are wall clock on the calling machine after warm-up.

cvxpy is imported here only: it is the comparison, not a production path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from evdlm_solvers.chain import solve
from evdlm_solvers.check import check
from evdlm_solvers.heuristic import solve_heuristic, warm_up
from evdlm_solvers.highs import INF, colwise_model, run
from evdlm_solvers.lp import BATTERY_COST_FRACTION, row_upper_bounds, solve_lp
from evdlm_solvers.problem import (
    FloatArray,
    Problem,
    delivered_power_w,
    objective_weight,
    weighted_power,
)
from evdlm_solvers.synthetic import SiteShape, next_cycle, random_site

DEFAULT_SIZES = (50, 200, 1000, 5000)
CYCLE_DURATION_S = 30.0
HEADROOM_JITTER = 0.1
"""Relative headroom change between cycles (meters move, base load moves)."""


@dataclass(frozen=True)
class SizeResult:
    """Figures for one site size (times after warm-up)."""

    n_evse: int
    n_rows: int
    nnz: int
    heuristic_median_us: float
    heuristic_p99_us: float
    chain_median_us: float
    lp_median_ms: float
    lp_p99_ms: float
    cvxpy_median_ms: float | None
    cvxpy_first_ms: float | None
    cvxpy_objective_gap: float | None
    """Largest relative difference between the cvxpy and highspy objectives."""
    milp_median_ms: float | None
    milp_objective_ratio: float | None
    """Median of MILP objective (admission decided by the solver) / fixed-admission LP's."""
    power_fraction_median: float
    power_fraction_min: float
    objective_fraction_median: float
    violations: int
    numba_warm_up_s: float
    numba_cold_compile_s: float | None
    load_average_1min: float
    """The machine's 1-minute load average after the run: p99 figures are only as quiet
    as the machine was."""


class CvxpyCycleLp:
    """The cycle LP in cvxpy, Parameters built once per site shape (DPP).

    Same rows, bounds and objective as :func:`~evdlm_solvers.lp.solve_lp`; per cycle only
    the parameter values change, so cvxpy canonicalises once.
    """

    def __init__(self, problem: Problem) -> None:
        import cvxpy as cp
        import scipy.sparse as sparse

        n_evse, n_rows = problem.n_evse, problem.n_rows
        matrix = sparse.csc_matrix((problem.coef_value, problem.coef_row, problem.coef_indptr), shape=(n_rows, n_evse))
        battery = np.zeros(n_rows)
        np.add.at(battery, problem.battery_coef_row, problem.battery_coef_value)
        self._cp = cp
        self.setpoint = cp.Variable(n_evse)
        self.discharge_w = cp.Variable(nonneg=True)
        self.charge_w = cp.Variable(nonneg=True)
        self.lower = cp.Parameter(n_evse)
        self.upper = cp.Parameter(n_evse)
        self.headroom = cp.Parameter(n_rows)
        self.weight = cp.Parameter(n_evse)
        self.battery_cost = cp.Parameter(nonneg=True)
        self.discharge_max_w = cp.Parameter(nonneg=True)
        self.charge_max_w = cp.Parameter(nonneg=True)
        self.problem = cp.Problem(
            cp.Maximize(self.weight @ self.setpoint - self.battery_cost * (self.discharge_w + self.charge_w)),
            [
                matrix @ self.setpoint + battery * (self.discharge_w - self.charge_w) <= self.headroom,
                self.setpoint >= self.lower,
                self.setpoint <= self.upper,
                self.discharge_w <= self.discharge_max_w,
                self.charge_w <= self.charge_max_w,
            ],
        )

    def solve(self, problem: Problem, admitted: np.ndarray[Any, Any]) -> FloatArray:
        """Solve for this cycle's values; returns the setpoints (own unit)."""
        upper = problem.setpoint_upper
        runnable = admitted & (upper >= problem.setpoint_min)
        lower_bound = np.where(runnable, problem.setpoint_min, 0.0)
        upper_bound = np.where(runnable, upper, 0.0)
        movable = upper_bound > lower_bound
        weight = objective_weight(problem)
        scale = float(weight[movable].max()) if movable.any() else 1.0
        self.lower.value = lower_bound
        self.upper.value = upper_bound
        self.headroom.value = row_upper_bounds(problem)
        self.weight.value = weight / scale
        cheapest = float((weight / problem.power_per_unit_w)[movable].min()) if movable.any() else 1.0
        self.battery_cost.value = BATTERY_COST_FRACTION * cheapest / scale
        self.discharge_max_w.value = problem.battery_discharge_max_w
        self.charge_max_w.value = problem.battery_charge_max_w
        # Same HiGHS options as the production LP, so only the modelling layer differs.
        self.problem.solve(  # type: ignore[no-untyped-call]
            solver=self._cp.HIGHS, presolve="off"
        )
        value: FloatArray = np.asarray(self.setpoint.value, dtype=np.float64)
        return value


def solve_milp(problem: Problem, time_limit_s: float) -> tuple[float, float, str]:
    """The cycle as a MILP that decides admission itself (benchmark only).

    Binary ``on_j`` per EVSE with ``min_j * on_j <= setpoint_j <= upper_j * on_j``, the same
    rows, bounds and objective as :func:`~evdlm_solvers.lp.solve_lp`, no admission policy
    (charging cars may be dropped for throughput). Returns (objective in weighted W,
    wall time s, HiGHS status text); the objective is NaN unless optimal.
    """
    started = time.perf_counter()
    n_evse, n_rows = problem.n_evse, problem.n_rows
    upper = problem.setpoint_upper
    runnable = upper >= problem.setpoint_min
    weight = objective_weight(problem)
    scale = float(weight[runnable].max()) if runnable.any() else 1.0
    battery_cost = BATTERY_COST_FRACTION * float((weight / problem.power_per_unit_w).min())
    # Columns: setpoints, on/off, battery discharge and charge.
    n_cols = 2 * n_evse + 2
    nnz = int(problem.coef_indptr[-1])
    battery_nnz = problem.battery_coef_row.size
    link_lower = n_rows + 2 * np.arange(n_evse)
    link_upper = link_lower + 1
    setpoint_rows = np.empty(nnz + 2 * n_evse, dtype=np.int64)
    setpoint_values = np.empty(nnz + 2 * n_evse)
    setpoint_start = problem.coef_indptr + 2 * np.arange(n_evse + 1)
    for j in range(n_evse):
        own = slice(problem.coef_indptr[j], problem.coef_indptr[j + 1])
        at = setpoint_start[j]
        width = problem.coef_indptr[j + 1] - problem.coef_indptr[j]
        setpoint_rows[at : at + width] = problem.coef_row[own]
        setpoint_values[at : at + width] = problem.coef_value[own]
        setpoint_rows[at + width : at + width + 2] = (link_lower[j], link_upper[j])
        setpoint_values[at + width : at + width + 2] = (1.0, 1.0)
    switch_rows = np.stack([link_lower, link_upper], axis=1).ravel()
    switch_values = np.stack([-problem.setpoint_min, -np.where(runnable, upper, 0.0)], 1).ravel()
    index = np.concatenate([setpoint_rows, switch_rows, problem.battery_coef_row, problem.battery_coef_row])
    value = np.concatenate([setpoint_values, switch_values, problem.battery_coef_value, -problem.battery_coef_value])
    start = np.concatenate(
        [
            setpoint_start,
            setpoint_start[-1] + 2 * np.arange(1, n_evse + 1),
            [setpoint_start[-1] + 2 * n_evse + battery_nnz],
            [setpoint_start[-1] + 2 * n_evse + 2 * battery_nnz],
        ]
    )
    model = colwise_model(
        maximize=True,
        col_cost=np.concatenate([weight / scale, np.zeros(n_evse), [-battery_cost / scale] * 2]),
        col_lower=np.zeros(n_cols),
        col_upper=np.concatenate(
            [
                np.where(runnable, upper, 0.0),
                runnable.astype(np.float64),
                [problem.battery_discharge_max_w, problem.battery_charge_max_w],
            ]
        ),
        row_lower=np.concatenate([np.full(n_rows, -INF), np.tile([0.0, -INF], n_evse)]),
        row_upper=np.concatenate([row_upper_bounds(problem), np.tile([INF, 0.0], n_evse)]),
        start=start,
        index=index,
        value=value,
        integer=[False] * n_evse + [True] * n_evse + [False] * 2,
    )
    solution = run(model, time_limit_s=time_limit_s, mip_rel_gap=1e-6)
    objective = float("nan")
    if solution.col_value is not None:
        objective = float(weight @ solution.col_value[:n_evse])
    return objective, time.perf_counter() - started, solution.detail


def _cycles(problem: Problem, count: int, rng: np.random.Generator) -> list[Problem]:
    """``count`` successive cycles with jittered headroom and the heuristic fed back."""
    base_headroom = problem.row_headroom
    cycles = []
    for _ in range(count):
        cycles.append(problem)
        allocation = solve_heuristic(problem)
        jitter = rng.uniform(1.0 - HEADROOM_JITTER, 1.0 + HEADROOM_JITTER, base_headroom.size)
        problem = next_cycle(problem, allocation, CYCLE_DURATION_S, base_headroom * jitter)
    return cycles


def _timed(function: Any, *arguments: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function(*arguments)
    return time.perf_counter() - started, result


def cold_compile_s() -> float:
    """Numba compile time from an empty cache, measured in a subprocess, s."""
    with tempfile.TemporaryDirectory() as cache_dir:
        output = subprocess.run(
            [sys.executable, "-c", "from evdlm_solvers import warm_up; print(warm_up())"],
            env={**os.environ, "NUMBA_CACHE_DIR": cache_dir},
            capture_output=True,
            text=True,
            check=True,
        )
    return float(output.stdout.strip().splitlines()[-1])


def run_size(
    n_evse: int,
    *,
    shape: SiteShape,
    seed: int,
    cycles: int,
    lp_samples: int,
    cvxpy_samples: int,
    milp_samples: int,
    warm_up_s: float,
    cold_s: float | None,
) -> SizeResult:
    """Benchmark one site size."""
    rng = np.random.default_rng(seed)
    site = random_site(n_evse, rng, shape)
    problems = _cycles(site, cycles, rng)

    # One untimed pass first: the first touch of each cycle's fresh arrays and the garbage
    # collector otherwise land in the p99 of whichever sizes run first.
    for problem in problems:
        solve_heuristic(problem)
    heuristic_s = []
    chain_s = []
    violations = 0
    for problem in problems:
        elapsed, allocation = _timed(solve_heuristic, problem)
        heuristic_s.append(elapsed)
        violations += check(problem, allocation).violation_count
        chain_s.append(_timed(solve, problem)[0])

    lp_s = []
    power_fraction = []
    objective_fraction = []
    step = max(1, len(problems) // lp_samples)
    for problem in problems[::step][:lp_samples]:
        heuristic = solve_heuristic(problem)
        elapsed, result = _timed(solve_lp, problem, heuristic.admitted, 10.0)
        lp_s.append(elapsed)
        if result.allocation is None:
            violations += 1
            continue
        violations += check(problem, result.allocation).violation_count
        power_fraction.append(delivered_power_w(problem, heuristic) / delivered_power_w(problem, result.allocation))
        objective_fraction.append(weighted_power(problem, heuristic) / result.objective)

    cvxpy_ms: float | None = None
    cvxpy_first_ms: float | None = None
    cvxpy_gap: float | None = None
    if cvxpy_samples > 0:
        try:
            model = CvxpyCycleLp(problems[0])
        except ImportError:
            model = None
        if model is not None:
            cvxpy_s = []
            gaps = []
            for problem in problems[: cvxpy_samples + 1]:
                admitted = solve_heuristic(problem).admitted
                elapsed, setpoint = _timed(model.solve, problem, admitted)
                cvxpy_s.append(elapsed)
                reference = solve_lp(problem, admitted, 10.0).objective
                gaps.append(abs(objective_weight(problem) @ setpoint - reference) / reference)
            cvxpy_first_ms = cvxpy_s[0] * 1e3
            cvxpy_ms = float(np.median(cvxpy_s[1:] or cvxpy_s)) * 1e3
            cvxpy_gap = float(max(gaps))

    milp_ms: float | None = None
    milp_ratio: float | None = None
    if milp_samples > 0:
        milp_s = []
        ratios = []
        for problem in problems[::step][:milp_samples]:
            objective, elapsed, _ = solve_milp(problem, 10.0)
            milp_s.append(elapsed)
            admitted = solve_heuristic(problem).admitted
            ratios.append(objective / solve_lp(problem, admitted, 10.0).objective)
        milp_ms = float(np.median(milp_s)) * 1e3
        milp_ratio = float(np.median(ratios))

    return SizeResult(
        n_evse=n_evse,
        n_rows=site.n_rows,
        nnz=int(site.coef_indptr[-1]),
        heuristic_median_us=float(np.median(heuristic_s)) * 1e6,
        heuristic_p99_us=float(np.percentile(heuristic_s, 99)) * 1e6,
        chain_median_us=float(np.median(chain_s)) * 1e6,
        lp_median_ms=float(np.median(lp_s)) * 1e3,
        lp_p99_ms=float(np.percentile(lp_s, 99)) * 1e3,
        cvxpy_median_ms=cvxpy_ms,
        cvxpy_first_ms=cvxpy_first_ms,
        cvxpy_objective_gap=cvxpy_gap,
        milp_median_ms=milp_ms,
        milp_objective_ratio=milp_ratio,
        power_fraction_median=float(np.median(power_fraction)),
        power_fraction_min=float(np.min(power_fraction)),
        objective_fraction_median=float(np.median(objective_fraction)),
        violations=violations,
        numba_warm_up_s=warm_up_s,
        numba_cold_compile_s=cold_s,
        load_average_1min=os.getloadavg()[0],
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="solver_bench", description="Benchmark the evdlm solvers on synthetic sites.")
    parser.add_argument(
        "--n", type=int, nargs="+", default=list(DEFAULT_SIZES), help="site sizes in EVSEs (default: 50 200 1000 5000)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per size")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--cycles", type=int, default=200, help="heuristic cycles per size (default 200)")
    parser.add_argument("--lp-samples", type=int, default=10, help="LP solves per size (default 10)")
    parser.add_argument(
        "--cvxpy-samples", type=int, default=3, help="cvxpy solves per size after the first; 0 skips cvxpy"
    )
    parser.add_argument(
        "--milp-samples", type=int, default=3, help="MILP solves per size up to --milp-max-n; 0 skips the MILP"
    )
    parser.add_argument("--milp-max-n", type=int, default=1000, help="largest size the MILP is tried at (default 1000)")
    parser.add_argument(
        "--tightness", type=float, default=0.6, help="0 = limits near the sum of maxima, 1 = only part fits at minimum"
    )
    parser.add_argument(
        "--single-phase-fraction", type=float, default=0.3, help="share of 1-phase AC cars (default 0.3)"
    )
    parser.add_argument(
        "--phase-known-fraction",
        type=float,
        default=0.7,
        help="share of 1-phase cars on a known site phase (default 0.7)",
    )
    parser.add_argument(
        "--cold-compile", action="store_true", help="also time numba compilation from an empty cache (subprocess)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints JSON lines (``--json``) or a table. Returns 0."""
    options = _parser().parse_args(argv)
    cold_s = cold_compile_s() if options.cold_compile else None
    warm_up_s = warm_up()
    shape = SiteShape(
        tightness=options.tightness,
        single_phase_fraction=options.single_phase_fraction,
        phase_known_fraction=options.phase_known_fraction,
    )
    for n_evse in options.n:
        result = run_size(
            n_evse,
            shape=shape,
            seed=options.seed,
            cycles=options.cycles,
            lp_samples=options.lp_samples,
            cvxpy_samples=options.cvxpy_samples,
            milp_samples=options.milp_samples if n_evse <= options.milp_max_n else 0,
            warm_up_s=warm_up_s,
            cold_s=cold_s,
        )
        if options.json:
            print(json.dumps(asdict(result)), flush=True)
        else:
            print(
                f"N={result.n_evse:>5} heuristic {result.heuristic_median_us:8.0f} us "
                f"(p99 {result.heuristic_p99_us:8.0f}) | LP {result.lp_median_ms:7.1f} ms "
                f"(p99 {result.lp_p99_ms:7.1f}) | cvxpy {result.cvxpy_median_ms or float('nan'):7.1f} ms"
                f" | power {result.power_fraction_median:.4f} (min {result.power_fraction_min:.4f})"
                f" | violations {result.violations}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
