"""Every simulator, in one package: tests, the demo, benchmarks and the sample recordings.

``evdlm.sim`` imports production code; production code never imports ``evdlm.sim`` (an
import-linter contract in pyproject.toml, run by ``make lint``). Simulated devices reach the
device hub through the same reader interface as real ones: the composition root that runs a
simulated site passes them in (:func:`evdlm.sim.site_physics.sim_readers`).

=================  ==========================================================================
module             what
=================  ==========================================================================
site_physics       the site's physics: building load, PV, battery, meters (pure, clock-driven)
modbus_servers     Modbus servers (profile and SunSpec units) serving the site physics, faults
ev                 the one EV model: dead time, ramp, IEC 61851 minimum, SoC, energy wanted
composite          charging-profile stacking as a station applies it (pure)
station            one station's model: connectors, profiles, configuration, misbehaviour
ocpp_client        OCPP 1.6 / 2.0.1 charge-point clients driving the station models
fleet              a site's stations as OCPP clients against the gateway
broker             a local MQTT broker (mosquitto, or the embedded amqtt one)
site               a whole simulated site around the real gateway (real protocols, loopback)
demo               the ``evdlm demo`` driver
closed_loop        an in-process closed-loop simulation of decide() that writes a recording
sample_day         the seeded sample days (``python -m evdlm.sim.sample_day DIR``)
importer           site logs (session CSV, OCPP MeterValues, grid meter) to a re-simulated day
=================  ==========================================================================
"""
