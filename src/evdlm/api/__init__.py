"""evdlm's HTTP API (aiohttp): an app factory other features add their routes to."""
