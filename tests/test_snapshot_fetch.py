"""Snapshot-first fetch over the sync cores and over real sockets (issue 13 step 3).

A fresh member asks ``FULL_SYNC_REQUEST(from_snapshot=true)`` for a tree it does not hold;
the responder answers root + latest snapshot + what follows; the member verifies only those.
Hostile cases: a lying responder sending a non-writer's snapshot, an answer whose later
changes name parents the snapshot does not vouch for, an oversized ``snapshot_path``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync.api import ApiServer
from p2psync.crypto.ids import short_hash
from p2psync.errors import DecodeError
from p2psync.replica.acl_records import Role
from p2psync.replica.change import Change, build_change
from p2psync.replica.document import ROOT, Document
from p2psync.replica.space import Space
from p2psync.sync.messages import FullSyncRequest, FullSyncResponse, Message, decode, encode
from p2psync.sync.pull import HistoryPull, TreePull
from tests.conftest import Fleet
from tests.sync_helpers import close_all, converged, fast_config, make_node, wait_any
from tests.test_agent import rpc
from tests.test_sync_cores import _Source, drive, joined, strikes


class Counter:
    """Counts Ed25519 verifications of tree changes (all threads)."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    c = Counter()
    real = Change.verify_signature

    def counting(self: Change) -> None:
        with c._lock:
            c.n += 1
        real(self)

    monkeypatch.setattr(Change, "verify_signature", counting)
    yield c


def _edit(doc: Document, n: int, start: int = 0) -> None:
    for j in range(start, start + n):
        with doc.edit() as e:
            e.put(ROOT, f"k{j}", j)


def _snapshotted_doc(space: Space, before: int = 30, after: int = 2) -> tuple[Document, Change]:
    doc = space.new_document()
    doc.snapshot_policy = None
    _edit(doc, before)
    snap = doc.snapshot()
    assert snap is not None
    _edit(doc, after, before)
    return doc, snap


# --- sans-IO: the cores -------------------------------------------------------------------------
def test_a_fresh_member_fetches_from_the_snapshot(tmp_path: Path,
                                                  verifications: Counter) -> None:
    _a, b, pair, space = joined(tmp_path)
    doc, _snap = _snapshotted_doc(space)
    tid = doc.tree.id
    asked: list[FullSyncRequest] = []

    def answer(req: Message) -> Message:
        assert isinstance(req, FullSyncRequest)
        asked.append(req)
        return pair.ra.answer(req, 0.0).message

    before = verifications.n
    assert strikes(drive(TreePull(pair.sb, _Source(), space.id, tid), pair.ra,
                         answer=answer)) == []
    assert asked[0].from_snapshot and asked[0].heads == ()
    mine = b.replicas.spaces[space.id]
    assert mine.tree(tid).shallow and mine.tree(tid).heads == doc.tree.heads
    assert verifications.n - before == 1 + 1 + 2  # root, snapshot, two changes after it
    assert mine.document(tid).to_json() == doc.to_json()


def test_a_backup_or_snapshot_first_off_fetches_whole_trees(tmp_path: Path) -> None:
    _a, b, pair, space = joined(tmp_path)
    doc, _ = _snapshotted_doc(space)
    pair.sb.config.snapshot_first = False
    drive(TreePull(pair.sb, _Source(), space.id, doc.tree.id), pair.ra)
    tree = b.replicas.spaces[space.id].tree(doc.tree.id)
    assert not tree.shallow and len(tree) == len(doc.tree)


def _liar(pair_answer: FullSyncResponse, changes: list[bytes]) -> FullSyncResponse:
    return FullSyncResponse(pair_answer.space_id, pair_answer.object_id, pair_answer.heads,
                            tuple(changes), False)


