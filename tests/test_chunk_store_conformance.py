"""The chunk-store conformance suite against every ReplicaStore implementation (SQLite,
memory, PostgreSQL when a server can be started)."""

from __future__ import annotations

from tests.conformance.chunk_suite import ChunkStoreSuite
from tests.pg import fresh_schema, pg_server  # noqa: F401  (a fixture)
from tests.test_store_conformance import store_url  # noqa: F401  (the same four stores)


class TestEveryChunkStore(ChunkStoreSuite):
    """Runs the chunk suite once per implementation."""
