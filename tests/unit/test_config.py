"""Config: each option declared once; the command line and the environment derived from it."""

from __future__ import annotations

import dataclasses

import pytest

from cluster.config import OPTIONS, Config, ConfigError, build_parser, env_var, flag


def test_every_field_is_an_option_with_help_flag_and_environment_variable() -> None:
    parser = build_parser({})
    flags = {a.option_strings[0]: a for a in parser._actions if a.option_strings[0] != "-h"}
    assert set(flags) == {flag(f.name) for f in OPTIONS}
    for f in OPTIONS:
        assert f.metadata["help"], f.name
        assert env_var(f.name) in (flags[flag(f.name)].help or "")


def test_defaults_come_from_the_fields() -> None:
    assert Config.from_args([], env={}) == Config().validate()


def test_the_command_line_wins_over_the_environment() -> None:
    env = {"KV_TCP_PORT": "9000", "KV_JOIN": "a:1, b:2", "KV_WRITE_MODE": "async"}
    c = Config.from_args(["--tcp-port", "9001"], env=env)
    assert (c.tcp_port, c.join, c.write_mode) == (9001, ("a:1", "b:2"), "async")


def test_optional_options_given_empty_are_unset() -> None:
    c = Config.from_args(["--cluster-key", "", "--seed", "3"], env={"KV_ADMIN_TOKEN": ""})
    assert (c.cluster_key, c.admin_token, c.seed) == (None, None, 3)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"KV_PORT": "http"}, "KV_PORT: expected int"),
        (["--write-mode", "fast"], {}, "--write-mode must be sync or async"),
        (["--join", "nohost"], {}, "--join: expected host:port"),
        (["--join", "::1:80"], {}, "--join: an IPv6 address needs brackets"),
        (["--advertise", "h:99999"], {}, "--advertise: the port must be 1..65535"),
        (["--probe-timeout", "2"], {}, "--probe-timeout must be positive and below"),
        (["--log-level", "LOUD"], {}, "--log-level must be"),
    ],
)
def test_a_bad_option_is_named(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_args(argv, env=env)


def test_gossip_timing_follows_the_options() -> None:
    params = Config(probe_interval=2.0, probe_timeout=1.0, gossip_interval=0.5).gossip_params()
    assert (params.probe_interval, params.probe_timeout, params.gossip_interval) == (2.0, 1.0, 0.5)
    assert params.gossip_to_dead_time == 60.0


def test_the_test_preset_is_a_config_like_any_other() -> None:
    fast = Config.for_tests(tcp_port=5)
    assert dataclasses.replace(fast, tcp_port=0) == Config.for_tests()
    assert fast.validate().name == "127.0.0.1:0"
