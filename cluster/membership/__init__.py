"""Membership, pure: who is in the mesh and who is alive (SWIM with Lifeguard).

messages (the wire), suspicion (timing math), broadcasts (the transmit-limited queue), swim (the
state machine). Driven by `cluster.net.gossip` in production and by the simulations in tests.
"""
