"""Cross-reference checks and warnings over a structurally valid :class:`SiteConfig`.

Structural validation (types, ranges, unknown keys) is pydantic's job; this module checks
what needs the whole file: ids are unique, references resolve to a device of the right role,
and values that are legal but probably wrong (a child circuit rated above its parent) are
flagged as warnings.
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from urllib.parse import urlsplit

from evdlm.config.issues import LocPath, Severity
from evdlm.config.models import (
    ID_TAG_MAX_LENGTH_16,
    BatteryControlMode,
    ChargerKind,
    Circuit,
    DeviceRole,
    SecretRef,
    SiteConfig,
)

BUILTIN_PROFILE_DIR = Path(__file__).resolve().parent.parent / "devices" / "profiles"
SUNSPEC_PROFILE = "sunspec"


@dataclass(frozen=True)
class Finding:
    loc: LocPath
    message: str
    severity: Severity = "error"


def builtin_profile_names() -> set[str]:
    """Names of the register-map profiles shipped with evdlm, plus SunSpec discovery."""
    return {path.stem for path in BUILTIN_PROFILE_DIR.glob("*.yaml")} | {SUNSPEC_PROFILE}


def _circuit_locs(
    circuits: list[Circuit], prefix: LocPath = ("circuits",)
) -> Iterable[tuple[Circuit, LocPath, Circuit | None]]:
    def walk(
        circuit: Circuit, loc: LocPath, parent: Circuit | None
    ) -> Iterable[tuple[Circuit, LocPath, Circuit | None]]:
        yield circuit, loc, parent
        for index, child in enumerate(circuit.children):
            yield from walk(child, (*loc, "children", index), circuit)

    for index, top in enumerate(circuits):
        yield from walk(top, (*prefix, index), None)


def _duplicates(items: Iterable[tuple[str, LocPath]], what: str) -> list[Finding]:
    items = list(items)
    counts = Counter(name for name, _ in items)
    seen: set[str] = set()
    findings = []
    for name, loc in items:
        if counts[name] > 1:
            if name in seen:
                findings.append(Finding((*loc, "id"), f"duplicate {what} {name!r}"))
            seen.add(name)
    return findings


def _secret_findings(secret: SecretRef | None, loc: LocPath, base_dir: Path) -> list[Finding]:
    # Only existence is checked, never the value: validate may run where secrets are not deployed.
    if secret is None:
        return []
    if secret.env is not None and secret.env not in os.environ:
        return [Finding(loc, f"environment variable {secret.env} is not set here", "warning")]
    if secret.file is not None and not (base_dir / secret.file).is_file():
        return [Finding(loc, f"secret file {secret.file} does not exist here", "warning")]
    return []


def _charger_findings(config: SiteConfig, circuits: dict[str, Circuit], base_dir: Path) -> list[Finding]:
    findings: list[Finding] = []
    evses_per_circuit: dict[str, int] = defaultdict(int)
    for index, charger in enumerate(config.chargers):
        loc: LocPath = ("chargers", index)
        circuit = circuits.get(charger.circuit)
        if circuit is None:
            findings.append(Finding((*loc, "circuit"), f"circuit {charger.circuit!r} is not defined under circuits"))
        else:
            evses_per_circuit[circuit.id] += charger.evses
            if charger.kind is not ChargerKind.DC and charger.max_current_a > circuit.phase_current_limit_a:
                findings.append(
                    Finding(
                        (*loc, "max_current_a"),
                        f"{charger.max_current_a:g} A is above its circuit {circuit.id!r} limit "
                        f"({circuit.phase_current_limit_a:g} A); the circuit limit governs",
                        "warning",
                    )
                )
        if config.grid.phases == 1 and charger.kind is ChargerKind.AC_3PHASE:
            findings.append(Finding((*loc, "kind"), "an ac_3phase charger on a 1-phase grid connection"))
        if config.ocpp.security_profile in (1, 2) and charger.password is None:
            findings.append(
                Finding(
                    (*loc, "password"), f"security_profile {config.ocpp.security_profile} needs a password per charger"
                )
            )
        findings += _secret_findings(charger.password, (*loc, "password"), base_dir)
    for circuit_id, evse_count in evses_per_circuit.items():
        circuit = circuits[circuit_id]
        if evse_count * config.ocpp.failsafe_current_a > circuit.phase_current_limit_a:
            findings.append(
                Finding(
                    ("ocpp", "failsafe_current_a"),
                    f"{evse_count} EVSEs on circuit {circuit_id!r} at the fail-safe {config.ocpp.failsafe_current_a:g} A "
                    f"draw {evse_count * config.ocpp.failsafe_current_a:g} A, above its {circuit.phase_current_limit_a:g} A; "
                    "a dead controller would rely on the fuse",
                    "warning",
                )
            )
    return findings


def _device_ref(config: SiteConfig, name: str | None, role: DeviceRole, loc: LocPath) -> list[Finding]:
    if name is None:
        return []
    try:
        device = config.device(name)
    except KeyError:
        return [Finding(loc, f"device {name!r} is not defined under devices")]
    if device.role is not role:
        return [Finding(loc, f"device {name!r} has role {device.role.value}, expected {role.value}")]
    return []


def _tariff_findings(config: SiteConfig) -> list[Finding]:
    if config.tariffs is None:
        return []
    findings = []
    claimed: dict[tuple[str, int], int] = {}
    for index, period in enumerate(config.tariffs.periods):
        if period.start == period.end:
            findings.append(Finding(("tariffs", "periods", index, "end"), "period is empty (start equals end)"))
            continue
        end_minute = 24 * 60 if period.end == time(0, 0) else period.end.hour * 60 + period.end.minute
        start_minute = period.start.hour * 60 + period.start.minute
        if end_minute < start_minute:
            findings.append(
                Finding(
                    ("tariffs", "periods", index, "end"), "end is before start (split periods crossing midnight in two)"
                )
            )
            continue
        for day in period.days:
            for minute in range(start_minute, end_minute):
                other = claimed.setdefault((day, minute), index)
                if other != index:
                    findings.append(
                        Finding(
                            ("tariffs", "periods", index),
                            f"overlaps period {other} on {day}; the first listed wins",
                            "warning",
                        )
                    )
                    break
            else:
                continue
            break
    return findings


BROKER_GUIDE = "deploy/mosquitto/ and docs/dr-mqtt.md, Broker security"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, localhost).

    A wildcard address (0.0.0.0, ::) listens on every interface, so it is not loopback.
    """
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: assume the network


