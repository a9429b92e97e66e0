"""One charger as the controller sees it: EVSE states, capabilities, leases, the command path,
and restrictions (EVSEs the controller has stopped and blocks).

A :class:`ChargerLink` outlives websocket connections (a reconnect keeps what we learned and
re-applies restrictions). It talks to the charger through a :class:`ProfileTransport` (the
version's session) and holds one lock so that exactly one of our calls is in flight per charger.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from evdlm.chargers.errors import ChargerCallError, ChargerError, ChargerOffline, ChargerTimeout
from evdlm.chargers.ocpp.parse import ChargingNeeds, MeterSample, SmartChargingConfig
from evdlm.chargers.planning import (
    ChargerCapabilities,
    ComplianceState,
    Lease,
    LinkSettings,
    ProfilePurpose,
    ProfileSpec,
    assess_compliance,
    dynamic_level_for,
    dynamic_profile_id,
    failsafe_limit,
    failsafe_profile,
    lease_profile,
    retry_delay_s,
    watts_to_amps,
    wire_limit,
    within_deadband,
)
from evdlm.config.models import Charger, ChargerKind, RateUnit
from evdlm.core.clock import Clock
from evdlm.core.types import ChargingCommand, CommandResult, CommandStatus, EvseState, RateUnitLiteral
from evdlm.core.types import EvseKey as EvseKey

LOG = logging.getLogger("evdlm.chargers.link")

# An EVSE that refused every profile variant is asked again with capped exponential backoff
# (simulated time): soon after the first refusal (a station busy after boot, a transient
# refusal), then less and less often, at most every UNCONTROLLABLE_RETRY_S — firmware gets
# updated, but retrying every cycle would only wear flash and fill the log.
UNCONTROLLABLE_RETRY_FIRST_S = 30.0
UNCONTROLLABLE_RETRY_S = 900.0

# Restriction steps that failed (timeout, Rejected, a transaction that would not end) are
# tried again with the same kind of backoff.
RESTRICTION_RETRY_FIRST_S = 30.0
RESTRICTION_RETRY_MAX_S = 900.0

# A start answered Blocked should be ended by the charger itself (1.6 StopTransactionOnInvalidId,
# 2.0.1 StopTxOnInvalidId); one still running after this long is stopped by evdlm. Also how long
# a transaction may take to end after an accepted stop request.
STOP_GRACE_S = 10.0
# A charger's session start older than this (or ahead of our clock) is its clock, not the session's.
MAX_SESSION_AGE_S = 7 * 86400.0

Job = Callable[[], Awaitable[None]]


class ProfileTransport(Protocol):
    """What a version's session offers the link; raises :class:`ChargerError` subclasses."""

    # The version's name of the stop request, for the log (RemoteStopTransaction / RequestStopTransaction).
    stop_action: str

    async def set_profile(self, spec: ProfileSpec) -> str:
        """Install a charging profile; the charger's status (Accepted / Rejected / NotSupported)."""
        ...

    async def clear_profile(self, profile_id: int) -> str: ...

    async def stop_transaction(self, transaction_id: str) -> str:
        """Ask the charger to end a transaction; its status (Accepted / Rejected)."""
        ...

    async def change_availability(self, evse_id: int, operative: bool) -> str:
        """Set one EVSE (In)operative; the status (Accepted / Rejected / Scheduled)."""
        ...

    def enqueue(self, job: Job) -> bool:
        """Run ``job`` on the session's sequential job queue; False when the queue is full."""
        ...


def capabilities_from_config(charger: Charger, reported: SmartChargingConfig | None) -> ChargerCapabilities:
    """Config overrides first (an engineer knows the firmware), then what the charger reports."""
    if charger.rate_unit is RateUnit.AUTO:
        units = reported.rate_units if reported is not None else frozenset()
        if not units:
            # Key missing: AC chargers nearly all take A; DC ones W.
            units = frozenset({"W"} if charger.kind is ChargerKind.DC else {"A"})
        unit_fixed = False
    else:
        units = frozenset({"A" if charger.rate_unit is RateUnit.AMPERE else "W"})
        unit_fixed = True
    reported_level = reported.max_stack_level if reported is not None else None
    return ChargerCapabilities(
        rate_units=units,
        unit_fixed=unit_fixed,
        reported_max_stack_level=reported_level,
        max_periods=reported.max_periods if reported is not None else None,
        dynamic_stack_level=dynamic_level_for(reported_level, charger.max_stack_level),
        phases=1 if charger.kind is ChargerKind.AC_1PHASE else 3,
        dc=charger.kind is ChargerKind.DC,
        min_current_a=charger.min_current_a,
        max_current_a=charger.max_current_a,
        min_power_w=charger.min_power_kw * 1000.0,
        max_power_w=charger.max_power_kw * 1000.0 if charger.max_power_kw is not None else None,
    )


