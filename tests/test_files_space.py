"""Encrypted files as documents of a space (p2psync/replica/filespace.py): add/list/get, an edit
re-storing only changed chunks, lazy chunks (manifest first, never complete before its chunks),
a keyless replicator holding only ciphertext, key rotation locking out a removed member,
tombstones freeing chunks."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.errors import AccessDenied, FileChunkInvalid, FileIncomplete, FileNotFound
from p2psync.replica import filespace as FS
from p2psync.replica.acl_records import Role
from p2psync.replica.memstore import MemoryStore
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from tests.backup_helpers import assert_no_plaintext

MARKER = b"FILE-MARKER-9c1e"


def _device(tmp_path: Path, name: str) -> tuple[Store, AccountKey, bytes]:
    return Store(tmp_path / f"{name}.sqlite3"), AccountKey.generate(), DeviceKey.generate().public


def _ship_docs(src: Space, dst: Space) -> None:
    """What document sync does (ACL first, then trees): manifests travel, chunks do not."""
    dst.add_acl_records(src.acl_records())
    for tid in src.tree_ids():
        dst.add_changes(tid, [c.raw for c in src.tree(tid).changes()])


def _ship_chunks(src: Space, dst: Space) -> int:
    """What a chunk fetch does: every chunk src holds, verified on arrival."""
    n = 0
    for tid in src.tree_ids():
        pairs = [(a, src.store.get_chunk(a)) for a in src.store.list_chunks(src.id, tid)]
        n += FS.accept_chunks(dst, tid, [(a, c) for a, c in pairs if c is not None])
    return n


def _content(n: int, seed: int) -> bytes:
    data = bytearray(random.Random(seed).randbytes(n))
    data[n // 2:n // 2 + len(MARKER)] = MARKER
    return bytes(data)


def test_add_list_get_and_edit(tmp_path: Path) -> None:
    store, me, dev = _device(tmp_path, "a")
    sp = Space.create(store, me, dev, window=0)
    src = tmp_path / "photo.jpg"
    src.write_bytes(_content(3_000_000, 1))
    added = FS.add_file(sp, src, media_type="image/jpeg")
    fid = added.manifest.file_id
    assert added.new_chunks == added.chunks > 10
    [info] = FS.list_files(sp)
    assert (info.name, info.media_type, info.size, info.complete) == (
        "photo.jpg", "image/jpeg", 3_000_000, True)
    out = tmp_path / "out.jpg"
    assert FS.get_file(sp, fid, out) == 3_000_000 and out.read_bytes() == src.read_bytes()

    data = src.read_bytes()
    src.write_bytes(data[:1_000_000] + b"edited!" + data[1_000_000:])
    again = FS.add_file(sp, src, file_id=fid, media_type="image/jpeg")
    assert again.manifest.file_id == fid and 1 <= again.new_chunks <= 2
    assert again.new_bytes < 0.1 * len(data)
    FS.get_file(sp, fid, out)
    assert out.read_bytes() == src.read_bytes()
    assert len(FS.list_files(sp)) == 1
    # the edit collected the replaced chunk(s): exactly the manifest's chunks are left
    assert set(store.list_chunks(sp.id, fid)) == set(again.manifest.addresses)
    assert set(added.manifest.addresses) - set(again.manifest.addresses)
    assert FS.collect_garbage(sp) == 0
    FS.get_file(sp, fid, out)
    assert out.read_bytes() == src.read_bytes()


def test_member_gets_manifest_first_chunks_later_through_blind_replicator(
        tmp_path: Path) -> None:
    a_store, alice, a_dev = _device(tmp_path, "alice")
    b_store, bob, b_dev = _device(tmp_path, "bob")
    r_store, backup, r_dev = _device(tmp_path, "backup")
    a = Space.create(a_store, alice, a_dev, window=0)
    invite, code = a.acl.invite(alice, Role.WRITER, anyone_can_join=True)
    a.commit_acl(invite)
    a.emit_acl(lambda acl: acl.add_replicator(alice, backup.public))
    b = Space.adopt(b_store, bob, b_dev, a.id, a.header.raw, a.acl_records(), window=0)
    b.emit_acl(lambda acl: acl.join(bob, code))
    r = Space.adopt(r_store, backup, r_dev, a.id, a.header.raw, a.acl_records(), window=0)
    _ship_docs(b, a)
    content = _content(1_500_000, 2)
    fid = FS.add_file(a, content, name="notes.bin").manifest.file_id

    _ship_docs(a, r)
    assert _ship_chunks(a, r) > 0  # the replicator stores chunks it cannot read
    _ship_docs(r, b)
    [info] = FS.list_files(b)  # the manifest arrived: listed, not complete
    assert info.name == "notes.bin" and info.held == 0 and not info.complete
    with pytest.raises(FileIncomplete):
        FS.get_file(b, fid, tmp_path / "early")
    assert not (tmp_path / "early").exists()
    assert FS.list_files(r) == []  # no read key: the replicator cannot read the manifest
    _ship_chunks(r, b)  # chunks come from the replicator, the author is not needed
    FS.get_file(b, fid, tmp_path / "got")
    assert (tmp_path / "got").read_bytes() == content
    r_store.close()
    a_store.close()
    assert_no_plaintext(tmp_path.glob("backup.sqlite3*"), MARKER.decode())
    assert_no_plaintext(tmp_path.glob("alice.sqlite3*"), MARKER.decode())
    assert MARKER in content  # control: the file itself carries the marker


def test_substituted_chunk_refused_on_arrival(tmp_path: Path) -> None:
    store, me, dev = _device(tmp_path, "a")
    sp = Space.create(store, me, dev, window=0)
    fid = FS.add_file(sp, _content(200_000, 3), name="x").manifest.file_id
    addr = FS.manifest_of(sp, fid).addresses[0]
    with pytest.raises(FileChunkInvalid):
        FS.accept_chunks(sp, fid, [(addr, b"\0" * 100)])


def test_removed_member_cannot_read_files_added_after_removal(tmp_path: Path) -> None:
    a_store, alice, a_dev = _device(tmp_path, "alice")
    b_store, bob, b_dev = _device(tmp_path, "bob")
    a = Space.create(a_store, alice, a_dev, window=0)
    invite, code = a.acl.invite(alice, Role.WRITER, anyone_can_join=True)
    a.commit_acl(invite)
    b = Space.adopt(b_store, bob, b_dev, a.id, a.header.raw, a.acl_records(), window=0)
    b.emit_acl(lambda acl: acl.join(bob, code))
    _ship_docs(b, a)
    before = FS.add_file(a, _content(100_000, 4), name="before").manifest
    a.emit_acl(lambda acl: acl.remove(alice, [bob.public]))
    after = FS.add_file(a, _content(100_000, 5), name="after").manifest
    assert after.read_key_id != before.read_key_id  # the rotated key
    # even if bob is handed the new manifest's document and its chunks, he cannot open them
    b.add_acl_records(a.acl_records())
    for tid in (before.file_id, after.file_id):
        b.add_changes(tid, [c.raw for c in a.tree(tid).changes()])
    _ship_chunks(a, b)
    FS.get_file(b, before.file_id, tmp_path / "old")  # what he was allowed to see
    with pytest.raises((AccessDenied, FileNotFound)):
        FS.get_file(b, after.file_id, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_tombstone_deletes_file_and_frees_chunks(tmp_path: Path) -> None:
    store, me, dev = _device(tmp_path, "a")
    sp = Space.create(store, me, dev, window=0)
    keep = FS.add_file(sp, _content(300_000, 6), name="keep").manifest.file_id
    gone = FS.add_file(sp, _content(300_000, 7), name="gone").manifest.file_id
    assert store.list_chunks(sp.id, gone)
    sp.delete_objects([gone])
    assert [i.name for i in FS.list_files(sp)] == ["keep"]
    assert store.list_chunks(sp.id, gone) == [] and store.list_chunks(sp.id, keep)
    with pytest.raises(FileNotFound):
        FS.get_file(sp, gone, tmp_path / "x")


def test_file_too_large_for_one_manifest_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal bound is MAX_FILE_CHUNKS chunks per file (paged manifests carry more than
    one change can: docs/files.md "bigfile"); lowered here to 13 chunks."""
    from p2psync.errors import FileTooLarge
    from p2psync.replica import files as F
    store, me, dev = _device(tmp_path, "a")
    sp = Space.create(store, me, dev, window=0)
    monkeypatch.setattr(F, "MAX_FILE_CHUNKS", 13)
    with pytest.raises(FileTooLarge):
        FS.add_file(sp, _content(2_000_000, 8), name="big")
    assert FS.list_files(sp) == []
    assert store.list_chunks(sp.id) == []  # it stopped early and left no orphan chunk
    monkeypatch.setattr(F, "MAX_MANIFEST_BYTES", 100)  # not even a paged manifest fits
    with pytest.raises(FileTooLarge):  # under the early bound, over it once signed
        FS.add_file(sp, _content(600_000, 10), name="mid")
    assert store.list_chunks(sp.id) == []  # its stored chunks (and pages) were removed again
    monkeypatch.setattr(F, "MAX_MANIFEST_BYTES", 500)
    calls: list[int] = []
    real = F.encrypt_stream

    def counted(*args: Any) -> Any:
        for item in real(*args):
            calls.append(1)
            yield item

    monkeypatch.setattr(F, "encrypt_stream", counted)
    with pytest.raises(FileTooLarge):
        FS.add_file(sp, _content(2_000_000, 8), name="big")
    assert len(calls) <= 13 + 1  # not the ~30 chunks of the whole file
    # an edit refused as too large keeps the file's current version whole
    small = FS.add_file(sp, _content(100_000, 9), name="small").manifest
    with pytest.raises(FileTooLarge):
        FS.add_file(sp, _content(2_000_000, 8), name="small", file_id=small.file_id)
    assert set(store.list_chunks(sp.id)) == set(small.addresses)
    FS.get_file(sp, small.file_id, tmp_path / "small")


def test_disk_full_aborts_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC midway through writing a file out: DiskFull, no partial temp file, and the file
    that was at the target before is untouched (temp file + atomic rename)."""
    import builtins
    import errno

    from p2psync.errors import DiskFull
    from p2psync.replica import files as files_mod

    sp = Space.create(MemoryStore(), AccountKey.generate(), DeviceKey.generate().public,
                      window=0)
    data = random.Random(11).randbytes(1_000_000)
    fid = FS.add_file(sp, data, name="f").manifest.file_id
    out = tmp_path / "out.bin"
    out.write_bytes(b"the previous version")
    real_open = builtins.open

    class Full:
        def __init__(self, f: Any) -> None:
            self.f, self.n = f, 0

        def write(self, b: bytes) -> int:
            self.n += len(b)
            if self.n > 300_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return int(self.f.write(b))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    monkeypatch.setattr(files_mod, "open", lambda *a, **k: Full(real_open(*a, **k)),
                        raising=False)
    with pytest.raises(DiskFull):
        FS.get_file(sp, fid, out)
    assert out.read_bytes() == b"the previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no .p2psync-part left
    monkeypatch.undo()
    FS.get_file(sp, fid, out)
    assert out.read_bytes() == data
