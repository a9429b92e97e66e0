"""Backoff on failed logins at the OCPP handshake (HTTP Basic auth, security profiles 1 and 2).

Pure bookkeeping over an injected clock: the server asks :meth:`LoginGuard.hold_s` before it
looks at credentials, and reports each outcome with :meth:`LoginGuard.failed` /
:meth:`LoginGuard.succeeded`. See :class:`LoginGuard` for what an operator can expect.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, TypeVar

from evdlm.core.clock import Clock

LOG = logging.getLogger("evdlm.chargers.ocpp.server")

# Failures in a row after which a charge point id is held off from one address: enough for an
# installer typing a password, far too few to guess one.
FREE_FAILURES = 5
# Failures in a row from one address, whatever the id, after which the address is held off for
# ids that never logged in from it: password spraying across 1000 ids, unknown ids included.
SOURCE_FREE_FAILURES = 20
# The first hold, doubled with every further failure up to the cap.
FIRST_HOLD_S = 1.0
MAX_HOLD_S = 300.0
# A record without a failure for this long is forgotten: the next failure starts afresh.
FORGET_AFTER_S = 3600.0
# Records kept per table (least recently used dropped first): bounded memory whatever the
# number of addresses and ids an attacker tries.
MAX_ENTRIES = 4096

PairKey = tuple[str, str]  # (charge point id, source address)
K = TypeVar("K", PairKey, str)


@dataclass
class _Record:
    failures: int  # in a row
    last_failure_s: float
    held_until_s: float = -math.inf
    held: bool = False  # the hold was logged and not yet released


def source_address(remote_address: Any) -> str:
    """The peer's IP address (no port), IPv4-mapped IPv6 written as IPv4; "unknown" when absent."""
    if isinstance(remote_address, tuple) and remote_address:
        host = str(remote_address[0])
    elif isinstance(remote_address, str):
        host = remote_address
    else:
        return "unknown"
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host


