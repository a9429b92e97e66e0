"""Strict pydantic models of a site config (the YAML an engineer writes).

Every model forbids unknown keys. Units live in field names. Sign convention, written once:
grid + = import, PV + = production, battery + = discharge, EV + = consumption.
Cross-references (a charger's circuit, a circuit's meter, ...) are checked in
:mod:`evdlm.config.semantic`, which also produces warnings for legal but suspicious values.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, time
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A name that can be referenced elsewhere in the file (and used in MQTT topics and metrics).
Identifier = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"),
]
# OCPP identities travel in the websocket URL path: keep them URL-safe.
ChargePointId = Annotated[
    str,
    Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-:]*$"),
]

# A user name of the MQTT broker: no whitespace (mosquitto's ACL file splits on it) and no ':'
# (its password file separates user and hash with it).
BrokerUsername = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s:]+$")]

# Bounds that catch typos (a kW value typed in W, a limit typed in mA) without constraining any
# real site: the largest grid connections evdlm is meant for are tens of MW.
MAX_POWER_KW = 100_000.0
MAX_CURRENT_A = 10_000.0
# Bounds of session inputs (YAML defaults and operator commands alike): a week's stay, a truck's battery.
MAX_DWELL_H = 168.0
MAX_SESSION_ENERGY_KWH = 500.0


class StrictModel(BaseModel):
    # NaN and infinity are typos or attacks, never a limit (YAML spells them .nan and .inf).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class SecretRef(StrictModel):
    """Where a secret lives. The config never holds the secret itself."""

    env: str | None = Field(default=None, description="Name of an environment variable.")
    file: str | None = Field(default=None, description="Path of a file holding the secret.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self


class SiteSection(StrictModel):
    id: Identifier = Field(description="Site id, used in MQTT topics (dlm/{site}/...) and DR targets.")
    timezone: str = Field(default="UTC", description="IANA time zone of the site (tariffs, reports).")
    name: str | None = Field(default=None, description="Human-readable site name.")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class GridConnection(StrictModel):
    import_limit_kw: float = Field(gt=0, le=MAX_POWER_KW, description="Contracted import limit.")
    export_limit_kw: float = Field(
        default=0.0, ge=0, le=MAX_POWER_KW, description="Contracted export limit (0: no export allowed)."
    )
    phase_current_limit_a: float = Field(gt=0, le=MAX_CURRENT_A, description="Main fuse, per phase.")
    nominal_voltage_v: float = Field(
        default=230.0, ge=100, le=480, description="Phase-to-neutral voltage used for A↔W conversion."
    )
    phases: Literal[1, 3] = Field(default=3, description="Phases of the connection.")
    meter: Identifier | None = Field(default=None, description="Device (role grid_meter) measuring the connection.")


class Circuit(StrictModel):
    id: Identifier = Field(description="Circuit id (charger `circuit:` references it).")
    phase_current_limit_a: float = Field(gt=0, le=MAX_CURRENT_A, description="Fuse or breaker rating per phase.")
    power_limit_kw: float | None = Field(
        default=None,
        gt=0,
        le=MAX_POWER_KW,
        description="Optional power limit through this circuit (e.g. a transformer or contract).",
    )
    meter: Identifier | None = Field(default=None, description="Device (role circuit_meter) on this circuit.")
    children: list[Circuit] = Field(default_factory=list, description="Circuits fed from this one.")


class ChargerKind(StrEnum):
    AC_1PHASE = "ac_1phase"
    AC_3PHASE = "ac_3phase"
    DC = "dc"


class RateUnit(StrEnum):
    AUTO = "auto"  # read ChargingScheduleAllowedChargingRateUnit / SmartChargingCtrlr.RateUnit at boot
    AMPERE = "A"
    WATT = "W"


PHASE_ROTATION_PATTERN = re.compile(r"^L([123])-L([123])-L([123])$")


class Charger(StrictModel):
    id: ChargePointId = Field(description="OCPP charge point identity (the last URL path segment).")
    ocpp_version: Literal["1.6", "2.0.1"] = Field(
        description="OCPP version the charger speaks (websocket subprotocol ocpp1.6 / ocpp2.0.1)."
    )
    circuit: Identifier = Field(description="Circuit the charger hangs on.")
    kind: ChargerKind = Field(default=ChargerKind.AC_3PHASE, description="ac_1phase, ac_3phase or dc.")
    phase_rotation: str = Field(
        default="L1-L2-L3",
        description="Site phases wired to the charger's L1, L2, L3 (e.g. L2-L3-L1). "
        "For ac_1phase only the first entry is used.",
    )
    evses: int = Field(default=1, ge=1, le=8, description="Number of EVSEs (connectors that charge at once).")
    min_current_a: float = Field(default=6.0, ge=0, le=MAX_CURRENT_A, description="IEC 61851 minimum per phase (AC).")
    max_current_a: float = Field(default=32.0, gt=0, le=MAX_CURRENT_A, description="Per phase per EVSE (AC).")
    min_power_kw: float = Field(default=0.0, ge=0, le=MAX_POWER_KW, description="DC minimum per EVSE.")
    max_power_kw: float | None = Field(default=None, gt=0, le=MAX_POWER_KW, description="DC maximum per EVSE.")
    rate_unit: RateUnit = Field(
        default=RateUnit.AUTO, description="Unit of charging schedules: auto (ask the charger), A or W."
    )
    max_stack_level: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Override ChargeProfileMaxStackLevel (e.g. 0 for chargers that accept only level 0).",
    )
    priority: int = Field(default=1, ge=0, le=9, description="Priority class, 0 = highest.")
    password: SecretRef | None = Field(default=None, description="OCPP Basic auth password (security profile 1/2).")
    default_dwell_h: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DWELL_H,
        description="Stay assumed for its sessions when neither the car nor a session profile says (departure = start + this).",
    )
    default_energy_kwh: float | None = Field(
        default=None,
        gt=0,
        le=MAX_SESSION_ENERGY_KWH,
        description="Energy assumed needed by its sessions when neither the car nor a session profile says.",
    )
    min_power_floor_kw: float | None = Field(
        default=None,
        gt=0,
        le=MAX_POWER_KW,
        description="Availability (NEVI): each EVSE counts as up only while the controller lets a car that wants "
        "power have at least this (at the port's wired phases); held below it, the time counts below_floor "
        "(or dr_curtailed). Omit: up whenever online and not faulted.",
    )

    @field_validator("phase_rotation")
    @classmethod
    def _rotation(cls, value: str) -> str:
        match = PHASE_ROTATION_PATTERN.match(value)
        if match is None or len(set(match.groups())) != 3:
            raise ValueError(f"phase rotation {value!r} must be a permutation like L1-L2-L3 or L2-L3-L1")
        return value

    @model_validator(mode="after")
    def _limits(self) -> Charger:
        if self.kind is ChargerKind.DC:
            if self.max_power_kw is None:
                raise ValueError("a dc charger needs max_power_kw")
            if self.min_power_kw > self.max_power_kw:
                raise ValueError("min_power_kw is above max_power_kw")
        elif self.min_current_a > self.max_current_a:
            raise ValueError("min_current_a is above max_current_a")
        return self

    @property
    def site_phases(self) -> tuple[int, int, int]:
        """Site phase (1..3) wired to the charger's L1, L2, L3."""
        match = PHASE_ROTATION_PATTERN.match(self.phase_rotation)
        assert match is not None  # validated above
        first, second, third = (int(group) for group in match.groups())
        return (first, second, third)


