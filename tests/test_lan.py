"""Real LAN end to end: ``p2psync run`` agents in Linux network namespaces on a bridge.

Each namespace runs a full agent (QUIC + TCP on port 4433, mDNS); the test drives them through
their local API sockets (Unix sockets live in the file system, so the test process reaches them
across namespaces). Waiting is on events (ready lines, API calls that wait inside the agent) or
polls of ``status`` with a deadline; namespaces and processes are removed even on failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2psync.api import ApiClient
from p2psync.replica.acl import InviteCode
from tests.netns import JsonLinesProcess, NetnsLan, netns_lan, requires_netns

pytestmark = [pytest.mark.netns, requires_netns]
__all__ = ["netns_lan"]

PORT = 4433
DEADLINE = 30.0


def config(peers: list[str] | None = None) -> str:
    plist = ", ".join(f'"{p}"' for p in peers or [])
    return (f"port = {PORT}\nmdns = true\nmdns_poll = 0.5\nreconnect_cap = 2.0\n"
            f"head_sync_interval = 5.0\nlog_level = \"info\"\npeers = [{plist}]\n")


def init_home(path: Path, peers: list[str] | None = None) -> str:
    env = dict(os.environ, P2PSYNC_PASSPHRASE="")
    out = subprocess.run([sys.executable, "-m", "p2psync", "--json", "init", "--home",
                          str(path)], capture_output=True, text=True, env=env, check=True,
                         timeout=60)
    (path / "config.toml").write_text(config(peers))
    return str(json.loads(out.stdout)["peer_id"])


async def call(home: Path, op: str, **params: Any) -> Any:
    """One local API request, off the event loop (the client is blocking)."""
    def go() -> Any:
        with ApiClient(home, timeout=DEADLINE + 10) as c:
            return c.call(op, **params)
    return await asyncio.to_thread(go)


async def start_agents(lan: NetnsLan, homes: list[Path]) -> list[JsonLinesProcess]:
    procs = [await lan.spawn_python(lan.nodes[i], ["-m", "p2psync", "--json", "run", "--home",
                                                   str(h)], env={"P2PSYNC_PASSPHRASE": ""})
             for i, h in enumerate(homes)]
    for p in procs:
        await p.expect(lambda ln: ln.get("event") == "ready", 20, what="agent ready")
    return procs


async def until(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    """Poll ``check`` (a coroutine function) until it returns something truthy."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)  # a poll interval of status, bounded by the deadline
    raise AssertionError(f"{what}: not within {deadline}s (last: {last})")


async def connected_to(home: Path, peers: set[str]) -> bool:
    got = {p["peer_id"] for p in await call(home, "peers") if p["connected"]}
    return peers <= got


async def converged(homes: list[Path], space: str, doc: str) -> Any:
    hashes, values = set(), []
    for h in homes:
        st = await call(h, "status")
        sp = [s for s in st["spaces"] if s["space_id"] == space]
        if not sp:
            return False
        hashes.add(sp[0]["heads_hash"])
        values.append(await call(h, "doc.get", space=space, doc=doc))
    if len(hashes) == 1 and all(v == values[0] for v in values):
        return values[0]
    return False


def without_hints(code: str) -> str:
    """The same invite with no address hints: joining must find the owner another way."""
    ic = InviteCode.decode(code)
    return InviteCode(ic.invite_id, ic.seed, ic.space_id, ()).encode()


async def share_and_edit(homes: list[Path], ids: list[str]) -> tuple[str, str]:
    """Device 0 creates a space and a doc; 1 and 2 join by invite (no hints) and all three
    edit concurrently; returns (space, doc) once all agree."""
    space = (await call(homes[0], "space.create", name="lan"))["space_id"]
    doc = (await call(homes[0], "doc.new", space=space))["doc"]
    await call(homes[0], "doc.set", space=space, doc=doc, path="items", value=["milk"])
    code = without_hints((await call(homes[0], "space.invite", space=space,
                                     no_approval=True))["invite"])
    for h in homes[1:]:
        # the open invite makes the inviter answer anyone (issue 12.6): the joiner's dialler
        # reaches it, and the join asks that connection
        await until(f"{h.name} reached the inviter", lambda h=h: connected_to(h, {ids[0]}))
        joined = await call(h, "space.join", code=code)
        assert joined["space_id"] == space and joined["role"] == "writer"
        await call(h, "space.wait_synced", space=space)
    await asyncio.gather(*(call(h, "doc.set", space=space, doc=doc, path=f"by{i}", value=i)
                           for i, h in enumerate(homes)))
    value = await until("convergence after concurrent edits",
                        lambda: converged(homes, space, doc))
    assert value == {"items": ["milk"], "by0": 0, "by1": 1, "by2": 2}
    return space, doc


