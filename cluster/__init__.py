"""kvmesh: a multi-active, in-memory key/value cluster.

Rooms, from the bottom: `core` (pure: HLC, the versioned store, validation, codecs), `membership`
(pure SWIM), `replication` (replication, anti-entropy, snapshots), `net` (transports, gossip IO,
the peer service, the real clock), `api` (the faces clients use), then `lifecycle` and the
composition root `app`. Arrows point down only (import-linter holds it). See docs/design.md.
"""

__version__ = "0.1.0"
