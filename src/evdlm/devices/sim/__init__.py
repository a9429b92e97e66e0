"""Simulated site and Modbus simulator servers (tests, demo, benchmarks)."""

from evdlm.devices.sim.servers import (
    Fault,
    FaultInjector,
    ProfileMeterUnit,
    SimModbusServer,
    SiteSimulators,
    SunSpecUnit,
    circuit_specs_for,
    sim_params_for,
    sunspec_battery_unit,
    sunspec_inverter_unit,
    sunspec_meter_unit,
)
from evdlm.devices.sim.site import CircuitSimSpec, SiteSimParams, SiteSimulation, SiteSnapshot

__all__ = [
    "CircuitSimSpec",
    "Fault",
    "FaultInjector",
    "ProfileMeterUnit",
    "SimModbusServer",
    "SiteSimParams",
    "SiteSimulation",
    "SiteSimulators",
    "SiteSnapshot",
    "SunSpecUnit",
    "circuit_specs_for",
    "sim_params_for",
    "sunspec_battery_unit",
    "sunspec_inverter_unit",
    "sunspec_meter_unit",
]
