"""How a write reaches every replica: replication, anti-entropy repair and snapshots.

wire (the replication body and the merge of remote batches, pure), links (per-peer queue
arithmetic for purge safety, pure), sender (the per-peer sender tasks and sync acknowledgement),
antientropy (digests, diff and merge, pure), repair (a repair round and a snapshot pull, through
the peer transport). Peers are reached only through `cluster.core.ports.PeerTransport`.
"""
