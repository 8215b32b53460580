"""The PostgreSQL store: the same bytes as the SQLite store, in a PostgreSQL database.

:class:`PgStore` implements :class:`~p2psync.replica.storage.ReplicaStore` for the backup tier
(issue 19): ``open_store("postgresql://user@host/db")`` or ``store = "postgresql://…"`` in a
backup's config. SQLite stays the embedded default of devices. Only this module knows
PostgreSQL (psycopg 3, imported on first use so devices never load it).

Decisions (docs/backup-cluster.md):

* **Same tables, same meaning** as ``replica/store.py``: raw bytes exactly as received; a
  tree's new changes and its heads are written in one transaction; storage order is an
  identity column (``seq``), topological because a change is only written after its parents.
* **Idempotent under concurrency**: every insert is ``ON CONFLICT DO NOTHING`` against the
  natural key (``(tree_id, change_id)``, ``(space_id, record_id)``), so two processes pushing
  the same change store it once — the database's constraints, not a process-local lock.
* **Heads are merged, not replaced**, on write: the stored heads become the union of the
  stored and the given heads minus every id that is now a parent (``parents`` table). Two
  processes writing different branches of one tree therefore both keep their heads, which a
  last-writer-wins ``DELETE``/``INSERT`` would lose.
* **Schema versioned** in ``p2psync_meta`` like SQLite's ``user_version``; a newer schema is
  refused (:class:`~p2psync.errors.SchemaTooNew`). Tables live in the connection's
  ``search_path`` schema, so one database can hold several stores (tests use that).
* **Durability**: PostgreSQL's commit is durable with ``synchronous_commit=on`` (the server
  default); ``durable=False`` sets it ``off`` for this session (a crash may lose the last
  commits, never corrupt).
* **Lost connections** (server restart, terminated backend): the next operation re-opens
  the connection and is repeated once — safe because every write is idempotent. The LISTEN
  connection of :meth:`PgStore.watch` reconnects and catches up from a watermark.
* **Deletion**: ``DELETE`` leaves dead tuples until vacuum; :meth:`delete_trees` runs
  ``VACUUM`` on the affected tables afterwards so the rows' space is reclaimed promptly.
  PostgreSQL does not zero freed space the way SQLite's ``secure_delete`` does — said in the
  threat model: the backup stores ciphertext only, so this bounds metadata exposure, not
  plaintext.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from p2psync.errors import SchemaTooNew, StoreError
from p2psync.replica.change import Change
from p2psync.replica.storage import DerivedStoreOps, ReplicaStore, register_store

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS p2psync_meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS spaces (
    space_id TEXT PRIMARY KEY,
    header   BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS acl_records (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    space_id  TEXT NOT NULL,
    record_id BYTEA NOT NULL,
    raw       BYTEA NOT NULL,
    UNIQUE (space_id, record_id)
);
CREATE TABLE IF NOT EXISTS trees (
    tree_id  BYTEA PRIMARY KEY,
    space_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trees_by_space ON trees (space_id);
CREATE TABLE IF NOT EXISTS changes (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tree_id   BYTEA NOT NULL,
    change_id BYTEA NOT NULL,
    raw       BYTEA NOT NULL,
    UNIQUE (tree_id, change_id)
);
CREATE TABLE IF NOT EXISTS parents (
    tree_id   BYTEA NOT NULL,
    parent_id BYTEA NOT NULL,
    PRIMARY KEY (tree_id, parent_id)
);
CREATE TABLE IF NOT EXISTS heads (
    tree_id BYTEA NOT NULL,
    head    BYTEA NOT NULL,
    PRIMARY KEY (tree_id, head)
);
CREATE TABLE IF NOT EXISTS chunks (
    address  BYTEA PRIMARY KEY,
    space_id TEXT NOT NULL,
    file_id  BYTEA NOT NULL,
    data     BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_space ON chunks (space_id);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (file_id);
CREATE TABLE IF NOT EXISTS p2psync_identity (
    one      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    device   BYTEA NOT NULL,
    account  BYTEA NOT NULL,
    keystore BYTEA NOT NULL
);
"""

