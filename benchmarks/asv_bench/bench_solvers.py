"""The cycle's solvers on synthetic sites (evdlm_solvers.synthetic.random_site, seed 2026)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from evdlm_solvers import warm_up
from evdlm_solvers.heuristic import solve_heuristic
from evdlm_solvers.lp import solve_lp
from evdlm_solvers.problem import Allocation, Problem
from evdlm_solvers.synthetic import SiteShape, random_site

SEED = 2026


def _site(n_evse: int) -> Problem:
    return random_site(n_evse, np.random.default_rng(SEED), SiteShape())


class Heuristic:
    """``solve_heuristic`` (numba, warmed up) on one site."""

    params: ClassVar[list[int]] = [200, 1000]
    param_names: ClassVar[list[str]] = ["n_evse"]

    def setup(self, n_evse: int) -> None:
        warm_up()
        self.problem = _site(n_evse)
        solve_heuristic(self.problem)

    def time_solve_heuristic(self, n_evse: int) -> None:
        solve_heuristic(self.problem)


class Lp:
    """``solve_lp`` (HiGHS) on the heuristic's admitted set."""

    params: ClassVar[list[int]] = [200, 1000]
    param_names: ClassVar[list[str]] = ["n_evse"]

    def setup(self, n_evse: int) -> None:
        warm_up()
        self.problem = _site(n_evse)
        heuristic: Allocation = solve_heuristic(self.problem)
        self.admitted = heuristic.admitted

    def time_solve_lp(self, n_evse: int) -> None:
        solve_lp(self.problem, self.admitted, 10.0)
