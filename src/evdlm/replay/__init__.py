"""Deterministic replay of cycle recordings, KPIs and plots for analysts (the log importers,
which re-simulate a day, are in :mod:`evdlm.sim.importer`).

``replay_recording`` re-runs :func:`evdlm.core.decide.decide` over a recording in simulated
time (no sockets, no clock): with the recorded config it reproduces the gateway's commands
exactly; with another config or solver it is the counterfactual. Replay is open loop: the
inputs (meters, cars) are as recorded, only the decisions change; :mod:`evdlm.replay.kpi`
estimates what the cars would have drawn under counterfactual limits.
"""

from evdlm.replay.loop import ReplayResult, replay_recording

__all__ = ["ReplayResult", "replay_recording"]
