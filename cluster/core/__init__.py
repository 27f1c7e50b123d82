"""The pure core: time-stamped, versioned data and the rules that order it.

hlc (hybrid logical clock), store (versioned last-writer-wins store), patterns (key filters), kv
(validation and stamping), batch (what one write produced), addresses, cursor, backoff, clock (the
Clock protocol and a fake). No IO, no asyncio, no clock reads, no module-level randomness: an
import-linter contract in pyproject.toml holds that.
"""
