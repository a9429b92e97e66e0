"""The read side: meters, PV and batteries over Modbus (SunSpec or register-map profiles),
MQTT telemetry and simulators, turned into :class:`~evdlm.core.types.Reading` values.

The controller uses :class:`DeviceHub`; everything else here is its parts.
"""

from evdlm.devices.battery import BatteryControl
from evdlm.devices.hub import DeviceHub

__all__ = ["BatteryControl", "DeviceHub"]
