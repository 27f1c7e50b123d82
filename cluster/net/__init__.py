"""Moving bytes between nodes: transports, gossip IO, request signing, the real clock.

clock (the system clock: the only place that reads time), udp (gossip datagrams), http_peers (the
peer transport over aiohttp), memory (in-memory twins of both transports, for simulation), gossip
(drives the membership state machine), peer_service (the node-to-node endpoints, transport-neutral),
auth (HMAC signatures of node-to-node requests).
"""
