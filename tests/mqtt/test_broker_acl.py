"""The shipped broker security (deploy/mosquitto/) holds against the attacks of issue 13.

A real mosquitto runs the shipped evdlm.conf (its loopback listener, on an ephemeral port) with
the shipped ACL rendered for site ``site1`` and a password file made by ``mosquitto_passwd``.
paho clients then show: the utility's bridge reaches evdlm and reads its answers; anonymous
clients and wrong passwords are refused; a third user, authenticated, can neither publish DR
events, bridge status or evdlm's state, nor read the DR channel, nor take over evdlm's client id.
Last, the real gateway runs against that broker (password from a secret file) and its DR state
stays what the bridge sent while the spoofer tries all of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from evdlm.config import parse_site_config
from evdlm.core.clock import SystemClock
from evdlm.dr.engine import ChannelMode
from evdlm.dr.messages import from_epoch, rfc3339
from evdlm.gateway import Gateway
from evdlm.sim.broker import free_port

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "mosquitto"
SITE = "site1"
EVDLM, BRIDGE, MONITOR, INTRUDER = f"evdlm-{SITE}", f"bridge-{SITE}", f"monitor-{SITE}", "intruder"
PASSWORDS = {
    EVDLM: "evdlm-test-pw",
    BRIDGE: "bridge-test-pw",
    MONITOR: "monitor-test-pw",
    INTRUDER: "intruder-test-pw",
}
# The shipped ACL's optional monitoring block, switched on: the test reads evdlm's state with it.
MONITOR_BLOCK = "#user monitor-SITE_ID\n#topic read dlm/SITE_ID/#\n"


def _binary(name: str) -> str | None:
    # mosquitto lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name) or next(
        (str(path) for path in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if path.is_file()), None
    )


MOSQUITTO, MOSQUITTO_PASSWD = _binary("mosquitto"), _binary("mosquitto_passwd")
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None,
    reason="needs the mosquitto broker and mosquitto_passwd (Debian package mosquitto)",
)


# ------------------------------------------------------------------------------- the broker


@dataclass(frozen=True)
class Broker:
    port: int
    log: Path


def _render_conf(port: int, folder: Path) -> str:
    """The shipped evdlm.conf up to its TLS listener, with this test's files and port."""
    shipped = (SHIPPED / "evdlm.conf").read_text(encoding="utf-8")
    head, tls_listener = shipped.split("\nlistener 8883", 1)
    # The TLS listener keeps the same client-id rule: what this test shows holds there too.
    assert tls_listener.splitlines()[1] == "use_username_as_clientid true"
    conf = head.replace("/etc/mosquitto/evdlm/passwd", str(folder / "passwd"))
    conf = conf.replace("/etc/mosquitto/evdlm/acl", str(folder / "acl"))
    assert "\nlistener 1883 127.0.0.1\n" in conf
    conf = conf.replace("\nlistener 1883 127.0.0.1\n", f"\nlistener {port} 127.0.0.1\n")
    return conf + "\npersistence false\nlog_dest stderr\nlog_type all\n"


