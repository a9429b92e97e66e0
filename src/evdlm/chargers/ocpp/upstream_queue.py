"""Local Controller mode: the messages a charger sent while the CSMS was unreachable, in order.

One append-only JSONL file per charger (``<queue_dir>/<charger id>.jsonl``) so a restart loses
nothing: every change is one line, the file is folded on load and rewritten (compacted) when the
queue has been replayed. Lines::

    {"op": "add", "seq": 7, "action": "MeterValues", "frame": [2, "id", "MeterValues", {...}], "local_tx": null}
    {"op": "done", "seq": 7}                     # replayed (the CSMS answered)
    {"op": "drop", "seq": 7}                     # dropped because the queue was full
    {"op": "map", "local": 2000000001, "csms": 4711}   # 1.6: a local transaction id and the CSMS's
    {"op": "next_local", "value": 2000000002}    # 1.6: the next local transaction id

Bounded: beyond ``max_messages`` the oldest droppable message (MeterValues, StatusNotification)
goes first; BootNotification, Start/StopTransaction and TransactionEvent are never dropped (the
queue then grows past its bound rather than lose a transaction). Drops are counted.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

LOG = logging.getLogger("evdlm.chargers.ocpp.upstream_queue")

# 1.6 transaction ids evdlm gives out while the CSMS is unreachable: the top of the int32 range
# (a CSMS numbering from 1 does not get there), counted per charger and persisted.
LOCAL_TRANSACTION_ID_BASE = 2_000_000_000
LOCAL_TRANSACTION_ID_MAX = 2**31 - 1
# Local → CSMS transaction id pairs kept per charger (the live transactions and some history).
MAX_MAPPINGS = 256


@dataclass(frozen=True)
class QueuedMessage:
    seq: int
    action: str
    frame: list[Any]  # the decoded CALL [2, id, action, payload] as the charger sent it
    droppable: bool
    local_tx: int | None = None  # 1.6 StartTransaction answered locally with this transaction id


def queue_path(queue_dir: Path, charger_id: str) -> Path:
    return queue_dir / f"{quote(charger_id, safe='')}.jsonl"


class UpstreamQueue:
    """The persisted queue of one charger (not thread-safe; one event loop)."""

    def __init__(self, path: Path, max_messages: int) -> None:
        self.path = path
        self.max_messages = max_messages
        self._items: OrderedDict[int, QueuedMessage] = OrderedDict()
        self._next_seq = 1
        self._next_local = LOCAL_TRANSACTION_ID_BASE + 1
        self.local_to_csms: dict[int, int] = {}
        self.dropped = 0  # messages dropped because the queue was full (since this process started)
        self._lines = 0  # lines in the file (compaction trigger)
        self._load()

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._items)

    def first(self) -> QueuedMessage | None:
        return next(iter(self._items.values()), None)

    def items(self) -> list[QueuedMessage]:
        return list(self._items.values())

    def csms_to_local(self, csms_id: int) -> int | None:
        for local, csms in self.local_to_csms.items():
            if csms == csms_id:
                return local
        return None

    # ------------------------------------------------------------------ changes

    def append(self, action: str, frame: list[Any], *, droppable: bool, local_tx: int | None = None) -> None:
        item = QueuedMessage(self._next_seq, action, frame, droppable, local_tx)
        self._next_seq += 1
        if len(self._items) >= self.max_messages:
            victim = next((queued for queued in self._items.values() if queued.droppable), None)
            if victim is None and droppable:
                victim = item  # nothing older may go: the new sample is the one dropped
            if victim is not None:
                self.dropped += 1
                LOG.warning(
                    "%s: upstream queue full (%d): %s dropped (%d so far)",
                    self.path.stem,
                    self.max_messages,
                    victim.action,
                    self.dropped,
                )
                if victim is item:
                    return
                del self._items[victim.seq]
                self._write({"op": "drop", "seq": victim.seq})
        self._items[item.seq] = item
        self._write(
            {
                "op": "add",
                "seq": item.seq,
                "action": action,
                "frame": frame,
                "droppable": droppable,
                "local_tx": local_tx,
            }
        )

    def done(self, seq: int) -> None:
        if self._items.pop(seq, None) is None:
            return
        if not self._items:
            self.compact()
        else:
            self._write({"op": "done", "seq": seq})

    def next_local_transaction_id(self) -> int:
        value = self._next_local
        self._next_local = value + 1 if value < LOCAL_TRANSACTION_ID_MAX else LOCAL_TRANSACTION_ID_BASE + 1
        self._write({"op": "next_local", "value": self._next_local})
        return value

    def map_transaction(self, local: int, csms: int) -> None:
        self.local_to_csms[local] = csms
        while len(self.local_to_csms) > MAX_MAPPINGS:
            del self.local_to_csms[next(iter(self.local_to_csms))]
        self._write({"op": "map", "local": local, "csms": csms})

    def compact(self) -> None:
        """Rewrite the file with only what is still needed (atomic: write, then rename)."""
        lines = [{"op": "next_local", "value": self._next_local}]
        lines += [{"op": "map", "local": local, "csms": csms} for local, csms in self.local_to_csms.items()]
        lines += [
            {
                "op": "add",
                "seq": item.seq,
                "action": item.action,
                "frame": item.frame,
                "droppable": item.droppable,
                "local_tx": item.local_tx,
            }
            for item in self._items.values()
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".jsonl.tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(json.dumps(line, separators=(",", ":")) + "\n")
        os.replace(temporary, self.path)
        self._lines = len(lines)

    # ------------------------------------------------------------------ file

    def _write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._lines += 1
        if self._lines > 4 * max(len(self._items), 64) + len(self.local_to_csms):
            self.compact()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        bad = 0
        for line in text.splitlines():
            try:
                record = json.loads(line)
                op = record["op"]
                if op == "add":
                    seq = int(record["seq"])
                    self._items[seq] = QueuedMessage(
                        seq, str(record["action"]), list(record["frame"]), bool(record["droppable"]), record["local_tx"]
                    )
                    self._next_seq = max(self._next_seq, seq + 1)
                elif op in ("done", "drop"):
                    self._items.pop(int(record["seq"]), None)
                elif op == "map":
                    self.local_to_csms[int(record["local"])] = int(record["csms"])
                elif op == "next_local":
                    self._next_local = max(self._next_local, int(record["value"]))
                else:
                    bad += 1
            except (ValueError, KeyError, TypeError):
                bad += 1  # e.g. the last line cut short by a crash
        if bad:
            LOG.warning("%s: %d unreadable line(s) skipped", self.path, bad)
        if self._items:
            LOG.info("%s: %d message(s) waiting for the CSMS", self.path.stem, len(self._items))
        self.compact()
