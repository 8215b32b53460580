"""Garbage collection of chunks no live manifest names (issue 18, docs/files.md "Backup GC").

On a device holding the read key: an edit drops the chunks only the replaced version named;
with concurrent edits (two heads) the chunks of both sides' manifests stay. On a backup (no
read key): a writer member's CHUNK_KEEP for the file's current heads makes it delete its other
chunks of the file, its quota tally and receipts follow the store; a statement for other heads
or from a reader deletes nothing; a GC interrupted midway loses no live chunk."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from p2psync.backup.receipt import verify_receipt
from p2psync.crypto import AccountKey, DeviceKey
from p2psync.errors import StoreError
from p2psync.node import Node
from p2psync.replica import filespace as FS
from p2psync.replica.acl import Role
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from p2psync.sync import files_io
from p2psync.sync.messages import ChunkKeep, ChunkResponse, decode, encode
from tests.backup_helpers import NO_PERIODIC
from tests.conftest import Fleet
from tests.sync_helpers import converged, fast_config, wait_any

SIZE = 1_500_000


def ship_docs(src: Space, dst: Space) -> None:
    dst.add_acl_records(src.acl_records())
    for tid in src.tree_ids():
        dst.add_changes(tid, [c.raw for c in src.tree(tid).changes()])


def edited(data: bytes, seed: int) -> bytes:
    """``data`` with its middle third replaced: several chunks change, the rest stay."""
    n = len(data)
    return data[:n // 3] + random.Random(seed).randbytes(n // 3) + data[2 * n // 3:]


def test_concurrent_edits_keep_both_versions_chunks(tmp_path: Path) -> None:
    me = AccountKey.generate()
    a = Space.create(Store(tmp_path / "a.sqlite3"), me, DeviceKey.generate().public, window=0)
    b = Space.adopt(Store(tmp_path / "b.sqlite3"), me, DeviceKey.generate().public, a.id,
                    a.header.raw, a.acl_records(), window=0)  # the same account's 2nd device
    base = random.Random(1).randbytes(SIZE)
    v0 = FS.add_file(a, base, name="f").manifest
    fid = v0.file_id
    ship_docs(a, b)
    b.store.put_chunks(b.id, fid, [(x, a.store.get_chunk(x) or b"")
                                   for x in a.store.list_chunks(a.id, fid)])
    va = FS.add_file(a, edited(base, 2), name="f", file_id=fid).manifest  # concurrently …
    vb = FS.add_file(b, edited(base, 3), name="f", file_id=fid).manifest  # … on both devices
    assert set(a.store.list_chunks(a.id, fid)) == set(va.addresses)  # a's edit collected
    ship_docs(b, a)
    a.store.put_chunks(a.id, fid, [(x, b.store.get_chunk(x) or b"")
                                   for x in b.store.list_chunks(b.id, fid)])
    heads, live = FS.live_chunks(a, fid)
    assert len(heads) == 2 and live == set(va.addresses) | set(vb.addresses)
    assert FS.collect_garbage(a) == 0  # both sides' chunks are live
    assert set(va.addresses) | set(vb.addresses) <= set(a.store.list_chunks(a.id, fid))
    only_v0 = set(v0.addresses) - live
    assert only_v0 and not only_v0 & set(a.store.list_chunks(a.id, fid))


# --- the backup ---------------------------------------------------------------------------------
def chunk_bytes(node: Node, space_id: str, fid: bytes) -> int:
    assert node.store is not None
    return sum(len(node.store.get_chunk(x) or b"") for x in node.store.list_chunks(space_id, fid))


def held(node: Node, space_id: str, fid: bytes) -> set[bytes]:
    assert node.store is not None
    return set(node.store.list_chunks(space_id, fid))


async def backed_up(fleet: Fleet) -> tuple[Node, Any, Node, Space, bytes, bytes]:
    """A laptop with one file, its backup holding every chunk of it."""
    backup, policy = await fleet.backup(head_sync_interval=NO_PERIODIC)
    laptop = await fleet.node("laptop", config=fast_config(head_sync_interval=NO_PERIODIC))
    space = laptop.create_space()
    space.emit_acl(lambda acl: acl.add_replicator(laptop.account, backup.account.public))
    data = random.Random(7).randbytes(SIZE)
    fid = FS.add_file(space, data, name="f").manifest.file_id
    await laptop.connect(backup.address())
    want = set(FS.manifest_of(space, fid).addresses)
    await wait_any([backup], lambda: space.id in backup.spaces
                   and held(backup, space.id, fid) == want)
    return backup, policy, laptop, space, fid, data


def tally_right(backup: Node, policy: Any, space_id: str) -> bool:
    assert backup.store is not None
    return policy.usage.spaces[space_id].bytes == backup.store.space_usage()[space_id][0]


async def test_backup_collects_chunks_an_edit_replaced(fleet: Fleet) -> None:
    backup, policy, laptop, space, fid, data = await backed_up(fleet)
    v1 = set(FS.manifest_of(space, fid).addresses)
    before_bytes, before_tally = chunk_bytes(backup, space.id, fid), \
        policy.usage.spaces[space.id].bytes
    v2m = FS.add_file(space, edited(data, 8), name="f", file_id=fid).manifest
    v2 = set(v2m.addresses)
    replaced = v1 - v2
    assert replaced and v1 & v2
    freed = sum(len(backup.store.get_chunk(x) or b"") for x in replaced)  # type: ignore[union-attr]
    await files_io.offer_file(laptop.engines, space, fid)  # offers the new chunks + CHUNK_KEEP
    await wait_any([backup], lambda: held(backup, space.id, fid) == v2)
    added = sum(len(backup.store.get_chunk(x) or b"") for x in v2 - v1)  # type: ignore[union-attr]
    assert chunk_bytes(backup, space.id, fid) == before_bytes - freed + added
    await wait_any([backup], lambda: tally_right(backup, policy, space.id))
    after_tally = policy.usage.spaces[space.id].bytes
    assert after_tally < before_tally - freed + added + SIZE // 10  # + the edit's change
    receipt = policy.receipt(backup.spaces[space.id], b"n" * 32)
    assert verify_receipt(receipt, device=backup.device.public, space_id=space.id,
                          nonce=b"n" * 32).size \
        == after_tally
    assert files_io.Puller.of(backup.replicas).collected == len(replaced)


async def keep_reply(engine: Any, keep: ChunkKeep) -> Any:
    st = await engine.conn.open_stream()
    await st.send(encode(keep, 1))
    reply = decode(await st.recv()).message
    st.finish()
    return reply


async def test_stale_or_unauthorised_keep_statements_delete_nothing(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_io, "TREE_WAIT", 0.3)
    backup, _policy, laptop, space, fid, _data = await backed_up(fleet)
    everything = held(backup, space.id, fid)
    puller = files_io.Puller.of(backup.replicas)
    engine = files_io.peers_for(laptop.engines, space.id)[0]
    heads = tuple(space.heads(fid))
    one = (sorted(everything)[0],)
    for bad in (ChunkKeep(space.id, fid, (b"\x01" * 32,), one),  # heads it never sees
                ChunkKeep(space.id, fid, (), one),  # no heads
                ChunkKeep(space.id, b"\x02" * 32, heads, one)):  # no such file
        assert isinstance(await keep_reply(engine, bad), ChunkResponse)
    await wait_any([backup], lambda: puller.idle.is_set())
    assert held(backup, space.id, fid) == everything and puller.collected == 0
    # a reader member's statement for the right heads is ignored too
    reader = await fleet.node("reader", config=fast_config(head_sync_interval=NO_PERIODIC))
    code = laptop.invite(space.id, role=Role.READER)
    await reader.join(code, [f"tcp:{backup.address()}"])
    await wait_any([reader, backup], lambda: converged([reader, backup], space.id))
    r_engine = files_io.peers_for(reader.engines, space.id)[0]
    assert isinstance(await keep_reply(r_engine, ChunkKeep(space.id, fid, heads, one)),
                      ChunkResponse)
    await wait_any([backup], lambda: puller.idle.is_set())
    assert held(backup, space.id, fid) == everything and puller.collected == 0
    # a writer's statement while too many addresses wait (memory bound): ignored
    monkeypatch.setattr(files_io, "MAX_QUEUED", 0)
    assert isinstance(await keep_reply(engine, ChunkKeep(space.id, fid, heads, one)),
                      ChunkResponse)
    await wait_any([backup], lambda: puller.idle.is_set())
    assert held(backup, space.id, fid) == everything and not puller.keeps
    monkeypatch.setattr(files_io, "MAX_QUEUED", 1 << 18)
    # the laptop (a writer) at the current heads: applied
    assert isinstance(await keep_reply(engine, ChunkKeep(space.id, fid, heads, one)),
                      ChunkResponse)
    await wait_any([backup], lambda: held(backup, space.id, fid) == set(one))


async def test_gc_interrupted_midway_loses_nothing_live(fleet: Fleet) -> None:
    backup, policy, laptop, space, fid, data = await backed_up(fleet)
    store = backup.store
    assert store is not None
    real = store.delete_chunks
    crashes = [0]

    def crash_midway(addresses: Any) -> int:  # half deleted, then the "crash"
        crashes[0] += 1
        real(list(addresses)[:len(addresses) // 2])
        raise StoreError("disk gone mid-GC")

    store.delete_chunks = crash_midway  # type: ignore[method-assign]
    v2 = set(FS.add_file(space, edited(data, 9), name="f", file_id=fid).manifest.addresses)
    await files_io.offer_file(laptop.engines, space, fid)
    puller = files_io.Puller.of(backup.replicas)
    await wait_any([backup], lambda: crashes[0] > 0 and puller.idle.is_set())
    assert v2 <= held(backup, space.id, fid)  # every live chunk is still there
    assert tally_right(backup, policy, space.id)  # the tally follows what is stored
    store.delete_chunks = real  # type: ignore[method-assign]
    await files_io.offer_file(laptop.engines, space, fid)  # the next statement finishes it
    await wait_any([backup], lambda: held(backup, space.id, fid) == v2)
    assert tally_right(backup, policy, space.id)
