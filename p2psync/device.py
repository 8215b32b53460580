"""This device's replica: its identity, its store, and every space it holds, by id or name.

A space id is a hash, so a person needs a name. The space's own name travels with it inside
its encrypted metadata (a SpaceMeta ACL record sealed under the read key: members read it,
replicators never do; admins rename it, docs/acl.md); a device may also give a space a local
alias (a ``space_names.json`` file in the home) that never leaves it and wins over the shared
name on this device. Documents are referred to by their object id in base32, or any unique
prefix of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from p2psync.crypto.ids import parse_hash, short_hash
from p2psync.crypto.keystore import Keystore
from p2psync.errors import P2PSyncError, StoreError
from p2psync.home import Home
from p2psync.replica.document import DEFAULT_WINDOW
from p2psync.replica.space import Space
from p2psync.replica.storage import open_store
from p2psync.sync.replicas import Replicas

NAMES = "space_names.json"


class NotFound(P2PSyncError):
    """A space or document reference matches nothing (or more than one thing)."""


class LocalDevice:
    """The spaces of one home, opened on demand.

    Either it owns the store (the CLI with no agent running), or it is a view over a running
    node's :class:`~p2psync.sync.replicas.Replicas` (the agent), so that both paths share one
    set of operations and the agent stays the only writer of its store.
    """

    def __init__(self, home: Home, keys: Keystore, *, window: float = DEFAULT_WINDOW,
                 replicas: Replicas | None = None) -> None:
        self.home = home
        self.keys = keys
        self.window = window
        self.replicas = replicas
        self.store = replicas.store if replicas is not None else open_store(home.store_path)
        self._spaces: dict[str, Space] = replicas.spaces if replicas is not None else {}
        self._shared: dict[str, tuple[bytes, str | None]] = {}  #: space -> (meta id, name)

    def close(self) -> None:
        """Flush pending edits; close the store only if we opened it."""
        for space in self._spaces.values():
            space.settle()  # flush, and snapshot idle documents
        if self.replicas is None:
            self.store.close()

    def __enter__(self) -> LocalDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- names -----------------------------------------------------------------------------
    @property
    def _names_path(self) -> Path:
        return self.home.path / NAMES

    def aliases(self) -> dict[str, str]:
        """space id -> local alias (this device only)."""
        try:
            data = json.loads(self._names_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self._names_path} is unreadable: {exc}") from exc
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def shared_name(self, space: Space) -> str | None:
        """The name the space's metadata gives it (None: none set, or no key opens it)."""
        rid = space.acl.state.meta
        if rid is None:
            return None
        cached = self._shared.get(space.id)
        if cached is not None and cached[0] == rid:
            return cached[1]
        meta = space.acl.meta()
        name = meta.get("name") if meta else None
        name = name if isinstance(name, str) and name else None
        if name is not None:  # not "no key yet": a pending join gets it once accepted
            self._shared[space.id] = (rid, name)
        return name

    def names(self) -> dict[str, str]:
        """space id -> the name shown here: the local alias, else the shared name."""
        aliases = self.aliases()
        out: dict[str, str] = {}
        for sid in self.space_ids():
            name = aliases.get(sid) or self.shared_name(self.open_space(sid))
            if name:
                out[sid] = name
        return out

    def rename(self, space: Space, name: str) -> bytes:
        """Rename a space for every member (a SpaceMeta record; admins and the owner)."""
        return space.emit_acl(lambda acl: acl.set_meta(self.keys.account, {"name": name}))

    def set_name(self, space_id: str, name: str) -> None:
        """Set (or, with an empty name, clear) this device's alias of a space."""
        names = self.aliases()
        if name:
            names[space_id] = name
        else:
            names.pop(space_id, None)
        tmp = self._names_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(names, indent=1, sort_keys=True))
        os.replace(tmp, self._names_path)

    # --- spaces ----------------------------------------------------------------------------
    def space_ids(self) -> list[str]:
        if self.replicas is not None:
            return sorted(self.replicas.spaces)
        return self.store.list_spaces()

    def create_space(self, name: str) -> Space:
        if self.replicas is not None:
            space = self.replicas.create_space()
        else:
            space = Space.create(self.store, self.keys.account, self.keys.device.public,
                                 window=self.window)
            self._spaces[space.id] = space
        self.rename(space, name)
        return space

    def adopt_space(self, space_id: str, header: bytes, acl_records: list[bytes]) -> Space:
        """Take in a space another device of the account handed over (device pairing): the
        header and ACL are verified like any received space; documents follow by sync."""
        if space_id in self.space_ids():
            return self.open_space(space_id)
        space = Space.adopt(self.store, self.keys.account, self.keys.device.public, space_id,
                            header, acl_records, window=self.window)
        self._spaces[space_id] = space
        return space

    def open_space(self, space_id: str) -> Space:
        space = self._spaces.get(space_id)
        if space is None:
            space = Space.open(self.store, self.keys.account, self.keys.device.public, space_id,
                               window=self.window)
            self._spaces[space_id] = space
        return space

    def forget_space(self, space_id: str) -> None:
        """Drop a space from this device (store, open spaces, local name). Nothing is sent:
        what peers learn is up to the ACL record the caller wrote first, if any."""
        if self.replicas is not None:
            self.replicas.forget(space_id)
        else:
            space = self._spaces.pop(space_id, None)
            if space is not None:
                space.flush()
        self.store.forget_space(space_id)
        names = self.aliases()
        if names.pop(space_id, None) is not None:
            tmp = self._names_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(names, indent=1, sort_keys=True))
            os.replace(tmp, self._names_path)

    def resolve_space(self, ref: str) -> Space:
        """A space by exact id, local alias, shared name, or unique id prefix."""
        ids = self.space_ids()
        if ref in ids:
            return self.open_space(ref)
        by_name = [sid for sid, n in self.aliases().items() if n == ref and sid in ids]
        if not by_name:
            by_name = [sid for sid, n in self.names().items() if n == ref]
        hits = by_name or [sid for sid in ids if sid.startswith(ref)]
        if len(hits) == 1:
            return self.open_space(hits[0])
        if not hits:
            raise NotFound(f"no space {ref!r} on this device (see `p2psync space list`)")
        raise NotFound(f"{ref!r} matches {len(hits)} spaces; use more of the id")


def doc_ref(space: Space, ref: str) -> bytes:
    """A document (object) id of ``space`` from its base32 id or a unique prefix."""
    ref = ref.strip().lower()
    ids = space.tree_ids()
    hits = [t for t in ids if short_hash(t).startswith(ref)] if ref else []
    if len(hits) == 1:
        return hits[0]
    if not hits:
        try:
            full = parse_hash(ref)
        except P2PSyncError:
            full = b""
        if full in ids:
            return full
        raise NotFound(f"no document {ref!r} in space {space.id}")
    raise NotFound(f"{ref!r} matches {len(hits)} documents; use more of the id")