# ---------------------------------------------------------------- devices


class DeviceRole(StrEnum):
    GRID_METER = "grid_meter"
    CIRCUIT_METER = "circuit_meter"
    PV = "pv"
    BATTERY = "battery"


class _NetworkLink(StrictModel):
    """A Modbus endpoint reached over TCP (a device, or a serial gateway)."""

    name: Identifier = Field(description="Link name (devices reference it).")
    host: str = Field(description="IP address or host name.")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port.")
    timeout_s: float = Field(default=1.0, gt=0, le=30, description="Per-request timeout.")
    max_registers_per_request: int = Field(
        default=125, ge=1, le=125, description="Largest block read the device accepts."
    )


class ModbusTcpLink(_NetworkLink):
    type: Literal["tcp"] = Field(description="tcp: Modbus TCP.")


class ModbusRtuOverTcpLink(_NetworkLink):
    """RTU framing tunnelled through a TCP gateway (one RS-485 line behind it)."""

    type: Literal["rtu_over_tcp"] = Field(description="rtu_over_tcp: RTU frames through a TCP gateway.")


class ModbusRtuLink(StrictModel):
    name: Identifier = Field(description="Link name (devices reference it).")
    type: Literal["rtu"] = Field(description="rtu: a serial RS-485 line.")
    serial_port: str = Field(description="e.g. /dev/ttyUSB0")
    baudrate: int = Field(description="Set explicitly: the pymodbus default rarely matches the meter.")
    parity: Literal["N", "E", "O"] = Field(default="N", description="N, E or O.")
    stopbits: Literal[1, 2] = Field(default=1, description="1 or 2.")
    bytesize: Literal[7, 8] = Field(default=8, description="7 or 8.")
    timeout_s: float = Field(default=1.0, gt=0, le=30, description="Per-request timeout.")
    max_registers_per_request: int = Field(
        default=60, ge=1, le=125, description="Largest block read the device accepts."
    )

    @field_validator("baudrate")
    @classmethod
    def _standard_baudrate(cls, value: int) -> int:
        if value not in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200):
            raise ValueError(f"baudrate {value} is not a standard serial rate")
        return value


