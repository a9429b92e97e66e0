"""evdlm: site-level dynamic load management for EV charging."""

__version__ = "0.1.0"
