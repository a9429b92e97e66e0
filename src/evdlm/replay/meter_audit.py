"""Run the meter cross-checks over a recording: how often would a healthy site's meters look SUSPECT?

The false-alarm check of :mod:`evdlm.core.meter_trust`: a recorded day of a site whose meters
were fine must come out with zero SUSPECT readings. Each recorded cycle is replayed for the
chargers' measured currents (as the gateway saw them), and the cycle's recorded readings are
assessed exactly as the controller assesses a live snapshot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evdlm.config import parse_site_config
from evdlm.config.models import DeviceRole, SiteConfig
from evdlm.core.decide import Decision
from evdlm.core.meter_trust import MeterTrust, assess, checks_for, flows_for, metered_nodes
from evdlm.core.site_settings import SiteSettings
from evdlm.core.topology import build_topology
from evdlm.core.types import Quality
from evdlm.recording import CycleInputsRecord
from evdlm.replay.loop import replay_recording


@dataclass
class MeterAudit:
    cycles: int = 0
    meter_readings: int = 0  # OK or SUSPECT readings of metered nodes assessed
    suspect_readings: int = 0
    suspect_by_device: Counter[str] = field(default_factory=Counter)
    first_reasons: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "meter_readings": self.meter_readings,
            "suspect_readings": self.suspect_readings,
            "suspect_by_device": dict(self.suspect_by_device),
            "first_reasons": self.first_reasons[:5],
        }


def audit_meters(path: Path) -> MeterAudit:
    """Assess every recorded cycle's meters with the recorded config's checks (one process)."""
    audit = MeterAudit()
    config_text = ""
    state = MeterTrust()
    chargers: Any = None
    parsed: dict[str, SiteConfig] = {}

    def on_decision(record: CycleInputsRecord, decision: Decision) -> None:
        nonlocal state, chargers, config_text
        if record.header is not None:
            config_text = str(record.header["config_yaml"])
        config = parsed.get(config_text)
        if config is None:
            config = parsed.setdefault(config_text, parse_site_config(config_text, "<recorded config>").config)
        topology = build_topology(config)
        battery = config.battery
        flows = flows_for(
            topology,
            chargers,
            record.readings,
            tuple(d.name for d in config.devices if d.role is DeviceRole.PV),
            battery.device if battery is not None else None,
            SiteSettings.from_config(config).battery_max_discharge_w,
        )
        meters = metered_nodes(topology)
        result = assess(
            state, record.readings, meters, flows, record.now_s, checks_for(config), topology.nominal_voltage_v
        )
        state = result.state
        chargers = (decision.built.fleet.drawn_a, decision.built.fleet.measured_a)
        audit.cycles += 1
        for device in meters.values():
            reading = result.readings.get(device)
            if reading is None or reading.quality not in (Quality.OK, Quality.SUSPECT):
                continue
            audit.meter_readings += 1
            if reading.quality is Quality.SUSPECT:
                audit.suspect_readings += 1
                audit.suspect_by_device[device] += 1
                if len(audit.first_reasons) < 5:
                    audit.first_reasons.append(f"{record.now_s:.0f} {device}: {reading.reason}")

    replay_recording(path, on_decision=on_decision)
    return audit
