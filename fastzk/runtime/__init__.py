"""The thin shell around the pure pipeline: asyncio on uvloop, sockets, clocks, admin."""
