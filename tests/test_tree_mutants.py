"""Object tree: the bookkeeping that mutation testing of ``replica/tree.py`` left unguarded
(issue 21; docs/testing.md lists each mutant and the test here that kills it).

What a tree reports about refused, waiting and evicted changes is what the sync layer acts on
(strikes, re-fetches), and the replay order is what every replica applies content in: each is
pinned here against an independent expectation.
"""

from __future__ import annotations

import os
import time

import pytest

from p2psync.crypto.keys import AccountKey
from p2psync.errors import AccessDenied, StoreError
from p2psync.replica.change import build_change, parse_change
from p2psync.replica.tree import AddResult, ObjectTree
from tests.replica_helpers import SPACE_ID, GrowingAcl, make_owner, random_dag

OWNER = make_owner(11)
BASE = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"root", timestamp=0)
DAG = random_dag(OWNER, BASE.id, 30, seed=21)
STRANGER = AccountKey(b"\x42" * 32)


def fresh() -> ObjectTree:
    return ObjectTree.from_root(SPACE_ID, OWNER.gate(), BASE.root.raw)


def change(tree_id: bytes, prev: list[bytes], *, author: AccountKey | None = None,
           acl_head: bytes | None = None, body: bytes = b"x") -> bytes:
    return build_change(author or OWNER.account, OWNER.key, body, space_id=SPACE_ID,
                        tree_id=tree_id, prev_ids=prev, acl_head=acl_head or OWNER.acl_root,
                        read_key_id=OWNER.acl_root).raw


def kahn_smallest_first(t: ObjectTree) -> list[bytes]:
    """The documented replay order, computed independently (quadratic, obviously right)."""
    left = {c.id: set(c.prev_ids) for c in t.changes()}
    out: list[bytes] = []
    while left:
        ready = min(cid for cid, prev in left.items() if not prev)
        out.append(ready)
        del left[ready]
        for prev in left.values():
            prev.discard(ready)
    return out


def test_replay_order_is_exactly_kahn_smallest_id_first_and_follows_every_attach() -> None:
    t = fresh()
    t.add(DAG[:10])
    assert [c.id for c in t.replay_order()] == kahn_smallest_first(t)  # cached now
    t.add(DAG[10:])
    assert [c.id for c in t.replay_order()] == kahn_smallest_first(t)  # the cache was dropped
    assert len(t.replay_order()) == len(t) == 1 + len(DAG)
    mine = t.create_change(OWNER.account, b"local")
    assert t.replay_order()[-1].id == mine.id


def test_replay_order_after_a_rolled_back_add_is_the_order_before() -> None:
    t = fresh()
    t.add(DAG[:5])
    before = [c.id for c in t.replay_order()]

    def boom(tree: ObjectTree, result: AddResult) -> None:
        assert len(tree.replay_order()) > len(before)  # seen from inside: it had attached
        raise StoreError("disk full")

    with pytest.raises(StoreError):
        t.add(DAG[5:], persist=boom)
    assert [c.id for c in t.replay_order()] == before


def test_a_waiting_change_refused_when_its_parent_comes_is_reported_not_attached() -> None:
    t = fresh()
    parent = change(t.id, [t.id])
    # a change by someone who may not write waits for its parent: the gate decides only then
    bad = change(t.id, [parse_change(parent).id], author=STRANGER)
    good = change(t.id, [parse_change(parent).id], body=b"y")
    r = t.add([bad, good])
    assert set(r.waiting) == {parse_change(bad).id, parse_change(good).id}
    r = t.add([parent])
    assert [c.raw for c in r.attached] == [parent, good]
    assert [cid for cid, _ in r.rejected] == [parse_change(bad).id]
    assert isinstance(r.rejected[0][1], AccessDenied)
    assert parse_change(bad).id not in t and t.waiting_ids == []
    assert r.waiting == [] and set(t.heads) == {parse_change(good).id}


