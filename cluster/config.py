"""Node configuration: one frozen object, each option declared once, validated once.

Every field of `Config` is an option: its default, its unit and meaning (`option(..., help)`)
are written once, and the command line (`--tcp-port`), the environment (`KV_TCP_PORT`) and
`python node.py --help` are derived from the fields. The command line wins over the environment.
`Config.for_tests()` is the one preset with millisecond-scale intervals for fast tests, and
`gossip_params()` derives membership's timing from the options.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cluster.core.addresses import format_hostport, parse_hostport
from cluster.errors import AddressError
from cluster.membership.suspicion import GossipParams


class ConfigError(ValueError):
    """An invalid option; the message names it."""


def option(default: Any, help: str) -> Any:
    """A Config field: its default and what it means (the --help text)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class Config:
    name: str = option("", "unique node name (default HOST:PORT)")
    host: str = option("127.0.0.1", "address to bind HTTP, TCP and gossip")
    port: int = option(8080, "HTTP port; gossip uses UDP on the same number; 0: any free port")
    advertise: str = option("", "host:port peers use to reach this node (default HOST:PORT)")
    tcp_port: int = option(9888, "line protocol port; 0 turns it off")
    resp_port: int = option(6379, "RESP (Redis protocol) port; 0 turns it off")
    resp_password: str | None = option(None, "password RESP clients must AUTH with")
    resp_max_bytes: int = option(8 * 1024 * 1024, "largest RESP request in bytes")
    join: tuple[str, ...] = option((), "comma-separated host:port of nodes already in a mesh")
    cluster_key: str | None = option(None, "shared secret authenticating gossip and replication")
    admin_token: str | None = option(None, "bearer token required by mutating /cluster/* calls")
    store: str = option("memory", "memory (the mesh), or a postgresql:// URL: stateless nodes")
    store_pool_size: int = option(32, "with a database store: connections in the node's pool")
    data_dir: str | None = option(None, "keep this node's replica on disk in this directory")
    fsync: str = option("everysec", "with --data-dir: always, everysec or no (Redis's appendfsync)")
    repair_data: bool = option(False, "move a damaged --data-dir copy aside and start empty")
    max_key_length: int = option(64, "maximum key length in characters (code points)")
    max_value_length: int = option(256, "maximum value length in characters (code points)")
    write_mode: str = option("sync", "sync: ack once every live peer applied; async: once local")
    max_body_bytes: int = option(8 * 1024 * 1024, "largest accepted HTTP body in bytes (413)")
    max_clock_offset: float = option(0.5, "seconds a remote clock may be ahead before refusal")
    max_ttl: float = option(10 * 365 * 86400.0, "largest TTL in seconds")
    expire_interval: float = option(0.1, "seconds between TTL reclamation rounds")
    tombstone_interval: float = option(10.0, "seconds between tombstone purge rounds")
    line_max_bytes: int = option(1024 * 1024, "longest line-protocol line in bytes")
    line_idle_timeout: float = option(300.0, "seconds a silent line-protocol client stays")
    txn_max_writes: int = option(10_000, "writes one line-protocol transaction may buffer")
    replication_timeout: float = option(2.0, "seconds a sync write waits for peer acks")
    max_hints: int = option(100_000, "writes queued per unreachable peer before anti-entropy")
    antientropy_interval: float = option(10.0, "seconds between anti-entropy rounds")
    probe_interval: float = option(1.0, "seconds between gossip failure probes")
    probe_timeout: float = option(0.5, "seconds to wait for a probe's ack before indirect probes")
    suspicion_mult: int = option(4, "suspicion timeout multiplier (x log10(n) x probe interval)")
    gossip_interval: float = option(0.2, "seconds between gossip rounds")
    push_pull_interval: float = option(30.0, "seconds between full membership state exchanges")
    join_timeout: float = option(5.0, "seconds a join waits for a seed to answer")
    clock_offset: float = option(0.0, "seconds added to this node's wall clock (testing skew)")
    seed: int | None = option(None, "seed for the node's random number generator")
    log_level: str = option("INFO", "DEBUG, INFO, WARNING or ERROR")

    def validate(self) -> Config:
        """Return a copy with defaults resolved; raise ConfigError on a bad option."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        if not 0 <= self.tcp_port <= 65535:
            raise ConfigError(f"--tcp-port must be 0..65535, got {self.tcp_port}")
        if not 0 <= self.resp_port <= 65535:
            raise ConfigError(f"--resp-port must be 0..65535, got {self.resp_port}")
        if self.resp_max_bytes < 1024:
            raise ConfigError("--resp-max-bytes must be at least 1024")
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
        if self.store != "memory" and not self.store.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"--store must be memory or a postgresql:// URL, got {self.store.split('@')[-1]!r}"
            )
        if self.store != "memory" and self.data_dir:
            raise ConfigError(
                "--data-dir keeps a mesh's replica; with a database store it has none"
            )
        if self.store_pool_size < 1:
            raise ConfigError("--store-pool-size must be at least 1")
        if self.fsync not in ("always", "everysec", "no"):
            raise ConfigError(f"--fsync must be always, everysec or no, got {self.fsync!r}")
        if self.max_clock_offset <= 0:
            raise ConfigError("--max-clock-offset must be positive")
        for seed in self.join:
            _check_address(seed, "--join")
        if self.advertise:
            _check_address(self.advertise, "--advertise")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}"
            )
        name = self.name or format_hostport(self.host, self.port)
        advertise = self.advertise or format_hostport(self.host, self.port)
        return replace(self, name=name, advertise=advertise, log_level=self.log_level.upper())

    @property
    def database(self) -> bool:
        """Database mode: the data lives in a shared database, not in the mesh."""
        return self.store != "memory"

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
        """Fast intervals, any free port, no line protocol or RESP unless asked for."""
        base: dict[str, Any] = {
            "port": 0,
            "tcp_port": 0,
            "resp_port": 0,
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
        parser = build_parser(env)
        try:
            ns = parser.parse_args(list(argv))
        except SystemExit as exc:  # argparse already printed the reason (or the help)
            if exc.code == 0:
                raise  # --help: printed what was asked for; not an error
            raise ConfigError("invalid command line") from exc
        values = {f.name: _from_text(f.name, getattr(ns, f.name)) for f in OPTIONS}
        return cls(**values).validate()


OPTIONS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(Config)
_TYPES: dict[str, Any] = typing.get_type_hints(Config)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var(name: str) -> str:
    return "KV_" + name.upper()


def _scalar(name: str) -> type:
    """The type an option's text parses to: str, int or float."""
    hint = _TYPES[name]
    for typ in (int, float):
        if hint is typ or hint == typ | None:
            return typ
    return str