def test_a_lying_responder_cannot_make_a_non_writers_snapshot_a_base(tmp_path: Path) -> None:
    _a, b, pair, space = joined(tmp_path, Role.READER)
    doc, _snap = _snapshotted_doc(space)
    tid = doc.tree.id
    # the reader (b's own account here stands for any non-writer) signs a "snapshot"
    acl = space.acl
    kid = acl.state.current_key_id
    key = acl.read_key(kid)
    assert key is not None
    fake = build_change(pair.sb.replicas.account, key, b"\x93\x01\x90\x90", space_id=space.id,
                        tree_id=tid, prev_ids=doc.tree.heads, acl_head=acl.heads[-1],
                        read_key_id=kid, snapshot=True)
    b.replicas.spaces[space.id].add_acl_records(space.acl_records())

    def answer(req: Message) -> Message:
        assert isinstance(req, FullSyncRequest)
        honest = pair.ra.answer(req, 0.0).message
        assert isinstance(honest, FullSyncResponse)
        return _liar(honest, [doc.tree.root.raw, fake.raw])

    eff = drive(TreePull(pair.sb, _Source(), space.id, tid), pair.ra, answer=answer)
    assert any("shallow base refused" in s for s in strikes(eff))
    assert not b.replicas.spaces[space.id].has_tree(tid)
    assert b.store.count_changes(tid) == 0


def test_changes_naming_parents_the_snapshot_does_not_vouch_for_stay_out(
        tmp_path: Path) -> None:
    a, b, pair, space = joined(tmp_path)
    doc, snap = _snapshotted_doc(space, after=0)
    tid = doc.tree.id
    acl = space.acl
    kid = acl.state.current_key_id
    key = acl.read_key(kid)
    assert key is not None
    deep = doc.tree.changes()[4]  # in S's past, not one of S's parents
    assert deep.id not in snap.prev_ids
    hidden = build_change(a.account, key, b"z", space_id=space.id, tree_id=tid,
                          prev_ids=[deep.id], acl_head=acl.heads[-1], read_key_id=kid)

    def answer(req: Message) -> Message:
        assert isinstance(req, FullSyncRequest)
        honest = pair.ra.answer(req, 0.0).message
        assert isinstance(honest, FullSyncResponse)
        return _liar(honest, [doc.tree.root.raw, snap.raw, hidden.raw])

    drive(TreePull(pair.sb, _Source(), space.id, tid), pair.ra, answer=answer)
    tree = b.replicas.spaces[space.id].tree(tid)
    assert tree.shallow and hidden.id not in tree and len(tree) == 2
    # and an honest responder does not answer snapshot-first for such a tree: whole tree
    space.add_changes(tid, [hidden.raw])
    assert space.snapshot_answer(tid, 1 << 20) is None


def test_a_huge_snapshot_path_is_refused_by_the_decoder() -> None:
    ok = FullSyncRequest("s.1", b"\x01" * 32, (), (b"\x02" * 32,) * 64, (), 0, True)
    assert decode(encode(ok, 1)).message == ok
    # ``encode`` does not check the schema: these are the bytes a hostile peer could send
    huge = FullSyncRequest("s.1", b"\x01" * 32, (), (b"\x02" * 32,) * 65, (), 0, True)
    with pytest.raises(DecodeError, match=r"length <= 64 - at `\$\[3\]`"):
        decode(encode(huge, 1))


# --- real sockets -------------------------------------------------------------------------------
async def _fetch(tmp_path: Path, name: str, snapshot_first: bool,
                 verifications: Counter) -> tuple[int, bool]:
    a = await make_node(tmp_path, f"{name}-a")
    b = await make_node(tmp_path, f"{name}-b",
                        config=fast_config(snapshot_first=snapshot_first))
    try:
        space = a.create_space()
        docs = []
        for _ in range(4):
            d = space.new_document()
            _edit(d, 20)
            docs.append(d)
        space.settle()  # idle documents snapshot (what the node does when it closes)
        for d in docs:
            _edit(d, 2, 100)
        before = verifications.n
        mine = await b.join(a.invite(space.id))
        await wait_any([a, b], lambda: converged([a, b], space.id)
                       and len(mine.tree_ids()) == len(docs))
        n = verifications.n - before
        for d in docs:
            assert mine.document(d.tree.id).to_json() == d.to_json()
        shallow = all(mine.tree(d.tree.id).shallow for d in docs)
        if shallow:  # history on demand, over the same connection
            assert await b.fetch_history(space.id, docs[0].tree.id)
            tree = mine.tree(docs[0].tree.id)
            assert not tree.shallow and len(tree) == len(docs[0].tree)
        return n, shallow
    finally:
        await close_all([a, b])


