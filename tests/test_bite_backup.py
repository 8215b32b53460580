"""Backup admission, quotas, receipts and the document guard, at unit level: what mutation
testing found unguarded (docs/testing.md)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from p2psync.backup import guard
from p2psync.backup import policy as policy_mod
from p2psync.backup.config import Quotas, ReplicatorConfig
from p2psync.backup.policy import BackupPolicy
from p2psync.backup.receipt import (
    DOMAIN,
    MAX_LISTED,
    Receipt,
    ReceiptError,
    sign_receipt,
    verify_receipt,
)
from p2psync.codec import pack, unpack
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.errors import AccessDenied, JoinError, QuotaExceeded
from p2psync.replica import automerge_adapter
from p2psync.replica.memstore import MemoryStore
from p2psync.replica.space import Space
from p2psync.sync.replicas import Replicas
from tests.backup_helpers import edit
from tests.sync_helpers import close_all, make_node

DEV = DeviceKey(b"\x07" * 32)
ACCT = AccountKey(b"\x08" * 32).public
NONCE = b"\x09" * 32
H = b"\x0a" * 32


def fields(**over: object) -> list[object]:
    good: dict[str, object] = dict(
        v=1, space_id="s.1", device=DEV.public, account=ACCT, ts=5, nonce=NONCE,
        acl_heads=[H], root=H, n_obj=1, n_ch=2, n_bytes=3, objects=[[H, H]])
    good.update(over)
    return list(good.values())


def signed(body_fields: list[object]) -> bytes:
    body = pack(body_fields)
    return pack([body, DEV.sign(DOMAIN, body)])


def check(raw: bytes) -> Receipt:
    return verify_receipt(raw, device=DEV.public, space_id="s.1", nonce=NONCE)


def test_receipt_round_trip_keeps_every_field() -> None:
    rec = Receipt("s.1", DEV.public, ACCT, 5, NONCE, (H,), H, 1, 2, 3, {H: b"\x0b" * 32})
    raw = sign_receipt(DEV, rec)
    got = check(raw)
    assert got.raw == raw
    assert got == Receipt(*[getattr(rec, f) for f in (
        "space_id", "device", "account", "timestamp_ms", "nonce", "acl_heads", "root",
        "objects_count", "changes_count", "size", "objects")], raw=got.raw)
    assert check(signed(fields(objects=None))).objects is None
    assert check(signed(fields(objects=[]))).objects == {}


@pytest.mark.parametrize("over", [
    {"acl_heads": [b"\x01" * 31]}, {"acl_heads": [H] * 257}, {"root": b"\x01" * 33},
    {"n_obj": -1}, {"n_ch": -1}, {"n_bytes": -1}, {"objects": "x"},
    {"objects": [[H, H]] * (MAX_LISTED + 1)}, {"objects": [[H, b"\x01" * 31]]},
    {"objects": [[b"\x01" * 33, H]]}, {"ts": -1}, {"ts": 2**63}, {"device": b"\x01" * 31},
    {"account": b"\x01" * 31}, {"account": b"\x01" * 33},
])
def test_malformed_receipt_is_refused(over: dict[str, object]) -> None:
    with pytest.raises(ReceiptError):
        check(signed(fields(**over)))


def test_receipt_zero_counts_and_listing_limit_are_accepted() -> None:
    assert check(signed(fields(ts=0))).timestamp_ms == 0
    assert check(signed(fields(ts=2**63 - 1))).timestamp_ms == 2**63 - 1
    rec = check(signed(fields(n_obj=0, n_ch=0, n_bytes=0, acl_heads=[H] * 256)))
    assert (rec.objects_count, rec.changes_count, rec.size) == (0, 0, 0)
    many = [[os.urandom(32), H] for _ in range(MAX_LISTED)]
    assert rec.objects is not None and len(check(signed(fields(objects=many))).objects or {}) \
        == MAX_LISTED


async def test_admission_allowlist_and_byte_quota(tmp_path: Path) -> None:
    laptop = await make_node(tmp_path, "laptop")
    stranger = await make_node(tmp_path, "stranger")
    backup = await make_node(tmp_path, "backup")
    try:
        mine = laptop.create_space()
        theirs = stranger.create_space()
        for s, owner in ((mine, laptop), (theirs, stranger)):
            s.emit_acl(lambda acl, o=owner: acl.add_replicator(o.account,
                                                                backup.account.public))
        policy = BackupPolicy(backup.replicas, ReplicatorConfig(
            quotas=Quotas(space_bytes=2000), accounts=frozenset({laptop.account.public})))
        policy.admit_space(mine.id, mine.header, mine.acl)
        assert policy.refused_spaces == 0
        assert policy.usage.owner_of[mine.id] == laptop.account.public  # account quotas
        assert mine.id in policy.usage.spaces
        with pytest.raises(AccessDenied, match="owner"):
            policy.admit_space(theirs.id, theirs.header, theirs.acl)
        with pytest.raises(AccessDenied, match="owner"):
            policy.admit_space(theirs.id, theirs.header, theirs.acl)
        assert policy.refused_spaces == 2
        unnamed = laptop.create_space()  # does not name the backup as its replicator
        with pytest.raises(AccessDenied, match="replicator"):
            policy.admit_space(unnamed.id, unnamed.header, unnamed.acl)
        assert policy.refused_spaces == 3
        # the byte quota counts the bytes of the batch (a tree the space does not hold yet)
        doc = mine.new_document()
        edit(mine, doc.tree.id, "k", os.urandom(3000))
        mine.flush()
        raws = [c.raw for c in mine.document(doc.tree.id).tree.changes()]
        policy.admit_changes(mine, b"\x00" * 32, raws[:1])
        with pytest.raises(QuotaExceeded, match="space byte"):
            policy.admit_changes(mine, b"\x00" * 32, raws)
    finally:
        await close_all([laptop, stranger, backup])


async def test_admission_counts_only_changes_not_yet_held(tmp_path: Path) -> None:
    laptop = await make_node(tmp_path, "laptop")
    backup = await make_node(tmp_path, "backup")
    try:
        space = laptop.create_space()
        doc = space.new_document()
        edit(space, doc.tree.id, "k", 1)
        space.flush()
        raws = [c.raw for c in space.document(doc.tree.id).tree.changes()]
        assert len(raws) == 2
        policy = BackupPolicy(laptop.replicas, ReplicatorConfig(quotas=Quotas(space_changes=2)))
        # counted from the store at start, per space and per owner
        assert policy.usage.spaces[space.id].changes == 2
        assert policy.usage.spaces[space.id].bytes == sum(len(r) for r in raws)
        owner = policy.usage.owners[space.header.owner]
        assert (owner.changes, owner.bytes) == (2, sum(len(r) for r in raws))
        policy.admit_changes(space, doc.tree.id, raws)  # all held already: nothing to count
        with pytest.raises(QuotaExceeded):
            policy.admit_changes(space, b"\x00" * 32, raws[:1])
    finally:
        await close_all([laptop, backup])


def test_document_guard_refuses_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    for obj, name in ((automerge_adapter, "new_document"), (automerge_adapter, "load"),
                      (Space, "document")):
        monkeypatch.setattr(obj, name, getattr(obj, name))  # restored after the test
    monkeypatch.setattr(guard, "_installed", False)
    monkeypatch.setattr(guard, "attempts", 0)
    guard.forbid_documents()
    guard.forbid_documents()  # idempotent
    for call in (automerge_adapter.new_document, automerge_adapter.load):
        with pytest.raises(guard.DocumentsForbidden):
            call()
    with pytest.raises(guard.DocumentsForbidden):
        Space.document(None, b"")  # type: ignore[arg-type]
    assert guard.attempts == 3


async def test_policy_receipt_lists_every_object_at_its_heads(tmp_path: Path) -> None:
    node = await make_node(tmp_path, "backup")
    try:
        space = node.create_space()
        docs = [space.new_document().tree.id for _ in range(3)]
        policy = BackupPolicy(node.replicas, ReplicatorConfig())
        raw = policy.receipt(space, NONCE)
        rec = verify_receipt(raw, device=node.replicas.device.public, space_id=space.id,
                             nonce=NONCE)
        assert rec.objects == dict(node.replicas.ldiff(space.id).items())
        assert set(rec.objects) == set(docs) and rec.objects_count == 3
        assert abs(rec.timestamp_ms - time.time() * 1000) < 60_000
        later = node.create_space()  # not counted by this policy: reported as empty
        rec2 = verify_receipt(policy.receipt(later, NONCE), device=node.replicas.device.public,
                              space_id=later.id, nonce=NONCE)
        assert (rec2.changes_count, rec2.size) == (0, 0)
    finally:
        await close_all([node])


async def test_usage_follows_the_store_after_a_deletion(tmp_path: Path) -> None:
    node = await make_node(tmp_path, "backup")
    try:
        space = node.create_space()
        docs = [space.new_document().tree.id for _ in range(3)]
        for t in docs:
            edit(space, t, "k", os.urandom(500))
        space.flush()
        policy = BackupPolicy(node.replicas, ReplicatorConfig())
        assert node.store is not None
        before = node.store.space_usage()[space.id]
        space.delete_objects(docs[:2])
        after = node.store.space_usage().get(space.id, (0, 0))
        assert after[0] < before[0] and after[1] < before[1]  # the tombstone freed space
        t = policy.usage.spaces[space.id]
        assert (t.bytes, t.changes) == after
        o = policy.usage.owners[space.header.owner]
        assert (o.bytes, o.changes) == after
        space.delete_objects(docs[2:])  # the last object: nothing stored for the space
        assert space.id not in node.store.space_usage()
        assert (t.bytes, t.changes) == (0, 0) and (o.bytes, o.changes) == (0, 0)
    finally:
        await close_all([node])


async def test_a_space_without_changes_starts_at_zero_usage(tmp_path: Path) -> None:
    node = await make_node(tmp_path, "backup")
    try:
        space = node.create_space()  # no object yet: nothing stored for it
        assert node.store is not None and space.id not in node.store.space_usage()
        policy = BackupPolicy(node.replicas, ReplicatorConfig())
        t = policy.usage.spaces[space.id]
        assert (t.bytes, t.changes) == (0, 0)
    finally:
        await close_all([node])


class _Peer:
    """An OfferingPeer whose bootstrap succeeds or fails on demand (round 5: the fetch path's
    counters, log lines and task bookkeeping had no unit test in the backup group)."""

    class conn:  # stands in for the engine's authenticated connection
        peer_id = "p-offering-peer"

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.shared: set[str] = set()
        self.jobs: list[tuple[tuple[str, str, bytes], int]] = []
        self.bootstraps: list[tuple[str, object]] = []
        self.release = asyncio.Event()

    def submit(self, key: tuple[str, str, bytes], priority: int = 1) -> None:
        self.jobs.append((key, priority))

    async def bootstrap(self, space_id: str, code: object = "no code given") -> None:
        self.bootstraps.append((space_id, code))
        await self.release.wait()
        if self.fail:
            raise JoinError("nothing here")


@pytest.mark.parametrize("fail", [False, True])
async def test_an_offered_space_is_fetched_once_counted_and_logged(
        fail: bool, caplog: pytest.LogCaptureFixture) -> None:
    replicas = Replicas(MemoryStore(), AccountKey.generate(), DeviceKey.generate())
    policy = BackupPolicy(replicas, ReplicatorConfig()).install()
    assert (policy.fetches, policy.fetch_errors) == (0, 0)
    peer = _Peer(fail)
    caplog.set_level(logging.INFO, logger="p2psync.backup")
    woken = replicas.changed()
    policy.on_offer(peer, "s.offered")  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert peer.bootstraps == [("s.offered", None)]  # no invite: the ACL names us
    assert len(policy._tasks) == 1  # held while it runs (no garbage-collected task)
    task = next(iter(policy._tasks))
    peer.release.set()
    await task
    await asyncio.sleep(0)
    assert not policy._tasks  # and forgotten once done
    if fail:
        assert (policy.fetches, policy.fetch_errors) == (0, 1)
        assert not woken.done()
        msg = "event=replicate_failed space=s.offered peer=p-offering-peer error='nothing here'"
    else:
        assert (policy.fetches, policy.fetch_errors) == (1, 0)
        assert woken.done()  # waiters see the new space
        msg = "event=replicating space=s.offered peer=p-offering-peer"
    assert [r.getMessage() for r in caplog.records if r.name == "p2psync.backup"] == [msg]


async def test_fetch_counters_add_up_over_several_offers() -> None:
    replicas = Replicas(MemoryStore(), AccountKey.generate(), DeviceKey.generate())
    policy = BackupPolicy(replicas, ReplicatorConfig()).install()
    for fail in (True, True, False, False, True):
        peer = _Peer(fail)
        peer.release.set()
        policy.on_offer(peer, "s.x")  # type: ignore[arg-type]
        await asyncio.gather(*policy._tasks)
    assert (policy.fetches, policy.fetch_errors) == (2, 3)


async def test_a_receipt_lists_objects_up_to_max_listed_inclusive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = await make_node(tmp_path, "backup")
    try:
        space = node.create_space()
        for _ in range(3):
            space.new_document()
        policy = BackupPolicy(node.replicas, ReplicatorConfig())
        for limit, listed in ((3, True), (2, False)):
            monkeypatch.setattr(policy_mod, "MAX_LISTED", limit)
            rec = verify_receipt(policy.receipt(space, NONCE),
                                 device=node.replicas.device.public, space_id=space.id,
                                 nonce=NONCE)
            assert (rec.objects is not None) is listed and rec.objects_count == 3
    finally:
        await close_all([node])


def test_a_receipts_space_id_is_at_most_128_characters() -> None:
    # the wire bound (docs/backup.md), even when the asker names that very id
    for n, ok in ((128, True), (129, False)):
        raw = signed(fields(space_id="s" * n))
        if ok:
            assert verify_receipt(raw, device=DEV.public, space_id="s" * n,
                                  nonce=NONCE).space_id == "s" * n
        else:
            with pytest.raises(ReceiptError):
                verify_receipt(raw, device=DEV.public, space_id="s" * n, nonce=NONCE)


def test_a_receipt_body_lists_heads_and_objects_sorted() -> None:
    """The documented body (backup/receipt.py, docs/backup.md): ``acl_heads (sorted)``, objects
    by id — one byte form per receipt content, whatever order the backup held them in."""
    a, b, c = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    rec = Receipt("s.1", DEV.public, ACCT, 5, NONCE, (c, a, b), H, 3, 2, 1,
                  {c: H, a: H, b: H})
    fields = unpack(rec.body())
    assert fields[6] == [a, b, c] and [k for k, _ in fields[11]] == [a, b, c]
