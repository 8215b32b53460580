"""Conformance suite of the chunk part of the store seam (``put_chunks`` & co., docs/files.md).

Use: subclass :class:`ChunkStoreSuite` in a module providing a ``store_url`` fixture. Checks:
bytes back exactly as given, idempotent puts counted once, atomic batches (a batch that fails
midway stores nothing), per-space and per-file listing, deletion, a tombstone (``delete_trees``
of the file id) freeing the file's chunks, data kept across reopen, typed errors after close.
"""

from __future__ import annotations

from typing import Any

import pytest

from p2psync.errors import StoreError
from p2psync.replica.files import chunk_address
from p2psync.replica.storage import open_store

F1, F2 = b"\x01" * 32, b"\x02" * 32


def _chunk(i: int, size: int = 1000) -> tuple[bytes, bytes]:
    data = bytes([i % 256]) * size + i.to_bytes(4, "big")
    return chunk_address(data), data


class _Exploding:
    """A ciphertext-like that cannot be read: a batch that fails halfway through."""

    def __bytes__(self) -> bytes:
        raise RuntimeError("disk vanished mid-batch")


class ChunkStoreSuite:
    @pytest.fixture
    def store(self, store_url: str) -> Any:
        s = open_store(store_url)
        yield s
        s.close()

    def test_round_trip_and_idempotent(self, store: Any) -> None:
        a, b = _chunk(1), _chunk(2, 300_000)
        assert store.put_chunks("s1", F1, [a, b]) == 2
        assert store.put_chunks("s1", F1, [a, b]) == 0
        assert store.get_chunk(a[0]) == a[1] and store.get_chunk(b[0]) == b[1]
        assert store.get_chunk(b"\0" * 32) is None
        assert store.has_chunks([a[0], b"\0" * 32, b[0]]) == {a[0], b[0]}

    def test_listing_per_space_and_delete(self, store: Any) -> None:
        a, b, c = _chunk(1), _chunk(2), _chunk(3)
        store.put_chunks("s1", F1, [a, b])
        store.put_chunks("s2", F2, [c])
        assert store.list_chunks("s1") == sorted([a[0], b[0]])
        assert store.list_chunks("s2") == [c[0]]
        assert store.list_chunks("s1", F1) == sorted([a[0], b[0]])
        assert store.list_chunks("s1", F2) == []
        assert store.delete_chunks([a[0], b"\0" * 32]) == 1
        assert store.get_chunk(a[0]) is None and store.list_chunks("s1") == [b[0]]

    def test_get_file_chunks_only_of_that_file_of_that_space(self, store: Any) -> None:
        a, b, c = _chunk(1), _chunk(2, 300_000), _chunk(3)
        store.put_chunks("s1", F1, [a, b])
        store.put_chunks("s1", F2, [c])
        want = [b[0], a[0], c[0], b"\0" * 32, a[0]]
        assert store.get_file_chunks("s1", F1, want) == {a[0]: a[1], b[0]: b[1]}
        assert store.get_file_chunks("s2", F1, want) == {}  # another space: nothing
        assert store.get_file_chunks("s1", F2, want) == {c[0]: c[1]}
        assert store.get_file_chunks("s1", F1, []) == {}
        many = [_chunk(i, 10) for i in range(10, 1200)]  # beyond SQLite's parameter limit
        store.put_chunks("s1", F1, many)
        assert len(store.get_file_chunks("s1", F1, [x for x, _ in many])) == len(many)

    def test_batch_is_atomic(self, store: Any) -> None:
        a = _chunk(1)
        with pytest.raises(Exception):  # noqa: B017 - whatever the implementation raises
            store.put_chunks("s1", F1, [a, (b"\1" * 32, _Exploding())])
        assert store.get_chunk(a[0]) is None and store.list_chunks("s1") == []

    def test_kept_across_reopen(self, store_url: str) -> None:
        a = _chunk(9)
        with open_store(store_url) as s:
            s.put_chunks("s1", F1, [a])
        with open_store(store_url) as s:
            assert s.get_chunk(a[0]) == a[1]

    def test_typed_error_after_close(self, store_url: str) -> None:
        s = open_store(store_url)
        s.close()
        with pytest.raises(StoreError):
            s.get_chunk(b"\0" * 32)

    def test_tombstone_of_the_file_frees_its_chunks(self, store: Any) -> None:
        a, b, c = _chunk(1), _chunk(2), _chunk(3)
        store.put_chunks("s1", F1, [a, b])
        store.put_chunks("s1", F2, [c])
        store.delete_trees([F1])
        assert store.list_chunks("s1") == [c[0]] and store.get_chunk(a[0]) is None