ModbusLink = Annotated[ModbusTcpLink | ModbusRtuOverTcpLink | ModbusRtuLink, Field(discriminator="type")]


class ModbusSource(StrictModel):
    link: Identifier = Field(description="Name of an entry under modbus_links.")
    unit_id: int = Field(default=1, ge=0, le=247, description="Modbus unit (slave) id.")
    profile: str = Field(
        description="Device profile: a built-in name (sdm630, sdm72d_m_v2, janitza_umg96, janitza_umg604, "
        "em24, sunspec) or the path of a register-map YAML."
    )


class MqttSource(StrictModel):
    topic: str = Field(min_length=1, description="Topic carrying the value.")
    json_path: str | None = Field(
        default=None,
        description="Dotted path into a JSON payload, e.g. 'power.total'. None: the payload is a bare number.",
    )
    unit: Literal["W", "kW", "A"] = Field(default="W", description="Unit of the value: W, kW or A.")


class SimSource(StrictModel):
    model: Literal["grid_meter", "pv", "battery", "circuit_meter"] = Field(description="Which simulated device.")


class Device(StrictModel):
    name: Identifier = Field(description="Device name (the grid, circuits and battery reference it).")
    role: DeviceRole = Field(description="grid_meter, circuit_meter, pv or battery.")
    max_age_s: float = Field(default=5.0, gt=0, le=3600, description="Older readings are stale.")
    invert_sign: bool = Field(
        default=False, description="True when the device reports the opposite of evdlm's sign convention."
    )
    poll_period_s: float = Field(default=1.0, gt=0, le=3600, description="How often it is read.")
    modbus: ModbusSource | None = Field(default=None, description="Read over Modbus.")
    mqtt: MqttSource | None = Field(default=None, description="Read from an MQTT topic.")
    sim: SimSource | None = Field(default=None, description="Read from the in-process site simulation (tests, demo).")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Device:
        given = [key for key in ("modbus", "mqtt", "sim") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one source of modbus, mqtt or sim (got {given or 'none'})")
        return self


class BatteryControlMode(StrEnum):
    NONE = "none"  # read only
    SUNSPEC_124 = "sunspec_124"  # StorCtl_Mod + InWRte/OutWRte with revert timer
    SUNSPEC_704 = "sunspec_704"  # DER WSet with revert timer


class Battery(StrictModel):
    device: Identifier = Field(description="Device (role battery).")
    max_charge_kw: float = Field(gt=0, le=MAX_POWER_KW, description="Largest charging power.")
    max_discharge_kw: float = Field(gt=0, le=MAX_POWER_KW, description="Largest discharging power.")
    capacity_kwh: float = Field(gt=0, le=1_000_000, description="Usable capacity.")
    soc_min_pct: float = Field(default=10.0, ge=0, le=100, description="Lowest state of charge allowed.")
    soc_max_pct: float = Field(default=95.0, ge=0, le=100, description="Highest state of charge allowed.")
    reserve_soc_pct: float = Field(
        default=20.0, ge=0, le=100, description="Kept for outages: not discharged below by DLM."
    )
    control: BatteryControlMode = Field(
        default=BatteryControlMode.NONE, description="none (read only), sunspec_124 or sunspec_704."
    )
    revert_timeout_s: int = Field(
        default=60, ge=5, le=3600, description="Device reverts to its own control after this."
    )

    @model_validator(mode="after")
    def _soc_window(self) -> Battery:
        if not self.soc_min_pct < self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        if not self.soc_min_pct <= self.reserve_soc_pct <= self.soc_max_pct:
            raise ValueError("reserve_soc_pct must lie inside [soc_min_pct, soc_max_pct]")
        return self


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class TariffPeriod(StrictModel):
    days: list[Weekday] = Field(
        default_factory=lambda: list(ALL_WEEKDAYS), description="Weekdays the period applies to."
    )
    start: time = Field(description="Local start time (HH:MM).")
    end: time = Field(description="Exclusive; 00:00 means midnight at the end of the day.")
    import_price_per_kwh: float = Field(ge=-10, le=100, description="Import price in the period.")


class PriceFeed(StrictModel):
    """Dynamic prices over MQTT laid over the static table (docs/prices.md)."""

    enabled: bool = Field(default=True, description="Subscribe to the feed (needs the mqtt section).")
    topic: str = Field(
        default="evdlm/{site}/prices",
        min_length=1,
        max_length=256,
        pattern=r"^[^#+]+$",
        description="Topic of the feed's messages ({site}: the site id); no wildcards. Retained messages are welcome.",
    )
    state_file: str = Field(
        default="var/prices.json",
        description="The last accepted message persists here (relative to the state directory).",
    )
    warn_ahead_h: float = Field(
        default=12.0,
        ge=0,
        le=192,
        description="Warn when the feed covers less than this many hours ahead (the table's prices fill the rest).",
    )


class Tariffs(StrictModel):
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")
    default_import_price_per_kwh: float = Field(ge=-10, le=100, description="Import price outside every period.")
    export_price_per_kwh: float = Field(default=0.0, ge=-10, le=100, description="Price paid for export.")
    periods: list[TariffPeriod] = Field(
        default_factory=list, description="Time-of-use periods; the first listed wins where they overlap."
    )
    price_feed: PriceFeed | None = Field(
        default=None, description="Dynamic prices over MQTT; where they cover a moment they win over the table."
    )
    state_file: str = Field(
        default="var/cost.json",
        description="The billing month's energy and cost so far persist here (relative to the state directory).",
    )


class DemandCharge(StrictModel):
    """Demand-charge control: each billing window's average import kept under the month's peak
    (docs/demand-charge.md)."""

    enabled: bool = Field(default=True, description="Control the window average (else only report it).")
    window_min: Literal[15, 30, 60] = Field(default=15, description="Length of the billing window, minutes.")
    window: Literal["fixed", "rolling"] = Field(
        default="fixed", description="fixed: aligned on the local clock (quarter-hours); rolling: any window."
    )
    rate_per_kw: float = Field(
        default=0.0, ge=0, le=10_000, description="Demand charge per kW of the month's peak window, per month."
    )
    billing_day: int = Field(
        default=1, ge=1, le=28, description="The billing month starts at local midnight of this day."
    )
    floor_kw: float = Field(
        default=0.0,
        ge=0,
        le=MAX_POWER_KW,
        description="Never aim below this (a contracted or already-paid peak): the cars may use up to it.",
    )
    state_file: str = Field(
        default="var/demand.json",
        description="The month's peak and the current window's energy persist here (relative to the state directory).",
    )


class DrProgram(StrictModel):
    id: Identifier = Field(description="Program id (OpenADR programID).")
    mandatory: bool = Field(default=False, description="Events of this program cannot be opted out.")
    failsafe_import_limit_kw: float | None = Field(
        default=None,
        ge=0,
        le=MAX_POWER_KW,
        description="Applied while the DR channel is stale (never above the last limit received).",
    )
    failsafe_min_duration_s: float = Field(
        default=7200.0,
        ge=0,
        le=7 * 86400,
        description="The failsafe limit holds at least this long once the channel went stale.",
    )
    import_floor_kw: float = Field(
        default=0.0, ge=0, le=MAX_POWER_KW, description="DR import limits are clamped up to this floor."
    )
    max_future_start_s: float = Field(
        default=300.0, ge=0, description="Events created further ahead than this are rejected (clock skew)."
    )
    allow_far_future: bool = Field(
        default=False, description="Accept events created far in the future (no clock-skew check)."
    )


class MqttBroker(StrictModel):
    host: str = Field(default="127.0.0.1", description="Broker host.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port.")
    username: str | None = Field(default=None, description="User name.")
    password: SecretRef | None = Field(default=None, description="Password ({env: NAME} or {file: path}).")
    tls: bool = Field(default=False, description="Connect with TLS.")
    ca_file: str | None = Field(default=None, description="CA bundle for TLS (relative: to the config's folder).")
    cert_file: str | None = Field(
        default=None, description="Client certificate for TLS (PEM; mosquitto's require_certificate)."
    )
    key_file: str | None = Field(
        default=None, description="Private key of cert_file (PEM; omit when cert_file holds it)."
    )
    client_id: str | None = Field(
        default=None,
        description="Client id (default evdlm-{site}); the host name and process id are appended unless "
        "pin_client_id, so no other client can take the connection over.",
    )
    pin_client_id: bool = Field(
        default=False,
        description="Use client_id exactly as given (a broker ACL on the id); another client with the same "
        "id then takes the connection over, which evdlm logs as a warning.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive.")

    @model_validator(mode="after")
    def _client_certificate(self) -> MqttBroker:
        if (self.cert_file is not None or self.key_file is not None) and not self.tls:
            raise ValueError("cert_file and key_file need tls: true")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class DemandResponse(StrictModel):
    enabled: bool = Field(default=True, description="Listen for DR events.")
    programs: list[DrProgram] = Field(
        default_factory=list, description="Programs the site takes part in (events of other programs are not applied)."
    )
    state_file: str = Field(default="var/dr-state.json", description="Accepted events persist here across restarts.")
    publishers: list[BrokerUsername] = Field(
        default_factory=list,
        description="Broker users of the utility's DR bridge: the only clients that may publish on "
        "dr/{site}/events/# and dr/{site}/bridge/#. MQTT does not tell evdlm who published a message, so "
        "the broker's ACL enforces this (deploy/mosquitto/acl); the list documents it and lets validate "
        "check it. Per site, not per program: every program shares the topics. Empty: validate warns.",
    )


# OCPP idTags: 1.6 IdToken is CiString20Type, 2.0.1 IdTokenType.idToken is string[36]; both are
# case insensitive. A list entry may be as long as 2.0.1 allows (validate warns when a longer
# one than 1.6 allows meets a 1.6 charger).
ID_TAG_MAX_LENGTH = 36
ID_TAG_MAX_LENGTH_16 = 20


class LocalAuthEntry(StrictModel):
    """One idTag of the local authorisation list."""

    id_tag: Annotated[str, Field(min_length=1, max_length=ID_TAG_MAX_LENGTH)] = Field(
        description="The idTag (1.6 idTag, at most 20 characters; 2.0.1 idToken, at most 36), exact; "
        "compared case-insensitively as OCPP prescribes."
    )
    status: Literal["Accepted", "Blocked", "Expired", "Invalid"] = Field(
        default="Accepted", description="Answer for it: Accepted, Blocked, Expired or Invalid."
    )
    expiry: datetime | None = Field(
        default=None,
        description="When it expires, with a time zone (e.g. 2027-03-31T23:59:59Z); answered Expired after.",
    )
    parent_id_tag: Annotated[str, Field(min_length=1, max_length=ID_TAG_MAX_LENGTH)] | None = Field(
        default=None, description="Group idTag sent along (1.6 parentIdTag, 2.0.1 groupIdToken)."
    )

    @field_validator("expiry")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give expiry with a time zone, e.g. 2027-03-31T23:59:59Z")
        # A plain UTC datetime (YAML loaders hand over subclasses carrying their own zone types).
        return None if value is None else datetime.fromtimestamp(value.timestamp(), UTC)


class OcppAuthorization(StrictModel):
    """How evdlm answers Authorize, StartTransaction (1.6) and TransactionEvent idTokens (2.0.1).

    Omitting the whole section keeps free vending (every idTag Accepted), as before this section
    existed; ``evdlm validate`` then warns. Write ``accept_all: true`` to choose free vending."""

    accept_all: bool = Field(
        default=False,
        description="Free vending: every idTag is Accepted and local_list and unknown are not consulted "
        "(the offline answer of a Local Controller still follows offline_policy).",
    )
    local_list: list[LocalAuthEntry] = Field(
        default_factory=list, description="Known idTags and their answers (unique, case-insensitively)."
    )
    unknown: Literal["Invalid", "Accepted"] = Field(
        default="Invalid", description="Answer for an idTag not in local_list: Invalid or Accepted."
    )
    offline_policy: Literal["local_list", "accept_all", "reject_all"] = Field(
        default="local_list",
        description="Local Controller mode, while the operator's CSMS is unreachable: an idTag neither in "
        "local_list nor in the answer cache is answered as `unknown` says (local_list), Accepted "
        "(accept_all) or Invalid (reject_all).",
    )
    cache_answers: bool = Field(
        default=True,
        description="Local Controller mode: remember the CSMS's answers per idTag (at most 10000, expired "
        "ones never used) for answering while it is unreachable.",
    )

    @model_validator(mode="after")
    def _unique_tags(self) -> OcppAuthorization:
        seen: set[str] = set()
        for entry in self.local_list:
            folded = entry.id_tag.casefold()
            if folded in seen:
                raise ValueError(f"idTag {entry.id_tag!r} is listed twice in local_list (compared case-insensitively)")
            seen.add(folded)
        return self


class OcppUpstream(StrictModel):
    """The CSMS evdlm relays to in Local Controller mode (``ocpp.mode: local_controller``).

    Each charger gets its own connection to ``<url>/<charger id>`` with the charger's identity and
    subprotocol. Security: ``password`` → Basic auth as ``<charger id>:<password>`` (profiles 1/2;
    one password for every charger); ``cert_file``/``key_file`` → a TLS client certificate
    (profile 3); ``ca_file`` → the CA that signs the CSMS's certificate (default: the system's).
    """

    url: str = Field(description="ws:// or wss:// URL of the CSMS; the charger id is appended as the last segment.")
    password: SecretRef | None = Field(default=None, description="Basic auth password towards the CSMS (profiles 1/2).")
    cert_file: str | None = Field(default=None, description="TLS client certificate towards the CSMS (profile 3).")
    key_file: str | None = Field(default=None, description="Private key of cert_file.")
    ca_file: str | None = Field(default=None, description="CA bundle that verifies the CSMS (wss://).")
    queue_dir: str = Field(
        default="var/lc-queue", description="Where transaction messages wait while the CSMS is offline (JSONL)."
    )
    queue_max_messages: int = Field(
        default=10000,
        ge=10,
        le=10_000_000,
        description="Per charger; beyond it the oldest MeterValues / StatusNotification are dropped (never "
        "BootNotification, Start/StopTransaction or TransactionEvent).",
    )

    @model_validator(mode="after")
    def _check(self) -> OcppUpstream:
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError("upstream url must start with ws:// or wss://")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("upstream cert_file and key_file go together")
        if self.cert_file is not None and not self.url.startswith("wss://"):
            raise ValueError("a client certificate needs a wss:// upstream url")
        return self


class OcppServer(StrictModel):
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=9000, ge=0, le=65535, description="0 picks a free port (tests, demo).")
    security_profile: Literal[0, 1, 2, 3] = Field(
        default=0, description="0 none (lab only), 1 Basic, 2 TLS+Basic, 3 mutual TLS."
    )
    cert_file: str | None = Field(default=None, description="TLS certificate (security profiles 2 and 3).")
    key_file: str | None = Field(default=None, description="TLS private key.")
    ca_file: str | None = Field(default=None, description="CA that signs charger client certificates (profile 3).")
    call_timeout_s: float = Field(default=10.0, gt=0, le=120, description="Wall time a charger has to answer a call.")
    failsafe_current_a: float = Field(
        default=6.0,
        ge=0,
        le=MAX_CURRENT_A,
        description="Limit of the boot-time TxDefaultProfile at the lowest stack level.",
    )
    non_compliance_grace_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A charger above its accepted limit for longer than this counts as uncontrolled load.",
    )
    meter_sample_interval_s: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="MeterValueSampleInterval / SampledDataCtrlr.TxUpdatedInterval set on every charger at boot.",
    )
    authorization: OcppAuthorization | None = Field(
        default=None,
        description="How idTags are answered (local list, free vending, unknown idTags). Omitted: every "
        "idTag is Accepted (free vending, as before) and validate warns.",
    )

    mode: Literal["standalone", "local_controller"] = Field(
        default="standalone",
        description="standalone: evdlm is the chargers' central system. local_controller: evdlm sits between "
        "the chargers and a CSMS (ocpp.upstream), relaying their traffic and keeping the site limits.",
    )
    upstream: OcppUpstream | None = Field(default=None, description="The CSMS (local_controller mode).")

    @model_validator(mode="after")
    def _upstream(self) -> OcppServer:
        if self.mode == "local_controller" and self.upstream is None:
            raise ValueError("ocpp.mode local_controller needs ocpp.upstream")
        return self

    @model_validator(mode="after")
    def _tls_files(self) -> OcppServer:
        if self.security_profile >= 2 and (self.cert_file is None or self.key_file is None):
            raise ValueError("security_profile 2 and 3 need cert_file and key_file")
        if self.security_profile == 3 and self.ca_file is None:
            raise ValueError("security_profile 3 needs ca_file (to verify client certificates)")
        return self


