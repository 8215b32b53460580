"""Closed laptop in network namespaces: laptop and phone have routes only to the backup (they
cannot reach each other), mDNS off. Store-and-forward through the backup process, then live
edits between the two devices connected only to it (periodic head sync off: push only)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2psync.api import ApiClient
from tests.netns import NetnsLan, netns_lan, requires_netns

# The QUIC dials that used to time out here were p2psync's, not the namespaces': see
# tests/test_quic_dial_race.py (the dial's handshake waiter could be created too late).
pytestmark = [pytest.mark.netns, requires_netns]
__all__ = ["netns_lan"]

DEADLINE = 30.0
ENV = {"P2PSYNC_PASSPHRASE": ""}


def init_home(path: Path, extra: str = "") -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "p2psync", "--json", "init", "--home",
                          str(path)], capture_output=True, text=True, check=True, timeout=60,
                         env=dict(os.environ, **ENV))
    (path / "config.toml").write_text(
        "port = 4433\nmdns = false\nhead_sync_interval = 3600.0\nreconnect_cap = 1.0\n"
        'log_level = "info"\n' + extra)
    return dict(json.loads(out.stdout))


async def call(home: Path, op: str, **params: Any) -> Any:
    def go() -> Any:
        with ApiClient(home, timeout=DEADLINE + 10) as c:
            return c.call(op, **params)
    return await asyncio.to_thread(go)


async def until(what: str, check: Callable[[], Any]) -> Any:
    """Poll a status query until it holds (bounded by the deadline)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    last: Any = None
    while loop.time() < end:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)  # poll interval of a status query, not synchronisation
    raise AssertionError(f"{what}: not within {DEADLINE}s (last: {last})")


def cut_off(lan: NetnsLan, i: int, other_ip: str) -> None:
    """Namespace ``i`` can no longer reach ``other_ip`` (a prohibit route beats the subnet's)."""
    subprocess.run(["ip", "-n", lan.nodes[i].ns, "route", "add", "prohibit", f"{other_ip}/32"],
                   check=True, timeout=10)


TCP_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except OSError as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
print("connected")
"""


async def tcp_reaches(lan: NetnsLan, i: int, host: str, port: int = 4433) -> tuple[bool, str]:
    """Whether a TCP connect from namespace ``i`` to ``host:port`` succeeds (and what it said).
    The agents listen on TCP 4433 too, so this probes reachability of a live listener."""
    res = await asyncio.to_thread(lan.run, lan.nodes[i], [sys.executable, "-c", TCP_PROBE, host,
                                                          str(port)], check=False)
    return res.returncode == 0, (res.stdout + res.stderr).strip()


async def test_closed_laptop_through_the_backup_when_devices_cannot_see_each_other(
        netns_lan: Callable[[int], NetnsLan], tmp_path: Path) -> None:
    lan = netns_lan(3)
    b_ip, l_ip, p_ip = (n.ipv4 for n in lan.nodes)
    cut_off(lan, 1, p_ip)
    cut_off(lan, 2, l_ip)
    # the two devices really cannot reach each other; both reach the backup
    assert lan.run(lan.nodes[1], ["ip", "route", "get", p_ip], check=False).returncode != 0
    assert lan.run(lan.nodes[2], ["ip", "route", "get", l_ip], check=False).returncode != 0
    assert lan.run(lan.nodes[1], ["ip", "route", "get", b_ip], check=False).returncode == 0

    bhome, lhome, phome = tmp_path / "backup", tmp_path / "laptop", tmp_path / "phone"
    baddr = f"quic://{b_ip}:4433"
    init_home(bhome, "[replicator]\nspace_changes = 100000\n")
    init_home(lhome)
    init_home(phome)  # joins through the backup address (kept as a known peer)

    backup = await lan.spawn_python(lan.nodes[0], ["-m", "p2psync", "--json", "backup", "run",
                                                   "--home", str(bhome)], env=ENV)
    await backup.expect(lambda ln: ln.get("event") == "ready", 20, what="backup ready")
    laptop = await lan.spawn_python(lan.nodes[1], ["-m", "p2psync", "--json", "run", "--home",
                                                   str(lhome)], env=ENV)
    await laptop.expect(lambda ln: ln.get("event") == "ready", 20, what="laptop ready")
    # with the laptop's agent listening: the backup's namespace reaches it, the phone's cannot,
    # and the phone's reaches the backup
    assert (await tcp_reaches(lan, 0, l_ip))[0]
    phone_to_laptop = await tcp_reaches(lan, 2, l_ip)
    assert not phone_to_laptop[0] and "Permission denied" in phone_to_laptop[1], \
        phone_to_laptop  # refused by the phone's own routing table: nothing ever leaves
    assert (await tcp_reaches(lan, 2, b_ip))[0]

    space = (await call(lhome, "space.create", name="notes"))["space_id"]
    doc = (await call(lhome, "doc.new", space=space))["doc"]
    await call(lhome, "doc.set", space=space, doc=doc, path="title", value="from laptop")
    try:
        added = await call(lhome, "space.add_backup", space=space, address=baddr)
    except Exception as exc:
        raise AssertionError(f"{exc}\nbackup: {await backup.stderr()}\n"
                             f"laptop: {await laptop.stderr()}") from exc
    assert added["record_written"]

    async def backup_holds(home: Path) -> Any:
        mine = [s for s in (await call(home, "status"))["spaces"] if s["space_id"] == space]
        theirs = [s for s in (await call(bhome, "status"))["spaces"] if s["space_id"] == space]
        return mine and theirs and mine[0]["heads_hash"] == theirs[0]["heads_hash"] \
            and theirs[0]["role"] == "replicator"
    await until("backup fetched the space by itself", lambda: backup_holds(lhome))
    receipt = await call(lhome, "space.backup_status", space=space)
    assert receipt["receipts"] and receipt["receipts"][0]["all_backed_up"]
    code = (await call(lhome, "space.invite", space=space, no_approval=True))["invite"]
    assert await laptop.stop() == 0  # the laptop closes: its agent stops cleanly
    assert any(ln.get("event") == "stopped" for ln in laptop.lines)

    phone = await lan.spawn_python(lan.nodes[2], ["-m", "p2psync", "--json", "run", "--home",
                                                  str(phome)], env=ENV)
    await phone.expect(lambda ln: ln.get("event") == "ready", 20, what="phone ready")
    await call(phome, "space.join", code=code, peers=[baddr])
    await call(phome, "space.wait_synced", space=space)
    assert await call(phome, "doc.get", space=space, doc=doc) == {"title": "from laptop"}

    # both online, connected only to the backup: a live edit travels by push through it
    laptop = await lan.spawn_python(lan.nodes[1], ["-m", "p2psync", "--json", "run", "--home",
                                                   str(lhome)], env=ENV)
    await laptop.expect(lambda ln: ln.get("event") == "ready", 20, what="laptop ready")
    await until("laptop reconnected to the backup", lambda: backup_holds(lhome))
    await call(phome, "doc.set", space=space, doc=doc, path="reply", value="from phone")

    async def laptop_sees() -> Any:
        got = await call(lhome, "doc.get", space=space, doc=doc)
        return got.get("reply") == "from phone"
    await until("phone's edit reached the laptop through the backup", laptop_sees)
    peers = {p["peer_id"] for p in await call(lhome, "peers") if p["connected"]}
    assert len(peers) == 1  # only the backup
