"""Bounded JSON decoding of MQTT payloads (pure): size, nesting depth and finite numbers.

An MQTT payload is hostile input. Python's ``json`` module accepts ``NaN``/``Infinity`` and
``1e999`` (they become non-finite floats that poison every ``min()`` they reach), recurses once
per nesting level (a payload 100,000 levels deep raises ``RecursionError``, which no caller
expects), and takes any size. :func:`decode_json` checks the size first, then the nesting
depth with a linear, non-recursive scan of the bytes, then parses with hooks that mark every
non-finite or out-of-range number, and answers with the JSON pointer of the first one.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_MAX_DEPTH = 32
# Beyond a 64-bit integer no quantity evdlm reads means anything; float() of a larger one
# overflows to inf or raises.
MAX_INT_MAGNITUDE = 2**63

# A JSON string (escapes included) or one bracket. Strings are matched whole so brackets inside
# them do not count. An unterminated string runs to the end (as it does for a JSON parser), so
# every match attempt succeeds and, with the possessive loop, the scan is linear in the size.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)
_OPENERS = frozenset(b"[{")


class PayloadError(ValueError):
    """A payload evdlm will not use; ``pointer`` is the JSON pointer of the fault ("" = whole)."""

    def __init__(self, message: str, pointer: str = "") -> None:
        super().__init__(f"{message} at {pointer!r}" if pointer else message)
        self.message = message
        self.pointer = pointer


class _Unusable:
    """Stands in, during parsing, for a number that cannot be used (found afterwards by a walk)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def nesting_depth(payload: bytes, limit: int) -> int:
    """Deepest ``[``/``{`` nesting in ``payload``, counting no further than ``limit + 1``.

    Linear and non-recursive: brackets inside strings do not count. On malformed input the
    figure may be too high, never too low for the part a JSON parser would accept.
    """
    depth = deepest = 0
    for match in _TOKENS.finditer(payload):
        token = match.group()
        if len(token) != 1:
            continue  # a string
        if token[0] in _OPENERS:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


def pointer_of(parts: list[str | int]) -> str:
    """RFC 6901 JSON pointer of a path of keys and indices."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def _first_unusable(document: Any) -> tuple[str, str] | None:
    """Pointer and text of the first unusable number, walking iteratively (depth is bounded)."""
    stack: list[tuple[Any, list[str | int]]] = [(document, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _Unusable):
            return pointer_of(path), node.text
        if isinstance(node, dict):
            items: list[tuple[str | int, Any]] = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            continue
        # Reversed onto the stack, so the walk visits the document in order.
        stack.extend((value, [*path, key]) for key, value in reversed(items))
    return None


def decode_json(payload: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse one JSON payload within bounds; never raises anything but :class:`PayloadError`.

    Parameters
    ----------
    payload : bytes
        The message as received.
    max_bytes : int
        Larger payloads are refused before any parsing.
    max_depth : int
        Deepest nesting of arrays and objects accepted (a scalar is depth 0).

    Returns
    -------
    Any
        The document: dicts, lists, str, int (within ±2**63), finite float, bool, None.

    Raises
    ------
    PayloadError
        Too large, too deep, not UTF-8, not JSON, or a number that is NaN, infinite or out of
        range (``pointer`` says where).
    """
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes is over the {max_bytes}-byte limit")
    depth = nesting_depth(payload, max_depth)
    if depth > max_depth:
        raise PayloadError(f"nested deeper than {max_depth} levels")
    found = False

    def unusable(text: str) -> _Unusable:
        nonlocal found
        found = True
        return _Unusable(text)

    def parse_float(text: str) -> float | _Unusable:
        value = float(text)
        return value if math.isfinite(value) else unusable(text)

    def parse_int(text: str) -> int | _Unusable:
        if len(text) > 20:  # longer than any 64-bit integer: never convert it
            return unusable(text[:24] + "…")
        value = int(text)
        return value if abs(value) <= MAX_INT_MAGNITUDE else unusable(text)

    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        document = json.loads(text, parse_constant=unusable, parse_float=parse_float, parse_int=parse_int)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # the depth scan should make RecursionError impossible
        raise PayloadError(f"not JSON: {exc}") from None
    if found:
        where = _first_unusable(document)
        if where is not None:
            pointer, number = where
            raise PayloadError(f"number {number} is not finite or out of range", pointer)
    return document
