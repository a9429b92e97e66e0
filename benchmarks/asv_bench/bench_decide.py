"""One control cycle's pure core, ``evdlm.core.decide.decide``, on a built site.

The site is site_configs/stress-1000.yaml (500 twin-outlet AC chargers, 1000 EVSEs, 10 boards
x 5 feeders): every EVSE charging, the grid meter fresh.
"""

from __future__ import annotations

from pathlib import Path

from evdlm.config import load_site_config
from evdlm.core.decide import DecisionContext, decide
from evdlm.core.memory import ControlMemory
from evdlm.core.problem_builder import BuildInputs, DemandLimits
from evdlm.core.types import EvseState, Quality, Reading

SITE = Path(__file__).resolve().parents[2] / "site_configs" / "stress-1000.yaml"
NOW_S = 1_780_000_000.0


class Decide:
    """``decide()`` from the site's readings and EVSE states to the commands."""

    def setup(self) -> None:
        config = load_site_config(SITE).config
        self.context = DecisionContext.from_config(config)
        states = {
            slot.key: EvseState(
                charger_id=slot.key[0],
                evse_id=slot.key[1],
                online=True,
                connected=True,
                charging=True,
                updated_at_s=NOW_S,
                transaction_id=f"tx-{slot.key[0]}-{slot.key[1]}",
                phase_current_a=(10.0, 10.0, 10.0),
                power_w=3 * 230.0 * 10.0,
            )
            for slot in self.context.topology.evses
        }
        grid_w = sum(state.power_w or 0.0 for state in states.values())
        readings = {
            config.grid.meter: Reading(
                config.grid.meter, NOW_S, Quality.OK, power_w=grid_w, phase_power_w=(grid_w / 3,) * 3
            )
        }
        self.inputs = BuildInputs(NOW_S, readings, states, ControlMemory(), DemandLimits())
        decide(self.context, self.inputs)  # numba kernels and caches warm

    def time_decide(self) -> None:
        decide(self.context, self.inputs)
