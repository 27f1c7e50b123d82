"""The faces clients talk to: HTTP (REST, the task API, compatibility shapes), admin, metrics, the
line protocol, and the node-to-node routes' HTTP adapter.

Each face takes the narrow interfaces of `cluster.api.ports` from the composition root, never the
whole node.
"""
