"""Local Controller mode: the operator's smart-charging calls merged with the site's limits.

The relay hands every CSMS SetChargingProfile / ClearChargingProfile / GetCompositeSchedule /
GetChargingProfiles here instead of forwarding it (docs/local-controller.md). The profiles are
kept in a :class:`CsmsProfileStore` (persisted beside the upstream queue, so a restart keeps
them), their limit now is laid on the EVSE's state (``EvseState.csms_limit``: an upper bound in
the allocation problem), and the CSMS is answered as the charger would answer: accepted or
rejected by what the charger can take, and a composite schedule that is what the charger will
really do, min(the CSMS's profiles, evdlm's limit).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case

from evdlm import state_files
from evdlm.chargers.ocpp.csms_profiles import CsmsCapabilities, CsmsProfileStore
from evdlm.chargers.ocpp.link import ChargerLink
from evdlm.config.models import Charger

LOG = logging.getLogger("evdlm.chargers.ocpp.csms_merge")

SMART_CHARGING_ACTIONS = frozenset(
    {"SetChargingProfile", "ClearChargingProfile", "GetCompositeSchedule", "GetChargingProfiles"}
)


class CsmsSmartCharging:
    """One charger's CSMS profiles: answers, the limit they set now, and their file."""

    def __init__(self, charger: Charger, version: str, link: ChargerLink, profiles_file: Path | None) -> None:
        self.charger = charger
        self.version = version
        self.link = link
        self.profiles_file = profiles_file
        capabilities = CsmsCapabilities.from_charger(link.capabilities, evses=charger.evses)
        self.store = CsmsProfileStore("1.6" if version == "1.6" else "2.0.1", capabilities)
        self._limits_laid = True  # a limit may be on an EVSE's state (from before a reconnection)
        self._told = False  # a NotifyChargingLimit is standing at the CSMS
        if profiles_file is not None and profiles_file.exists():
            try:
                self.store = CsmsProfileStore.from_json(profiles_file.read_text(encoding="utf-8"), capabilities)
            except (OSError, ValueError) as error:  # a damaged file: start without the CSMS's profiles, say so
                LOG.error(
                    "%s: CSMS profiles in %s not read (%s); starting without them", charger.id, profiles_file, error
                )

    # ------------------------------------------------------------------ the CSMS's calls

    def answer(self, action: str, payload: dict[str, Any], now_s: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The answer to one CSMS call (camelCase, as on the wire) and, for 2.0.1
        GetChargingProfiles, the ReportChargingProfiles payloads to send after it."""
        request = camel_to_snake_case(payload)
        reports: list[dict[str, Any]] = []
        if action == "SetChargingProfile":
            evse_id = int(request.get("connector_id", request.get("evse_id", 0)))
            profile = request.get("cs_charging_profiles", request.get("charging_profile", {}))
            answer = self.store.set_profile(evse_id, profile, now_s, self._transaction(evse_id))
            self._changed(now_s)
        elif action == "ClearChargingProfile":
            answer = self.store.clear(request)
            self._changed(now_s)
        elif action == "GetCompositeSchedule":
            answer = self._composite(request, now_s)
        else:  # GetChargingProfiles (2.0.1)
            answer, reports = self.store.report_charging_profiles(request)
        if answer.get("status") not in ("Accepted", "NoProfiles") and self.store.last_reason:
            LOG.info(
                "%s: the CSMS's %s answered %s: %s",
                self.charger.id,
                action,
                answer.get("status"),
                self.store.last_reason,
            )
        return snake_to_camel_case(answer), [snake_to_camel_case(report) for report in reports]

    def _composite(self, request: dict[str, Any], now_s: float) -> dict[str, Any]:
        evse_id = int(request.get("connector_id", request.get("evse_id", 0)))
        evdlm_limit, until_s = self.link.held_limit(evse_id, now_s) if evse_id > 0 else (None, None)
        state = self._state(evse_id)
        return self.store.composite(
            evse_id,
            now_s,
            int(request.get("duration", 0)),
            request.get("charging_rate_unit"),
            evdlm_limit,
            until_s,
            self.link.settings.failsafe_current_a,
            self._phases(),
            self.link.settings.nominal_voltage_v,
            limit_unit="A",
            max_limit=self.charger.max_current_a,
            transaction_id=state.transaction_id if state is not None else None,
            session_started_s=state.session_started_at_s if state is not None else None,
        )

    # ------------------------------------------------------------------ the limit now

    def refresh(self, now_s: float, *, notify: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """Lay the CSMS's limit now on each EVSE's state (schedules move with time); with
        ``notify`` (2.0.1, the CSMS reachable) also return the NotifyChargingLimit /
        ClearedChargingLimit calls (action, camelCase payload) that tell the CSMS where the site
        holds an EVSE below the CSMS's own limit (source EMS)."""
        if not self.store.installed() and not self._limits_laid and not self._told:
            return []  # the usual case, every second on every charger: nothing to evaluate
        self.store.expire(now_s)
        notices: list[tuple[str, dict[str, Any]]] = []
        self._limits_laid = False
        for evse_id in range(1, self.charger.evses + 1):
            state = self._state(evse_id)
            transaction_id = state.transaction_id if state is not None else None
            limit = self.store.limit_at(
                evse_id,
                now_s,
                self._phases(),
                self.link.settings.nominal_voltage_v,
                transaction_id=transaction_id,
                session_started_s=state.session_started_at_s if state is not None else None,
            )
            self.link.set_csms_limit(evse_id, *(limit if limit is not None else (None, None)))
            self._limits_laid |= limit is not None
            if notify and self.version != "1.6":
                held_a, _ = self.link.held_limit(evse_id, now_s)
                notice = self.store.charging_limit_notice(
                    evse_id,
                    now_s,
                    held_a,
                    "A",
                    self._phases(),
                    self.link.settings.nominal_voltage_v,
                    transaction_id=transaction_id,
                )
                if notice is not None:
                    notices.append((notice[0], snake_to_camel_case(notice[1])))
                    self._told = notice[0] == "NotifyChargingLimit"
        return notices

    def transaction_ended(self, transaction_id: str) -> None:
        self.store.end_transaction(transaction_id)

    def _changed(self, now_s: float) -> None:
        self.refresh(now_s)
        if self.profiles_file is not None:
            try:
                state_files.write_atomically(self.profiles_file, self.store.to_json())
            except OSError as error:  # the profiles still hold in memory; a restart would lose them
                LOG.error("%s: CSMS profiles not saved to %s: %s", self.charger.id, self.profiles_file, error)

    def _state(self, evse_id: int) -> Any:
        return next((state for state in self.link.states() if state.evse_id == evse_id), None)

    def _transaction(self, evse_id: int) -> str | None:
        state = self._state(evse_id)
        return state.transaction_id if state is not None else None

    def _phases(self) -> int:
        return self.link.capabilities.phases