def test_a_refused_change_in_the_batch_itself_raises_and_leaves_nothing() -> None:
    t = fresh()
    ok = change(t.id, [t.id])
    bad = change(t.id, [t.id], author=STRANGER)
    with pytest.raises(AccessDenied):
        t.add([ok, bad])
    assert len(t) == 1 and t.waiting_ids == [] and t.heads == (t.id,)


def test_add_reports_only_the_batch_changes_still_waiting() -> None:
    t = fresh()
    a, b = DAG[5], DAG[6]
    r1 = t.add([a])
    assert r1.waiting == [parse_change(a).id]
    r2 = t.add([b])
    assert parse_change(a).id not in r2.waiting  # earlier-waiting changes are not re-reported
    r3 = t.add(DAG[:5])
    assert r3.waiting == [] or set(r3.waiting) <= {parse_change(x).id for x in DAG[:5]}


def test_eviction_cleans_both_indexes_and_keeps_the_younger_sibling() -> None:
    gate = GrowingAcl(OWNER.account.public, OWNER.acl_root, OWNER.key)
    t = ObjectTree.from_root(SPACE_ID, gate, BASE.root.raw)
    t.max_waiting = 3
    missing = os.urandom(32)
    unknown_head = os.urandom(32)
    old_orphan = change(t.id, [missing], body=b"1")
    acl_wait = change(t.id, [t.id], acl_head=unknown_head, body=b"2")
    young_orphan = change(t.id, [missing], body=b"3")
    acl_wait2 = change(t.id, [t.id], acl_head=unknown_head, body=b"4")
    r = t.add([old_orphan, acl_wait, young_orphan])
    assert r.evicted == [] and len(t.waiting_ids) == 3
    r = t.add([acl_wait2])  # one too many: the oldest (old_orphan) goes
    assert r.evicted == [parse_change(old_orphan).id]
    assert r.waiting == [parse_change(acl_wait2).id]
    assert t._blocked_on == {missing: [parse_change(young_orphan).id]}
    r = t.add([change(t.id, [os.urandom(32)], body=b"5"), change(t.id, [os.urandom(32)])])
    assert r.evicted == [parse_change(acl_wait).id, parse_change(young_orphan).id]
    assert missing not in t._blocked_on  # an emptied index entry is dropped
    assert t._acl_blocked == {unknown_head: [parse_change(acl_wait2).id]}
    gate.known.add(unknown_head)
    assert [c.id for c in t.recheck_waiting().attached] == [parse_change(acl_wait2).id]
    assert t._acl_blocked == {} and len(t.waiting_ids) == 2


def test_eviction_bound_is_exactly_max_waiting() -> None:
    t = fresh()
    t.max_waiting = 4
    orphans = [change(t.id, [os.urandom(32)], body=bytes([i])) for i in range(4)]
    assert t.add(orphans).evicted == []
    assert len(t.waiting_ids) == 4
    assert t.add([change(t.id, [os.urandom(32)], body=b"5")]).evicted == [
        parse_change(orphans[0]).id]
    assert len(t.waiting_ids) == 4


def test_create_change_defaults_are_a_normal_change_stamped_now() -> None:
    t = fresh()
    ch = t.create_change(OWNER.account, b"p")
    sealed = ch.open(OWNER.key)
    assert sealed.snapshot is False and sealed.plaintext == b"p"
    assert abs(sealed.timestamp - time.time() * 1000) < 60_000
    snap = t.create_change(OWNER.account, b"s", snapshot=True, timestamp=5)
    assert (snap.open(OWNER.key).snapshot, snap.open(OWNER.key).timestamp) == (True, 5)
    assert snap.prev_ids == (ch.id,) and t.heads == (snap.id,)