def _mqtt_exposure(config: SiteConfig) -> str:
    """What a client allowed to publish on the broker can do to this site, for the warnings."""
    site = config.site.id
    harms = []
    dr = config.demand_response
    if dr is not None and dr.enabled:
        harms.append(f"inject and cancel DR events, force FAILSAFE with a forged dr/{site}/bridge/status")
    if any(device.mqtt is not None for device in config.devices):
        harms.append("feed false readings to the MQTT devices")
    harms.append(f"take over evdlm's client id and overwrite dlm/{site}/status")
    return ", ".join(harms)


def security_findings(config: SiteConfig) -> list[Finding]:
    """Warnings about the site's exposure: who can reach the broker and the OCPP listener.

    evdlm cannot see what the broker enforces; these are about what the config makes possible.
    A loopback broker without users is said to be lab-only once, not once per consequence.
    """
    findings: list[Finding] = []
    broker = config.mqtt
    dr = config.demand_response
    dr_on = dr is not None and dr.enabled
    if broker is not None:
        where = f"{broker.host}:{broker.port}"
        local = is_loopback(broker.host)
        # A client certificate authenticates too (mosquitto's use_identity_as_username).
        if broker.username is None and broker.cert_file is None:
            # evdlm cannot know where else the broker listens: loopback here is a lower bound.
            if local:
                who = "any client of the broker, every process on this machine at least,"
                advice = f"lab only (for a real site: {BROKER_GUIDE})"
            else:
                who = f"any client that reaches {where}"
                advice = f"give the broker users and an ACL, then set username and password ({BROKER_GUIDE})"
            findings.append(
                Finding(
                    ("mqtt", "username"),
                    f"no username: evdlm connects anonymously, so the broker admits anonymous clients and {who} "
                    f"can {_mqtt_exposure(config)}; {advice}",
                    "warning",
                )
            )
        if not broker.tls and not local:
            carried = "evdlm's password, DR events and limits" if broker.username else "DR events and limits"
            findings.append(
                Finding(
                    ("mqtt", "tls"),
                    f"plain-text MQTT to {where}: {carried} cross the network readable and changeable by anyone "
                    f"on the path; set tls: true (and ca_file) and use the broker's TLS listener ({BROKER_GUIDE})",
                    "warning",
                )
            )
        if dr is not None and dr_on and (broker.username is not None or broker.cert_file is not None):
            site = config.site.id
            if not dr.publishers:
                findings.append(
                    Finding(
                        ("demand_response", "publishers"),
                        f"no DR publishers named: evdlm applies every valid event on dr/{site}/events/# and cannot "
                        "tell who sent it; name the broker user of the utility's bridge here and give only that "
                        f"user write access to dr/{site}/events/# and dr/{site}/bridge/# in the broker ACL "
                        f"({BROKER_GUIDE})",
                        "warning",
                    )
                )
            for index, publisher in enumerate(dr.publishers):
                if publisher == broker.username:
                    findings.append(
                        Finding(
                            ("demand_response", "publishers", index),
                            f"{publisher!r} is evdlm's own broker user: whoever holds evdlm's password could "
                            "publish DR events; give the bridge a user of its own",
                            "warning",
                        )
                    )
    ocpp = config.ocpp
    if ocpp.security_profile == 0 and not is_loopback(ocpp.host):
        findings.append(
            Finding(
                ("ocpp", "security_profile"),
                f"chargers connect to {ocpp.host}:{ocpp.port} without authentication (security profile 0): "
                "anyone who reaches the port can connect as any charger id (it is only the URL path), report "
                "false sessions and meter values and take its limits; use security_profile 1 with a password "
                "per charger on a closed charger network, or 2 or 3 (TLS)",
                "warning",
            )
        )
    api = config.http_api
    if api is not None and api.enabled and api.token is None and not is_loopback(api.host):
        findings.append(
            Finding(
                ("http_api", "token"),
                f"the HTTP API on {api.host}:{api.port} has no token: anyone who reaches the port can pause any "
                "car and change every session's departure, energy and priority; set token ({env: NAME}) or "
                "listen on 127.0.0.1 behind a reverse proxy that authenticates",
                "warning",
            )
        )
    return findings


