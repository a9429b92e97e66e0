"""Why is this car limited: the binding constraint the operator view shows, cycle by cycle.

Two cars on a 45 A circuit (tests/sessions/conftest.py): together they want 64 A, so the
circuit's fuse binds; a CSMS profile, a pause and the charger's own maximum each take over.
"""

from __future__ import annotations

from dataclasses import replace

from evdlm.api.operator_view import explain_report, state_document
from evdlm.core.clock import FakeClock
from evdlm.sessions.service import SessionService

from .conftest import NOW_S, FakeChargers, controller, session, site_config


async def test_each_cars_binding_constraint_follows_what_limits_it() -> None:
    config = site_config()
    clock = FakeClock(NOW_S)
    chargers = FakeChargers(session("A1"), session("A2"))
    service = SessionService(config, chargers, clock)
    control = controller(config, clock, chargers, service)
    topology = control.context.topology

    async def bindings() -> dict[str, tuple[str, str, float | None]]:
        clock.advance(1.0)
        report = await control.run_cycle()
        explained = explain_report(report, topology)
        document = state_document(report, topology, "s1", explained)
        return {e["charger"]: (e["binding"]["kind"], e["binding"]["source"], e["limit_a"]) for e in document["evses"]}

    for _ in range(3):  # admitted, then raised as the cuts land
        shown = await bindings()
    # 45 A less the 1 A margin and the 5 A the grid meter sees on each phase beyond the cars.
    assert shown["A1"][:2] == ("fuse", "main/L1 fuse") or shown["A2"][:2] == ("fuse", "main/L1 fuse"), shown
    assert sum(limit or 0 for _, _, limit in shown.values()) <= 44

    # The operator's CSMS caps A1 at 10 A: A1 says so, and A2 takes the room and meets its own maximum.
    chargers.states[("A1", 1)] = replace(chargers.states[("A1", 1)], csms_limit=10.0, csms_limit_unit="A")
    for _ in range(4):
        shown = await bindings()
    assert shown["A1"] == ("csms", "CSMS profile (10 A)", 10.0), shown
    assert shown["A2"][0] in ("evse_max", "fuse", "ramp"), shown
    if shown["A2"][2] == 32:
        assert shown["A2"][:2] == ("evse_max", "charger maximum (32 A)")

    # Paused by its session: 0 A, and why.
    assert service.submit(("A1", 1), {"pause": True}, "http").accepted
    shown = await bindings()
    assert shown["A1"] == ("session", "paused by its session", 0.0), shown

    # The car is gone: no session.
    chargers.end("A1")
    shown = await bindings()
    assert shown["A1"][0] == "no_session", shown
    await control.close()