async def test_two_nodes_fetch_snapshot_first_over_tcp(tmp_path: Path,
                                                       verifications: Counter) -> None:
    n_snap, shallow = await _fetch(tmp_path, "snap", True, verifications)
    assert shallow
    assert n_snap == 4 * (1 + 1 + 2)  # per document: root, snapshot, two changes after it
    n_full, shallow = await _fetch(tmp_path, "full", False, verifications)
    assert not shallow and n_full == 4 * (1 + 20 + 1 + 2)


# --- history on demand ------------------------------------------------------------------------
def test_history_on_demand_makes_the_tree_whole(tmp_path: Path) -> None:
    _a, b, pair, space = joined(tmp_path)
    doc, snap = _snapshotted_doc(space)
    tid = doc.tree.id
    drive(TreePull(pair.sb, _Source(), space.id, tid), pair.ra)
    mine = b.replicas.spaces[space.id]
    d = mine.document(tid)  # an app holds the document across the swap
    assert mine.tree(tid).shallow and snap.prev_ids[0] not in mine.tree(tid)
    assert strikes(drive(HistoryPull(pair.sb, _Source(), space.id, tid), pair.ra)) == []
    tree = mine.tree(tid)
    assert not tree.shallow and len(tree) == len(doc.tree) and tree.heads == doc.tree.heads
    assert d.tree is tree and d.to_json() == doc.to_json()
    assert b.store.shallow_bases(tid) == frozenset()
    assert b.store.raw_changes(tid)[0][0] == tid  # root first again
    again = Space.open(b.store, b.account, b.device.public, space.id)
    assert len(again.tree(tid)) == len(doc.tree) and not again.tree(tid).shallow


def test_history_from_a_liar_or_a_shallow_peer_changes_nothing(tmp_path: Path) -> None:
    _a, b, pair, space = joined(tmp_path)
    doc, _ = _snapshotted_doc(space)
    tid = doc.tree.id
    drive(TreePull(pair.sb, _Source(), space.id, tid), pair.ra)
    mine = b.replicas.spaces[space.id]
    held = len(mine.tree(tid))

    def forged(req: Message) -> Message:
        honest = pair.ra.answer(req, 0.0).message
        assert isinstance(honest, FullSyncResponse)
        raws = list(honest.changes)
        bad = bytearray(raws[3])
        bad[-1] ^= 1
        raws[3] = bytes(bad)
        return _liar(honest, raws)

    core = HistoryPull(pair.sb, _Source(), space.id, tid)
    with pytest.raises(Exception, match=r"[Ss]ignature"):
        drive(core, pair.ra, answer=forged)
    assert mine.tree(tid).shallow and len(mine.tree(tid)) == held

    def partial(req: Message) -> Message:  # a shallow peer: root, base and after only
        honest = pair.ra.answer(req, 0.0).message
        assert isinstance(honest, FullSyncResponse)
        return _liar(honest, [c.raw for c in mine.tree(tid).changes()])

    with pytest.raises(Exception, match="incomplete"):
        drive(HistoryPull(pair.sb, _Source(), space.id, tid), pair.ra, answer=partial)
    assert mine.tree(tid).shallow and len(mine.tree(tid)) == held


async def test_doc_history_through_the_agent_fetches_the_whole_history(fleet: Fleet) -> None:
    a, b = await fleet.agent("a"), await fleet.agent("b")
    sb = fleet.track(await ApiServer(b).start())
    space = a.node.create_space()
    doc, _ = _snapshotted_doc(space)
    joined_space = await b.join(a.node.invite(space.id).encode())
    await wait_any([a.node, b.node], lambda: converged([a.node, b.node], space.id)
                   and joined_space.has_tree(doc.tree.id))
    assert joined_space.tree(doc.tree.id).shallow
    [h] = await rpc(sb.path, {"id": 1, "op": "doc.history", "params": {
        "space": space.id, "doc": short_hash(doc.tree.id)}})
    assert h["ok"], h
    assert len(h["result"]) == len(doc.tree)  # every change, not only base + after
    assert not joined_space.tree(doc.tree.id).shallow
