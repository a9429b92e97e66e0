"""The site config resolved once into SI units (W, A, s) for the per-cycle code.

The YAML speaks kW where a person writes limits; the cycle computes in W. :meth:`SiteSettings.from_config`
is the one place the site-level limits are converted (grid import and export, the fallback
import limit, the power safety margin, the battery's power limits and its per-cycle step-down),
and every core module reads the W values from here: no ``* 1000`` of a site limit elsewhere in
the core (:func:`grid_limits_w` gives the topology its grid rows from the same conversion).
"""

from __future__ import annotations

from dataclasses import dataclass

from evdlm.config.models import Battery, Control, DeviceRole, GridConnection, SiteConfig

W_PER_KW = 1000.0


def grid_limits_w(grid: GridConnection) -> tuple[float, float]:
    """The grid connection's import and export limits, W."""
    return grid.import_limit_kw * W_PER_KW, grid.export_limit_kw * W_PER_KW


@dataclass(frozen=True)
class SiteSettings:
    """The slice of the config a cycle needs, resolved once per config (W, A, s)."""

    control: Control  # its times (s) and currents (A) are read as they are
    battery: Battery | None  # its state-of-charge thresholds (%); its powers are the *_w fields below
    import_limit_w: float  # the grid connection's contracted limits
    export_limit_w: float
    fallback_import_limit_w: float  # import limit while the grid meter is not usable
    safety_margin_w: float  # kept free on every power row
    failsafe_current_a: float  # what an offline charger falls back to (its fail-safe profile)
    # PV or a battery behind the grid meter: only then may the load it sees be negative.
    grid_generation: bool
    battery_max_discharge_w: float  # 0 without a battery
    battery_max_charge_w: float
    # Largest cut of battery discharge per cycle: its maximum over one settle time (inf: no battery).
    battery_step_down_w: float

    @staticmethod
    def from_config(config: SiteConfig) -> SiteSettings:
        control, battery = config.control, config.battery
        import_limit_w, export_limit_w = grid_limits_w(config.grid)
        discharge_w = battery.max_discharge_kw * W_PER_KW if battery is not None else 0.0
        return SiteSettings(
            control=control,
            battery=battery,
            fallback_import_limit_w=control.fallback_import_limit_kw * W_PER_KW,
            failsafe_current_a=config.ocpp.failsafe_current_a,
            grid_generation=battery is not None or any(device.role is DeviceRole.PV for device in config.devices),
            import_limit_w=import_limit_w,
            export_limit_w=export_limit_w,
            safety_margin_w=control.safety_margin_kw * W_PER_KW,
            battery_max_discharge_w=discharge_w,
            battery_max_charge_w=battery.max_charge_kw * W_PER_KW if battery is not None else 0.0,
            battery_step_down_w=(
                discharge_w * control.cycle_period_s / max(control.settle_time_s, control.cycle_period_s)
                if battery is not None
                else float("inf")
            ),
        )
