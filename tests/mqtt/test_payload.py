"""Bounded JSON decoding of MQTT payloads: size, depth, finite numbers, linear time."""

from __future__ import annotations

import time

import pytest

from evdlm.mqtt.payload import PayloadError, decode_json, nesting_depth


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        (b'{"a": [1, NaN]}', "/a/1"),
        (b'{"x": {"y": [0, -Infinity]}}', "/x/y/1"),
        (b'{"v": Infinity}', "/v"),
        (b'{"v": 1e999}', "/v"),  # Python's json reads this as inf without any hook
        (b'{"v": -1e400}', "/v"),
        (b'{"v": 123456789012345678901234567890}', "/v"),  # beyond 64 bits
        (b'{"k~/": [NaN]}', "/k~0~1/0"),  # RFC 6901 escapes
        (b"NaN", ""),
    ],
)
def test_non_finite_and_out_of_range_numbers_are_refused_with_a_pointer(payload: bytes, pointer: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_json(payload)
    assert caught.value.pointer == pointer
    assert "not finite or out of range" in caught.value.message


@pytest.mark.parametrize("depth", [33, 3000, 100_000])
def test_deep_nesting_is_refused_without_recursion(depth: int) -> None:
    for payload in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        with pytest.raises(PayloadError, match="nested deeper than 32"):
            decode_json(payload, max_bytes=10**6)


def test_brackets_inside_strings_do_not_count() -> None:
    assert nesting_depth(b'{"s": "[[[[[[{{{{", "t": "\\"[["}', 40) == 1
    assert decode_json(b'{"s": "' + b"[" * 100 + b'"}') == {"s": "[" * 100}
    assert decode_json(b"[" * 32 + b"]" * 32) is not None  # exactly at the cap


def test_size_encoding_and_syntax() -> None:
    with pytest.raises(PayloadError, match="over the 1024-byte limit"):
        decode_json(b" " * 1025, max_bytes=1024)
    with pytest.raises(PayloadError, match="not UTF-8"):
        decode_json(b'{"a": "\xff"}')
    with pytest.raises(PayloadError, match="not JSON"):
        decode_json(b'{"a": ')
    assert decode_json(b'{"a": [1, 2.5, "x", null, true], "b": -9223372036854775808}') == {
        "a": [1, 2.5, "x", None, True],
        "b": -(2**63),
    }


@pytest.mark.parametrize(
    "payload",
    [
        b'"' + b'\\"' * 30_000,  # an unterminated string full of escaped quotes
        b'"' + b'\\"' * 30_000 + b"\\",
        b'"a' * 30_000,
        b"[" * 60_000,
    ],
)
def test_the_depth_scan_is_linear(payload: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(PayloadError):
        decode_json(payload)
    assert time.perf_counter() - started < 0.5  # quadratic would take tens of seconds
