"""JSON as evdlm writes and reads it: no NaN or Infinity tokens, either way.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default and reads them back; most other
consumers (browsers, Go, Rust, jq) reject them, and a NaN read back where a limit belongs
poisons every ``min()`` it meets. evdlm writes non-finite numbers as ``null`` and refuses them
when reading its own files.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _finite(document: Any) -> Any:
    """``document`` with every non-finite float replaced by None."""
    if isinstance(document, float):
        return document if math.isfinite(document) else None
    if isinstance(document, dict):
        return {key: _finite(value) for key, value in document.items()}
    if isinstance(document, list | tuple):
        return [_finite(value) for value in document]
    return document


def dumps(document: Any, **options: Any) -> str:
    """Strict JSON text of ``document`` (``json.dumps`` options apply); non-finite floats → null.

    The common case costs one ``json.dumps``: only a document that holds a non-finite number is
    walked and copied.
    """
    try:
        return json.dumps(document, allow_nan=False, **options)
    except ValueError:
        return json.dumps(_finite(document), allow_nan=False, **options)


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in JSON")


def loads(text: str | bytes) -> Any:
    """Parse JSON, refusing NaN / Infinity tokens (ValueError)."""
    return json.loads(text, parse_constant=_reject_constant)
