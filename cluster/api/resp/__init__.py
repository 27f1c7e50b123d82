"""RESP, Redis's protocol: codec (requests in, replies out), commands (Redis semantics over the
node's key/value operations), session (a connection's state, MULTI/EXEC), server (the asyncio
connection on the shared ordered machinery of cluster.api.ordered)."""
