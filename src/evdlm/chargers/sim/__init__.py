"""Charge-point simulator: EV physics and profile stacking (pure), stations and fleets.

The protocol side of the stations lives in :mod:`evdlm.chargers.ocpp.sim_client`.
"""
