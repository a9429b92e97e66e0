"""OCPP 2.0.1 CSMS session: inbound messages become EvseState, outbound smart charging."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from ocpp.v201 import ChargePoint, call, call_result

from evdlm.chargers.errors import ChargerCallError, ChargerError
from evdlm.chargers.ocpp.authorization import AuthDecision, Authorizer, refusal_line
from evdlm.chargers.ocpp.link import ChargerLink
from evdlm.chargers.ocpp.parse import (
    SAMPLED_MEASURANDS,
    iso_utc,
    parse_charging_needs,
    parse_iso_s,
    parse_variables_201,
    profile_payload_201,
)
from evdlm.chargers.ocpp.session import WIRE_LOG, SessionBase, after_route, route
from evdlm.chargers.planning import LinkSettings, ProfileSpec
from evdlm.core.clock import Clock

LOG = logging.getLogger("evdlm.chargers.ocpp.v201")

HEARTBEAT_INTERVAL_S = 60
SMART_CHARGING_VARIABLES = ["Enabled", "RateUnit", "ProfileStackLevel", "PeriodsPerSchedule", "LimitChangeSignificance"]


# IdTokenEnumType of a station that needs no authorisation (its own free-vending setting):
# answered like a transaction without a token, only a restriction refuses it.
NO_AUTHORIZATION = "NoAuthorization"


def id_token_info(decision: AuthDecision) -> dict[str, Any]:
    """2.0.1 IdTokenInfoType of an authorisation decision."""
    info: dict[str, Any] = {"status": decision.status}
    if decision.expiry_s is not None:
        info["cache_expiry_date_time"] = iso_utc(decision.expiry_s)
    if decision.parent_id_tag is not None:
        info["group_id_token"] = {"id_token": decision.parent_id_tag, "type": "Central"}
    return info


def connected_from_status(status: str) -> bool | None:
    """2.0.1 ConnectorStatus → car plugged in; None (unchanged) for Faulted."""
    if status == "Occupied":
        return True
    if status in ("Available", "Unavailable", "Reserved"):
        return False
    return None


class V201Session(SessionBase, ChargePoint):  # type: ignore[misc]
    format_violation = "FormatViolation"
    version = "2.0.1"
    error_code_map: ClassVar[dict[str, str]] = {
        "FormationViolation": "FormatViolation",
        "OccurenceConstraintViolation": "OccurrenceConstraintViolation",
    }
    # OCPP-J 2.0.1 §4.3: a frame whose message id cannot be read is an RpcFrameworkError.
    unreadable_frame_code = "RpcFrameworkError"
    bad_structure_code = "RpcFrameworkError"
    unknown_message_type_code = "MessageTypeNotSupported"

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

    def authorize(self, action: str, id_token: str) -> AuthDecision:
        """The authorizer's answer for ``id_token``; one log line when it is not Accepted."""
        decision = self.authorizer.decide(id_token, self.clock.now_s())
        if not decision.accepted:
            LOG.info("%s", refusal_line(self.id, action, id_token, decision))
        return decision

    def token_info(self, action: str, id_token: dict[str, Any]) -> dict[str, Any]:
        """idTokenInfo for a presented IdTokenType (a NoAuthorization token is Accepted)."""
        value = id_token.get("id_token")
        if id_token.get("type") == NO_AUTHORIZATION or not isinstance(value, str):
            return {"status": "Accepted"}
        return id_token_info(self.authorize(action, value))

    # ---------------------------------------------------------------- inbound

    @route("BootNotification")
    def on_boot_notification(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        LOG.info(
            "%s booted (%s %s, %s)", self.id, charging_station.get("vendor_name"), charging_station.get("model"), reason
        )
        return call_result.BootNotification(
            current_time=iso_utc(self.clock.now_s()), interval=HEARTBEAT_INTERVAL_S, status="Accepted"
        )

    @after_route("BootNotification")
    def after_boot_notification(self, **_: Any) -> None:
        # B01.FR.03-ish: the CSMS talks to a station only once its boot was accepted.
        self.enqueue(self.setup)

    @route("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=iso_utc(self.clock.now_s()))

    @route("StatusNotification")
    def on_status_notification(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any
    ) -> Any:
        self.link.set_status(evse_id, connected_from_status(connector_status))
        # 2.0.1 carries no error code here (NotifyEvent does): the status is the cause.
        self.link.set_fault(evse_id, connector_status if connector_status in ("Faulted", "Unavailable") else None)
        return call_result.StatusNotification()

    @route("MeterValues")
    def on_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        if evse_id:
            self.meter_sample(evse_id, meter_value)
        return call_result.MeterValues()

    @route("Authorize")
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        # A station whose every EVSE is restricted is refused whatever the token (the link logs
        # it); otherwise ocpp.authorization decides (free vending when the section is omitted).
        if self.link.refuse_authorize("Authorize"):
            return call_result.Authorize(id_token_info={"status": "Blocked"})
        return call_result.Authorize(id_token_info=self.token_info("Authorize", id_token))

    @route("TransactionEvent")
    def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        **kwargs: Any,
    ) -> Any:
        transaction_id = str(transaction_info["transaction_id"])
        evse = kwargs.get("evse")
        evse_id = evse["id"] if evse else self.link.evse_of_transaction(transaction_id)
        has_token = kwargs.get("id_token") is not None
        token = kwargs.get("id_token") or {}
        id_tag = token.get("id_token") if isinstance(token, dict) and isinstance(token.get("id_token"), str) else None
        # A restricted EVSE takes no new session: a token presented for it is Blocked (the
        # station then ends the transaction, StopTxOnInvalidId); one that started without a
        # token is stopped by the link.
        refuse = (
            has_token and evse_id is not None and event_type != "Ended" and self.link.restriction(evse_id) is not None
        )
        refused_by = f"TransactionEvent {event_type}" if refuse else None
        if evse_id is not None and event_type != "Ended" and self.link.evse_of_transaction(transaction_id) is None:
            # Started, or an Updated for a transaction begun while we were apart: take it up.
            self.link.transaction_started(
                evse_id,
                transaction_id,
                refused_by=refused_by,
                id_tag=id_tag,
                started_at_s=parse_iso_s(timestamp) if event_type == "Started" else None,
            )
        elif refused_by is not None and evse_id is not None:
            self.link.refused(evse_id, refused_by)
        elif id_tag is not None and evse_id is not None and event_type != "Ended":
            self.link.session_identified(evse_id, id_tag)
        meter_value = kwargs.get("meter_value")
        if evse_id is not None and meter_value:
            self.meter_sample(evse_id, meter_value)
        if event_type == "Ended":
            self.session_ended(self.link.transaction_ended(transaction_id, evse_id))
        if has_token:
            # The station ends a transaction whose token is not Accepted (StopTxOnInvalidId) and
            # may cache the answer, so it is the authorizer's real one (Blocked when restricted).
            info = (
                {"status": "Blocked"}
                if refuse or not isinstance(token, dict)
                else self.token_info(f"TransactionEvent {event_type}", token)
            )
            return call_result.TransactionEvent(id_token_info=info)
        return call_result.TransactionEvent()

    @route("NotifyEVChargingNeeds")
    def on_notify_ev_charging_needs(self, charging_needs: dict[str, Any], evse_id: int, **_: Any) -> Any:
        self.link.charging_needs(evse_id, parse_charging_needs(charging_needs))
        return call_result.NotifyEVChargingNeeds(status="Accepted")

    @route("NotifyChargingLimit")
    def on_notify_charging_limit(self, charging_limit: dict[str, Any], **kwargs: Any) -> Any:
        # An external limit (EMS / grid operator) now caps the station below ours: worth knowing,
        # nothing to do — the charger applies the minimum and meter values show it.
        LOG.info(
            "%s: external charging limit from %s on EVSE %s",
            self.id,
            charging_limit.get("charging_limit_source"),
            kwargs.get("evse_id"),
        )
        return call_result.NotifyChargingLimit()

    @route("ClearedChargingLimit")
    def on_cleared_charging_limit(self, charging_limit_source: str, **kwargs: Any) -> Any:
        LOG.info("%s: external charging limit from %s cleared", self.id, charging_limit_source)
        return call_result.ClearedChargingLimit()

    @route("ReportChargingProfiles")
    def on_report_charging_profiles(
        self, request_id: int, charging_limit_source: str, charging_profile: list[Any], evse_id: int, **_: Any
    ) -> Any:
        LOG.info(
            "%s: %d charging profiles reported for EVSE %s (%s)",
            self.id,
            len(charging_profile),
            evse_id,
            charging_limit_source,
        )
        return call_result.ReportChargingProfiles()

    # ---------------------------------------------------------------- outbound

    def profile_request(self, spec: ProfileSpec) -> Any:
        return call.SetChargingProfile(evse_id=spec.evse_id, charging_profile=profile_payload_201(spec))

    async def clear_profile(self, profile_id: int) -> str:
        result = await self.call_checked(call.ClearChargingProfile(charging_profile_id=profile_id))
        return str(result.status)

    stop_action = "RequestStopTransaction"

    async def stop_transaction(self, transaction_id: str) -> str:
        result = await self.call_checked(call.RequestStopTransaction(transaction_id=transaction_id))
        return str(result.status)

    async def change_availability(self, evse_id: int, operative: bool) -> str:
        result = await self.call_checked(
            call.ChangeAvailability(
                operational_status="Operative" if operative else "Inoperative", evse={"id": evse_id}
            )
        )
        return str(result.status)

    async def _setup(self) -> None:
        async with self.link.lock:
            reported = None
            try:
                answer = await self.call_checked(
                    call.GetVariables(
                        get_variable_data=[
                            {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": name}}
                            for name in SMART_CHARGING_VARIABLES
                        ]
                    )
                )
                reported = parse_variables_201(answer.get_variable_result)
            except ChargerCallError as exc:
                LOG.warning("%s: GetVariables failed (%s): using config defaults", self.id, exc)
            self.link.configure(reported)
            await self._configure_sampling()
            await self.link.install_failsafe()
            self.link.mark_ready()

    async def _configure_sampling(self) -> None:
        settings = [
            ("TxUpdatedMeasurands", ",".join(SAMPLED_MEASURANDS)),
            ("TxUpdatedInterval", str(self.settings.meter_sample_interval_s)),
        ]
        try:
            answer = await self.call_checked(
                call.SetVariables(
                    set_variable_data=[
                        {
                            "attribute_value": value,
                            "component": {"name": "SampledDataCtrlr"},
                            "variable": {"name": name},
                        }
                        for name, value in settings
                    ]
                )
            )
        except ChargerCallError as exc:
            LOG.warning("%s: SetVariables SampledDataCtrlr failed: %s", self.id, exc)
            return
        for result in answer.set_variable_result:
            if result.get("attribute_status") != "Accepted":
                LOG.warning(
                    "%s: SampledDataCtrlr.%s %s",
                    self.id,
                    result.get("variable", {}).get("name"),
                    result.get("attribute_status"),
                )

    async def recover(self) -> None:
        if self.link.failsafe_installed:
            self.link.mark_ready()
        else:
            await self.setup()  # a central system that restarted knows nothing of this station yet
        # F06: a triggered TransactionEvent (Updated, trigger "Trigger") names a running transaction.
        for evse_id in range(1, self.link.charger.evses + 1):
            for message in ("StatusNotification", "TransactionEvent"):
                try:
                    await self.call_checked(
                        call.TriggerMessage(requested_message=message, evse={"id": evse_id, "connector_id": 1})
                    )
                except ChargerError as exc:
                    LOG.info("%s: TriggerMessage %s failed: %s", self.id, message, exc)