def _session_profile_findings(config: SiteConfig) -> list[Finding]:
    findings = _duplicates(
        ((p.name, ("session_profiles", i)) for i, p in enumerate(config.session_profiles)), "session profile name"
    )
    seen: dict[str, str] = {}
    for index, profile in enumerate(config.session_profiles):
        if profile.priority is None and profile.default_dwell_h is None and profile.default_energy_kwh is None:
            findings.append(
                Finding(
                    ("session_profiles", index),
                    f"session profile {profile.name} sets neither priority nor default_dwell_h nor default_energy_kwh",
                    "warning",
                )
            )
        for position, tag in enumerate(profile.id_tags):
            folded = tag.casefold()
            if folded in seen and seen[folded] != profile.name:
                findings.append(
                    Finding(
                        ("session_profiles", index, "id_tags", position),
                        f"idTag {tag!r} is also listed by session profile {seen[folded]}, which wins (the first does)",
                        "warning",
                    )
                )
            seen.setdefault(folded, profile.name)
    return findings


def _authorization_findings(config: SiteConfig) -> list[Finding]:
    """Free vending nobody chose, a list nobody reads, idTags no charger can send."""
    auth = config.ocpp.authorization
    if not config.chargers:
        return []
    if auth is None and config.ocpp.mode == "local_controller":
        return [
            Finding(
                ("ocpp", "authorization"),
                "while the CSMS is unreachable every idTag is accepted; set ocpp.authorization "
                "(offline_policy and a local_list) to choose",
                "warning",
            )
        ]
    if auth is None:
        # Kept as the default so every site written before the section existed still runs.
        return [
            Finding(
                ("ocpp", "authorization"),
                "free vending: every idTag is accepted; set ocpp.authorization "
                "(a local_list, or accept_all: true to keep free vending)",
                "warning",
            )
        ]
    findings: list[Finding] = []
    if auth.accept_all and auth.local_list:
        findings.append(
            Finding(
                ("ocpp", "authorization", "local_list"),
                "accept_all is true: local_list is not consulted (only a Local Controller's offline answers use it)",
                "warning",
            )
        )
    if not auth.accept_all and auth.unknown == "Invalid" and not any(e.status == "Accepted" for e in auth.local_list):
        findings.append(
            Finding(
                ("ocpp", "authorization"),
                "no idTag is accepted: local_list accepts none and unknown is Invalid",
                "warning",
            )
        )
    if any(charger.ocpp_version == "1.6" for charger in config.chargers):
        for index, entry in enumerate(auth.local_list):
            if len(entry.id_tag) > ID_TAG_MAX_LENGTH_16:
                findings.append(
                    Finding(
                        ("ocpp", "authorization", "local_list", index, "id_tag"),
                        f"idTag longer than {ID_TAG_MAX_LENGTH_16} characters: a 1.6 charger cannot send it",
                        "warning",
                    )
                )
    return findings


