"""The EVSEs the controller stopped and blocked, kept across restarts (``var/restricted-evses.json``).

A restarted controller must know which stations its predecessor set Inoperative, or they stay
that way for good: it releases them once their rows have room (:mod:`evdlm.core.restriction`).
Written off the cycle by the controller's file writer; read as hostile input.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from evdlm import strict_json
from evdlm.core.memory import EvseKey
from evdlm.state_files import load_state, write_atomically

log = logging.getLogger("evdlm.control")

RESTRICTIONS_FORMAT = 1


def save_restrictions(path: Path, restricted: dict[EvseKey, str]) -> None:
    try:
        write_atomically(
            path,
            strict_json.dumps(
                {
                    "format": RESTRICTIONS_FORMAT,
                    "restricted": [
                        {"charger": charger_id, "evse": evse_id, "reason": reason}
                        for (charger_id, evse_id), reason in sorted(restricted.items())
                    ],
                },
                indent=1,
            ),
        )
    except OSError as exc:
        log.error("restricted EVSEs not saved to %s: %s", path, exc)


def _parse_restrictions(data: Any) -> dict[EvseKey, str]:
    if not isinstance(data, dict) or data.get("format") != RESTRICTIONS_FORMAT:
        raise ValueError(f"not a format {RESTRICTIONS_FORMAT} restrictions file")
    entries = data.get("restricted")
    if not isinstance(entries, list):
        raise ValueError("'restricted' must be a list")
    out: dict[EvseKey, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError(f"entry {entry!r} is not an object")
        charger_id, evse_id, reason = entry.get("charger"), entry.get("evse"), entry.get("reason", "")
        if not isinstance(charger_id, str) or isinstance(evse_id, bool) or not isinstance(evse_id, int):
            raise ValueError(f"entry {entry!r} needs a charger id and an EVSE number")
        out[(charger_id, evse_id)] = str(reason)
    return out


def load_restrictions(path: Path) -> dict[EvseKey, str]:
    """The EVSEs a previous run left stopped and blocked (empty when none or unreadable)."""
    restricted = load_state(path, _parse_restrictions) or {}
    if restricted:
        log.warning(
            "%d EVSE(s) left blocked by the previous run (%s): released once their rows have room",
            len(restricted),
            ", ".join(f"{c}/{e}" for c, e in sorted(restricted)),
        )
    return restricted
