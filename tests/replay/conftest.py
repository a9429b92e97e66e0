"""Short simulated recordings for the replay tests (seconds to make, real decisions)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from evdlm.sim.closed_loop import SimulationSpec, simulate
from evdlm.sim.sample_day import workplace_day_spec

DATA = Path(__file__).resolve().parents[1] / "data" / "recordings"
DEMO_RECORDING = DATA / "demo-quick.jsonl.gz"
SAMPLE_DAY = DATA / "workplace-50-day"


def morning_spec(minutes: float = 20.0, rotate_after_s: float = 300.0) -> SimulationSpec:
    """The sample workplace from 08:00, when most cars are in, segments every ``rotate_after_s``."""
    day = workplace_day_spec()
    text = day.config_text.replace(
        "recording: {rotate_after_s: 3600}", f"recording: {{rotate_after_s: {rotate_after_s:g}}}"
    )
    return replace(day, config_text=text, start_s=day.start_s + 8 * 3600.0, duration_s=minutes * 60.0)


@pytest.fixture(scope="session")
def morning_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("morning")
    simulate(morning_spec(), out)
    return out