@dataclass
class _Evse:
    state: EvseState
    lease: Lease | None = None
    compliance: ComplianceState = field(default_factory=lambda: ComplianceState(True, None))
    limit_since_s: float = 0.0
    # While not controllable: refusals in a row, when to ask again, and why it was refused.
    refusals: int = 0
    retry_at_s: float | None = None
    refusal: str = ""
    # The charger answered NotImplemented / NotSupported: a new transaction changes nothing.
    smart_charging_absent: bool = False
    # Restriction: the reason while the controller wants it stopped and blocked.
    restriction: str | None = None
    restriction_synced: bool = True  # the charger has been told the current wish
    inoperative_sent: bool = False  # told Inoperative (and not yet Operative) by this process
    told_inoperative: bool = False  # ... on this connection (a reconnect tells it again)
    stops_unheeded: int = 0  # accepted or Blocked, yet the transaction ran on: backoff of stop requests
    # The EVSE's command sequence: moves on with every session that starts and every limit the
    # charger accepts. A clear queued for an ended session carries the number it was queued at
    # and is dropped if it has moved on: a stale clear never removes a newer limit.
    sequence: int = 0


@dataclass(frozen=True)
class _Attempt:
    stack_level: int
    unit: RateUnitLiteral
    purpose: ProfilePurpose = "TxDefaultProfile"

    def describe(self) -> str:
        return f"{self.purpose} at stack level {self.stack_level} in {self.unit}"


