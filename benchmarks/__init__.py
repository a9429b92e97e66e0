"""The benchmark scripts, installed with evdlm as the package ``evdlm_benchmarks``.

Each ``<name>_bench.py`` here is a script (run it with python, or as ``evdlm bench <name>``,
which finds this folder through importlib.resources, so it works from a wheel as from a
checkout). The scripts import their helpers (``measure``) by putting this folder on sys.path;
nothing imports this package's modules by their package name.
"""