def test_local_writes_name_the_authors_write_position_in_a_real_acl() -> None:
    """With a real ACL the head a local change names depends on who writes (mutant:
    ``write_position(None)`` — nobody may write, every local edit refused)."""
    from p2psync.replica.acl import Acl
    from tests.acl_dsl import SPACE, account

    owner = account("owner")
    acl = Acl.create(SPACE, owner)
    t = ObjectTree.create(SPACE, acl, owner, b"root")
    ch = t.create_change(owner, b"x")
    assert (ch.acl_head, ch.read_key_id) == acl.write_position(owner.public)
    assert ch.decrypt(acl.keys_of(owner)[ch.read_key_id]) == b"x"


class _CountingDict(dict):  # type: ignore[type-arg]
    lookups = 0

    def __getitem__(self, key: object) -> object:
        type(self).lookups += 1
        return super().__getitem__(key)


def test_changes_for_stops_where_the_histories_meet() -> None:
    """``changes_for`` costs what the peer lacks, not the tree size: with a 120-change chain and
    a peer one change behind, it looks at a handful of changes (mutants that never let the
    count of "ours only" frontier nodes reach zero, or pop the heads in the wrong order, walk
    the whole chain — same answer, 40× the work, on every sync of a long document)."""
    t = fresh()
    prev = t.id
    raws = []
    for i in range(120):
        raw = change(t.id, [prev], body=b"c%d" % i)
        raws.append(raw)
        prev = parse_change(raw).id
    t.add(raws)
    behind = parse_change(raws[-2]).id
    counting = _CountingDict(t._changes)
    t._changes = counting
    _CountingDict.lookups = 0
    got = t.changes_for([behind])
    assert [c.raw for c in got] == [raws[-1]]
    assert _CountingDict.lookups <= 4, _CountingDict.lookups
    _CountingDict.lookups = 0
    assert t.changes_for(list(t.heads)) == [] and _CountingDict.lookups <= 2


def test_changes_for_stops_when_a_shared_parent_turns_out_to_be_theirs() -> None:
    """Our walk reaches the fork point first (it is colored "ours"), then the peer's head
    claims it: the "ours only" count must drop then, or the walk goes on to the root
    (mutant: ``ours_left += 1`` on the re-colouring)."""
    t = fresh()
    prev = t.id
    for i in range(100):
        raw = change(t.id, [prev], body=b"c%d" % i)
        t.add([raw])
        prev = parse_change(raw).id
    theirs = change(t.id, [prev], body=b"theirs")
    ours = change(t.id, [prev], body=b"ours")
    t.add([theirs])
    t.add([ours])
    t._changes = _CountingDict(t._changes)
    _CountingDict.lookups = 0
    assert [c.raw for c in t.changes_for([parse_change(theirs).id])] == [ours]
    assert _CountingDict.lookups <= 4, _CountingDict.lookups


def test_parallel_verification_works_from_a_fresh_pool_with_two_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two cores (a small board) give a pool of one thread plus the caller; a pool sized
    ``VERIFY_WORKERS - 2`` (zero threads) fails on its first large batch (mutant)."""
    from p2psync.replica import tree as tree_mod

    monkeypatch.setattr(tree_mod, "VERIFY_WORKERS", 2)
    monkeypatch.setattr(tree_mod, "_pool", None)
    t = fresh()
    assert len(t.add(DAG).attached) == len(DAG) >= tree_mod.PARALLEL_VERIFY_MIN


def test_stored_changes_of_both_formats_take_the_fast_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a document re-parses every stored change: well-formed rows of both formats must
    not fall back to the strict parser (mutants that break a step of the fast decode still
    give the right result through the fallback, at 3-4× the cost — issue 13's store open).
    The id is still checked on the fast path."""
    from p2psync.codec import content_id
    from p2psync.errors import IdMismatch
    from p2psync.replica import tree as tree_mod
    from p2psync.replica.change import LEGACY_VERSION

    legacy = [build_change(OWNER.account, OWNER.key, b"old", space_id=SPACE_ID,
                           tree_id=BASE.id, prev_ids=[BASE.id], acl_head=OWNER.acl_root,
                           read_key_id=OWNER.acl_root, timestamp=ts, snapshot=ts > 0,
                           version=LEGACY_VERSION).raw
              for ts in (0, 1_764_000_000_000, 2**63 - 1)]  # both bounds of the clear time
    rows = [BASE.root.raw, *DAG, *legacy]  # DAG holds merges (2 and 3 parents)
    want = [parse_change(raw) for raw in rows]

    def strict(*_a: object, **_k: object) -> object:
        raise AssertionError("fell back to the strict parser")

    monkeypatch.setattr(tree_mod, "parse_change", strict)
    assert [tree_mod.parse_stored_change(raw, content_id(raw)) for raw in rows] == want
    with pytest.raises(IdMismatch):
        tree_mod.parse_stored_change(DAG[0], content_id(DAG[1]))


