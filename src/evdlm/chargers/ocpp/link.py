"""One charger as the controller sees it: EVSE states, capabilities, leases, and the command path.

A :class:`ChargerLink` outlives websocket connections (a reconnect keeps what we learned). It
talks to the charger through a :class:`ProfileTransport` (the version's session) and holds one
lock so that exactly one of our calls is in flight per charger.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from evdlm.chargers.errors import ChargerCallError, ChargerError, ChargerOffline, ChargerTimeout
from evdlm.chargers.ocpp.parse import ChargingNeeds, MeterSample, SmartChargingConfig
from evdlm.chargers.planning import (
    ChargerCapabilities,
    ComplianceState,
    Lease,
    LinkSettings,
    ProfileSpec,
    assess_compliance,
    dynamic_level_for,
    dynamic_profile_id,
    failsafe_limit,
    failsafe_profile,
    lease_profile,
    watts_to_amps,
    wire_limit,
    within_deadband,
)
from evdlm.config.models import Charger, ChargerKind, RateUnit
from evdlm.core.clock import Clock
from evdlm.core.types import ChargingCommand, CommandResult, CommandStatus, EvseState, RateUnitLiteral

LOG = logging.getLogger("evdlm.chargers.link")

EvseKey = tuple[str, int]

# An EVSE that refused every profile variant is asked again after this long (simulated time):
# firmware gets updated and transient refusals happen, but the flash writes of retrying every
# cycle would not help either.
UNCONTROLLABLE_RETRY_S = 900.0


class ProfileTransport(Protocol):
    """What a version's session offers the link; raises :class:`ChargerError` subclasses."""

    async def set_profile(self, spec: ProfileSpec) -> str:
        """Install a TxDefaultProfile; the charger's status (Accepted / Rejected / NotSupported)."""
        ...

    async def clear_profile(self, profile_id: int) -> str: ...


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
    uncontrollable_since_s: float | None = None