async def test_mdns_lan_join_edit_flap_and_a_stranger_learns_nothing(
    netns_lan: Callable[[int], NetnsLan], tmp_path: Path,
) -> None:
    lan = netns_lan(4)
    homes = [tmp_path / f"n{i}" for i in range(4)]
    ids = [init_home(h) for h in homes]  # no static peers: mDNS alone
    procs = await start_agents(lan, homes)
    members, stranger = homes[:3], homes[3]
    # issue 12.6: devices that share nothing see each other on mDNS, but a listener refuses
    # an initiator it has no reason to answer (tests/test_node_privacy.py): the members link
    # up once they share a space, the stranger only while an invite is open
    await until("everyone sighted by mDNS", lambda: sighted(homes, set(ids)))
    space, doc = await share_and_edit(members, ids[:3])
    for i, h in enumerate(members):  # sharing a space, the members link by mDNS alone
        others = {ids[j] for j in range(3) if j != i}
        await until(f"n{i} connected to the others by mDNS", lambda h=h, o=others:
                    connected_to(h, o))

    # the stranger saw every device on mDNS; whatever it reached (a space with an open invite
    # answers anyone, as the joiner is no member yet), it learnt nothing about spaces
    st = await call(stranger, "status")
    assert set(ids[:3]) <= set(st["mdns"]["sighted"])
    assert st["spaces"] == []
    for p in await call(stranger, "peers"):
        assert p["shared_spaces"] == [], p
    for p in (await call(stranger, "status"))["peers"]:
        assert p["spaces"] == [] and p["account_id"] in {
            (await call(h, "whoami"))["account_id"] for h in members}
    with pytest.raises(Exception, match="no connected peer offers"):
        await call(stranger, "space.replicate", space_id=space, timeout=5.0)
    for h in members:  # and the members list nothing for the stranger's connection
        for p in (await call(h, "status"))["peers"]:
            if p["peer_id"] == ids[3]:
                assert p["spaces"] == []

    # n2 drops off the LAN; everyone edits; it comes back and all converge
    node2 = lan.nodes[2]
    lan.link_down(node2)
    await until("n0 noticed n2 gone", lambda: _not_connected(members[0], ids[2]))
    await call(members[0], "doc.set", space=space, doc=doc, path="while_down", value="n0")
    await call(members[2], "doc.set", space=space, doc=doc, path="offline", value="n2")
    lan.link_up(node2)
    value = await until("convergence after the link came back",
                        lambda: converged(members, space, doc), 45.0)
    assert value["while_down"] == "n0" and value["offline"] == "n2"
    for p in procs:  # clean shutdown on SIGTERM
        assert await p.stop(10) == 0
        await p.expect(lambda ln: ln.get("event") == "stopped", 1, what="stopped")


async def sighted(homes: list[Path], ids: set[str]) -> bool:
    for h in homes:
        st = await call(h, "status")
        if not ids - {st["peer_id"]} <= set(st["mdns"]["sighted"]):
            return False
    return True


async def _not_connected(home: Path, peer: str) -> bool:
    return peer not in {p["peer_id"] for p in await call(home, "peers") if p["connected"]}


async def test_static_peers_work_with_multicast_blocked(
    netns_lan: Callable[[int], NetnsLan], tmp_path: Path,
) -> None:
    lan = netns_lan(3)
    lan.block_multicast()
    homes = [tmp_path / f"s{i}" for i in range(3)]
    ids = [init_home(h, [f"{n.ipv4}:{PORT}" for n in lan.nodes if n.index != i])
           for i, h in enumerate(homes)]
    await start_agents(lan, homes)
    # the joiners reach the inviter through their static peers (its open invite answers
    # anyone); sharing the space, all three then keep each other connected
    await share_and_edit(homes, ids)
    for i, h in enumerate(homes):
        others = {ids[j] for j in range(3) if j != i}
        await until(f"s{i} connected by static peers", lambda h=h, o=others:
                    connected_to(h, o))
        assert (await call(h, "status"))["mdns"]["sighted"] == []  # multicast really is off