def test_the_strict_fallback_keeps_the_id_check_and_typed_errors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When the fast path is off (a ``Change`` class this module cannot fill) or a row is
    oversized, ``parse_stored_change`` is the strict parser: the row's id is still checked
    (mutants: ``expected_id`` dropped — changed bytes load as a valid change) and a damaged row
    is a typed error (mutants: ``parse_change(None)`` — a TypeError)."""
    from p2psync.codec import content_id
    from p2psync.errors import DecodeError, IdMismatch
    from p2psync.replica import tree as tree_mod
    from p2psync.replica.change import MAX_CHANGE_SIZE

    big = b"\x00" * (MAX_CHANGE_SIZE + 1)
    with pytest.raises(DecodeError):
        tree_mod.parse_stored_change(big, content_id(big))
    monkeypatch.setattr(tree_mod, "_FAST", False)
    assert tree_mod.parse_stored_change(DAG[0], content_id(DAG[0])) == parse_change(DAG[0])
    with pytest.raises(IdMismatch):
        tree_mod.parse_stored_change(DAG[0], content_id(DAG[1]))


def test_interned_fields_of_stored_changes_are_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast parser shares repeated values (space, tree, ACL head, read key, author) between
    changes through a cache: each change must still get its own values, starting from an
    empty cache (mutants: a value looked up under the wrong key, or ``None`` stored — another
    change's author or space, or ``None``, would be attributed to a stored change)."""
    from p2psync.codec import content_id
    from p2psync.replica import tree as tree_mod

    other = make_owner(12)
    other_base = ObjectTree.create("otherspace.2", other.gate(), other.account, b"r",
                                   timestamp=0)
    rows = [BASE.root.raw, *DAG, other_base.root.raw]
    for owner, space, tree_id in ((OWNER, SPACE_ID, BASE.id),
                                  (other, "otherspace.2", other_base.id)):
        rows.append(build_change(owner.account, owner.key, b"z", space_id=space,
                                 tree_id=tree_id, prev_ids=[tree_id], acl_head=b"\x0a" * 32,
                                 read_key_id=b"\x0b" * 32).raw)
    monkeypatch.setattr(tree_mod, "_shared", {})
    got = [tree_mod.parse_stored_change(raw, content_id(raw)) for raw in rows]
    assert got == [parse_change(raw) for raw in rows]
    assert any(len(c.prev_ids) > 1 for c in got)  # merges too