def _local_controller_findings(config: SiteConfig, base_dir: Path) -> list[Finding]:
    """A Local Controller's link to the CSMS: in clear, or with nothing that identifies evdlm."""
    upstream = config.ocpp.upstream
    if config.ocpp.mode != "local_controller" or upstream is None:
        return []
    findings = _secret_findings(upstream.password, ("ocpp", "upstream", "password"), base_dir)
    parts = urlsplit(upstream.url)
    if parts.scheme == "ws" and not is_loopback(parts.hostname or ""):
        findings.append(
            Finding(
                ("ocpp", "upstream", "url"),
                "ws:// to a CSMS off this machine: idTags, transactions and the password travel in clear "
                "(use wss://, OCPP security profile 2 or 3)",
                "warning",
            )
        )
    if upstream.password is None and upstream.cert_file is None:
        findings.append(
            Finding(
                ("ocpp", "upstream"),
                "no password and no client certificate: the CSMS cannot authenticate the chargers evdlm "
                "speaks for (OCPP security profile 0)",
                "warning",
            )
        )
    return findings


def _availability_findings(config: SiteConfig) -> list[Finding]:
    """Exclusion windows name configured chargers (a typo would silently exclude nothing)."""
    if config.availability is None:
        return []
    known = {charger.id for charger in config.chargers}
    findings = []
    for index, window in enumerate(config.availability.maintenance_windows):
        for position, charger_id in enumerate(window.chargers or ()):
            if charger_id not in known:
                loc: LocPath = ("availability", "maintenance_windows", index, "chargers", position)
                findings.append(Finding(loc, f"no charger {charger_id!r} in this site"))
    return findings


