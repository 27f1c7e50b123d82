"""The line protocol: grammar (pure parse and replies), session (the transaction machine, pure),
framer (bytes to lines, bounded), server (the asyncio protocol and listener)."""
