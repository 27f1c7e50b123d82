"""kvmesh: a multi-active, in-memory key/value cluster.

The pure core (config, errors, hlc, store, patterns, ...) does no IO and reads no clock;
the IO layer (http_api, compat, line_protocol, app) wraps it. See README.md for the design.
"""

__version__ = "0.1.0"
