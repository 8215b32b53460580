"""``p2psync backup init [--join] --store URL`` (issue 19, docs/backup-cluster.md): the first
process claims the database with its identity, the others take that identity out of it
(the keystore, encrypted under the shared passphrase). Hostile cases: an empty passphrase
(the keys would sit in the database in clear), a wrong one, a database claimed by another
backup (by init and by a running process), a tampered identity row."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from p2psync.backup.cluster import check_identity, init_backup
from p2psync.crypto.ids import decode_key
from p2psync.crypto.keys import AccountKey, DeviceKey, account_from_phrase, new_recovery_phrase
from p2psync.errors import ClusterIdentityError
from p2psync.home import Home
from p2psync.replica.pgstore import PgStore
from tests.backup_helpers import REPO, edit, free_udp_port, until_backed_up
from tests.netns import JsonLinesProcess
from tests.pg import fresh_schema, pg_server  # noqa: F401  (a fixture)
from tests.sync_helpers import close_all, make_node

SECRET = "correct horse battery staple"


@pytest.fixture
def url(pg_server: str) -> str:  # noqa: F811
    return fresh_schema(pg_server)


def new_account() -> tuple[AccountKey, str]:
    phrase = new_recovery_phrase()
    return account_from_phrase(phrase), phrase


def identity_row(url: str) -> tuple[bytes, bytes] | None:
    with PgStore(url) as s:
        return s.published_identity()


def env(secret: str) -> dict[str, str]:
    return dict(os.environ, P2PSYNC_PASSPHRASE=secret, PYTHONPATH=str(REPO),
                PYTHONUNBUFFERED="1")


def cli(*args: str, secret: str = SECRET) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2psync", "--json", *args],
                          capture_output=True, text=True, env=env(secret), timeout=60)


async def run_backup(home: Path) -> tuple[JsonLinesProcess, dict[str, Any]]:
    # init wrote the ports and the store; a test backup also stays on loopback, without mDNS
    cfg = home / "config.toml"
    cfg.write_text('listen = "127.0.0.1"\nmdns = false\n' + cfg.read_text())
    err = (home / "stderr.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2psync", "--json", "backup", "run", "--home", str(home),
        stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL,
        env=env(SECRET), start_new_session=True)
    err.close()
    jp = JsonLinesProcess(proc, name="backup", stderr_path=home / "stderr.log")
    ready = await jp.expect(lambda ln: ln.get("event") == "ready", 30, what="backup ready")
    return jp, ready


async def test_init_then_join_make_one_backup_on_one_database(
        tmp_path: Path, procs: list[JsonLinesProcess], url: str) -> None:
    first = cli("backup", "init", "--store", url, "--home", str(tmp_path / "b1"),
                "--port", str(free_udp_port()))
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    assert one["phrase"] and not one["joined"]
    second = cli("backup", "init", "--join", "--store", url, "--home", str(tmp_path / "b2"),
                 "--port", str(free_udp_port()))
    assert second.returncode == 0, second.stderr
    two = json.loads(second.stdout)
    assert two["joined"] and two["phrase"] is None
    assert (two["account_id"], two["peer_id"]) == (one["account_id"], one["peer_id"])
    assert oct((tmp_path / "b2" / "keystore").stat().st_mode & 0o777) == "0o600"

    p1, r1 = await run_backup(tmp_path / "b1")
    procs.append(p1)
    p2, r2 = await run_backup(tmp_path / "b2")
    procs.append(p2)
    assert r1["peer_id"] == r2["peer_id"] == one["peer_id"]
    laptop = await make_node(tmp_path, "laptop")
    try:
        space = laptop.create_space()
        doc = space.new_document()
        edit(space, doc.tree.id, "body", "hello")
        space.flush()
        space.emit_acl(lambda acl: acl.add_replicator(
            laptop.account, decode_key("a", one["account_id"])))
        e1 = await laptop.connect(r1["listening"][0].removeprefix("quic:"), "quic")
        rec1 = await until_backed_up(laptop, e1, space.id)
        # the joined process serves the same space from the database, as the same device
        e2 = await laptop.connect(r2["listening"][0].removeprefix("quic:"), "quic")
        rec2 = await until_backed_up(laptop, e2, space.id)
        assert rec1.root == rec2.root
        assert bytes(e1.remote_device) == bytes(e2.remote_device)
    finally:
        await close_all([laptop])


def test_an_empty_passphrase_is_refused_and_claims_nothing(tmp_path: Path, url: str) -> None:
    with pytest.raises(ClusterIdentityError, match="passphrase"):
        init_backup(Home(tmp_path / "b"), url, "", join=False, new_account=new_account)
    assert identity_row(url) is None
    assert not (tmp_path / "b" / "keystore").exists()


def test_join_with_a_wrong_passphrase_writes_no_keystore(tmp_path: Path, url: str) -> None:
    init_backup(Home(tmp_path / "b1"), url, SECRET, join=False, new_account=new_account)
    with pytest.raises(ClusterIdentityError, match="does not open"):
        init_backup(Home(tmp_path / "b2"), url, "guess", join=True)
    assert not list((tmp_path / "b2").glob("keystore*"))


def test_join_needs_a_claimed_database(tmp_path: Path, url: str) -> None:
    with pytest.raises(ClusterIdentityError, match="no backup identity"):
        init_backup(Home(tmp_path / "b2"), url, SECRET, join=True)


def test_a_claimed_database_refuses_another_backup(tmp_path: Path, url: str) -> None:
    a = init_backup(Home(tmp_path / "b1"), url, SECRET, join=False, new_account=new_account)
    # a fresh identity: refused before a home is made
    with pytest.raises(ClusterIdentityError, match="already belongs"):
        init_backup(Home(tmp_path / "b2"), url, SECRET, join=False, new_account=new_account)
    assert not (tmp_path / "b2" / "keystore").exists()
    # an existing home of another backup: refused, the claim stays the first's
    other = Home(tmp_path / "b3")
    other.create(AccountKey.generate(), SECRET)
    with pytest.raises(ClusterIdentityError, match="already belongs"):
        init_backup(other, url, SECRET, join=False)
    row = identity_row(url)
    assert row is not None and row[0] == decode_key("p", a["peer_id"])
    # and claiming again with the owner's own home is harmless
    init_backup(Home(tmp_path / "b1"), url, SECRET, join=False)


def test_a_tampered_identity_row_is_not_joined(tmp_path: Path, url: str) -> None:
    init_backup(Home(tmp_path / "b1"), url, SECRET, join=False, new_account=new_account)
    with PgStore(url) as s:
        s._query("UPDATE p2psync_identity SET device = %s", (DeviceKey.generate().public,),
                 fetch=False)
    with pytest.raises(ClusterIdentityError, match="tampered"):
        init_backup(Home(tmp_path / "b2"), url, SECRET, join=True)
    assert not (tmp_path / "b2" / "keystore").exists()


def test_check_identity(url: str) -> None:
    with PgStore(url) as s:
        mine, theirs = DeviceKey.generate().public, DeviceKey.generate().public
        check_identity(s, mine)  # unclaimed: a cluster of copied homes
        s.publish_identity(theirs, b"a" * 32, b"keystore")
        check_identity(s, theirs)
        with pytest.raises(ClusterIdentityError, match="belongs to backup"):
            check_identity(s, mine)


async def test_a_process_of_another_backup_refuses_a_claimed_database(
        tmp_path: Path, url: str) -> None:
    init_backup(Home(tmp_path / "b1"), url, SECRET, join=False, new_account=new_account)
    other = Home(tmp_path / "b2")
    other.create(AccountKey.generate(), SECRET)
    other.config_path.write_text(f'listen = "127.0.0.1"\nquic_port = {free_udp_port()}\n'
                                 f'tcp_port = -1\nmdns = false\n[replicator]\n'
                                 f'store = {json.dumps(url)}\n')
    out = await asyncio.to_thread(cli, "backup", "run", "--home", str(other.path))
    assert out.returncode != 0
    assert "belongs to backup" in out.stderr + out.stdout
