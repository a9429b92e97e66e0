"""airspeed velocity (asv) benchmarks: the solvers and one decide() call, tracked over commits.

Configured by asv.conf.json at the repository root; results go to .asv/ (git-ignored).
``asv run --quick --python=same`` runs them once in the current interpreter.
"""
