"""The availability ledger's edges: its state file, the gateway's feed, reports (docs/availability.md).

The classification and the ledger themselves are pure: :mod:`evdlm.core.availability`.
"""