@pytest.fixture
def broker() -> Iterator[Broker]:
    assert MOSQUITTO is not None and MOSQUITTO_PASSWD is not None
    # Not pytest's tmp_path: started as root, mosquitto drops to its own user before it reads the
    # password and ACL files, and pytest's folders are private to root.
    folder = Path(tempfile.mkdtemp(prefix="evdlm-acl-"))
    passwd = folder / "passwd"
    for index, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run([MOSQUITTO_PASSWD, *create, "-b", str(passwd), user, password], check=True, timeout=30)
    assert all(":$7$" in line for line in passwd.read_text().splitlines())  # hashed, never plain
    acl = (SHIPPED / "acl").read_text(encoding="utf-8")
    assert MONITOR_BLOCK in acl
    acl = acl.replace(MONITOR_BLOCK, "".join(line.removeprefix("#") for line in MONITOR_BLOCK.splitlines(True)))
    (folder / "acl").write_text(acl.replace("SITE_ID", SITE))
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(_render_conf(port, folder))
    _hand_to_broker_user(folder, passwd, folder / "acl", conf)
    log = folder / "mosquitto.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 10.0
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mosquitto did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield Broker(port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _hand_to_broker_user(folder: Path, *files: Path) -> None:
    """Owned by the user mosquitto runs as, readable by nobody else (as deploy/OPERATIONS.md asks)."""
    if os.geteuid() == 0:
        # mosquitto started as root becomes "mosquitto", or "nobody" where that user does not exist.
        try:
            owner = pwd.getpwnam("mosquitto")
        except KeyError:
            owner = pwd.getpwnam("nobody")
        for path in (folder, *files):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    folder.chmod(0o700)
    for path in files:
        path.chmod(0o600)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------------------- paho peers


@dataclass
class Peer:
    """One paho client on its own network thread, recording what it receives and how it ends."""

    port: int
    client_id: str
    user: str | None
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5
    will: tuple[str, str] | None = None
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)
    password: str | None = None

    def __post_init__(self) -> None:
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.protocol,
            reconnect_on_failure=False,
        )
        if self.user is not None:
            self.client.username_pw_set(self.user, self.password or PASSWORDS.get(self.user))
        if self.will is not None:
            self.client.will_set(self.will[0], self.will[1], qos=1, retain=True)
        self._lock = threading.Lock()
        self._connack = threading.Event()
        self.reason: Any = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.reason = reason
        self._connack.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.disconnects.append(str(reason))
        self._connack.set()  # a refused connection ends here too

    def connect(self) -> Any:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        assert self._connack.wait(5.0), f"{self.client_id}: no CONNACK"
        return self.reason

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5.0)  # the broker has handled it (delivered or denied) when it acknowledges

    def subscribe(self, topic_filter: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic_filter, qos=1)
        assert done.wait(5.0), f"{self.client_id}: no SUBACK for {topic_filter}"

    def received(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for got, payload, _ in self.messages if got == topic]

    def close(self) -> None:
        if self.client.is_connected():
            self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers(broker: Broker) -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(client_id: str, user: str | None, **options: Any) -> Peer:
        peer = Peer(broker.port, client_id, user, **options)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _event(event_id: str, limit_kw: float, *, age_s: float = 5.0, operation: str = "CREATE") -> str:
    now = time.time()
    return json.dumps(
        {
            "objectType": "EVENT",
            "operation": operation,
            "object": {
                "id": event_id,
                "programID": "dso",
                "modificationDateTime": rfc3339(from_epoch(now - age_s)),
                "targets": [SITE],
                "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
                "intervalPeriod": {"start": rfc3339(from_epoch(now - 60)), "duration": "PT2H"},
                "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [limit_kw]}]}],
            },
            "x-dlm": {"schemaVersion": 1},
        }
    )


# ------------------------------------------------------------------------------- paho-level proof


def test_the_bridge_reaches_evdlm_and_reads_its_answers(peers: Callable[..., Peer]) -> None:
    evdlm = peers(EVDLM, EVDLM, will=(f"dlm/{SITE}/status", '{"state": "offline"}'))
    assert not evdlm.connect().is_failure  # its last will is on a topic it may write
    evdlm.subscribe(f"dr/{SITE}/#")
    bridge = peers("utility-bridge", BRIDGE, will=(f"dr/{SITE}/bridge/status", '{"state": "offline"}'))
    assert not bridge.connect().is_failure
    bridge.subscribe(f"dr/{SITE}/responses/#")

    bridge.publish(f"dr/{SITE}/bridge/status", '{"state": "online", "heartbeatIntervalS": 60}', retain=True)
    bridge.publish(f"dr/{SITE}/events/evt-1", _event("evt-1", 40.0), retain=True)
    _wait(lambda: bool(evdlm.received(f"dr/{SITE}/events/evt-1")), "the bridge's event at evdlm")
    assert evdlm.received(f"dr/{SITE}/bridge/status")

    evdlm.publish(f"dr/{SITE}/responses/evt-1", '{"eventID": "evt-1", "status": "ACTIVE"}', retain=True)
    _wait(lambda: bool(bridge.received(f"dr/{SITE}/responses/evt-1")), "evdlm's answer at the bridge")


@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311], ids=["v5", "v3.1.1"])
def test_anonymous_clients_and_wrong_passwords_are_refused(
    peers: Callable[..., Peer], protocol: MQTTProtocolVersion
) -> None:
    anonymous = peers("anon", None, protocol=protocol)
    assert anonymous.connect().is_failure
    assert not anonymous.client.is_connected()
    guesser = peers("guess", BRIDGE, protocol=protocol, password="bridge")
    assert guesser.connect().is_failure


