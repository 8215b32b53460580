"""One backup identity for every process of a backup cluster (issue 19, docs/backup-cluster.md).

Every ``p2psync backup run`` sharing one PostgreSQL database must be the same backup: the same
account (the spaces' ACLs name it as replicator) and the same device key (receipts from any
process verify against it). Decision: **the database carries the identity**, as the
keystore file exactly as ``p2psync init`` writes it — encrypted under the keystore
passphrase (argon2id + XChaCha20-Poly1305, :mod:`p2psync.crypto.keystore`):

* ``p2psync backup init --store URL`` (first process) makes the identity, or takes the one in
  ``--home``, and *claims* the database with it (table ``p2psync_identity``, one row, first
  claim wins);
* ``p2psync backup init --join --store URL`` (every other process, on any host) copies the
  encrypted keystore out of the database into its new home and checks it opens with the
  passphrase (``P2PSYNC_PASSPHRASE``, the same secret every unit already needs);
* ``backup run`` refuses to serve a database claimed by another identity (two different
  backups on one database would mix their spaces' data under one quota and one NOTIFY
  channel), before any peer is served.

Why not a shared key file: operators would have to copy a secret file between hosts over
some channel; the database is already the one thing every process reaches, and it only ever
sees the keystore encrypted. The price: whoever reads the database can try passphrases
offline against the argon2id cost, so an unprotected keystore (empty passphrase) is refused —
it would put the backup's private keys in the database in clear.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from p2psync.crypto.ids import peer_id
from p2psync.crypto.keystore import Keystore, read_keystore
from p2psync.errors import ClusterIdentityError, WrongPassphrase
from p2psync.home import PRIVATE_DIR, Home


class IdentityStore(Protocol):
    """The part of a store that carries a cluster's identity (:class:`PgStore`)."""

    def publish_identity(self, device: bytes, account: bytes, keystore: bytes) -> bytes: ...

    def published_identity(self) -> tuple[bytes, bytes] | None: ...

    def close(self) -> None: ...


def open_identity_store(url: str) -> IdentityStore:
    from p2psync.replica.storage import open_store

    store = open_store(url)
    if not hasattr(store, "publish_identity"):
        store.close()
        raise ClusterIdentityError(
            f"{url.split(':', 1)[0]}: a backup cluster shares one PostgreSQL database "
            "(store = \"postgresql://…\"); a SQLite backup is one process: use `p2psync init`")
    return store  # type: ignore[return-value]


def check_identity(store: object, device: bytes) -> None:
    """Refuse to serve a database another backup identity claimed (no claim: nothing to
    check — a cluster set up by copying homes)."""
    published = getattr(store, "published_identity", None)
    if published is None:
        return
    row = published()
    if row is not None and row[0] != device:
        raise ClusterIdentityError(
            f"this database belongs to backup {peer_id(row[0])}, not to this home's "
            f"{peer_id(device)}: a process joins a backup with `p2psync backup init --join "
            "--store URL --home NEW_HOME` (two backups cannot share one database)")


def _config_text(url: str, port: int | None) -> str:
    ports = f"quic_port = {port}\ntcp_port = {port}\n" if port is not None else ""
    return f"{ports}[replicator]\nstore = {json.dumps(url)}\n"


def _write_config(home: Home, url: str, port: int | None) -> bool:
    """A ``config.toml`` naming the store, unless the home already has one (kept)."""
    if home.config_path.exists():
        return False
    home.config_path.write_text(_config_text(url, port))
    home.config_path.chmod(0o600)
    return True


def init_backup(home: Home, url: str, secret: str, *, join: bool,
                new_account: Any = None, port: int | None = None) -> dict[str, Any]:
    """``backup init`` (see the module docstring); ``new_account()`` makes a fresh account
    and returns ``(AccountKey, phrase)`` when the home has none. Returns what the CLI
    prints."""
    if not secret:
        raise ClusterIdentityError(
            "the backup's keystore goes into the shared database, so it must be protected by "
            "a passphrase: set P2PSYNC_PASSPHRASE (every process of the cluster uses it)")
    store = open_identity_store(url)
    try:
        if join:
            return _join(home, store, url, secret, port)
        return _claim(home, store, url, secret, new_account, port)
    finally:
        store.close()


def _claim(home: Home, store: IdentityStore, url: str, secret: str, new_account: Any,
           port: int | None) -> dict[str, Any]:
    phrase = None
    published = store.published_identity()
    if home.exists():
        keys = home.open_keys(secret)
        if not keys.protected:  # pragma: no cover - secret is non-empty here
            raise ClusterIdentityError("the keystore has no passphrase")
    else:
        if published is not None:
            raise ClusterIdentityError(
                f"this database already belongs to backup {peer_id(published[0])}: add this "
                "process to it with `p2psync backup init --join --store URL`")
        account, phrase = new_account()
        keys = home.create(account, secret)
    owner = store.publish_identity(keys.device.public, keys.account.public,
                                   home.keystore_path.read_bytes())
    if owner != keys.device.public:
        raise ClusterIdentityError(
            f"this database already belongs to backup {peer_id(owner)}, not to "
            f"{keys.device.id}: join it with `p2psync backup init --join --store URL`")
    wrote = _write_config(home, url, port)
    return _report(home, keys, joined=False, phrase=phrase, config_written=wrote)


def _join(home: Home, store: IdentityStore, url: str, secret: str,
          port: int | None) -> dict[str, Any]:
    if home.exists():
        raise ClusterIdentityError(f"{home.path} already holds an identity: join with a new "
                                   "--home (the joined process takes the cluster's identity)")
    published = store.published_identity()
    if published is None:
        raise ClusterIdentityError(
            "no backup identity in this database: run `p2psync backup init --store URL` for "
            "the first process (or it was set up by copying homes: copy one here)")
    home.path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    home.secure()
    tmp = home.path / "keystore.joining"
    tmp.write_bytes(published[1])
    tmp.chmod(0o600)
    try:
        keys = read_keystore(tmp, secret)
    except WrongPassphrase as exc:
        tmp.unlink()
        raise ClusterIdentityError(
            "the cluster's keystore does not open with this passphrase: use the first "
            "process's P2PSYNC_PASSPHRASE") from exc
    except BaseException:
        tmp.unlink()
        raise
    if keys.device.public != published[0]:
        tmp.unlink()
        raise ClusterIdentityError("the database's keystore does not hold the device key it "
                                   "names: the identity row was tampered with")
    tmp.replace(home.keystore_path)
    wrote = _write_config(home, url, port)
    return _report(home, keys, joined=True, phrase=None, config_written=wrote)


def _report(home: Home, keys: Keystore, *, joined: bool, phrase: str | None,
            config_written: bool) -> dict[str, Any]:
    return {"account_id": keys.account.id, "peer_id": keys.device.id, "home": str(home.path),
            "joined": joined, "phrase": phrase, "config_written": config_written,
            "config": str(Path(home.config_path))}
