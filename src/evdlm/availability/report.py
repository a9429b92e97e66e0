"""Availability reports: per-port rows for a month, CSV, and a ledger rebuilt from a recording.

A recording carries what the live ledger reads each cycle (the EVSE states with ``online`` and
``fault``, the DR limits, the readings, the config in each segment's header), and replaying its
cycles gives the same decisions (:mod:`evdlm.replay.loop`), so the same classifier over them
gives the same classes. Recordings made before EVSE states carried ``fault`` show no faults.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evdlm.config import parse_site_config
from evdlm.config.models import AvailabilitySettings, SiteConfig
from evdlm.core.availability import (
    CLASSES,
    DEFAULT_MAX_HOLD_S,
    Availability,
    AvailabilityLedger,
    ExclusionWindow,
    classify,
    grid_outage,
    port_samples,
)
from evdlm.core.decide import Decision
from evdlm.core.topology import GRID_NODE, Topology, build_topology
from evdlm.core.types import EvseKey, Reading
from evdlm.recording import CycleInputsRecord

CSV_COLUMNS = (
    "charger",
    "evse",
    *(f"{kind.value}_s" for kind in CLASSES),
    "uptime_month_pct",
    "uptime_t12m_pct",
    "outages",
)


def exclusion_windows(settings: AvailabilitySettings | None) -> tuple[ExclusionWindow, ...]:
    """The config's windows as the pure core's."""
    if settings is None:
        return ()
    return tuple(
        ExclusionWindow(
            window.start.timestamp(),
            window.end.timestamp(),
            window.reason.value,
            frozenset(window.chargers) if window.chargers is not None else None,
        )
        for window in settings.maintenance_windows
    )


def max_hold_s(config: SiteConfig) -> float:
    """How long one cycle's class holds before a gap counts as ``controller down``."""
    return max(DEFAULT_MAX_HOLD_S, 10.0 * config.control.cycle_period_s)


def classes_of_cycle(
    topology: Topology,
    decision: Decision,
    now_s: float,
    dr_import_limit_w: float | None,
    readings: Mapping[str, Reading],
    windows: Iterable[ExclusionWindow],
) -> dict[EvseKey, tuple[Availability, str]]:
    """Every configured EVSE's (class, cause) in one decided cycle (live and replay alike)."""
    meter = topology.nodes[GRID_NODE].meter
    grid_out = meter is not None and grid_outage(readings.get(meter), topology.nominal_voltage_v)
    samples = port_samples(
        topology, decision, now_s, dr_import_limit_w=dr_import_limit_w, windows=windows, grid_out=grid_out
    )
    return {key: classify(sample) for key, sample in samples.items()}


def port_rows(
    ledger: AvailabilityLedger, month: str, now_s: float | None = None, excluded_classes: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """One row per port of the ledger: seconds per class in ``month``, month and t12m uptime %, outages."""
    excluded = tuple(excluded_classes)
    rows = []
    for key in sorted(ledger.ports):
        seconds = ledger.seconds(key, month, now_s)
        month_pct, t12m_pct = ledger.uptime(key, month, now_s, excluded)
        rows.append(
            {
                "charger": key[0],
                "evse": key[1],
                **{f"{name}_s": value for name, value in seconds.items()},
                "uptime_month_pct": month_pct,
                "uptime_t12m_pct": t12m_pct,
                "outages": ledger.outage_count(key, month),
            }
        )
    return rows


def _cell(column: str, value: Any) -> str:
    """Seconds as whole numbers when whole (3 decimals otherwise), percentages with 3 decimals."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if column.endswith("_pct") or not value.is_integer() else f"{value:.0f}"
    return str(value)


def csv_text(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(column, row[column]) for column in CSV_COLUMNS])
    return out.getvalue()


def table_text(rows: Iterable[dict[str, Any]], month: str) -> str:
    """A plain text table for a terminal."""
    lines = [
        f"availability {month} (UTC): seconds per class, NEVI uptime %",
        f"{'port':<24}"
        + "".join(f"{kind.value:>13}" for kind in CLASSES)
        + f"{'month %':>10}{'t12m %':>10}{'outages':>9}",
    ]
    for row in rows:
        month_pct, t12m_pct = row["uptime_month_pct"], row["uptime_t12m_pct"]
        lines.append(
            f"{row['charger'] + '/' + str(row['evse']):<24}"
            + "".join(f"{row[kind.value + '_s']:>13.0f}" for kind in CLASSES)
            + f"{'—' if month_pct is None else f'{month_pct:.3f}':>10}"
            + f"{'—' if t12m_pct is None else f'{t12m_pct:.3f}':>10}"
            + f"{row['outages']:>9}"
        )
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=8)
def _parsed(config_text: str) -> tuple[SiteConfig, Topology, tuple[ExclusionWindow, ...]]:
    config = parse_site_config(config_text, "<recorded config>").config
    return config, build_topology(config), exclusion_windows(config.availability)


def ledger_from_recording(
    path: Path, *, config_text: str | None = None
) -> tuple[AvailabilityLedger, SiteConfig | None]:
    """The ledger the gateway would have kept over the recording at ``path`` (a file or folder).

    Replays every cycle (each segment with its own config, or ``config_text`` for every one:
    its floors and windows, and its control settings for the decisions) and classifies it.
    Returns the ledger (closed at the last cycle) and the config of the last segment.
    """
    from evdlm.replay.loop import replay_recording  # the replay machinery only where a recording is read

    ledger: AvailabilityLedger | None = None
    current: tuple[SiteConfig, Topology, tuple[ExclusionWindow, ...]] | None = None

    def on_decision(record: CycleInputsRecord, decision: Decision) -> None:
        nonlocal ledger, current
        if record.header is not None or current is None:
            text = config_text if config_text is not None else str((record.header or {}).get("config_yaml", ""))
            current = _parsed(text)
        config, topology, windows = current
        if ledger is None:
            ledger = AvailabilityLedger(max_hold_s=max_hold_s(config))
        limit = record.dr.get("import_limit_w")
        classes = classes_of_cycle(
            topology,
            decision,
            record.now_s,
            float(limit) if limit is not None else None,
            record.readings,
            windows,
        )
        ledger.observe(record.now_s, classes)

    replay_recording(path, config_text=config_text, on_decision=on_decision)
    # The recording ends with its last cycle: that cycle's class is not credited beyond it.
    if ledger is None:
        return AvailabilityLedger(), None
    return ledger, current[0] if current is not None else None
