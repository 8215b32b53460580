"""Agent pieces without a LAN: config rules, dial planning and duplicate rules (sans-IO), and the
local API protocol against in-process agents on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from p2psync.agent.links import PeerLink, duplicates_to_close
from p2psync.api import ApiServer, handle_request
from p2psync.config import AgentConfig, ConfigError, load_config, parse_config, render_config
from p2psync.dialer import plan_dials
from p2psync.discovery.mdns import PeerSeen
from p2psync.discovery.peers import DialCandidate, Endpoint, Source, Transport
from tests.conftest import Fleet
from tests.sync_helpers import wait_any


# --- config -----------------------------------------------------------------------------------
def test_config_defaults_and_round_trip(tmp_path: Path) -> None:
    assert load_config(tmp_path / "missing.toml") == AgentConfig()
    cfg = parse_config({"port": 0, "tcp_port": -1, "peers": ["10.0.0.2:4433"], "mdns": False})
    assert (cfg.quic_port, cfg.tcp_port, cfg.mdns) == (0, None, False)
    (tmp_path / "c.toml").write_text(render_config(cfg))
    assert load_config(tmp_path / "c.toml") == cfg


@pytest.mark.parametrize("data, words", [
    ({"prot": 1}, "unknown key"),
    ({"port": 70000}, "port"),
    ({"port": -1}, "both QUIC and TCP are off"),
    ({"peers": ["no port here"]}, "peers"),
    ({"mdns": "yes"}, "mdns"),
    ({"log_level": "loud"}, "log_level"),
])
def test_config_errors_name_the_key(data: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config(data)


def test_bad_toml_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "c.toml")


# --- links ------------------------------------------------------------------------------------
def cand(host: str, port: int, t: Transport, pid: str | None) -> DialCandidate:
    return DialCandidate(Endpoint(host, port, t), pid, frozenset({Source.STATIC}), 0)


def test_plan_dials_one_per_peer_and_host_and_skips_connected() -> None:
    cands = [cand("10.0.0.2", 1, Transport.QUIC, None), cand("10.0.0.2", 1, Transport.TCP, None),
             cand("10.0.0.3", 1, Transport.QUIC, "pB"), cand("10.0.0.4", 1, Transport.QUIC, "pB"),
             cand("10.0.0.5", 1, Transport.QUIC, "pC"), cand("10.0.0.6", 1, Transport.QUIC, None)]
    todo = plan_dials(cands, connected={"pC"}, dialing=[], dialing_peers=[],
                      aliases={("10.0.0.6", 1): "pC"}, limit=8)
    assert [str(c.endpoint) for c in todo] == ["quic://10.0.0.2:1", "quic://10.0.0.3:1"]
    assert plan_dials(cands, connected=set(), dialing=[cands[0].endpoint], dialing_peers=[],
                      aliases={}, limit=2) == [cands[2]]


def test_duplicate_rule_is_symmetric() -> None:
    # a < b: both sides keep the connection a dialled
    a_view = [PeerLink(1, "pb", outgoing=True), PeerLink(2, "pb", outgoing=False)]
    b_view = [PeerLink(7, "pa", outgoing=False), PeerLink(8, "pa", outgoing=True)]
    assert duplicates_to_close("pa", a_view) == [2]  # b's dial
    assert duplicates_to_close("pb", b_view) == [8]  # b's dial
    assert duplicates_to_close("pa", [PeerLink(1, "pb", True), PeerLink(3, "pc", False)]) == []


# --- local API against in-process agents ------------------------------------------------------
async def rpc(path: Path, *reqs: dict[str, Any]) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        out = []
        for r in reqs:
            writer.write(json.dumps(r).encode() + b"\n")
            await writer.drain()
            out.append(json.loads(await reader.readline()))
        return out
    finally:
        writer.close()
        await writer.wait_closed()


async def test_api_errors_are_answers_not_crashes(fleet: Fleet) -> None:
    agent = await fleet.agent("a")
    server = fleet.track(await ApiServer(agent).start())
    assert server.path.stat().st_mode & 0o777 == 0o600
    answers = await rpc(server.path, {"id": 1, "op": "nope"},
                        {"id": 2, "op": "doc.get", "params": {"space": "x", "doc": "y"}},
                        {"id": 3, "op": "space.create", "params": {"nam": "x"}},
                        {"id": 4}, {"id": 5, "op": "ping"})
    assert [a["ok"] for a in answers] == [False, False, False, False, True]
    assert "unknown operation" in answers[0]["error"]["message"]
    assert answers[1]["error"]["type"] == "NotFound"
    assert "unknown parameter" in answers[2]["error"]["message"]
    assert answers[4]["result"]["peer_id"] == agent.keys.device.id
    bad = await handle_request(agent, ["not", "a", "dict"])
    assert bad["ok"] is False


async def test_subscribe_streams_local_and_peer_changes(fleet: Fleet) -> None:
    a, b = await fleet.agent("a"), await fleet.agent("b")
    sa, sb = fleet.track(await ApiServer(a).start()), fleet.track(await ApiServer(b).start())
    [made] = await rpc(sa.path, {"id": 1, "op": "space.create", "params": {"name": "s"}})
    space = made["result"]["space_id"]
    [d] = await rpc(sa.path, {"id": 2, "op": "doc.new", "params": {"space": space}})
    doc = d["result"]["doc"]
    [inv] = await rpc(sa.path, {"id": 3, "op": "space.invite",
                                "params": {"space": space, "no_approval": True}})
    [j] = await rpc(sb.path, {"id": 4, "op": "space.join",
                              "params": {"code": inv["result"]["invite"]}})
    assert j["ok"], j
    [w] = await rpc(sb.path, {"id": 5, "op": "space.wait_synced", "params": {
        "space": space, "timeout": 10}})
    assert w["ok"] and w["result"]["documents"] == 1, w
    reader, writer = await asyncio.open_unix_connection(str(sb.path))
    writer.write(json.dumps({"id": 9, "op": "subscribe", "params": {
        "space": space, "doc": doc}}).encode() + b"\n")
    ack = json.loads(await reader.readline())
    assert ack["ok"] and ack["result"]["subscription"]
    await rpc(sa.path, {"id": 5, "op": "doc.set", "params": {
        "space": space, "doc": doc, "path": "k", "value": 1}})
    ev = json.loads(await asyncio.wait_for(reader.readline(), 10))
    assert ev["event"] == "change" and ev["origin"] == "peer" and ev["doc"] == doc
    await rpc(sb.path, {"id": 6, "op": "doc.set", "params": {
        "space": space, "doc": doc, "path": "k", "value": 2}})
    ev = json.loads(await asyncio.wait_for(reader.readline(), 10))
    assert ev["origin"] == "local"
    writer.close()
    await writer.wait_closed()


async def test_close_flushes_and_persists_known_peers(fleet: Fleet) -> None:
    a, b = await fleet.agent("a"), await fleet.agent("b")
    space = a.node.create_space()
    code = a.node.invite(space.id)
    joined = await b.join(code.encode())
    assert joined.id == space.id
    await fleet.close()
    known = json.loads((fleet.tmp_path / "b" / "peers.json").read_text())
    assert a.keys.device.id in known["peers"]


# --- issue 20.2: a LAN neighbour squatting on a device's address ------------------------------
async def test_mdns_squatter_cannot_cut_two_agents_apart(fleet: Fleet) -> None:
    """A neighbour advertises made-up peer ids at A's and B's real addresses after they met.
    The claims change nothing: when the connection drops, the agents reconnect (before the fix
    the endpoint was relabelled, the handshake's answer refused and the dial backed off)."""
    a, b = await fleet.agent("a", quic_port=None), await fleet.agent("b", quic_port=None)
    # they share a space: agents that share nothing refuse each other (issue 12.6). b joins
    # (a's open invite answers its dial), then the invite is revoked (it would answer anyone)
    space = a.node.create_space()
    code = a.node.invite(space.id)
    await b.join(code.encode(), [f"tcp://{a.node.address('tcp')}"])
    space.commit_acl(space.acl.revoke_invite(a.node.account, code.invite_id))
    a_port, b_port = a.node.servers[0].port, b.node.servers[0].port
    a._on_discovery(PeerSeen(b.keys.device.id, ("127.0.0.1",), None, b_port, 1))
    b._on_discovery(PeerSeen(a.keys.device.id, ("127.0.0.1",), None, a_port, 1))

    def kept_dials() -> int:
        return sum(st.connections for ag in (a, b) for st in ag.node.dialer.state.values())

    def linked(dials: int) -> bool:
        return (b.keys.device.id in a.connected_peers()
                and a.keys.device.id in b.connected_peers() and kept_dials() > dials)

    # settled: linked, and no dial planned before the squat still in flight
    await wait_any([a.node, b.node], lambda: linked(0) and not a.node.dialer.dialing
                   and not b.node.dialer.dialing)
    proved = {(ag, r.endpoint): r.peer_id for ag in (a, b) for r in ag.book.entries()
              if r.proved}  # whoever dialled proved the other's address by handshake
    # the squatter's claims arrive after the genuine sightings
    a._on_discovery(PeerSeen(fleet.peer_id(), ("127.0.0.1",), None, b_port, 1))
    b._on_discovery(PeerSeen(fleet.peer_id(), ("127.0.0.1",), None, a_port, 1))
    dials = kept_dials()
    await a.node.disconnect_all()
    await b.node.disconnect_all()
    await wait_any([a.node, b.node], lambda: not a.connected_peers())
    await wait_any([a.node, b.node], lambda: linked(dials))
    for (ag, ep), pid in proved.items():  # no claim relabelled a proved address
        assert [r.peer_id for r in ag.book.entries() if r.endpoint == ep] == [pid]
