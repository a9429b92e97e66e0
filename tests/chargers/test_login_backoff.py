"""Issue 13: failed Basic-auth logins are backed off per charge point id and source address,
without locking out a charger that logs in right from another address."""

from __future__ import annotations

import base64
import logging
import socket
from typing import Any

import pytest
from charger_rig import site_config, wait_for
from raw_ocpp import central_system
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from evdlm.chargers.ocpp.login_guard import LoginGuard, source_address
from evdlm.core.clock import FakeClock

PASSWORD_ENV = "EVDLM_TEST_CP_PASSWORD"
PASSWORD = "s3cret-pass"
OTHER_ADDRESS = "127.0.0.2"


def _guard(clock: FakeClock, **kwargs: Any) -> LoginGuard:
    settings: dict[str, Any] = {"free_failures": 3, "source_free_failures": 6, "first_hold_s": 1, "max_hold_s": 8}
    return LoginGuard(clock, **(settings | kwargs))


def _fail(guard: LoginGuard, times: int, identity: str | None = "CP1", source: str = "10.0.0.1") -> None:
    for _ in range(times):
        assert guard.hold_s(identity, source) == 0
        guard.failed(identity, source, "wrong password")


def test_hold_doubles_to_the_cap_and_a_success_clears_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    clock = FakeClock()
    guard = _guard(clock, source_free_failures=100)  # the id's hold alone
    _fail(guard, 2)
    assert guard.hold_s("CP1", "10.0.0.1") == 0
    guard.failed("CP1", "10.0.0.1", "wrong password")  # the third: held from now on
    holds = []
    for _ in range(6):
        hold_s = guard.hold_s("CP1", "10.0.0.1")
        holds.append(hold_s)
        clock.advance(hold_s)  # attempts while held are refused unread: only the next one counts
        assert guard.hold_s("CP1", "10.0.0.1") == 0
        guard.failed("CP1", "10.0.0.1", "wrong password")
    assert holds == [1, 2, 4, 8, 8, 8]
    assert guard.hold_s("CP1", "10.0.0.2") == 0  # another address is not held
    clock.advance(8)
    guard.succeeded("CP1", "10.0.0.1")
    assert guard.hold_s("CP1", "10.0.0.1") == 0
    messages = [record.getMessage() for record in caplog.records]
    assert sum("failed logins in a row" in m for m in messages) == 1  # one line when the hold starts
    assert sum("no longer held off" in m for m in messages) == 1  # one when it is released
    assert sum("refused, wrong password" in m for m in messages) == 2  # the failures before the hold only


def test_source_hold_spares_ids_that_logged_in_from_there() -> None:
    """Password spraying from one address holds the address, but not the chargers that have
    logged in from it (a NAT shared with one charger that has the wrong password)."""
    clock = FakeClock()
    guard = _guard(clock)
    guard.succeeded("GOOD", "10.0.0.9")
    for index in range(5):
        _fail(guard, 1, identity=f"CP{index}", source="10.0.0.9")
    _fail(guard, 1, identity=None, source="10.0.0.9")  # an unknown id counts for the address
    assert guard.hold_s("CP7", "10.0.0.9") == 1  # an id never seen from there: held
    assert guard.hold_s(None, "10.0.0.9") == 1
    assert guard.hold_s("GOOD", "10.0.0.9") == 0  # it logged in from there before
    assert guard.hold_s("CP7", "10.0.0.10") == 0


def test_records_are_forgotten_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    clock = FakeClock()
    guard = _guard(clock, forget_after_s=100, max_entries=3)
    _fail(guard, 3)
    assert guard.hold_s("CP1", "10.0.0.1") == 1
    clock.advance(101)
    assert guard.hold_s("CP1", "10.0.0.1") == 0
    assert any("no longer held off (no failed login" in record.getMessage() for record in caplog.records)
    for index in range(50):
        guard.failed(f"CP{index}", f"10.1.0.{index}", "wrong password")
        guard.succeeded(f"OK{index}", f"10.2.0.{index}")
    assert len(guard._pairs) <= 3 and len(guard._sources) <= 3 and len(guard._trusted) <= 3


def test_source_address() -> None:
    assert source_address(("127.0.0.1", 5000)) == "127.0.0.1"
    assert source_address(("::ffff:10.0.0.1", 5000, 0, 0)) == "10.0.0.1"
    assert source_address(("fe80::1", 5000, 0, 0)) == "fe80::1"
    assert source_address(None) == "unknown"


# --------------------------------------------------------------------------- over websockets


def _can_bind(address: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True


async def _handshake(port: int, password: str, address: str = "127.0.0.1", charger_id: str = "CP1") -> int:
    """The HTTP status of one handshake (101 when upgraded); Retry-After checked on 429."""
    token = base64.b64encode(f"{charger_id}:{password}".encode()).decode()
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/{charger_id}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {token}"},
            local_addr=(address, 0),
        ):
            return 101
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status == 429:
            assert int(exc.response.headers["Retry-After"]) >= 1
        return status


async def test_wrong_then_right_passwords_over_websockets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="evdlm.chargers")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    config = site_config(
        [{"id": "CP1", "ocpp_version": "1.6", "password": {"env": PASSWORD_ENV}}], ocpp={"security_profile": 1}
    )
    clock = FakeClock()
    two_sources = _can_bind(OTHER_ADDRESS)
    async with central_system(config, clock) as central:
        port = central.port
        statuses = [await _handshake(port, "guess") for _ in range(5)]
        assert statuses == [401] * 5
        # Held: a flood of guesses is refused unread, the right password too (it would confirm a guess).
        assert {await _handshake(port, "guess") for _ in range(100)} == {429}
        assert await _handshake(port, PASSWORD) == 429
        if two_sources:
            # The charger itself, from its own address: not held by someone else's failures.
            assert await _handshake(port, PASSWORD, OTHER_ADDRESS) == 101
            await wait_for(lambda: not central.online("CP1"), "disconnected")
        clock.advance(1.0)  # the first hold is over: one attempt is checked again
        assert await _handshake(port, "guess") == 401
        assert await _handshake(port, "guess") == 429  # ... and the hold doubled
        clock.advance(2.0)
        assert await _handshake(port, PASSWORD) == 101  # the fixed password gets in
        assert await _handshake(port, PASSWORD) == 101  # and its record is cleared
    messages = [record.getMessage() for record in caplog.records]
    assert sum("refused, wrong or missing Basic auth" in m for m in messages) == 4  # the 5th starts the hold
    assert sum("failed logins in a row" in m for m in messages) == 1
    assert sum("no longer held off" in m for m in messages) == 1
    assert not any("429" in m and "refused," in m for m in messages)  # the 429s log nothing


async def test_unknown_ids_count_for_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    config = site_config(
        [{"id": "CP1", "ocpp_version": "1.6", "password": {"env": PASSWORD_ENV}}], ocpp={"security_profile": 1}
    )
    clock = FakeClock()
    async with central_system(config, clock) as central:
        port = central.port
        assert await _handshake(port, PASSWORD) == 101  # CP1 has logged in from this address
        statuses = [await _handshake(port, "x", charger_id=f"NOBODY{index}") for index in range(25)]
        assert statuses[:20] == [404] * 20 and set(statuses[20:]) == {429}
        assert await _handshake(port, "x", charger_id="NOBODY") == 429
        assert await _handshake(port, PASSWORD) == 101  # spared: it logged in from here before
