"""The CSMS's charging profiles in Local Controller mode: absorbed, evaluated, never forwarded (pure).

In Local Controller mode evdlm relays between the chargers and the operator's CSMS, but the
CSMS's SetChargingProfile / ClearChargingProfile / GetCompositeSchedule / GetChargingProfiles
stop here (``docs/local-controller.md``). A :class:`CsmsProfileStore` per charger keeps the
profiles the CSMS set, answers each request as the charger would, and evaluates the stack at
any time into the CSMS's limit (what the charger itself would have composed): that limit is an
upper bound on the EVSE in the allocation problem (``EvseState.csms_limit``), so the charger
gets min(site allocation, CSMS limit) through evdlm's own profiles.

Payloads are the ``ocpp`` library's snake_case shapes: ``set_profile`` takes the 1.6
``cs_charging_profiles`` or the 2.0.1 ``charging_profile`` dict and returns the
SetChargingProfile answer payload; ``composite`` returns the GetCompositeSchedule answer.
Hostile input never raises: a profile that is not what the schema and the charger allow is
Rejected with a reason (``last_reason``; 2.0.1 also in ``status_info``), and nothing is stored.

No I/O, no clock: every call takes ``now_s`` (epoch seconds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from evdlm import strict_json
from evdlm.chargers.ocpp.parse import MAX_TRANSACTION_ID_CHARS_201, iso_utc, parse_iso_s
from evdlm.chargers.planning import ChargerCapabilities

Version = Literal["1.6", "2.0.1"]
RateUnit = Literal["A", "W"]

# Hostile-input caps (far above any real charger: a profile beyond them is refused, not trimmed).
MAX_PERIODS = 1024  # schedule periods per profile
MAX_DEPTH = 12  # nesting of a profile dict (a 2.0.1 profile with salesTariff is ~8 deep)
MAX_NODES = 20_000  # dicts, lists and values in one profile
MAX_STRING_CHARS = 512
MAX_INT32 = 2**31 - 1
MAX_SCHEDULES_201 = 3
MAX_COMPOSITE_DURATION_S = 31 * 86_400  # a GetCompositeSchedule answer covers at most this
MAX_COMPOSITE_PERIODS = 1024
MAX_RECURRENCES = 800  # recurring cycles unrolled in one composite
RECURRENCE_S = {"Daily": 86_400, "Weekly": 7 * 86_400}
STORE_FORMAT = 1

PURPOSES: dict[str, tuple[str, ...]] = {
    "1.6": ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"),
    # ChargingStationExternalConstraints is the station's own; a CSMS must never set it.
    "2.0.1": ("ChargingStationMaxProfile", "TxDefaultProfile", "TxProfile"),
}
STATION_MAX = frozenset({"ChargePointMaxProfile", "ChargingStationMaxProfile"})
KINDS = ("Absolute", "Recurring", "Relative")


@dataclass(frozen=True)
class CsmsCapabilities:
    """What the charger would accept from a CSMS (so evdlm answers as it would)."""

    max_stack_level: int = 8  # ChargeProfileMaxStackLevel / SmartChargingCtrlr.ProfileStackLevel
    max_periods: int = 24  # ChargingScheduleMaxPeriods / PeriodsPerSchedule
    rate_units: frozenset[RateUnit] = frozenset({"A", "W"})  # ChargingScheduleAllowedChargingRateUnit
    max_profiles: int = 32  # MaxChargingProfilesInstalled (all EVSEs together)
    evses: int = 1  # EVSEs (1.6 connectors) of the charger: a higher id is Rejected

    @staticmethod
    def from_charger(caps: ChargerCapabilities, evses: int, max_profiles: int = 32) -> CsmsCapabilities:
        """From what evdlm learnt of the charger (``planning.ChargerCapabilities``)."""
        return CsmsCapabilities(
            max_stack_level=caps.reported_max_stack_level if caps.reported_max_stack_level is not None else 8,
            max_periods=min(caps.max_periods, MAX_PERIODS) if caps.max_periods is not None else 24,
            rate_units=caps.rate_units,
            max_profiles=max_profiles,
            evses=evses,
        )


@dataclass(frozen=True)
class Period:
    start_s: int  # startPeriod: seconds from the schedule's start
    limit: float
    number_phases: int | None


@dataclass(frozen=True)
class Schedule:
    unit: RateUnit
    periods: tuple[Period, ...]
    start_s: float | None  # startSchedule
    duration_s: int | None
    min_rate: float | None
    schedule_id: int | None  # 2.0.1 only


@dataclass(frozen=True)
class CsmsProfile:
    """One profile the CSMS set, parsed and checked."""

    evse_id: int
    profile_id: int
    stack_level: int
    purpose: str
    kind: str
    recurrency: str | None
    valid_from_s: float | None
    valid_to_s: float | None
    transaction_id: str | None
    schedules: tuple[Schedule, ...]  # 1.6: one; 2.0.1: 1–3, the first applies
    set_at_s: float  # when it was set (an Absolute 1.6 profile without startSchedule starts here)

    @property
    def schedule(self) -> Schedule:
        return self.schedules[0]


class Invalid(ValueError):
    """A profile or request the charger would refuse: ``code`` is the 2.0.1 reasonCode."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


