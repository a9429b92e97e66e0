"""Pure numeric power allocation for evdlm (no I/O, no asyncio, no protocol library)."""