class ChargerLink:
    def __init__(
        self,
        charger: Charger,
        settings: LinkSettings,
        clock: Clock,
        on_change: Callable[[EvseState], None],
    ) -> None:
        self.charger = charger
        self.settings = settings
        self.clock = clock
        self.capabilities = capabilities_from_config(charger, None)
        self.lock = asyncio.Lock()
        self.transport: ProfileTransport | None = None
        self.ready = False  # configuration done on this connection (fail-safe installed where accepted)
        self.failsafe_installed = False
        # Smart charging was found absent: once a profile is accepted after all, install the fail-safe.
        self._failsafe_retry = False
        self._on_change = on_change
        self._sync_queued = False  # a restriction job waits in the session's queue
        self._restriction_failures = 0
        self._timers: set[asyncio.Task[None]] = set()
        self._transaction_ids = itertools.count(1)
        now_s = clock.now_s()
        self._evses = {
            evse_id: _Evse(
                EvseState(charger.id, evse_id, online=False, connected=False, charging=False, updated_at_s=now_s)
            )
            for evse_id in range(1, charger.evses + 1)
        }

    # ------------------------------------------------------------------ state

    def states(self) -> list[EvseState]:
        return [evse.state for evse in self._evses.values()]

    def _update(self, evse_id: int, **changes: object) -> None:
        evse = self._evses.get(evse_id)
        if evse is None:
            LOG.warning("%s: message for unknown EVSE %s ignored", self.charger.id, evse_id)
            return
        evse.state = replace(evse.state, updated_at_s=self.clock.now_s(), **changes)  # type: ignore[arg-type]
        self._on_change(evse.state)

    def attach(self, transport: ProfileTransport) -> None:
        self.transport = transport
        self.ready = False
        self._sync_queued = False  # a job queued on the old connection died with it
        for evse_id, evse in self._evses.items():
            evse.told_inoperative = False
            # After a reconnect we cannot know what the charger kept: send every limit again.
            evse.lease = None
            self._update(evse_id, online=True, accepted_limit=None, accepted_unit=None)

    def detach(self, transport: ProfileTransport) -> None:
        if self.transport is not transport:
            return  # a newer connection already replaced this one
        self.transport = None
        self.ready = False
        self._sync_queued = False
        # Pending restriction checks belong to the connection: a reconnect re-applies everything.
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for evse_id in self._evses:
            self._update(evse_id, online=False)

    def mark_ready(self) -> None:
        """Configuration done (or recovered) on this connection: commands go out, and every
        restriction is applied again (the charger may have rebooted, or been told otherwise)."""
        self.ready = True
        for evse in self._evses.values():
            if evse.restriction is not None:
                evse.restriction_synced = False
        self._restriction_failures = 0
        self._request_sync()

    def configure(self, reported: SmartChargingConfig | None) -> None:
        self.capabilities = capabilities_from_config(self.charger, reported)
        LOG.info(
            "%s: smart charging units=%s max_stack_level=%s dynamic_level=%s",
            self.charger.id,
            ",".join(sorted(self.capabilities.rate_units)),
            self.capabilities.reported_max_stack_level,
            self.capabilities.dynamic_stack_level,
        )
        now_s = self.clock.now_s()
        for evse in self._evses.values():
            # A (re)boot may bring new firmware: an EVSE counted uncontrollable is asked again at
            # its next command, and stays counted at its maximum until a profile is accepted.
            evse.refusals = 0
            evse.smart_charging_absent = False
            if not evse.state.controllable:
                evse.retry_at_s = now_s

    def set_status(self, evse_id: int, connected: bool | None) -> None:
        if evse_id == 0:
            return  # connector 0 is the charge point itself
        if connected is not None:
            self._update(evse_id, connected=connected)

    def set_fault(self, evse_id: int, fault: str | None) -> None:
        """What the last StatusNotification says keeps the EVSE from charging (None: nothing);
        connector / EVSE 0 is the whole charge point: every EVSE."""
        for each in self._evses if evse_id == 0 else (evse_id,):
            evse = self._evses.get(each)
            if evse is None or evse.state.fault != fault:
                self._update(each, fault=fault)

    def next_transaction_id(self) -> int:
        """1.6 transaction ids are ours to assign; unique per charger while this process runs."""
        return next(self._transaction_ids)

    def transaction_started(
        self,
        evse_id: int,
        transaction_id: str,
        *,
        refused_by: str | None = None,
        id_tag: str | None = None,
        started_at_s: float | None = None,
    ) -> None:
        """A new transaction; ``refused_by`` names the message we answered Blocked (restricted EVSE).

        ``started_at_s`` is the charger's timestamp of the start: used when plausible (not ahead
        of our clock, at most a week old: a session queued while offline), else the time now.
        """
        evse = self._evses.get(evse_id)
        now_s = self.clock.now_s()
        if started_at_s is None or not now_s - MAX_SESSION_AGE_S <= started_at_s <= now_s:
            started_at_s = now_s
        self._update(
            evse_id,
            connected=True,
            charging=True,
            transaction_id=transaction_id,
            resumed=False,
            id_tag=id_tag,
            session_started_at_s=started_at_s,
        )
        if evse is None:
            return
        evse.sequence += 1
        if not evse.state.controllable and not evse.smart_charging_absent:
            # A transaction id opens the TxProfile way: worth asking at the next command.
            now_s = self.clock.now_s()
            evse.retry_at_s = now_s if evse.retry_at_s is None else min(evse.retry_at_s, now_s)
        if evse.restriction is None:
            return
        if refused_by is not None:
            self.refused(evse_id, refused_by)
        else:
            self._stop_restricted(evse_id, evse)

    def transaction_resumed(self, evse_id: int, transaction_id: str | None) -> None:
        """A session that began before this connection (or this process): learnt from a status
        that implies a transaction, or from meter values that name one."""
        evse = self._evses.get(evse_id)
        if evse is None:
            return
        evse.sequence += 1
        transaction_id = transaction_id or evse.state.transaction_id
        same = transaction_id is not None and transaction_id == evse.state.transaction_id
        self._update(
            evse_id,
            connected=True,
            charging=True,
            transaction_id=transaction_id,
            resumed=True,
            # Its start is not known: from when we learnt of it (a dwell default counts from here).
            session_started_at_s=evse.state.session_started_at_s if same else self.clock.now_s(),
            id_tag=evse.state.id_tag if same else None,
        )
        if evse.restriction is not None:
            self._stop_restricted(evse_id, evse)

    def session_identified(self, evse_id: int, id_tag: str) -> None:
        """The running session's idTag, learnt after its start (2.0.1: a token presented later)."""
        evse = self._evses.get(evse_id)
        if evse is not None and evse.state.transaction_id is not None and evse.state.id_tag != id_tag:
            self._update(evse_id, id_tag=id_tag)

    def charging(self, evse_id: int) -> bool:
        evse = self._evses.get(evse_id)
        return evse is not None and evse.state.charging

    def transaction_ended(self, transaction_id: str | None, evse_id: int | None = None) -> int | None:
        """Mark the session over; returns the EVSE whose dynamic profile should be cleared, or
        None when there is nothing to clear: no session ran there and no limit of ours is held
        (a 1.6 StatusNotification Available at boot, or after the StopTransaction that ended it).
        """
        for candidate_id, evse in self._evses.items():
            if (evse_id is not None and candidate_id == evse_id) or (
                transaction_id is not None and evse.state.transaction_id == transaction_id
            ):
                ended = _in_transaction(evse) or evse.lease is not None
                self._update(
                    candidate_id,
                    charging=False,
                    transaction_id=None,
                    phase_current_a=None,
                    power_w=None,
                    id_tag=None,
                    session_started_at_s=None,
                )
                return candidate_id if ended else None
        return None

    def evse_of_transaction(self, transaction_id: str) -> int | None:
        for evse_id, evse in self._evses.items():
            if evse.state.transaction_id == transaction_id:
                return evse_id
        return None

    def meter_sample(self, evse_id: int, sample: MeterSample) -> None:
        evse = self._evses.get(evse_id)
        if evse is None:
            return
        state = evse.state
        phase_current = sample.phase_current_a
        if phase_current is None and sample.unphased_current_a is not None:
            # No phase given: assume it on every phase the charger can load (worst case).
            unphased = sample.unphased_current_a
            phase_current = (unphased, None, None) if self.capabilities.phases == 1 else (unphased, unphased, unphased)
        changes: dict[str, object] = {}
        value: object
        for name, value in (
            ("phase_current_a", phase_current),
            ("offered_current_a", sample.offered_current_a),
            ("power_w", sample.power_w),
            ("energy_wh", sample.energy_wh),
            ("soc_pct", sample.soc_pct),
        ):
            if value is not None:
                changes[name] = value
        now_s = self.clock.now_s()
        if phase_current is not None or sample.power_w is not None:
            # The core tells a draw measured after a cut from one measured before it by this.
            changes["sampled_at_s"] = now_s
        limit_a = self._effective_limit_a(evse, now_s)
        measured = phase_current if phase_current is not None else state.phase_current_a
        max_phase_a = max((v for v in measured if v is not None), default=None) if measured is not None else None
        offered_a = sample.offered_current_a
        if limit_a is not None and evse.lease is not None and evse.lease.valid(now_s) and evse.lease.unit == "W":
            # A W limit is checked on power: the car's phase count decides the current.
            max_phase_a = None
            offered_a = None
            if sample.power_w is not None:
                max_phase_a = sample.power_w / self.settings.nominal_voltage_v / evse.lease.phases
        compliance = assess_compliance(
            evse.compliance,
            limit_a,
            evse.limit_since_s,
            now_s,
            self.settings.non_compliance_grace_s,
            offered_a,
            max_phase_a,
        )
        if compliance.compliant != evse.compliance.compliant:
            if compliance.compliant:
                LOG.info("%s/%s follows its limit again", self.charger.id, evse_id)
            else:
                LOG.warning(
                    "%s/%s does not follow its accepted limit of %.1f A (offered %s A, drawing %s A) after %.0f s: "
                    "counted as uncontrolled load",
                    self.charger.id,
                    evse_id,
                    limit_a,
                    sample.offered_current_a,
                    max_phase_a,
                    self.settings.non_compliance_grace_s,
                )
        evse.compliance = compliance
        changes["compliant"] = compliance.compliant
        self._update(evse_id, **changes)

    def charging_needs(self, evse_id: int, needs: ChargingNeeds) -> None:
        changes = {
            "departure_at_s": needs.departure_at_s,
            "energy_needed_wh": needs.energy_needed_wh,
            "ev_max_current_a": needs.ev_max_current_a,
        }
        if needs.soc_pct is not None:
            changes["soc_pct"] = needs.soc_pct
        self._update(evse_id, **changes)

    def held_limit(self, evse_id: int, now_s: float) -> tuple[float | None, float | None]:
        """What the charger holds for evdlm now (A per phase; None: nothing known) and until when
        (the lease's end, then the fail-safe; None: open-ended), for Local Controller answers."""
        evse = self._evses.get(evse_id)
        if evse is None:
            return None, None
        lease = evse.lease
        if lease is not None and lease.valid(now_s):
            return lease.limit_a(self.settings.nominal_voltage_v), lease.valid_to_s
        return (self.settings.failsafe_current_a if self.failsafe_installed else None), None

    def set_csms_limit(self, evse_id: int, limit: float | None, unit: RateUnitLiteral | None) -> None:
        """The operator's CSMS limit on this EVSE now (Local Controller mode), for the problem."""
        evse = self._evses.get(evse_id)
        if evse is not None and (evse.state.csms_limit, evse.state.csms_limit_unit) != (limit, unit):
            self._update(evse_id, csms_limit=limit, csms_limit_unit=unit)

    def _effective_limit_a(self, evse: _Evse, now_s: float) -> float | None:
        """The limit the charger should hold now (A per phase): the lease, else the fail-safe."""
        lease = evse.lease
        if lease is not None:
            if lease.valid(now_s):
                return lease.limit_a(self.settings.nominal_voltage_v)
            # The lease lapsed (no refresh): from its end the charger should be at the fail-safe.
            evse.limit_since_s = max(evse.limit_since_s, lease.valid_to_s)
        if self.failsafe_installed:
            return self.settings.failsafe_current_a
        return None

    # ------------------------------------------------------------------ setup

    async def install_failsafe(self) -> None:
        """Install the boot-time fail-safe (call with :attr:`lock` held).

        Never raises for a refusal: a charger without smart charging is still configured (its
        EVSEs marked not controllable at once), so the rest of the session works. Timeouts and a
        lost connection propagate (setup retries / the reconnect redoes it).
        """
        caps = self.capabilities
        units: list[RateUnitLiteral] = ["A", "W"] if "A" in caps.rate_units else ["W", "A"]
        if caps.unit_fixed:
            units = units[:1]
        refusals: list[str] = []
        for unit in units:
            spec = failsafe_profile(unit, failsafe_limit(unit, caps, self.settings), self.clock.now_s())
            try:
                status = await self._send(spec)
            except ChargerCallError as exc:
                if exc.means_unsupported:
                    self._smart_charging_absent(f"fail-safe SetChargingProfile answered {exc}")
                    return
                refusals.append(f"CALLERROR {exc} in {unit}")
                continue
            if status == "Accepted":
                self.failsafe_installed = True
                self._failsafe_retry = False
                LOG.info("%s: fail-safe %s %s installed at stack level 0", self.charger.id, spec.limit, unit)
                return
            if status == "NotSupported":
                self._smart_charging_absent("fail-safe SetChargingProfile answered NotSupported")
                return
            refusals.append(f"{status} in {unit}")
        self.failsafe_installed = False
        LOG.error(
            "%s: charger refused the fail-safe profile (%s): it will charge unlimited without evdlm",
            self.charger.id,
            "; ".join(refusals),
        )

    def _smart_charging_absent(self, reason: str) -> None:
        """The charger does not do smart charging at all: say so once, and count every EVSE at
        its maximum now rather than after the first command."""
        self.failsafe_installed = False
        self._failsafe_retry = True
        now_s = self.clock.now_s()
        delay_s = retry_delay_s(1, UNCONTROLLABLE_RETRY_FIRST_S, UNCONTROLLABLE_RETRY_S)
        LOG.error(
            "%s does not implement smart charging (%s): no fail-safe; every EVSE not controllable, "
            "counted at its maximum; profiles tried again from %.0f s on",
            self.charger.id,
            reason,
            delay_s,
        )
        for evse_id, evse in self._evses.items():
            self._mark_uncontrollable(evse_id, evse, reason, now_s, unsupported=True, log=False)

    async def _send(self, spec: ProfileSpec) -> str:
        transport = self.transport
        if transport is None:
            raise ChargerOffline(f"{self.charger.id} is not connected")
        return await transport.set_profile(spec)

    def clear_after_session(self, evse_id: int) -> Job:
        """The job (for the session's queue) that clears the EVSE's dynamic profile after its
        session ended, bound to the EVSE's command sequence as it is now: by the time it runs,
        a new session may have started there or a newer limit been accepted (the controller's
        cycle does not wait for the queue), and then it does nothing."""
        sequence = self._evses[evse_id].sequence
        return lambda: self.clear_session(evse_id, sequence)

    async def clear_session(self, evse_id: int, sequence: int | None = None) -> None:
        """ClearChargingProfile of the EVSE's dynamic profile after its session ended; with
        ``sequence``, only if nothing happened on the EVSE since (see :meth:`clear_after_session`)."""
        async with self.lock:
            evse = self._evses[evse_id]
            transport = self.transport
            if sequence is not None and sequence != evse.sequence:
                LOG.debug(
                    "%s/%s: clear for the ended session dropped: a session or a limit came since",
                    self.charger.id,
                    evse_id,
                )
                return
            if evse.lease is None or transport is None:
                return
            profile_id = evse.lease.profile_id if evse.lease.profile_id is not None else dynamic_profile_id(evse_id)
            try:
                status = await transport.clear_profile(profile_id)
            except ChargerError as exc:
                LOG.warning("%s/%s: clearing the dynamic profile failed: %s", self.charger.id, evse_id, exc)
                return
            LOG.debug("%s/%s: dynamic profile cleared (%s)", self.charger.id, evse_id, status)
            evse.lease = None
            evse.limit_since_s = self.clock.now_s()
            self._update(evse_id, accepted_limit=None, accepted_unit=None)

    # ------------------------------------------------------------------ commands

    async def apply(self, commands: Sequence[ChargingCommand]) -> list[CommandResult]:
        async with self.lock:
            return [await self._apply_one(command) for command in commands]

    def _result(self, command: ChargingCommand, status: CommandStatus, **kwargs: object) -> CommandResult:
        return CommandResult(command=command, status=status, at_s=self.clock.now_s(), **kwargs)  # type: ignore[arg-type]

    @staticmethod
    def _current_lease(evse: _Evse) -> Lease | None:
        """The lease, unless it was a TxProfile of a transaction that is over (the charger deleted it)."""
        lease = evse.lease
        if lease is not None and lease.purpose == "TxProfile" and lease.transaction_id != evse.state.transaction_id:
            return None
        return lease

    async def _apply_one(self, command: ChargingCommand) -> CommandResult:
        evse = self._evses.get(command.evse_id)
        if evse is None:
            return self._result(command, CommandStatus.REJECTED, detail=f"no EVSE {command.evse_id}")
        if self.transport is None:
            return self._result(command, CommandStatus.OFFLINE, detail="not connected")
        if not self.ready:
            return self._result(command, CommandStatus.OFFLINE, detail="connected, configuration in progress")
        caps = self.capabilities
        now_s = self.clock.now_s()
        if not evse.state.controllable and evse.retry_at_s is not None and now_s < evse.retry_at_s:
            # Backing off: nothing on the wire; the detail stays the same from cycle to cycle.
            return self._result(
                command,
                CommandStatus.NOT_SUPPORTED,
                detail=f"not controllable ({evse.refusal}); counted at its maximum",
            )
        unit = caps.unit_for(command.unit)
        limit = wire_limit(command, unit, caps, self.settings.nominal_voltage_v)
        phases = max(1, min(command.phases, caps.phases))
        lease = self._current_lease(evse)
        if evse.state.controllable and within_deadband(lease, limit, unit, now_s, self.settings, phases):
            assert lease is not None
            return self._result(
                command,
                CommandStatus.UNCHANGED,
                sent_limit=lease.limit,
                sent_unit=lease.unit,
                stack_level=lease.stack_level,
            )
        last_failure: tuple[CommandStatus, str] = (CommandStatus.FAILED, "")
        unsupported = False
        failed_attempt: _Attempt | None = None
        for attempt in self._attempts(unit, evse.state.transaction_id):
            if failed_attempt is not None and attempt.purpose != failed_attempt.purpose:
                LOG.info(
                    "%s/%s: %s refused (%s): trying %s",
                    self.charger.id,
                    command.evse_id,
                    failed_attempt.purpose,
                    last_failure[1],
                    _purpose_text(attempt.purpose, evse.state.transaction_id),
                )
            attempt_limit = (
                limit
                if attempt.unit == unit
                else wire_limit(command, attempt.unit, caps, self.settings.nominal_voltage_v)
            )
            spec = lease_profile(
                command.evse_id,
                attempt.stack_level,
                attempt.unit,
                attempt_limit,
                now_s,
                self.settings.lease_duration_s,
                attempt.purpose,
                evse.state.transaction_id,
            )
            try:
                status = await self._send(spec)
            except ChargerTimeout as exc:
                return self._result(command, CommandStatus.TIMEOUT, detail=str(exc))
            except ChargerOffline as exc:
                return self._result(command, CommandStatus.OFFLINE, detail=str(exc))
            except ChargerCallError as exc:
                failed_attempt = attempt
                if exc.means_unsupported:
                    last_failure = (CommandStatus.NOT_SUPPORTED, f"SetChargingProfile answered {exc}")
                    unsupported = True
                    break  # smart charging is absent: no variant will help
                last_failure = (CommandStatus.FAILED, f"{attempt.describe()}: CALLERROR {exc}")
                continue
            if status == "Accepted":
                await self._accepted(evse, command, spec, phases, attempt, now_s)
                return self._result(
                    command,
                    CommandStatus.ACCEPTED,
                    sent_limit=spec.limit,
                    sent_unit=spec.unit,
                    stack_level=spec.stack_level,
                )
            failed_attempt = attempt
            last_failure = (
                (CommandStatus.NOT_SUPPORTED if status == "NotSupported" else CommandStatus.REJECTED),
                f"SetChargingProfile {status}: {attempt.describe()}",
            )
            LOG.debug("%s/%s: %s", self.charger.id, command.evse_id, last_failure[1])
            if status == "NotSupported":
                unsupported = True
                break  # smart charging is absent: no variant will help
        self._mark_uncontrollable(command.evse_id, evse, last_failure[1], now_s, unsupported=unsupported)
        return self._result(command, last_failure[0], detail=last_failure[1])

    def _mark_uncontrollable(
        self, evse_id: int, evse: _Evse, reason: str, now_s: float, *, unsupported: bool, log: bool = True
    ) -> None:
        """Counted at its maximum from now; asked again after the next backoff step."""
        evse.refusals += 1
        delay_s = retry_delay_s(evse.refusals, UNCONTROLLABLE_RETRY_FIRST_S, UNCONTROLLABLE_RETRY_S)
        evse.retry_at_s = now_s + delay_s
        evse.refusal = reason
        evse.smart_charging_absent = unsupported
        if log:
            LOG.warning(
                "%s/%s not controllable (%s): counted at its maximum; refusal %d, next try in %.0f s",
                self.charger.id,
                evse_id,
                reason,
                evse.refusals,
                delay_s,
            )
        if evse.state.controllable:
            self._update(evse_id, controllable=False)

    def _attempts(self, unit: RateUnitLiteral, transaction_id: str | None) -> list[_Attempt]:
        """The way that worked last first; then a lower stack level (the charger's reported
        maximum, then 0: ABB-style firmware takes only 0); then the other unit, when not pinned by
        config; all of it for TxDefaultProfile on the EVSE, then TxProfile (only with a known
        transaction), then, on a single-EVSE station only, a station maximum on EVSE 0 as the
        last resort (on a multi-EVSE station it would cap the other EVSEs too)."""
        caps = self.capabilities
        levels = [caps.dynamic_stack_level]
        reported = caps.reported_max_stack_level
        if reported is not None and 0 < reported < caps.dynamic_stack_level:
            levels.append(reported)
        if 0 not in levels:
            levels.append(0)
        units: list[RateUnitLiteral] = [unit]
        if not caps.unit_fixed:
            units.append("W" if unit == "A" else "A")
        purposes: list[ProfilePurpose] = ["TxDefaultProfile"]
        if transaction_id is not None:
            purposes.append("TxProfile")
        if self.charger.evses == 1:
            purposes.append("StationMax")
        if caps.dynamic_purpose in purposes:
            purposes.remove(caps.dynamic_purpose)
            purposes.insert(0, caps.dynamic_purpose)
        return [_Attempt(level, u, purpose) for purpose in purposes for u in units for level in levels]

    async def _accepted(
        self, evse: _Evse, command: ChargingCommand, spec: ProfileSpec, phases: int, attempt: _Attempt, now_s: float
    ) -> None:
        caps = self.capabilities
        preferred = caps.unit_for(command.unit)
        if (
            attempt.stack_level != caps.dynamic_stack_level
            or attempt.unit != preferred
            or attempt.purpose != caps.dynamic_purpose
        ):
            # Learned from a refusal: remember so the next command goes the working way at once.
            units = caps.rate_units if attempt.unit == preferred else frozenset({attempt.unit})
            self.capabilities = replace(
                caps, dynamic_stack_level=attempt.stack_level, rate_units=units, dynamic_purpose=attempt.purpose
            )
            LOG.warning(
                "%s: profiles now go as %s%s",
                self.charger.id,
                attempt.describe(),
                " (shared with the fail-safe: a lapsed lease no longer falls back)"
                if self.capabilities.single_level and attempt.purpose == "TxDefaultProfile"
                else "",
            )
        assert spec.valid_to_s is not None
        evse.sequence += 1  # a clear queued before this limit must not remove it
        previous = self._current_lease(evse)
        evse.lease = Lease(
            limit=spec.limit,
            unit=spec.unit,
            stack_level=spec.stack_level,
            sent_at_s=now_s,
            valid_to_s=spec.valid_to_s,
            phases=phases,
            purpose=spec.purpose,
            transaction_id=spec.transaction_id,
            profile_id=spec.profile_id,
        )
        if previous is None or previous.limit != spec.limit or previous.unit != spec.unit or not previous.valid(now_s):
            evse.limit_since_s = now_s
        limit_a = spec.limit if spec.unit == "A" else watts_to_amps(spec.limit, self.settings.nominal_voltage_v, phases)
        LOG.debug("%s/%s accepted %.1f %s (%.1f A)", self.charger.id, command.evse_id, spec.limit, spec.unit, limit_a)
        if not evse.state.controllable:
            LOG.warning(
                "%s/%s controllable again: %s accepted after %d refusal(s)",
                self.charger.id,
                command.evse_id,
                attempt.describe(),
                evse.refusals,
            )
        evse.refusals = 0
        evse.retry_at_s = None
        evse.refusal = ""
        evse.smart_charging_absent = False
        self._update(command.evse_id, accepted_limit=spec.limit, accepted_unit=spec.unit, controllable=True)
        if self._failsafe_retry:
            # It took a profile after all (a firmware update): it should hold the fail-safe too.
            self._failsafe_retry = False
            try:
                await self.install_failsafe()
            except ChargerError as exc:
                LOG.warning("%s: installing the fail-safe failed: %s", self.charger.id, exc)

    # ------------------------------------------------------------------ restriction

    def restriction(self, evse_id: int) -> str | None:
        """Why the EVSE is restricted (stopped and blocked), or None."""
        evse = self._evses.get(evse_id)
        return evse.restriction if evse is not None else None

    def restrictions(self) -> dict[int, str]:
        return {evse_id: evse.restriction for evse_id, evse in self._evses.items() if evse.restriction is not None}

    def refuse_authorize(self, action: str) -> bool:
        """Whether to answer ``action`` (an Authorize, which names no EVSE) Blocked: only when
        every EVSE of the charger is restricted, so the token is for a restricted one whichever
        it is. A refusal is logged."""
        reasons = [evse.restriction for evse in self._evses.values()]
        if not reasons or any(reason is None for reason in reasons):
            return False
        LOG.warning("%s: %s refused with Blocked (every EVSE restricted: %s)", self.charger.id, action, reasons[0])
        return True

    def restrict(self, evse_id: int, reason: str, *, inherited: bool = False) -> None:
        """Stop the EVSE's transaction and make it unavailable (off the caller's path: a job on
        the session); while restricted, starts on it are refused. A new reason for an EVSE
        already restricted only replaces the text. ``inherited``: a previous process set it
        Inoperative, so a release must set it Operative even if this one never told it."""
        evse = self._evses[evse_id]
        if inherited:
            evse.inoperative_sent = True
        if evse.restriction is not None:
            evse.restriction = reason
            return
        evse.restriction = reason
        evse.restriction_synced = False
        evse.stops_unheeded = 0
        self._restriction_failures = 0
        LOG.warning("%s/%s restricted: %s", self.charger.id, evse_id, reason)
        self._request_sync()

    def release(self, evse_id: int) -> None:
        """End a restriction: the EVSE is made Operative again."""
        evse = self._evses[evse_id]
        if evse.restriction is None:
            return
        LOG.warning("%s/%s released (was restricted: %s)", self.charger.id, evse_id, evse.restriction)
        evse.restriction = None
        evse.restriction_synced = False
        self._restriction_failures = 0
        self._request_sync()

    def refused(self, evse_id: int, action: str) -> None:
        """We answered ``action`` with Blocked for a restricted EVSE: log it, and check after a
        grace period that the charger really ended what it had started."""
        evse = self._evses[evse_id]
        LOG.warning(
            "%s/%s: %s refused with Blocked (restricted: %s)", self.charger.id, evse_id, action, evse.restriction
        )
        self._check_stopped_later(evse_id)

    def _stop_restricted(self, evse_id: int, evse: _Evse) -> None:
        """A transaction runs on a restricted EVSE that we could not refuse: stop it."""
        if evse.restriction_synced:
            evse.restriction_synced = False
            self._request_sync()

    def _check_stopped_later(self, evse_id: int) -> None:
        """After a stop or a Blocked answer: look again after the grace, then with backoff."""
        evse = self._evses[evse_id]
        delay_s = (
            STOP_GRACE_S
            if evse.stops_unheeded == 0
            else retry_delay_s(evse.stops_unheeded, RESTRICTION_RETRY_FIRST_S, RESTRICTION_RETRY_MAX_S)
        )
        self._later(delay_s, lambda: self._stop_if_still_running(evse_id, delay_s))

    def _stop_if_still_running(self, evse_id: int, waited_s: float) -> None:
        evse = self._evses[evse_id]
        if evse.restriction is None or not _in_transaction(evse):
            return
        evse.stops_unheeded += 1
        LOG.warning(
            "%s/%s: transaction %s still runs %.0f s after it should have ended (restricted: %s)",
            self.charger.id,
            evse_id,
            evse.state.transaction_id,
            waited_s,
            evse.restriction,
        )
        self._stop_restricted(evse_id, evse)

    def _request_sync(self) -> None:
        """Queue one job that brings the charger in line with every EVSE's restriction wish."""
        transport = self.transport
        if self._sync_queued or transport is None or not self.ready:
            return  # mark_ready() asks again once the connection is configured
        if all(evse.restriction_synced for evse in self._evses.values()):
            return
        self._sync_queued = transport.enqueue(self._sync_restrictions)

    def _later(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` after ``delay_s`` of the link's clock, unless the connection ends first."""

        async def wait() -> None:
            await self.clock.sleep(delay_s)
            action()

        timer = asyncio.get_running_loop().create_task(wait(), name=f"restriction-{self.charger.id}")
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _sync_restrictions(self) -> None:
        """The restriction job: stop and set Inoperative each newly restricted EVSE, Operative
        each released one. One call in flight (the link's lock); every step logged with its reason."""
        self._sync_queued = False
        failed = False
        async with self.lock:
            transport = self.transport
            if transport is None or not self.ready:
                return
            for evse_id, evse in self._evses.items():
                if evse.restriction_synced:
                    continue
                # Marked done before the calls: a transaction that starts while they are under
                # way marks it undone again and queues the next job.
                evse.restriction_synced = True
                try:
                    if evse.restriction is not None:
                        done = await self._apply_restriction(transport, evse_id, evse)
                    else:
                        done = await self._apply_release(transport, evse_id, evse)
                except ChargerOffline:
                    evse.restriction_synced = False
                    return  # re-applied when the charger is back
                except ChargerError as exc:
                    LOG.warning("%s/%s: %s", self.charger.id, evse_id, exc)
                    done = False
                if not done:
                    evse.restriction_synced = False
                    failed = True
        if failed:
            self._restriction_failures += 1
            delay_s = retry_delay_s(self._restriction_failures, RESTRICTION_RETRY_FIRST_S, RESTRICTION_RETRY_MAX_S)
            LOG.warning("%s: restriction steps tried again in %.0f s", self.charger.id, delay_s)
            self._later(delay_s, self._request_sync)
        else:
            self._restriction_failures = 0

    async def _apply_restriction(self, transport: ProfileTransport, evse_id: int, evse: _Evse) -> bool:
        """Stop the running transaction, then Inoperative. True when nothing is left to retry."""
        done = True
        reason = evse.restriction
        transaction_id = evse.state.transaction_id
        if evse.state.charging and transaction_id is None:
            LOG.warning(
                "%s/%s: a transaction runs but its id is unknown: it cannot be stopped, only blocked (restricted: %s)",
                self.charger.id,
                evse_id,
                reason,
            )
        elif transaction_id is not None:
            status = await self._call_step(
                transport.stop_transaction(transaction_id), f"{transport.stop_action} {transaction_id}"
            )
            LOG.warning(
                "%s/%s: %s %s %s (restricted: %s)",
                self.charger.id,
                evse_id,
                transport.stop_action,
                transaction_id,
                status,
                reason,
            )
            if status == "Accepted":
                self._check_stopped_later(evse_id)
            elif status != "NotImplemented" and evse.state.transaction_id == transaction_id:
                done = False  # refused, and it still runs
        if evse.told_inoperative:
            return done  # a transaction seen since: stopping it was all that was left
        status = await self._call_step(
            transport.change_availability(evse_id, operative=False), "ChangeAvailability Inoperative"
        )
        LOG.warning(
            "%s/%s: ChangeAvailability Inoperative %s (restricted: %s)", self.charger.id, evse_id, status, reason
        )
        if status in ("Accepted", "Scheduled"):
            evse.inoperative_sent = True
            evse.told_inoperative = True
        elif status != "NotImplemented":
            done = False
        return done

    async def _apply_release(self, transport: ProfileTransport, evse_id: int, evse: _Evse) -> bool:
        if not evse.inoperative_sent:
            return True  # released before the charger was ever told: nothing to undo
        status = await self._call_step(
            transport.change_availability(evse_id, operative=True), "ChangeAvailability Operative"
        )
        LOG.info("%s/%s: ChangeAvailability Operative %s (released)", self.charger.id, evse_id, status)
        if status in ("Accepted", "Scheduled", "NotImplemented"):
            evse.inoperative_sent = False
            evse.told_inoperative = False
            return True
        return False

    async def _call_step(self, call: Awaitable[str], what: str) -> str:
        """One restriction call; a charger that does not implement it is reported as such (no retry)."""
        try:
            return await call
        except ChargerCallError as exc:
            if exc.means_unsupported:
                return "NotImplemented"
            raise ChargerCallError(exc.code, f"{what}: {exc.description}") from exc


def _in_transaction(evse: _Evse) -> bool:
    return evse.state.charging or evse.state.transaction_id is not None


def _purpose_text(purpose: ProfilePurpose, transaction_id: str | None) -> str:
    if purpose == "TxProfile":
        return f"TxProfile for transaction {transaction_id}"
    if purpose == "StationMax":
        return "a station maximum on EVSE 0 (single-EVSE station)"
    return purpose
