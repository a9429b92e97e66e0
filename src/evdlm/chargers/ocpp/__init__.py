"""OCPP 1.6J / 2.0.1 adapters: the only place that imports ``ocpp`` and ``websockets``.

The central system is :class:`evdlm.chargers.ocpp.server.OcppCentralSystem`; the simulator's
protocol clients are in :mod:`evdlm.sim.ocpp_client`.
"""