class MeterChecks(StrictModel):
    """Cross-checks that catch a meter reporting something plausible but wrong (SUSPECT)."""

    enabled: bool = Field(
        default=True,
        description="Check every grid and circuit meter against physics and the chargers below it. "
        "Off: a frozen or mis-scaled meter is believed (validate warns).",
    )
    tolerance_a: float = Field(
        default=3.0,
        ge=0,
        le=1000,
        description="A meter may read this much less per phase than the chargers below it report.",
    )
    tolerance_fraction: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="... or this fraction of what they report, whichever is larger (charger meter accuracy).",
    )
    hold_s: float = Field(
        default=15.0,
        ge=0,
        le=600,
        description="A meter reading less than the chargers below it for this long is SUSPECT "
        "(raised to 2 × ocpp.meter_sample_interval_s: the chargers' samples lag the meter).",
    )
    frozen_after_s: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="Values unchanged this long while the chargers below moved by frozen_step_a: frozen.",
    )
    frozen_step_a: float = Field(
        default=6.0, gt=0, le=1000, description="Change of the chargers' load that a live meter must show."
    )
    trust_after_s: float = Field(
        default=60.0, ge=0, le=86400, description="A SUSPECT meter is trusted again after this long consistent."
    )


class HorizonPlanning(StrictModel):
    enabled: bool = Field(
        default=False,
        description="Plan every car's power over the coming hours (an LP on HiGHS, off the cycle's path) and "
        "let the plan's first step decide who charges now (the cycle still enforces every fuse).",
    )
    every_s: float = Field(default=300.0, ge=30, le=3600, description="A new plan is made this often.")
    step_s: float = Field(default=900.0, ge=60, le=3600, description="Length of one plan step.")
    hours: float = Field(default=24.0, gt=0, le=72, description="How far ahead the plan looks.")
    time_limit_s: float = Field(default=5.0, gt=0, le=60, description="Longest a plan may take to solve.")
    valid_for_s: float = Field(
        default=900.0,
        ge=60,
        le=7200,
        description="A plan older than this is not used (the cycle's own fill decides until a new one comes).",
    )


