"""An in-memory :class:`~p2psync.replica.storage.ReplicaStore`: same contract as SQLite, no disk.

For tests and seeded simulations (whole multi-node runs without sockets or files). A named
store (``open_store("memory://alice")``) keeps its data after ``close()`` for the life of the
process, so a simulation can "restart" a node on the same data; ``memory:`` is anonymous and
fresh. Durability is the process's lifetime, nothing more: never the store of a real device.

Atomicity is by construction: every write first builds everything it will insert (which is
where a bad argument raises), then mutates with operations that cannot fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from p2psync.errors import StoreError
from p2psync.replica.change import Change
from p2psync.replica.storage import DerivedStoreOps, ReplicaStore, register_store


@dataclass
class _Data:
    spaces: dict[str, bytes] = field(default_factory=dict)
    #: space id -> record id -> raw, in arrival order (dicts keep insertion order)
    acl: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    trees: dict[bytes, str] = field(default_factory=dict)
    #: tree id -> change id -> raw, in storage order
    changes: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    heads: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict)
    #: chunk address -> (space id, file id, ciphertext)
    chunks: dict[bytes, tuple[str, bytes, bytes]] = field(default_factory=dict)
    #: tree id -> shallow base ids
    shallow: dict[bytes, frozenset[bytes]] = field(default_factory=dict)


_named: dict[str, _Data] = {}


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise StoreError(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


class MemoryStore(DerivedStoreOps):
    """Spaces, ACL records, changes and heads in dicts (see module doc)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.label = f"memory store {name}" if name else "memory store"
        if name is None:
            self._data = _Data()
        else:
            self._data = _named.setdefault(name, _Data())
        self._closed = False

    @staticmethod
    def forget(name: str) -> None:
        """Drop a named store's data (tests clean up with this)."""
        _named.pop(name, None)

    def _d(self) -> _Data:
        if self._closed:
            raise StoreError(f"{self.label} is closed")
        return self._data

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- spaces ------------------------------------------------------------------------------
    def put_space(self, space_id: str, raw_header: bytes) -> None:
        self._d().spaces.setdefault(space_id, _bytes(raw_header, "header"))

    def get_space(self, space_id: str) -> bytes | None:
        return self._d().spaces.get(space_id)

    def list_spaces(self) -> list[str]:
        return sorted(self._d().spaces)

    # --- ACL records -------------------------------------------------------------------------
    def add_acl_records(self, space_id: str, records: Sequence[tuple[bytes, bytes]]) -> int:
        d = self._d()
        staged = [(_bytes(i, "record id"), _bytes(r, "record")) for i, r in records]
        table = d.acl.setdefault(space_id, {})
        new = 0
        for rid, raw in staged:
            if rid not in table:
                table[rid] = raw
                new += 1
        return new

    def list_acl_records(self, space_id: str) -> list[tuple[bytes, bytes]]:
        return list(self._d().acl.get(space_id, {}).items())

    # --- trees -------------------------------------------------------------------------------
    def save_changes(self, space_id: str, tree_id: bytes, changes: Sequence[Change],
                     heads: Sequence[bytes]) -> None:
        d = self._d()
        staged = [(_bytes(c.id, "change id"), _bytes(c.raw, "change")) for c in changes]
        new_heads = tuple(sorted(_bytes(h, "head") for h in heads))
        d.trees.setdefault(tree_id, space_id)
        table = d.changes.setdefault(tree_id, {})
        for cid, raw in staged:
            table.setdefault(cid, raw)
        d.heads[tree_id] = new_heads

    def save_base(self, space_id: str, tree_id: bytes, base_id: bytes,
                  changes: Sequence[Change], heads: Sequence[bytes]) -> None:
        d = self._d()
        base = _bytes(base_id, "base id")
        self.save_changes(space_id, tree_id, changes, heads)  # validates before it mutates
        d.shallow[tree_id] = d.shallow.get(tree_id, frozenset()) | {base}

    def replace_tree(self, space_id: str, tree_id: bytes, changes: Sequence[Change],
                     heads: Sequence[bytes]) -> None:
        d = self._d()
        staged = {_bytes(c.id, "change id"): _bytes(c.raw, "change") for c in changes}
        new_heads = tuple(sorted(_bytes(h, "head") for h in heads))
        d.trees.setdefault(tree_id, space_id)
        d.changes[tree_id] = staged
        d.heads[tree_id] = new_heads
        d.shallow.pop(tree_id, None)

    def shallow_bases(self, tree_id: bytes) -> frozenset[bytes]:
        return self._d().shallow.get(tree_id, frozenset())

    def list_trees(self, space_id: str) -> list[bytes]:
        return sorted(t for t, s in self._d().trees.items() if s == space_id)

    def get_heads(self, tree_id: bytes) -> tuple[bytes, ...]:
        return self._d().heads.get(tree_id, ())

    def has_change(self, tree_id: bytes, change_id: bytes) -> bool:
        return change_id in self._d().changes.get(tree_id, {})

    def count_changes(self, tree_id: bytes | None = None) -> int:
        d = self._d()
        if tree_id is None:
            return sum(len(t) for t in d.changes.values())
        return len(d.changes.get(tree_id, {}))

    def raw_changes(self, tree_id: bytes) -> list[tuple[bytes, bytes]]:
        return list(self._d().changes.get(tree_id, {}).items())

    def delete_trees(self, tree_ids: Sequence[bytes]) -> None:
        d = self._d()
        for t in list(tree_ids):
            d.changes.pop(t, None)
            d.heads.pop(t, None)
            d.shallow.pop(t, None)
            d.trees.pop(t, None)
        gone = set(tree_ids)
        for a in [a for a, (_, fid, _) in d.chunks.items() if fid in gone]:
            del d.chunks[a]

    def forget_space(self, space_id: str) -> None:
        """Drop everything held of one space (see SqliteStore.forget_space)."""
        d = self._d()
        self.delete_trees([t for t, s in d.trees.items() if s == space_id])
        d.acl.pop(space_id, None)
        d.spaces.pop(space_id, None)
        for a in [a for a, (sid, _, _) in d.chunks.items() if sid == space_id]:
            del d.chunks[a]

    def space_usage(self) -> dict[str, tuple[int, int]]:
        d = self._d()
        out: dict[str, tuple[int, int]] = {}
        for tid, table in d.changes.items():
            if not table:
                continue
            sid = d.trees[tid]
            b, c = out.get(sid, (0, 0))
            out[sid] = (b + sum(len(r) for r in table.values()), c + len(table))
        for sid, _, data in d.chunks.values():  # chunk bytes count too (see SqliteStore)
            b, c = out.get(sid, (0, 0))
            out[sid] = (b + len(data), c)
        return out

    # --- encrypted file chunks ---------------------------------------------------------------
    def put_chunks(self, space_id: str, file_id: bytes,
                   chunks: Sequence[tuple[bytes, bytes]]) -> int:
        d = self._d()
        fid = _bytes(file_id, "file id")
        staged = {_bytes(a, "chunk address"): (space_id, fid, _bytes(c, "chunk"))
                  for a, c in chunks}
        new = {a: v for a, v in staged.items() if a not in d.chunks}
        d.chunks.update(new)  # validated first: all or nothing
        return len(new)

    def get_chunk(self, address: bytes) -> bytes | None:
        got = self._d().chunks.get(bytes(address))
        return got[2] if got else None

    def has_chunks(self, addresses: Sequence[bytes]) -> set[bytes]:
        d = self._d()
        return {bytes(a) for a in addresses if bytes(a) in d.chunks}

    def list_chunks(self, space_id: str, file_id: bytes | None = None) -> list[bytes]:
        return sorted(a for a, (sid, fid, _) in self._d().chunks.items()
                      if sid == space_id and file_id in (None, fid))

    def delete_chunks(self, addresses: Sequence[bytes]) -> int:
        d = self._d()
        return sum(d.chunks.pop(bytes(a), None) is not None for a in addresses)


def _open(rest: str, durable: bool) -> MemoryStore:
    return MemoryStore(rest or None)


register_store("memory", _open)


def _conforms(s: MemoryStore) -> ReplicaStore:
    """Static check (mypy): MemoryStore implements the declared seam."""
    return s
