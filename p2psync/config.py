"""The agent's configuration: ``<home>/config.toml`` parsed into a typed, validated dataclass.

Sans-IO apart from :func:`load_config` (which reads the file): :func:`parse_config` takes the
decoded TOML table, so every rule is testable without files. Unknown keys are an error (a typo
in a config file must not be silently ignored). Example::

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
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psync.backup.config import ReplicatorConfig, parse_replicator
from p2psync.discovery.peers import BadPeerAddress, parse_endpoints
from p2psync.errors import P2PSyncError

DEFAULT_PORT = 4433
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(P2PSyncError):
    """``config.toml`` is unreadable or holds a bad value (the message names the key)."""


@dataclass
class AgentConfig:
    """What ``p2psync run`` does; defaults suit a laptop or a Raspberry Pi on a home LAN."""

    listen: str = "0.0.0.0"
    quic_port: int | None = DEFAULT_PORT  #: None: QUIC off; 0: ephemeral
    tcp_port: int | None = DEFAULT_PORT  #: None: TCP off; 0: ephemeral
    mdns: bool = True
    interfaces: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    backup: str | None = None
    backup_peer_id: str | None = None
    log_level: str = "warning"
    #: seconds between head syncs of a shared space with a peer (push makes this a safety net)
    head_sync_interval: float = 30.0
    reconnect_cap: float = 30.0  #: longest wait between dials of one endpoint
    durable: bool = True  #: fsync each commit (False: faster, loses the last ms on power cut)
    mdns_poll: float = 3.0  #: interface poll interval for mDNS restarts
    #: ``[replicator]``: quotas, allowed owners, metrics of `p2psync backup run` (docs/backup.md)
    replicator: ReplicatorConfig = field(default_factory=ReplicatorConfig)

    def with_ports(self, port: int) -> AgentConfig:
        """A copy listening on ``port`` for both carriers that are on."""
        from dataclasses import replace

        return replace(self, quic_port=None if self.quic_port is None else port,
                       tcp_port=None if self.tcp_port is None else port)


_KEYS = {"listen", "port", "quic_port", "tcp_port", "mdns", "interfaces", "peers", "backup",
         "backup_peer_id", "log_level", "head_sync_interval", "reconnect_cap", "durable",
         "mdns_poll", "replicator"}


def _port(data: dict[str, Any], key: str, default: int | None) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= 65535:
        raise ConfigError(f"config: {key} must be a port 0-65535 (0: any, -1: off), "
                          f"not {value!r}")
    return None if value == -1 else value


def _str_list(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config: {key} must be a list of strings")
    return list(value)


def _number(data: dict[str, Any], key: str, default: float, low: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise ConfigError(f"config: {key} must be a number >= {low}, not {value!r}")
    return float(value)


def parse_config(data: dict[str, Any]) -> AgentConfig:
    """Validate a decoded TOML table into an :class:`AgentConfig` (ConfigError on any fault)."""
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"config: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(_KEYS))})")
    base = _port(data, "port", DEFAULT_PORT)
    cfg = AgentConfig(quic_port=_port(data, "quic_port", base),
                      tcp_port=_port(data, "tcp_port", base))
    if cfg.quic_port is None and cfg.tcp_port is None:
        raise ConfigError("config: both QUIC and TCP are off; the agent could not sync")
    listen = data.get("listen", cfg.listen)
    if not isinstance(listen, str) or not listen:
        raise ConfigError("config: listen must be an address such as \"0.0.0.0\"")
    cfg.listen = listen
    for flag in ("mdns", "durable"):
        value = data.get(flag, getattr(cfg, flag))
        if not isinstance(value, bool):
            raise ConfigError(f"config: {flag} must be true or false")
        setattr(cfg, flag, value)
    cfg.interfaces = _str_list(data, "interfaces")
    cfg.peers = _str_list(data, "peers")
    for text in cfg.peers:
        try:
            parse_endpoints(text, DEFAULT_PORT)
        except BadPeerAddress as exc:
            raise ConfigError(f"config: peers: {exc}") from None
    backup = data.get("backup")
    if backup is not None:
        if not isinstance(backup, str):
            raise ConfigError("config: backup must be an address string")
        try:
            parse_endpoints(backup, DEFAULT_PORT)
        except BadPeerAddress as exc:
            raise ConfigError(f"config: backup: {exc}") from None
        cfg.backup = backup
    bpid = data.get("backup_peer_id")
    if bpid is not None and not isinstance(bpid, str):
        raise ConfigError("config: backup_peer_id must be a peer id string")
    cfg.backup_peer_id = bpid
    level = data.get("log_level", cfg.log_level)
    if level not in LOG_LEVELS:
        raise ConfigError(f"config: log_level must be one of {', '.join(LOG_LEVELS)}")
    cfg.log_level = str(level)
    cfg.head_sync_interval = _number(data, "head_sync_interval", cfg.head_sync_interval, 0.1)
    cfg.reconnect_cap = _number(data, "reconnect_cap", cfg.reconnect_cap, 0.1)
    cfg.mdns_poll = _number(data, "mdns_poll", cfg.mdns_poll, 0.1)
    try:
        cfg.replicator = parse_replicator(data.get("replicator"))
    except P2PSyncError as exc:
        raise ConfigError(str(exc)) from None
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


def render_config(cfg: AgentConfig) -> str:
    """``cfg`` as TOML (what tests and the demo write into a home)."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"listen = {q(cfg.listen)}",
             f"quic_port = {-1 if cfg.quic_port is None else cfg.quic_port}",
             f"tcp_port = {-1 if cfg.tcp_port is None else cfg.tcp_port}",
             f"mdns = {str(cfg.mdns).lower()}",
             f"interfaces = [{', '.join(q(i) for i in cfg.interfaces)}]",
             f"peers = [{', '.join(q(p) for p in cfg.peers)}]",
             f"log_level = {q(cfg.log_level)}",
             f"head_sync_interval = {cfg.head_sync_interval}",
             f"reconnect_cap = {cfg.reconnect_cap}",
             f"durable = {str(cfg.durable).lower()}",
             f"mdns_poll = {cfg.mdns_poll}"]
    if cfg.backup:
        lines.append(f"backup = {q(cfg.backup)}")
    if cfg.backup_peer_id:
        lines.append(f"backup_peer_id = {q(cfg.backup_peer_id)}")
    return "\n".join(lines) + "\n"
