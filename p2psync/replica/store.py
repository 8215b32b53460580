"""The SQLite store: spaces, ACL records, tree changes and heads, on one device.

:class:`SqliteStore` implements :class:`~p2psync.replica.storage.ReplicaStore` (the declared
seam; open stores with :func:`~p2psync.replica.storage.open_store`). This is the only module
of the replica that knows about SQLite.

Decisions (see docs/replica.md):
* WAL journal, ``synchronous=FULL`` by default: a commit survives a process kill *and* a power
  cut, because we tell peers which heads we hold. Coalesced edits make commits rare enough
  (≤ 20/s while typing) that the fsync is affordable. ``durable=False`` gives NORMAL (survives
  a process kill, may lose the last commits on power loss) for bulk imports and benchmarks.
* Raw bytes are stored exactly as received; a tree's new changes and its new heads are written
  in one transaction, so a crash never leaves a half-applied change.
* Loading a tree recomputes every id (cheap; catches bit rot and tampering with the file) but
  skips signature and ACL checks unless asked: only verified changes are ever written here.
* ``PRAGMA user_version`` holds the schema version; a newer one is refused (:class:`SchemaTooNew`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from p2psync.errors import SchemaTooNew, StoreError
from p2psync.replica.acl_gate import AclGate
from p2psync.replica.change import Change
from p2psync.replica.storage import (
    DerivedStoreOps,
    ReplicaStore,
    load_trusted_tree,
    register_store,
)
from p2psync.replica.tree import ObjectTree

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE spaces (
    space_id TEXT PRIMARY KEY,
    header   BLOB NOT NULL
);
CREATE TABLE acl_records (
    seq       INTEGER PRIMARY KEY,
    space_id  TEXT NOT NULL,
    record_id BLOB NOT NULL,
    raw       BLOB NOT NULL,
    UNIQUE (space_id, record_id)
);
CREATE TABLE trees (
    tree_id  BLOB PRIMARY KEY,
    space_id TEXT NOT NULL
);
CREATE INDEX trees_by_space ON trees (space_id);
CREATE TABLE changes (
    seq       INTEGER PRIMARY KEY,
    tree_id   BLOB NOT NULL,
    change_id BLOB NOT NULL,
    raw       BLOB NOT NULL,
    UNIQUE (tree_id, change_id)
);
CREATE TABLE heads (
    tree_id BLOB NOT NULL,
    head    BLOB NOT NULL,
    PRIMARY KEY (tree_id, head)
) WITHOUT ROWID;
"""

#: file chunks (docs/files.md): created on open when missing, so older stores gain it in place
_CHUNKS_SCHEMA = """CREATE TABLE IF NOT EXISTS chunks (
    address  BLOB PRIMARY KEY,
    space_id TEXT NOT NULL,
    file_id  BLOB NOT NULL,
    data     BLOB NOT NULL
)"""
_CHUNKS_INDEX = "CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (file_id)"
#: shallow bases (docs/replica.md "Shallow trees"): created on open when missing, like chunks
_SHALLOW_SCHEMA = """CREATE TABLE IF NOT EXISTS shallow (
    tree_id   BLOB NOT NULL,
    change_id BLOB NOT NULL,
    PRIMARY KEY (tree_id, change_id)
) WITHOUT ROWID"""

#: Running quota totals per space (issue 13): kept by triggers on ``changes``, so every writer
#: of the file keeps them right — also an older p2psync that knows nothing of this table — and
#: a backup reads its totals at start instead of scanning every stored change. Added after
#: schema 1 like ``chunks``: created (and filled by one scan) on the first open that lacks it.
#: ``save_changes`` inserts the ``trees`` row before the changes and the deletions drop changes
#: before their ``trees`` row, so the space of a change is always found.
_USAGE_SCHEMA = (
    """CREATE TABLE usage (
    space_id TEXT PRIMARY KEY NOT NULL,
    bytes    INTEGER NOT NULL,
    changes  INTEGER NOT NULL
)""",
    """CREATE TRIGGER usage_add AFTER INSERT ON changes BEGIN
    INSERT INTO usage (space_id, bytes, changes)
        SELECT space_id, length(NEW.raw), 1 FROM trees WHERE tree_id = NEW.tree_id
        ON CONFLICT (space_id) DO UPDATE
        SET bytes = bytes + excluded.bytes, changes = changes + 1;
END""",
    """CREATE TRIGGER usage_del AFTER DELETE ON changes BEGIN
    UPDATE usage SET bytes = bytes - length(OLD.raw), changes = changes - 1
        WHERE space_id = (SELECT space_id FROM trees WHERE tree_id = OLD.tree_id);
END""",
    """INSERT INTO usage (space_id, bytes, changes)
    SELECT t.space_id, coalesce(sum(length(c.raw)), 0), count(c.seq)
    FROM trees t JOIN changes c ON c.tree_id = t.tree_id GROUP BY t.space_id""",
)


