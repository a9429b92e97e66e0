"""The pure checks behind issue 13: frame depth and numbers before and while parsing, meter
values that are not finite, and the throttled log of hostile input."""

from __future__ import annotations

import json
import logging
import time

import pytest

from evdlm.chargers.ocpp.parse import (
    MAX_FRAME_DEPTH,
    FrameRejected,
    load_frame,
    nesting_depth,
    parse_meter_values,
)
from evdlm.core.clock import FakeClock
from evdlm.observability import LogThrottle


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("[]", 1),
        ('[2,"id","Heartbeat",{}]', 2),
        ('[2,"id","X",{"a":[{"b":[1]}]}]', 5),
        ('["[[[[{{{{"]', 1),  # brackets inside a string are text
        ('["\\"[[[", "]]]\\\\", [1]]', 2),  # escaped quotes and backslashes
        ('[1, "unterminated [[[[', 1),  # an open string runs to the end
        ("[[[[", 4),  # unclosed brackets count: the parser would recurse into them
        ("]]]][", 0),  # invalid from the first "]": the parser stops there
        ("", 0),
    ],
)
def test_nesting_depth(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


@pytest.mark.parametrize(
    "text",
    [
        '"' + '\\"' * 500_000,  # a quote-scanning regex that must close would go quadratic here
        "[" * 1_000_000,
        "[]," * 330_000,
        '"a",' * 250_000,
    ],
    ids=["escaped-quotes", "opens", "wide", "strings"],
)
def test_nesting_depth_is_linear_on_a_megabyte(text: str) -> None:
    started = time.perf_counter()
    nesting_depth(text)
    assert time.perf_counter() - started < 1.0


def test_deepest_legitimate_message_passes() -> None:
    """2.0.1 ReportChargingProfilesRequest nests 13 levels inside the frame (14 with it)."""
    inner: object = {"customData": {"vendorId": "v"}}
    for _ in range(12):
        inner = {"x": [inner]}
    frame = json.dumps([2, "id", "ReportChargingProfiles", inner])
    assert 14 < nesting_depth(frame) <= MAX_FRAME_DEPTH
    assert load_frame(frame)[1] == "id"


@pytest.mark.parametrize(
    ("raw", "fault", "message_type_id", "unique_id"),
    [
        ('[2,"a","Heartbeat",' + "[" * 100 + "]" * 100 + "]", "too_deep", 2, "a"),
        ('  [ 3 , "b" , ' + "{" * 100, "too_deep", 3, "b"),
        ("[" * 100_000, "too_deep", None, None),
        ('[2,"c","MeterValues",{"v":NaN}]', "non_finite", 2, "c"),
        ('[2,"d","MeterValues",{"v":-Infinity}]', "non_finite", 2, "d"),
        ('[3,"e",{"v":1e999}]', "out_of_range", 3, "e"),
        ('[2,"f","X",{"v":-1e400}]', "out_of_range", 2, "f"),
        ('[2,"g","X",{"v":' + "7" * 5000 + "}]", "out_of_range", 2, "g"),  # json would raise ValueError
        ("not json{", "unreadable", None, None),
        (b"\xff\xfe", "unreadable", None, None),
    ],
)
def test_load_frame_refuses(raw: str | bytes, fault: str, message_type_id: int | None, unique_id: str | None) -> None:
    with pytest.raises(FrameRejected) as caught:
        load_frame(raw)
    assert (caught.value.fault, caught.value.message_type_id, caught.value.unique_id) == (
        fault,
        message_type_id,
        unique_id,
    )


def test_load_frame_keeps_ordinary_numbers() -> None:
    frame = load_frame(b'[2,"a","X",{"i":-12,"f":1.5e3,"big":1e308,"s":"NaN"}]')
    assert frame == [2, "a", "X", {"i": -12, "f": 1500.0, "big": 1e308, "s": "NaN"}]


def test_meter_values_not_finite_are_dropped_with_reasons() -> None:
    sample = parse_meter_values(
        [
            {
                "timestamp": "2026-11-21T08:00:00Z",
                "sampled_value": [
                    {"value": "NaN", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
                    {"value": "Infinity", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
                    {"value": "1e999", "measurand": "Power.Active.Import", "unit": "W"},
                    {"value": "1e306", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                    {"value": "16.0", "measurand": "Current.Import", "phase": "L3", "unit": "A"},
                    {"value": "c2lnbmVk", "measurand": "SoC"},  # SignedData: not a number, no reason
                ],
            }
        ],
        "1.6",
    )
    assert sample.phase_current_a == (None, None, 16.0)
    assert sample.power_w is None and sample.energy_wh is None and sample.soc_pct is None
    assert sample.dropped == (
        "Current.Import L1: 'NaN' is not a finite number",
        "Current.Import L2: 'Infinity' is not a finite number",
        "Power.Active.Import: '1e999' is not a finite number",
        "Energy.Active.Import.Register: '1e306' is not a finite number",  # × 1000 for kWh
    )
    assert not sample.empty


def test_meter_values_201_multiplier_overflow_dropped() -> None:
    sampled = [
        {"value": 5.0, "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "W", "multiplier": 400}},
        {"value": 5.0, "measurand": "SoC", "unit_of_measure": {"unit": "Percent"}},
    ]
    sample = parse_meter_values([{"timestamp": "2026-11-21T08:00:00Z", "sampled_value": sampled}], "2.0.1")
    assert sample.power_w is None and sample.soc_pct == 5.0
    assert sample.dropped == ("Power.Active.Import: '5.0' is not a finite number",)


def test_log_throttle(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.throttle")
    clock = FakeClock()
    throttle = LogThrottle(logging.getLogger("test.throttle"), clock, 60.0)
    assert throttle.warning("deep", "frame %d", 1)
    assert not any(throttle.warning("deep", "frame %d", n) for n in range(2, 100))
    assert throttle.warning("answer", "another kind")  # kinds are throttled apart
    clock.advance(60.0)
    assert throttle.warning("deep", "frame %d", 100)
    assert [record.getMessage() for record in caplog.records] == [
        "frame 1",
        "another kind",
        "frame 100 (and 98 more like it since the last such line)",
    ]
