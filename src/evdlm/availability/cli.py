"""``evdlm availability PATH [--month YYYY-MM] [--csv] [--config site.yaml]``.

PATH is the gateway's ledger (``var/availability.json``: read only, never set aside) or a
recording (a ``.jsonl.gz`` file or a folder of segments), from which the ledger is rebuilt by
replaying its cycles through the same classifier (:mod:`evdlm.availability.report`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from evdlm import strict_json
from evdlm.availability.report import csv_text, ledger_from_recording, port_rows, table_text
from evdlm.availability.store import parse_ledger
from evdlm.core.availability import AvailabilityLedger, month_of
from evdlm.recording import SUFFIX

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _latest_s(ledger: AvailabilityLedger) -> float | None:
    times = [port.last_s for port in ledger.ports.values() if port.last_s is not None]
    return max(times) if times else None


def availability_main(path: Path, *, month: str | None, as_csv: bool, config: Path | None) -> int:
    if month is not None and not MONTH.match(month):
        print(f"--month {month!r}: give YYYY-MM (e.g. 2026-11)", file=sys.stderr)
        return EXIT_USAGE
    config_text = config.read_text(encoding="utf-8") if config is not None else None
    excluded: tuple[str, ...] = ()
    now_s: float | None
    if path.is_dir() or path.name.endswith(SUFFIX):
        if path.is_dir() and not any(path.glob(f"*{SUFFIX}")):
            print(f"{path}: no recording segments (*{SUFFIX}) in this folder", file=sys.stderr)
            return EXIT_FAILED
        ledger, site = ledger_from_recording(path, config_text=config_text)
        if site is not None and site.availability is not None:
            excluded = tuple(site.availability.excluded_classes)
        now_s = None  # a recording credits up to its last cycle, nothing after
        reference_s = _latest_s(ledger)
    else:
        try:
            data = strict_json.loads(path.read_text(encoding="utf-8"))
            ledger = parse_ledger(data)
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
            print(f"{path}: not a readable availability ledger: {exc}", file=sys.stderr)
            return EXIT_FAILED
        saved = data.get("saved_s") if isinstance(data, dict) else None
        now_s = float(saved) if isinstance(saved, int | float) and not isinstance(saved, bool) else None
        reference_s = now_s if now_s is not None else _latest_s(ledger)
        if config_text is not None:
            from evdlm.config import parse_site_config

            site = parse_site_config(config_text, str(config)).config
            if site.availability is not None:
                excluded = tuple(site.availability.excluded_classes)
    if month is None:
        if reference_s is None:
            print(f"{path}: no ports in the ledger", file=sys.stderr)
            return EXIT_FAILED
        month = month_of(reference_s)
    rows = port_rows(ledger, month, now_s, excluded)
    sys.stdout.write(csv_text(rows) if as_csv else table_text(rows, month))
    return EXIT_OK
