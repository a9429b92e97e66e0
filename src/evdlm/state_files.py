"""State the gateway keeps across restarts: written atomically, read as hostile input.

A state file may be cut short by a power loss on a device without ``fsync`` guarantees, edited
by hand, or written by another version. Reading never stops the gateway: content that does not
parse, or whose shape the caller's ``parse`` rejects, is set aside as ``<name>.corrupt-<time>``
(kept for a post-mortem, never overwritten), one warning says so, and the caller starts without it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from evdlm import strict_json

log = logging.getLogger("evdlm.state")

T = TypeVar("T")


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` so a crash leaves the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    with temporary.open("w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def set_aside(path: Path, why: str) -> Path:
    """Rename an unusable state file to ``<name>.corrupt-<UTC time>`` and say so once."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
        counter += 1
    os.replace(path, target)
    log.warning("state file %s unusable (%s): kept aside as %s, starting without it", path, why, target.name)
    return target


def load_state(path: Path, parse: Callable[[Any], T]) -> T | None:
    """The state in ``path`` as ``parse`` makes it from the JSON, or None (absent or set aside).

    ``parse`` raises ``ValueError``, ``TypeError`` or ``KeyError`` for a shape it cannot use.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        set_aside(path, f"unreadable: {exc}")
        return None
    try:
        return parse(strict_json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        set_aside(path, str(exc) or type(exc).__name__)
        return None


def save_document(path: Path, document: Any, what: str) -> None:
    """Write ``document`` as strict JSON to ``path`` atomically; a failure is logged, not raised
    (the next save tries again; the gateway keeps running on what it holds)."""
    try:
        write_atomically(path, strict_json.dumps(document, indent=1))
    except OSError as exc:
        log.error("%s not saved to %s: %s", what, path, exc)


class SaveTimer:
    """When a state kept every cycle is due to be written: at most once per ``every_s``."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._saved_at_s = -math.inf

    def due(self, now_s: float) -> bool:
        if now_s - self._saved_at_s < self.every_s:
            return False
        self._saved_at_s = now_s
        return True