class Control(StrictModel):
    cycle_period_s: float = Field(default=1.0, ge=0.1, le=60, description="Time between control cycles.")
    safety_margin_a: float = Field(default=1.0, ge=0, le=1000, description="Kept free on every current row.")
    safety_margin_kw: float = Field(default=1.0, ge=0, le=MAX_POWER_KW, description="Kept free on every power row.")
    ramp_up_a_per_s: float = Field(
        default=2.0, gt=0, le=1000, description="Largest raise per EVSE per second (cuts are immediate)."
    )
    settle_time_s: float = Field(
        default=15.0, ge=0, le=600, description="Time a charger and car take to follow a new limit."
    )
    deadband_a: float = Field(default=1.0, ge=0, le=100, description="Smaller changes are not re-sent.")
    raise_step_a: float = Field(
        default=2.0,
        ge=0,
        le=100,
        description="A smaller raise waits until the limit has stood raise_wait_s (cuts always go out at once).",
    )
    raise_wait_s: float = Field(
        default=60.0, ge=0, le=3600, description="How long a limit stands before a raise below raise_step_a is sent."
    )
    fallback_import_limit_kw: float = Field(
        gt=0, le=MAX_POWER_KW, description="Site limit while the grid meter is stale."
    )
    lease_duration_s: float = Field(default=60.0, ge=5, le=3600, description="Validity of each dynamic profile.")
    lease_refresh_s: float = Field(default=20.0, ge=1, le=3600, description="Leases are refreshed this often.")
    min_on_time_s: float = Field(
        default=120.0, ge=0, le=86400, description="A car is not paused by rotation before this."
    )
    min_off_time_s: float = Field(
        default=60.0, ge=0, le=86400, description="A paused car waits at least this long before it resumes."
    )
    rotation_period_s: float = Field(
        default=900.0, ge=0, le=86400, description="A paused car gets its turn within this."
    )
    solve_budget_s: float = Field(default=0.2, gt=0, le=60, description="Time the solver chain may use per cycle.")
    meter_checks: MeterChecks = Field(
        default_factory=MeterChecks, description="Plausibility cross-checks of the grid and circuit meters."
    )
    horizon: HorizonPlanning = Field(
        default_factory=HorizonPlanning, description="Live horizon planning (per-car power targets)."
    )

    @model_validator(mode="after")
    def _lease(self) -> Control:
        if self.lease_refresh_s * 2 > self.lease_duration_s:
            raise ValueError("lease_refresh_s must be at most half of lease_duration_s so leases never lapse")
        if self.cycle_period_s > self.lease_refresh_s:
            raise ValueError("cycle_period_s must not exceed lease_refresh_s")
        return self


