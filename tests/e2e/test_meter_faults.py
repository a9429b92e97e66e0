"""Issue 12, "Never trust one meter", end to end: a grid meter that lies must stop being used.

The benchmark's site and scenarios (``benchmarks/faults_bench.py``: a 63 A grid fuse as the only
binding limit, a building load of 10.5 A per phase, three 3-phase chargers with cars wanting
32 A each), on real protocols over loopback at a compressed clock, shorter than the benchmark.
Each test asserts the promise: no SUSPECT reading and no unused grid meter while every reading
is true (the false-alarm check); after the fault, the controller stops using the grid meter within
30 s; from then on its commands let at most 100 % of the fuse rating through it (the commanded
limits of the EVSEs on each phase plus the true building load).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import faults_bench  # type: ignore[import-not-found]  # noqa: E402  # benchmarks/ is not a package

SPEED = 15.0  # a 3 s max age is 0.2 s of wall time: enough for a loopback poll on a busy machine
WARM_UP_S = 40.0
DETECTION_S = 30.0
AFTER_DETECTION_S = 15.0  # long enough for the fallback to show in the commands


async def run(name: str, fault_s: float = DETECTION_S + AFTER_DETECTION_S) -> dict[str, Any]:
    return dict(
        await faults_bench.run_scenario(faults_bench.SCENARIOS[name], speed=SPEED, warm_up_s=WARM_UP_S, fault_s=fault_s)
    )


def assert_promise(result: dict[str, Any], detection_s: float = DETECTION_S) -> None:
    shown = json.dumps(result)
    assert result["cycles"]["baseline"] >= WARM_UP_S * 0.8, shown
    assert result["suspect_readings_baseline"] == 0, f"false alarm in the fault-free warm-up: {shown}"
    assert result["unused_cycles_baseline"] == 0, f"grid meter unused in the fault-free warm-up: {shown}"
    # Fault-free, the fuse never carries more than its rating. The commands themselves may pass
    # it by a little: the closed loop subtracts charger samples up to one sample interval old
    # from a live meter, and on a loaded machine (a compressed clock) that lag outgrows the 2 A
    # margin by an amp or two, while the cars draw less than those samples say.
    assert result["baseline_max_true_pct"] <= 100.0, shown
    assert result["baseline_max_commanded_pct"] <= 105.0, shown
    detected = result["detected_after_s"]
    assert detected is not None, (
        f"{result['fault']}: the grid meter was never distrusted; the commands let up to "
        f"{result['max_commanded_pct_of_limit']} % of the fuse through: {shown}"
    )
    assert detected <= detection_s, f"{result['fault']}: distrusted only after {detected} s: {shown}"
    assert result["max_commanded_pct_of_limit"] <= 100.0, (
        f"{result['fault']}: after detection the commands still let "
        f"{result['max_commanded_pct_of_limit']} % of the fuse through: {shown}"
    )


# ---------------------------------------------------------------- lying meters (issue 12)


@pytest.mark.timeout(120)
async def test_sdm630_power_100x_low() -> None:
    assert_promise(await run("sdm630_power_100x_low"))


@pytest.mark.timeout(120)
async def test_sunspec_w_sf_minus2_reads_power_1000x_low() -> None:
    assert_promise(await run("sunspec_w_sf_minus2"))


@pytest.mark.timeout(120)
async def test_sunspec_sf_plus4_reads_power_1000x_high() -> None:
    assert_promise(await run("sunspec_sf_plus4"))


@pytest.mark.timeout(120)
async def test_ct_l1_reversed() -> None:
    assert_promise(await run("ct_l1_reversed"))


@pytest.mark.timeout(120)
async def test_other_sites_load() -> None:
    assert_promise(await run("other_site_load"))


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_grid_meter_frozen_on_the_building_load() -> None:
    # The case: frozen at 10.5 A per phase while three cars start drawing 32 A each.
    assert_promise(await run("grid_frozen"))


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_sunspec_chain_past_65535() -> None:
    assert_promise(await run("sunspec_chain_past_65535"))


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_drift_30pct_low_over_60s() -> None:
    # A meter reading low is caught once it reads below what the chargers under it report (3 A of
    # allowance), then the hold of two charger sample intervals (20 s); before that the closed loop
    # trusts it, as any would. 30 % low is caught after 70-75 s beside a busy core
    # (2026-12-05). 20 % low sits at the edge of what this site lets any such check see (the
    # building's 10.5 A is 15 % of the load): the bench reports it (drift_20pct_low), a test cannot
    # promise it (benchmarks/faults_bench.py says why).
    # At 5x: at 15x a loaded CI machine stretched it to 114 s (the chargers' samples and the
    # hold run on the compressed clock); 5x keeps the loop's lag small against the clock.
    result = await faults_bench.run_scenario(
        faults_bench.SCENARIOS["drift_30pct_low"], speed=5.0, warm_up_s=WARM_UP_S, fault_s=120.0
    )
    assert_promise(dict(result), detection_s=100.0)


# ---------------------------------------------------------------- absurd values, handled before issue 12


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["nan", "dead_server"])
async def test_absurd_or_silent_meter_stays_handled(name: str) -> None:
    assert_promise(await run(name))


# ---------------------------------------------------------------- a station that cannot be limited


@pytest.mark.timeout(120)
async def test_a_station_without_smart_charging_is_stopped_and_kept_blocked() -> None:
    # Its car alone (32 A) on the building's 35 A overloads the 63 A fuse whatever the others do.
    result = await faults_bench.run_unlimitable_station(speed=SPEED, settle_s=30.0, run_s=40.0)
    shown = json.dumps(result)
    assert result["stopped_after_s"] is not None and result["stopped_after_s"] <= 5.0, shown
    assert result["over_fuse_s"] <= 5, shown
    assert result["max_true_pct_after_stop"] <= 100.0, shown
    assert result["blocked_at_end"], shown  # no room for its 32 A: it stays Inoperative
