"""The ``[replicator]`` table of ``config.toml``: what a backup accepts and how much it stores.

Example::

    [replicator]
    space_bytes = 1073741824      # per space: bytes of raw changes (0 = unlimited)
    space_changes = 1000000       # per space: number of changes (0 = unlimited)
    account_bytes = 10737418240   # per owner account, summed over its spaces
    account_changes = 0
    accounts = []                 # owner account ids whose spaces it accepts (empty: any)
    metrics_port = 9464           # Prometheus text on http://metrics_listen:port/metrics; 0 off
    metrics_listen = "127.0.0.1"
    store = ""                    # "" = the home's SQLite file; or "postgresql://user@host/db"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from p2psync.crypto.ids import ACCOUNT, decode_key
from p2psync.errors import P2PSyncError

_KEYS = {"space_bytes", "space_changes", "account_bytes", "account_changes", "accounts",
         "metrics_port", "metrics_listen", "store"}


class ReplicatorConfigError(P2PSyncError):
    """A bad value in the ``[replicator]`` table (the message names the key)."""


@dataclass(frozen=True)
class Quotas:
    """Limits on what one space / one owner account may store here (0 = unlimited)."""

    space_bytes: int = 0
    space_changes: int = 0
    account_bytes: int = 0
    account_changes: int = 0


@dataclass(frozen=True)
class ReplicatorConfig:
    """Everything the backup mode adds to the agent config."""

    quotas: Quotas = field(default_factory=Quotas)
    accounts: frozenset[bytes] = frozenset()  #: allowed space owners (empty: anyone)
    metrics_port: int = 0
    metrics_listen: str = "127.0.0.1"
    #: where the backup keeps what it stores: "" = the home's SQLite file, or any URL
    #: :func:`~p2psync.replica.storage.open_store` opens (``postgresql://…``: several
    #: ``backup run`` processes may share one database, docs/backup-cluster.md)
    store: str = ""


def parse_replicator(data: Any) -> ReplicatorConfig:
    """Validate the decoded ``[replicator]`` table (ReplicatorConfigError on any fault)."""
    if data is None:
        return ReplicatorConfig()
    if not isinstance(data, dict):
        raise ReplicatorConfigError("config: replicator must be a table ([replicator])")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ReplicatorConfigError(f"config: replicator: unknown key(s) {', '.join(unknown)} "
                                    f"(known: {', '.join(sorted(_KEYS))})")

    def count(key: str) -> int:
        v = data.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ReplicatorConfigError(f"config: replicator.{key} must be an integer >= 0 "
                                        f"(0: unlimited), not {v!r}")
        return v

    quotas = Quotas(count("space_bytes"), count("space_changes"), count("account_bytes"),
                    count("account_changes"))
    accounts_raw = data.get("accounts", [])
    if not isinstance(accounts_raw, list) or not all(isinstance(a, str) for a in accounts_raw):
        raise ReplicatorConfigError("config: replicator.accounts must be a list of account ids")
    try:
        accounts = frozenset(decode_key(ACCOUNT, a) for a in accounts_raw)
    except P2PSyncError as exc:
        raise ReplicatorConfigError(f"config: replicator.accounts: {exc}") from None
    port = data.get("metrics_port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ReplicatorConfigError("config: replicator.metrics_port must be 0-65535 (0: off)")
    listen = data.get("metrics_listen", "127.0.0.1")
    if not isinstance(listen, str) or not listen:
        raise ReplicatorConfigError("config: replicator.metrics_listen must be an address")
    store = data.get("store", "")
    if not isinstance(store, str):
        raise ReplicatorConfigError("config: replicator.store must be a string "
                                    '("": the home\'s SQLite file, or "postgresql://…")')
    return ReplicatorConfig(quotas, accounts, port, listen, store)
