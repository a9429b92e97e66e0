"""JSON logs carry structured fields; metrics live in their own registry per controller."""

from __future__ import annotations

import json
import logging

from evdlm.observability import JsonFormatter, Metrics


def test_json_log_line_carries_fields() -> None:
    record = logging.LogRecord("evdlm.control", logging.INFO, __file__, 1, "limit %s → %g", ("CP01/1", 16.0), None)
    record.fields = {"event": "limit_change", "charger": "CP01", "to": 16.0, "reason": "allocated"}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "limit CP01/1 → 16"
    assert (entry["level"], entry["logger"], entry["event"], entry["reason"]) == (
        "INFO",
        "evdlm.control",
        "limit_change",
        "allocated",
    )


def test_metrics_are_per_instance_and_exposed() -> None:
    first, second = Metrics("a"), Metrics("b")
    first.cycles.inc()
    first.commands.labels(site="a", status="accepted").inc(3)
    assert first.registry.get_sample_value("evdlm_cycles_total", {"site": "a"}) == 1.0
    assert first.registry.get_sample_value("evdlm_commands_total", {"site": "a", "status": "accepted"}) == 3.0
    assert second.registry.get_sample_value("evdlm_cycles_total", {"site": "b"}) == 0.0


def test_component_counters_are_read_at_scrape_time() -> None:
    from dataclasses import dataclass

    @dataclass
    class Counts:
        received: int = 0
        dropped: int = 0
        ratio: float = 0.5  # not a count: left out

    counts: Counts | None = None
    metrics = Metrics("s")
    metrics.expose_counters("evdlm_test_intake", "test counters", lambda: counts)
    assert metrics.registry.get_sample_value("evdlm_test_intake_total", {"site": "s", "what": "received"}) is None
    counts = Counts(received=3, dropped=1)
    assert metrics.registry.get_sample_value("evdlm_test_intake_total", {"site": "s", "what": "received"}) == 3.0
    assert metrics.registry.get_sample_value("evdlm_test_intake_total", {"site": "s", "what": "dropped"}) == 1.0
    assert metrics.registry.get_sample_value("evdlm_test_intake_total", {"site": "s", "what": "ratio"}) is None
