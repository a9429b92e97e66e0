"""Answers to idTags (1.6 Authorize / StartTransaction idTagInfo, 2.0.1 idTokenInfo): pure, no I/O.

    authorizer = Authorizer.from_config(site_config.ocpp.authorization)
    decision = authorizer.decide("04A1B2C3D4", clock.now_s())      # evdlm is the CSMS
    authorizer.remember("04A1B2C3D4", "Accepted", None, now_s)       # a CSMS's answer (Local Controller)
    decision = authorizer.offline_decide("04A1B2C3D4", now_s)        # that CSMS is unreachable

idTags compare case-insensitively (OCPP 1.6 IdToken is a CiString20Type; 2.0.1 IdTokenType.idToken:
"IdToken is case insensitive"): keys are ``str.casefold()`` of the tag, so ``04a1b2`` and ``04A1B2``
are one card. No authorization section (``None``) means free vending, as before the section existed.

The answer cache is an LRU of at most :data:`CACHE_CAPACITY` idTags; an entry whose expiry has
passed is never served (it is dropped when met). It is filled only by :meth:`Authorizer.remember`
(the Local Controller relaying a CSMS's answers) and read only offline.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from evdlm.config.models import OcppAuthorization

CACHE_CAPACITY = 10_000
ACCEPTED = "Accepted"
Source = Literal["local_list", "accept_all", "cache", "unknown"]


@dataclass(frozen=True)
class AuthDecision:
    status: str  # Accepted, Blocked, Expired, Invalid (a CSMS's cached answer may be any OCPP status)
    expiry_s: float | None = None  # epoch seconds the answer holds until (1.6 expiryDate, 2.0.1 cacheExpiryDateTime)
    parent_id_tag: str | None = None  # 1.6 parentIdTag, 2.0.1 groupIdToken
    source: Source = "unknown"

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


@dataclass(frozen=True)
class _Entry:
    status: str
    expiry_s: float | None
    parent_id_tag: str | None


def id_tag_key(id_tag: str) -> str:
    """The comparison key of an idTag (OCPP: case insensitive)."""
    return id_tag.casefold()


def mask_id_tag(id_tag: str) -> str:
    """An idTag fit for a log line: everything but its last 4 characters hidden (all of a short one)."""
    return "****" + id_tag[-4:] if len(id_tag) > 4 else "****"


class Authorizer:
    """The local list, the free-vending and unknown-idTag rules, and the bounded answer cache."""

    def __init__(
        self,
        *,
        accept_all: bool = False,
        local_list: dict[str, _Entry] | None = None,
        unknown: str = "Invalid",
        offline_policy: Literal["local_list", "accept_all", "reject_all"] = "local_list",
        cache_answers: bool = True,
        cache_capacity: int = CACHE_CAPACITY,
    ) -> None:
        self.accept_all = accept_all
        self._list = dict(local_list or {})
        self.unknown = unknown
        self.offline_policy = offline_policy
        self.cache_answers = cache_answers
        self.cache_capacity = cache_capacity
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    @classmethod
    def from_config(cls, config: OcppAuthorization | None) -> Authorizer:
        """``ocpp.authorization``; None (the section omitted) is free vending."""
        if config is None:
            return cls(accept_all=True)
        return cls(
            accept_all=config.accept_all,
            local_list={
                id_tag_key(entry.id_tag): _Entry(
                    entry.status,
                    entry.expiry.timestamp() if entry.expiry is not None else None,
                    entry.parent_id_tag,
                )
                for entry in config.local_list
            },
            unknown=config.unknown,
            offline_policy=config.offline_policy,
            cache_answers=config.cache_answers,
        )

    # ------------------------------------------------------------------ answers

    def decide(self, id_tag: str, now_s: float) -> AuthDecision:
        """The answer while evdlm is the CSMS: free vending, else the local list, else ``unknown``."""
        if self.accept_all:
            return AuthDecision(ACCEPTED, source="accept_all")
        listed = self._listed(id_tag, now_s)
        if listed is not None:
            return listed
        return AuthDecision(self.unknown, source="unknown")

    def offline_decide(self, id_tag: str, now_s: float) -> AuthDecision:
        """The answer while the operator's CSMS is unreachable: the local list, then the cache,
        then ``offline_policy`` (local_list: as ``unknown`` says; accept_all; reject_all: Invalid)."""
        listed = self._listed(id_tag, now_s)
        if listed is not None:
            return listed
        cached = self.cached(id_tag, now_s)
        if cached is not None:
            return cached
        if self.offline_policy == "accept_all":
            return AuthDecision(ACCEPTED, source="accept_all")
        if self.offline_policy == "reject_all":
            return AuthDecision("Invalid", source="unknown")
        return AuthDecision(self.unknown, source="unknown")

    def _listed(self, id_tag: str, now_s: float) -> AuthDecision | None:
        entry = self._list.get(id_tag_key(id_tag))
        if entry is None:
            return None
        status = entry.status
        if status == ACCEPTED and entry.expiry_s is not None and entry.expiry_s <= now_s:
            status = "Expired"
        return AuthDecision(status, entry.expiry_s, entry.parent_id_tag, "local_list")

    # ------------------------------------------------------------------ cache

    def remember(
        self, id_tag: str, status: str, expiry_s: float | None, now_s: float, parent_id_tag: str | None = None
    ) -> None:
        """Keep a CSMS's answer for ``id_tag`` (the most recent use first out of the LRU's way).
        No-op when ``cache_answers`` is off; an answer already expired is forgotten instead."""
        if not self.cache_answers:
            return
        key = id_tag_key(id_tag)
        if expiry_s is not None and expiry_s <= now_s:
            self._cache.pop(key, None)
            return
        self._cache[key] = _Entry(status, expiry_s, parent_id_tag)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_capacity:
            self._cache.popitem(last=False)

    def cached(self, id_tag: str, now_s: float) -> AuthDecision | None:
        """The remembered answer for ``id_tag``, or None (never one past its expiry)."""
        key = id_tag_key(id_tag)
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expiry_s is not None and entry.expiry_s <= now_s:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return AuthDecision(entry.status, entry.expiry_s, entry.parent_id_tag, "cache")

    def forget(self, id_tag: str | None = None) -> None:
        """Drop one idTag's cached answer, or every one (1.6 ClearCache, 2.0.1 ClearCache)."""
        if id_tag is None:
            self._cache.clear()
        else:
            self._cache.pop(id_tag_key(id_tag), None)

    @property
    def cache_size(self) -> int:
        """Cached answers held now (expired ones included until met)."""
        return len(self._cache)


def refusal_line(charger_id: str, action: str, id_tag: str, decision: AuthDecision) -> str:
    """The log line for an idTag not Accepted (the idTag masked)."""
    return f"{charger_id}: {action} idTag {mask_id_tag(id_tag)} answered {decision.status} ({decision.source})"