# --------------------------------------------------------------------------- parsing


def _check_shape(document: object) -> None:
    """Depth and size caps, and no non-finite float anywhere (before anything else reads it)."""
    stack: list[tuple[object, int]] = [(document, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise Invalid("InvalidValue", f"profile has more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise Invalid("InvalidValue", f"profile nested deeper than {MAX_DEPTH}")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise Invalid("InvalidValue", "profile key is not a string")
                stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise Invalid("InvalidValue", "non-finite number")
        elif isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            raise Invalid("InvalidValue", "string too long")
        elif value is not None and not isinstance(value, bool | int | float | str):
            raise Invalid("InvalidValue", f"unexpected value of type {type(value).__name__}")


def _int(document: Mapping[str, Any], key: str, *, required: bool, low: int = 0, high: int = MAX_INT32) -> int | None:
    value = document.get(key)
    if value is None:
        if required:
            raise Invalid("MissingField", f"{key} missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("InvalidValue", f"{key} is not an integer")
    if not low <= value <= high:
        raise Invalid("InvalidValue", f"{key} {value} outside {low}..{high}")
    return value


def _number(document: Mapping[str, Any], key: str, *, required: bool) -> float | None:
    value = document.get(key)
    if value is None:
        if required:
            raise Invalid("MissingField", f"{key} missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("InvalidValue", f"{key} is not a number")
    number = float(value)
    if not math.isfinite(number) or number < 0 or number > 1e9:
        raise Invalid("InvalidValue", f"{key} {value!r} is not a finite non-negative rate")
    return number


def _time(document: Mapping[str, Any], key: str) -> float | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("InvalidValue", f"{key} is not a date-time")
    parsed = parse_iso_s(value)
    if parsed is None or not math.isfinite(parsed):
        raise Invalid("InvalidValue", f"{key} {value[:40]!r} is not a date-time")
    return parsed


def _choice(document: Mapping[str, Any], key: str, allowed: Iterable[str], *, required: bool) -> str | None:
    value = document.get(key)
    if value is None:
        if required:
            raise Invalid("MissingField", f"{key} missing")
        return None
    if not isinstance(value, str) or value not in allowed:
        raise Invalid("InvalidValue", f"{key} {str(value)[:40]!r} not one of {', '.join(allowed)}")
    return value


def _schedule(document: object, version: Version, caps: CsmsCapabilities) -> Schedule:
    if not isinstance(document, dict):
        raise Invalid("InvalidSchedule", "charging_schedule is not an object")
    unit = _choice(document, "charging_rate_unit", ("A", "W"), required=True)
    assert unit is not None
    if unit not in caps.rate_units:
        raise Invalid("UnsupportedRateUnit", f"the charger does not take limits in {unit}")
    raw_periods = document.get("charging_schedule_period")
    if not isinstance(raw_periods, list) or not raw_periods:
        raise Invalid("InvalidSchedule", "charging_schedule_period missing or empty")
    if len(raw_periods) > min(MAX_PERIODS, caps.max_periods):
        raise Invalid("InvalidSchedule", f"{len(raw_periods)} periods (the charger takes {caps.max_periods})")
    periods: list[Period] = []
    for raw in raw_periods:
        if not isinstance(raw, dict):
            raise Invalid("InvalidSchedule", "a period is not an object")
        start = _int(raw, "start_period", required=True)
        limit = _number(raw, "limit", required=True)
        phases = _int(raw, "number_phases", required=False, low=1, high=3)
        assert start is not None and limit is not None
        if periods and start <= periods[-1].start_s:
            raise Invalid("InvalidSchedule", "start_period not increasing")
        if not periods and start != 0:
            raise Invalid("InvalidSchedule", "the first start_period is not 0")
        periods.append(Period(start, limit, phases))
    return Schedule(
        unit=unit,  # type: ignore[arg-type]
        periods=tuple(periods),
        start_s=_time(document, "start_schedule"),
        duration_s=_int(document, "duration", required=False),
        min_rate=_number(document, "min_charging_rate", required=False),
        schedule_id=_int(document, "id", required=version == "2.0.1", low=-MAX_INT32) if version == "2.0.1" else None,
    )


def parse_profile(
    version: Version, evse_id: object, document: object, now_s: float, caps: CsmsCapabilities
) -> CsmsProfile:
    """The profile the CSMS sent, checked as the charger would (raises :class:`Invalid`)."""
    if isinstance(evse_id, bool) or not isinstance(evse_id, int) or not 0 <= evse_id <= caps.evses:
        raise Invalid("UnknownEvse", f"no EVSE {evse_id!r} on this charger")
    if not isinstance(document, dict):
        raise Invalid("InvalidProfile", "the profile is not an object")
    _check_shape(document)
    profile_id = _int(document, "charging_profile_id" if version == "1.6" else "id", required=True, low=-MAX_INT32)
    stack_level = _int(document, "stack_level", required=True)
    purpose = _choice(document, "charging_profile_purpose", PURPOSES[version], required=True)
    kind = _choice(document, "charging_profile_kind", KINDS, required=True)
    recurrency = _choice(document, "recurrency_kind", tuple(RECURRENCE_S), required=kind == "Recurring")
    assert profile_id is not None and stack_level is not None and purpose is not None and kind is not None
    if stack_level > caps.max_stack_level:
        raise Invalid("InvalidStackLevel", f"stack level {stack_level} above the charger's {caps.max_stack_level}")
    if purpose in STATION_MAX and evse_id != 0:
        raise Invalid("InvalidProfile", f"{purpose} only on EVSE 0")
    if purpose == "TxProfile" and evse_id == 0:
        raise Invalid("InvalidProfile", "TxProfile on EVSE 0")
    raw_transaction = document.get("transaction_id")
    transaction_id: str | None
    if raw_transaction is None:
        transaction_id = None
    elif version == "1.6":
        if isinstance(raw_transaction, bool) or not isinstance(raw_transaction, int):
            raise Invalid("InvalidValue", "transaction_id is not an integer")
        transaction_id = str(raw_transaction)
    else:
        if not isinstance(raw_transaction, str) or not 0 < len(raw_transaction) <= MAX_TRANSACTION_ID_CHARS_201:
            raise Invalid("InvalidValue", "transaction_id is not an identifier")
        transaction_id = raw_transaction
    if transaction_id is not None and purpose != "TxProfile":
        raise Invalid("InvalidProfile", "transaction_id on a profile other than TxProfile")
    schedules: tuple[Schedule, ...]
    if version == "1.6":
        schedules = (_schedule(document.get("charging_schedule"), version, caps),)
    else:
        raw_schedules = document.get("charging_schedule")
        if not isinstance(raw_schedules, list) or not 1 <= len(raw_schedules) <= MAX_SCHEDULES_201:
            raise Invalid("InvalidSchedule", "charging_schedule must hold 1 to 3 schedules")
        schedules = tuple(_schedule(raw, version, caps) for raw in raw_schedules)
    for schedule in schedules:
        if kind == "Recurring" and schedule.start_s is None:
            raise Invalid("InvalidSchedule", "Recurring without start_schedule")
        if version == "2.0.1" and kind == "Absolute" and schedule.start_s is None:
            raise Invalid("InvalidSchedule", "Absolute without start_schedule")
        if version == "2.0.1" and kind == "Relative" and schedule.start_s is not None:
            raise Invalid("InvalidSchedule", "Relative with start_schedule")
    valid_from, valid_to = _time(document, "valid_from"), _time(document, "valid_to")
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        raise Invalid("InvalidProfile", "valid_to not after valid_from")
    return CsmsProfile(
        evse_id=evse_id,
        profile_id=profile_id,
        stack_level=stack_level,
        purpose=purpose,
        kind=kind,
        recurrency=recurrency if kind == "Recurring" else None,
        valid_from_s=valid_from,
        valid_to_s=valid_to,
        transaction_id=transaction_id,
        schedules=schedules,
        set_at_s=float(now_s),
    )


def profile_payload(version: Version, profile: CsmsProfile) -> dict[str, Any]:
    """The stored profile as the charger reports it (canonical snake_case; nothing the CSMS added)."""
    schedules: list[dict[str, Any]] = []
    for schedule in profile.schedules:
        out: dict[str, Any] = {
            "charging_rate_unit": schedule.unit,
            "charging_schedule_period": [
                {"start_period": p.start_s, "limit": p.limit}
                | ({} if p.number_phases is None else {"number_phases": p.number_phases})
                for p in schedule.periods
            ],
        }
        if schedule.schedule_id is not None:
            out["id"] = schedule.schedule_id
        if schedule.start_s is not None:
            out["start_schedule"] = iso_utc(schedule.start_s)
        if schedule.duration_s is not None:
            out["duration"] = schedule.duration_s
        if schedule.min_rate is not None:
            out["min_charging_rate"] = schedule.min_rate
        schedules.append(out)
    payload: dict[str, Any] = {
        "charging_profile_id" if version == "1.6" else "id": profile.profile_id,
        "stack_level": profile.stack_level,
        "charging_profile_purpose": profile.purpose,
        "charging_profile_kind": profile.kind,
        "charging_schedule": schedules[0] if version == "1.6" else schedules,
    }
    if profile.recurrency is not None:
        payload["recurrency_kind"] = profile.recurrency
    if profile.valid_from_s is not None:
        payload["valid_from"] = iso_utc(profile.valid_from_s)
    if profile.valid_to_s is not None:
        payload["valid_to"] = iso_utc(profile.valid_to_s)
    if profile.transaction_id is not None:
        payload["transaction_id"] = int(profile.transaction_id) if version == "1.6" else profile.transaction_id
    return payload


# --------------------------------------------------------------------------- evaluation


def to_watts(limit: float, unit: RateUnit, phases: int, voltage_v: float) -> float:
    return limit if unit == "W" else limit * voltage_v * phases


def from_watts(power_w: float, unit: RateUnit, phases: int, voltage_v: float) -> float:
    return power_w if unit == "W" else power_w / (voltage_v * phases)


def _schedule_start(profile: CsmsProfile, t: float, anchor_s: float) -> float | None:
    """When the schedule's current run started at ``t`` (None: not started)."""
    schedule = profile.schedule
    if profile.kind == "Relative":
        start = anchor_s
    elif profile.kind == "Recurring":
        assert schedule.start_s is not None and profile.recurrency is not None
        cycle = RECURRENCE_S[profile.recurrency]
        if t < schedule.start_s:
            return None
        start = schedule.start_s + math.floor((t - schedule.start_s) / cycle) * cycle
    else:
        start = schedule.start_s if schedule.start_s is not None else profile.set_at_s
    return start if t >= start else None


def _in_force(profile: CsmsProfile, t: float, anchor_s: float) -> Period | None:
    """The period of ``profile`` in force at ``t`` (None: validity or schedule not covering ``t``)."""
    if profile.valid_from_s is not None and t < profile.valid_from_s:
        return None
    if profile.valid_to_s is not None and t >= profile.valid_to_s:
        return None
    start = _schedule_start(profile, t, anchor_s)
    if start is None:
        return None
    offset = t - start
    schedule = profile.schedule
    if schedule.duration_s is not None and offset >= schedule.duration_s:
        return None
    if profile.kind == "Recurring" and profile.recurrency is not None:
        # A period past the cycle's end never starts (the next cycle restarts the schedule).
        offset = min(offset, RECURRENCE_S[profile.recurrency])
    current = schedule.periods[0]
    for period in schedule.periods:
        if period.start_s > offset:
            break
        current = period
    return current


def _period_watts(profile: CsmsProfile, period: Period, phases: int, voltage_v: float) -> float:
    used = phases if period.number_phases is None else min(period.number_phases, phases)
    return to_watts(period.limit, profile.schedule.unit, used, voltage_v)


def _winner(candidates: Iterable[CsmsProfile], t: float, anchor_s: float) -> tuple[CsmsProfile, Period] | None:
    """Within one purpose: the highest stack level in force wins; at a tie the EVSE's own beats EVSE 0."""
    best: tuple[CsmsProfile, Period] | None = None
    for profile in candidates:
        period = _in_force(profile, t, anchor_s)
        if period is None:
            continue
        if best is None or (profile.stack_level, profile.evse_id != 0) > (best[0].stack_level, best[0].evse_id != 0):
            best = (profile, period)
    return best


def _breakpoints(profile: CsmsProfile, begin: float, end: float, anchor_s: float) -> list[float]:
    """Every time in (begin, end) where ``profile``'s contribution may change."""
    times: list[float] = []
    for value in (profile.valid_from_s, profile.valid_to_s):
        if value is not None:
            times.append(value)
    schedule = profile.schedule
    starts: list[float]
    if profile.kind == "Relative":
        starts = [anchor_s]
    elif profile.kind == "Recurring":
        assert schedule.start_s is not None and profile.recurrency is not None
        cycle = RECURRENCE_S[profile.recurrency]
        first = max(0, math.floor((begin - schedule.start_s) / cycle))
        last = max(0, math.floor((end - schedule.start_s) / cycle))
        starts = [schedule.start_s + k * cycle for k in range(first, min(last, first + MAX_RECURRENCES) + 1)]
    else:
        starts = [schedule.start_s if schedule.start_s is not None else profile.set_at_s]
    for start in starts:
        times.append(start)
        times.extend(start + period.start_s for period in schedule.periods)
        if schedule.duration_s is not None:
            times.append(start + schedule.duration_s)
    return [value for value in times if begin < value < end]


def _floor_tenth(value: float) -> float:
    """Down to one decimal (1.6 ``multipleOf 0.1``): a reported limit never overstates."""
    return math.floor(value * 10 + 1e-9) / 10


# --------------------------------------------------------------------------- the store


@dataclass
class CsmsProfileStore:
    """The CSMS's charging profiles of one charger, kept and answered as the charger would."""

    version: Version
    capabilities: CsmsCapabilities = field(default_factory=CsmsCapabilities)
    _profiles: list[CsmsProfile] = field(default_factory=list)
    last_reason: str | None = None  # why the last request was refused (for logs; 1.6 cannot say)
    _notified: dict[int, tuple[float, RateUnit]] = field(default_factory=dict)  # NotifyChargingLimit sent

    # ---------------------------------------------------------------- SetChargingProfile

    def set_profile(
        self, evse_id: int, profile: dict[str, Any], now_s: float, transaction_id: str | None
    ) -> dict[str, Any]:
        """Take a CSMS SetChargingProfile: the answer payload (``status`` Accepted / Rejected).

        ``transaction_id``: the transaction running on ``evse_id`` now (None: none). A TxProfile
        needs one (1.6 and 2.0.1 K01.FR.09) and, when it names one, the same.
        """
        try:
            parsed = parse_profile(self.version, evse_id, profile, now_s, self.capabilities)
            if parsed.purpose == "TxProfile":
                if transaction_id is None:
                    raise Invalid("TxNotFound", "TxProfile without a transaction on the EVSE")
                if parsed.transaction_id is None:
                    if self.version == "2.0.1":  # K01.FR.03
                        raise Invalid("MissingField", "TxProfile without transaction_id")
                    parsed = replace(parsed, transaction_id=str(transaction_id))
                elif parsed.transaction_id != str(transaction_id):
                    raise Invalid("TxNotFound", "TxProfile for another transaction")
            kept = [item for item in self._profiles if not self._replaced_by(item, parsed)]
            if len(kept) >= self.capabilities.max_profiles:
                raise Invalid(
                    "NoCapacity", f"{len(kept)} profiles installed (the charger keeps {self.capabilities.max_profiles})"
                )
        except Invalid as exc:
            return self._refused("Rejected", exc)
        self._profiles = [*kept, parsed]
        self.last_reason = None
        return {"status": "Accepted"}

    def _replaced_by(self, old: CsmsProfile, new: CsmsProfile) -> bool:
        if old.profile_id == new.profile_id:
            return True
        same_slot = (
            old.evse_id == new.evse_id
            and old.purpose == new.purpose
            and old.stack_level == new.stack_level
            and (new.purpose != "TxProfile" or old.transaction_id == new.transaction_id)
        )
        if not same_slot:
            return False
        if self.version == "1.6":
            return True  # 1.6 §3.13.2: same purpose and stack level replaces
        # 2.0.1 K01.FR.06: same purpose, stack level and EVSE with overlapping validity is refused.
        begins = max(old.valid_from_s or -math.inf, new.valid_from_s or -math.inf)
        ends = min(old.valid_to_s or math.inf, new.valid_to_s or math.inf)
        if begins < ends:
            raise Invalid("DuplicateProfile", f"profile {old.profile_id} has the same stack level and purpose")
        return False

    def _refused(self, status: str, exc: Invalid) -> dict[str, Any]:
        self.last_reason = str(exc)
        answer: dict[str, Any] = {"status": status}
        if self.version == "2.0.1":
            answer["status_info"] = {"reason_code": exc.code[:20], "additional_info": str(exc)[:512]}
        return answer

    # ---------------------------------------------------------------- ClearChargingProfile

    def clear(self, criteria: dict[str, Any]) -> dict[str, Any]:
        """Take a CSMS ClearChargingProfile (the request payload): ``status`` Accepted / Unknown.

        1.6: ``id``, or any AND of ``connector_id`` / ``charging_profile_purpose`` / ``stack_level``;
        2.0.1: ``charging_profile_id``, or ``charging_profile_criteria`` {``evse_id``,
        ``charging_profile_purpose``, ``stack_level``}. An id clears that profile only; no
        field at all clears every profile. Connector / EVSE 0 means the station-wide ones.
        """
        try:
            if not isinstance(criteria, dict):
                raise Invalid("InvalidValue", "criteria is not an object")
            _check_shape(criteria)
            if self.version == "1.6":
                profile_id = _int(criteria, "id", required=False, low=-MAX_INT32)
                filters: Mapping[str, Any] = criteria
                evse_key = "connector_id"
            else:
                profile_id = _int(criteria, "charging_profile_id", required=False, low=-MAX_INT32)
                inner = criteria.get("charging_profile_criteria") or {}
                if not isinstance(inner, dict):
                    raise Invalid("InvalidValue", "charging_profile_criteria is not an object")
                filters, evse_key = inner, "evse_id"
            evse_id = _int(filters, evse_key, required=False)
            purpose = _choice(filters, "charging_profile_purpose", PURPOSES[self.version], required=False)
            stack_level = _int(filters, "stack_level", required=False)
        except Invalid as exc:
            self.last_reason = str(exc)
            return {"status": "Unknown"}

        def matches(profile: CsmsProfile) -> bool:
            if profile_id is not None:
                return profile.profile_id == profile_id
            return (
                (evse_id is None or profile.evse_id == evse_id)
                and (purpose is None or profile.purpose == purpose)
                and (stack_level is None or profile.stack_level == stack_level)
            )

        kept = [profile for profile in self._profiles if not matches(profile)]
        cleared = len(kept) < len(self._profiles)
        self._profiles = kept
        self.last_reason = None if cleared else "no profile matches"
        return {"status": "Accepted" if cleared else "Unknown"}

    def end_transaction(self, transaction_id: str) -> None:
        """The transaction ended: its TxProfiles go (1.6 §3.13.1 and 2.0.1: a TxProfile ends with its transaction)."""
        self._profiles = [
            p for p in self._profiles if not (p.purpose == "TxProfile" and p.transaction_id == str(transaction_id))
        ]

    def expire(self, now_s: float) -> None:
        """Forget profiles whose validity has ended (so they stop taking room)."""
        self._profiles = [p for p in self._profiles if p.valid_to_s is None or p.valid_to_s > now_s]

    # ---------------------------------------------------------------- evaluation

    def _relevant(self, evse_id: int, transaction_id: str | None) -> list[CsmsProfile]:
        return [
            p
            for p in self._profiles
            if (p.evse_id == evse_id or p.evse_id == 0)
            and not (p.purpose == "TxProfile" and transaction_id is not None and p.transaction_id != transaction_id)
        ]

    def _limit_w(
        self, relevant: list[CsmsProfile], evse_id: int, t: float, anchor_s: float, phases: int, voltage_v: float
    ) -> tuple[float, float, RateUnit] | None:
        """The CSMS's composite at ``t``: (W for comparison, limit, unit of the binding profile)."""
        station = _winner((p for p in relevant if p.purpose in STATION_MAX), t, anchor_s)
        own: tuple[CsmsProfile, Period] | None = None
        if evse_id != 0:
            # TxProfile replaces TxDefaultProfile while it is in force.
            own = _winner((p for p in relevant if p.purpose == "TxProfile" and p.evse_id == evse_id), t, anchor_s)
            if own is None:
                own = _winner((p for p in relevant if p.purpose == "TxDefaultProfile"), t, anchor_s)
        best: tuple[float, float, RateUnit] | None = None
        for found in (station, own):
            if found is None:
                continue
            profile, period = found
            watts = _period_watts(profile, period, phases, voltage_v)
            if best is None or watts < best[0]:
                best = (watts, period.limit, profile.schedule.unit)
        return best

    def limit_at(
        self,
        evse_id: int,
        now_s: float,
        phases: int,
        voltage_v: float,
        *,
        transaction_id: str | None = None,
        session_started_s: float | None = None,
    ) -> tuple[float, RateUnit] | None:
        """The CSMS's limit on ``evse_id`` now, as the charger would compose it (None: no limit).

        Per purpose the highest stack level in force wins (the EVSE's own over EVSE 0 at a tie);
        a TxProfile in force replaces the TxDefaultProfile; the result is the lower of that and
        the station-wide max, returned in the binding profile's own unit (A per phase or W).
        Relative schedules run from ``session_started_s`` (else from ``now_s``).
        """
        relevant = self._relevant(evse_id, transaction_id)
        anchor = now_s if session_started_s is None else session_started_s
        found = self._limit_w(relevant, evse_id, now_s, anchor, phases, voltage_v)
        return None if found is None else (found[1], found[2])

    # ---------------------------------------------------------------- GetCompositeSchedule

    def composite(
        self,
        evse_id: int,
        now_s: float,
        duration_s: int,
        unit: RateUnit | None,
        evdlm_limit: float | None,
        evdlm_limit_until_s: float | None,
        failsafe_limit: float | None,
        phases: int,
        voltage_v: float,
        *,
        limit_unit: RateUnit = "A",
        max_limit: float | None = None,
        transaction_id: str | None = None,
        session_started_s: float | None = None,
    ) -> dict[str, Any]:
        """The GetCompositeSchedule answer: what the charger will really do over ``duration_s``.

        min(the CSMS's composite, evdlm's limit until ``evdlm_limit_until_s`` (its lease; None:
        no end), then ``failsafe_limit``), with ``evdlm_limit``, ``failsafe_limit`` and
        ``max_limit`` (the charger's own maximum, for times nothing else limits) in
        ``limit_unit``. ``unit`` (None: ``limit_unit``) must be one the charger takes, else
        Rejected. Limits are rounded down to 0.1: the answer never overstates.
        """
        unit = unit or limit_unit
        refused = self._composite_refusal(evse_id, duration_s, unit)
        if refused is not None:
            return refused
        begin = float(now_s)
        horizon = min(int(duration_s), MAX_COMPOSITE_DURATION_S)
        end = begin + horizon
        relevant = self._relevant(evse_id, transaction_id)
        anchor = begin if session_started_s is None else session_started_s
        times = {begin}
        for profile in relevant:
            times.update(_breakpoints(profile, begin, end, anchor))
        if evdlm_limit_until_s is not None and begin < evdlm_limit_until_s < end:
            times.add(evdlm_limit_until_s)

        def value_at(t: float) -> float:
            """The limit at ``t`` in watts (inf: nothing limits)."""
            limits = [math.inf]
            csms = self._limit_w(relevant, evse_id, t, anchor, phases, voltage_v)
            if csms is not None:
                limits.append(csms[0])
            own = evdlm_limit if evdlm_limit_until_s is None or t < evdlm_limit_until_s else failsafe_limit
            if evdlm_limit is None:
                own = failsafe_limit
            if own is not None:
                limits.append(to_watts(own, limit_unit, phases, voltage_v))
            if max_limit is not None:
                limits.append(to_watts(max_limit, limit_unit, phases, voltage_v))
            return min(limits)

        breaks = sorted(times)
        values = [value_at(t) for t in breaks]  # segment i holds values[i] over [breaks[i], breaks[i + 1])
        offsets = [t - begin for t in breaks]
        # Whole seconds: an integer period holds the lowest limit anywhere inside it.
        starts = sorted({0} | {math.floor(x) for x in offsets} | {math.ceil(x) for x in offsets})
        starts = [s for s in starts if s < horizon]
        periods: list[dict[str, Any]] = []
        for position, start in enumerate(starts):
            stop = starts[position + 1] if position + 1 < len(starts) else horizon
            low = min(
                value
                for index, value in enumerate(values)
                if offsets[index] < stop and (index + 1 == len(offsets) or offsets[index + 1] > start)
            )
            if math.isinf(low):
                return self._composite_refusal(evse_id, duration_s, unit, reason="nothing limits the EVSE") or {}
            limit = _floor_tenth(from_watts(low, unit, phases, voltage_v))
            if periods and periods[-1]["limit"] == limit:
                continue
            if len(periods) >= MAX_COMPOSITE_PERIODS:
                horizon = start
                break
            periods.append({"start_period": start, "limit": limit})
        schedule: dict[str, Any] = {
            "duration": horizon,
            "charging_rate_unit": unit,
            "charging_schedule_period": periods,
        }
        start_iso = iso_utc(begin)
        if self.version == "1.6":
            schedule["start_schedule"] = start_iso
            return {
                "status": "Accepted",
                "connector_id": evse_id,
                "schedule_start": start_iso,
                "charging_schedule": schedule,
            }
        schedule["evse_id"] = evse_id
        schedule["schedule_start"] = start_iso
        return {"status": "Accepted", "schedule": schedule}

    def _composite_refusal(
        self, evse_id: object, duration_s: object, unit: object, reason: str | None = None
    ) -> dict[str, Any] | None:
        if reason is None:
            if isinstance(evse_id, bool) or not isinstance(evse_id, int) or not 0 <= evse_id <= self.capabilities.evses:
                reason = f"no EVSE {evse_id!r}"
            elif isinstance(duration_s, bool) or not isinstance(duration_s, int) or duration_s <= 0:
                reason = f"duration {duration_s!r} is not a positive integer"
            elif unit not in self.capabilities.rate_units:
                reason = f"the charger does not report in {unit!r}"
            else:
                return None
        self.last_reason = reason
        if self.version == "1.6":
            return {"status": "Rejected"}
        return {"status": "Rejected", "status_info": {"reason_code": "NoSchedule", "additional_info": reason}}

    # ---------------------------------------------------------------- GetChargingProfiles

    def profiles(self, evse_id: int | None = None) -> list[dict[str, Any]]:
        """The stored profiles (of ``evse_id``, or all), as the charger reports them."""
        return [profile_payload(self.version, p) for p in self._profiles if evse_id is None or p.evse_id == evse_id]

    def installed(self) -> tuple[CsmsProfile, ...]:
        return tuple(self._profiles)

    def report_charging_profiles(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """2.0.1 GetChargingProfiles: (the answer payload, the ReportChargingProfiles payloads to send).

        ``request``: ``request_id``, ``evse_id`` (optional), ``charging_profile`` criteria
        (``charging_profile_purpose``, ``stack_level``, ``charging_profile_id`` list,
        ``charging_limit_source`` list). The CSMS's profiles have source CSO.
        """
        try:
            if not isinstance(request, dict):
                raise Invalid("InvalidValue", "request is not an object")
            _check_shape(request)
            request_id = _int(request, "request_id", required=True, low=-MAX_INT32)
            evse_id = _int(request, "evse_id", required=False)
            criteria = request.get("charging_profile") or {}
            if not isinstance(criteria, dict):
                raise Invalid("InvalidValue", "charging_profile is not an object")
            purpose = _choice(criteria, "charging_profile_purpose", PURPOSES["2.0.1"], required=False)
            stack_level = _int(criteria, "stack_level", required=False)
            ids = criteria.get("charging_profile_id")
            sources = criteria.get("charging_limit_source")
            if ids is not None and not (isinstance(ids, list) and all(type(i) is int for i in ids)):
                raise Invalid("InvalidValue", "charging_profile_id is not a list of integers")
            if sources is not None and not isinstance(sources, list):
                raise Invalid("InvalidValue", "charging_limit_source is not a list")
        except Invalid as exc:
            self.last_reason = str(exc)
            return {"status": "NoProfiles"}, []
        if sources is not None and "CSO" not in sources:
            return {"status": "NoProfiles"}, []
        chosen = [
            p
            for p in self._profiles
            if (evse_id is None or p.evse_id == evse_id)
            and (purpose is None or p.purpose == purpose)
            and (stack_level is None or p.stack_level == stack_level)
            and (ids is None or p.profile_id in ids)
        ]
        if not chosen:
            return {"status": "NoProfiles"}, []
        by_evse: dict[int, list[CsmsProfile]] = {}
        for profile in chosen:
            by_evse.setdefault(profile.evse_id, []).append(profile)
        reports: list[dict[str, Any]] = []
        for position, (evse, items) in enumerate(sorted(by_evse.items())):
            report: dict[str, Any] = {
                "request_id": request_id,
                "charging_limit_source": "CSO",
                "evse_id": evse,
                "charging_profile": [profile_payload("2.0.1", p) for p in items],
            }
            if position + 1 < len(by_evse):
                report["tbc"] = True
            reports.append(report)
        return {"status": "Accepted"}, reports

    # ---------------------------------------------------------------- 2.0.1 NotifyChargingLimit

    def charging_limit_notice(
        self,
        evse_id: int,
        now_s: float,
        evdlm_limit: float | None,
        limit_unit: RateUnit,
        phases: int,
        voltage_v: float,
        *,
        duration_s: int | None = None,
        significance: float = 0.1,
        transaction_id: str | None = None,
    ) -> tuple[Literal["NotifyChargingLimit", "ClearedChargingLimit"], dict[str, Any]] | None:
        """2.0.1 only: the message to send the CSMS now about the site's limit on ``evse_id``, if any.

        NotifyChargingLimit (source EMS) when evdlm's limit is below the CSMS's, again when it
        moves by more than ``significance`` (relative, as LimitChangeSignificance) from what was
        last told; ClearedChargingLimit once it no longer is (or ``evdlm_limit`` is None). The
        store remembers what it told (call this once per change of either limit; the relay sends).
        Without a CSMS limit nothing is told.
        """
        if self.version != "2.0.1":
            return None
        csms = self.limit_at(evse_id, now_s, phases, voltage_v, transaction_id=transaction_id)
        told = self._notified.get(evse_id)
        below = (
            evdlm_limit is not None
            and csms is not None
            and to_watts(evdlm_limit, limit_unit, phases, voltage_v) < to_watts(csms[0], csms[1], phases, voltage_v)
        )
        if not below:
            if told is None:
                return None
            del self._notified[evse_id]
            return "ClearedChargingLimit", cleared_charging_limit_payload(evse_id)
        assert evdlm_limit is not None
        if told is not None and told[1] == limit_unit:
            previous = told[0]
            if abs(evdlm_limit - previous) <= significance * max(previous, 1e-9):
                return None
        self._notified[evse_id] = (evdlm_limit, limit_unit)
        return "NotifyChargingLimit", notify_charging_limit_payload(
            evse_id, now_s, evdlm_limit, limit_unit, duration_s=duration_s
        )

    # ---------------------------------------------------------------- persistence

    def to_json(self) -> str:
        """Strict JSON of the stored profiles (``from_json`` reads it back)."""
        return strict_json.dumps(
            {
                "format": STORE_FORMAT,
                "version": self.version,
                "profiles": [
                    {
                        "evse_id": p.evse_id,
                        "set_at_s": p.set_at_s,
                        "transaction_id": p.transaction_id,
                        "profile": profile_payload(self.version, p),
                    }
                    for p in self._profiles
                ],
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str | bytes, capabilities: CsmsCapabilities | None = None) -> CsmsProfileStore:
        """A store from :meth:`to_json` (ValueError for a document that is not one).

        Each profile is checked again as on arrival (against ``capabilities``): one that no
        longer passes is left out, its reason in ``last_reason``.
        """
        document = strict_json.loads(text)
        if not isinstance(document, dict) or document.get("format") != STORE_FORMAT:
            raise ValueError("not a CSMS profile store")
        version = document.get("version")
        if version not in ("1.6", "2.0.1"):
            raise ValueError(f"unknown OCPP version {version!r}")
        items = document.get("profiles")
        if not isinstance(items, list):
            raise ValueError("profiles is not a list")
        store = CsmsProfileStore(version, capabilities or CsmsCapabilities())
        dropped: list[str] = []
        for item in items:
            try:
                if not isinstance(item, dict):
                    raise Invalid("InvalidValue", "entry is not an object")
                set_at = item.get("set_at_s")
                if isinstance(set_at, bool) or not isinstance(set_at, int | float) or not math.isfinite(set_at):
                    raise Invalid("InvalidValue", "set_at_s is not a time")
                parsed = parse_profile(
                    version, item.get("evse_id"), item.get("profile"), float(set_at), store.capabilities
                )
                transaction = item.get("transaction_id")
                if transaction is not None and not isinstance(transaction, str):
                    raise Invalid("InvalidValue", "transaction_id is not a string")
                if parsed.purpose == "TxProfile":
                    parsed = replace(parsed, transaction_id=transaction)
                store._profiles = [p for p in store._profiles if p.profile_id != parsed.profile_id] + [parsed]
            except Invalid as exc:
                dropped.append(str(exc))
        store.last_reason = "; ".join(dropped) or None
        return store


# --------------------------------------------------------------------------- 2.0.1 payloads


def notify_charging_limit_payload(
    evse_id: int, now_s: float, limit: float, unit: RateUnit, *, duration_s: int | None = None, schedule_id: int = 1
) -> dict[str, Any]:
    """NotifyChargingLimitRequest (snake_case): the site's limit on ``evse_id``, source EMS."""
    schedule: dict[str, Any] = {
        "id": schedule_id,
        "charging_rate_unit": unit,
        "start_schedule": iso_utc(now_s),
        "charging_schedule_period": [{"start_period": 0, "limit": _floor_tenth(max(0.0, limit))}],
    }
    if duration_s is not None:
        schedule["duration"] = int(duration_s)
    return {
        "charging_limit": {"charging_limit_source": "EMS", "is_grid_critical": False},
        "evse_id": evse_id,
        "charging_schedule": [schedule],
    }


def cleared_charging_limit_payload(evse_id: int) -> dict[str, Any]:
    """ClearedChargingLimitRequest (snake_case): the EMS limit on ``evse_id`` is gone."""
    return {"charging_limit_source": "EMS", "evse_id": evse_id}