#: ``application_name`` of :meth:`PgStore.watch`'s LISTEN connection (pg_stat_activity)
WATCH_APP = "p2psync watch"

#: serialises schema creation between processes opening a fresh database at once
_SCHEMA_LOCK = 7337_0001


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StoreError("the PostgreSQL store needs psycopg: pip install 'p2psync[postgresql]'"
                         ) from exc
    return psycopg


def _redact(url: str) -> str:
    """The URL without a password (error messages and labels end up in logs)."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, cred = head.partition("://")
    user = cred.split(":", 1)[0]
    return f"{scheme}{sep}{user}@{tail}"


class PgStore(DerivedStoreOps):
    """A store in one PostgreSQL database (schema: the connection's ``search_path``)."""

    def __init__(self, url: str, *, durable: bool = True, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.label = f"store {_redact(url)}"
        self._closed = False
        self._durable = durable
        self._connect_timeout = max(1, int(connect_timeout))
        #: connections re-opened after a loss (server restart, terminated backend)
        self.reconnects = 0
        pg = _psycopg()
        self._errors: type[Exception] = pg.Error
        try:
            self._db: psycopg.Connection[Any] = pg.connect(
                url, autocommit=True, connect_timeout=self._connect_timeout)
        except pg.Error as exc:
            raise StoreError(f"{self.label}: cannot connect ({exc}); is the server running "
                             "and the URL right?") from exc
        self._pid = self._db.info.backend_pid  #: our backend: its notifications are ours
        try:
            self._setup(durable)
        except BaseException:
            self._db.close()
            raise

    def _setup(self, durable: bool) -> None:
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            row = db.execute("SELECT value FROM p2psync_meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO p2psync_meta VALUES ('schema', %s)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{self.label} has schema version {row[0]}, this p2psync understands up to "
                    f"{SCHEMA_VERSION}: upgrade p2psync to open it (the database is untouched)")
        if not durable:
            self._query("SET synchronous_commit = off", fetch=False)
        #: NOTIFY channel of this store's schema (several stores may share one database)
        self.channel = "p2psync_" + str(self._query("SELECT current_schema()")[0][0])
        row = self._query("SELECT (SELECT coalesce(max(seq), 0) FROM changes), "
                          "(SELECT coalesce(max(seq), 0) FROM acl_records)")[0]
        #: what was written when this store opened: :meth:`watch` starts from here, so what
        #: others write before its LISTEN is up is caught up on too
        self.opened_at: tuple[int, int] = (int(row[0]), int(row[1]))

    # --- plumbing ---------------------------------------------------------------------------
    def _error(self, exc: Exception) -> StoreError:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "disk full" in msg.lower() or "no space left" in msg.lower():
            return StoreError(f"{self.label}: the database server's disk is full; free some "
                              f"space and retry: {msg}")
        if self._db.closed:
            return StoreError(f"{self.label} is closed: {msg}")
        return StoreError(f"{self.label}: {msg}")

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction, rolled back on any error (also a non-database one midway)."""
        if self._db.closed:
            raise StoreError(f"{self.label} is closed")
        try:
            with self._db.transaction():
                yield self._db
        except self._errors as exc:
            raise self._error(exc) from exc

    def _reconnect(self, exc: Exception) -> bool:
        """After a lost connection (the server restarted, the backend was terminated, the
        network dropped), open a new one; False if the store was closed on purpose or the
        server is still unreachable (the error then stands)."""
        if self._closed or not self._db.broken:
            return False
        log.warning("%s: connection lost (%s); reconnecting", self.label,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
        try:
            db = _psycopg().connect(self.url, autocommit=True,
                                    connect_timeout=self._connect_timeout)
        except self._errors:
            return False
        if not self._durable:
            db.execute("SET synchronous_commit = off")
        self._db = db
        self._pid = db.info.backend_pid
        self.reconnects += 1
        return True

    def _write(self, op: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """``op`` in one transaction; retried once on a new connection when the old one was
        lost. Safe because every write here is idempotent (``ON CONFLICT DO NOTHING``, heads
        merged): a commit whose answer was lost is harmless to repeat."""
        for attempt in (0, 1):
            try:
                with self._tx() as db:
                    return op(db)
            except StoreError as exc:
                if attempt or not self._reconnect(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _query(self, sql: str, args: Sequence[object] = (), *,
               fetch: bool = True) -> list[tuple[Any, ...]]:
        for attempt in (0, 1):
            if self._db.closed and not self._db.broken:
                raise StoreError(f"{self.label} is closed")
            try:
                cur = self._db.execute(sql, args)
                return cur.fetchall() if fetch else []
            except self._errors as exc:
                if attempt or not self._reconnect(exc):
                    raise self._error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._closed = True
        self._db.close()

    def __enter__(self) -> PgStore:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- spaces -----------------------------------------------------------------------------
    def put_space(self, space_id: str, raw_header: bytes) -> None:
        self._write(lambda db: db.execute(
            "INSERT INTO spaces VALUES (%s, %s) ON CONFLICT DO NOTHING", (space_id, raw_header)))

    def get_space(self, space_id: str) -> bytes | None:
        rows = self._query("SELECT header FROM spaces WHERE space_id = %s", (space_id,))
        return bytes(rows[0][0]) if rows else None

    def list_spaces(self) -> list[str]:
        return [str(r[0]) for r in self._query("SELECT space_id FROM spaces ORDER BY space_id")]

    # --- ACL records ------------------------------------------------------------------------
    def add_acl_records(self, space_id: str, records: Sequence[tuple[bytes, bytes]]) -> int:
        def op(db: psycopg.Connection[Any]) -> int:
            new = 0
            for record_id, raw in records:
                cur = db.execute("INSERT INTO acl_records (space_id, record_id, raw) "
                                 "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                                 (space_id, record_id, raw))
                new += max(cur.rowcount, 0)
            if new:  # the other processes take the new records in (watch())
                db.execute("SELECT pg_notify(%s, %s)", (self.channel, f"{space_id} "))
            return new
        return self._write(op)

    def list_acl_records(self, space_id: str) -> list[tuple[bytes, bytes]]:
        rows = self._query("SELECT record_id, raw FROM acl_records WHERE space_id = %s "
                           "ORDER BY seq", (space_id,))
        return [(bytes(a), bytes(b)) for a, b in rows]

    # --- trees ------------------------------------------------------------------------------
    def save_changes(self, space_id: str, tree_id: bytes, changes: Sequence[Change],
                     heads: Sequence[bytes]) -> None:
        """Append changes and merge the heads (see the module docstring), one transaction."""
        def op(db: psycopg.Connection[Any]) -> None:
            db.execute("INSERT INTO trees VALUES (%s, %s) ON CONFLICT DO NOTHING",
                       (tree_id, space_id))
            rows = [(tree_id, c.id, c.raw) for c in changes]
            # the contract only promises ``id`` and ``raw``; parsed changes also carry parents
            parents = [(tree_id, p) for c in changes for p in getattr(c, "prev_ids", ())]
            with db.cursor() as cur:
                inserted = 0
                if rows:
                    cur.executemany("INSERT INTO changes (tree_id, change_id, raw) "
                                    "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", rows)
                    inserted = max(cur.rowcount, 0)
                if parents:
                    cur.executemany("INSERT INTO parents VALUES (%s, %s) "
                                    "ON CONFLICT DO NOTHING", parents)
                # the tree's row serialises head updates of one tree between processes
                cur.execute("SELECT 1 FROM trees WHERE tree_id = %s FOR UPDATE", (tree_id,))
                if heads:
                    cur.executemany("INSERT INTO heads VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                    [(tree_id, h) for h in heads])
                cur.execute("DELETE FROM heads h USING parents p WHERE h.tree_id = %s "
                            "AND p.tree_id = h.tree_id AND p.parent_id = h.head", (tree_id,))
                if inserted:  # delivered at commit to every process LISTENing (watch())
                    cur.execute("SELECT pg_notify(%s, %s)",
                                (self.channel, f"{space_id} {tree_id.hex()}"))
                if not changes:
                    # a bare head replacement (no new changes): the caller's heads are the truth
                    cur.execute("DELETE FROM heads WHERE tree_id = %s AND NOT (head = ANY(%s))",
                                (tree_id, list(heads)))
        self._write(op)

    def list_trees(self, space_id: str) -> list[bytes]:
        rows = self._query("SELECT tree_id FROM trees WHERE space_id = %s ORDER BY tree_id",
                           (space_id,))
        return [bytes(r[0]) for r in rows]

    def get_heads(self, tree_id: bytes) -> tuple[bytes, ...]:
        rows = self._query("SELECT head FROM heads WHERE tree_id = %s ORDER BY head",
                           (tree_id,))
        return tuple(bytes(r[0]) for r in rows)

    def has_change(self, tree_id: bytes, change_id: bytes) -> bool:
        return bool(self._query("SELECT 1 FROM changes WHERE tree_id = %s AND change_id = %s",
                                (tree_id, change_id)))

    def count_changes(self, tree_id: bytes | None = None) -> int:
        if tree_id is None:
            return int(self._query("SELECT count(*) FROM changes")[0][0])
        return int(self._query("SELECT count(*) FROM changes WHERE tree_id = %s",
                               (tree_id,))[0][0])

    def delete_trees(self, tree_ids: Sequence[bytes]) -> None:
        if not tree_ids:
            return
        ids = list(tree_ids)

        def op(db: psycopg.Connection[Any]) -> None:
            for table in ("changes", "parents", "heads", "trees"):
                db.execute(f"DELETE FROM {table} WHERE tree_id = ANY(%s)", (ids,))
            db.execute("DELETE FROM chunks WHERE file_id = ANY(%s)", (ids,))
        self._write(op)
        self._query("VACUUM changes", fetch=False)  # reclaim the dead rows now

    def forget_space(self, space_id: str) -> None:
        def op(db: psycopg.Connection[Any]) -> None:
            trees = [r[0] for r in db.execute("SELECT tree_id FROM trees WHERE space_id = %s",
                                              (space_id,)).fetchall()]
            for table in ("changes", "parents", "heads", "trees"):
                db.execute(f"DELETE FROM {table} WHERE tree_id = ANY(%s)", (trees,))
            db.execute("DELETE FROM acl_records WHERE space_id = %s", (space_id,))
            db.execute("DELETE FROM spaces WHERE space_id = %s", (space_id,))
            db.execute("DELETE FROM chunks WHERE space_id = %s", (space_id,))
        self._write(op)
        self._query("VACUUM changes", fetch=False)

    def space_usage(self) -> dict[str, tuple[int, int]]:
        rows = self._query("SELECT t.space_id, coalesce(sum(length(c.raw)), 0), count(c.seq) "
                           "FROM trees t JOIN changes c ON c.tree_id = t.tree_id "
                           "GROUP BY t.space_id")
        out = {str(a): (int(b), int(c)) for a, b, c in rows}
        for sid, size in self._query("SELECT space_id, sum(length(data)) FROM chunks "
                                     "GROUP BY space_id"):  # chunk bytes count too
            b, c = out.get(str(sid), (0, 0))
            out[str(sid)] = (b + int(size), c)
        return out

    def space_usage_of(self, space_id: str) -> tuple[int, int]:
        """``(bytes, changes)`` stored in one space (the backup cluster's quota totals), chunk
        bytes included as in :meth:`space_usage`."""
        row = self._query("SELECT coalesce(sum(length(c.raw)), 0), count(c.seq) FROM trees t "
                          "JOIN changes c ON c.tree_id = t.tree_id WHERE t.space_id = %s",
                          (space_id,))[0]
        chunk = self._query("SELECT coalesce(sum(length(data)), 0) FROM chunks "
                            "WHERE space_id = %s", (space_id,))[0]
        return int(row[0]) + int(chunk[0]), int(row[1])

    def raw_changes(self, tree_id: bytes) -> list[tuple[bytes, bytes]]:
        rows = self._query("SELECT change_id, raw FROM changes WHERE tree_id = %s ORDER BY seq",
                           (tree_id,))
        return [(bytes(a), bytes(b)) for a, b in rows]

    # --- encrypted file chunks ---------------------------------------------------------------
    def put_chunks(self, space_id: str, file_id: bytes,
                   chunks: Sequence[tuple[bytes, bytes]]) -> int:
        def op(db: psycopg.Connection[Any]) -> int:
            n = 0
            for addr, data in chunks:
                cur = db.execute("INSERT INTO chunks VALUES (%s, %s, %s, %s) "
                                 "ON CONFLICT DO NOTHING",
                                 (bytes(addr), space_id, bytes(file_id), bytes(data)))
                n += max(cur.rowcount, 0)
            return n
        return self._write(op)

    def get_chunk(self, address: bytes) -> bytes | None:
        rows = self._query("SELECT data FROM chunks WHERE address = %s", (bytes(address),))
        return bytes(rows[0][0]) if rows else None

    def has_chunks(self, addresses: Sequence[bytes]) -> set[bytes]:
        if not addresses:
            return set()
        rows = self._query("SELECT address FROM chunks WHERE address = ANY(%s)",
                           ([bytes(a) for a in addresses],))
        return {bytes(r[0]) for r in rows}

    def get_file_chunks(self, space_id: str, file_id: bytes,
                        addresses: Sequence[bytes]) -> dict[bytes, bytes]:
        if not addresses:
            return {}
        rows = self._query("SELECT address, data FROM chunks WHERE space_id = %s AND "
                           "file_id = %s AND address = ANY(%s)",
                           (space_id, bytes(file_id), [bytes(a) for a in addresses]))
        return {bytes(a): bytes(d) for a, d in rows}

    def list_chunks(self, space_id: str, file_id: bytes | None = None) -> list[bytes]:
        if file_id is None:
            rows = self._query("SELECT address FROM chunks WHERE space_id = %s "
                               "ORDER BY address", (space_id,))
        else:
            rows = self._query("SELECT address FROM chunks WHERE space_id = %s AND file_id = %s "
                               "ORDER BY address", (space_id, bytes(file_id)))
        return [bytes(r[0]) for r in rows]

    def delete_chunks(self, addresses: Sequence[bytes]) -> int:
        if not addresses:
            return 0
        addrs = [bytes(a) for a in addresses]
        return self._write(lambda db: max(db.execute(
            "DELETE FROM chunks WHERE address = ANY(%s)", (addrs,)).rowcount, 0))
    # --- several processes on one database (docs/backup-cluster.md) -------------------------
    def publish_identity(self, device: bytes, account: bytes, keystore: bytes) -> bytes:
        """Claim this database for the backup identity whose (passphrase-encrypted)
        ``keystore`` is given, unless one already did; returns the owning device key
        (:mod:`p2psync.backup.cluster`)."""
        def op(db: psycopg.Connection[Any]) -> bytes:
            db.execute("INSERT INTO p2psync_identity (device, account, keystore) "
                       "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (device, account, keystore))
            row = db.execute("SELECT device FROM p2psync_identity").fetchone()
            assert row is not None
            return bytes(row[0])
        return self._write(op)

    def published_identity(self) -> tuple[bytes, bytes] | None:
        """``(device key, encrypted keystore)`` of the backup owning this database, if any."""
        rows = self._query("SELECT device, keystore FROM p2psync_identity")
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    async def watch(self, on_change: Callable[[str, bytes | None], None], *,
                    tick: float = 30.0, retry: float = 1.0) -> None:
        """Call ``on_change(space_id, tree_id)`` whenever another connection commits changes
        of a tree in this store (``tree_id`` None: new ACL records of the space), by
        PostgreSQL LISTEN/NOTIFY on a connection of its own, until cancelled. Our own
        writes are skipped (the notifying backend's pid is ours).

        **A lost LISTEN connection loses notifications** (PostgreSQL keeps none for a
        session that is gone). So the watch reconnects (every ``retry`` seconds while the
        server is unreachable) and then *catches up*: every tree with a change, and every
        space with an ACL record, whose ``seq`` is above a watermark is reported, as if
        notified. The watermark is the highest ``seq`` read one ``tick`` earlier while
        listening: a write whose ``seq`` is below it was committed (and so notified to this
        connection) within a tick — write transactions are one batch, far shorter than a
        tick. The first connection catches up from :attr:`opened_at` (what others wrote
        between the store's opening and the LISTEN). Catching up also reports our own
        writes; refreshing those is a no-op."""
        pg = _psycopg()
        from psycopg import sql

        mark = self.opened_at  # (changes seq, acl seq): everything up to it is known
        while True:
            try:
                conn = await pg.AsyncConnection.connect(self.url, autocommit=True,
                                                        application_name=WATCH_APP)
            except pg.Error as exc:
                log.debug("%s: watch cannot connect (%s); retrying", self.label, exc)
                await asyncio.sleep(retry)
                continue
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                now = await self._marks(conn)
                missed = await self._since(conn, mark)
                if self.watch_connects or missed:
                    log.warning("%s: LISTEN connection %s; catching up on %d trees/ACLs "
                                "written meanwhile", self.label, "re-established"
                                if self.watch_connects else "up", len(missed))
                for space_id, tree_id in missed:
                    on_change(space_id, tree_id)
                self.watch_connects += 1
                while True:
                    async for n in conn.notifies(timeout=tick):
                        if n.pid == self._pid:
                            continue
                        space_id, _, tree_hex = n.payload.partition(" ")
                        on_change(space_id, bytes.fromhex(tree_hex) if tree_hex else None)
                    mark, now = now, await self._marks(conn)
                    self.watch_ticks += 1
            except pg.OperationalError as exc:
                log.warning("%s: LISTEN connection lost (%s); reconnecting", self.label,
                            str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            finally:
                await conn.close()

    #: LISTEN connections opened by :meth:`watch` (a reconnect makes it > 1)
    watch_connects = 0
    #: watermark advances of :meth:`watch`
    watch_ticks = 0

    @staticmethod
    async def _marks(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
        cur = await conn.execute("SELECT (SELECT coalesce(max(seq), 0) FROM changes), "
                                 "(SELECT coalesce(max(seq), 0) FROM acl_records)")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    @staticmethod
    async def _since(conn: psycopg.AsyncConnection[Any],
                     mark: tuple[int, int]) -> list[tuple[str, bytes | None]]:
        """What was written above ``mark``: ACL first (a change may name a new ACL head)."""
        acl = await (await conn.execute(
            "SELECT DISTINCT space_id FROM acl_records WHERE seq > %s", (mark[1],))).fetchall()
        trees = await (await conn.execute(
            "SELECT DISTINCT t.space_id, c.tree_id FROM changes c JOIN trees t "
            "ON t.tree_id = c.tree_id WHERE c.seq > %s", (mark[0],))).fetchall()
        return ([(str(r[0]), None) for r in acl]
                + [(str(r[0]), bytes(r[1])) for r in trees])


def _open(rest: str, durable: bool) -> ReplicaStore:
    return PgStore("postgresql://" + rest, durable=durable)


register_store("postgresql", _open)
register_store("postgres", _open)


def _conforms(s: PgStore) -> ReplicaStore:
    """Static check (mypy): PgStore implements the declared seam."""
    return s
