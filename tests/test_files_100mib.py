"""Issue 18 must-show: a 100 MiB file between two agents over each carrier (TCP, QUIC).

The content is pseudo-random (so content-defined chunking cuts ~1 600 real chunks of varying
size, none deduplicated), written to a file on disk, added on A through the local API
(``file.add``: chunk + encrypt through the library's mmap), fetched lazily by B through the
local API (``file.get``: chunk streams through the engines, every chunk verified by address on
arrival and again with its AEAD tag when assembled) and compared by SHA-256 with the source.
Throughput is not asserted here (scripts/bench_files.py measures it)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from p2psync.replica import filespace as FS
from tests.conftest import Fleet
from tests.sync_helpers import wait_any
from tests.test_files_agents import call, pair

MIB = 1 << 20
SIZE = 100 * MIB


def write_random(path: Path, size: int, seed: int) -> bytes:
    """Write ``size`` pseudo-random bytes to ``path`` a MiB at a time; returns their SHA-256."""
    rng, h = random.Random(seed), hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // MIB):
            block = rng.randbytes(MIB)
            h.update(block)
            f.write(block)
    return h.digest()


def sha256_of(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            h.update(block)
    return h.digest()


@pytest.mark.parametrize("carrier", ["tcp", "quic"])
async def test_100_mib_between_two_agents(fleet: Fleet, carrier: str, tmp_path: Path) -> None:
    (a, b), space = await pair(fleet, carrier, "a", "b")
    src, out = tmp_path / "big.bin", tmp_path / "got.bin"
    digest = write_random(src, SIZE, seed=18)
    added = await call(a, "file.add", space=space.id, path=str(src))
    [info] = FS.list_files(space)
    assert info.size == SIZE and info.chunks > 1000  # real content-defined chunking
    sb = b.node.replicas.spaces[space.id]
    await wait_any([b.node], lambda: any(i.file_id == info.file_id for i in FS.list_files(sb)),
                   timeout=30)
    assert FS.file_info(sb, info.file_id).held == 0  # the manifest first, no chunk yet
    got = await call(b, "file.get", space=space.id, file=added["file"], out=str(out))
    assert got["size"] == SIZE
    assert sha256_of(out) == digest
    assert FS.file_info(sb, info.file_id).complete
