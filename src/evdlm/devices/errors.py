"""The read side's own exceptions: third-party errors are translated into these at the boundary.

Only the transports raise them; devices turn them into a reading of quality MISSING (with the
message as the reason), so a failing device is visible in the snapshot and never crashes a poll.
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base of every error the device layer raises."""


class TransportError(DeviceError):
    """The link could not carry the request (not connected, connection lost, backing off)."""


class DeviceTimeoutError(TransportError):
    """The device did not answer within the link's timeout."""


class ModbusExceptionResponse(DeviceError):
    """The device answered with a Modbus exception (illegal address, device failure, ...)."""

    def __init__(self, function_code: int, exception_code: int) -> None:
        super().__init__(f"Modbus exception code {exception_code} for function {function_code}")
        self.function_code = function_code
        self.exception_code = exception_code


class ProfileError(DeviceError):
    """A register-map profile is malformed or cannot be found."""


class DiscoveryError(DeviceError):
    """SunSpec discovery found no marker or no usable model."""


class BadResponseError(DeviceError):
    """A response had an unexpected shape (wrong register count, undecodable payload)."""