class LoginGuard:
    """Failed Basic-auth logins slow down the one who fails, not the chargers that log in.

    What an operator can expect:

    - Per charge point id *and* source address: after :data:`FREE_FAILURES` failed logins in a
      row, that id is refused from that address with HTTP 429 and ``Retry-After`` for 1 s,
      then 2, 4, … up to 5 min for every further failure. While held, attempts are refused
      without looking at the password (the right one included: it would confirm a guess), so
      they test nothing and count for nothing; the first attempt after a hold is checked.
      An online guesser gets about 12 tries an hour per id and address instead of 700 a second.
    - Per source address: after :data:`SOURCE_FREE_FAILURES` failures in a row from one
      address (any ids, unknown ids included), that address is held the same way — except for
      ids that have logged in from it before (in this process): the other chargers behind a
      shared NAT or APN keep working while one of them has the wrong password.
    - Failures from one address never hold off a charger connecting from another one, even
      with the same id: someone who knows a charger's id cannot lock it out from elsewhere.
      That is why there is no id-wide lock; the cost is that guesses spread over many
      addresses are only slowed per address.
    - Behind one shared address (a reverse proxy terminating TLS, a NAT) an attacker guessing
      a charger's password and that charger cannot be told apart: the charger gets in on its
      first attempt after the current hold (at most 5 min).
    - A charger whose password was fixed gets in on its first attempt once its hold is over
      (≤ 5 min); a successful login clears its record. A restart of evdlm clears everything
      (memory only: nothing to clean up by hand, and nothing an attacker can fill on disk).
    - Log: the first few failures one line each, one line when a hold starts, one when it is
      released (a successful login, or :data:`FORGET_AFTER_S` without failures, noticed at the
      next attempt); nothing for the attempts refused in between, however many.
    - Memory: at most :data:`MAX_ENTRIES` records per table, least recently used dropped first
      (an attacker with more addresses than that can only make us forget holds early).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        free_failures: int = FREE_FAILURES,
        source_free_failures: int = SOURCE_FREE_FAILURES,
        first_hold_s: float = FIRST_HOLD_S,
        max_hold_s: float = MAX_HOLD_S,
        forget_after_s: float = FORGET_AFTER_S,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self._free_failures = free_failures
        self._source_free_failures = source_free_failures
        self._first_hold_s = first_hold_s
        self._max_hold_s = max_hold_s
        self._forget_after_s = forget_after_s
        self._max_entries = max_entries
        self._pairs: OrderedDict[PairKey, _Record] = OrderedDict()
        self._sources: OrderedDict[str, _Record] = OrderedDict()
        self._trusted: OrderedDict[PairKey, None] = OrderedDict()  # logged in from that address

    def hold_s(self, identity: str | None, source: str) -> float:
        """How long this attempt must wait (refuse it with 429); 0: check its credentials.

        ``identity``: the charge point id, or None for an id the site does not know.
        """
        now_s = self._clock.now_s()
        wait_s = 0.0
        if identity is not None:
            pair = self._record(self._pairs, (identity, source), now_s, f"{identity} from {source}")
            if pair is not None:
                wait_s = pair.held_until_s - now_s
            if (identity, source) in self._trusted:
                return max(0.0, wait_s)
        held_source = self._record(self._sources, source, now_s, f"logins from {source}")
        if held_source is not None:
            wait_s = max(wait_s, held_source.held_until_s - now_s)
        return max(0.0, wait_s)

    def failed(self, identity: str | None, source: str, reason: str) -> None:
        """A refused login: ``reason`` for the log (wrong password, unknown id)."""
        now_s = self._clock.now_s()
        held = False
        count = 0
        if identity is not None:
            pair = self._count(self._pairs, (identity, source), now_s, self._free_failures, f"{identity} from {source}")
            held, count = pair.held, pair.failures
        source_record = self._count(self._sources, source, now_s, self._source_free_failures, f"logins from {source}")
        if identity is None:
            held, count = source_record.held, source_record.failures
        if not held:
            free = self._free_failures if identity is not None else self._source_free_failures
            LOG.warning(
                "%s: refused, %s from %s (%d in a row; held off after %d)",
                identity if identity is not None else "login",
                reason,
                source,
                count,
                free,
            )

    def succeeded(self, identity: str, source: str) -> None:
        """Credentials were right: clear the id's record for that address and trust the pair."""
        pair = self._pairs.pop((identity, source), None)
        if pair is not None and pair.held:
            LOG.warning(
                "%s from %s: logged in after %d failed logins; no longer held off", identity, source, pair.failures
            )
        self._trusted[(identity, source)] = None
        self._trusted.move_to_end((identity, source))
        while len(self._trusted) > self._max_entries:
            self._trusted.popitem(last=False)

    # ------------------------------------------------------------------ records

    def _record(self, table: OrderedDict[K, _Record], key: K, now_s: float, label: str) -> _Record | None:
        """The live record of ``key``; a stale one is forgotten (and its hold released)."""
        record = table.get(key)
        if record is None:
            return None
        if now_s - record.last_failure_s > self._forget_after_s:
            del table[key]
            if record.held:
                LOG.warning(
                    "%s: no longer held off (no failed login for %.0f s after %d)",
                    label,
                    self._forget_after_s,
                    record.failures,
                )
            return None
        table.move_to_end(key)
        return record

    def _count(self, table: OrderedDict[K, _Record], key: K, now_s: float, free: int, label: str) -> _Record:
        record = self._record(table, key, now_s, label)
        if record is None:
            record = table[key] = _Record(failures=0, last_failure_s=now_s)
            while len(table) > self._max_entries:
                table.popitem(last=False)
        record.failures += 1
        record.last_failure_s = now_s
        if record.failures >= free:
            hold_s = min(self._first_hold_s * 2.0 ** (record.failures - free), self._max_hold_s)
            record.held_until_s = now_s + hold_s
            if not record.held:
                record.held = True
                LOG.warning(
                    "%s: %d failed logins in a row: refused (HTTP 429) for %.0f s, doubling up to %.0f s while "
                    "failures go on",
                    label,
                    record.failures,
                    hold_s,
                    self._max_hold_s,
                )
        return record
