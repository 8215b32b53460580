"""One space on this device: its verified header, ACL, object trees and documents, persisted.

This is the seam the sync engine, the agent and the CLI use. It keeps the two paths apart:

* the **sync path** (:meth:`Space.add_acl_records`, :meth:`Space.add_changes`) verifies and
  stores signed ciphertext and never decrypts — a backup peer runs exactly this;
* the **app path** (:meth:`Space.document`, :meth:`Space.new_document`) materialises Automerge
  documents lazily and only on devices that hold read keys.

Everything a peer sends is checked before it is stored; a rejected record or change raises a
typed error and leaves the store unchanged.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from p2psync.codec import content_id
from p2psync.crypto.keys import SigningKey
from p2psync.errors import (
    DecodeError,
    InvalidChange,
    ObjectDeleted,
    P2PSyncError,
    RemovedAuthor,
    ReplicaError,
    StoreError,
    UnknownSpaceType,
    WrongTree,
)
from p2psync.replica.acl import REMOVAL_POLICIES, Acl, RemovalPolicy
from p2psync.replica.acl_records import DeleteObjects, DeleteSpace, Role, decode_record
from p2psync.replica.change import Change, parse_change
from p2psync.replica.doctype import doctype_for
from p2psync.replica.document import DEFAULT_WINDOW, Document
from p2psync.replica.header import SpaceHeader
from p2psync.replica.snapshots import check_base, latest_snapshot
from p2psync.replica.storage import ReplicaStore
from p2psync.replica.tree import AddResult, ObjectTree, parse_stored_change

#: Called after trees change (space id, tree id, the add result) — the engine pushes from here.
TreeListener = Callable[[str, bytes, AddResult], None]
#: Called after ACL records were admitted (space id, new record ids).
AclListener = Callable[[str, list[bytes]], None]


@dataclass(frozen=True)
class AclAddResult:
    """What :meth:`Space.add_acl_records` did."""

    added: list[bytes]  #: record ids admitted (including ones released from waiting)
    waiting: list[bytes]  #: records whose parents are still missing
    rejected: list[tuple[bytes, str]]  #: (record id or b"", reason)
    #: merges by departed members, not admitted (``Acl.add`` status "ignored")
    ignored: list[bytes] = field(default_factory=list)


class Space:
    """A space held by this device (as a member, or as a replicator holding no read keys)."""

    #: trees kept in memory per space (documents in use are always kept)
    max_cached_trees: int = 256
    #: documents this space keeps open (materialised) on its own, least recently used dropped
    #: beyond it (one with unflushed edits stays); a document an app still holds stays open
    #: and is returned again — see :meth:`document`
    max_open_documents: int = 128

    def __init__(
        self, header: SpaceHeader, acl: Acl, store: ReplicaStore, me: SigningKey, device: bytes,
        *, window: float = DEFAULT_WINDOW, removal_policy: RemovalPolicy = "flag",
    ) -> None:
        self.header = header
        self.acl = acl
        self.set_removal_policy(removal_policy)
        self.store = store
        self.me = me
        self.device = device
        self.window = window
        #: trees in memory, least recently used first (bounded: see :meth:`_cache`)
        self._trees: OrderedDict[bytes, ObjectTree] = OrderedDict()
        #: documents kept open by the space, least recently used first (bounded)
        self._docs: OrderedDict[bytes, Document] = OrderedDict()
        #: every document object still alive (kept by the space or by an app): one tree never
        #: gets two documents, or two in-memory trees, at once
        self._live: weakref.WeakValueDictionary[bytes, Document] = (
            weakref.WeakValueDictionary())
        self._known_trees: set[bytes] = set(store.list_trees(header.space_id))
        self.tree_listeners: list[TreeListener] = []
        self.acl_listeners: list[AclListener] = []
        #: objects dropped by tombstones since the sync layer last looked (it drains this)
        self.purged: list[bytes] = []
        self._apply_tombstones()

    # --- construction ------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.header.space_id

    def set_removal_policy(self, policy: str) -> None:
        """What this device does with changes whose author was removed at or after the ACL
        head they name (docs/acl.md): "flag" (default) stores and shows them, flagged in
        history and status; "strict" refuses them once the removal is known here. A
        per-device setting for this space (the agent keeps it in its config)."""
        if policy not in REMOVAL_POLICIES:
            raise ValueError(f"removal policy must be one of {', '.join(REMOVAL_POLICIES)}")
        self.acl.removal_policy = "strict" if policy == "strict" else "flag"

    @property
    def removal_policy(self) -> RemovalPolicy:
        return self.acl.removal_policy

    def removed_after(self, change: Change) -> bytes | None:
        """The removal that flags this change (issue 20.5), or None: for change events,
        ``doc history``, ``status`` and the API."""
        return self.acl.removed_after(change.author, change.acl_head)

    @classmethod
    def create(cls, store: ReplicaStore, me: SigningKey, device: bytes, *,
               space_type: str = "default", window: float = DEFAULT_WINDOW) -> Space:
        """A new space owned by ``me``: header + ACL root, stored (ACL first, then header, so a
        crash in between leaves no half-made space visible)."""
        header = SpaceHeader.create(me, space_type)
        acl = Acl.create(header.space_id, me)
        store.add_acl_records(header.space_id, _id_raws(acl))
        store.put_space(header.space_id, header.raw)
        return cls(header, acl, store, me, device, window=window)

    @classmethod
    def open(cls, store: ReplicaStore, me: SigningKey, device: bytes, space_id: str, *,
             window: float = DEFAULT_WINDOW, removal_policy: RemovalPolicy = "flag") -> Space:
        """Load a stored space (header re-verified, ACL replayed from its records)."""
        raw = store.get_space(space_id)
        if raw is None:
            raise StoreError(f"no space {space_id} on this device")
        header = SpaceHeader.verify(raw, space_id)
        raws = [r for _, r in store.list_acl_records(space_id)]
        acl = Acl.from_records(space_id, raws, me=me, owner=header.owner)
        return cls(header, acl, store, me, device, window=window, removal_policy=removal_policy)

    @classmethod
    def adopt(cls, store: ReplicaStore, me: SigningKey, device: bytes, space_id: str,
              header_raw: bytes, acl_raws: Sequence[bytes], *,
              window: float = DEFAULT_WINDOW, removal_policy: RemovalPolicy = "flag") -> Space:
        """Take in a space received from a peer (bootstrap): verify header and ACL, store."""
        header = SpaceHeader.verify(header_raw, space_id)
        acl = Acl.from_records(space_id, acl_raws, me=me, owner=header.owner)
        store.add_acl_records(space_id, _id_raws(acl))
        store.put_space(space_id, header.raw)
        return cls(header, acl, store, me, device, window=window, removal_policy=removal_policy)

    # --- ACL ---------------------------------------------------------------------------------
    def role(self, account: bytes | None = None) -> Role | None:
        return self.acl.state.role(self.me.public if account is None else account)

    def members(self) -> list[tuple[bytes, Role]]:
        st = self.acl.state
        return sorted(st.members.items(), key=lambda kv: (-int(kv[1]), kv[0]))

    def acl_records(self) -> list[bytes]:
        """Every admitted ACL record, parents before children."""
        return self.acl.export()

    def add_acl_records(self, raws: Iterable[bytes]) -> AclAddResult:
        """Sync path: admit ACL records from a peer; store the admitted ones; re-check trees
        whose changes waited for them. Invalid records are reported, never stored."""
        added: list[bytes] = []
        waiting: list[bytes] = []
        rejected: list[tuple[bytes, str]] = []
        ignored: list[bytes] = []
        for raw in raws:
            try:
                res = self.acl.add(raw)
            except (ReplicaError, DecodeError) as exc:
                rejected.append((_safe_record_id(raw), str(exc)))
                continue
            if res.status == "added":
                added.append(res.id)
            elif res.status == "waiting":
                waiting.append(res.id)
            elif res.status == "ignored":
                ignored.append(res.id)
            added.extend(res.released)
            rejected.extend((rid, why) for rid, why in res.rejected)
        if added:
            self._persist_acl(added)
        return AclAddResult(added, [w for w in waiting if w not in set(added)], rejected,
                            ignored)

    def _persist_acl(self, ids: list[bytes]) -> None:
        ids = [*self.acl.take_promoted(), *ids]
        if not ids:
            return
        self.store.add_acl_records(self.id, [(i, self.acl.record(i).raw) for i in ids])
        if any(isinstance(self.acl.record(i).payload, (DeleteObjects, DeleteSpace))
               for i in ids):
            self._apply_tombstones()
        for tree in self._trees.values():
            if tree.waiting_ids:
                res = tree.recheck_waiting(persist=self.store.persister())
                if res.attached:
                    self._notify(tree.id, res)
        for listener in self.acl_listeners:
            listener(self.id, ids)

    def commit_acl(self, raw: bytes) -> bytes:
        """Store a record a local ACL action just made (``space.acl.invite(...)`` etc.), so it
        survives restarts and reaches peers; returns its id. Records the action built before
        it (automatic merges when there were more heads than one record may name) are stored
        with it, parents first."""
        rid = content_id(raw)
        ids = [content_id(r) for r in self.acl.take_built()]
        if rid not in ids:
            ids.append(rid)
        self._persist_acl([i for i in ids if i in self.acl])
        return rid

    def emit_acl(self, make: Callable[[Acl], bytes]) -> bytes:
        """Run a local ACL action (``lambda acl: acl.remove(me, [bob])``) and store its record."""
        raw = make(self.acl)
        self.commit_acl(raw)
        return raw

    # --- deletion (signed tombstones in the ACL; docs/backup.md) -----------------------------
    def _apply_tombstones(self) -> None:
        """Drop every held object the ACL says is deleted: store rows (zeroed), memory, docs."""
        st = self.acl.state
        gone = [t for t in self._known_trees if st.is_deleted(t)]
        if not gone:
            return
        self.store.delete_trees(gone)
        for t in gone:
            self._known_trees.discard(t)
            self._trees.pop(t, None)
            self._docs.pop(t, None)
            self._live.pop(t, None)
        self.purged.extend(gone)

    def is_deleted(self, tree_id: bytes | None = None) -> bool:
        """Whether the space (``tree_id`` None) or that object was deleted by a tombstone."""
        st = self.acl.state
        return st.space_deleted is not None if tree_id is None else st.is_deleted(tree_id)

    def delete_objects(self, tree_ids: Sequence[bytes]) -> bytes:
        """Delete objects everywhere: a signed tombstone record (we must be a writer)."""
        return self.emit_acl(lambda acl: acl.delete_objects(self.me, tree_ids))

    def delete_space(self) -> bytes:
        """Delete the whole space everywhere (owner only); its header and ACL remain as the
        tombstone's carrier so the deletion keeps propagating."""
        return self.emit_acl(lambda acl: acl.delete_space(self.me))

    # --- trees (sync path: ciphertext only) --------------------------------------------------
    def tree_ids(self) -> list[bytes]:
        return sorted(self._known_trees)

    def has_tree(self, tree_id: bytes) -> bool:
        return tree_id in self._known_trees

    def tree(self, tree_id: bytes) -> ObjectTree:
        """The tree with that id, loaded from the store on first use."""
        tree = self._trees.get(tree_id)
        if tree is None:
            if tree_id not in self._known_trees:
                raise WrongTree(f"space {self.id} has no object {tree_id.hex()[:16]}…")
            doc = self._live.get(tree_id)  # an app still holds its document: that tree
            tree = doc.tree if doc is not None else self.store.load_tree(
                self.id, tree_id, self.acl)
            self._cache(tree)
        else:
            self._trees.move_to_end(tree_id)
        return tree

    def full_sync_raws(self, tree_id: bytes) -> tuple[tuple[bytes, ...], list[bytes]]:
        """``(heads, every change's raw bytes in a causal order)`` of a tree, for a peer that
        has none of it (a full sync with empty heads).

        A tree not in memory is served straight from the store's raw bytes in storage order
        (topological, root first) without building an :class:`ObjectTree`: parsing and
        re-hashing every change to send its bytes back was ~73 % of a source's time in
        initial sync (docs/performance.md), and the parsed tree then stayed in memory. The
        receiver verifies every change against its author's key and the ACL as always; what is
        stored here was verified on the way in."""
        tree = self._trees.get(tree_id)
        if tree is not None:
            return tree.heads, [c.raw for c in tree.changes_for(())]
        if tree_id not in self._known_trees:
            raise WrongTree(f"space {self.id} has no object {tree_id.hex()[:16]}…")
        return self.store.get_heads(tree_id), [raw for _, raw in self.store.raw_changes(tree_id)]

    def _cache(self, tree: ObjectTree) -> None:
        """Keep a tree in memory, dropping the least recently used beyond the cap.

        Every tree is fully persisted after each add, so a dropped tree just reloads on next
        use; trees with an open document or changes still waiting stay. This keeps a backup
        serving millions of changes at flat memory instead of holding every tree it touched.
        """
        self._trees[tree.id] = tree
        self._trees.move_to_end(tree.id)
        excess = len(self._trees) - self.max_cached_trees
        if excess <= 0:
            return
        for tid in list(self._trees):
            if excess <= 0:
                break
            if tid in self._live or tid == tree.id or self._trees[tid].waiting_ids:
                continue
            del self._trees[tid]
            excess -= 1

    def heads(self, tree_id: bytes) -> tuple[bytes, ...]:
        """Current heads of a tree, without loading it when it is not in memory."""
        tree = self._trees.get(tree_id)
        return tree.heads if tree is not None else self.store.get_heads(tree_id)

    def add_changes(self, tree_id: bytes, raws: Sequence[bytes], *,
                    parsed: Mapping[bytes, Change] | None = None) -> AddResult:
        """Sync path: verify and store changes for one tree; a new tree needs its root among
        ``raws``. Never decrypts; the document (if materialised) catches up on next read.
        ``parsed``: raw bytes -> :func:`parse_change` of them, where the caller already
        parsed (see :meth:`ObjectTree.add`)."""
        if self.acl.state.is_deleted(tree_id):
            raise ObjectDeleted("that object was deleted; its changes are no longer accepted")
        if tree_id not in self._known_trees:
            root_raw = next((r for r in raws if _is_root(r, tree_id, parsed)), None)
            if root_raw is None:
                raise InvalidChange("changes for an unknown object arrived without its root")
            tree = ObjectTree.from_root(self.id, self.acl, root_raw)
            if tree.id != tree_id:
                raise WrongTree("root change does not match the object id it was sent for")
            self.store.save_tree(tree)
            self._known_trees.add(tree_id)
            self._cache(tree)
            raws = [r for r in raws if r is not root_raw]
            first = AddResult(attached=[tree.root], heads=tree.heads)
            if not raws:
                self._notify(tree_id, first)
                return first
            created = True
        else:
            created = False
        tree = self.tree(tree_id)
        refused: list[tuple[bytes, ReplicaError]] = []
        if self.acl.removal_policy == "strict":
            raws, refused = self._strict_split(raws, parsed)
        res = tree.add(raws, persist=self.store.persister(), parsed=parsed)
        res.rejected.extend(refused)
        self._persist_acl([])  # merges a change's ACL head promoted from the shelf, if any
        if created:  # a new tree: listeners (push, counting) see its root with the rest
            res.attached.insert(0, tree.root)
        if res.attached:
            self._notify(tree_id, res)
        return res

    # --- snapshot-first fetch (docs/replica.md "Shallow trees") -------------------------------
    def add_base(self, tree_id: bytes, root_raw: bytes, base_raw: bytes, *,
                 parsed: Mapping[bytes, Change] | None = None) -> AddResult:
        """Sync path, snapshot-first: start a *shallow* tree from its root and a snapshot
        whose history is not fetched. The root is verified as always; the base must be a
        snapshot readable here, by an author who could write at its ACL head and was not
        removed at or after it (:func:`~p2psync.replica.snapshots.check_base`,
        :meth:`ObjectTree.attach_base`). Root, base and the base record are stored in one
        write; nothing is stored if any check fails. Only for a tree not held yet."""
        if self.acl.state.is_deleted(tree_id):
            raise ObjectDeleted("that object was deleted; its changes are no longer accepted")
        if tree_id in self._known_trees:
            raise InvalidChange("only a tree not held yet may start shallow")
        if not _is_root(root_raw, tree_id, parsed):
            raise InvalidChange("a shallow tree needs its root first")
        tree = ObjectTree.from_root(self.id, self.acl, root_raw)

        def persist(t: ObjectTree, res: AddResult) -> None:
            assert res.base is not None
            self.store.save_base(self.id, t.id, res.base, [t.root, *res.attached], res.heads)

        res = tree.attach_base(base_raw, check=lambda ch: check_base(self.acl, ch),
                               persist=persist, parsed=parsed)
        self._persist_acl([])  # merges the base's ACL head promoted from the shelf, if any
        self._known_trees.add(tree_id)
        self._cache(tree)
        res.attached.insert(0, tree.root)
        self._notify(tree_id, res)
        return res

    def complete_history(self, full: ObjectTree) -> AddResult:
        """History on demand: ``full`` is the whole tree of a shallow tree held here, fetched
        by an ordinary full sync into a separate tree (every change verified by
        :meth:`ObjectTree.add`). It must hold every change held here and wait for nothing;
        then the stored tree is replaced by it in one write (base record dropped) and
        memory follows (an open document reopens over it). Returns what was new."""
        tid = full.id
        cur = self.tree(tid)
        if not cur.shallow:
            return AddResult(heads=cur.heads)
        held = [c.raw for c in cur.changes() if c.id not in full]
        if held:
            full.add(held)  # changes after the base the responder did not send: ours
        if full.shallow or full.waiting_ids:
            raise InvalidChange("the fetched history is incomplete (parents still missing)")
        new = [c for c in full.changes() if c.id not in cur]
        self.store.replace_tree(self.id, tid, full.changes(), full.heads)
        self._trees.pop(tid, None)
        doc = self._live.get(tid)
        if doc is not None:  # the same document object, over the whole tree now
            doc.tree = full
            doc._reset()
        self._cache(full)
        res = AddResult(attached=new, heads=full.heads)
        if new:
            self._notify(tid, res)
        return res

    def snapshot_answer(self, tree_id: bytes, cap: int) -> tuple[tuple[bytes, ...],
                                                                  list[bytes]] | None:
        """``(heads, raws)`` answering a snapshot-first fetch of a tree (a member asking
        with no heads and ``from_snapshot``): the root, the latest snapshot S that
        :func:`~p2psync.replica.snapshots.check_base` accepts, then every change not in S's
        past, causal order. None (answer with the whole tree) when this replica cannot find
        one (no read key — a backup — or no snapshot), or when a change after S names a
        parent in S's past other than S's own parents (the receiver can check only those:
        S names them), or when root and S do not fit one batch of ``cap`` bytes."""
        if not self.has_tree(tree_id) or self.acl.state.is_deleted(tree_id):
            return None
        tree = self._trees.get(tree_id)
        if tree is None and (doc := self._live.get(tree_id)) is not None:
            tree = doc.tree
        if tree is None:  # not in memory: from the stored bytes, no ObjectTree built
            return self._snapshot_answer_stored(tree_id, cap)
        snap = latest_snapshot(tree, self.acl)
        if snap is None:
            return None
        allowed = {tree.root.id, snap.id, *snap.prev_ids}
        out = [tree.root.raw, snap.raw]
        if len(tree.root.raw) + len(snap.raw) > cap:
            return None
        for ch in tree.changes_for([snap.id]):
            if ch.id in allowed:
                continue
            if not allowed.issuperset(ch.prev_ids):
                return None
            allowed.add(ch.id)
            out.append(ch.raw)
        return tree.heads, out

    def _snapshot_answer_stored(self, tree_id: bytes, cap: int,
                                ) -> tuple[tuple[bytes, ...], list[bytes]] | None:
        """:meth:`snapshot_answer` from the store's rows (a topological order): the latest
        stored snapshot S, then every row after it. Loading the whole tree to find S was a
        third of a source's time in initial sync (docs/performance.md). Rows after S are
        exactly the changes not in S's past when (checked here) each names only the root, S,
        S's parents or earlier rows after S as parents and every head is S or such a row: a
        change outside S's past stored before S would have to reach a head through one of
        them. Anything else: None (the whole tree is sent)."""
        try:
            return self._stored_answer(tree_id, cap)
        except (DecodeError, ReplicaError) as exc:  # our disk, not the peer's fault
            raise StoreError(f"{self.store.label}: tree {tree_id.hex()[:16]}… is corrupt or "
                             f"tampered with: {exc}") from exc

    def _stored_answer(self, tree_id: bytes, cap: int,
                       ) -> tuple[tuple[bytes, ...], list[bytes]] | None:
        rows = self.store.raw_changes(tree_id)
        snap: Change | None = None
        at = 0
        for i in range(len(rows) - 1, 0, -1):
            cid, raw = rows[i]
            ch = parse_stored_change(raw, cid)
            try:
                check_base(self.acl, ch)
            except P2PSyncError:
                continue
            snap, at = ch, i
            break
        if snap is None or len(rows[0][1]) + len(snap.raw) > cap:
            return None
        allowed = {rows[0][0], snap.id, *snap.prev_ids}
        out = [rows[0][1], snap.raw]
        for cid, raw in rows[at + 1:]:
            if not allowed.issuperset(parse_stored_change(raw, cid).prev_ids):
                return None
            allowed.add(cid)
            out.append(raw)
        heads = self.store.get_heads(tree_id)
        if not allowed.issuperset(heads) or rows[0][0] in heads or any(
                h in snap.prev_ids for h in heads):
            return None
        return heads, out

    def refresh_acl(self) -> None:
        """Take in ACL records another process stored in our store (see :meth:`refresh`)."""
        raws = [raw for rid, raw in self.store.list_acl_records(self.id) if rid not in self.acl]
        if raws:
            self.add_acl_records(raws)

    def refresh(self, tree_id: bytes) -> AddResult | None:
        """Another process sharing our store (a backup cluster on one database) committed
        changes of this tree: take in the stored ones not in memory through the verified path
        (:meth:`add_changes`), so listeners (pushes to connected peers, head sync) see them as
        if a peer had pushed them here. A tree not in memory is loaded from the store whole;
        its heads are announced (peers fetch what they lack). None: nothing new."""
        if self.acl.state.is_deleted(tree_id):
            return None
        tree = self._trees.get(tree_id)
        if tree is None and (doc := self._live.get(tree_id)) is not None:
            tree = doc.tree  # in memory through a document an app holds: may be behind
        if tree is None and tree_id in self._known_trees:
            tree = self.tree(tree_id)  # loaded from the store: already current
            res = AddResult(attached=[tree.get(h) for h in tree.heads], heads=tree.heads)
            self._notify(tree_id, res)
            return res
        new = [raw for cid, raw in self.store.raw_changes(tree_id)
               if tree is None or cid not in tree]
        if not new:
            return None
        return self.add_changes(tree_id, new)

    def _strict_split(self, raws: Sequence[bytes], parsed: Mapping[bytes, Change] | None,
                      ) -> tuple[list[bytes], list[tuple[bytes, ReplicaError]]]:
        """Strict removal: take out changes by authors removed at or after their ACL head (and
        changes of the batch built on them) so the rest of the batch still attaches."""
        keep: list[bytes] = []
        refused: list[tuple[bytes, ReplicaError]] = []
        dropped: set[bytes] = set()
        for raw in raws:
            try:
                ch = _parsed(raw, parsed)
            except (DecodeError, ReplicaError):
                keep.append(raw)  # the tree refuses it with the right error
                continue
            gone = (self.acl.removed_after(ch.author, ch.acl_head)
                    if ch.acl_head in self.acl else None)
            if gone is not None or dropped.intersection(ch.prev_ids):
                dropped.add(ch.id)
                refused.append((ch.id, RemovedAuthor(
                    "author removed at or after the change's ACL head (strict removal policy)"
                    if gone is not None else "built on a change refused by strict removal")))
            else:
                keep.append(raw)
        return keep, refused

    def _notify(self, tree_id: bytes, res: AddResult) -> None:
        for listener in self.tree_listeners:
            listener(self.id, tree_id, res)

    # --- documents (app path) ----------------------------------------------------------------
    def new_document(self) -> Document:
        """Create a new, empty document (a new tree whose root carries an empty payload)."""
        if self.is_deleted():
            raise ObjectDeleted("this space was deleted")
        doctype = doctype_for(self.header.space_type)  # UnknownSpaceType before any write
        tree = ObjectTree.create(self.id, self.acl, self.me, doctype.root_plaintext())
        self.store.save_tree(tree)
        self._known_trees.add(tree.id)
        self._cache(tree)
        self._notify(tree.id, AddResult(attached=[tree.root], heads=tree.heads))
        return self.document(tree.id)

    def document(self, tree_id: bytes) -> Document:
        """The document of a tree (materialised lazily on first read or edit).

        The space keeps at most :attr:`max_open_documents` documents open, least recently used
        dropped first (their Automerge state, per-change caches and pinned trees are freed;
        the next call reopens from the store). A document with unflushed edits is never
        dropped, and one an app still holds stays the same object: this call returns it again
        rather than a second copy over a second tree."""
        doc = self._docs.get(tree_id)
        if doc is None:
            doc = self._live.get(tree_id)
            if doc is None:
                opened = doctype_for(self.header.space_type).open(
                    self.tree(tree_id), self.me, self.device, window=self.window,
                    persist=self._doc_persist)
                if not isinstance(opened, Document):  # the app API (edits, JSON) is Automerge's
                    raise UnknownSpaceType(f"space type {self.header.space_type!r} has no "
                                           "Automerge document API")
                doc = self._live[tree_id] = opened
            self._docs[tree_id] = doc
            self._drop_documents(keep=tree_id)
        else:
            self._docs.move_to_end(tree_id)
        return doc

    def _drop_documents(self, keep: bytes) -> None:
        """Forget the least recently used documents beyond :attr:`max_open_documents`."""
        excess = len(self._docs) - self.max_open_documents
        if excess <= 0:
            return
        for tid in list(self._docs):
            if excess <= 0:
                break
            if tid == keep or self._docs[tid].pending:
                continue
            self._idle(self._docs.pop(tid))
            excess -= 1

    def _idle(self, doc: Document) -> None:
        """A document goes idle: let its snapshot policy snapshot it (replica/snapshots.py),
        if this device may write it and it is open (only then is a ``save()`` cheap)."""
        pol = doc.snapshot_policy
        if (pol is not None and doc.materialized and not self.is_deleted(doc.tree.id)
                and self.acl.state.can_write(self.me.public)):
            pol.on_idle(doc)

    def settle(self) -> int:
        """Flush every document, then treat every open one as idle (snapshot what changed
        enough since its last snapshot): the node calls this when it closes, so that a device
        fetching these documents later verifies a snapshot instead of their history. Returns
        how many documents were flushed or snapshotted."""
        n = self.flush()
        for doc in list(self._live.values()):
            made = doc.snapshot_policy.made if doc.snapshot_policy is not None else 0
            self._idle(doc)
            n += doc.snapshot_policy is not None and doc.snapshot_policy.made > made
        return n

    def _doc_persist(self, tree: ObjectTree, res: AddResult) -> None:
        self._persist_acl([])  # merges a change's ACL head promoted from the shelf, if any
        self.store.persister()(tree, res)
        self._notify(tree.id, res)

    def flush(self) -> int:
        """Flush every document's pending edits; returns how many tree changes were made."""
        return sum(1 for d in list(self._live.values()) if d.flush() is not None)


def _id_raws(acl: Acl) -> list[tuple[bytes, bytes]]:
    return [(content_id(r), r) for r in acl.export()]


def _parsed(raw: bytes, parsed: Mapping[bytes, Change] | None) -> Change:
    ch = parsed.get(raw) if parsed is not None else None
    return parse_change(raw) if ch is None else ch


def _is_root(raw: bytes, tree_id: bytes, parsed: Mapping[bytes, Change] | None = None) -> bool:
    try:
        ch = _parsed(raw, parsed)
    except (DecodeError, ReplicaError):
        return False
    return ch.is_root and ch.id == tree_id


def _safe_record_id(raw: bytes) -> bytes:
    try:
        return decode_record(raw).id
    except (DecodeError, ReplicaError):
        return b""