@dataclass(frozen=True)
class _Attempt:
    stack_level: int
    unit: RateUnitLiteral


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
        self.ready = False  # configuration read and fail-safe installed on this connection
        self.failsafe_installed = False
        self._on_change = on_change
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
        for evse_id, evse in self._evses.items():
            # After a reconnect we cannot know what the charger kept: send every limit again.
            evse.lease = None
            self._update(evse_id, online=True, accepted_limit=None, accepted_unit=None)

    def detach(self, transport: ProfileTransport) -> None:
        if self.transport is not transport:
            return  # a newer connection already replaced this one
        self.transport = None
        self.ready = False
        for evse_id in self._evses:
            self._update(evse_id, online=False)

    def configure(self, reported: SmartChargingConfig | None) -> None:
        self.capabilities = capabilities_from_config(self.charger, reported)
        LOG.info(
            "%s: smart charging units=%s max_stack_level=%s dynamic_level=%s",
            self.charger.id,
            ",".join(sorted(self.capabilities.rate_units)),
            self.capabilities.reported_max_stack_level,
            self.capabilities.dynamic_stack_level,
        )
        for evse_id, evse in self._evses.items():
            evse.uncontrollable_since_s = None
            self._update(evse_id, controllable=True)

    def set_status(self, evse_id: int, connected: bool | None) -> None:
        if evse_id == 0:
            return  # connector 0 is the charge point itself
        if connected is not None:
            self._update(evse_id, connected=connected)

    def next_transaction_id(self) -> int:
        """1.6 transaction ids are ours to assign; unique per charger while this process runs."""
        return next(self._transaction_ids)

    def transaction_started(self, evse_id: int, transaction_id: str) -> None:
        self._update(evse_id, connected=True, charging=True, transaction_id=transaction_id)

    def transaction_resumed(self, evse_id: int, transaction_id: str | None) -> None:
        """A session that began before this connection (or this process): learnt from a status
        that implies a transaction, or from meter values that name one."""
        evse = self._evses.get(evse_id)
        if evse is None:
            return
        self._update(evse_id, connected=True, charging=True, transaction_id=transaction_id or evse.state.transaction_id)

    def charging(self, evse_id: int) -> bool:
        evse = self._evses.get(evse_id)
        return evse is not None and evse.state.charging

    def transaction_ended(self, transaction_id: str | None, evse_id: int | None = None) -> int | None:
        """Mark the session over; returns the EVSE whose dynamic profile should be cleared."""
        for candidate_id, evse in self._evses.items():
            if (evse_id is not None and candidate_id == evse_id) or (
                transaction_id is not None and evse.state.transaction_id == transaction_id
            ):
                self._update(candidate_id, charging=False, transaction_id=None, phase_current_a=None, power_w=None)
                return candidate_id
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
        """Install the boot-time fail-safe (call with :attr:`lock` held)."""
        caps = self.capabilities
        units: list[RateUnitLiteral] = ["A", "W"] if "A" in caps.rate_units else ["W", "A"]
        if caps.unit_fixed:
            units = units[:1]
        for unit in units:
            spec = failsafe_profile(unit, failsafe_limit(unit, caps, self.settings), self.clock.now_s())
            status = await self._send(spec)
            if status == "Accepted":
                self.failsafe_installed = True
                LOG.info("%s: fail-safe %s %s installed at stack level 0", self.charger.id, spec.limit, unit)
                return
        self.failsafe_installed = False
        LOG.error("%s: charger refused the fail-safe profile: it will charge unlimited without evdlm", self.charger.id)

    async def _send(self, spec: ProfileSpec) -> str:
        transport = self.transport
        if transport is None:
            raise ChargerOffline(f"{self.charger.id} is not connected")
        return await transport.set_profile(spec)

    async def clear_session(self, evse_id: int) -> None:
        """ClearChargingProfile of the EVSE's dynamic profile after its session ended."""
        async with self.lock:
            evse = self._evses[evse_id]
            transport = self.transport
            if evse.lease is None or transport is None:
                return
            try:
                status = await transport.clear_profile(dynamic_profile_id(evse_id))
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
        since_s = evse.uncontrollable_since_s
        if not evse.state.controllable and since_s is not None and now_s - since_s < UNCONTROLLABLE_RETRY_S:
            return self._result(
                command, CommandStatus.NOT_SUPPORTED, detail="refused every profile variant; counted at its maximum"
            )
        unit = caps.unit_for(command.unit)
        limit = wire_limit(command, unit, caps, self.settings.nominal_voltage_v)
        phases = max(1, min(command.phases, caps.phases))
        if within_deadband(evse.lease, limit, unit, now_s, self.settings, phases):
            assert evse.lease is not None
            return self._result(
                command,
                CommandStatus.UNCHANGED,
                sent_limit=evse.lease.limit,
                sent_unit=evse.lease.unit,
                stack_level=evse.lease.stack_level,
            )
        last_failure: tuple[CommandStatus, str] = (CommandStatus.FAILED, "")
        for attempt in self._attempts(unit):
            attempt_limit = (
                limit
                if attempt.unit == unit
                else wire_limit(command, attempt.unit, caps, self.settings.nominal_voltage_v)
            )
            spec = lease_profile(
                command.evse_id, attempt.stack_level, attempt.unit, attempt_limit, now_s, self.settings.lease_duration_s
            )
            try:
                status = await self._send(spec)
            except ChargerTimeout as exc:
                return self._result(command, CommandStatus.TIMEOUT, detail=str(exc))
            except ChargerOffline as exc:
                return self._result(command, CommandStatus.OFFLINE, detail=str(exc))
            except ChargerCallError as exc:
                if exc.means_unsupported:
                    last_failure = (CommandStatus.NOT_SUPPORTED, str(exc))
                    break
                last_failure = (CommandStatus.FAILED, str(exc))
                continue
            if status == "Accepted":
                self._accepted(evse, command, spec, phases, attempt, now_s)
                return self._result(
                    command,
                    CommandStatus.ACCEPTED,
                    sent_limit=spec.limit,
                    sent_unit=spec.unit,
                    stack_level=spec.stack_level,
                )
            last_failure = (
                (CommandStatus.NOT_SUPPORTED if status == "NotSupported" else CommandStatus.REJECTED),
                f"SetChargingProfile {status} at stack level {spec.stack_level} in {spec.unit}",
            )
            if status == "NotSupported":
                break  # smart charging is absent: no variant will help
        LOG.warning(
            "%s/%s refused every profile variant (%s): marked uncontrollable, counted at its maximum",
            self.charger.id,
            command.evse_id,
            last_failure[1],
        )
        evse.uncontrollable_since_s = now_s
        self._update(command.evse_id, controllable=False)
        return self._result(command, last_failure[0], detail=last_failure[1])

    def _attempts(self, unit: RateUnitLiteral) -> list[_Attempt]:
        """The configured way first; then a lower stack level (the charger's reported maximum,
        then 0: ABB-style firmware takes only 0); then the other unit, when not pinned by config."""
        caps = self.capabilities
        levels = [caps.dynamic_stack_level]
        reported = caps.reported_max_stack_level
        if reported is not None and 0 < reported < caps.dynamic_stack_level:
            levels.append(reported)
        if 0 not in levels:
            levels.append(0)
        attempts = [_Attempt(level, unit) for level in levels]
        if not caps.unit_fixed:
            other: RateUnitLiteral = "W" if unit == "A" else "A"
            attempts += [_Attempt(level, other) for level in levels]
        return attempts

    def _accepted(
        self, evse: _Evse, command: ChargingCommand, spec: ProfileSpec, phases: int, attempt: _Attempt, now_s: float
    ) -> None:
        caps = self.capabilities
        preferred = caps.unit_for(command.unit)
        if attempt.stack_level != caps.dynamic_stack_level or attempt.unit != preferred:
            # Learned from a refusal: remember so the next command goes the working way at once.
            units = caps.rate_units if attempt.unit == preferred else frozenset({attempt.unit})
            self.capabilities = replace(caps, dynamic_stack_level=attempt.stack_level, rate_units=units)
            LOG.warning(
                "%s: profiles now go at stack level %s in %s%s",
                self.charger.id,
                attempt.stack_level,
                attempt.unit,
                " (shared with the fail-safe: a lapsed lease no longer falls back)"
                if self.capabilities.single_level
                else "",
            )
        assert spec.valid_to_s is not None
        previous = evse.lease
        evse.lease = Lease(
            limit=spec.limit,
            unit=spec.unit,
            stack_level=spec.stack_level,
            sent_at_s=now_s,
            valid_to_s=spec.valid_to_s,
            phases=phases,
        )
        if previous is None or previous.limit != spec.limit or previous.unit != spec.unit or not previous.valid(now_s):
            evse.limit_since_s = now_s
        limit_a = spec.limit if spec.unit == "A" else watts_to_amps(spec.limit, self.settings.nominal_voltage_v, phases)
        LOG.debug("%s/%s accepted %.1f %s (%.1f A)", self.charger.id, command.evse_id, spec.limit, spec.unit, limit_a)
        evse.uncontrollable_since_s = None
        self._update(command.evse_id, accepted_limit=spec.limit, accepted_unit=spec.unit, controllable=True)
