"""Local Controller mode: the CSMS's profiles, absorbed and evaluated as the charger would (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evdlm.chargers.ocpp.csms_profiles import (
    MAX_PERIODS,
    CsmsCapabilities,
    CsmsProfileStore,
    cleared_charging_limit_payload,
)
from evdlm.chargers.ocpp.parse import iso_utc

NOW_S = 1_800_000_000.0  # 2027-01-15T08:00:00Z
V = 230.0
CAPS = CsmsCapabilities(max_stack_level=8, max_periods=48, evses=2)


def profile_16(
    profile_id: int,
    limit: float | list[tuple[int, float]],
    *,
    purpose: str = "TxDefaultProfile",
    level: int = 0,
    unit: str = "A",
    kind: str = "Absolute",
    start_s: float | None = NOW_S - 60,
    **extra: Any,
) -> dict[str, Any]:
    periods = [(0, limit)] if isinstance(limit, int | float) else limit
    schedule: dict[str, Any] = {
        "charging_rate_unit": unit,
        "charging_schedule_period": [{"start_period": s, "limit": value} for s, value in periods],
    }
    if start_s is not None:
        schedule["start_schedule"] = iso_utc(start_s)
    for key in ("duration",):
        if key in extra:
            schedule[key] = extra.pop(key)
    document: dict[str, Any] = {
        "charging_profile_id": profile_id,
        "stack_level": level,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": kind,
        "charging_schedule": schedule,
    }
    document.update(extra)
    return document


def profile_201(profile_id: int, limit: float, **options: Any) -> dict[str, Any]:
    document = profile_16(profile_id, limit, **options)
    document["id"] = document.pop("charging_profile_id")
    document["charging_schedule"] = [{"id": profile_id, **document["charging_schedule"]}]
    if document["charging_profile_purpose"] == "ChargePointMaxProfile":
        document["charging_profile_purpose"] = "ChargingStationMaxProfile"
    return document


def store_16() -> CsmsProfileStore:
    return CsmsProfileStore("1.6", CAPS)


def limit(store: CsmsProfileStore, evse: int = 1, at: float = NOW_S, **kw: Any) -> tuple[float, str] | None:
    return store.limit_at(evse, at, 3, V, **kw)


# ----------------------------------------------------------------- stack rules


def test_no_profile_no_limit() -> None:
    assert limit(store_16()) is None


def test_1_6_same_purpose_and_stack_level_replaces_and_other_ids_coexist() -> None:
    store = store_16()
    assert store.set_profile(1, profile_16(1, 20.0), NOW_S, None) == {"status": "Accepted"}
    assert store.set_profile(1, profile_16(2, 16.0), NOW_S, None) == {"status": "Accepted"}
    assert [p["charging_profile_id"] for p in store.profiles(1)] == [2]  # same purpose + level: replaced
    assert store.set_profile(1, profile_16(3, 10.0, level=1), NOW_S, None)["status"] == "Accepted"
    assert sorted(p["charging_profile_id"] for p in store.profiles()) == [2, 3]  # coexist
    assert limit(store) == (10.0, "A")  # the highest stack level wins, even when it is lower
    # The same id replaces whatever it was.
    store.set_profile(1, profile_16(3, 12.0, level=4), NOW_S, None)
    assert sorted(p["charging_profile_id"] for p in store.profiles()) == [2, 3] and limit(store) == (12.0, "A")
    # The other connector is not touched by connector 1's profiles.
    assert limit(store, evse=2) is None


def test_2_0_1_same_purpose_and_level_with_overlapping_validity_is_rejected() -> None:
    store = CsmsProfileStore("2.0.1", CAPS)
    assert store.set_profile(1, profile_201(1, 20.0), NOW_S, None) == {"status": "Accepted"}
    answer = store.set_profile(1, profile_201(2, 16.0), NOW_S, None)
    assert answer["status"] == "Rejected" and answer["status_info"]["reason_code"] == "DuplicateProfile"
    assert [p["id"] for p in store.profiles()] == [1]
    assert store.set_profile(1, profile_201(1, 16.0), NOW_S, None) == {"status": "Accepted"}  # by id: replaced
    assert limit(store) == (16.0, "A")


def test_tx_profile_overrules_tx_default_and_ends_with_its_transaction() -> None:
    store = store_16()
    store.set_profile(0, profile_16(1, 6.0, level=5), NOW_S, None)  # station-wide default, high level
    store.set_profile(1, profile_16(2, 25.0, purpose="TxProfile"), NOW_S, "42")
    assert limit(store, transaction_id="42") == (25.0, "A")  # TxProfile replaces any TxDefaultProfile
    store.end_transaction("42")
    assert limit(store) == (6.0, "A")
    assert store.profiles(1) == []


def test_tx_profile_without_a_transaction_or_for_another_is_rejected() -> None:
    store = store_16()
    assert store.set_profile(1, profile_16(2, 25.0, purpose="TxProfile"), NOW_S, None) == {"status": "Rejected"}
    assert "transaction" in (store.last_reason or "")
    other = profile_16(2, 25.0, purpose="TxProfile", transaction_id=7)
    assert store.set_profile(1, other, NOW_S, "8") == {"status": "Rejected"}
    assert store.set_profile(0, profile_16(2, 25.0, purpose="TxProfile"), NOW_S, "8") == {"status": "Rejected"}
    assert store.profiles() == []
    v201 = CsmsProfileStore("2.0.1", CAPS)
    assert v201.set_profile(1, profile_201(2, 25.0, purpose="TxProfile"), NOW_S, "tx")["status"] == "Rejected"
    ok = profile_201(2, 25.0, purpose="TxProfile", transaction_id="tx")
    assert v201.set_profile(1, ok, NOW_S, "tx") == {"status": "Accepted"}


def test_station_max_caps_every_evse_and_only_on_evse_0() -> None:
    store = store_16()
    store.set_profile(1, profile_16(1, 32.0), NOW_S, None)
    assert store.set_profile(0, profile_16(2, 6900.0, purpose="ChargePointMaxProfile", unit="W"), NOW_S, None) == {
        "status": "Accepted"
    }
    assert limit(store) == (6900.0, "W")  # binding: 10 A × 230 V × 3 < 32 A; in its own unit
    assert limit(store, evse=2) == (6900.0, "W")
    assert store.set_profile(1, profile_16(3, 10.0, purpose="ChargePointMaxProfile"), NOW_S, None) == {
        "status": "Rejected"
    }


def test_evse_own_default_beats_the_station_wide_one_at_the_same_level() -> None:
    store = store_16()
    store.set_profile(0, profile_16(1, 10.0), NOW_S, None)
    store.set_profile(1, profile_16(2, 20.0), NOW_S, None)
    assert limit(store, evse=1) == (20.0, "A") and limit(store, evse=2) == (10.0, "A")


def test_valid_to_expiry_falls_back_to_the_lower_level() -> None:
    store = store_16()
    store.set_profile(1, profile_16(1, 16.0), NOW_S, None)
    store.set_profile(1, profile_16(2, 8.0, level=3, valid_to=iso_utc(NOW_S + 600)), NOW_S, None)
    assert limit(store) == (8.0, "A")
    assert limit(store, at=NOW_S + 600) == (16.0, "A")
    store.expire(NOW_S + 601)
    assert [p["charging_profile_id"] for p in store.profiles()] == [1]


def test_duration_and_valid_from_bound_a_profile() -> None:
    store = store_16()
    store.set_profile(1, profile_16(1, 12.0, level=2, duration=300, start_s=NOW_S), NOW_S, None)
    store.set_profile(1, profile_16(2, 20.0, level=1, valid_from=iso_utc(NOW_S + 100)), NOW_S, None)
    assert limit(store, at=NOW_S - 1) is None
    assert limit(store, at=NOW_S + 50) == (12.0, "A")
    assert limit(store, at=NOW_S + 300) == (20.0, "A")


def test_recurring_daily_schedule() -> None:
    store = store_16()
    # Every day from 08:00 UTC: 10 A for 2 h, then 32 A.
    daily = profile_16(
        1, [(0, 10.0), (7200, 32.0)], kind="Recurring", recurrency_kind="Daily", start_s=NOW_S - 10 * 86_400
    )
    assert store.set_profile(1, daily, NOW_S - 10 * 86_400, None) == {"status": "Accepted"}
    assert limit(store, at=NOW_S + 60) == (10.0, "A")
    assert limit(store, at=NOW_S + 7200) == (32.0, "A")
    assert limit(store, at=NOW_S + 86_400 + 3600) == (10.0, "A")  # the next day again
    assert limit(store, at=NOW_S - 60) == (32.0, "A")  # the previous day's tail
    assert store.set_profile(1, profile_16(2, 5.0, kind="Recurring", start_s=NOW_S), NOW_S, None) == {
        "status": "Rejected"  # no recurrency_kind
    }


def test_relative_schedule_runs_from_the_session_start() -> None:
    store = store_16()
    relative = profile_16(1, [(0, 8.0), (600, 16.0)], kind="Relative", start_s=None)
    store.set_profile(1, relative, NOW_S, None)
    assert limit(store, session_started_s=NOW_S - 700) == (16.0, "A")
    assert limit(store, session_started_s=NOW_S - 100) == (8.0, "A")


# ----------------------------------------------------------------- GetCompositeSchedule


def test_composite_is_the_minimum_of_csms_and_evdlm_over_time() -> None:
    store = store_16()
    store.set_profile(1, profile_16(1, [(0, 16.0), (1800, 8.0)], start_s=NOW_S), NOW_S, None)
    answer = store.composite(1, NOW_S, 3600, "A", 10.0, NOW_S + 600, 6.0, 3, V)
    assert answer["status"] == "Accepted" and answer["connector_id"] == 1
    schedule = answer["charging_schedule"]
    assert schedule["charging_rate_unit"] == "A" and schedule["duration"] == 3600
    # evdlm's 10 A until its lease ends at 600 s, then the 6 A fail-safe (below the CSMS's 16 / 8 A).
    assert schedule["charging_schedule_period"] == [
        {"start_period": 0, "limit": 10.0},
        {"start_period": 600, "limit": 6.0},
    ]
    # A roomier evdlm: the CSMS's steps show.
    roomy = store.composite(1, NOW_S, 3600, "A", 32.0, None, 6.0, 3, V)["charging_schedule"]
    assert roomy["charging_schedule_period"] == [
        {"start_period": 0, "limit": 16.0},
        {"start_period": 1800, "limit": 8.0},
    ]
    starts = [p["start_period"] for p in roomy["charging_schedule_period"]]
    assert starts == sorted(set(starts))


def test_composite_converts_units_and_never_overstates() -> None:
    store = store_16()
    store.set_profile(1, profile_16(1, 16.0, start_s=NOW_S), NOW_S, None)
    watts = store.composite(1, NOW_S, 600, "W", 32.0, None, 6.0, 3, V)["charging_schedule"]
    assert watts["charging_rate_unit"] == "W"
    assert watts["charging_schedule_period"] == [{"start_period": 0, "limit": 16.0 * V * 3}]
    # evdlm's limit in W, asked in A: W ÷ (V × phases), rounded down to 0.1.
    amps = store.composite(1, NOW_S, 600, "A", 7000.0, None, None, 3, V, limit_unit="W")["charging_schedule"]
    assert amps["charging_schedule_period"] == [{"start_period": 0, "limit": 10.1}]  # 10.144… → 10.1


def test_composite_2_0_1_shape_and_rejections() -> None:
    store = CsmsProfileStore("2.0.1", CsmsCapabilities(rate_units=frozenset({"A"}), evses=1))
    answer = store.composite(1, NOW_S + 0.4, 900, None, 10.0, None, 6.0, 3, V)
    assert answer["status"] == "Accepted"
    schedule = answer["schedule"]
    assert schedule["evse_id"] == 1 and schedule["charging_rate_unit"] == "A"
    assert schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 10.0}]
    assert store.composite(1, NOW_S, 900, "W", 10.0, None, 6.0, 3, V)["status"] == "Rejected"  # unit
    assert store.composite(3, NOW_S, 900, "A", 10.0, None, 6.0, 3, V)["status"] == "Rejected"  # no EVSE 3
    assert store.composite(1, NOW_S, 0, "A", 10.0, None, 6.0, 3, V)["status"] == "Rejected"
    assert store.composite(1, NOW_S, 900, "A", None, None, None, 3, V)["status"] == "Rejected"  # nothing limits
    assert store.composite(1, NOW_S, 900, "A", None, None, None, 3, V, max_limit=32.0)["status"] == "Accepted"


def test_composite_of_a_daily_schedule_over_two_days() -> None:
    store = store_16()
    daily = profile_16(1, [(0, 10.0), (7200, 20.0)], kind="Recurring", recurrency_kind="Daily", start_s=NOW_S)
    store.set_profile(1, daily, NOW_S, None)
    periods = store.composite(1, NOW_S, 2 * 86_400, "A", 32.0, None, 6.0, 3, V)["charging_schedule"][
        "charging_schedule_period"
    ]
    assert periods == [
        {"start_period": 0, "limit": 10.0},
        {"start_period": 7200, "limit": 20.0},
        {"start_period": 86_400, "limit": 10.0},
        {"start_period": 86_400 + 7200, "limit": 20.0},
    ]


def test_composite_breaks_between_whole_seconds_take_the_lower_limit() -> None:
    store = store_16()
    store.set_profile(1, profile_16(1, 8.0, start_s=NOW_S + 10.5), NOW_S, None)
    periods = store.composite(1, NOW_S, 60, "A", 16.0, None, 6.0, 3, V)["charging_schedule"]["charging_schedule_period"]
    assert periods == [{"start_period": 0, "limit": 16.0}, {"start_period": 10, "limit": 8.0}]


# ----------------------------------------------------------------- Clear, GetChargingProfiles


def _three(store: CsmsProfileStore) -> None:
    store.set_profile(0, profile_16(1, 40.0, purpose="ChargePointMaxProfile"), NOW_S, None)
    store.set_profile(1, profile_16(2, 16.0, level=1), NOW_S, None)
    store.set_profile(2, profile_16(3, 16.0, level=2), NOW_S, None)


def test_clear_1_6_criteria() -> None:
    store = store_16()
    _three(store)
    assert store.clear({"id": 99}) == {"status": "Unknown"}
    assert store.clear({"id": 2, "connector_id": 2}) == {"status": "Accepted"}  # an id clears that one only
    assert sorted(p["charging_profile_id"] for p in store.profiles()) == [1, 3]
    assert store.clear({"connector_id": 2, "stack_level": 1}) == {"status": "Unknown"}  # AND
    assert store.clear({"charging_profile_purpose": "TxDefaultProfile", "stack_level": 2}) == {"status": "Accepted"}
    assert store.clear({"connector_id": 0}) == {"status": "Accepted"}
    assert store.profiles() == []
    _three(store)
    assert store.clear({}) == {"status": "Accepted"} and store.profiles() == []  # no field: everything


def test_clear_2_0_1_criteria() -> None:
    store = CsmsProfileStore("2.0.1", CAPS)
    store.set_profile(0, profile_201(1, 40.0, purpose="ChargePointMaxProfile"), NOW_S, None)
    store.set_profile(1, profile_201(2, 16.0, level=1), NOW_S, None)
    assert store.clear({"charging_profile_criteria": {"evse_id": 1}}) == {"status": "Accepted"}
    assert [p["id"] for p in store.profiles()] == [1]
    assert store.clear({"charging_profile_id": 1}) == {"status": "Accepted"} and store.profiles() == []
    assert store.clear({"charging_profile_criteria": "junk"}) == {"status": "Unknown"}


def test_get_charging_profiles_reports_what_is_stored() -> None:
    store = CsmsProfileStore("2.0.1", CAPS)
    sent = profile_201(2, 16.0, level=1, valid_to=iso_utc(NOW_S + 3600))
    sent["custom_data"] = {"vendor_id": "x"}  # not kept: the charger reports its own profile
    store.set_profile(1, sent, NOW_S, None)
    store.set_profile(0, profile_201(1, 40.0, purpose="ChargePointMaxProfile"), NOW_S, None)
    answer, reports = store.report_charging_profiles({"request_id": 5, "charging_profile": {}})
    assert answer == {"status": "Accepted"} and [r["evse_id"] for r in reports] == [0, 1]
    assert reports[0]["tbc"] is True and "tbc" not in reports[1]
    (reported,) = reports[1]["charging_profile"]
    assert reported["id"] == 2 and reported["valid_to"] == iso_utc(NOW_S + 3600) and "custom_data" not in reported
    answer, reports = store.report_charging_profiles({"request_id": 5, "charging_profile": {"stack_level": 7}})
    assert answer == {"status": "NoProfiles"} and reports == []


# ----------------------------------------------------------------- 2.0.1 NotifyChargingLimit


def test_notify_and_clear_charging_limit() -> None:
    store = CsmsProfileStore("2.0.1", CAPS)
    store.set_profile(1, profile_201(1, 32.0), NOW_S, None)
    assert store.charging_limit_notice(1, NOW_S, 32.0, "A", 3, V) is None  # not below
    action, payload = store.charging_limit_notice(1, NOW_S, 10.0, "A", 3, V) or ("", {})
    assert action == "NotifyChargingLimit"
    assert payload["charging_limit"]["charging_limit_source"] == "EMS" and payload["evse_id"] == 1
    assert payload["charging_schedule"][0]["charging_schedule_period"] == [{"start_period": 0, "limit": 10.0}]
    assert store.charging_limit_notice(1, NOW_S + 5, 10.5, "A", 3, V) is None  # not significant
    assert (store.charging_limit_notice(1, NOW_S + 5, 6.0, "A", 3, V) or ("",))[0] == "NotifyChargingLimit"
    assert store.charging_limit_notice(1, NOW_S + 9, 32.0, "A", 3, V) == (
        "ClearedChargingLimit",
        cleared_charging_limit_payload(1),
    )
    assert store.charging_limit_notice(1, NOW_S + 9, 32.0, "A", 3, V) is None
    assert CsmsProfileStore("1.6").charging_limit_notice(1, NOW_S, 1.0, "A", 3, V) is None


# ----------------------------------------------------------------- hostile input, persistence


@pytest.mark.parametrize(
    "change",
    [
        {"stack_level": 9},  # above the charger's maximum
        {"stack_level": -1},
        {"stack_level": True},
        {"charging_profile_purpose": "ChargingStationExternalConstraints"},
        {"charging_profile_purpose": "Whatever"},
        {"charging_profile_kind": "Sometimes"},
        {"charging_profile_id": 2**40},
        {"valid_from": "yesterday"},
        {"valid_to": iso_utc(NOW_S - 7200), "valid_from": iso_utc(NOW_S)},
        {"charging_schedule": None},
        {"charging_schedule": {"charging_rate_unit": "A", "charging_schedule_period": []}},
        {
            "charging_schedule": {
                "charging_rate_unit": "kW",
                "charging_schedule_period": [{"start_period": 0, "limit": 1}],
            }
        },
        {
            "charging_schedule": {
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 0, "limit": -1}],
            }
        },
        {
            "charging_schedule": {
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 0, "limit": float("nan")}],
            }
        },
        {
            "charging_schedule": {
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 0, "limit": float("inf")}],
            }
        },
        {
            "charging_schedule": {
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 5, "limit": 6}],
            }
        },
        {
            "charging_schedule": {
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 0, "limit": 6}, {"start_period": 0, "limit": 7}],
            }
        },
        {
            "charging_schedule": {
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": i, "limit": 6} for i in range(MAX_PERIODS + 1)],
            }
        },
        {
            "charging_schedule": {
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": i, "limit": 6} for i in range(49)],  # charger: 48
            }
        },
    ],
)
def test_hostile_profiles_are_rejected_and_nothing_is_stored(change: dict[str, Any]) -> None:
    store = store_16()
    document = profile_16(1, 16.0)
    document.update(change)
    assert store.set_profile(1, document, NOW_S, None) == {"status": "Rejected"}
    assert store.last_reason
    assert store.profiles() == []


def test_deep_nesting_unknown_evse_and_unit_the_charger_lacks_are_rejected() -> None:
    store = CsmsProfileStore("2.0.1", CsmsCapabilities(rate_units=frozenset({"A"})))
    deep: Any = {}
    for _ in range(10_000):
        deep = {"x": deep}
    nested = profile_201(1, 16.0)
    nested["custom_data"] = deep
    assert store.set_profile(1, nested, NOW_S, None)["status"] == "Rejected"
    assert store.set_profile(5, profile_201(1, 16.0), NOW_S, None)["status"] == "Rejected"
    assert store.set_profile(1, profile_201(1, 16.0, unit="W"), NOW_S, None)["status_info"]["reason_code"] == (
        "UnsupportedRateUnit"
    )
    no_start = profile_201(1, 16.0, start_s=None)
    assert store.set_profile(1, no_start, NOW_S, None)["status"] == "Rejected"  # 2.0.1 Absolute needs it
    assert store.profiles() == []


def test_full_store_rejects() -> None:
    store = CsmsProfileStore("1.6", CsmsCapabilities(max_profiles=2, max_stack_level=8))
    assert store.set_profile(1, profile_16(1, 16.0, level=0), NOW_S, None)["status"] == "Accepted"
    assert store.set_profile(1, profile_16(2, 16.0, level=1), NOW_S, None)["status"] == "Accepted"
    assert store.set_profile(1, profile_16(3, 16.0, level=2), NOW_S, None)["status"] == "Rejected"
    assert store.set_profile(1, profile_16(2, 10.0, level=1), NOW_S, None)["status"] == "Accepted"  # a replacement


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        "charging_profile_id",
        "id",
        "stack_level",
        "charging_profile_purpose",
        "charging_profile_kind",
        "recurrency_kind",
        "valid_from",
        "valid_to",
        "transaction_id",
        "charging_schedule",
    ]
)
profile_like = st.dictionaries(KEYS, junk, max_size=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(["1.6", "2.0.1"]),
    evse=st.one_of(st.integers(-2, 4), junk),
    document=st.one_of(profile_like, junk),
    criteria=st.one_of(profile_like, junk),
)
def test_junk_never_raises_and_rejected_stores_nothing(version: Any, evse: Any, document: Any, criteria: Any) -> None:
    store = CsmsProfileStore(version, CAPS)
    answer = store.set_profile(evse, document, NOW_S, "1")
    assert answer["status"] in ("Accepted", "Rejected")
    if answer["status"] == "Rejected":
        assert store.profiles() == []
    else:
        assert store.limit_at(1, NOW_S, 3, V) is None or store.limit_at(1, NOW_S, 3, V) is not None
        assert store.composite(1, NOW_S, 86_400, "A", 16.0, None, 6.0, 3, V)["status"] == "Accepted"
        assert CsmsProfileStore.from_json(store.to_json(), CAPS).profiles() == store.profiles()
    assert store.clear(criteria)["status"] in ("Accepted", "Unknown")
    store.report_charging_profiles(criteria)


def test_json_round_trip() -> None:
    store = store_16()
    _three(store)
    store.set_profile(1, profile_16(9, 25.0, purpose="TxProfile", level=3, valid_to=iso_utc(NOW_S + 60)), NOW_S, "77")
    again = CsmsProfileStore.from_json(store.to_json(), CAPS)
    assert again.profiles() == store.profiles() and again.installed() == store.installed()
    assert again.limit_at(1, NOW_S, 3, V, transaction_id="77") == (25.0, "A")
    with pytest.raises(ValueError):
        CsmsProfileStore.from_json('{"format": 1, "version": "1.6", "profiles": [{"x": NaN}]}')
    with pytest.raises(ValueError):
        CsmsProfileStore.from_json("[]")
    # A profile the charger no longer takes is left out, with why.
    smaller = CsmsProfileStore.from_json(store.to_json(), CsmsCapabilities(max_stack_level=1, evses=2))
    assert sorted(p["charging_profile_id"] for p in smaller.profiles()) == [1, 2] and smaller.last_reason
