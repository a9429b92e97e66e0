"""The write side: OCPP central system, charger link and charge-point simulator.

Only :mod:`evdlm.chargers.ocpp` imports ``ocpp`` and ``websockets``; this package and
:mod:`evdlm.chargers.planning` stay protocol neutral.
"""

from evdlm.chargers.errors import (
    ChargerCallError,
    ChargerError,
    ChargerOffline,
    ChargerTimeout,
)
from evdlm.chargers.planning import ChargerCapabilities, LinkSettings

__all__ = [
    "ChargerCallError",
    "ChargerCapabilities",
    "ChargerError",
    "ChargerOffline",
    "ChargerTimeout",
    "LinkSettings",
]
