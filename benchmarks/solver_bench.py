"""Solver benchmark: heuristic vs LP (highspy) vs cvxpy on synthetic sites.

Thin wrapper over :func:`evdlm_solvers.bench.main`, so the gateway CLI can expose the same
thing as ``evdlm bench solver --n N --json``. Results and how to read them:
benchmarks/README.md (solver section).

    .venv/bin/python benchmarks/solver_bench.py --n 50 200 1000 5000 --json
"""

import sys

from evdlm_solvers.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
