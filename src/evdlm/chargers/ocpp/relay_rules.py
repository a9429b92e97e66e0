"""Local Controller mode: the relay's routing decisions, pure (no I/O, no state of their own).

Frame routing (OCPP-J: [2, id, action, payload] CALL, [3, id, payload] CALLRESULT,
[4, id, code, description, details] CALLERROR):

=====================  ==========================  =============================================
from                   frame                       goes to
=====================  ==========================  =============================================
charger                CALL                        evdlm's session (listening in; its answer is
                                                   kept, not sent) and the CSMS; the CSMS's answer
                                                   goes to the charger. CSMS unreachable: the
                                                   session's answer (idTags: the offline policy)
                                                   goes to the charger and transaction messages
                                                   are queued (:func:`queue_kind`).
charger                CALLRESULT / CALLERROR      id starts with ``evdlm-``: the session (it
                                                   answers one of evdlm's calls); else the CSMS
                                                   (id restored if it was rewritten on the way down)
charger                undecodable                 the session (it answers with a CALLERROR)
evdlm's session        CALL                        the charger (its ids start with ``evdlm-``)
evdlm's session        CALLRESULT / CALLERROR      the relay (the local answer), never the wire
CSMS                   CALL, smart charging        ``_on_csms_smart_charging``: answered by evdlm,
                       (:data:`SMART_CHARGING`)    never forwarded (the site limit stays evdlm's)
CSMS                   CALL, other                 the charger (an id starting with ``evdlm-`` is
                                                   rewritten; 1.6 transaction ids mapped back to
                                                   local ones; a charging profile inside a remote
                                                   start is removed)
CSMS                   CALLRESULT / CALLERROR      the charger call (or the replayed message) it
                                                   answers; nothing awaits it: dropped
=====================  ==========================  =============================================
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

# evdlm's own calls to a charger carry ids in this namespace; a CSMS id in it is rewritten.
EVDLM_ID_PREFIX = "evdlm-"
SMART_CHARGING = frozenset(
    {"SetChargingProfile", "ClearChargingProfile", "GetCompositeSchedule", "GetChargingProfiles"}
)

QueueKind = Literal["keep", "droppable"]


def evdlm_unique_id() -> str:
    """The unique id of one of evdlm's calls to a charger (the session's id generator in LC mode)."""
    return f"{EVDLM_ID_PREFIX}{uuid.uuid4()}"


def is_evdlm_id(unique_id: str) -> bool:
    return unique_id.startswith(EVDLM_ID_PREFIX)


def csms_id_for_charger() -> str:
    """A replacement for a CSMS call id that happens to be in evdlm's namespace."""
    return f"csms-{uuid.uuid4()}"


def queue_kind(version: str, action: str, payload: dict[str, Any]) -> QueueKind | None:
    """Whether a charger CALL answered locally (CSMS unreachable) waits for the CSMS, and how.

    keep: BootNotification (the CSMS must learn of the boot), 1.6 Start/StopTransaction, 2.0.1
    TransactionEvent; droppable (oldest first when the queue is full): MeterValues of a
    transaction (1.6: with a transactionId), StatusNotification. Anything else (Heartbeat,
    Authorize, DataTransfer, ...) is answered locally and forgotten.
    """
    if action in ("BootNotification", "StartTransaction", "StopTransaction", "TransactionEvent"):
        return "keep"
    if action == "StatusNotification":
        return "droppable"
    if action == "MeterValues" and version == "1.6" and payload.get("transactionId") is not None:
        return "droppable"  # 2.0.1: a transaction's meter values ride TransactionEvent
    return None


def conservative_smart_charging_answer(version: str, action: str) -> dict[str, Any] | None:
    """The answer evdlm gives a CSMS's smart-charging call while CSMS profiles are not merged
    into the site limits; None: the action does not exist in this version (NotImplemented)."""
    if action == "SetChargingProfile":
        return {"status": "Rejected"}
    if action == "ClearChargingProfile":
        return {"status": "Unknown"}
    if action == "GetCompositeSchedule":
        return {"status": "Rejected"}
    if action == "GetChargingProfiles" and version != "1.6":
        return {"status": "NoProfiles"}
    return None


# 1.6 messages whose transactionId is the charger's (charger → CSMS) or the CSMS's (CSMS → charger).
_TX_UP_16 = ("StopTransaction", "MeterValues")
_TX_DOWN_16 = ("RemoteStopTransaction",)


def rewrite_transaction_up(
    version: str, action: str, payload: dict[str, Any], local_to_csms: dict[int, int]
) -> dict[str, Any] | None:
    """1.6: the payload with a local transaction id replaced by the CSMS's; None when unchanged."""
    if version != "1.6" or action not in _TX_UP_16 or not local_to_csms:
        return None
    local = payload.get("transactionId")
    if not isinstance(local, int) or local not in local_to_csms:
        return None
    return {**payload, "transactionId": local_to_csms[local]}


def rewrite_transaction_down(
    version: str, action: str, payload: dict[str, Any], csms_to_local: dict[int, int]
) -> dict[str, Any] | None:
    """1.6: the payload with the CSMS's transaction id replaced by the local one the charger uses."""
    if version != "1.6" or action not in _TX_DOWN_16 or not csms_to_local:
        return None
    csms = payload.get("transactionId")
    if not isinstance(csms, int) or csms not in csms_to_local:
        return None
    return {**payload, "transactionId": csms_to_local[csms]}


def strip_csms_profile(action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """A remote start (1.6 RemoteStartTransaction, 2.0.1 RequestStartTransaction) may carry a
    TxProfile that would override the site's limit: it is removed (None: nothing to remove)."""
    if action in ("RemoteStartTransaction", "RequestStartTransaction") and "chargingProfile" in payload:
        return {key: value for key, value in payload.items() if key != "chargingProfile"}
    return None


def id_info_key(version: str) -> str:
    return "idTagInfo" if version == "1.6" else "idTokenInfo"


def presented_id_tag(version: str, action: str, payload: dict[str, Any]) -> str | None:
    """The idTag a charger CALL asks about (Authorize, 1.6 StartTransaction, 2.0.1 TransactionEvent)."""
    if version == "1.6":
        if action in ("Authorize", "StartTransaction"):
            tag = payload.get("idTag")
            return tag if isinstance(tag, str) else None
        return None
    if action in ("Authorize", "TransactionEvent"):
        token = payload.get("idToken")
        if isinstance(token, dict) and token.get("type") != "NoAuthorization":
            value = token.get("idToken")
            return value if isinstance(value, str) else None
    return None


def answer_status(version: str, answer_payload: Any) -> str | None:
    if not isinstance(answer_payload, dict):
        return None
    info = answer_payload.get(id_info_key(version))
    if isinstance(info, dict) and isinstance(info.get("status"), str):
        return str(info["status"])
    return None


def with_status(version: str, answer_payload: dict[str, Any], status: str) -> dict[str, Any]:
    """``answer_payload`` with its idTagInfo / idTokenInfo status replaced (other fields kept)."""
    key = id_info_key(version)
    info = answer_payload.get(key)
    info = dict(info) if isinstance(info, dict) else {}
    info["status"] = status
    return {**answer_payload, key: info}


def site_blocks(version: str, local_answer: Any, restricted: bool) -> bool:
    """evdlm's session refused the idTag because the site restricted the charger (Blocked)."""
    return restricted and answer_status(version, local_answer) == "Blocked"