class SessionProfile(StrictModel):
    """Session defaults for the cars whose idTag matches (fleet cards, visitors, staff)."""

    name: Identifier = Field(description="Profile name (logs, session state).")
    id_tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1,
        description="idTags (OCPP 1.6 idTag, 2.0.1 idToken), exact or glob patterns (* ? [..]); compared case-insensitively.",
    )
    priority: int | None = Field(default=None, ge=0, le=9, description="Priority class of these sessions, 0 = highest.")
    default_dwell_h: float | None = Field(
        default=None, gt=0, le=MAX_DWELL_H, description="Stay assumed when the car announces no departure."
    )
    default_energy_kwh: float | None = Field(
        default=None, gt=0, le=MAX_SESSION_ENERGY_KWH, description="Energy assumed when the car announces none."
    )


class HttpApi(StrictModel):
    """The HTTP API (session inputs; the operator view adds its routes here)."""

    enabled: bool = Field(default=True, description="Serve the HTTP API.")
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port; 0 picks a free port (tests).")
    token: SecretRef | None = Field(
        default=None,
        description="Bearer token every request must carry ({env: NAME} or {file: path}); required "
        "when the host is not a loopback address.",
    )

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> HttpApi:
        # The API shows the whole site and takes session commands: never open to a network unguarded.
        if self.enabled and self.token is None and not _is_loopback(self.host):
            raise ValueError(f"http_api.host {self.host!r} is not a loopback address: set http_api.token")
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ExclusionReason(StrEnum):
    """Outage causes NEVI (23 CFR 680.116(b)) lets an operator exclude from uptime."""

    MAINTENANCE = "maintenance"
    UTILITY_OUTAGE = "utility_outage"
    VEHICLE_FAULT = "vehicle_fault"
    VANDALISM = "vandalism"
    NATURAL_DISASTER = "natural_disaster"
    OUTSIDE_HOURS = "outside_hours"