@pytest.mark.parametrize(
    ("user", "topic", "allowed"),
    [
        (BRIDGE, f"dr/{SITE}/events/evt-9", True),
        (BRIDGE, f"dr/{SITE}/bridge/heartbeat", True),
        (BRIDGE, f"dr/{SITE}/responses/evt-9", False),  # evdlm's answers are evdlm's
        (BRIDGE, f"dlm/{SITE}/status", False),
        (BRIDGE, "dr/other-site/events/evt-9", False),
        (EVDLM, f"dr/{SITE}/events/evt-9", False),  # evdlm's own password cannot make DR events
        (EVDLM, f"dr/{SITE}/bridge/status", False),
        (EVDLM, f"dr/{SITE}/responses/evt-9", True),
        (EVDLM, f"dlm/{SITE}/state", True),
        (MONITOR, f"dlm/{SITE}/status", False),
        (MONITOR, f"dr/{SITE}/events/evt-9", False),
    ],
)
def test_each_user_writes_only_its_own_topics(peers: Callable[..., Peer], user: str, topic: str, allowed: bool) -> None:
    # One connection per user: with the user name as client id a second one would end the first.
    evdlm, bridge, monitor = peers(EVDLM, EVDLM), peers("bridge", BRIDGE), peers("monitor", MONITOR)
    for peer, topic_filter in ((evdlm, f"dr/{SITE}/#"), (bridge, f"dr/{SITE}/responses/#"), (monitor, f"dlm/{SITE}/#")):
        assert not peer.connect().is_failure
        peer.subscribe(topic_filter)
    {EVDLM: evdlm, BRIDGE: bridge, MONITOR: monitor}[user].publish(topic, "probe")
    # Markers published after the probe was handled: a watcher that has its marker would have the
    # probe already (one broker, one queue per client).
    bridge.publish(f"dr/{SITE}/bridge/heartbeat", "marker")
    evdlm.publish(f"dr/{SITE}/responses/marker", "marker")
    evdlm.publish(f"dlm/{SITE}/marker", "marker")
    _wait(lambda: bool(evdlm.received(f"dr/{SITE}/bridge/heartbeat")), "evdlm's marker")
    _wait(lambda: bool(bridge.received(f"dr/{SITE}/responses/marker")), "the bridge's marker")
    _wait(lambda: bool(monitor.received(f"dlm/{SITE}/marker")), "the monitor's marker")
    seen = [peer.client_id for peer in (evdlm, bridge, monitor) if b"probe" in peer.received(topic)]
    assert bool(seen) is allowed, seen


def test_a_third_user_can_neither_forge_nor_listen_nor_take_over(peers: Callable[..., Peer], broker: Broker) -> None:
    evdlm = peers(EVDLM, EVDLM, will=(f"dlm/{SITE}/status", '{"state": "offline"}'))
    evdlm.connect()
    evdlm.subscribe(f"dr/{SITE}/#")
    evdlm.publish(f"dlm/{SITE}/status", '{"state": "online"}', retain=True)
    bridge = peers("utility-bridge", BRIDGE)
    bridge.connect()
    event = _event("evt-1", 40.0)
    bridge.publish(f"dr/{SITE}/events/evt-1", event, retain=True)
    _wait(lambda: bool(evdlm.received(f"dr/{SITE}/events/evt-1")), "the bridge's event")

    def more_than(markers: int) -> Callable[[], bool]:
        return lambda: len(evdlm.received(f"dr/{SITE}/bridge/heartbeat")) > markers

    # The intruder reuses evdlm's client id (MQTT 5), then tries again over 3.1.1, where the broker
    # cannot say "denied" and drops the messages silently.
    for protocol in (MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311):
        intruder = peers(EVDLM, INTRUDER, protocol=protocol)
        assert not intruder.connect().is_failure
        intruder.subscribe(f"dr/{SITE}/#")
        intruder.publish(f"dr/{SITE}/events/x", _event("x", 1.0), retain=True)
        intruder.publish(f"dr/{SITE}/events/evt-1", b"", retain=True)  # an empty retained message cancels
        intruder.publish(f"dr/{SITE}/events/evt-1", _event("evt-1", 1.0, age_s=0.0, operation="UPDATE"))
        intruder.publish(f"dr/{SITE}/bridge/status", '{"state": "offline"}', retain=True)
        intruder.publish(f"dlm/{SITE}/status", '{"state": "offline"}', retain=True)
        markers = len(evdlm.received(f"dr/{SITE}/bridge/heartbeat"))
        bridge.publish(f"dr/{SITE}/bridge/heartbeat", "marker")
        _wait(more_than(markers), "the bridge's marker")
        assert intruder.messages == []  # nor can it listen to the DR channel
        intruder.close()

    assert evdlm.client.is_connected() and evdlm.disconnects == []  # its session was never taken over
    assert evdlm.received(f"dr/{SITE}/events/x") == []
    assert evdlm.received(f"dr/{SITE}/events/evt-1") == [event.encode()]  # the bridge's, once
    assert evdlm.received(f"dr/{SITE}/bridge/status") == []

    # The retained state, as a client connecting now gets it, is what evdlm and the bridge left.
    evdlm.messages.clear()
    evdlm.subscribe(f"dr/{SITE}/events/+")  # a new filter: the broker sends its retained messages
    _wait(lambda: bool(evdlm.received(f"dr/{SITE}/events/evt-1")), "the retained event")
    assert [
        json.loads(p)["object"]["intervals"][0]["payloads"][0]["values"]
        for p in evdlm.received(f"dr/{SITE}/events/evt-1")
    ] == [[40.0]]
    assert evdlm.received(f"dr/{SITE}/events/x") == []
    monitor = peers("monitor", MONITOR)
    monitor.connect()
    monitor.subscribe(f"dlm/{SITE}/status")
    _wait(lambda: bool(monitor.received(f"dlm/{SITE}/status")), "the retained status")
    assert monitor.received(f"dlm/{SITE}/status") == [b'{"state": "online"}']
    assert f"Denied PUBLISH from {INTRUDER}" in broker.log.read_text()


