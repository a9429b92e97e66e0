"""Plausibility checks: a decoded measurement becomes an OK reading only if it makes sense.

Pure functions. A value that fails a check is never passed on as OK, and the core counts the
circuit as fully loaded (safety ladder, step 3):

* INVALID: garbage (NaN, absurd magnitudes, phases that do not add up, counters backwards);
* SUSPECT: every value plausible on its own, but together they break physics: a phase power
  above what its voltage and current can carry, or a power factor no site has (a scale factor
  off by 10^k). The checks that need to know what flows below a meter live in
  :mod:`evdlm.core.meter_trust`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from evdlm.core.types import QUANTITY_FIELDS, PhaseValues, Quality, Reading
from evdlm.devices.codec import Measurement


@dataclass(frozen=True)
class Plausibility:
    """Bounds beyond which a value is garbage, not a measurement.

    The defaults are far outside any site evdlm manages (the config caps grid connections at
    100 MW) yet catch the classic garbage: float32 ±3.4e38, an int32 read with the wrong word
    order, a counter read as a power.
    """

    max_power_w: float = 200e6
    max_current_a: float = 20_000.0
    max_voltage_v: float = 1_000.0
    min_frequency_hz: float = 40.0
    max_frequency_hz: float = 70.0
    max_energy_wh: float = 1e15
    # Per-phase powers must add up to the total within max(floor, fraction × Σ|phase|): meters
    # compute the total from the same samples, so a larger gap means a torn or garbled read.
    phase_sum_floor_w: float = 500.0
    phase_sum_fraction: float = 0.1
    # Physics (SUSPECT): |P| ≤ V·I·(1 + tolerance) + floor per phase. A meter computes P, V and I
    # from the same samples, so only a wrong scale or register breaks it; the tolerance covers a
    # nominal voltage standing in for an unread one and the meters' class accuracy.
    nominal_voltage_v: float = 230.0
    apparent_tolerance: float = 0.2
    apparent_floor_va: float = 200.0
    # |P| ≥ min_power_factor · V·I once V·I is large enough to tell: a power 10× or more below
    # V·I is a scale factor, not a load. None switches the check off (a grid meter with PV or a
    # battery behind it nets production against consumption, leaving mostly reactive current).
    min_power_factor: float | None = 0.1
    min_power_factor_above_va: float = 1000.0


DEFAULT_PLAUSIBILITY = Plausibility()


def _bad(value: float | None, low: float, high: float) -> bool:
    return value is not None and (math.isnan(value) or not low <= value <= high)


def _bad_phases(values: PhaseValues | None, low: float, high: float) -> bool:
    return values is not None and any(_bad(value, low, high) for value in values)


def implausibility(
    measurement: Measurement,
    previous: Measurement | None,
    limits: Plausibility = DEFAULT_PLAUSIBILITY,
    *,
    require_power: bool = True,
) -> str | None:
    """Why ``measurement`` cannot be trusted, or None when it is plausible.

    ``previous`` is the last plausible measurement of the same device, for the counter check
    (apply :func:`unwrap_counters` first for devices whose accumulators wrap).
    """
    m = measurement
    if require_power and m.power_w is None:
        return "no power value (not implemented or unscalable)"
    if _bad(m.power_w, -limits.max_power_w, limits.max_power_w):
        return f"power {m.power_w} W implausible"
    if _bad_phases(m.phase_power_w, -limits.max_power_w, limits.max_power_w):
        return f"phase power {m.phase_power_w} W implausible"
    if _bad_phases(m.phase_current_a, -limits.max_current_a, limits.max_current_a):
        return f"phase current {m.phase_current_a} A implausible"
    if _bad_phases(m.phase_voltage_v, 0.0, limits.max_voltage_v):
        return f"phase voltage {m.phase_voltage_v} V implausible"
    if _bad(m.frequency_hz, limits.min_frequency_hz, limits.max_frequency_hz):
        return f"frequency {m.frequency_hz} Hz implausible"
    if _bad(m.soc_pct, 0.0, 100.0):
        return f"state of charge {m.soc_pct} % implausible"
    for name in ("import_energy_wh", "export_energy_wh"):
        value = getattr(m, name)
        if _bad(value, 0.0, limits.max_energy_wh):
            return f"{name} {value} implausible"
    if m.power_w is not None and m.phase_power_w is not None and all(p is not None for p in m.phase_power_w):
        phases = [p for p in m.phase_power_w if p is not None]
        tolerance_w = max(limits.phase_sum_floor_w, limits.phase_sum_fraction * sum(abs(p) for p in phases))
        if abs(sum(phases) - m.power_w) > tolerance_w:
            return f"phase powers sum to {sum(phases):.0f} W but total is {m.power_w:.0f} W"
    if previous is not None:
        for name in ("import_energy_wh", "export_energy_wh"):
            now, before = getattr(m, name), getattr(previous, name)
            if now is None or before is None or now >= before:
                continue
            return f"{name} went backwards ({before:.0f} → {now:.0f} Wh)"
    return None


def _phase_apparent_va(m: Measurement, nominal_voltage_v: float) -> list[float | None]:
    """V·I per phase (nominal V where the meter gives none), None where I is not read."""
    currents = m.phase_current_a or (None, None, None)
    voltages = m.phase_voltage_v or (None, None, None)
    return [
        None if current is None else abs(current) * (nominal_voltage_v if voltage is None else voltage)
        for current, voltage in zip(currents, voltages, strict=True)
    ]


def physics_doubt(measurement: Measurement, limits: Plausibility = DEFAULT_PLAUSIBILITY) -> str | None:
    """Why ``measurement``'s values, each plausible, cannot all be true together; None if they can.

    Run after :func:`implausibility` (the values are finite and within bounds).
    """
    m = measurement
    apparent = _phase_apparent_va(m, limits.nominal_voltage_v)
    pairs: list[tuple[str, float, float]] = []  # (what, |P| W, V·I VA)
    if m.phase_power_w is not None:
        for phase, (power, va) in enumerate(zip(m.phase_power_w, apparent, strict=True), start=1):
            if power is not None and va is not None:
                pairs.append((f"L{phase}", abs(power), va))
    if not pairs and m.power_w is not None and apparent and all(va is not None for va in apparent):
        pairs.append(("total", abs(m.power_w), sum(va for va in apparent if va is not None)))
    for what, power, va in pairs:
        phases = 3 if what == "total" else 1
        if power > va * (1.0 + limits.apparent_tolerance) + limits.apparent_floor_va * phases:
            return f"{what} power {power:.0f} W exceeds V·I {va:.0f} VA (scale factor or register wrong)"
        low_pf = limits.min_power_factor
        if low_pf is not None and va >= limits.min_power_factor_above_va * phases and power < low_pf * va:
            return (
                f"{what} power {power:.0f} W is {power / va:.3f} of V·I {va:.0f} VA, "
                f"below a power factor of {low_pf:g} (scale factor or register wrong)"
            )
    return None


def to_reading(
    device: str,
    taken_at_s: float,
    measurement: Measurement,
    previous: Measurement | None,
    limits: Plausibility = DEFAULT_PLAUSIBILITY,
    *,
    require_power: bool = True,
) -> Reading:
    """A timestamped reading: OK, or INVALID / SUSPECT with the reason (values kept for the record)."""
    reason = implausibility(measurement, previous, limits, require_power=require_power)
    quality = Quality.OK if reason is None else Quality.INVALID
    if reason is None:
        reason = physics_doubt(measurement, limits)
        quality = Quality.OK if reason is None else Quality.SUSPECT
    quantities = {name: getattr(measurement, name) for name in QUANTITY_FIELDS}
    return Reading(device, taken_at_s, quality, reason=reason, **quantities)


@dataclass(frozen=True)
class CounterState:
    """Raw counters last seen and the wrap offsets added so far (per device)."""

    raw_import_wh: float | None = None
    raw_export_wh: float | None = None
    import_offset_wh: float = 0.0
    export_offset_wh: float = 0.0


def unwrap_counters(measurement: Measurement, state: CounterState) -> tuple[Measurement, CounterState]:
    """Make wrapping accumulators monotonic (pure).

    A raw counter more than half the wrap modulus below its last value wrapped (SunSpec acc32
    reaches 2^32 × 10^SF and restarts at 0): the modulus joins the offset. A smaller drop is left
    for :func:`implausibility` to call "went backwards".
    """
    wrap = measurement.energy_wrap_wh
    imp_offset, exp_offset = state.import_offset_wh, state.export_offset_wh
    imp, exp = measurement.import_energy_wh, measurement.export_energy_wh
    if wrap is not None:
        if imp is not None and state.raw_import_wh is not None and state.raw_import_wh - imp > wrap / 2:
            imp_offset += wrap
        if exp is not None and state.raw_export_wh is not None and state.raw_export_wh - exp > wrap / 2:
            exp_offset += wrap
    new_state = CounterState(
        raw_import_wh=imp if imp is not None else state.raw_import_wh,
        raw_export_wh=exp if exp is not None else state.raw_export_wh,
        import_offset_wh=imp_offset,
        export_offset_wh=exp_offset,
    )
    unwrapped = replace(
        measurement,
        import_energy_wh=None if imp is None else imp + imp_offset,
        export_energy_wh=None if exp is None else exp + exp_offset,
    )
    return unwrapped, new_state