class ExclusionWindow(StrictModel):
    """A period whose port time counts as excluded (NEVI), with its cause."""

    start: datetime = Field(description="Start, ISO 8601 with a time zone (e.g. 2026-11-03T02:00:00Z).")
    end: datetime = Field(description="End (exclusive), ISO 8601 with a time zone; after start.")
    chargers: list[ChargePointId] | None = Field(
        default=None, description="Chargers it covers (omit: every charger of the site)."
    )
    reason: ExclusionReason = Field(default=ExclusionReason.MAINTENANCE, description="Why it is excluded (NEVI cause).")

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give a time zone (e.g. Z or +01:00)")
        # A plain UTC datetime (YAML loaders hand over subclasses carrying their own zone types).
        return datetime.fromtimestamp(value.timestamp(), UTC)

    @model_validator(mode="after")
    def _ordered(self) -> ExclusionWindow:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class AvailabilitySettings(StrictModel):
    """Per-port availability ledger (docs/availability.md)."""

    enabled: bool = Field(default=True, description="Keep the ledger.")
    state_file: str = Field(
        default="var/availability.json", description="The ledger persists here (relative to the state directory)."
    )
    save_every_s: float = Field(default=300.0, gt=0, le=86_400, description="Save the ledger this often (and at stop).")
    maintenance_windows: list[ExclusionWindow] = Field(
        default_factory=list, description="Excluded periods (scheduled maintenance, known utility outages, ...)."
    )
    excluded_classes: list[Literal["dr_curtailed"]] = Field(
        default_factory=list,
        description="Classes counted like excluded time in the uptime %, for a site whose DR program counts as a "
        "utility cause (their seconds still show as their own class).",
    )


