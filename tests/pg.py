"""A real PostgreSQL server for the tests that need one.

``P2PSYNC_TEST_PG`` names a running server (``.ci/run`` starts a throwaway cluster with
``scripts/pg_cluster.sh`` and sets it). Without it, a cluster is started here for the session
if PostgreSQL's binaries are installed; otherwise the tests skip — unless
``P2PSYNC_REQUIRE_PG=1`` (set by CI), where a missing server is a failure, so the suite can
never go green by quietly skipping the PostgreSQL store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg_cluster.sh"


def _have_binaries() -> bool:
    return bool(shutil.which("pg_ctl") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb")))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server (its ``postgres`` database)."""
    url = os.environ.get("P2PSYNC_TEST_PG")
    if url:
        yield url
        return
    if not _have_binaries():
        if os.environ.get("P2PSYNC_REQUIRE_PG") == "1":
            pytest.fail("P2PSYNC_REQUIRE_PG=1 but no PostgreSQL server or binaries")
        pytest.skip("no PostgreSQL (install Debian's postgresql, or set P2PSYNC_TEST_PG)")
    d = tempfile.mkdtemp(prefix="p2psync-pg-")
    port = str(40000 + os.getpid() % 20000)
    out = subprocess.run([str(SCRIPT), "start", d, port], check=True, capture_output=True,
                         text=True)
    try:
        yield out.stdout.strip()
    finally:
        subprocess.run([str(SCRIPT), "stop", d], check=False, capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def with_schema(url: str, schema: str) -> str:
    """``url`` whose sessions use ``schema`` (tables of one store live in one schema)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


def fresh_schema(server: str) -> str:
    """A new empty schema on ``server``; returns a store URL that uses it."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {name}")
    return with_schema(server, name)


class Cluster:
    """A PostgreSQL cluster of this test alone (it may be stopped and restarted)."""

    def __init__(self, directory: Path, port: int) -> None:
        self.dir, self.port = directory, port
        self.url = ""

    def start(self) -> str:
        out = subprocess.run([str(SCRIPT), "start", str(self.dir), str(self.port)], check=True,
                             capture_output=True, text=True, timeout=120)
        self.url = out.stdout.strip()
        return self.url

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop", str(self.dir)], check=True, capture_output=True,
                       timeout=120)


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A throwaway cluster for a test that restarts the server (the session's is shared)."""
    if not _have_binaries():
        if os.environ.get("P2PSYNC_REQUIRE_PG") == "1":
            pytest.fail("P2PSYNC_REQUIRE_PG=1 but no PostgreSQL binaries")
        pytest.skip("no PostgreSQL binaries (install Debian's postgresql)")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    d = Path(tempfile.mkdtemp(prefix="p2psync-pg-own-"))
    c = Cluster(d, port)
    c.start()
    try:
        yield c
    finally:
        subprocess.run([str(SCRIPT), "stop", str(d)], check=False, capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
