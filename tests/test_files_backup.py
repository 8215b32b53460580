"""Files through the backup (issue 18): the backup learns chunks from offers (it cannot read
manifests), pulls them as ciphertext, counts them in its quota, serves them to a device while
the laptop is off, never holds the plaintext, and frees them when the file is deleted."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from p2psync.backup.config import Quotas
from p2psync.node import Node
from p2psync.replica import filespace as FS
from p2psync.replica.files import chunk_address
from p2psync.replica.space import Space
from p2psync.sync import files_io
from tests.backup_helpers import NO_PERIODIC
from tests.conftest import Fleet
from tests.sync_helpers import converged, fast_config, wait_any

SIZE = 1_500_000


def holds_all(node: Node, space: Space, fid: bytes) -> bool:
    assert node.store is not None
    want = set(FS.manifest_of(space, fid).addresses)
    return len(node.store.has_chunks(list(want))) == len(want)


def files_bytes(root: Path, name: str) -> bytes:
    """Every file of a node's store (the database, its WAL and journal)."""
    return b"".join(p.read_bytes() for p in root.glob(f"{name}.sqlite3*") if p.is_file())


async def test_phone_gets_a_file_through_the_backup_with_the_laptop_off(
        fleet: Fleet, tmp_path: Path) -> None:
    backup, policy = await fleet.backup(head_sync_interval=NO_PERIODIC)
    laptop = await fleet.node("laptop", config=fast_config(head_sync_interval=NO_PERIODIC))
    phone = await fleet.node("phone", config=fast_config(head_sync_interval=NO_PERIODIC))
    space = laptop.create_space()
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, backup.account.public))
    marker = os.urandom(12).hex().encode()  # short, random: would show if stored in clear
    before = random.Random(1).randbytes(SIZE)
    data = before[:1000] + marker + before[1000:]
    fid = FS.add_file(space, data, name="photo").manifest.file_id  # added before the backup
    code = laptop.invite(space.id)
    await laptop.connect(backup.address())
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    bspace = backup.spaces[space.id]
    await wait_any([backup], lambda: holds_all(backup, space, fid))  # offered on connect
    used = policy.usage.spaces[space.id].bytes
    assert used >= SIZE  # chunk bytes count in the backup's quota (and receipts)
    # a second file, added while connected: offered at once
    fid2 = FS.add_file(space, random.Random(2).randbytes(SIZE), name="other").manifest.file_id
    assert await files_io.offer_file(laptop.engines, space, fid2) == 1
    await wait_any([backup], lambda: holds_all(backup, space, fid2))
    assert files_io.Puller.of(backup.replicas).pulled >= 2 * SIZE // (256 << 10)

    await phone.join(code, [f"tcp:{backup.address()}"])
    await laptop.close()  # the laptop is off
    pspace = phone.spaces[space.id]
    await wait_any([phone], lambda: any(i.file_id == fid for i in FS.list_files(pspace)))
    assert await files_io.fetch_file(phone.engines, pspace, fid)
    FS.get_file(pspace, fid, tmp_path / "got")
    assert (tmp_path / "got").read_bytes() == data

    assert marker in data  # control: the marker is in what was stored
    stored = files_bytes(tmp_path, "backup")
    assert len(stored) > 2 * SIZE and marker not in stored  # ciphertext only
    assert bspace.acl.read_key(bspace.acl.state.current_key_id) is None  # it cannot decrypt


async def test_deleting_a_file_frees_backup_space_and_quota(fleet: Fleet) -> None:
    backup, policy = await fleet.backup(head_sync_interval=NO_PERIODIC)
    laptop = await fleet.node("laptop", config=fast_config(head_sync_interval=NO_PERIODIC))
    space = laptop.create_space()
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, backup.account.public))
    fid = FS.add_file(space, random.Random(3).randbytes(SIZE), name="f").manifest.file_id
    await laptop.connect(backup.address())
    await wait_any([backup], lambda: space.id in backup.spaces and holds_all(backup, space, fid))
    assert backup.store is not None
    assert backup.store.list_chunks(space.id, fid)
    used = policy.usage.spaces[space.id].bytes
    space.delete_objects([fid])
    store = backup.store
    await wait_any([backup], lambda: not store.list_chunks(space.id, fid))
    assert policy.usage.spaces[space.id].bytes < used - SIZE  # the quota is freed too