class Recording(StrictModel):
    enabled: bool = Field(default=True, description="Record every cycle.")
    directory: str = Field(
        default="var/recordings", description="Folder for recordings (relative to the state directory)."
    )
    max_disk_mb: float = Field(default=2048.0, gt=0, description="Oldest recordings are deleted beyond this.")
    rotate_after_s: float = Field(default=3600.0, gt=0, description="A new file this often.")


class Observability(StrictModel):
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="Prometheus /metrics; None disables.")
    metrics_host: str = Field(default="127.0.0.1", description="Address of the /metrics endpoint.")
    log_json: bool = Field(default=False, description="One JSON object per log line.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="DEBUG, INFO, WARNING or ERROR."
    )


class SiteConfig(StrictModel):
    """One site: the whole YAML file."""

    schema_version: Literal[1] = Field(default=1, description="Version of this file format.")
    site: SiteSection = Field(description="Identity and time zone.")
    grid: GridConnection = Field(description="The grid connection: contract limits, main fuse, voltage.")
    circuits: list[Circuit] = Field(min_length=1, description="Top-level circuits directly below the grid connection.")
    chargers: list[Charger] = Field(default_factory=list, description="Every charge point, by OCPP identity.")
    modbus_links: list[ModbusLink] = Field(
        default_factory=list,
        description="Modbus endpoints (TCP, RTU-over-TCP gateways, serial lines), shared by the devices on them.",
    )
    devices: list[Device] = Field(
        default_factory=list, description="Meters, PV, battery: where each reading comes from."
    )
    battery: Battery | None = Field(default=None, description="A stationary battery evdlm may use (omit: none).")
    tariffs: Tariffs | None = Field(default=None, description="Time-of-use prices (reports and planning).")
    demand: DemandCharge | None = Field(default=None, description="Demand-charge (billing window peak) control.")
    mqtt: MqttBroker | None = Field(default=None, description="The MQTT broker (DR, MQTT devices, state publishing).")
    demand_response: DemandResponse | None = Field(default=None, description="DR programs the site takes part in.")
    ocpp: OcppServer = Field(default_factory=OcppServer, description="The OCPP server chargers connect to.")
    control: Control = Field(description="Settings of the control cycle.")
    recording: Recording = Field(default_factory=Recording, description="Cycle recordings for replay.")
    observability: Observability = Field(default_factory=Observability, description="Metrics and logs.")
    session_profiles: list[SessionProfile] = Field(
        default_factory=list,
        description="Session defaults by idTag; the first profile whose idTags match a session applies (exact before glob).",
    )
    http_api: HttpApi | None = Field(default=None, description="The HTTP API (omit: not served).")
    availability: AvailabilitySettings | None = Field(
        default=None, description="Per-port availability ledger, NEVI uptime (omit: not kept)."
    )

    def iter_circuits(self) -> list[tuple[Circuit, Circuit | None]]:
        """Every circuit with its parent (None for top level), depth first."""
        out: list[tuple[Circuit, Circuit | None]] = []

        def walk(circuit: Circuit, parent: Circuit | None) -> None:
            out.append((circuit, parent))
            for child in circuit.children:
                walk(child, circuit)

        for top in self.circuits:
            walk(top, None)
        return out

    def device(self, name: str) -> Device:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)

    @property
    def evse_count(self) -> int:
        return sum(charger.evses for charger in self.chargers)
