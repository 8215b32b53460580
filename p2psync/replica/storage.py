"""The store seam, declared: what :class:`~p2psync.replica.space.Space`, the object trees and
the sync layer need from persistent storage, and :func:`open_store` to get one by URL.

Implementations: :class:`~p2psync.replica.store.SqliteStore` (the device store; a path or
``sqlite:///path``) and :class:`~p2psync.replica.memstore.MemoryStore` (``memory:`` or
``memory://name``, for tests and simulations without a disk). A PostgreSQL store for the
backup tier plugs in with :func:`register_store`. Every implementation must pass
``tests/conformance/store_suite.py``; the contract it checks is written on each method below.

The store keeps **bytes, not meaning**: headers, ACL records and changes exactly as received,
already verified by the replica; ids are recomputed on load (:func:`load_trusted_tree`), so a
store never has to be trusted for integrity, only for atomicity and durability.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from p2psync.errors import DecodeError, ReplicaError, StoreError, UnknownStore
from p2psync.replica.acl_gate import AclGate
from p2psync.replica.change import Change
from p2psync.replica.tree import AddResult, ObjectTree, Persist


@runtime_checkable
class ReplicaStore(Protocol):
    """Persistent spaces, ACL records, tree changes and heads of one device.

    Contract (each a conformance test):

    * every write method is **atomic**: it happens whole or not at all, also when it raises
      midway (the tree's ``persist`` hook relies on it to keep memory and disk equal);
    * a method that returns has made its write as durable as the store promises
      (SQLite: survives a kill, and with ``durable=True`` a power cut), because peers are told
      which heads we hold — except ``save_changes`` while writes are grouped
      (:meth:`group_writes`): durable at the next :meth:`commit_group`, which runs before
      anything is sent to a peer;
    * writes of something already stored are no-ops (peers resend);
    * any failure, including use after :meth:`close`, is a :class:`~p2psync.errors.StoreError`.
    """

    #: How error messages name this store ("store /home/…/store.sqlite3", "memory store a").
    @property
    def label(self) -> str: ...

    def close(self) -> None: ...

    def group_writes(self, on_open: Callable[[], None] | None) -> None:
        """Let ``save_changes`` share commits until :meth:`commit_group` (``on_open`` is
        called when a group opens); stores that cannot ignore it (docs/replica.md)."""

    def commit_group(self) -> None:
        """Commit grouped writes now; the engine calls it before it sends anything."""

    def __enter__(self) -> ReplicaStore: ...

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    # --- spaces ----------------------------------------------------------------------------
    def put_space(self, space_id: str, raw_header: bytes) -> None:
        """Store a verified header; a second put for the same space is ignored (first wins)."""

    def get_space(self, space_id: str) -> bytes | None: ...

    def list_spaces(self) -> list[str]:
        """Every stored space id, sorted."""

    # --- ACL records -------------------------------------------------------------------------
    def add_acl_records(self, space_id: str, records: Sequence[tuple[bytes, bytes]]) -> int:
        """Store ``(record_id, raw)`` pairs atomically; returns how many were new."""

    def add_acl_record(self, space_id: str, record_id: bytes, raw: bytes) -> bool: ...

    def list_acl_records(self, space_id: str) -> list[tuple[bytes, bytes]]:
        """``(record_id, raw)`` in the order they were first stored."""

    # --- trees -------------------------------------------------------------------------------
    def save_changes(self, space_id: str, tree_id: bytes, changes: Sequence[Change],
                     heads: Sequence[bytes]) -> None:
        """Append verified changes (causal order; known ones ignored) and replace the tree's
        heads, in one atomic write."""

    def save_tree(self, tree: ObjectTree) -> None: ...

    def save_base(self, space_id: str, tree_id: bytes, base_id: bytes,
                  changes: Sequence[Change], heads: Sequence[bytes]) -> None:
        """:meth:`save_changes`, and record ``base_id`` as a shallow base of the tree
        (docs/replica.md "Shallow trees"), in one atomic write. A store that never holds
        shallow trees (a backup's: backups fetch whole trees) raises StoreError."""

    def replace_tree(self, space_id: str, tree_id: bytes, changes: Sequence[Change],
                     heads: Sequence[bytes]) -> None:
        """Replace everything stored of a tree by ``changes`` (a topological order, root
        first) and ``heads``, dropping its shallow bases, in one atomic write: a shallow tree
        whose whole history was fetched (its storage order must stay topological, so the
        history cannot be appended after the base). Stores that hold no shallow trees raise
        StoreError."""

    def shallow_bases(self, tree_id: bytes) -> frozenset[bytes]:
        """The recorded shallow bases of a tree (empty for a whole tree or an unknown one):
        on load, exactly these changes may name parents that are not stored."""

    def persister(self) -> Persist:
        """The hook :meth:`ObjectTree.add` / :class:`Document` call to store what attached."""

    def list_trees(self, space_id: str) -> list[bytes]:
        """Tree ids of a space, sorted."""

    def get_heads(self, tree_id: bytes) -> tuple[bytes, ...]:
        """Stored heads, sorted; ``()`` for an unknown tree."""

    def has_change(self, tree_id: bytes, change_id: bytes) -> bool: ...

    def count_changes(self, tree_id: bytes | None = None) -> int:
        """Changes of one tree, or of the whole store."""

    def raw_changes(self, tree_id: bytes) -> list[tuple[bytes, bytes]]:
        """``(id, raw)`` in storage order (the order first saved: topological, root first)."""

    def delete_trees(self, tree_ids: Sequence[bytes]) -> None:
        """Drop objects (a tombstone): changes, heads and the tree, atomically; the bytes must
        not stay readable where the medium allows (SQLite: ``secure_delete``)."""

    def forget_space(self, space_id: str) -> None:
        """Drop everything held of one space — header, ACL records, trees, changes, heads —
        atomically (``space leave``: a cancelled or refused join, a space this account left);
        like :meth:`delete_trees`, the bytes must not stay readable where the medium allows."""

    def space_usage(self) -> dict[str, tuple[int, int]]:
        """``space id -> (bytes of raw changes + bytes of stored chunk ciphertexts, number of
        changes)``: what a backup counts against its quotas; spaces holding neither changes
        nor chunks are absent."""

    def load_tree(self, space_id: str, tree_id: bytes, gate: AclGate, *,
                  verify_signatures: bool = False) -> ObjectTree:
        """Rebuild a tree (see :func:`load_trusted_tree`); StoreError if missing or corrupt."""

    # --- encrypted file chunks (docs/files.md) -----------------------------------------------
    def put_chunks(self, space_id: str, file_id: bytes,
                   chunks: Sequence[tuple[bytes, bytes]]) -> int:
        """Store ``(address, ciphertext)`` chunks of one file (a tree id: keys are per file,
        so a chunk belongs to exactly one file) atomically; known addresses are ignored;
        returns how many were new. The store does not verify: callers check the address
        first (:func:`p2psync.replica.files.check_chunks`). :meth:`delete_trees` of the file
        id drops its chunks too (a tombstone frees them, also on a backup that cannot read
        the manifest)."""

    def get_chunk(self, address: bytes) -> bytes | None:
        """A chunk's ciphertext exactly as stored, or None."""

    def has_chunks(self, addresses: Sequence[bytes]) -> set[bytes]:
        """Which of ``addresses`` are stored."""

    def list_chunks(self, space_id: str, file_id: bytes | None = None) -> list[bytes]:
        """Addresses of a space's chunks (of one file if given), sorted."""

    def delete_chunks(self, addresses: Sequence[bytes]) -> int:
        """Drop chunks atomically (unknown ones ignored); returns how many went."""

    def get_file_chunks(self, space_id: str, file_id: bytes,
                        addresses: Sequence[bytes]) -> dict[bytes, bytes]:
        """``address -> ciphertext`` of those of ``addresses`` stored **as chunks of that file
        of that space** (what a chunk request may be answered with), in one read."""

    def chunk_io(self) -> ChunkIO | None:
        """A :class:`ChunkIO` that may run in one worker thread while the event loop keeps
        using this store (SQLite: its own connection to the same file), so a bulk transfer's
        reads, writes and fsyncs overlap with the network; None when the store has none
        (chunks are then read and stored from the loop's thread). Close it after use."""


class ChunkIO(Protocol):
    """The chunk reads and writes of a bulk transfer, for one worker thread at a time (see
    :meth:`ReplicaStore.chunk_io`); same meaning as the store's methods of these names."""

    def put_chunks(self, space_id: str, file_id: bytes,
                   chunks: Sequence[tuple[bytes, bytes]]) -> int: ...

    def get_file_chunks(self, space_id: str, file_id: bytes,
                        addresses: Sequence[bytes]) -> dict[bytes, bytes]: ...

    def close(self) -> None: ...


class DerivedStoreOps:
    """The ReplicaStore methods that follow from the primitives, shared by implementations
    (mix in; the class provides ``label``, ``save_changes``, ``add_acl_records``,
    ``raw_changes`` and ``get_heads``)."""

    label: str

    def save_changes(self, space_id: str, tree_id: bytes, changes: Sequence[Change],
                     heads: Sequence[bytes]) -> None:
        raise NotImplementedError

    def add_acl_records(self, space_id: str, records: Sequence[tuple[bytes, bytes]]) -> int:
        raise NotImplementedError

    def raw_changes(self, tree_id: bytes) -> list[tuple[bytes, bytes]]:
        raise NotImplementedError

    def get_heads(self, tree_id: bytes) -> tuple[bytes, ...]:
        raise NotImplementedError

    def list_chunks(self, space_id: str, file_id: bytes | None = None) -> list[bytes]:
        raise NotImplementedError

    def get_chunk(self, address: bytes) -> bytes | None:
        raise NotImplementedError

    def chunk_io(self) -> ChunkIO | None:
        return None

    def get_file_chunks(self, space_id: str, file_id: bytes,
                        addresses: Sequence[bytes]) -> dict[bytes, bytes]:
        """From the primitives (a store with an indexed read overrides it: this lists the
        whole file's chunks on every call)."""
        held = set(self.list_chunks(space_id, file_id)) if addresses else set()
        out: dict[bytes, bytes] = {}
        for a in addresses:
            if a in held and (data := self.get_chunk(a)) is not None:
                out[bytes(a)] = data
        return out

    def add_acl_record(self, space_id: str, record_id: bytes, raw: bytes) -> bool:
        return self.add_acl_records(space_id, [(record_id, raw)]) == 1

    def group_writes(self, on_open: Callable[[], None] | None) -> None:
        """Group ``save_changes`` into fewer commits where the store can (SQLite); the
        default commits every write as before and ignores this."""

    def commit_group(self) -> None:
        """Commit grouped writes (called before anything is sent to a peer)."""

    def save_tree(self, tree: ObjectTree) -> None:
        """Store a whole tree (e.g. a newly created one) with its heads."""
        self.save_changes(tree.space_id, tree.id, tree.changes(), tree.heads)

    def save_base(self, space_id: str, tree_id: bytes, base_id: bytes,
                  changes: Sequence[Change], heads: Sequence[bytes]) -> None:
        raise StoreError(f"{self.label} holds no shallow trees")

    def replace_tree(self, space_id: str, tree_id: bytes, changes: Sequence[Change],
                     heads: Sequence[bytes]) -> None:
        raise StoreError(f"{self.label} holds no shallow trees")

    def shallow_bases(self, tree_id: bytes) -> frozenset[bytes]:
        return frozenset()

    def persister(self) -> Persist:
        def persist(tree: ObjectTree, result: AddResult) -> None:
            if result.base is not None:
                self.save_base(tree.space_id, tree.id, result.base, result.attached,
                               result.heads)
            else:
                self.save_changes(tree.space_id, tree.id, result.attached, result.heads)
        return persist

    def load_tree(self, space_id: str, tree_id: bytes, gate: AclGate, *,
                  verify_signatures: bool = False) -> ObjectTree:
        return load_trusted_tree(self, space_id, tree_id, gate,
                                 verify_signatures=verify_signatures)


def load_trusted_tree(store: DerivedStoreOps | ReplicaStore, space_id: str, tree_id: bytes,
                      gate: AclGate, *, verify_signatures: bool = False,
                      rows: Sequence[tuple[bytes | None, bytes]] | None = None) -> ObjectTree:
    """Rebuild a tree from a store. Ids are always recomputed (cheap: catches bit rot and
    edits to the file) and the stored heads must match; signatures and ACL rules are checked
    only with ``verify_signatures`` (only verified changes are ever written; docs/replica.md).
    ``rows``: the store's ``(id or None, raw)`` rows of the tree when it reads them itself
    (default :meth:`raw_changes`; see :meth:`ObjectTree.from_trusted`)."""
    raws = store.raw_changes(tree_id) if rows is None else rows
    if not raws:
        raise StoreError(f"{store.label} has no tree {tree_id.hex()[:16]}…")
    try:
        tree = ObjectTree.from_trusted(space_id, gate, raws, verify_signatures=verify_signatures,
                                       tree_id=tree_id, bases=store.shallow_bases(tree_id))
    except (DecodeError, ReplicaError) as exc:
        raise StoreError(f"{store.label}: tree {tree_id.hex()[:16]}… is corrupt or "
                         f"tampered with: {exc}") from exc
    if tree.heads != store.get_heads(tree_id):
        raise StoreError(f"{store.label}: stored heads of tree {tree_id.hex()[:16]}… "
                         "do not match its changes")
    return tree


# --- opening by URL ------------------------------------------------------------------------
#: ``opener(rest_of_url, durable) -> store``; ``rest`` is what follows ``scheme:``.
StoreOpener = Callable[[str, bool], ReplicaStore]
_openers: dict[str, StoreOpener] = {}


def register_store(scheme: str, opener: StoreOpener) -> None:
    """Make ``open_store("scheme:…")`` use ``opener`` (e.g. ``"postgresql"``)."""
    _openers[scheme] = opener


def open_store(where: str | Path, *, durable: bool = True) -> ReplicaStore:
    """Open a store: a filesystem path or ``sqlite:///path`` (SQLite), ``memory:`` (a fresh
    in-memory store) or ``memory://name`` (a named one that outlives ``close()`` in this
    process, so tests can "restart" a node), or any registered scheme.
    :class:`~p2psync.errors.UnknownStore` for other schemes."""
    _ensure_builtin()
    if isinstance(where, Path):
        return _openers["sqlite"](str(where), durable)
    scheme, sep, rest = where.partition(":")
    if not sep or len(scheme) == 1 or "/" in scheme or "\\" in scheme or "." in scheme:
        return _openers["sqlite"](where, durable)  # a plain path (or a C: drive)
    opener = _openers.get(scheme)
    if opener is None:
        raise UnknownStore(f"no store for {scheme!r} URLs (available: "
                           f"{', '.join(sorted(_openers))}; or give a file path)")
    if rest.startswith("//"):
        rest = rest[2:]
    return opener(rest, durable)


#: the stores shipped with p2psync, loaded on first use like any plug-in: the seam names
#: them but does not import them (they import this module for the protocol, and an import
#: back would be a cycle; tests/test_layers.py forbids it)
BUILTIN_STORES = ("p2psync.replica.store", "p2psync.replica.memstore",
                  "p2psync.replica.pgstore")  # psycopg itself is imported on first use


def _ensure_builtin() -> None:
    for name in BUILTIN_STORES:
        importlib.import_module(name)  # each registers its schemes (a no-op once imported)
