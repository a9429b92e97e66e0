"""Smoke test of benchmarks/ocpp_scale_bench.py --local-controller: a few chargers, each message
kind sent straight to the CSMS simulator and through evdlm; every one answered by the CSMS."""

from __future__ import annotations

import json

import ocpp_scale_bench  # type: ignore[import-not-found]  # benchmarks/ on sys.path (conftest)
import pytest

KINDS = ["Heartbeat", "StatusNotification", "MeterValues"]


@pytest.mark.timeout(60)
def test_local_controller_bench_answers_every_message(capsys: pytest.CaptureFixture[str]) -> None:
    chargers, messages = 5, 6  # two of each kind per charger and path
    argv = ["--local-controller", "--chargers", str(chargers), "--messages", str(messages), "--interval-s", "0.4"]
    assert ocpp_scale_bench.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "ocpp_local_controller"
    assert result["kinds"] == KINDS
    (run,) = result["runs"]
    assert run["chargers"] == chargers
    # Everyone connected both ways, booted (the through boot answered by the CSMS) and configured.
    assert run["boots_accepted"] == 2 * chargers
    assert run["not_ready"] == 0
    assert not run["time_capped"]
    # Every message answered, on both paths, and each one reached the CSMS exactly once.
    expected = chargers * messages
    assert run["sent"] == run["answered"] == {"direct": expected, "through_lc": expected}
    assert run["errors"] == {"direct": {}, "through_lc": {}}
    per_kind = {kind: expected // len(KINDS) for kind in KINDS}
    assert run["csms_received"] == {"direct": per_kind, "through_lc": per_kind}
    # Through evdlm means relayed live: none answered by evdlm itself (the offline fallback).
    assert run["relay_forwarded_up"] == expected
    assert run["relay_answered_locally"] == 0
    assert run["all_answered"]

    assert set(run["latency"]) == {*KINDS, "all"}
    for kind, figures in run["latency"].items():
        direct, through = figures["direct"], figures["through_lc"]
        assert direct["n"] == through["n"] == (expected if kind == "all" else per_kind[kind])
        for path in (direct, through):
            assert 0 < path["p50_ms"] <= path["p99_ms"] <= path["max_ms"] < 10_000
        # Added latency is per percentile: through − direct.
        assert figures["added_p50_ms"] == pytest.approx(through["p50_ms"] - direct["p50_ms"], abs=0.002)
        assert figures["added_p99_ms"] == pytest.approx(through["p99_ms"] - direct["p99_ms"], abs=0.002)
    within = run["added_p99_within_5_ms"]
    assert within == all(figures["added_p99_ms"] <= 5.0 for figures in run["latency"].values())
    assert result["targets_met"] == (run["all_answered"] and within)

    rss = run["evdlm_rss"]
    assert 10 < rss["idle_mb"] <= rss["peak_mb"]
    assert rss["connected_mb"] <= rss["peak_mb"]
    for key in ("before", "measure_start", "measure_end"):
        assert len(run["load_average"][key]) == 3


def test_several_sizes_only_with_local_controller() -> None:
    with pytest.raises(SystemExit) as exc:
        ocpp_scale_bench.main(["--chargers", "100", "1000"])
    assert exc.value.code == 2
