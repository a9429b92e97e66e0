"""Capacity planning and portfolio what-if: sweeps of closed-loop site simulations (``evdlm plan``).

Every scenario re-simulates the site in closed loop through the gateway's own ``decide()``
(:func:`evdlm.sim.closed_loop.simulate`) with one point of the sweep applied (charger count,
connection kW, circuit ratings, battery size, config variant, solver, tariff) and yields one row
of figures (:mod:`evdlm.sim.planning.metrics`). Scenarios run serially or as Dask tasks
(:mod:`evdlm.sim.planning.runner`); docs/planning.md is the user's guide.
"""

from evdlm.sim.planning.metrics import COLUMNS
from evdlm.sim.planning.runner import run_dask, run_local_cluster, run_serial
from evdlm.sim.planning.scenarios import PlanCase, PlanSite, Scenario, Sweep, cases_of, load_sweep, parse_sweep
from evdlm.sim.planning.sessions import load_sessions, parse_acn_json

__all__ = [
    "COLUMNS",
    "PlanCase",
    "PlanSite",
    "Scenario",
    "Sweep",
    "cases_of",
    "load_sessions",
    "load_sweep",
    "parse_acn_json",
    "parse_sweep",
    "run_dask",
    "run_local_cluster",
    "run_serial",
]
