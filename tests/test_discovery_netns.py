"""Real mDNS between Linux network namespaces on a bridge (needs root and iproute2).

Each namespace runs ``python -m p2psync.discovery`` and the test reads its JSON-lines output,
awaiting events with timeouts (no fixed sleeps).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.netns import JsonLinesProcess, NetnsLan, netns_lan, requires_netns

pytestmark = [pytest.mark.netns, requires_netns]
__all__ = ["netns_lan"]  # the fixture, imported for pytest

Line = dict[str, Any]

# A hostile device: registers malformed adverts, then a valid "canary". Once the canary is seen,
# the bad ones have been on the wire at least as long. Uses zeroconf directly.
HOSTILE = r"""
import asyncio, os, sys
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
from p2psync.crypto.ids import peer_id
T = "_p2psync._udp.local."
ip = sys.argv[1]
def pid(): return peer_id(os.urandom(32))
x = [pid() for _ in range(9)]
typo = x[1][:-1] + ("a" if x[1][-1] != "a" else "b")
bad = [
    ("notapeerid", {"id": "notapeerid", "v": "1", "q": "1"}, ip),
    (x[1], {"id": typo, "v": "1", "q": "1"}, ip),           # TXT id fails its checksum
    (x[2], {"id": x[3], "v": "1", "q": "1"}, ip),           # name and TXT id differ
    (x[3], {"v": "1", "q": "1"}, ip),                        # no id
    (x[4], {"id": x[4], "v": "99", "q": "1"}, ip),          # a version we do not speak
    (x[5], {"id": x[5], "v": "1", "q": "70000"}, ip),       # bad port
    (x[6], {"id": x[6], "v": "1"}, ip),                      # no port
    (x[7], {"id": x[7], "v": "1", "q": "1",
            **{f"k{i}": "x" * 200 for i in range(3)}}, ip),  # oversize TXT
    (x[8], {"id": x[8], "v": "1", "q": "1"}, "127.0.0.1"),  # only a loopback address
]
async def main():
    azc = AsyncZeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
    infos = [AsyncServiceInfo(T, f"{name}.{T}", port=1, properties=props,
                              server=f"h{i}.local.", parsed_addresses=[addr])
             for i, (name, props, addr) in enumerate(bad)]
    # probe all at once (each registration probes for ~1 s before returning its task)
    tasks = await asyncio.gather(*(azc.async_register_service(i) for i in infos))
    await asyncio.gather(*tasks)
    good = pid()
    info = AsyncServiceInfo(T, f"{good}.{T}", port=9, properties={"id": good, "v": "1", "q": "9"},
                            server="canary.local.", parsed_addresses=[ip])
    await (await azc.async_register_service(info))
    print(good, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


@dataclass
class Agent:
    """One ``python -m p2psync.discovery`` process and the peer id it advertises."""

    proc: JsonLinesProcess
    peer_id: str


def seen(peer: str, pred: Callable[[Line], bool] | None = None) -> Callable[[Line], bool]:
    def match(line: Line) -> bool:
        return (line.get("event") == "seen" and line.get("peer_id") == peer
                and (pred is None or pred(line)))

    return match


def gone(peer: str) -> Callable[[Line], bool]:
    return lambda line: line.get("event") == "gone" and line.get("peer_id") == peer


async def start_agents(lan: NetnsLan, count: int, *, stdin: bool = False) -> list[Agent]:
    procs = [
        await lan.spawn_python(lan.nodes[i], ["-m", "p2psync.discovery", "--poll", "0.3",
                                              *(["--stdin"] if stdin else [])], stdin=stdin)
        for i in range(count)
    ]
    agents = []
    for p in procs:
        ready = await p.expect(lambda ln: ln["event"] == "ready", 15, what="ready")
        agents.append(Agent(p, ready["peer_id"]))
    return agents


async def test_three_peers_find_each_other_by_mdns_alone_and_notice_goodbye(
    netns_lan: Callable[[int], NetnsLan],
) -> None:
    lan = netns_lan(4)
    t0 = time.monotonic()
    agents = await start_agents(lan, 3)
    for i, ag in enumerate(agents):
        for j, other in enumerate(agents):
            if i != j:
                line = await ag.proc.expect(seen(other.peer_id), 10, what=f"sighting of {j}")
                assert lan.nodes[j].ipv4 in line["addresses"]
                assert line["quic_port"] == 4433 and line["version"] == 1
    elapsed = time.monotonic() - t0
    assert elapsed < 10, f"discovery took {elapsed:.1f}s"
    for ag in agents:  # nobody reports itself
        assert not any(seen(ag.peer_id)(ln) for ln in ag.proc.lines)

    hostile = await lan.spawn_python(lan.nodes[3], ["-c", HOSTILE, lan.nodes[3].ipv4])
    assert hostile.proc.stdout is not None
    canary = (await hostile.proc.stdout.readline()).decode().strip()
    assert canary.startswith("p"), await hostile.stderr()
    await agents[0].proc.expect(seen(canary), 10, what="the canary")
    reported = {ln["peer_id"] for ln in agents[0].proc.lines if ln["event"] == "seen"}
    assert reported == {agents[1].peer_id, agents[2].peer_id, canary}
    hostile.kill_now()

    marks = [ag.proc.mark() for ag in agents[:2]]
    assert await agents[2].proc.stop() == 0  # SIGTERM: says goodbye
    for ag, mark in zip(agents[:2], marks, strict=True):
        await ag.proc.expect(gone(agents[2].peer_id), 5, since=mark, what="goodbye of 2")
        assert ag.proc.proc.returncode is None, "a discovery process died"


async def test_link_down_up_with_new_address_is_rediscovered(
    netns_lan: Callable[[int], NetnsLan],
) -> None:
    lan = netns_lan(2)
    a, b = await start_agents(lan, 2)
    await a.proc.expect(seen(b.peer_id), 10)
    await b.proc.expect(seen(a.peer_id), 10)
    ma, mb = a.proc.mark(), b.proc.mark()
    node_b = lan.nodes[1]
    lan.link_down(node_b)
    await b.proc.expect(lambda ln: ln["event"] == "network" and ln["addresses"] == [], 5,
                        since=mb, what="link-down noticed")
    new_ip = f"10.77.{lan.lan}.50"
    lan.set_ipv4(node_b, new_ip)  # as if DHCP gave a new lease on rejoining
    t_up = time.monotonic()
    lan.link_up(node_b)
    await b.proc.expect(lambda ln: ln["event"] == "network" and new_ip in ln["addresses"], 10,
                        since=mb, what="link-up noticed")
    # b restarted zeroconf and finds a again; a learns b's new address from b's re-announcement
    await b.proc.expect(seen(a.peer_id), 10, since=mb, what="a rediscovered by b")
    line = await a.proc.expect(seen(b.peer_id, lambda ln: new_ip in ln["addresses"]), 10,
                               since=ma, what="b's new address at a")
    assert line["addresses"][0] == new_ip, "the newest address should come first"
    assert time.monotonic() - t_up < 10


UDP_ECHO = r"""
import json, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
print(json.dumps({"event": "listening"}), flush=True)
data, peer = s.recvfrom(100)
s.sendto(data, peer)
"""

UDP_PING = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"ping", (sys.argv[1], 9999))
sys.exit(0 if s.recvfrom(100)[0] == b"ping" else 1)
"""


async def test_blocked_multicast_means_no_sightings_until_unblocked(
    netns_lan: Callable[[int], NetnsLan],
) -> None:
    lan = netns_lan(3)
    lan.block_multicast()  # the whole LAN, as on WiFi that filters multicast
    agents = await start_agents(lan, 3, stdin=True)  # registered = announcements sent
    for ag in agents:  # and everyone asks explicitly
        await ag.proc.send("refresh")
        await ag.proc.expect(lambda ln: ln["event"] == "refreshed", 5)
    # unicast still works: the path later tests use for static peers
    echo = await lan.spawn_python(lan.nodes[0], ["-c", UDP_ECHO])
    await echo.expect(lambda ln: ln["event"] == "listening", 5)
    res = lan.run(lan.nodes[2], [sys.executable, "-c", UDP_PING, lan.nodes[0].ipv4], check=False)
    assert res.returncode == 0, f"unicast broken under the multicast block: {res.stderr}"
    for ag in agents:
        assert [ln for ln in ag.proc.lines if ln["event"] in ("seen", "gone")] == []

    # positive control: the same processes find each other once multicast flows and they ask
    lan.unblock_multicast()
    await agents[2].proc.send("refresh")
    for other in agents[:2]:
        await agents[2].proc.expect(seen(other.peer_id), 10, what="sighting after unblock")


# A squatter (issue 20.2): advertises a made-up peer id at each target's real address, with the
# agents' real ports, so every sighting looks like a device at that address.
SQUATTER = r"""
import asyncio, json, os, sys
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
from p2psync.crypto.ids import peer_id
T = "_p2psync._udp.local."
own, port, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
async def main():
    azc = AsyncZeroconf(interfaces=[own], ip_version=IPVersion.V4Only)
    ids = [peer_id(os.urandom(32)) for _ in targets]
    infos = [AsyncServiceInfo(T, f"{z}.{T}", port=int(port), server=f"squat{i}.local.",
                              properties={"id": z, "v": "1", "q": port, "t": port},
                              parsed_addresses=[ip])
             for i, (z, ip) in enumerate(zip(ids, targets))]
    tasks = await asyncio.gather(*(azc.async_register_service(i) for i in infos))
    await asyncio.gather(*tasks)
    print(json.dumps({"event": "squatting", "ids": ids}), flush=True)
    await asyncio.sleep(300)
