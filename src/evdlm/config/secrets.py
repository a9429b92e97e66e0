"""Resolve secret references at run time. Values are never logged or printed."""

from __future__ import annotations

import os
from pathlib import Path

from evdlm.config.models import SecretRef


class SecretUnavailable(Exception):
    """A referenced secret cannot be read (the message names the reference, not the value)."""


def resolve_secret(ref: SecretRef, base_dir: Path = Path(".")) -> str:
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if value is None:
            raise SecretUnavailable(f"environment variable {ref.env} is not set")
        return value
    assert ref.file is not None  # SecretRef guarantees exactly one
    path = base_dir / ref.file
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretUnavailable(f"cannot read secret file {path}: {exc.strerror}") from None
