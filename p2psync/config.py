"""The agent's configuration: ``<home>/config.toml`` parsed into a typed, validated dataclass.

One source of truth: the keys, defaults, types and help of ``config.toml`` are derived from the
dataclasses (:func:`dataclasses.fields` plus each field's ``metadata``, or its ``#:`` comment
when the class lives in a lower layer), so a new field of :class:`AgentConfig`,
:class:`~p2psync.sync.engine.EngineConfig` or
:class:`~p2psync.transport.connection.TransportConfig` is a config key without further code.
Nested dataclasses are TOML tables: ``[engine]``, ``[transport]``, ``[transport.limits]``,
``[transport.keepalive]``; ``[replicator]`` keeps its own parser (:mod:`p2psync.backup.config`).
Legacy flat keys still load: ``port`` (both carriers) and ``head_sync_interval`` (now
``[engine] head_sync_interval``).

Sans-IO apart from :func:`load_config` (which reads the file): :func:`parse_config` takes the
decoded TOML table, so every rule is testable without files. Unknown keys are an error (a typo
in a config file must not be silently ignored), and :func:`render_config` writes every section
so that ``parse_config(tomllib.loads(render_config(cfg))) == cfg``. Example::

    port = 4433              # QUIC (UDP) and TCP listen on this port number; 0 = ephemeral
    # quic_port = 4433       # override one carrier; -1 disables it
    # tcp_port = 4434
    listen = "0.0.0.0"       # listen address ("::" for IPv6 only, "127.0.0.1" for local only)
    mdns = true              # advertise and browse _p2psync._udp.local.
    interfaces = []          # restrict mDNS to these interface names (empty: all usable)
    peers = ["192.168.1.20:4433", "tcp://nas.local:4433"]   # static peers, always dialled
    backup = "tcp://backup.example.net:4433"                 # the backup peer (optional)
    backup_peer_id = "p..."  # expected peer id of the backup (optional, checked on connect)
    log_level = "warning"    # debug | info | warning | error

    [engine]
    head_sync_interval = 30.0

    [transport.keepalive]
    timeout = 5.0

``p2psync config --help``-style text comes from :func:`describe`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import tomllib
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psync.backup.config import ReplicatorConfig, parse_replicator
from p2psync.crypto.ids import account_id
from p2psync.discovery.peers import BadPeerAddress, parse_endpoints
from p2psync.errors import P2PSyncError
from p2psync.node import sync_transport_config
from p2psync.sync.engine import EngineConfig
from p2psync.sync.memberlimits import MemberLimits
from p2psync.transport.connection import TransportConfig

DEFAULT_PORT = 4433
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(P2PSyncError):
    """``config.toml`` is unreadable or holds a bad value (the message names the key)."""


# --- field metadata -----------------------------------------------------------------------------
def _peer_address(value: str) -> str | None:
    try:
        parse_endpoints(value, DEFAULT_PORT)
    except BadPeerAddress as exc:
        return str(exc)
    return None


def meta(help: str, *, low: float | None = None, high: float | None = None,
         off: int | None = None, choices: tuple[str, ...] = (), nonempty: bool = False,
         check: Callable[[Any], str | None] | None = None) -> dict[str, Any]:
    """Field metadata for a config key: ``help``, bounds, the TOML value meaning None
    (``off``: ports use -1), allowed ``choices``, and an extra ``check`` (returns a reason)."""
    return {"help": help, "low": low, "high": high, "off": off, "choices": choices,
            "nonempty": nonempty, "check": check}


@dataclass
class HttpConfig:
    """``[http]``: the local HTTP API, status page and metrics (docs/http.md); off the LAN by
    default (loopback only), every request but the page shell needs the API key."""

    enabled: bool = field(default=False, metadata=meta(
        "serve the HTTP API, status page (/) and metrics (/metrics)"))
    listen: str = field(default="127.0.0.1", metadata=meta(
        "listen address; keep it loopback unless a reverse proxy adds TLS", nonempty=True))
    port: int = field(default=8434, metadata=meta(
        "TCP port of the HTTP API; 0: ephemeral", low=0, high=65535))
    origins: list[str] = field(default_factory=list, metadata=meta(
        "extra browser origins allowed to call the API (the page's own is always allowed)"))
    metrics_public: bool = field(default=False, metadata=meta(
        "serve /metrics without the API key (to a scraper on this host)"))


@dataclass
class AgentConfig:
    """What ``p2psync run`` does; defaults suit a laptop or a Raspberry Pi on a home LAN."""

    listen: str = field(default="0.0.0.0", metadata=meta(
        'listen address ("::" for IPv6 only, "127.0.0.1" for local only)', nonempty=True))
    quic_port: int | None = field(default=DEFAULT_PORT, metadata=meta(
        "QUIC (UDP) port; 0: ephemeral, -1: QUIC off", low=0, high=65535, off=-1))
    tcp_port: int | None = field(default=DEFAULT_PORT, metadata=meta(
        "TCP port; 0: ephemeral, -1: TCP off", low=0, high=65535, off=-1))
    ws_port: int | None = field(default=None, metadata=meta(
        "WebSocket port for browsers and apps (ws://host:port/p2psync, files under /app/ from "
        "[transport] ws_static_dir); 0: ephemeral, -1: off", low=0, high=65535, off=-1))
    mdns: bool = field(default=True, metadata=meta(
        "advertise and browse _p2psync._udp.local."))
    interfaces: list[str] = field(default_factory=list, metadata=meta(
        "restrict mDNS to these interface names (empty: all usable)"))
    peers: list[str] = field(default_factory=list, metadata=meta(
        "static peers, always dialled: [quic://|tcp://]host[:port]", check=_peer_address))
    backup: str | None = field(default=None, metadata=meta(
        "the backup peer's address (optional)", check=_peer_address))
    backup_peer_id: str | None = field(default=None, metadata=meta(
        "expected peer id of the backup (optional, checked on connect)"))
    log_level: str = field(default="warning", metadata=meta(
        "how much the agent logs", choices=LOG_LEVELS))
    log_format: str = field(default="text", metadata=meta(
        "log lines on stderr: text (key=value) or json (one object per line)",
        choices=("text", "json")))
    reconnect_cap: float = field(default=30.0, metadata=meta(
        "longest wait in seconds between dials of one endpoint", low=0.1))
    durable: bool = field(default=True, metadata=meta(
        "fsync each commit (false: faster, loses the last ms on power cut)"))
    mdns_poll: float = field(default=3.0, metadata=meta(
        "interface poll interval in seconds for mDNS restarts", low=0.1))
    #: ``[engine]``: limits and timings of the sync engine of each connection
    engine: EngineConfig = field(default_factory=EngineConfig, metadata=meta(
        "limits and timings of the sync engine of each connection"))
    #: ``[transport]``: carrier tunables (the defaults fit the largest sync message)
    transport: TransportConfig = field(default_factory=sync_transport_config, metadata=meta(
        "carrier tunables shared by QUIC and TCP"))
    #: ``[http]``: the local HTTP API, status page and metrics (docs/http.md)
    http: HttpConfig = field(default_factory=HttpConfig, metadata=meta(
        "the local HTTP API, status page and metrics (docs/http.md)"))
    #: ``[limits]``: what one space and one author may make this device store (0: no limit)
    limits: MemberLimits = field(default_factory=MemberLimits, metadata=meta(
        "what one space, and one author in a space, may make this device store (0: no limit)"))
    #: ``[replicator]``: quotas, allowed owners, metrics of `p2psync backup run` (docs/backup.md)
    replicator: ReplicatorConfig = field(default_factory=ReplicatorConfig, metadata=meta(
        "what `p2psync backup run` accepts and stores (docs/backup.md)"))

    @property
    def head_sync_interval(self) -> float:
        """Seconds between head syncs of a shared space with a peer (``[engine]``)."""
        return self.engine.head_sync_interval

    def with_ports(self, port: int) -> AgentConfig:
        """A copy listening on ``port`` for both carriers that are on."""
        return dataclasses.replace(self, quic_port=None if self.quic_port is None else port,
                                   tcp_port=None if self.tcp_port is None else port)


#: bounds for fields of lower-layer classes (which cannot import :func:`meta`)
_BOUNDS: dict[tuple[str, ...], dict[str, Any]] = {
    ("engine", "head_sync_interval"): {"low": 0.1},
    ("engine", "request_timeout"): {"low": 0.1},
    ("engine", "exchange_timeout"): {"low": 0.1},
    ("engine", "out_rate"): {"low": 0.001},
    ("engine", "in_rate"): {"low": 0.001},
    ("engine", "stranger_grace"): {"off": -1},  # -1 in the file: strangers are never dropped
    ("transport", "handshake_timeout"): {"low": 0.1},
    **{("limits", f.name): {"low": 0} for f in dataclasses.fields(MemberLimits)},
}

#: flat keys of older config files -> where they live now
LEGACY_KEYS = {"head_sync_interval": ("engine", "head_sync_interval")}
_CUSTOM = {"replicator"}  #: tables with a parser of their own


# --- the schema, derived from the dataclasses ---------------------------------------------------
@functools.cache
def _attribute_docs(cls: type) -> dict[str, str]:
    """``#:`` comments of a class's fields (the help of classes that carry no metadata)."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = src.splitlines()
    out: dict[str, str] = {}
    for node in ast.parse(src).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = lines[node.lineno - 1]
            _, hashcolon, after = line.partition("#:")
            doc = after.strip() if hashcolon else ""
            above = node.lineno - 2
            while not doc and above >= 0 and lines[above].strip().startswith("#:"):
                doc = lines[above].strip()[2:].strip() + (" " + doc if doc else "")
                above -= 1
            out[node.target.id] = doc
    return out


