"""Helpers of the whole-site runs."""

from __future__ import annotations

from evdlm.sim.site import until

__all__ = ["until"]  # the e2e tests' helper lives with the simulated site
