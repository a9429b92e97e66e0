"""The charge-point side of the simulator: a :class:`StationModel` on an OCPP 1.6 or 2.0.1 websocket.

A :class:`SimStation` keeps its cars charging while disconnected (they follow the installed
profiles, as real chargers do), reconnects with backoff, and queues transaction messages
while offline.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import random
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ocpp.exceptions import NotImplementedError as OcppNotImplementedError
from ocpp.exceptions import OCPPError
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from evdlm.chargers.ocpp.parse import iso_utc
from evdlm.chargers.ocpp.session import after_route, route
from evdlm.config.models import Charger
from evdlm.core.clock import Clock
from evdlm.sim.composite import parse_profile_16, parse_profile_201
from evdlm.sim.ev import Car
from evdlm.sim.station import Misbehaviour, StationModel

LOG = logging.getLogger("evdlm.sim.ocpp")

SUBPROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
HEARTBEAT_INTERVAL_S = 60.0
RECONNECT_BACKOFF_S = (0.05, 2.0)  # wall seconds: first retry, ceiling (doubling, with jitter)


class _SimWireLogger(logging.LoggerAdapter[logging.Logger]):
    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        # The library logs every CALLERROR a handler raises with a traceback; the ones the
        # simulator raises on purpose (a station without smart charging) are not its errors.
        if isinstance(sys.exc_info()[1], OCPPError):
            self.debug(msg, *args, **kwargs)
        else:
            super().exception(msg, *args, exc_info=exc_info, **kwargs)


SIM_WIRE_LOG = _SimWireLogger(logging.getLogger("evdlm.sim.ocpp.wire"), {})

Outbound = Callable[[], Awaitable[None]]

# How a transaction ended (1.6 Reason) → 2.0.1 triggerReason of the TransactionEvent Ended.
END_TRIGGERS_201 = {"EVDisconnected": "EVCommunicationLost", "Remote": "RemoteStop", "DeAuthorized": "Deauthorized"}
SMART_CHARGING_KEYS_16 = (
    "ChargeProfileMaxStackLevel",
    "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods",
    "MaxChargingProfilesInstalled",
)


def _not_implemented(action: str) -> OcppNotImplementedError:
    return OcppNotImplementedError(description=f"{action}: this station has no smart charging")


def _sample_16(measurand: str, value: float, unit: str, phase: str | None = None) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "value": f"{value:.1f}",
        "measurand": measurand,
        "unit": unit,
        "context": "Sample.Periodic",
    }
    if phase is not None:
        sample["phase"] = phase
    return sample


def _sample_201(measurand: str, value: float, unit: str, phase: str | None = None) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "value": round(value, 1),
        "measurand": measurand,
        "unit_of_measure": {"unit": unit},
        "context": "Sample.Periodic",
    }
    if phase is not None:
        sample["phase"] = phase
    return sample


def meter_samples(
    model: StationModel, evse_id: int, measurands: tuple[str, ...], make: Callable[..., dict[str, Any]]
) -> list[dict[str, Any]]:
    """Sampled values of one connector for the configured measurands."""
    connector = model.connectors[evse_id]
    out: list[dict[str, Any]] = []
    if "Current.Import" in measurands:
        for phase, value in zip(
            ("L1", "L2", "L3")[: model.phases], model.connector_phase_current_a(evse_id), strict=False
        ):
            out.append(make("Current.Import", value, "A", phase))
    if "Current.Offered" in measurands:
        out.append(make("Current.Offered", connector.offered_a, "A"))
    if "Power.Active.Import" in measurands:
        out.append(make("Power.Active.Import", model.power_w(evse_id), "W"))
    if "Energy.Active.Import.Register" in measurands:
        out.append(make("Energy.Active.Import.Register", connector.energy_register_wh, "Wh"))
    if "SoC" in measurands and connector.ev is not None:
        out.append(make("SoC", connector.ev.soc_pct, "Percent"))
    return out


class Disconnected(Exception):
    """The connection closed while a call waited for its answer."""


class _ClientMixin:
    station: SimStation
    reader: asyncio.Task[None] | None = None

    async def send(self, payload: Any) -> Any:
        """A call whose CALLERROR is logged, not raised: a simulated charger carries on.

        Races the reader so a closed connection ends the wait at once instead of after the
        library's response timeout.
        """
        pending = asyncio.ensure_future(
            self.call(payload, suppress=False, skip_schema_validation=not self.station.validate_frames)  # type: ignore[attr-defined]
        )
        waiters: set[asyncio.Future[Any]] = {pending}
        if self.reader is not None:
            waiters.add(self.reader)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not pending.done():
            pending.cancel()
            raise Disconnected(self.station.charger.id)
        try:
            return pending.result()
        except OCPPError as exc:
            LOG.warning("%s: %s answered with %s", self.station.charger.id, type(payload).__name__, exc)
            return None


def _apply_validation_choice(client: Any) -> None:
    if not client.station.validate_frames:
        for handlers in client.route_map.values():
            handlers["_skip_schema_validation"] = True


class SimClient16(_ClientMixin, ChargePoint16):  # type: ignore[misc]
    def __init__(self, station: SimStation, connection: ClientConnection) -> None:
        ChargePoint16.__init__(self, station.charger.id, connection, response_timeout=30, logger=SIM_WIRE_LOG)
        self.station = station
        _apply_validation_choice(self)

    @property
    def model(self) -> StationModel:
        return self.station.model

    @route("SetChargingProfile")
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        await self.station.answer_delay()
        if self.model.misbehaviour.no_smart_charging:
            self.station.profile_answers.append("NotImplemented")
            raise _not_implemented("SetChargingProfile")
        status = self.model.set_profile(parse_profile_16(connector_id, cs_charging_profiles))
        self.station.profile_answers.append(status)
        return result16.SetChargingProfile(status=status)

    @route("ClearChargingProfile")
    def on_clear_charging_profile(self, **criteria: Any) -> Any:
        if self.model.misbehaviour.no_smart_charging:
            raise _not_implemented("ClearChargingProfile")
        cleared = self.model.clear_profiles(
            criteria.get("id"),
            criteria.get("connector_id"),
            criteria.get("charging_profile_purpose"),
            criteria.get("stack_level"),
        )
        return result16.ClearChargingProfile(status="Accepted" if cleared else "Unknown")

    @route("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None) -> Any:
        values = {
            "ChargeProfileMaxStackLevel": str(self.model.advertised_max_stack_level()),
            "ChargingScheduleAllowedChargingRateUnit": self.model.advertised_rate_units(),
            "ChargingScheduleMaxPeriods": "24",
            "MaxChargingProfilesInstalled": "10",
            "MeterValuesSampledData": ",".join(self.model.measurands),
            "MeterValueSampleInterval": str(int(self.model.sample_interval_s)),
        }
        if self.model.misbehaviour.no_smart_charging:
            for name in SMART_CHARGING_KEYS_16:
                del values[name]
        wanted = key or list(values)
        return result16.GetConfiguration(
            configuration_key=[
                {"key": name, "readonly": False, "value": values[name]} for name in wanted if name in values
            ],
            unknown_key=[name for name in wanted if name not in values] or None,
        )

    @route("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str) -> Any:
        if key == "MeterValuesSampledData":
            self.model.measurands = tuple(part.strip() for part in value.split(",") if part.strip())
        elif key == "MeterValueSampleInterval":
            self.model.sample_interval_s = float(value)
        else:
            return result16.ChangeConfiguration(status="NotSupported")
        return result16.ChangeConfiguration(status="Accepted")

    @route("RemoteStopTransaction")
    def on_remote_stop_transaction(self, transaction_id: int) -> Any:
        stopped = self.station.stop_remotely(str(transaction_id))
        return result16.RemoteStopTransaction(status="Accepted" if stopped else "Rejected")

    @route("ChangeAvailability")
    def on_change_availability(self, connector_id: int, type: str) -> Any:  # `type`: the 1.6 field name
        return result16.ChangeAvailability(status=self.station.change_availability(connector_id, type == "Operative"))

    @route("TriggerMessage")
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None) -> Any:
        if requested_message not in ("StatusNotification", "MeterValues", "Heartbeat"):
            return result16.TriggerMessage(status="NotImplemented")
        return result16.TriggerMessage(status="Accepted")

    @after_route("TriggerMessage")
    async def after_trigger_message(self, requested_message: str, connector_id: int | None = None) -> None:
        connectors = [connector_id] if connector_id else list(self.model.connectors)
        for evse_id in connectors:
            if requested_message == "StatusNotification":
                await self.status(evse_id)
            elif requested_message == "MeterValues":
                await self.meter_values(evse_id)
        if requested_message == "Heartbeat":
            await self.send(call16.Heartbeat())

    # -------------------------------------------------------------- outbound

    async def boot(self) -> bool:
        answer = await self.send(call16.BootNotification(charge_point_model="evdlm-sim", charge_point_vendor="evdlm"))
        return answer is not None and answer.status == "Accepted"

    def status_of(self, evse_id: int) -> str:
        connector = self.model.connectors[evse_id]
        if not connector.operative and connector.transaction_id is None:
            return "Unavailable"
        if connector.car is None:
            return "Available"
        if connector.transaction_id is None:
            # Stopped (remotely, or refused) with the car still plugged in: 1.6 §4.9 Finishing.
            return "Finishing" if connector.idle else "Preparing"
        if connector.suspended_ev:
            return "SuspendedEV"
        if connector.offered_a <= 0:
            return "SuspendedEVSE"
        return "Charging"

    async def status(self, evse_id: int) -> None:
        await self.send(
            call16.StatusNotification(
                connector_id=evse_id,
                error_code="NoError",
                status=self.status_of(evse_id),
                timestamp=iso_utc(self.station.clock.now_s()),
            )
        )

    async def meter_values(self, evse_id: int) -> None:
        connector = self.model.connectors[evse_id]
        if connector.car is None:
            return
        samples = meter_samples(self.model, evse_id, self.model.measurands, _sample_16)
        await self.send(
            call16.MeterValues(
                connector_id=evse_id,
                transaction_id=int(connector.transaction_id) if connector.transaction_id else None,
                meter_value=[{"timestamp": iso_utc(self.station.clock.now_s()), "sampled_value": samples}],
            )
        )

    async def transaction_started(self, evse_id: int) -> None:
        connector = self.model.connectors[evse_id]
        assert connector.car is not None
        await self.status(evse_id)
        answer = await self.send(
            call16.StartTransaction(
                connector_id=evse_id,
                id_tag=connector.car.id_tag,
                meter_start=int(connector.energy_register_wh),
                timestamp=iso_utc(self.station.clock.now_s()),
            )
        )
        if answer is not None and connector.car is not None:
            connector.transaction_id = str(answer.transaction_id)
            if answer.id_tag_info.get("status") != "Accepted":
                # StopTransactionOnInvalidId (true here): the refused transaction ends at once.
                meter_stop_wh = connector.energy_register_wh
                transaction_id = self.model.stop_transaction(evse_id)
                await self.transaction_stopped(evse_id, transaction_id, meter_stop_wh, "DeAuthorized")
                return
        await self.status(evse_id)

    async def transaction_stopped(
        self, evse_id: int, transaction_id: str | None, meter_stop_wh: float, reason: str = "EVDisconnected"
    ) -> None:
        if transaction_id is not None:
            await self.send(
                call16.StopTransaction(
                    meter_stop=int(meter_stop_wh),
                    timestamp=iso_utc(self.station.clock.now_s()),
                    transaction_id=int(transaction_id),
                    reason=reason,
                )
            )
        await self.status(evse_id)

    async def suspended(self, evse_id: int) -> None:
        await self.status(evse_id)


class SimClient201(_ClientMixin, ChargePoint201):  # type: ignore[misc]
    def __init__(self, station: SimStation, connection: ClientConnection) -> None:
        ChargePoint201.__init__(self, station.charger.id, connection, response_timeout=30, logger=SIM_WIRE_LOG)
        self.station = station
        _apply_validation_choice(self)
        self._seq = itertools.count()

    @property
    def model(self) -> StationModel:
        return self.station.model

    @route("SetChargingProfile")
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        await self.station.answer_delay()
        if self.model.misbehaviour.no_smart_charging:
            self.station.profile_answers.append("NotImplemented")
            raise _not_implemented("SetChargingProfile")
        status = self.model.set_profile(parse_profile_201(evse_id, charging_profile))
        self.station.profile_answers.append(status)
        return result201.SetChargingProfile(status=status)

    @route("ClearChargingProfile")
    def on_clear_charging_profile(
        self, charging_profile_id: int | None = None, charging_profile_criteria: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        if self.model.misbehaviour.no_smart_charging:
            raise _not_implemented("ClearChargingProfile")
        criteria = charging_profile_criteria or {}
        cleared = self.model.clear_profiles(
            charging_profile_id,
            criteria.get("evse_id"),
            criteria.get("charging_profile_purpose"),
            criteria.get("stack_level"),
        )
        return result201.ClearChargingProfile(status="Accepted" if cleared else "Unknown")

    @route("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        smart = {
            "Enabled": "true",
            "RateUnit": "A" if self.model.advertised_rate_units() == "Current" else "A,W",
            "ProfileStackLevel": str(self.model.advertised_max_stack_level()),
            "PeriodsPerSchedule": "24",
        }
        results = []
        for item in get_variable_data:
            component = item["component"]["name"]
            variable = item["variable"]["name"]
            value = smart.get(variable) if component == "SmartChargingCtrlr" else None
            status = "Accepted" if value is not None else "UnknownVariable"
            if component == "SmartChargingCtrlr" and self.model.misbehaviour.no_smart_charging:
                value, status = None, "UnknownComponent"
            result: dict[str, Any] = {
                "attribute_status": status,
                "component": item["component"],
                "variable": item["variable"],
            }
            if value is not None:
                result["attribute_value"] = value
            results.append(result)
        return result201.GetVariables(get_variable_result=results)

    @route("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in set_variable_data:
            name = item["variable"]["name"]
            status = "UnknownVariable"
            if item["component"]["name"] == "SampledDataCtrlr" and name == "TxUpdatedMeasurands":
                self.model.measurands = tuple(part.strip() for part in item["attribute_value"].split(","))
                status = "Accepted"
            elif item["component"]["name"] == "SampledDataCtrlr" and name == "TxUpdatedInterval":
                self.model.sample_interval_s = float(item["attribute_value"])
                status = "Accepted"
            results.append({"attribute_status": status, "component": item["component"], "variable": item["variable"]})
        return result201.SetVariables(set_variable_result=results)

    # GetChargingProfiles / GetCompositeSchedule are not routed: the library answers them with
    # CALLERROR NotImplemented, as a station without smart charging does.

    @route("RequestStopTransaction")
    def on_request_stop_transaction(self, transaction_id: str, **_: Any) -> Any:
        stopped = self.station.stop_remotely(transaction_id)
        return result201.RequestStopTransaction(status="Accepted" if stopped else "Rejected")

    @route("ChangeAvailability")
    def on_change_availability(self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any) -> Any:
        evse_id = int(evse["id"]) if evse else 0
        return result201.ChangeAvailability(
            status=self.station.change_availability(evse_id, operational_status == "Operative")
        )

    @route("TriggerMessage")
    def on_trigger_message(self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any) -> Any:
        if requested_message not in ("StatusNotification", "MeterValues", "TransactionEvent", "Heartbeat"):
            return result201.TriggerMessage(status="NotImplemented")
        return result201.TriggerMessage(status="Accepted")

    @after_route("TriggerMessage")
    async def after_trigger_message(self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any) -> None:
        connectors = [evse["id"]] if evse else list(self.model.connectors)
        for evse_id in connectors:
            if requested_message == "StatusNotification":
                await self.status(evse_id)
            elif requested_message == "MeterValues":
                await self.meter_values_message(evse_id)
            elif requested_message == "TransactionEvent":
                await self.meter_values(evse_id, trigger="Trigger")
        if requested_message == "Heartbeat":
            await self.send(call201.Heartbeat())

    # -------------------------------------------------------------- outbound

    async def boot(self) -> bool:
        answer = await self.send(
            call201.BootNotification(charging_station={"model": "evdlm-sim", "vendor_name": "evdlm"}, reason="PowerUp")
        )
        return answer is not None and answer.status == "Accepted"

    def _charging_state(self, evse_id: int) -> str:
        connector = self.model.connectors[evse_id]
        if connector.suspended_ev:
            return "SuspendedEV"
        if connector.offered_a <= 0:
            return "SuspendedEVSE"
        return "Charging"

    async def status(self, evse_id: int) -> None:
        connector = self.model.connectors[evse_id]
        if not connector.operative and connector.transaction_id is None:
            connector_status = "Unavailable"
        else:
            connector_status = "Occupied" if connector.car is not None else "Available"
        await self.send(
            call201.StatusNotification(
                timestamp=iso_utc(self.station.clock.now_s()),
                connector_status=connector_status,
                evse_id=evse_id,
                connector_id=1,
            )
        )

    async def meter_values_message(self, evse_id: int) -> None:
        """A MeterValues request (outside transactions, or triggered)."""
        samples = meter_samples(self.model, evse_id, self.model.measurands, _sample_201)
        if samples:
            await self.send(
                call201.MeterValues(
                    evse_id=evse_id,
                    meter_value=[{"timestamp": iso_utc(self.station.clock.now_s()), "sampled_value": samples}],
                )
            )

    async def meter_values(self, evse_id: int, trigger: str = "MeterValuePeriodic") -> None:
        """During a transaction 2.0.1 stations report through TransactionEvent Updated."""
        connector = self.model.connectors[evse_id]
        if connector.car is None or connector.transaction_id is None:
            return
        samples = meter_samples(self.model, evse_id, self.model.measurands, _sample_201)
        if not samples:
            return
        await self._transaction_event(
            "Updated",
            evse_id,
            connector.transaction_id,
            trigger,
            meter_value=[{"timestamp": iso_utc(self.station.clock.now_s()), "sampled_value": samples}],
        )

    async def _transaction_event(
        self,
        event_type: str,
        evse_id: int,
        transaction_id: str,
        trigger: str,
        stopped_reason: str = "EVDisconnected",
        **extra: Any,
    ) -> Any:
        info: dict[str, Any] = {"transaction_id": transaction_id}
        if event_type != "Ended":
            info["charging_state"] = self._charging_state(evse_id)
        else:
            info["stopped_reason"] = stopped_reason
        return await self.send(
            call201.TransactionEvent(
                event_type=event_type,
                timestamp=iso_utc(self.station.clock.now_s()),
                trigger_reason=trigger,
                seq_no=next(self._seq),
                transaction_info=info,
                evse={"id": evse_id, "connector_id": 1},
                **extra,
            )
        )

    async def transaction_started(self, evse_id: int) -> None:
        connector = self.model.connectors[evse_id]
        car = connector.car
        assert car is not None and connector.transaction_id is not None
        await self.status(evse_id)
        answer = await self._transaction_event(
            "Started",
            evse_id,
            connector.transaction_id,
            "CablePluggedIn",
            id_token={"id_token": car.id_tag, "type": "ISO14443"},
        )
        token_info = getattr(answer, "id_token_info", None) or {}
        if answer is not None and token_info.get("status", "Accepted") != "Accepted":
            # StopTxOnInvalidId (true here): the refused transaction ends at once.
            meter_stop_wh = connector.energy_register_wh
            transaction_id = self.model.stop_transaction(evse_id)
            await self.transaction_stopped(evse_id, transaction_id, meter_stop_wh, "DeAuthorized")
            return
        if car.departure_at_s is not None or car.energy_needed_wh is not None:
            needs: dict[str, Any] = {
                "requested_energy_transfer": "AC_three_phase" if car.phases == 3 else "AC_single_phase",
                "ac_charging_parameters": {
                    "energy_amount": int(car.energy_needed_wh or 0),
                    "ev_min_current": int(car.min_current_a),
                    "ev_max_current": int(car.max_current_a),
                    "ev_max_voltage": 400,
                },
            }
            if car.departure_at_s is not None:
                needs["departure_time"] = iso_utc(car.departure_at_s)
            await self.send(call201.NotifyEVChargingNeeds(charging_needs=needs, evse_id=evse_id))

    async def transaction_stopped(
        self, evse_id: int, transaction_id: str | None, meter_stop_wh: float, reason: str = "EVDisconnected"
    ) -> None:
        if transaction_id is not None:
            await self._transaction_event(
                "Ended", evse_id, transaction_id, END_TRIGGERS_201.get(reason, "AbnormalCondition"), reason
            )
        await self.status(evse_id)

    async def suspended(self, evse_id: int) -> None:
        connector = self.model.connectors[evse_id]
        if connector.transaction_id is not None:
            await self._transaction_event("Updated", evse_id, connector.transaction_id, "ChargingStateChanged")


SimClient = SimClient16 | SimClient201


@dataclass(frozen=True)
class StationSecurity:
    """How the simulated station authenticates (security profiles 1–3)."""

    password: str | None = None
    ssl_context: ssl.SSLContext | None = None


class SimStation:
    """One simulated station: physics always, the OCPP connection when it can."""

    def __init__(
        self,
        charger: Charger,
        url: str,
        clock: Clock,
        voltage_v: float,
        *,
        security: StationSecurity | None = None,
        misbehaviour: Misbehaviour | None = None,
        tick_s: float = 1.0,
        boot_on_reconnect: bool = False,
        validate_frames: bool = True,
    ) -> None:
        self.charger = charger
        self.url = url.rstrip("/") + "/" + charger.id
        self.clock = clock
        self.model = StationModel(charger, voltage_v, misbehaviour)
        self.security = security or StationSecurity()
        self.tick_s = tick_s
        self.boot_on_reconnect = boot_on_reconnect
        # Schema checks of both directions; tests keep them on (they catch a server sending
        # invalid payloads). The scale benchmark turns them off: the simulator stands in for
        # devices with their own CPUs, and its checks would compete with the server measured.
        self.validate_frames = validate_frames
        self.connected = asyncio.Event()  # booted (or resumed) and talking
        self.connections = 0
        self.boots = 0
        # What we answered to SetChargingProfile, in order ("NotImplemented": the CALLERROR).
        self.profile_answers: list[str] = []
        self.last_refusal: int | None = None  # HTTP status of the last refused handshake
        self._outbox: list[Outbound] = []
        self._client: SimClient | None = None
        self._reboot = False
        self.stopped = False
        self._transaction_counter = itertools.count(1)

    @property
    def misbehaviour(self) -> Misbehaviour:
        return self.model.misbehaviour

    @misbehaviour.setter
    def misbehaviour(self, value: Misbehaviour) -> None:
        self.model.misbehaviour = value

    # -------------------------------------------------------------- cars

    def plug_in(self, evse_id: int, car: Car) -> None:
        """A car arrives: plugged in and (auto-)authorised; the transaction starts, or on an
        Inoperative connector waits until it is Operative again."""
        self.model.plug_in(evse_id, car, self._new_transaction_id(evse_id), self.clock.now_s())
        if self.model.connectors[evse_id].waiting:
            self._post(lambda client: client.status(evse_id))
        else:
            self._post(lambda client: client.transaction_started(evse_id))

    def _new_transaction_id(self, evse_id: int) -> str | None:
        if self.charger.ocpp_version != "2.0.1":
            return None  # 1.6: the central system assigns it in StartTransaction.conf
        # 2.0.1 stations name their transactions.
        return f"{self.charger.id}-{evse_id}-{next(self._transaction_counter)}"

    def stop_remotely(self, transaction_id: str) -> bool:
        """RemoteStopTransaction / RequestStopTransaction: end it, the car stays plugged in and
        stops drawing. False when no such transaction runs here."""
        evse_id = self.model.connector_of_transaction(transaction_id)
        if evse_id is None:
            return False
        if self.model.misbehaviour.ignore_remote_stop:
            return True
        meter_stop_wh = self.model.connectors[evse_id].energy_register_wh
        self.model.stop_transaction(evse_id)
        self._post(lambda client: client.transaction_stopped(evse_id, transaction_id, meter_stop_wh, "Remote"))
        return True

    def change_availability(self, evse_id: int, operative: bool) -> str:
        """ChangeAvailability of one connector (0: all); a waiting car starts once Operative."""
        status, startable = self.model.set_availability(evse_id, operative)
        if status == "Rejected":
            return status
        for target in list(self.model.connectors) if evse_id == 0 else [evse_id]:
            if target in startable:
                self.model.start_transaction(target, self._new_transaction_id(target), self.clock.now_s())
                self._post(lambda client, target=target: client.transaction_started(target))  # type: ignore[misc]
            else:
                self._post(lambda client, target=target: client.status(target))  # type: ignore[misc]
        return status

    def unplug(self, evse_id: int) -> None:
        connector = self.model.connectors[evse_id]
        transaction_id = connector.transaction_id
        meter_stop_wh = connector.energy_register_wh
        self.model.unplug(evse_id)
        self._post(lambda client: client.transaction_stopped(evse_id, transaction_id, meter_stop_wh))

    def _post(self, action: Callable[[SimClient], Awaitable[None]]) -> None:
        async def send() -> None:
            client = self._client
            if client is not None:
                await action(client)

        self._outbox.append(send)

    async def answer_delay(self) -> None:
        if self.model.misbehaviour.answer_delay_s > 0:
            await asyncio.sleep(self.model.misbehaviour.answer_delay_s)

    # -------------------------------------------------------------- readings

    def drawn_current_a(self) -> tuple[float, float, float]:
        """Current per charger phase L1..L3 (map onto site phases with the charger's rotation)."""
        return self.model.drawn_current_a()

    def offered_current_a(self, evse_id: int) -> float:
        return self.model.connectors[evse_id].offered_a

    # -------------------------------------------------------------- faults

    async def drop_connection(self, *, reboot: bool = False) -> None:
        """Close the websocket; the station reconnects (with BootNotification if ``reboot``)."""
        self._reboot = reboot
        client = self._client
        if client is not None:
            await client._connection.close()

    def stop(self) -> None:
        self.stopped = True

    # -------------------------------------------------------------- lifetime

    async def run(self) -> None:
        """Until :meth:`stop` (or cancellation): physics, and the connection with reconnects."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._physics(), name=f"sim-physics-{self.charger.id}")
            group.create_task(self._connection_loop(), name=f"sim-link-{self.charger.id}")

    async def _physics(self) -> None:
        while not self.stopped:
            for evse_id in self.model.advance(self.clock.now_s()):
                self._post(lambda client, evse_id=evse_id: client.suspended(evse_id))  # type: ignore[misc]
            await self.clock.sleep(self.tick_s)

    async def _connection_loop(self) -> None:
        delay_s = RECONNECT_BACKOFF_S[0]
        first = True
        while not self.stopped:
            headers = {}
            if self.security.password is not None:
                token = base64.b64encode(f"{self.charger.id}:{self.security.password}".encode()).decode()
                headers["Authorization"] = f"Basic {token}"
            try:
                async with connect(
                    self.url,
                    subprotocols=[SUBPROTOCOLS[self.charger.ocpp_version]],  # type: ignore[list-item]
                    additional_headers=headers,
                    ssl=self.security.ssl_context,
                    compression=None,
                    open_timeout=10,
                    ping_interval=None,  # OCPP heartbeats; websocket pings would double the traffic at scale
                ) as connection:
                    self.connections += 1
                    self.last_refusal = None
                    delay_s = RECONNECT_BACKOFF_S[0]
                    boot = first or self._reboot or self.boot_on_reconnect
                    first = False
                    self._reboot = False
                    await self._session(connection, boot=boot)
            except InvalidHandshake as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                self.last_refusal = int(status) if status is not None else -1
                LOG.info("%s: handshake refused: %s", self.charger.id, exc)
            except (OSError, ConnectionClosed, TimeoutError, Disconnected) as exc:
                LOG.debug("%s: connection lost: %r", self.charger.id, exc)
            finally:
                self._client = None
                self.connected.clear()
            if self.stopped:
                return
            await asyncio.sleep(delay_s * (0.5 + random.random()))
            delay_s = min(delay_s * 2, RECONNECT_BACKOFF_S[1])

    async def _session(self, connection: ClientConnection, *, boot: bool) -> None:
        client: SimClient = (
            SimClient16(self, connection) if self.charger.ocpp_version == "1.6" else SimClient201(self, connection)
        )
        reader = asyncio.create_task(client.start(), name=f"sim-reader-{self.charger.id}")
        client.reader = reader
        try:
            if boot:
                while not await client.boot():
                    await self.clock.sleep(HEARTBEAT_INTERVAL_S)
                self.boots += 1
                for evse_id in self.model.connectors:
                    await client.status(evse_id)
            else:
                # Resumed without reboot: a heartbeat tells the central system we are back.
                await client.send(call16.Heartbeat() if isinstance(client, SimClient16) else call201.Heartbeat())
            self._client = client
            self.connected.set()
            await self._talk(client, reader)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _talk(self, client: SimClient, reader: asyncio.Task[None]) -> None:
        last_sample_s = float("-inf")
        next_heartbeat_s = self.clock.now_s() + HEARTBEAT_INTERVAL_S
        while not self.stopped and not reader.done():
            while self._outbox:
                # Removed only once sent: transaction messages survive a dropped connection.
                await self._outbox[0]()
                self._outbox.pop(0)
            now_s = self.clock.now_s()
            # Compared with the interval each time: a new MeterValueSampleInterval applies at once.
            if now_s >= last_sample_s + self.model.sample_interval_s:
                for evse_id, connector in self.model.connectors.items():
                    if connector.car is not None:
                        await client.meter_values(evse_id)
                last_sample_s = now_s
            if now_s >= next_heartbeat_s:
                await client.send(call16.Heartbeat() if isinstance(client, SimClient16) else call201.Heartbeat())
                next_heartbeat_s = now_s + HEARTBEAT_INTERVAL_S
            await self.clock.sleep(min(self.tick_s, self.model.sample_interval_s))
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]
