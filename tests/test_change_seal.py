"""Change format 2 (issue 20 item 6): what a replicator learns of a change.

A replicator verifies and stores changes without the read key. The clear, signed header must
hold only what verification, placement and sync need (space, tree, parents, ACL head, read key
id, author); the author's claimed time and the snapshot flag are sealed with the content. The
legacy format 1, which had both in clear, is still read. See docs/threat-model.md.
"""

from __future__ import annotations

import time

import pytest

from p2psync.codec import pack, unpack
from p2psync.crypto.signed import make_signed
from p2psync.errors import DecodeError
from p2psync.replica import change as change_mod
from p2psync.replica.change import (
    CHANGE_DOMAIN,
    FORMAT_VERSION,
    LEGACY_VERSION,
    PAYLOAD_AAD_PREFIX,
    build_change,
    verify_change,
)
from p2psync.replica.document import ROOT, Document, encode_payload
from p2psync.replica.tree import ObjectTree
from tests.replica_helpers import SPACE_ID, make_owner

OWNER = make_owner(7)
ID = b"\x05" * 32
#: a claimed time whose msgpack form (uint64, 9 bytes) cannot occur by chance
TS = 0x0123_4567_89AB_CDEF


def _change(timestamp: int, snapshot: bool, version: int = FORMAT_VERSION,
            plain: bytes = b"x") -> change_mod.Change:
    return build_change(OWNER.account, OWNER.key, plain, space_id=SPACE_ID, tree_id=ID,
                        prev_ids=[ID], acl_head=OWNER.acl_root, read_key_id=OWNER.acl_root,
                        snapshot=snapshot, timestamp=timestamp, version=version)


def test_the_signed_clear_header_holds_no_timestamp_and_no_snapshot_flag() -> None:
    a = _change(TS, snapshot=True)
    b = _change(7, snapshot=False)
    # the same change at another time, without the flag, has the very same clear header:
    # nothing in it depends on either value
    assert a.header == b.header
    fields = unpack(a.header)
    assert fields[0] == FORMAT_VERSION and len(fields) == 7
    assert fields[1:] == [SPACE_ID, ID, [ID], OWNER.acl_root, OWNER.acl_root,
                          OWNER.account.public]
    assert pack(TS) not in a.raw and TS.to_bytes(8, "big") not in a.raw
    assert a.timestamp is None and a.snapshot is None  # what a keyless peer parses
    sealed = verify_change(a.raw).open(OWNER.key)
    assert (sealed.timestamp, sealed.snapshot, sealed.plaintext) == (TS, True, b"x")
    # control: the legacy format shows the time, so the byte search above would find it
    old = _change(TS, snapshot=True, version=LEGACY_VERSION)
    assert pack(TS) in old.header
    assert (verify_change(old.raw).timestamp, verify_change(old.raw).snapshot) == (TS, True)


def test_the_sealed_part_is_bound_to_its_header_and_strictly_decoded() -> None:
    a = _change(TS, snapshot=False)
    # a validly signed change whose encrypted part is not [timestamp, snapshot, plaintext]
    for inner in (pack([TS, False]), pack([TS, False, b"x", 1]), pack([-1, False, b"x"]),
                  pack([TS, 1, b"x"]), b"\xc1"):
        payload = OWNER.key.encrypt(inner, PAYLOAD_AAD_PREFIX + a.header)
        bad = verify_change(make_signed(OWNER.account, CHANGE_DOMAIN, pack([a.header, payload])))
        with pytest.raises(DecodeError):
            bad.open(OWNER.key)


def test_legacy_changes_are_still_read_and_attach_next_to_new_ones() -> None:
    tree = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, encode_payload([], []))
    doc = Document(tree, OWNER.account, b"D" * 32, window=0)
    old = build_change(OWNER.account, OWNER.key, encode_payload([], []), space_id=SPACE_ID,
                       tree_id=tree.id, prev_ids=tree.heads, acl_head=OWNER.acl_root,
                       read_key_id=OWNER.acl_root, timestamp=1234, version=LEGACY_VERSION)
    assert doc.receive([old.raw]).attached[0].version == LEGACY_VERSION
    with doc.edit() as e:
        e.put(ROOT, "a", 1)
    assert doc.to_json() == {"a": 1}
    hist = doc.history()
    assert [h.timestamp for h in hist][:2] == [tree.root.open(OWNER.key).timestamp, 1234]
    assert abs((hist[2].timestamp or 0) - time.time() * 1000) < 60_000


def test_a_key_holder_sees_time_and_snapshots_a_replicator_does_not() -> None:
    tree = ObjectTree.create(SPACE_ID, OWNER.gate(), OWNER.account, encode_payload([], []))
    doc = Document(tree, OWNER.account, b"D" * 32, window=0)
    with doc.edit() as e:
        e.put(ROOT, "a", 1)
    snap = doc.snapshot()
    assert snap is not None and snap.snapshot is None  # sealed
    hist = doc.history()
    assert [h.snapshot for h in hist] == [False, False, True]
    assert all(h.timestamp is not None and h.timestamp > 0 for h in hist)
    # a new device finds the snapshot through the sealed flag and loads from it
    fresh_tree = ObjectTree.from_root(SPACE_ID, OWNER.gate(), tree.root.raw)
    fresh = Document(fresh_tree, OWNER.account, b"N" * 32)
    fresh.receive([c.raw for c in tree.changes() if not c.is_root])
    assert fresh.to_json() == {"a": 1} and fresh.loaded_snapshot == snap.id
    # a replicator holds the same tree but learns neither the time nor which is a snapshot
    rep_tree = ObjectTree.from_root(SPACE_ID, OWNER.gate(with_key=False), tree.root.raw)
    rep_tree.add([c.raw for c in tree.changes() if not c.is_root])
    rep = Document(rep_tree, OWNER.account, b"R" * 32)
    assert [rep.claims(c) for c in rep_tree.changes()] == [(None, None)] * 3
    assert all(c.timestamp is None and c.snapshot is None for c in rep_tree.changes())
