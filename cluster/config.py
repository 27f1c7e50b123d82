"""Node configuration: one frozen object built from argv and the environment, validated once.

Every command-line option also reads an environment variable (`--tcp-port` <- `KV_TCP_PORT`);
the command line wins. `Config.for_tests()` gives millisecond-scale intervals for fast tests.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cluster.membership.suspicion import GossipParams


class ConfigError(ValueError):
    """An invalid option; the message names it."""


@dataclass(frozen=True, slots=True)
class Config:
    name: str = ""  # unique node name; "" means "HOST:PORT" (filled by validate)
    host: str = "127.0.0.1"  # address to bind HTTP, TCP and gossip
    port: int = 8080  # HTTP port; gossip uses UDP on the same number; 0 = any free port
    advertise: str = ""  # "host:port" peers use to reach us; "" means HOST:PORT
    tcp_port: int = 9888  # line protocol port; 0 turns it off
    join: tuple[str, ...] = ()  # seeds, "host:port" of nodes already in a mesh
    cluster_key: str | None = None  # shared secret authenticating gossip and replication
    admin_token: str | None = None  # bearer token for mutating /cluster/* calls
    max_key_length: int = 64  # characters (code points)
    max_value_length: int = 256  # characters (code points)
    write_mode: str = "sync"  # "sync": ack after every live peer applied; "async": after local
    max_body_bytes: int = 8 * 1024 * 1024  # bytes; larger HTTP bodies get 413
    max_clock_offset: float = 0.5  # seconds a remote HLC may be ahead before it is refused
    max_ttl: float = 10 * 365 * 86400.0  # seconds; larger TTLs are rejected as INVALID_PARAMETER
    expire_interval: float = 0.1  # seconds between background TTL reclamation rounds
    tombstone_interval: float = 10.0  # seconds between tombstone purge rounds
    line_max_bytes: int = 1024 * 1024  # bytes; longer protocol lines get an Error and are skipped
    line_idle_timeout: float = 300.0  # seconds a line-protocol client may stay silent
    txn_max_writes: int = 10_000  # buffered writes per transaction before it is aborted
    replication_timeout: float = 2.0  # seconds a sync write waits for peer acks
    max_hints: int = 100_000  # writes queued per unreachable peer before anti-entropy takes over
    antientropy_interval: float = 10.0  # seconds between digest comparisons with a random peer
    probe_interval: float = 1.0  # seconds between gossip failure probes (memberlist LAN)
    probe_timeout: float = 0.5  # seconds to wait for a direct ack before indirect probes
    suspicion_mult: int = 4  # suspicion timeout = mult * log10(n) * probe interval
    gossip_interval: float = 0.2  # seconds between gossip dissemination rounds
    push_pull_interval: float = 30.0  # seconds between full state exchanges with a peer
    join_timeout: float = 5.0  # seconds a join waits for a seed to answer
    clock_offset: float = 0.0  # seconds added to the wall clock (fault tests simulate skew)
    seed: int | None = None  # seeds the node's random.Random; None = from the OS
    log_level: str = "INFO"

    def validate(self) -> Config:
        """Return a copy with defaults resolved; raise ConfigError on a bad option."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        if not 0 <= self.tcp_port <= 65535:
            raise ConfigError(f"--tcp-port must be 0..65535, got {self.tcp_port}")
        if self.write_mode not in ("sync", "async"):
            raise ConfigError(f"--write-mode must be sync or async, got {self.write_mode!r}")
        if self.max_key_length < 1 or self.max_value_length < 0:
            raise ConfigError("--max-key-length must be >= 1 and --max-value-length >= 0")
        if self.max_body_bytes < 1024:
            raise ConfigError("--max-body-bytes must be at least 1024")
        if self.replication_timeout <= 0 or self.antientropy_interval <= 0 or self.max_hints < 1:
            raise ConfigError(
                "--replication-timeout and --antientropy-interval must be positive, "
                "--max-hints at least 1"
            )
        if not 0 < self.probe_timeout < self.probe_interval:
            raise ConfigError("--probe-timeout must be positive and below --probe-interval")
        if self.suspicion_mult < 1 or self.gossip_interval <= 0 or self.push_pull_interval <= 0:
            raise ConfigError("gossip intervals must be positive and --suspicion-mult >= 1")
        if self.line_max_bytes < 16 or self.line_idle_timeout <= 0 or self.txn_max_writes < 1:
            raise ConfigError(
                "--line-max-bytes must be at least 16, --line-idle-timeout positive and "
                "--txn-max-writes at least 1"
            )
        if self.join_timeout <= 0:
            raise ConfigError("--join-timeout must be positive")
        if self.max_clock_offset <= 0:
            raise ConfigError("--max-clock-offset must be positive")
        for seed in self.join:
            _split_hostport(seed, "--join")
        if self.advertise:
            _split_hostport(self.advertise, "--advertise")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}"
            )
        name = self.name or f"{self.host}:{self.port}"
        advertise = self.advertise or f"{self.host}:{self.port}"
        return replace(self, name=name, advertise=advertise, log_level=self.log_level.upper())

    def gossip_params(self) -> GossipParams:
        """Membership timing from the node's options; the rest follows from the probe interval."""
        return GossipParams(
            probe_interval=self.probe_interval,
            probe_timeout=self.probe_timeout,
            suspicion_mult=self.suspicion_mult,
            gossip_interval=self.gossip_interval,
            push_pull_interval=self.push_pull_interval,
            reconnect_interval=self.push_pull_interval,
            gossip_to_dead_time=30 * self.probe_interval,
            push_pull_timeout=max(1.0, 10 * self.probe_interval),
        )

    @classmethod
    def for_tests(cls, **overrides: Any) -> Config:
        """Fast intervals, any free port, no line protocol unless asked for."""
        base: dict[str, Any] = {
            "port": 0,
            "tcp_port": 0,
            "seed": 1,
            "expire_interval": 0.01,
            "replication_timeout": 1.0,
            "antientropy_interval": 0.2,
            "probe_interval": 0.1,
            "probe_timeout": 0.05,
            "gossip_interval": 0.02,
            "push_pull_interval": 0.5,
            "join_timeout": 2.0,
        }
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_args(cls, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Config:
        """Parse argv with environment fallbacks (`KV_<OPTION>`); raise ConfigError on errors."""
        env = os.environ if env is None else env
        parser = _build_parser(env)
        try:
            ns = parser.parse_args(list(argv))
        except SystemExit as exc:  # argparse already printed the reason (or the help)
            if exc.code == 0:
                raise  # --help: printed what was asked for; not an error
            raise ConfigError("invalid command line") from exc
        join = tuple(s.strip() for s in (ns.join or "").split(",") if s.strip())
        cfg = cls(
            name=ns.name or "",
            host=ns.host,
            port=ns.port,
            advertise=ns.advertise or "",
            tcp_port=ns.tcp_port,
            join=join,
            cluster_key=ns.cluster_key or None,
            admin_token=ns.admin_token or None,
            max_key_length=ns.max_key_length,
            max_value_length=ns.max_value_length,
            write_mode=ns.write_mode,
            max_body_bytes=ns.max_body_bytes,
            max_clock_offset=ns.max_clock_offset,
            replication_timeout=ns.replication_timeout,
            max_hints=ns.max_hints,
            antientropy_interval=ns.antientropy_interval,
            probe_interval=ns.probe_interval,
            probe_timeout=ns.probe_timeout,
            suspicion_mult=ns.suspicion_mult,
            gossip_interval=ns.gossip_interval,
            push_pull_interval=ns.push_pull_interval,
            join_timeout=ns.join_timeout,
            line_max_bytes=ns.line_max_bytes,
            line_idle_timeout=ns.line_idle_timeout,
            txn_max_writes=ns.txn_max_writes,
            clock_offset=ns.clock_offset,
            seed=ns.seed,
            log_level=ns.log_level,
        )
        return cfg.validate()


def _split_hostport(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"{option}: expected host:port, got {value!r}")
    return host, int(port)


def split_hostport(value: str) -> tuple[str, int]:
    """'host:port' -> (host, port); ConfigError if malformed."""
    return _split_hostport(value, "address")


# (option, type, default, help); the environment variable is KV_ + the upper-cased option name.
_OPTIONS: list[tuple[str, type, Any, str]] = [
    ("name", str, None, "unique node name (default HOST:PORT)"),
    ("host", str, "127.0.0.1", "address to bind HTTP, TCP and gossip"),
    ("port", int, 8080, "HTTP port; gossip uses UDP on the same number"),
    ("advertise", str, None, "host:port peers use to reach this node (default HOST:PORT)"),
    ("tcp-port", int, 9888, "line protocol port; 0 turns it off"),
    ("join", str, None, "comma-separated host:port of nodes already in a mesh"),
    ("cluster-key", str, None, "shared secret authenticating gossip and replication"),
    ("admin-token", str, None, "bearer token required by mutating /cluster/* calls"),
    ("max-key-length", int, 64, "maximum key length in characters"),
    ("max-value-length", int, 256, "maximum value length in characters"),
    ("write-mode", str, "sync", "sync: ack once every live peer applied; async: once local"),
    ("max-body-bytes", int, 8 * 1024 * 1024, "largest accepted HTTP body in bytes"),
    ("max-clock-offset", float, 0.5, "seconds a remote clock may be ahead before refusal"),
    ("replication-timeout", float, 2.0, "seconds a sync write waits for peer acks"),
    ("max-hints", int, 100_000, "writes queued per unreachable peer before anti-entropy"),
    ("antientropy-interval", float, 10.0, "seconds between anti-entropy rounds"),
    ("probe-interval", float, 1.0, "seconds between gossip failure probes"),
    ("probe-timeout", float, 0.5, "seconds to wait for a probe's ack before indirect probes"),
    ("suspicion-mult", int, 4, "suspicion timeout multiplier"),
    ("gossip-interval", float, 0.2, "seconds between gossip rounds"),
    ("push-pull-interval", float, 30.0, "seconds between full membership state exchanges"),
    ("join-timeout", float, 5.0, "seconds a join waits for a seed to answer"),
    ("line-max-bytes", int, 1024 * 1024, "longest line-protocol line in bytes"),
    ("line-idle-timeout", float, 300.0, "seconds a silent line-protocol client stays connected"),
    ("txn-max-writes", int, 10_000, "writes one line-protocol transaction may buffer"),
    ("clock-offset", float, 0.0, "seconds added to this node's wall clock (testing skew)"),
    ("seed", int, None, "seed for the node's random number generator"),
    ("log-level", str, "INFO", "DEBUG, INFO, WARNING or ERROR"),
]


def _build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="node.py",
        description="Run one node of the kvmesh key/value cluster.",
        epilog="Every option also reads an environment variable: --tcp-port <- KV_TCP_PORT.",
    )
    for option, typ, default, help_text in _OPTIONS:
        var = "KV_" + option.upper().replace("-", "_")
        raw = env.get(var)
        value: Any = default
        if raw is not None and raw != "":
            try:
                value = typ(raw)
            except ValueError as exc:
                raise ConfigError(f"{var}: expected {typ.__name__}, got {raw!r}") from exc
        parser.add_argument(f"--{option}", type=typ, default=value, help=f"{help_text} [{var}]")
    return parser
