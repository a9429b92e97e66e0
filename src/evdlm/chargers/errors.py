"""Our own small exception hierarchy; ``ocpp`` and ``websockets`` errors are translated into it
at the adapter boundary (house rule 7) so callers never import a protocol library."""

from __future__ import annotations


class ChargerError(Exception):
    """A call to a charger did not produce an answer we can use."""


class ChargerOffline(ChargerError):
    """The charger has no open connection (or lost it during the call)."""


class ChargerTimeout(ChargerError):
    """The charger did not answer within ``ocpp.call_timeout_s``."""


class ChargerCallError(ChargerError):
    """The charger answered with a CALLERROR, or our request failed validation before sending."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description

    @property
    def means_unsupported(self) -> bool:
        """The charger does not implement the action at all: retrying elsewhere is pointless."""
        return self.code in ("NotImplemented", "NotSupported")