async def test_a_tombstone_keeps_the_remaining_files_chunks_in_the_quota(fleet: Fleet) -> None:
    """After a tombstone the backup resets the space's tally from the store's totals: the
    chunks of the files still held must stay counted there (they once dropped out, so a
    space could then grow past its byte quota until a restart)."""
    backup, policy = await fleet.backup(head_sync_interval=NO_PERIODIC)
    laptop = await fleet.node("laptop", config=fast_config(head_sync_interval=NO_PERIODIC))
    space = laptop.create_space()
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, backup.account.public))
    gone = FS.add_file(space, random.Random(5).randbytes(SIZE), name="a").manifest.file_id
    kept = FS.add_file(space, random.Random(6).randbytes(SIZE), name="b").manifest.file_id
    await laptop.connect(backup.address())
    await wait_any([backup], lambda: space.id in backup.spaces and holds_all(backup, space, gone)
                   and holds_all(backup, space, kept))
    store = backup.store
    assert store is not None
    space.delete_objects([gone])
    await wait_any([backup], lambda: not store.list_chunks(space.id, gone))
    held = sum(len(store.get_chunk(a) or b"") for a in store.list_chunks(space.id, kept))
    assert held >= SIZE
    tally = policy.usage.spaces[space.id].bytes
    assert tally == store.space_usage()[space.id][0]
    assert held < tally < held + SIZE // 10  # the kept file's chunks + the documents' changes
    assert policy.usage.total.bytes == tally


async def test_over_quota_chunks_are_refused(fleet: Fleet) -> None:
    backup, policy = await fleet.backup(head_sync_interval=NO_PERIODIC,
                                        quotas=Quotas(space_bytes=SIZE // 2))
    laptop = await fleet.node("laptop", config=fast_config(head_sync_interval=NO_PERIODIC))
    space = laptop.create_space()
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, backup.account.public))
    FS.add_file(space, random.Random(4).randbytes(SIZE), name="f")
    await laptop.connect(backup.address())
    puller = files_io.Puller.of(backup.replicas)
    await wait_any([backup], lambda: puller.failures > 0)
    assert backup.store is not None
    held = sum(len(backup.store.get_chunk(a) or b"") for a in backup.store.list_chunks(space.id))
    assert held <= SIZE // 2 and policy.usage.spaces[space.id].bytes <= SIZE // 2


async def test_offers_for_unknown_files_store_nothing(fleet: Fleet,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A member offers chunks it holds under a file id that is no document of the space (no
    tombstone could ever free them): the backup pulls nothing of them; a real file's offer
    made at the same time is pulled."""
    monkeypatch.setattr(files_io, "TREE_WAIT", 0.3)
    backup, _policy = await fleet.backup(head_sync_interval=NO_PERIODIC)
    laptop = await fleet.node("laptop", config=fast_config(head_sync_interval=NO_PERIODIC))
    space = laptop.create_space()
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, backup.account.public))
    await laptop.connect(backup.address())
    await wait_any([laptop, backup], lambda: converged([laptop, backup], space.id))
    data = random.Random(5).randbytes(300_000)
    real = FS.add_file(space, data, name="f").manifest.file_id
    await wait_any([backup], lambda: backup.spaces[space.id].has_tree(real))
    ghost = os.urandom(32)
    blobs = [os.urandom(1000) for _ in range(5)]
    space.store.put_chunks(space.id, ghost, [(chunk_address(b), b) for b in blobs])
    engine = files_io.peers_for(laptop.engines, space.id)[0]
    puller = files_io.Puller.of(backup.replicas)
    assert await files_io.offer_chunks(engine, space, [ghost]) == 1
    assert await files_io.offer_chunks(engine, space, [real]) == 1  # real: pulled
    await wait_any([backup], lambda: puller.idle.is_set())
    assert backup.store is not None
    assert backup.store.list_chunks(space.id, ghost) == []
    assert backup.store.list_chunks(space.id, real) == space.store.list_chunks(space.id, real)