@dataclass(frozen=True)
class Key:
    """One config key: where it is, its type, default and help."""

    path: tuple[str, ...]
    type: Any
    default: Any
    help: str
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return ".".join(self.path)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_table(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def keys(cls: type = AgentConfig, prefix: tuple[str, ...] = ()) -> Iterator[Key]:
    """Every key of ``config.toml`` (tables recursively), in declaration order."""
    default = cls()
    docs = _attribute_docs(cls)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.compare:  # runtime hooks (callables such as a policy), not settings
            continue
        tp = hints[f.name]
        # classes of lower layers carry no config metadata: help from their `#:` comments,
        # numbers >= 0 unless a bound below says more
        md = {**meta(docs.get(f.name, ""), low=0), **f.metadata,
              **_BOUNDS.get((*prefix, f.name), {})}
        yield Key((*prefix, f.name), tp, getattr(default, f.name), md["help"] or "", md)


def describe(cfg: AgentConfig | None = None) -> str:
    """Every key with its type, default (or ``cfg``'s value) and help, tables last."""
    out: list[str] = []

    def walk(obj: Any, prefix: tuple[str, ...]) -> None:
        tables = []
        for k in keys(type(obj), prefix):
            value = getattr(obj, k.path[-1])
            if _is_table(k.type):
                tables.append((k, value))
                continue
            shown = _to_toml(value, k)
            text = "(unset)" if shown is None else _toml(shown)
            out.append(f"{k.name} = {text}  ({_type_name(k.type)}) {k.help}".rstrip())
        for k, value in tables:
            out.append(f"[{k.name}]  {k.help}".rstrip())
            if k.path[-1] not in _CUSTOM:
                walk(value, k.path)

    walk(cfg or AgentConfig(), ())
    return "\n".join(out)


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


# --- parsing ------------------------------------------------------------------------------------
def _bad(key: Key, what: str, value: Any) -> ConfigError:
    return ConfigError(f"config: {key.name} must be {what}, not {value!r}")


def _convert(key: Key, value: Any, current: Any = None) -> Any:
    """A TOML value as the field's Python value (ConfigError naming the key if it is not);
    a table is merged onto ``current``, the value it replaces (keys it omits keep theirs)."""
    tp, md = key.type, key.meta
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    if optional and md.get("off") is not None and value == md["off"] \
            and not isinstance(value, bool):
        return None
    origin = typing.get_origin(tp)
    low, high = md.get("low"), md.get("high")
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(key, "true or false", value)
        out: Any = value
    elif tp is int or tp is float:
        ok = isinstance(value, int) if tp is int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            raise _bad(key, "an integer" if tp is int else "a number", value)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"within {low}..{high}" if high is not None else f">= {low}"
            extra = f" ({md['off']}: off)" if md.get("off") is not None else ""
            raise _bad(key, f"a number {bounds}{extra}", value)
        out = tp(value)
    elif tp is str:
        if not isinstance(value, str) or (md.get("nonempty") and not value):
            raise _bad(key, "a non-empty string" if md.get("nonempty") else "a string", value)
        if md.get("choices") and value not in md["choices"]:
            raise _bad(key, "one of " + ", ".join(md["choices"]), value)
        out = value
    elif origin in (list, tuple) and typing.get_args(tp)[0] is str:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(key, "a list of strings", value)
        out = list(value) if origin is list else tuple(value)
    elif _is_table(tp):
        out = _parse_table(value, key.path, current if current is not None else tp())
    else:  # pragma: no cover - a field type this parser does not know yet
        raise ConfigError(f"config: {key.name} has a type config.toml cannot hold ({tp})")
    check = md.get("check")
    for item in (out if isinstance(out, list) else [out]):
        reason = check(item) if check is not None and isinstance(item, str) else None
        if reason:
            raise ConfigError(f"config: {key.name}: {reason}")
    return out


def _parse_table(data: Any, path: tuple[str, ...], base: Any) -> Any:
    cls = type(base)
    where = ".".join(path)
    if not isinstance(data, dict):
        raise ConfigError(f"config: {where} must be a table ([{where}])")
    ks = {k.path[-1]: k for k in keys(cls, path)}
    unknown = sorted(set(data) - set(ks))
    if unknown:
        raise ConfigError(f"config: {where}: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(ks)})")
    values = {name: _convert(ks[name], v, getattr(base, name)) for name, v in data.items()}
    try:
        return dataclasses.replace(base, **values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config: {where}: {exc}") from None


def parse_config(data: dict[str, Any]) -> AgentConfig:
    """Validate a decoded TOML table into an :class:`AgentConfig` (ConfigError on any fault)."""
    data = dict(data)
    top = {k.path[-1]: k for k in keys()}
    known = [*top, "port", *LEGACY_KEYS]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"config: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    if "port" in data:  # legacy: one port number for both carriers
        port = data.pop("port")
        for name in ("quic_port", "tcp_port"):
            data.setdefault(name, port)
    for old, (table, name) in LEGACY_KEYS.items():
        if old in data:
            sub = data.get(table, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"config: {table} must be a table ([{table}])")
            if name in sub:
                raise ConfigError(f"config: {old} and {table}.{name} both set: keep one "
                                  f"(the flat key is the old spelling)")
            data[table] = {**sub, name: data.pop(old)}
    values: dict[str, Any] = {}
    base = AgentConfig()
    for name, value in data.items():
        if name in _CUSTOM:
            try:
                values[name] = parse_replicator(value)
            except P2PSyncError as exc:
                raise ConfigError(str(exc)) from None
        else:
            values[name] = _convert(top[name], value, getattr(base, name))
    cfg = dataclasses.replace(base, **values)
    if cfg.quic_port is None and cfg.tcp_port is None:
        raise ConfigError("config: both QUIC and TCP are off; the agent could not sync")
    return cfg


def load_config(path: Path) -> AgentConfig:
    """Read and validate ``path``; a missing file means the defaults."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return AgentConfig()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path} is unreadable: {exc}") from exc
    return parse_config(data)


# --- rendering ----------------------------------------------------------------------------------
def _toml(value: Any) -> str:
    """A TOML literal for a bool, number, string or list of strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text.replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def _to_toml(value: Any, key: Key) -> Any:
    if value is None and key.meta.get("off") is not None:
        return key.meta["off"]
    return value


def _render_table(obj: Any, path: tuple[str, ...], out: list[str]) -> None:
    tables: list[Key] = []
    rows: list[str] = []
    for k in keys(type(obj), path):
        value = getattr(obj, k.path[-1])
        if _is_table(k.type):
            tables.append(k)
            continue
        value = _to_toml(value, k)
        if value is None:
            continue  # unset optional (backup, seed…): absent from the file
        if k.help:
            rows.append(f"# {k.help}")
        rows.append(f"{k.path[-1]} = {_toml(value)}")
    if path:
        out.append("")
        out.append(f"[{'.'.join(path)}]")
    out.extend(rows)
    for k in tables:
        sub = getattr(obj, k.path[-1])
        if k.path[-1] in _CUSTOM:
            _render_replicator(sub, out)
        else:
            _render_table(sub, k.path, out)


def _render_replicator(rc: ReplicatorConfig, out: list[str]) -> None:
    q = rc.quotas
    out += ["", "[replicator]",
            f"space_bytes = {q.space_bytes}", f"space_changes = {q.space_changes}",
            f"account_bytes = {q.account_bytes}", f"account_changes = {q.account_changes}",
            f"accounts = {_toml(sorted(account_id(a) for a in rc.accounts))}",
            f"metrics_port = {rc.metrics_port}", f"metrics_listen = {_toml(rc.metrics_listen)}"]


def render_config(cfg: AgentConfig) -> str:
    """``cfg`` as TOML, every section and key with its help as a comment; parses back equal."""
    out: list[str] = []
    _render_table(cfg, (), out)
    return "\n".join(out) + "\n"