# ------------------------------------------------------------------------------- the gateway itself

GATEWAY_SITE = f"""\
site: {{id: {SITE}}}
grid: {{import_limit_kw: 100, phase_current_limit_a: 160}}
circuits: [{{id: main, phase_current_limit_a: 160}}]
mqtt: {{host: 127.0.0.1, port: PORT, username: {EVDLM}, password: {{file: mqtt-password}}}}
demand_response: {{programs: [{{id: dso, failsafe_import_limit_kw: 30}}], publishers: [{BRIDGE}]}}
ocpp: {{port: 0}}
control: {{fallback_import_limit_kw: 50}}
recording: {{enabled: false}}
"""


@pytest.mark.timeout(90)
async def test_the_gateway_keeps_the_bridges_dr_state(
    broker: Broker, peers: Callable[..., Peer], tmp_path: Path
) -> None:
    text = GATEWAY_SITE.replace("PORT", str(broker.port))
    (tmp_path / "mqtt-password").write_text(PASSWORDS[EVDLM] + "\n")
    os.chmod(tmp_path / "mqtt-password", 0o600)
    loaded = parse_site_config(text, "site.yaml", base_dir=tmp_path)
    assert [w.field for w in loaded.warnings] == ["grid"]  # no grid meter; nothing about security
    bridge = peers("utility-bridge", BRIDGE, will=(f"dr/{SITE}/bridge/status", '{"state": "offline"}'))
    bridge.connect()
    bridge.subscribe(f"dr/{SITE}/responses/#")
    bridge.publish(f"dr/{SITE}/bridge/status", '{"state": "online", "heartbeatIntervalS": 60}', retain=True)

    async with Gateway(loaded.config, SystemClock(), base_dir=tmp_path, state_dir=tmp_path, config_text=text) as gw:
        assert gw.mqtt is not None and gw.dr is not None
        engine = gw.dr.engine
        bridge.publish(f"dr/{SITE}/events/evt-1", _event("evt-1", 40.0), retain=True)
        await _until(lambda: "evt-1" in engine.events and bridge.received(f"dr/{SITE}/responses/evt-1"))
        assert engine.bridge_online is True

        intruder = peers(f"evdlm-{SITE}", INTRUDER)  # evdlm's default client id
        intruder.connect()
        intruder.publish(f"dr/{SITE}/events/x", _event("x", 1.0), retain=True)
        intruder.publish(f"dr/{SITE}/events/evt-1", b"", retain=True)
        intruder.publish(f"dr/{SITE}/events/evt-1", _event("evt-1", 1.0, age_s=0.0, operation="UPDATE"))
        intruder.publish(f"dr/{SITE}/bridge/status", '{"state": "offline"}', retain=True)
        intruder.publish(f"dlm/{SITE}/status", '{"state": "offline"}', retain=True)
        # A second event from the bridge, after all that: DR events are handled in the order they
        # arrive, so once it is in, anything the spoofer got through would be in too.
        bridge.publish(f"dr/{SITE}/events/evt-2", _event("evt-2", 60.0), retain=True)
        await _until(lambda: "evt-2" in engine.events)

        now_s = time.time()
        assert set(engine.events) == {"evt-1", "evt-2"}
        effective = engine.effective(now_s)
        assert effective.import_limit_w == pytest.approx(40_000.0)  # the bridge's limit, not the forged 1 kW
        assert engine.bridge_online is True and not engine.channel_stale(now_s)
        assert effective.mode is ChannelMode.NORMAL
        assert gw.mqtt.connected and gw.mqtt.connects == 1  # never kicked off

        status = peers("status-reader", MONITOR)
        status.connect()
        status.subscribe(f"dlm/{SITE}/status")
        await _until(lambda: bool(status.received(f"dlm/{SITE}/status")))
        assert json.loads(status.received(f"dlm/{SITE}/status")[-1]) == {"state": "online"}


async def _until(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)