def check_semantics(config: SiteConfig, base_dir: Path) -> list[Finding]:
    """Every cross-reference error and warning of ``config``; empty when all is well."""
    findings: list[Finding] = []
    circuit_entries = list(_circuit_locs(config.circuits))
    findings += _duplicates(((c.id, loc) for c, loc, _ in circuit_entries), "circuit id")
    findings += _duplicates(((c.id, ("chargers", i)) for i, c in enumerate(config.chargers)), "charger id")
    findings += _duplicates(((d.name, ("devices", i)) for i, d in enumerate(config.devices)), "device name")
    findings += _duplicates(
        ((link.name, ("modbus_links", i)) for i, link in enumerate(config.modbus_links)), "modbus link name"
    )
    if config.demand_response is not None:
        findings += _duplicates(
            ((p.id, ("demand_response", "programs", i)) for i, p in enumerate(config.demand_response.programs)),
            "DR program id",
        )
    findings += _session_profile_findings(config)
    findings += _availability_findings(config)
    findings += _authorization_findings(config)
    findings += _local_controller_findings(config, base_dir)
    if config.http_api is not None:
        findings += _secret_findings(config.http_api.token, ("http_api", "token"), base_dir)
    circuits = {circuit.id: circuit for circuit, _, _ in circuit_entries}

    for circuit, loc, parent in circuit_entries:
        findings += _device_ref(config, circuit.meter, DeviceRole.CIRCUIT_METER, (*loc, "meter"))
        if parent is not None and circuit.phase_current_limit_a > parent.phase_current_limit_a:
            findings.append(
                Finding(
                    (*loc, "phase_current_limit_a"),
                    f"{circuit.phase_current_limit_a:g} A is above its parent {parent.id!r} ({parent.phase_current_limit_a:g} A)",
                    "warning",
                )
            )
        if parent is None and circuit.phase_current_limit_a > config.grid.phase_current_limit_a:
            findings.append(
                Finding(
                    (*loc, "phase_current_limit_a"),
                    f"{circuit.phase_current_limit_a:g} A is above the grid connection ({config.grid.phase_current_limit_a:g} A)",
                    "warning",
                )
            )

    findings += _device_ref(config, config.grid.meter, DeviceRole.GRID_METER, ("grid", "meter"))
    checks = config.control.meter_checks
    if not checks.enabled:
        findings.append(
            Finding(
                ("control", "meter_checks", "enabled"),
                "meter cross-checks are off: a frozen, mis-scaled or miswired meter is believed "
                "and can let the chargers overload a fuse",
                "warning",
            )
        )
    if config.grid.meter is None:
        findings.append(
            Finding(("grid",), "no grid meter: evdlm cannot measure non-EV load and runs open loop", "warning")
        )
    if config.control.fallback_import_limit_kw > config.grid.import_limit_kw:
        findings.append(
            Finding(
                ("control", "fallback_import_limit_kw"),
                f"{config.control.fallback_import_limit_kw:g} kW is above the grid import limit ({config.grid.import_limit_kw:g} kW)",
            )
        )

    findings += _charger_findings(config, circuits, base_dir)

    link_names = {link.name for link in config.modbus_links}
    profiles = builtin_profile_names()
    referenced = {c.meter for c, _, _ in circuit_entries} | {config.grid.meter}
    for index, device in enumerate(config.devices):
        device_loc: LocPath = ("devices", index)
        if device.modbus is not None:
            if device.modbus.link not in link_names:
                findings.append(
                    Finding(
                        (*device_loc, "modbus", "link"),
                        f"modbus link {device.modbus.link!r} is not defined under modbus_links",
                    )
                )
            profile = device.modbus.profile
            if profile not in profiles and not (base_dir / profile).is_file():
                findings.append(
                    Finding(
                        (*device_loc, "modbus", "profile"),
                        f"unknown profile {profile!r}: not one of {sorted(profiles)} and no such file",
                    )
                )
        if device.role in (DeviceRole.GRID_METER, DeviceRole.CIRCUIT_METER) and device.name not in referenced:
            findings.append(
                Finding(
                    (*device_loc, "role"),
                    f"{device.role.value} {device.name!r} is not referenced by the grid or any circuit",
                    "warning",
                )
            )
        if device.role is DeviceRole.BATTERY and (config.battery is None or config.battery.device != device.name):
            findings.append(
                Finding(
                    (*device_loc, "role"),
                    f"battery {device.name!r} has no battery: section and is only read",
                    "warning",
                )
            )

    if config.battery is not None:
        findings += _device_ref(config, config.battery.device, DeviceRole.BATTERY, ("battery", "device"))
        if config.battery.control is not BatteryControlMode.NONE:
            names = {device.name: device for device in config.devices}
            battery_device = names.get(config.battery.device)
            if (
                battery_device is not None
                and (battery_device.modbus is None or battery_device.modbus.profile != SUNSPEC_PROFILE)
                and battery_device.sim is None
            ):
                findings.append(
                    Finding(
                        ("battery", "control"), f"{config.battery.control.value} control needs a SunSpec Modbus device"
                    )
                )

    mqtt_devices = [index for index, device in enumerate(config.devices) if device.mqtt is not None]
    if config.mqtt is None:
        if config.demand_response is not None and config.demand_response.enabled:
            findings.append(
                Finding(("demand_response",), "demand response is configured but there is no mqtt: broker section")
            )
        if mqtt_devices:
            findings.append(
                Finding(("devices", mqtt_devices[0], "mqtt"), "an MQTT device needs the mqtt: broker section")
            )
        feed = config.tariffs.price_feed if config.tariffs is not None else None
        if feed is not None and feed.enabled:
            findings.append(Finding(("tariffs", "price_feed"), "a price feed needs the mqtt: broker section"))
    if config.mqtt is not None:
        findings += _secret_findings(config.mqtt.password, ("mqtt", "password"), base_dir)

    findings += _tariff_findings(config)
    findings += security_findings(config)
    return findings
