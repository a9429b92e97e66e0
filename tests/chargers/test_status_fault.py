"""StatusNotification faults reach EvseState.fault (the availability ledger's `fault` class)."""

from __future__ import annotations

from charger_rig import site_config, wait_for
from raw_ocpp import TIMESTAMP, central_system, raw_charger

from evdlm.chargers.ocpp.v16 import fault_from_status


def test_fault_from_a_16_status() -> None:
    assert fault_from_status("Faulted", "GroundFailure", "E42") == "GroundFailure:E42"
    assert fault_from_status("Faulted", "NoError") == "Faulted"
    assert fault_from_status("Unavailable", "NoError") == "Unavailable"
    # An error code on a connector that still works is a warning (1.6 §4.9), not an outage.
    assert fault_from_status("Charging", "HighTemperature") is None
    assert fault_from_status("Available", "NoError") is None


async def test_16_fault_set_and_cleared_over_the_wire() -> None:
    config = site_config([{"id": "CP", "ocpp_version": "1.6", "evses": 2}])
    async with central_system(config) as central, raw_charger(central.port, "CP", "1.6") as cp:
        await cp.boot()

        def fault(evse: int) -> str | None:
            return central.evse_states()[("CP", evse)].fault

        status = {"connectorId": 1, "errorCode": "GroundFailure", "status": "Faulted", "vendorErrorCode": "E42"}
        assert (await cp.call("StatusNotification", status))[0] == 3
        await wait_for(lambda: fault(1) == "GroundFailure:E42", "the fault")
        assert fault(2) is None
        # Connector 0 is the whole charge point.
        await cp.call("StatusNotification", {"connectorId": 0, "errorCode": "PowerMeterFailure", "status": "Faulted"})
        await wait_for(lambda: fault(2) == "PowerMeterFailure", "the charge point's fault")
        await cp.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"})
        await wait_for(lambda: fault(1) is None, "the fault cleared")
        assert fault(2) == "PowerMeterFailure"


async def test_201_faulted_connector() -> None:
    config = site_config([{"id": "CS", "ocpp_version": "2.0.1"}])
    async with central_system(config) as central, raw_charger(central.port, "CS", "2.0.1") as cs:
        await cs.boot()
        status = {"timestamp": TIMESTAMP, "connectorStatus": "Faulted", "evseId": 1, "connectorId": 1}
        assert (await cs.call("StatusNotification", status))[0] == 3
        await wait_for(lambda: central.evse_states()[("CS", 1)].fault == "Faulted", "the fault")
        await cs.call("StatusNotification", {**status, "connectorStatus": "Available"})
        await wait_for(lambda: central.evse_states()[("CS", 1)].fault is None, "the fault cleared")
