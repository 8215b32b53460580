"""config.toml from one source: keys, defaults, types and help come from the dataclasses;
nested tables; legacy flat keys; ``parse(render(cfg)) == cfg`` for any valid config."""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.backup.config import Quotas, ReplicatorConfig
from p2psync.config import (
    AgentConfig,
    ConfigError,
    Key,
    describe,
    keys,
    parse_config,
    render_config,
)
from p2psync.sync.engine import EngineConfig
from p2psync.transport.connection import TransportConfig
from p2psync.transport.handshake import Limits
from p2psync.transport.session import Keepalive


def parse(text: str) -> AgentConfig:
    return parse_config(tomllib.loads(text))


def test_every_field_is_a_key_with_a_default() -> None:
    names = [k.name for k in keys()]
    assert names == [f.name for f in dataclasses.fields(AgentConfig)]
    engine = {k.name for k in keys(EngineConfig, ("engine",))}
    assert engine == {f"engine.{f.name}" for f in dataclasses.fields(EngineConfig)}
    text = describe()
    for f in dataclasses.fields(TransportConfig):
        if f.compare:  # compare=False marks runtime hooks, not settings
            assert f"transport.{f.name}" in text
    assert "transport.keepalive.timeout = 5.0" in text
    # help from metadata, or the `#:` comment of a lower layer's class
    assert "engine.head_sync_interval = 30.0  (float) periodic head sync" in text


def test_defaults_render_and_parse_back() -> None:
    text = render_config(AgentConfig())
    for table in ("[engine]", "[transport]", "[transport.limits]", "[transport.keepalive]",
                  "[replicator]"):
        assert table in text
    assert parse(text) == AgentConfig()
    assert parse_config({}) == AgentConfig()


def test_nested_tables_reach_the_engine_and_transport() -> None:
    cfg = parse('[engine]\nhead_sync_interval = 2.5\nmax_in_flight = 3\n'
                '[transport.keepalive]\ninterval = 0.5\ntimeout = 2.0\n'
                '[transport.limits]\nmax_streams = 8\n')
    assert (cfg.engine.head_sync_interval, cfg.engine.max_in_flight) == (2.5, 3)
    assert cfg.transport.keepalive == Keepalive(0.5, 2.0)
    assert cfg.transport.limits.max_streams == 8
    # the rest of the transport keeps the sync-sized defaults
    assert cfg.transport.limits.max_message == AgentConfig().transport.limits.max_message


def test_legacy_flat_keys_still_load() -> None:
    cfg = parse_config({"port": 0, "tcp_port": -1, "head_sync_interval": 7})
    assert (cfg.quic_port, cfg.tcp_port) == (0, None)
    assert cfg.engine.head_sync_interval == 7.0 == cfg.head_sync_interval
    with pytest.raises(ConfigError, match="both set"):
        parse_config({"head_sync_interval": 7, "engine": {"head_sync_interval": 8}})


@pytest.mark.parametrize("data, words", [
    ({"engine": {"nope": 1}}, r"engine: unknown key\(s\) nope"),
    ({"engine": 3}, r"engine must be a table"),
    ({"engine": {"max_in_flight": "8"}}, "engine.max_in_flight must be an integer"),
    ({"engine": {"head_sync_interval": 0}}, "engine.head_sync_interval"),
    ({"engine": {"max_rounds": -1}}, "engine.max_rounds"),
    ({"transport": {"keepalive": {"interval": 9.0}}}, "keepalive interval"),
    ({"transport": {"limits": {"max_message": 10}}}, "transport.limits"),
    ({"transport": {"features": [1]}}, "transport.features must be a list of strings"),
    ({"backup": "no port here"}, "backup"),
    ({"listen": ""}, "listen"),
    ({"quic_port": True}, "quic_port"),
    ({"replicator": {"space_bytes": -1}}, "replicator.space_bytes"),
])
def test_errors_name_the_key(data: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config(data)


# --- the property -------------------------------------------------------------------------------
def _key_strategy(k: Key) -> st.SearchStrategy[Any]:
    tp, md = k.type, k.meta
    name = tp.__name__ if isinstance(tp, type) else str(tp)
    optional = "None" in name
    base = name.replace(" | None", "")
    strat: st.SearchStrategy[Any]
    if base == "bool":
        strat = st.booleans()
    elif base == "int":
        strat = st.integers(int(md["low"] or 0), int(md["high"] or 2**53))
    elif base == "float":
        strat = st.floats(md["low"] or 0.0, 1e12, allow_nan=False)
    elif md["choices"]:
        strat = st.sampled_from(md["choices"])
    elif md["check"] is not None:  # addresses
        strat = st.builds(lambda h, p, s: f"{s}10.0.{h}.1:{p}", st.integers(0, 255),
                          st.integers(1, 65535), st.sampled_from(["", "tcp://", "quic://"]))
    elif base == "str":
        strat = st.text(min_size=1 if md["nonempty"] else 0)
    elif base in ("list[str]", "tuple[str, ...]"):
        strat = st.lists(st.text(max_size=8), max_size=3)
        if base.startswith("tuple"):
            strat = strat.map(tuple)
    else:
        raise AssertionError(f"no strategy for {k.name}: {tp}")
    if optional:
        strat = st.none() | strat
    if base == "list[str]" and md["check"] is not None:
        strat = st.lists(_key_strategy(dataclasses.replace(k, type=str)), max_size=3)
    return strat


def _table(cls: type, prefix: tuple[str, ...], **override: Any) -> st.SearchStrategy[Any]:
    kw = {k.path[-1]: _key_strategy(k) for k in keys(cls, prefix)
          if not dataclasses.is_dataclass(k.type) and k.path[-1] not in override}
    return st.builds(cls, **kw, **override)


limits = st.builds(lambda s, w, m: Limits(s, max(w, m), min(w, m)), st.integers(1, 1 << 16),
                   st.integers(1024, 1 << 30), st.integers(1024, 1 << 30))
keepalive = st.builds(lambda a, b: Keepalive(min(a, b), max(a, b) + 0.5),
                      st.floats(0.01, 100), st.floats(0.01, 100))
replicator = st.builds(
    ReplicatorConfig,
    quotas=st.builds(Quotas, *[st.integers(0, 2**60)] * 4),
    accounts=st.frozensets(st.binary(min_size=32, max_size=32), max_size=3),
    metrics_port=st.integers(0, 65535), metrics_listen=st.text(min_size=1, max_size=20))
configs = _table(
    AgentConfig, (),
    quic_port=st.integers(0, 65535) | st.none(), tcp_port=st.integers(0, 65535),
    engine=_table(EngineConfig, ("engine",)),
    transport=_table(TransportConfig, ("transport",), limits=limits, keepalive=keepalive),
    replicator=replicator)


@settings(max_examples=150, deadline=None)
@given(configs)
def test_parse_of_render_is_identity(cfg: AgentConfig) -> None:
    assert parse(render_config(cfg)) == cfg