def _explain(path: Path, exc: sqlite3.Error) -> StoreError:
    msg = str(exc).lower()
    if "locked" in msg or "busy" in msg:
        return StoreError(f"store {path} is locked by another process (is p2psync already "
                          f"running?): {exc}")
    if "full" in msg:
        return StoreError(f"store {path}: the disk is full; free some space and retry: {exc}")
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return StoreError(f"store {path} is corrupt: {exc}")
    if "readonly" in msg or "unable to open" in msg:
        return StoreError(f"store {path} cannot be opened for writing: {exc}")
    return StoreError(f"store {path}: {exc}")


class SqliteStore(DerivedStoreOps):
    """One SQLite file holding every space of this device."""

    def __init__(self, path: str | Path, *, durable: bool = True, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.label = f"store {self.path}"
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc
        try:
            self._setup(durable)
        except BaseException:
            self._db.close()
            raise

    def _setup(self, durable: bool) -> None:
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"store {self.path} has schema version {version}, this p2psync understands "
                    f"up to {SCHEMA_VERSION}: upgrade p2psync to open it (the file is untouched)")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute(_CHUNKS_SCHEMA)  # added after schema 1; harmless when present
            self._db.execute(_CHUNKS_INDEX)
            self._db.execute(_SHALLOW_SCHEMA)
            if version == 0:
                with self._tx() as db:
                    if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                        for stmt in _SCHEMA.split(";"):
                            if stmt.strip():
                                db.execute(stmt)
                        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if not self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                    "name = 'usage'").fetchone():
                with self._tx() as db:
                    if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                      "name = 'usage'").fetchone():
                        for stmt in _USAGE_SCHEMA:
                            db.execute(stmt)
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc

    # --- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT, rolled back on any error)."""
        self.commit_group()  # grouped writes first: every other write commits as before
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _explain(self.path, exc) from exc
            raise

    # --- grouped writes (issue 13; docs/replica.md "Grouped commits") ---------------------
    _on_group: Callable[[], None] | None = None

    def group_writes(self, on_open: Callable[[], None] | None) -> None:
        """Let :meth:`save_changes` join one open transaction instead of committing each
        call; ``on_open`` is called when a group opens (the asyncio shell schedules
        :meth:`commit_group`, and the engine calls it before sending anything). None: off."""
        self.commit_group()
        self._on_group = on_open

    def commit_group(self) -> None:
        """Commit the writes grouped so far (nothing if none is open)."""
        if self._group_open:
            self._group_open = False
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise _explain(self.path, exc) from exc

    _group_open = False

    @contextmanager
    def _grouped(self) -> Iterator[sqlite3.Connection]:
        """One write inside the open group (opened here if none): a savepoint, so a failing
        write is undone whole and the group's earlier writes stay."""
        try:
            if not self._group_open:
                self._db.execute("BEGIN IMMEDIATE")
                self._group_open = True
                assert self._on_group is not None
                self._on_group()
            self._db.execute("SAVEPOINT grouped")
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc
        try:
            yield self._db
            self._db.execute("RELEASE grouped")
        except BaseException as exc:
            self._db.execute("ROLLBACK TO grouped")
            self._db.execute("RELEASE grouped")
            if isinstance(exc, sqlite3.Error):
                raise _explain(self.path, exc) from exc
            raise

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc

    def close(self) -> None:
        if self._group_open:
            self.commit_group()
        self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def integrity_check(self) -> str:
        """SQLite's own consistency check: ``"ok"`` when the file is sound."""
        return str(self._query("PRAGMA integrity_check")[0][0])

    # --- spaces -----------------------------------------------------------------------------
    def put_space(self, space_id: str, raw_header: bytes) -> None:
        """Store a (verified) space header; storing the same one again is a no-op."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO spaces VALUES (?, ?)", (space_id, raw_header))

    def get_space(self, space_id: str) -> bytes | None:
        rows = self._query("SELECT header FROM spaces WHERE space_id = ?", (space_id,))
        return bytes(rows[0][0]) if rows else None

    def list_spaces(self) -> list[str]:
        return [str(r[0]) for r in self._query("SELECT space_id FROM spaces ORDER BY space_id")]

    # --- ACL records (generic: the ACL code verifies, we keep bytes in arrival order) --------
    def add_acl_records(self, space_id: str, records: Sequence[tuple[bytes, bytes]]) -> int:
        """Store ``(record_id, raw)`` pairs atomically; returns how many were new."""
        with self._tx() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO acl_records (space_id, record_id, raw) "
                           "VALUES (?, ?, ?)", [(space_id, i, r) for i, r in records])
            return db.total_changes - before

    def list_acl_records(self, space_id: str) -> list[tuple[bytes, bytes]]:
        """``(record_id, raw)`` in the order they were stored."""
        rows = self._query("SELECT record_id, raw FROM acl_records WHERE space_id = ? "
                           "ORDER BY seq", (space_id,))
        return [(bytes(a), bytes(b)) for a, b in rows]

    # --- trees ------------------------------------------------------------------------------
    def save_changes(self, space_id: str, tree_id: bytes, changes: Sequence[Change],
                     heads: Sequence[bytes]) -> None:
        """Append verified changes (causal order) and replace the heads, in one transaction
        (a savepoint of the open group when writes are grouped)."""
        with self._grouped() if self._on_group is not None else self._tx() as db:
            db.execute("INSERT OR IGNORE INTO trees VALUES (?, ?)", (tree_id, space_id))
            db.executemany("INSERT OR IGNORE INTO changes (tree_id, change_id, raw) "
                           "VALUES (?, ?, ?)", [(tree_id, c.id, c.raw) for c in changes])
            db.execute("DELETE FROM heads WHERE tree_id = ?", (tree_id,))
            db.executemany("INSERT INTO heads VALUES (?, ?)", [(tree_id, h) for h in heads])

    def save_base(self, space_id: str, tree_id: bytes, base_id: bytes,
                  changes: Sequence[Change], heads: Sequence[bytes]) -> None:
        """Record a shallow base with its changes and heads, in one transaction."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO shallow VALUES (?, ?)", (tree_id, base_id))
            db.execute("INSERT OR IGNORE INTO trees VALUES (?, ?)", (tree_id, space_id))
            db.executemany("INSERT OR IGNORE INTO changes (tree_id, change_id, raw) "
                           "VALUES (?, ?, ?)", [(tree_id, c.id, c.raw) for c in changes])
            db.execute("DELETE FROM heads WHERE tree_id = ?", (tree_id,))
            db.executemany("INSERT INTO heads VALUES (?, ?)", [(tree_id, h) for h in heads])

    def replace_tree(self, space_id: str, tree_id: bytes, changes: Sequence[Change],
                     heads: Sequence[bytes]) -> None:
        """A shallow tree's whole history arrived: rewrite its rows in topological order and
        drop its base record, in one transaction (the usage triggers keep the totals)."""
        with self._tx() as db:
            db.execute("DELETE FROM changes WHERE tree_id = ?", (tree_id,))
            db.execute("DELETE FROM shallow WHERE tree_id = ?", (tree_id,))
            db.execute("INSERT OR IGNORE INTO trees VALUES (?, ?)", (tree_id, space_id))
            db.executemany("INSERT OR IGNORE INTO changes (tree_id, change_id, raw) "
                           "VALUES (?, ?, ?)", [(tree_id, c.id, c.raw) for c in changes])
            db.execute("DELETE FROM heads WHERE tree_id = ?", (tree_id,))
            db.executemany("INSERT INTO heads VALUES (?, ?)", [(tree_id, h) for h in heads])

    def shallow_bases(self, tree_id: bytes) -> frozenset[bytes]:
        return frozenset(bytes(r[0]) for r in self._query(
            "SELECT change_id FROM shallow WHERE tree_id = ?", (tree_id,)))

    def list_trees(self, space_id: str) -> list[bytes]:
        rows = self._query("SELECT tree_id FROM trees WHERE space_id = ? ORDER BY tree_id",
                           (space_id,))
        return [bytes(r[0]) for r in rows]

    def get_heads(self, tree_id: bytes) -> tuple[bytes, ...]:
        rows = self._query("SELECT head FROM heads WHERE tree_id = ? ORDER BY head", (tree_id,))
        return tuple(bytes(r[0]) for r in rows)

    def has_change(self, tree_id: bytes, change_id: bytes) -> bool:
        return bool(self._query("SELECT 1 FROM changes WHERE tree_id = ? AND change_id = ?",
                                (tree_id, change_id)))

    def count_changes(self, tree_id: bytes | None = None) -> int:
        if tree_id is None:
            return int(self._query("SELECT count(*) FROM changes")[0][0])
        return int(self._query("SELECT count(*) FROM changes WHERE tree_id = ?",
                               (tree_id,))[0][0])

    def delete_trees(self, tree_ids: Sequence[bytes]) -> None:
        """Drop objects (a tombstone): their changes and heads, in one transaction, with
        ``secure_delete`` so the freed pages are zeroed rather than left readable on disk."""
        if not tree_ids:
            return
        self._query("PRAGMA secure_delete=ON")
        try:
            with self._tx() as db:
                args = [(t,) for t in tree_ids]
                db.executemany("DELETE FROM changes WHERE tree_id = ?", args)
                db.executemany("DELETE FROM heads WHERE tree_id = ?", args)
                db.executemany("DELETE FROM shallow WHERE tree_id = ?", args)
                db.executemany("DELETE FROM trees WHERE tree_id = ?", args)
                db.executemany("DELETE FROM chunks WHERE file_id = ?", args)
        finally:
            self._query("PRAGMA secure_delete=OFF")

    def space_usage(self) -> dict[str, tuple[int, int]]:
        """``space id -> (bytes of raw changes and of file chunks, number of changes)`` for
        every space holding changes or chunks: the running totals the ``usage`` triggers keep
        (one row per space, no scan of the changes; a backup reads them at start and then
        counts what it stores) plus the chunk bytes."""
        rows = self._query("SELECT space_id, bytes, changes FROM usage WHERE changes > 0 "
                           "ORDER BY space_id")
        return self._add_chunk_bytes({str(a): (int(b), int(c)) for a, b, c in rows})

    def _add_chunk_bytes(self, usage: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        """Add each space's stored chunk ciphertext bytes (what a backup counts against the
        byte quota when it stores chunks, sync/files_io.py) to ``usage``, in place; a space
        holding only chunks appears with 0 changes. ``length()`` of a blob reads the record
        header only, not the chunk's overflow pages."""
        for sid, size in self._query("SELECT space_id, sum(length(data)) FROM chunks "
                                     "GROUP BY space_id"):
            b, c = usage.get(str(sid), (0, 0))
            usage[str(sid)] = (b + int(size), c)
        return usage

    def space_usage_scan(self) -> dict[str, tuple[int, int]]:
        """:meth:`space_usage` counted from the changes themselves (one scan of every stored
        change): what the running totals must always equal."""
        rows = self._query("SELECT t.space_id, coalesce(sum(length(c.raw)), 0), count(c.seq) "
                           "FROM trees t JOIN changes c ON c.tree_id = t.tree_id "
                           "GROUP BY t.space_id")
        return self._add_chunk_bytes({str(a): (int(b), int(c)) for a, b, c in rows})

    def raw_changes(self, tree_id: bytes) -> list[tuple[bytes, bytes]]:
        """``(id, raw)`` of a tree in storage order (a topological order, root first)."""
        rows = self._query("SELECT change_id, raw FROM changes WHERE tree_id = ? ORDER BY seq",
                           (tree_id,))
        return [(bytes(a), bytes(b)) for a, b in rows]

    def load_tree(self, space_id: str, tree_id: bytes, gate: AclGate, *,
                  verify_signatures: bool = False) -> ObjectTree:
        """:func:`~p2psync.replica.storage.load_trusted_tree` over the raw bytes as SQLite
        returns them, without the id column: every id is computed from the bytes and checked
        through the tree's parent links and stored heads instead (docs/replica.md "Store
        open"; ~0.3 µs of the ~3 µs a stored change costs to open). A tree that fails is
        read again with its ids, which names the row that does not match (the same
        checks and more: that read fails too)."""
        rows = self._query("SELECT NULL, raw FROM changes WHERE tree_id = ? ORDER BY seq",
                           (tree_id,))
        try:
            return load_trusted_tree(self, space_id, tree_id, gate,
                                     verify_signatures=verify_signatures, rows=rows)
        except StoreError:
            pass
        return load_trusted_tree(self, space_id, tree_id, gate,
                                 verify_signatures=verify_signatures)

    def forget_space(self, space_id: str) -> None:
        """Drop everything held of one space (``space leave``: a cancelled or refused join, a
        space this account left), in one transaction, freed pages zeroed."""
        self._query("PRAGMA secure_delete=ON")
        try:
            with self._tx() as db:
                trees = [(r[0],) for r in db.execute(
                    "SELECT tree_id FROM trees WHERE space_id = ?", (space_id,))]
                db.executemany("DELETE FROM changes WHERE tree_id = ?", trees)
                db.executemany("DELETE FROM heads WHERE tree_id = ?", trees)
                db.executemany("DELETE FROM shallow WHERE tree_id = ?", trees)
                db.execute("DELETE FROM trees WHERE space_id = ?", (space_id,))
                db.execute("DELETE FROM usage WHERE space_id = ?", (space_id,))
                db.execute("DELETE FROM acl_records WHERE space_id = ?", (space_id,))
                db.execute("DELETE FROM spaces WHERE space_id = ?", (space_id,))
                db.execute("DELETE FROM chunks WHERE space_id = ?", (space_id,))
        finally:
            self._query("PRAGMA secure_delete=OFF")

    # --- encrypted file chunks ---------------------------------------------------------------
    def put_chunks(self, space_id: str, file_id: bytes,
                   chunks: Sequence[tuple[bytes, bytes]]) -> int:
        with self._tx() as db:
            n = 0
            for addr, data in chunks:
                n += db.execute("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?)",
                                (bytes(addr), space_id, bytes(file_id), bytes(data))).rowcount
            return n

    def get_chunk(self, address: bytes) -> bytes | None:
        rows = self._query("SELECT data FROM chunks WHERE address = ?", (address,))
        return bytes(rows[0][0]) if rows else None

    def has_chunks(self, addresses: Sequence[bytes]) -> set[bytes]:
        out: set[bytes] = set()
        for a in addresses:
            if self._query("SELECT 1 FROM chunks WHERE address = ?", (a,)):
                out.add(bytes(a))
        return out

    def list_chunks(self, space_id: str, file_id: bytes | None = None) -> list[bytes]:
        if file_id is None:
            rows = self._query("SELECT address FROM chunks WHERE space_id = ? ORDER BY address",
                               (space_id,))
        else:
            rows = self._query("SELECT address FROM chunks WHERE space_id = ? AND file_id = ? "
                               "ORDER BY address", (space_id, file_id))
        return [bytes(r[0]) for r in rows]

    def get_file_chunks(self, space_id: str, file_id: bytes,
                        addresses: Sequence[bytes]) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        addrs = list(dict.fromkeys(bytes(a) for a in addresses))
        for i in range(0, len(addrs), 500):  # under SQLite's bound-parameter limit
            part = addrs[i:i + 500]
            rows = self._query(_file_chunks_sql(len(part)), (*part, space_id, bytes(file_id)))
            out.update((bytes(a), bytes(d)) for a, d in rows)
        return out

    def chunk_io(self) -> SqliteChunkIO:
        sync = self._query("PRAGMA synchronous")[0][0]
        return SqliteChunkIO(self, "FULL" if sync >= 2 else "NORMAL")

    def delete_chunks(self, addresses: Sequence[bytes]) -> int:
        self._query("PRAGMA secure_delete=ON")
        try:
            with self._tx() as db:
                return sum(db.execute("DELETE FROM chunks WHERE address = ?", (a,)).rowcount
                           for a in addresses)
        finally:
            self._query("PRAGMA secure_delete=OFF")


def _file_chunks_sql(n: int) -> str:
    """The chunks of one file of one space among ``n`` addresses, looked up by address (the
    primary key). The unary ``+`` keeps SQLite's planner off the ``chunks_by_file`` index,
    which it chose otherwise: every request then scanned every chunk of the file, O(file) per
    16-chunk request, quadratic per transfer (a 1 GiB file: 31 MB/s, the sender's read thread
    busy throughout; docs/files.md, "tcpfile")."""
    return ("SELECT address, data FROM chunks WHERE address IN "
            f"({','.join('?' * n)}) AND space_id = ? AND +file_id = ?")


#: WAL bytes the chunk connection lets accumulate before it checkpoints (SQLite's default is
#: 1000 pages, ~4 MiB). Every checkpoint copies the WAL into the database and fsyncs both, in
#: the writing thread, serially with the next write: at 4 MiB that was ~25 fsync pairs per
#: 100 MiB received and bounded a TCP transfer at ~70 MB/s (docs/files.md, "tcpfile"). The
#: bytes written are the same; the WAL file on disk grows to this size (not memory).
#: The checkpoint itself runs in a thread of its own (:class:`SqliteChunkIO`, docs/files.md,
#: "tcpfile2"), so the WAL may reach about twice this before the writer waits for it.
CHUNK_WAL_BYTES = 64 << 20

#: how long the checkpoint thread's RESTART step may hold off writers, waiting for a write
#: or an old reader to end, before it gives up until the next checkpoint (milliseconds)
RESTART_WAIT_MS = 200

log = logging.getLogger("p2psync.store")


class SqliteChunkIO:
    """Chunk reads and writes on a connection of its own (opened on first use), for a worker
    thread: SQLite releases the GIL while it reads, writes and fsyncs, so a bulk chunk transfer
    keeps the network busy meanwhile (docs/files.md, "filesperf"). WAL lets the loop's
    connection read throughout; two writers are serialised by SQLite's lock (the loop's
    connection waits at most the length of one chunk commit).

    Checkpoints (docs/files.md, "tcpfile2"): the writes never checkpoint themselves. After
    every CHUNK_WAL_BYTES written, a checkpoint thread with its own connection copies the WAL
    into the database while the writes go on (``PASSIVE``: the bulk, ~0.1-0.3 s per 64 MiB
    here, fsync included), then the few frames written meanwhile (``RESTART``: writers wait
    for this short step only; the next write starts the WAL from its beginning, so the file
    stays ~CHUNK_WAL_BYTES). Checkpointing inside the writing thread stalled it that long
    every 64 MiB, and the receiver with it. Should the writes outrun a checkpoint by another
    CHUNK_WAL_BYTES, the writer waits for it (the WAL stays bounded). A checkpoint that fails
    (e.g. disk full) is logged: the data is safe in the WAL, and the next one tries again."""

    def __init__(self, store: SqliteStore, synchronous: str) -> None:
        self.store = store  #: the store this reads and writes (tests tell peers apart by it)
        self.path = store.path
        self._sync = synchronous
        self._db: sqlite3.Connection | None = None
        self._since = 0  #: chunk bytes committed since the last checkpoint began
        self._checkpointer: threading.Thread | None = None
        self.checkpoints = 0  #: checkpoints completed (tests)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA synchronous={self._sync}")
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread does it
        return self._db

    def _after_commit(self, nbytes: int) -> None:
        """Count what was written; start a checkpoint every CHUNK_WAL_BYTES (waiting for the
        previous one only if it is still running by then)."""
        self._since += nbytes
        if self._since < CHUNK_WAL_BYTES:
            return
        if self._checkpointer is not None:
            self._checkpointer.join()  # normally long finished
        self._since = 0
        self._checkpointer = threading.Thread(target=self._checkpoint,
                                              name="p2psync-checkpoint")
        self._checkpointer.start()

    def _checkpoint(self) -> None:
        try:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            try:
                db.execute(f"PRAGMA synchronous={self._sync}")
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                # RESTART holds off new writers while it waits for the current one and for
                # readers of older snapshots: give up soon (the next checkpoint tries again)
                db.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
                db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                self.checkpoints += 1
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.warning("event=chunk_checkpoint_failed path=%s error=%r", self.path, str(exc))

    def get_file_chunks(self, space_id: str, file_id: bytes,
                        addresses: Sequence[bytes]) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        addrs = list(dict.fromkeys(bytes(a) for a in addresses))
        try:
            db = self._conn()
            for i in range(0, len(addrs), 500):  # under SQLite's bound-parameter limit
                part = addrs[i:i + 500]
                rows = db.execute(_file_chunks_sql(len(part)),
                                  (*part, space_id, bytes(file_id))).fetchall()
                out.update((bytes(a), bytes(d)) for a, d in rows)
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc
        return out

    def put_chunks(self, space_id: str, file_id: bytes,
                   chunks: Sequence[tuple[bytes, bytes]]) -> int:
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                n = 0
                for addr, data in chunks:
                    n += db.execute("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?)",
                                    (bytes(addr), space_id, bytes(file_id), bytes(data))).rowcount
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc
        self._after_commit(sum(len(d) for _, d in chunks))
        return n

    def close(self) -> None:
        """Close the connection. A checkpoint still running goes on in its thread with its
        own connection (the chunks are committed already; the checkpoint only moves them from
        the WAL into the database, which SQLite can do at any later time)."""
        if self._db is not None:
            self._db.close()
            self._db = None


#: The name the rest of the code knew it by (kept so callers migrate one at a time).
Store = SqliteStore

register_store("sqlite", lambda path, durable: SqliteStore(path, durable=durable))


def _conforms(s: SqliteStore) -> ReplicaStore:
    """Static check (mypy): SqliteStore implements the declared seam."""
    return s