asyncio.run(main())
"""


async def test_mdns_squatter_does_not_cut_two_agents_apart(
    netns_lan: Callable[[int], NetnsLan], tmp_path: Path,
) -> None:
    """A and B (full agents, mDNS only) meet; a neighbour then advertises made-up ids at both
    of their addresses; unicast between them is cut long enough to lose the connection and
    restored, without any new sighting. A and B must reconnect (before the fix each side had
    relabelled the other's address, refused the handshake's answer and backed off)."""
    from tests.test_lan import PORT, _not_connected, call, connected_to, init_home, until
    from tests.test_lan import start_agents as start_run_agents

    lan = netns_lan(3)
    homes = [tmp_path / "a", tmp_path / "b"]
    ids = [init_home(h) for h in homes]
    await start_run_agents(lan, homes)
    # they share a space (agents that share nothing refuse each other, issue 12.6): A's open
    # invite makes it answer B's dial, and B joins over that connection
    space = (await call(homes[0], "space.create", name="s"))["space_id"]
    code = (await call(homes[0], "space.invite", space=space, no_approval=True))["invite"]
    await until("A and B connected by mDNS", lambda: connected_to(homes[1], {ids[0]}))
    await call(homes[1], "space.join", code=code)
    await until("A connected to B", lambda: connected_to(homes[0], {ids[1]}))

    squat = await lan.spawn_python(lan.nodes[2], ["-c", SQUATTER, lan.nodes[2].ipv4, str(PORT),
                                                  lan.nodes[0].ipv4, lan.nodes[1].ipv4])
    z = (await squat.expect(lambda ln: ln.get("event") == "squatting", 20, what="squatting"))[
        "ids"]

    async def sighted(home: Path, peer: str) -> bool:
        return peer in (await call(home, "status"))["mdns"]["sighted"]

    await until("A saw the claim at B's address", lambda: sighted(homes[0], z[1]))
    await until("B saw the claim at A's address", lambda: sighted(homes[1], z[0]))

    # cut unicast between them (a blackhole route in B: mDNS multicast and the interfaces stay
    # as they are, so nobody restarts mDNS and no genuine sighting comes again)
    route = ["ip", "route", "add", "blackhole", f"{lan.nodes[0].ipv4}/32"]
    lan.run(lan.nodes[1], route)
    await until("A noticed B gone", lambda: _not_connected(homes[0], ids[1]))
    await until("B noticed A gone", lambda: _not_connected(homes[1], ids[0]))
    route[2] = "del"
    lan.run(lan.nodes[1], route)
    await until("A and B reconnected", lambda: connected_to(homes[0], {ids[1]}))
    await until("B reconnected to A", lambda: connected_to(homes[1], {ids[0]}))
    endpoints = (await call(homes[0], "status"))["endpoints"]
    b_rows = [e for e in endpoints if f"//{lan.nodes[1].ipv4}:" in e["endpoint"]
              and e["connected"]]
    assert b_rows and {e["peer_id"] for e in b_rows} == {ids[1]}, endpoints
