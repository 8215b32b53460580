"""Object tree: verification, waiting, heads, replay order, changes_for, rollback."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.crypto.keys import AccountKey
from p2psync.errors import (
    AccessDenied,
    BadSignature,
    DecodeError,
    IdMismatch,
    StoreError,
    UnknownReadKey,
    WrongTree,
)
from p2psync.replica.change import build_change, parse_change
from p2psync.replica.tree import AddResult, ObjectTree, heads_digest
from tests.replica_helpers import SPACE_ID, GrowingAcl, make_owner, random_dag

OWNER = make_owner(1)
BASE = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"root", timestamp=0)
DAG = random_dag(OWNER, BASE.id, 40, seed=5)
IDS = [parse_change(r).id for r in DAG]


def fresh(gate: object | None = None) -> ObjectTree:
    return ObjectTree.from_root(SPACE_ID, gate or OWNER.gate(), BASE.root.raw)  # type: ignore[arg-type]


def full() -> ObjectTree:
    t = fresh()
    t.add(DAG)
    return t


def snapshot_state(t: ObjectTree) -> tuple[object, ...]:
    return (t.heads, len(t), sorted(t.waiting_ids), [c.id for c in t.changes()])


def test_out_of_order_changes_wait_then_attach() -> None:
    t = fresh()
    r = t.add(DAG[5:])
    assert len(t) + len(t.waiting_ids) == 1 + len(DAG) - 5
    assert t.waiting_ids  # some depend on the first five
    r2 = t.add(DAG[:5])
    assert not t.waiting_ids and len(t) == 1 + len(DAG)
    attached = [c.id for c in r.attached] + [c.id for c in r2.attached]
    assert sorted(attached) == sorted(IDS)
    assert t.heads == full().heads
    pos = {c.id: i for i, c in enumerate(t.changes())}
    assert all(pos[p] < pos[c.id] for c in t.changes() for p in c.prev_ids)


def test_duplicates_are_reported_not_reapplied() -> None:
    t = full()
    r = t.add(DAG[:3] + DAG[:1])
    assert r.attached == [] and len(r.duplicates) == 4


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(len(DAG)))), st.integers(1, 8), st.lists(
    st.integers(0, len(DAG) - 1), max_size=6))
def test_any_delivery_order_gives_same_heads_and_replay(
        order: list[int], chunk: int, dups: list[int]) -> None:
    t = fresh()
    stream = [DAG[i] for i in order] + [DAG[i] for i in dups]
    for i in range(0, len(stream), chunk):
        t.add(stream[i:i + chunk])
    ref = full()
    assert t.heads == ref.heads and t.heads_hash() == ref.heads_hash()
    assert [c.id for c in t.replay_order()] == [c.id for c in ref.replay_order()]
    assert not t.waiting_ids


def test_replay_order_is_topological_with_id_ties() -> None:
    order = full().replay_order()
    pos = {c.id: i for i, c in enumerate(order)}
    assert all(pos[p] < pos[c.id] for c in order for p in c.prev_ids)
    assert order[0].id == BASE.id


def _brute_missing(t: ObjectTree, theirs: list[bytes]) -> set[bytes]:
    known = [h for h in theirs if h in t]
    return {c.id for c in t.changes()} - t.past(known)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, len(DAG)), max_size=5), st.booleans())
def test_changes_for_matches_brute_force(picks: list[int], unknown: bool) -> None:
    t = full()
    all_ids = [BASE.id, *IDS]
    theirs = [all_ids[i] for i in picks] + ([os.urandom(32)] if unknown else [])
    got = t.changes_for(theirs)
    assert {c.id for c in got} == _brute_missing(t, theirs)
    have = t.past([h for h in theirs if h in t])
    for c in got:  # causal: every parent is either theirs already or sent earlier
        assert all(p in have for p in c.prev_ids)
        have.add(c.id)
    # a peer at the root... or at our heads lacks nothing
    assert t.changes_for(list(t.heads)) == []


def test_changes_for_brings_a_peer_up_to_date() -> None:
    a, b = full(), fresh()
    b.add(DAG[:10])
    b.add([c.raw for c in a.changes_for(list(b.heads))])
    assert b.heads == a.heads and not b.waiting_ids


def test_non_member_author_rejected_and_tree_unchanged() -> None:
    t = full()
    before = snapshot_state(t)
    mallory = AccountKey.generate()
    bad = build_change(mallory, OWNER.key, b"x", space_id=SPACE_ID, tree_id=t.id,
                       prev_ids=t.heads, acl_head=OWNER.acl_root, read_key_id=OWNER.acl_root)
    good = build_change(OWNER.account, OWNER.key, b"y", space_id=SPACE_ID, tree_id=t.id,
                        prev_ids=t.heads, acl_head=OWNER.acl_root, read_key_id=OWNER.acl_root)
    with pytest.raises(AccessDenied):
        t.add([good.raw, bad.raw])  # all-or-nothing: the good one is not kept either
    assert snapshot_state(t) == before


def test_unknown_read_key_rejected() -> None:
    t = full()
    before = snapshot_state(t)
    ch = build_change(OWNER.account, OWNER.key, b"y", space_id=SPACE_ID, tree_id=t.id,
                      prev_ids=t.heads, acl_head=OWNER.acl_root, read_key_id=os.urandom(32))
    with pytest.raises(UnknownReadKey):
        t.add([ch.raw])
    assert snapshot_state(t) == before


def test_bad_bytes_rejected_and_tree_unchanged() -> None:
    t = fresh()
    t.add(DAG[:3])
    before = snapshot_state(t)
    raw = bytearray(DAG[3])
    raw[len(raw) - 10] ^= 0x01  # inside the signature
    with pytest.raises(BadSignature):
        t.add([DAG[4], bytes(raw)])
    with pytest.raises(DecodeError):
        t.add([b"\x93\x01"])
    assert snapshot_state(t) == before


def test_other_tree_and_other_space_rejected() -> None:
    other = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, b"other")
    ch = other.create_change(OWNER.account, b"z")
    t = fresh()
    with pytest.raises(WrongTree):
        t.add([ch.raw])
    with pytest.raises(WrongTree):
        t.add([other.root.raw])
    elsewhere = build_change(OWNER.account, OWNER.key, b"q", space_id="other.2",
                             tree_id=t.id, prev_ids=[t.id], acl_head=OWNER.acl_root,
                             read_key_id=OWNER.acl_root)
    with pytest.raises(WrongTree):
        t.add([elsewhere.raw])


def test_change_with_unknown_acl_head_waits_until_acl_learns_it() -> None:
    gate = GrowingAcl(OWNER.account.public, OWNER.acl_root, OWNER.key)
    t = ObjectTree.from_root(SPACE_ID, gate, BASE.root.raw)
    new_acl = os.urandom(32)
    ch = build_change(OWNER.account, OWNER.key, b"later", space_id=SPACE_ID, tree_id=t.id,
                      prev_ids=[t.id], acl_head=new_acl, read_key_id=OWNER.acl_root)
    child = build_change(OWNER.account, OWNER.key, b"child", space_id=SPACE_ID, tree_id=t.id,
                         prev_ids=[ch.id], acl_head=new_acl, read_key_id=OWNER.acl_root)
    r = t.add([ch.raw, child.raw])
    assert r.attached == [] and set(r.waiting) == {ch.id, child.id}
    assert t.recheck_waiting().attached == []
    gate.known.add(new_acl)
    r2 = t.recheck_waiting()
    assert [c.id for c in r2.attached] == [ch.id, child.id] and t.heads == (child.id,)


def test_failing_persist_rolls_the_tree_back() -> None:
    t = fresh()
    t.add(DAG[:2])
    t.add(DAG[6:9])  # some wait
    before = snapshot_state(t)

    def boom(tree: ObjectTree, result: AddResult) -> None:
        raise StoreError("disk full")

    with pytest.raises(StoreError):
        t.add(DAG[2:6], persist=boom)
    assert snapshot_state(t) == before
    with pytest.raises(StoreError):
        t.create_change(OWNER.account, b"local", persist=boom)
    assert snapshot_state(t) == before
    t.add(DAG)
    assert t.heads == full().heads


def test_heads_digest_and_local_changes() -> None:
    t = full()
    assert heads_digest(reversed(t.heads)) == t.heads_hash()
    ch = t.create_change(OWNER.account, b"mine")
    assert t.heads == (ch.id,) and set(ch.prev_ids) == set(full().heads)
    assert ch.decrypt(OWNER.key) == b"mine"


def test_replicator_verifies_without_read_key() -> None:
    t = ObjectTree.from_root(SPACE_ID, OWNER.gate(with_key=False), BASE.root.raw)
    shuffled = DAG[:]
    random.Random(3).shuffle(shuffled)
    t.add(shuffled)
    assert t.heads == full().heads
    with pytest.raises(UnknownReadKey):
        t.create_change(OWNER.account, b"no key")


def test_from_trusted_rechecks_ids() -> None:
    t = full()
    pairs = [(c.id, c.raw) for c in t.changes()]
    again = ObjectTree.from_trusted(SPACE_ID, OWNER.gate(), pairs)
    assert again.heads == t.heads
    cid, raw = pairs[7]
    bad = bytearray(raw)
    bad[40] ^= 4
    pairs[7] = (cid, bytes(bad))
    with pytest.raises(IdMismatch):
        ObjectTree.from_trusted(SPACE_ID, OWNER.gate(), pairs)


def test_orphans_forever_cost_bounded_memory() -> None:
    """A peer sending changes whose parents never exist cannot grow the waiting set (or its
    indexes) without limit; a late parent still attaches what is left waiting."""
    tree = fresh()
    tree.max_waiting = 50

    def change(prev: list[bytes]) -> bytes:
        return build_change(OWNER.account, OWNER.key, b"x", space_id=SPACE_ID, tree_id=tree.id,
                            prev_ids=prev, acl_head=OWNER.acl_root,
                            read_key_id=OWNER.acl_root).raw

    orphans = [change([os.urandom(32)]) for _ in range(120)]
    evicted = [cid for raw in orphans for cid in tree.add([raw]).evicted]
    assert evicted == [parse_change(r).id for r in orphans[:70]]  # the oldest go first
    assert len(tree.waiting_ids) == 50 and len(tree._blocked_on) == 50
    parent = change([tree.id])
    child = change([parse_change(parent).id])
    tree.add([child])
    assert [c.raw for c in tree.add([parent]).attached] == [parent, child]
