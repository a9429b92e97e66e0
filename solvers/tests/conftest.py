"""Shared fixtures: numba kernels are compiled (or loaded from cache) once per session."""

from __future__ import annotations

import pytest
from evdlm_solvers import Problem, warm_up
from evdlm_solvers.synthetic import SiteShape, random_site
from hypothesis import strategies as st


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> float:
    """Compile the heuristic before any test times or calls it; returns compile time, s."""
    return warm_up()


def random_sites(overloaded_row_probability: float = 0.1, mixed_chargers: bool = True) -> st.SearchStrategy[Problem]:
    """Random synthetic sites for the property tests (1-40 EVSEs, any tightness, some batteries);
    ``mixed_chargers`` adds DC and 1-phase chargers."""
    mix: dict[str, st.SearchStrategy[float]] = (
        {"dc_fraction": st.floats(0.0, 0.4), "single_phase_fraction": st.floats(0.0, 0.5)} if mixed_chargers else {}
    )
    return st.builds(
        random_site,
        n_evse=st.integers(1, 40),
        seed=st.integers(0, 2**32 - 1),
        shape=st.builds(
            SiteShape,
            tightness=st.floats(0.0, 1.0),
            overloaded_row_probability=st.sampled_from([0.0, 0.0, overloaded_row_probability]),
            battery_probability=st.sampled_from([0.0, 1.0]),
            **mix,
        ),
    )