def _from_text(name: str, value: Any) -> Any:
    """An option's value as Config holds it: join is a tuple, an empty optional is None."""
    if name == "join":
        text = value or ""
        return tuple(s.strip() for s in text.split(",") if s.strip())
    if value == "" and type(None) in typing.get_args(_TYPES[name]):
        return None
    return value


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line of node.py, derived from Config's fields (defaults from the environment)."""
    parser = argparse.ArgumentParser(
        prog="node.py",
        description="Run one node of the kvmesh key/value cluster.",
        epilog="Every option also reads an environment variable: --tcp-port <- KV_TCP_PORT.",
    )
    for f in OPTIONS:
        var = env_var(f.name)
        if _TYPES[f.name] is bool:  # a switch: given or not; the variable says 1/true/yes/on
            on = env.get(var, "").strip().lower() in ("1", "true", "yes", "on")
            parser.add_argument(
                flag(f.name), action="store_true", default=on, help=f"{f.metadata['help']} [{var}]"
            )
            continue
        typ = _scalar(f.name)
        default: Any = "" if f.name == "join" else f.default  # join: comma-separated text
        raw = env.get(var)
        if raw is not None and raw != "":
            try:
                default = typ(raw)
            except ValueError as exc:
                raise ConfigError(f"{var}: expected {typ.__name__}, got {raw!r}") from exc
        parser.add_argument(
            flag(f.name), type=typ, default=default, help=f"{f.metadata['help']} [{var}]"
        )
    return parser


def _check_address(value: str, option_name: str) -> None:
    try:
        parse_hostport(value)
    except AddressError as exc:
        raise ConfigError(f"{option_name}: {exc}") from None
