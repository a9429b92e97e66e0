"""Smoke test of benchmarks/channels_bench.py: small floods, every scenario's JSON sane."""

from __future__ import annotations

import json
import shutil

import channels_bench  # type: ignore[import-not-found]  # benchmarks/ on sys.path (conftest)
import pytest


def test_attack_payloads_are_what_they_claim() -> None:
    now_s = 1_800_000_000.0
    event_id, body = channels_bench.attack_payload("dr-valid", 3, now_s)
    assert event_id == "v3" and json.loads(body)["object"]["id"] == "v3"
    kinds = {channels_bench.attack_payload("dr-invalid", index, now_s)[1] for index in range(5)}
    assert len(kinds) == 5
    assert len(channels_bench.attack_payload("dr-big", 0, now_s)[1]) > 1_000_000


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")
def test_channels_bench_prints_one_object_per_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--chargers", "2", "--dr-count", "300", "--big-count", "1", "--ocpp-frames", "2000"]
    argv += ["--freeze-s", "2", "--window-s", "2", "--settle-s", "1", "--warmup-s", "1", "--quiet"]
    assert channels_bench.main(argv) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [result["scenario"] for result in results] == list(channels_bench.SCENARIOS)
    for result in results:
        assert result["crashes"] == 0, result
        assert result["cycles"] >= 1 and result["cycle_ms"]["max"] is not None
        assert result["targets"]["cycle_within_2x_period"], result
    by_name = {result["scenario"]: result for result in results}
    assert by_name["dr_valid_burst"]["dr_intake"]["stored_events"] <= 64
    assert by_name["dr_1mb_payload"]["rejected"] == 1
    assert by_name["broker_frozen"]["response_after_thaw_s"] is not None
    startup = by_name["startup_retained"]
    assert startup["fresh_process"]["exit_code"] == 0 and startup["first_cycle_s"] is not None
    assert startup["targets"]["first_cycle_within_10s"]
