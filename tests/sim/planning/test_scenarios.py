"""Sweep files, scenario configs, charger scaling and the session formats of `evdlm plan`."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from evdlm.config import parse_site_config
from evdlm.sim.planning import parse_acn_json, parse_sweep
from evdlm.sim.planning.metrics import COLUMNS, run_case
from evdlm.sim.planning.scenarios import PlanCase, Scenario, Sweep, scenario_config, scenario_spec, scenarios_of

from .helpers import START, small_site

SWEEP = """
hours: 3
start: "2026-06-16T07:00"
cycle_period_s: 60
demand_charge_per_kw: 10
axes:
  chargers: [10, 60]
  connection_kw: [100, 150]
  circuits: [1.0, {level1: 120}]
  battery_kwh: [0, 80]
  solver: [heuristic, lp]
  variants: {base: {}, tight: {control: {safety_margin_kw: 10}}}
  tariffs: {site: null, flat: {currency: EUR, default_import_price_per_kwh: 0.3, demand_charge_per_kw: 12}}
"""


def test_the_sweep_is_the_product_of_its_axes_in_a_fixed_order() -> None:
    sweep = parse_sweep(SWEEP)
    scenarios = scenarios_of("s", sweep)
    assert len(scenarios) == 2**7
    assert [s.scenario_id for s in scenarios[:2]] == ["s/0001", "s/0002"]
    assert scenarios[0] == Scenario("s/0001", "s", 10, 100.0, 1.0, 0.0, "base", "heuristic", "site")
    assert scenarios[1].tariff == "flat" and scenarios[-1].chargers == 60
    assert scenarios_of("s", sweep) == scenarios  # deterministic


@pytest.mark.parametrize("text", ["axes: {speed: [1]}", "colour: red", "axes: {chargers: 3}"])
def test_a_bad_sweep_file_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="sweep"):
        parse_sweep(text)


def test_a_scenario_config_applies_every_axis_and_is_valid() -> None:
    site = small_site()
    sweep = parse_sweep(SWEEP)
    scenario = Scenario("s/1", "s", 60, 300.0, {"level1": 120}, 80.0, "tight", "lp", "flat")
    text, _data, demand_charge = scenario_config(site.config_text, scenario, sweep)
    config = parse_site_config(text, "<test>").config
    assert config.grid.import_limit_kw == 300.0
    assert config.grid.phase_current_limit_a >= 300_000 / (3 * 230)  # the fuse follows the connection
    assert len(config.chargers) == 60 and config.chargers[50].id == "WP01-2"
    assert config.chargers[50].circuit == config.chargers[0].circuit
    level1 = next(c for c, _ in config.iter_circuits() if c.id == "level1")
    assert level1.phase_current_limit_a == 120
    assert config.battery is not None and config.battery.capacity_kwh == 80 and config.battery.max_discharge_kw == 40
    assert config.control.safety_margin_kw == 10 and config.control.cycle_period_s == 60
    assert config.tariffs is not None and config.tariffs.default_import_price_per_kwh == 0.3
    assert demand_charge == 12.0
    scaled = scenario_config(site.config_text, replace(scenario, circuits=1.5), sweep)[0]
    level2 = next(c for c, _ in parse_site_config(scaled, "<test>").config.iter_circuits() if c.id == "level2")
    assert level2.phase_current_limit_a == 240 and level2.power_limit_kw == 150


def test_more_chargers_bring_more_arrivals_fewer_bring_fewer() -> None:
    site = small_site()
    sweep = Sweep(hours=24.0, cycle_period_s=60.0)
    base = scenario_spec(PlanCase(site, Scenario("s/1", "s"), sweep))[0].sessions
    more = scenario_spec(PlanCase(site, Scenario("s/2", "s", chargers=100), sweep))[0].sessions
    fewer = scenario_spec(PlanCase(site, Scenario("s/3", "s", chargers=10), sweep))[0].sessions
    assert len(more) == 2 * len(base)
    assert {s.charger_id for s in fewer} <= {f"WP{n:02d}" for n in range(1, 11)}
    assert len({s.transaction_id for s in more}) == len(more)
    assert scenario_spec(PlanCase(site, Scenario("s/2", "s", chargers=100), sweep))[0].sessions == more


def test_a_scenario_row_has_every_column_and_sane_figures() -> None:
    site = small_site()
    sweep = Sweep(axes={}, hours=3.0, start=START, cycle_period_s=60.0, demand_charge_per_kw=10.0)
    row = run_case(PlanCase(site, Scenario("s/1", site.name, chargers=12, battery_kwh=60.0), sweep))
    assert list(row) == COLUMNS
    assert row["error"] == "" and row["cycles"] == 180
    assert 0 < row["energy_pct"] <= 100 and 0 <= row["sessions_served_pct"] <= 100
    assert row["delivered_kwh"] <= row["requested_kwh"] + 0.1
    assert 0 < row["fairness_jain"] <= 1
    assert row["peak_import_kw"] >= row["peak_15min_kw"] > 0
    assert row["demand_cost"] == pytest.approx(10.0 * row["peak_15min_kw"], abs=0.1)
    assert row["energy_cost"] > 0 and row["currency"] == "EUR"
    assert row["uptime_pct"] is None  # no charger with a power floor: no availability figures


def test_availability_figures_where_a_charger_has_a_floor() -> None:
    site = small_site()
    sweep = Sweep(
        axes={"variants": (("floors", {}),)}, hours=2.0, start=START, cycle_period_s=60.0, sample_interval_s=60.0
    )
    floored = site.config_text.replace("max_current_a: 32}", "max_current_a: 32, min_power_floor_kw: 11}")
    row = run_case(PlanCase(replace(site, config_text=floored), Scenario("s/1", site.name, chargers=12), sweep))
    assert row["error"] == ""
    assert row["uptime_pct"] is not None and 0 <= row["uptime_pct"] <= 100
    assert row["below_floor_port_h"] is not None


ACN = {
    "_meta": {"total": 3},
    "_items": [
        {
            "sessionID": "2_39_78_362_2018-04-25",
            "stationID": "2-39-78-362",
            "connectionTime": "Wed, 25 Apr 2018 11:08:04 GMT",
            "disconnectTime": "Wed, 25 Apr 2018 19:51:18 GMT",
            "kWhDelivered": 25.016,
            "userInputs": [{"kWhRequested": 30.0, "requestedDeparture": "Wed, 25 Apr 2018 19:00:00 GMT"}],
        },
        {
            "sessionID": "b",
            "stationID": "WP07",
            "connectionTime": "2018-04-25T13:00:00+00:00",
            "disconnectTime": "2018-04-25T16:00:00+00:00",
            "kWhDelivered": 8.5,
            "userInputs": None,
        },
        {
            "sessionID": "c",
            "stationID": "2-39-79-380",
            "connectionTime": "Wed, 25 Apr 2018 12:00:00 GMT",
            "disconnectTime": "Wed, 25 Apr 2018 12:00:00 GMT",
            "kWhDelivered": 0.0,
        },
    ],
}


def test_acn_data_json_sessions() -> None:
    config = parse_site_config(small_site().config_text, "<test>").config
    sessions = parse_acn_json(json.loads(json.dumps(ACN)), config)
    assert len(sessions) == 2  # the empty session is dropped
    first, second = sessions
    assert first.charger_id == "WP01"  # an unknown station takes the first free charger
    assert first.arrival_s == 1524654484.0 and first.energy_needed_kwh == 25.016
    assert first.announces_needs and first.announced_departure_s == 1524682800.0
    assert second.charger_id == "WP07" and not second.announces_needs and second.phases == 3
    requested = parse_acn_json(ACN, config, requested=True)
    assert requested[0].energy_needed_kwh == 30.0


def test_a_swept_battery_is_simulated_behind_the_grid_meter() -> None:
    from evdlm.sim.closed_loop import CycleView, simulate

    site = small_site()
    sweep = Sweep(hours=6.0, start=START, cycle_period_s=60.0, sample_interval_s=60.0)
    spec, _data, _charge = scenario_spec(
        PlanCase(site, Scenario("s/1", site.name, chargers=20, connection_kw=70.0, battery_kwh=100.0), sweep)
    )
    soc: list[float] = []
    power: list[float] = []

    def observe(view: CycleView) -> None:
        reading = view.readings["plan_battery"]
        assert reading.soc_pct is not None and reading.power_w is not None
        soc.append(reading.soc_pct)
        power.append(reading.power_w)

    simulate(spec, None, observer=observe)
    assert max(power) > 0  # it discharged for the cars on a tight connection
    assert min(soc) >= 10.0 - 1e-6 and soc[-1] < soc[0]  # down to its minimum state of charge, not below