def test_add_reports_duplicates_by_id_and_reuses_the_callers_parse(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``add`` names each duplicate (attached, waiting, or twice in the batch) by its id, and
    does not parse again what the sync layer already parsed (mutants: ``None`` reported;
    ``parsed`` ignored — every received change parsed twice)."""
    from p2psync.replica import tree as tree_mod

    t = fresh()
    t.add(DAG[:3])
    orphan = DAG[10]
    t.add([orphan])  # waits for its parents
    ids = [parse_change(raw).id for raw in (DAG[0], orphan, DAG[3])]
    assert t.add([DAG[0], orphan, DAG[3], DAG[3]]).duplicates == [ids[0], ids[1], ids[2]]
    parsed = {raw: parse_change(raw) for raw in DAG[4:8]}

    def no_parse(*_a: object, **_k: object) -> object:
        raise AssertionError("parsed again")

    monkeypatch.setattr(tree_mod, "parse_change", no_parse)
    r = t.add(DAG[4:8], parsed=parsed)
    assert {c.id for c in parsed.values()} <= {c.id for c in r.attached} | set(r.waiting)


def test_changes_released_by_an_acl_recheck_go_through_the_persist_hook() -> None:
    """A change that waited for its ACL head and is released by ``recheck_waiting`` is
    written by the same persist hook as any other (mutant: the hook dropped — the change
    attached in memory only, lost at the next restart), and a failing write rolls it back."""
    gate = GrowingAcl(OWNER.account.public, OWNER.acl_root, OWNER.key)
    t = ObjectTree.from_root(SPACE_ID, gate, BASE.root.raw)
    head = os.urandom(32)
    waiting = change(t.id, [t.id], acl_head=head)
    assert t.add([waiting]).waiting == [parse_change(waiting).id]
    gate.known.add(head)
    seen: list[list[bytes]] = []

    def refuse(tree: ObjectTree, result: AddResult) -> None:
        seen.append([c.raw for c in result.attached])
        raise StoreError("disk full")

    with pytest.raises(StoreError):
        t.recheck_waiting(persist=refuse)
    assert seen == [[waiting]] and t.waiting_ids == [parse_change(waiting).id]
    assert t.recheck_waiting(persist=lambda tree, result: seen.append(
        [c.raw for c in result.attached])).attached[0].raw == waiting
    assert seen[-1] == [waiting] and t.heads == (parse_change(waiting).id,)


def test_a_stored_row_cut_right_after_its_header_prefix_is_a_decode_error() -> None:
    """Store open's parent scan (``_stored_parents``) on a row that ends right after the
    ``[2, space, tree`` prefix: no parent count to read, so the row goes to the parser, which
    refuses it with the typed error (mutant ``_stored_parents`` 8: ``k <= len(raw)`` read one
    byte past the row — IndexError out of store open instead of a corrupt-row error)."""
    from p2psync.codec import pack
    from p2psync.errors import DecodeError, ReplicaError

    prefix = b"\x97\x02" + pack(SPACE_ID) + b"\xc4\x20" + BASE.id
    row = b"\x92\xc5\x00\x00\x92\xc5" + prefix  # the header's prefix at byte 6, then nothing
    with pytest.raises((DecodeError, ReplicaError)):
        ObjectTree.from_trusted(SPACE_ID, OWNER.gate(), [(None, BASE.root.raw), (None, row)],
                                tree_id=BASE.id)


def test_a_stored_row_naming_a_parent_twice_is_refused_at_open() -> None:
    """The parent scan of store open takes a merge's parents only when they are as many
    distinct 32-byte ids as the header says; a row naming one parent twice goes to the
    parser and is refused at open, as the strict parser refuses it (mutant
    ``_stored_parents`` 39: ``or`` — the row loaded with a duplicate parent)."""
    from p2psync.codec import pack
    from p2psync.crypto.signed import make_signed
    from p2psync.errors import DecodeError, ReplicaError
    from p2psync.replica.change import CHANGE_DOMAIN

    header = pack([2, SPACE_ID, BASE.id, [BASE.id, BASE.id], OWNER.acl_root, OWNER.acl_root,
                   OWNER.account.public])
    row = make_signed(OWNER.account, CHANGE_DOMAIN, pack([header, b"\x00" * 48]))
    with pytest.raises((DecodeError, ReplicaError)):
        parse_change(row)
    with pytest.raises((DecodeError, ReplicaError)):
        ObjectTree.from_trusted(SPACE_ID, OWNER.gate(), [(None, BASE.root.raw), (None, row)],
                                tree_id=BASE.id)


@pytest.mark.parametrize("field", ["tree_id", "space_id", "version"])
def test_first_use_refuses_a_change_that_is_not_what_open_read(field: str) -> None:
    """A change loaded lazily at open is filled in on first use only if its bytes still say
    the tree, space and format open read (mutants ``_complete_stored`` 16, 17: two of the
    three compared with ``and`` — a tree or format mismatch alone passed)."""
    from p2psync.errors import InvalidChange

    tree = ObjectTree.from_trusted(SPACE_ID, OWNER.gate(), [(None, BASE.root.raw),
                                                             (None, DAG[0])], tree_id=BASE.id)
    ch = tree.get(parse_change(DAG[0]).id)
    assert "payload" not in ch.__dict__  # loaded lazily
    if field == "version":  # the same tree, space and parents, in the legacy format
        ch.__dict__["raw"] = build_change(
            OWNER.account, OWNER.key, b"x", space_id=SPACE_ID, tree_id=BASE.id,
            prev_ids=ch.prev_ids, acl_head=OWNER.acl_root, read_key_id=OWNER.acl_root,
            version=1).raw
    else:
        ch.__dict__[field] = b"\x07" * 32 if field == "tree_id" else "other.space"
    with pytest.raises(InvalidChange, match="does not say what the store open read"):
        ch.payload  # noqa: B018


def test_attach_base_is_all_or_nothing_and_reports_what_it_did() -> None:
    """A shallow base whose write fails leaves the tree exactly as it was (attached change,
    root head, base and vouched-for ids, replay cache all rolled back, the write's own error
    raised); on success the result names the base and the heads the store must record, the
    caller's parse is reused, and the base's unheld parent counts as vouched for (mutants
    ``attach_base`` 1, 2, 41, 46-48, 54, 61-64, ``holds_or_vouches`` 1)."""
    parent = parse_change(DAG[5]).id
    base = build_change(OWNER.account, OWNER.key, b"s", space_id=SPACE_ID, tree_id=BASE.id,
                        prev_ids=[parent], acl_head=OWNER.acl_root,
                        read_key_id=OWNER.acl_root, snapshot=True)
    t = fresh()
    assert [c.id for c in t.replay_order()] == [BASE.id]  # the cache filled
    seen: list[tuple[tuple[bytes, ...], bytes | None]] = []

    def fail(tree: ObjectTree, res: AddResult) -> None:
        seen.append((res.heads, res.base))
        raise StoreError("disk full")

    with pytest.raises(StoreError, match="disk full"):
        t.attach_base(base.raw, check=lambda ch: None, persist=fail)
    assert seen == [((base.id,), base.id)]
    assert len(t) == 1 and base.id not in t and t.heads == (BASE.id,)
    assert not t.shallow and not t.holds_or_vouches(parent)
    assert [c.id for c in t.replay_order()] == [BASE.id]
    res = t.attach_base(base.raw, check=lambda ch: None, parsed={base.raw: base})
    assert res.attached[0] is base and res.base == base.id
    assert res.heads == t.heads == (base.id,)
    assert t.holds_or_vouches(parent) and t.holds_or_vouches(base.id)
    assert not t.holds_or_vouches(b"\x07" * 32)


def test_store_open_refuses_another_trees_root_under_this_trees_id() -> None:
    """A root row whose stored id is right for its bytes but names another tree is refused
    (hand mutant of ``from_trusted``, a classmethod mutmut does not mutate: the
    ``tree.id != tree_id`` check dropped — another tree loaded under this one's id)."""
    from p2psync.errors import IdMismatch

    other = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"other", timestamp=1)
    with pytest.raises(IdMismatch, match="not the tree"):
        ObjectTree.from_trusted(SPACE_ID, OWNER.gate(), [(other.id, other.root.raw)],
                                tree_id=BASE.id)
