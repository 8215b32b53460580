"""The encrypted-file storage model (p2psync/replica/files.py), sans-IO: chunking, per-file
keys, chunk verification, the signed manifest, and assembly that never reports a partial file
as complete."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from p2psync.crypto.box import ReadKey
from p2psync.crypto.keys import DeviceKey
from p2psync.errors import FileChunkInvalid, FileIncomplete, ManifestInvalid
from p2psync.replica import files as F

FID = b"\x07" * 32
SPACE = "space-1"


def _data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _manifest(enc: F.Encrypted, key: DeviceKey, name: str = "a.bin") -> F.Manifest:
    return F.Manifest(SPACE, FID, name, "application/octet-stream", enc.size, b"\x01" * 32,
                      enc.chunks, key.public)


def test_round_trip_through_assemble(tmp_path: Path) -> None:
    rk = ReadKey.generate()
    k = F.file_key(rk, SPACE, FID)
    data = _data(2_000_000)
    enc = F.encrypt_file(data, k, FID)
    assert len(enc.chunks) > 5 and enc.size == len(data)
    out = tmp_path / "out.bin"
    assert F.assemble(_manifest(enc, DeviceKey.generate()), k, enc.blobs.get, out) == len(data)
    assert out.read_bytes() == data


def test_path_and_bytes_chunk_alike(tmp_path: Path) -> None:
    data = _data(700_000, 2)
    p = tmp_path / "f"
    p.write_bytes(data)
    assert list(F.split(p)) == list(F.split(data))
    assert list(F.split(b"")) == [] and list(F.split(tmp_path / "f") ) != []


def test_edit_changes_only_nearby_chunks() -> None:
    k = F.file_key(ReadKey.generate(), SPACE, FID)
    data = _data(4_000_000, 3)
    before = F.encrypt_file(data, k, FID)
    edited = data[:1_500_000] + b"an inserted sentence" + data[1_500_000:]
    after = F.encrypt_file(edited, k, FID)
    new = set(after.blobs) - set(before.blobs)
    assert 1 <= len(new) <= 2 < len(after.chunks)


def test_keys_differ_per_file_space_and_read_key() -> None:
    rk = ReadKey.generate()
    k = F.file_key(rk, SPACE, FID)
    assert k != F.file_key(rk, SPACE, b"\x08" * 32)
    assert k != F.file_key(rk, "space-2", FID)
    assert k != F.file_key(ReadKey.generate(), SPACE, FID)
    chunk = _data(5000)
    assert F.encrypt_chunk(k, FID, chunk) != F.encrypt_chunk(
        F.file_key(rk, SPACE, b"\x08" * 32), b"\x08" * 32, chunk)


def test_tampered_substituted_or_wrong_key_chunk_refused() -> None:
    rk = ReadKey.generate()
    k = F.file_key(rk, SPACE, FID)
    addr, ct = F.encrypt_chunk(k, FID, b"x" * 1000)
    assert F.decrypt_chunk(k, FID, addr, ct, 1000) == b"x" * 1000
    bad = bytearray(ct)
    bad[40] ^= 1
    with pytest.raises(FileChunkInvalid):  # address check
        F.decrypt_chunk(k, FID, addr, bytes(bad), 1000)
    with pytest.raises(FileChunkInvalid):  # tag check: right address, wrong key
        F.decrypt_chunk(F.file_key(ReadKey.generate(), SPACE, FID), FID, addr, ct, 1000)
    with pytest.raises(FileChunkInvalid):  # length the manifest records
        F.decrypt_chunk(k, FID, addr, ct, 999)
    with pytest.raises(FileChunkInvalid):
        F.check_chunks([(addr, bytes(bad))])
    F.check_chunks([(addr, ct)])


def test_tampered_chunk_leaves_nothing_behind(tmp_path: Path) -> None:
    k = F.file_key(ReadKey.generate(), SPACE, FID)
    enc = F.encrypt_file(_data(600_000, 4), k, FID)
    last = enc.chunks[-1][0]
    blobs = dict(enc.blobs)
    blobs[last] = blobs[last][:-1] + bytes([blobs[last][-1] ^ 1])
    out = tmp_path / "out"
    with pytest.raises(FileChunkInvalid):
        F.assemble(_manifest(enc, DeviceKey.generate()), k, blobs.get, out)
    assert list(tmp_path.iterdir()) == []


def test_partial_file_is_never_complete(tmp_path: Path) -> None:
    k = F.file_key(ReadKey.generate(), SPACE, FID)
    enc = F.encrypt_file(_data(900_000, 5), k, FID)
    m = _manifest(enc, DeviceKey.generate())
    held = dict(list(enc.blobs.items())[:-2])
    assert F.missing(m, set(held)) == [a for a, _ in enc.chunks if a not in held]
    with pytest.raises(FileIncomplete) as err:
        F.assemble(m, k, held.get, tmp_path / "out")
    assert err.value.missing == 2
    assert list(tmp_path.iterdir()) == []


def test_manifest_signed_and_bounded() -> None:
    dev = DeviceKey.generate()
    k = F.file_key(ReadKey.generate(), SPACE, FID)
    m = _manifest(F.encrypt_file(_data(300_000), k, FID), dev, name="photo.jpg")
    raw = m.sign(dev)
    assert F.Manifest.parse(raw) == m
    with pytest.raises(ValueError):
        m.sign(DeviceKey.generate())
    forged = F.Manifest(SPACE, FID, "evil.exe", m.media_type, m.size, m.read_key_id,
                        m.chunks, dev.public)
    from p2psync.codec import pack, unpack
    body, sig = unpack(raw)
    with pytest.raises(ManifestInvalid):
        F.Manifest.parse(pack([forged.body(), sig]))
    with pytest.raises(ManifestInvalid):
        F.Manifest.parse(os.urandom(100))
    wrong_size = F.Manifest(SPACE, FID, "a", "b", m.size + 1, m.read_key_id, m.chunks,
                            dev.public)
    with pytest.raises(ManifestInvalid):
        F.Manifest.parse(wrong_size.sign(dev))
    assert body == m.body()
