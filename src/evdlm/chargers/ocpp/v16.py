"""OCPP 1.6J central-system session: inbound messages become EvseState, outbound smart charging."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from ocpp.v16 import ChargePoint, call, call_result

from evdlm.chargers.errors import ChargerCallError, ChargerError
from evdlm.chargers.ocpp.authorization import AuthDecision, Authorizer, refusal_line
from evdlm.chargers.ocpp.link import ChargerLink
from evdlm.chargers.ocpp.parse import (
    SAMPLED_MEASURANDS,
    iso_utc,
    parse_configuration_16,
    parse_iso_s,
    profile_payload_16,
)
from evdlm.chargers.ocpp.session import WIRE_LOG, SessionBase, after_route, route
from evdlm.chargers.planning import LinkSettings, ProfileSpec
from evdlm.core.clock import Clock

LOG = logging.getLogger("evdlm.chargers.ocpp.v16")

HEARTBEAT_INTERVAL_S = 60
SMART_CHARGING_KEYS = [
    "ChargeProfileMaxStackLevel",
    "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods",
    "MaxChargingProfilesInstalled",
]
CONNECTED_STATUSES = {"Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing"}
# 1.6 §4.9: these are only reported while a transaction runs.
TRANSACTION_STATUSES = {"Charging", "SuspendedEV", "SuspendedEVSE"}
FREE_STATUSES = {"Available", "Unavailable", "Reserved"}


def id_tag_info(decision: AuthDecision) -> dict[str, Any]:
    """1.6 IdTagInfo of an authorisation decision."""
    info: dict[str, Any] = {"status": decision.status}
    if decision.expiry_s is not None:
        info["expiry_date"] = iso_utc(decision.expiry_s)
    if decision.parent_id_tag is not None:
        info["parent_id_tag"] = decision.parent_id_tag[:20]  # IdToken is CiString20Type
    return info


def connected_from_status(status: str) -> bool | None:
    """1.6 ChargePointStatus → car plugged in; None (unchanged) for Faulted, which says nothing."""
    if status in CONNECTED_STATUSES:
        return True
    if status in FREE_STATUSES:
        return False
    return None


def fault_from_status(status: str, error_code: str, vendor_error_code: str | None = None) -> str | None:
    """1.6 StatusNotification → why the connector cannot charge, or None.

    Faulted and Unavailable keep it from charging; an errorCode with any other status is a
    warning (§4.9: e.g. HighTemperature while still Charging), not an outage.
    """
    if status not in ("Faulted", "Unavailable"):
        return None
    cause = error_code if error_code and error_code != "NoError" else status
    return f"{cause}:{vendor_error_code}" if vendor_error_code else cause


class V16Session(SessionBase, ChargePoint):  # type: ignore[misc]
    format_violation = "FormationViolation"
    version = "1.6"
    error_code_map: ClassVar[dict[str, str]] = {
        "FormatViolation": "FormationViolation",
        "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    }
    unreadable_frame_code = "FormationViolation"
    bad_structure_code = "ProtocolError"
    unknown_message_type_code = "ProtocolError"

    def __init__(
        self,
        charger_id: str,
        connection: Any,
        link: ChargerLink,
        settings: LinkSettings,
        clock: Clock,
        call_timeout_s: float,
        authorizer: Authorizer | None = None,
    ) -> None:
        ChargePoint.__init__(self, charger_id, connection, response_timeout=call_timeout_s, logger=WIRE_LOG)
        self._init_session(link, settings, clock)
        # None: free vending (as before ocpp.authorization existed).
        self.authorizer = authorizer if authorizer is not None else Authorizer(accept_all=True)

    def authorize(self, action: str, id_tag: str) -> AuthDecision:
        """The authorizer's answer for ``id_tag``; one log line when it is not Accepted."""
        decision = self.authorizer.decide(id_tag, self.clock.now_s())
        if not decision.accepted:
            LOG.info("%s", refusal_line(self.id, action, id_tag, decision))
        return decision

    # ---------------------------------------------------------------- inbound

    @route("BootNotification")
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str, **_: Any) -> Any:
        LOG.info("%s booted (%s %s)", self.id, charge_point_vendor, charge_point_model)
        return call_result.BootNotification(
            current_time=iso_utc(self.clock.now_s()), interval=HEARTBEAT_INTERVAL_S, status="Accepted"
        )

    @after_route("BootNotification")
    def after_boot_notification(self, **_: Any) -> None:
        # Calls to the charger only after it has its BootNotification answer (1.6 §4.2).
        self.enqueue(self.setup)

    @route("Heartbeat")
    def on_heartbeat(self) -> Any:
        return call_result.Heartbeat(current_time=iso_utc(self.clock.now_s()))

    @route("StatusNotification")
    def on_status_notification(
        self, connector_id: int, error_code: str, status: str, vendor_error_code: str | None = None, **_: Any
    ) -> Any:
        self.link.set_status(connector_id, connected_from_status(status))
        self.link.set_fault(connector_id, fault_from_status(status, error_code, vendor_error_code))
        if connector_id and status in TRANSACTION_STATUSES and not self.link.charging(connector_id):
            self.link.transaction_resumed(connector_id, None)
        if status == "Available":
            # Ends a session only if one ran (or a limit of ours is held): the Available a charger
            # sends at boot queues no clear, which used to run after the first limit and remove it.
            self.session_ended(self.link.transaction_ended(None, connector_id) if connector_id else None)
        return call_result.StatusNotification()

    @route("MeterValues")
    def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], transaction_id: int | None = None, **_: Any
    ) -> Any:
        if connector_id and transaction_id is not None and self.link.evse_of_transaction(str(transaction_id)) is None:
            self.link.transaction_resumed(connector_id, str(transaction_id))
        if connector_id:
            self.meter_sample(connector_id, meter_value)
        return call_result.MeterValues()

    @route("Authorize")
    def on_authorize(self, id_tag: str) -> Any:
        # A restricted charger takes no new session whatever the idTag (the link logs it);
        # otherwise ocpp.authorization decides (free vending when the section is omitted).
        if self.link.refuse_authorize("Authorize"):
            return call_result.Authorize(id_tag_info={"status": "Blocked"})
        return call_result.Authorize(id_tag_info=id_tag_info(self.authorize("Authorize", id_tag)))

    @route("StartTransaction")
    def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any) -> Any:
        # StartTransaction.conf always carries a transaction id; with a status other than
        # Accepted the charge point ends the transaction (StopTransactionOnInvalidId) or at
        # least offers no energy (MaxEnergyOnInvalidId). A restricted connector answers Blocked
        # whatever the idTag.
        transaction_id = self.link.next_transaction_id()
        restricted = self.link.restriction(connector_id) is not None
        self.link.transaction_started(
            connector_id,
            str(transaction_id),
            refused_by="StartTransaction" if restricted else None,
            id_tag=id_tag,
            started_at_s=parse_iso_s(timestamp),
        )
        info = {"status": "Blocked"} if restricted else id_tag_info(self.authorize("StartTransaction", id_tag))
        return call_result.StartTransaction(transaction_id=transaction_id, id_tag_info=info)

    @route("StopTransaction")
    def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int, **kwargs: Any) -> Any:
        evse_id = self.link.evse_of_transaction(str(transaction_id))
        transaction_data = kwargs.get("transaction_data")
        if evse_id is not None and transaction_data:
            self.meter_sample(evse_id, transaction_data)
        self.session_ended(self.link.transaction_ended(str(transaction_id)))
        return call_result.StopTransaction(id_tag_info={"status": "Accepted"})

    # ---------------------------------------------------------------- outbound

    def profile_request(self, spec: ProfileSpec) -> Any:
        return call.SetChargingProfile(connector_id=spec.evse_id, cs_charging_profiles=profile_payload_16(spec))

    async def clear_profile(self, profile_id: int) -> str:
        result = await self.call_checked(call.ClearChargingProfile(id=profile_id))
        return str(result.status)

    stop_action = "RemoteStopTransaction"

    async def stop_transaction(self, transaction_id: str) -> str:
        try:
            numeric_id = int(transaction_id)
        except ValueError as exc:  # 1.6 transaction ids are integers
            raise ChargerCallError(self.format_violation, f"transaction id {transaction_id!r} is not 1.6") from exc
        result = await self.call_checked(call.RemoteStopTransaction(transaction_id=numeric_id))
        return str(result.status)

    async def change_availability(self, evse_id: int, operative: bool) -> str:
        result = await self.call_checked(
            call.ChangeAvailability(connector_id=evse_id, type="Operative" if operative else "Inoperative")
        )
        return str(result.status)

    async def _setup(self) -> None:
        async with self.link.lock:
            reported = None
            try:
                answer = await self.call_checked(call.GetConfiguration(key=SMART_CHARGING_KEYS))
                reported = parse_configuration_16(answer.configuration_key)
            except ChargerCallError as exc:
                LOG.warning("%s: GetConfiguration failed (%s): using config defaults", self.id, exc)
            self.link.configure(reported)
            await self._configure_sampling()
            await self.link.install_failsafe()
            self.link.mark_ready()

    async def _configure_sampling(self) -> None:
        measurands = list(SAMPLED_MEASURANDS)
        # Many AC chargers cannot report SoC and reject the whole list because of it.
        for candidate in (measurands, [m for m in measurands if m != "SoC"]):
            if await self._change("MeterValuesSampledData", ",".join(candidate)):
                break
        await self._change("MeterValueSampleInterval", str(self.settings.meter_sample_interval_s))

    async def _change(self, key: str, value: str) -> bool:
        try:
            answer = await self.call_checked(call.ChangeConfiguration(key=key, value=value))
        except ChargerCallError as exc:
            LOG.warning("%s: ChangeConfiguration %s failed: %s", self.id, key, exc)
            return False
        if answer.status not in ("Accepted", "RebootRequired"):
            LOG.warning("%s: ChangeConfiguration %s=%s %s", self.id, key, value, answer.status)
            return False
        return True

    async def recover(self) -> None:
        if self.link.failsafe_installed:
            self.link.mark_ready()
        else:
            await self.setup()  # a central system that restarted knows nothing of this charger yet
        # Connectors and sessions may have changed while we were apart; the charger tells us again.
        for connector_id in range(1, self.link.charger.evses + 1):
            for message in ("StatusNotification", "MeterValues"):
                try:
                    await self.call_checked(call.TriggerMessage(requested_message=message, connector_id=connector_id))
                except ChargerError as exc:
                    LOG.info("%s: TriggerMessage %s failed: %s", self.id, message, exc)
