"""Shared fixtures: numba kernels are compiled (or loaded from cache) once per session."""

from __future__ import annotations

import pytest
from evdlm_solvers import warm_up


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> float:
    """Compile the heuristic before any test times or calls it; returns compile time, s."""
    return warm_up()
