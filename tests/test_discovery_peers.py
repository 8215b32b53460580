"""The address book: static/backup/known/mDNS merging, backoff and persistence (no network)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync.backoff import Backoff
from p2psync.crypto.ids import peer_id
from p2psync.discovery.peers import (
    AddressBook,
    BadPeerAddress,
    Endpoint,
    Source,
    Transport,
    load_known_file,
    parse_endpoints,
    save_known_file,
)

P1 = peer_id(b"\x01" * 32)
P2 = peer_id(b"\x02" * 32)
ME = peer_id(b"\x03" * 32)
NO_JITTER = Backoff(base=1.0, cap=300.0, jitter=0.0)
Q, T = Transport.QUIC, Transport.TCP


def book(**kw: object) -> AddressBook:
    kw.setdefault("policy", NO_JITTER)
    kw.setdefault("self_peer_id", ME)
    return AddressBook(**kw)  # type: ignore[arg-type]


# --- parsing ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.2:4433", [Endpoint("10.0.0.2", 4433, Q), Endpoint("10.0.0.2", 4433, T)]),
        ("tcp://pi.local:80", [Endpoint("pi.local", 80, T)]),
        ("QUIC://[2001:db8::1]:9", [Endpoint("2001:db8::1", 9, Q)]),
        ("quic://[fe80::1%eth0]:9", [Endpoint("fe80::1%eth0", 9, Q)]),
        (" backup.example.org:4433 ", [Endpoint("backup.example.org", 4433, Q),
                                       Endpoint("backup.example.org", 4433, T)]),
    ],
)
def test_parse_endpoints(text: str, expected: list[Endpoint]) -> None:
    assert parse_endpoints(text) == expected


def test_endpoint_str_round_trips() -> None:
    for ep in [Endpoint("fe80::1%eth0", 9, Q), Endpoint("10.0.0.1", 1, T)]:
        assert parse_endpoints(str(ep)) == [ep]


@pytest.mark.parametrize(
    "text",
    ["10.0.0.2", "2001:db8::1:4433", "[2001:db8::1]", "[10.0.0.1]:5", "[::1:5", "host:0",
     "host:65536", "host:port", "http://host:1", "bad host:1", ":4433", "999.1.1.1:5",
     "host:+5", "-host:1", "[::1]x:5"],
)
def test_parse_endpoints_rejects(text: str) -> None:
    with pytest.raises(BadPeerAddress):
        parse_endpoints(text)


def test_default_port_applies_only_when_missing() -> None:
    assert parse_endpoints("tcp://h", default_port=7) == [Endpoint("h", 7, T)]
    assert parse_endpoints("tcp://[::1]", default_port=7) == [Endpoint("::1", 7, T)]
    assert parse_endpoints("tcp://h:8", default_port=7) == [Endpoint("h", 8, T)]


@given(st.text(max_size=60))
def test_parse_endpoints_fails_only_with_bad_peer_address(text: str) -> None:
    try:
        eps = parse_endpoints(text)
    except BadPeerAddress:
        return
    assert all(1 <= ep.port <= 65535 for ep in eps)


# --- merging and candidates -------------------------------------------------------------------
def test_static_and_backup_are_due_immediately_backup_first() -> None:
    b = book(static=["10.0.0.5:1"], backup="tcp://backup.example:2", backup_peer_id=P2)
    cands = b.candidates(now=100.0)
    assert [str(c.endpoint) for c in cands] == [
        "tcp://backup.example:2", "quic://10.0.0.5:1", "tcp://10.0.0.5:1"
    ]
    assert cands[0].peer_id == P2 and cands[0].sources == {Source.BACKUP}
    assert cands[1].peer_id is None


def test_mdns_sighting_gives_quic_then_tcp_ipv4_first() -> None:
    b = book()
    b.mdns_seen(P1, ["fe80::1%2", "10.0.0.9"], quic_port=5, tcp_port=6, now=0.0)
    assert [str(c.endpoint) for c in b.candidates(0.0)] == [
        "quic://10.0.0.9:5", "tcp://10.0.0.9:6", "quic://[fe80::1%2]:5", "tcp://[fe80::1%2]:6"
    ]
    assert all(c.peer_id == P1 for c in b.candidates(0.0))


def test_own_sightings_and_connected_peers_are_not_dialled() -> None:
    b = book()
    b.mdns_seen(ME, ["10.0.0.1"], 1, None, now=0.0)
    b.mdns_seen(P1, ["10.0.0.2"], 1, None, now=0.0)
    b.mdns_seen(P2, ["10.0.0.3"], 1, None, now=0.0)
    assert [c.peer_id for c in b.candidates(0.0, connected_peers={P2})] == [P1]


def test_backoff_grows_per_endpoint_and_caps() -> None:
    b = book(static=["quic://10.0.0.5:1", "quic://10.0.0.6:1"],
             policy=Backoff(base=1, factor=2, cap=10, jitter=0))
    ep5, ep6 = Endpoint("10.0.0.5", 1, Q), Endpoint("10.0.0.6", 1, Q)
    now = 0.0
    delays = []
    for _ in range(6):
        b.failed(ep5, now)
        nxt = b.next_due(now)
        assert nxt == now  # ep6 is still due: backoff is per endpoint
        due_5 = [c for c in b.candidates(now) if c.endpoint == ep5]
        assert due_5 == []
        t = now
        while not any(c.endpoint == ep5 for c in b.candidates(t)):
            t += 0.5
        delays.append(t - now)
        now = t
    assert delays == [1, 2, 4, 8, 10, 10]
    assert [c.endpoint for c in b.candidates(now)] == [ep6, ep5]  # fewer failures first


def test_failures_sort_after_healthy_endpoints_and_jitter_spreads() -> None:
    b = book(static=["quic://10.0.0.5:1", "quic://10.0.0.6:1"])
    b.failed(Endpoint("10.0.0.5", 1, Q), 0.0)
    assert [c.endpoint.host for c in b.candidates(100.0)] == ["10.0.0.6", "10.0.0.5"]
    jittery = AddressBook(static=["quic://h:1"], policy=Backoff(base=10, jitter=0.2),
                          rand=lambda: 1.0)
    jittery.failed(Endpoint("h", 1, Q), 0.0)
    assert jittery.next_due(0.0) == pytest.approx(8.0)  # up to 20 % earlier, never later


def test_connect_success_resets_backoff_and_binds_static_to_peer() -> None:
    b = book(static=["quic://10.0.0.5:1"])
    ep = Endpoint("10.0.0.5", 1, Q)
    for _ in range(5):
        b.failed(ep, 0.0)
    b.connected(ep, P1, now=50.0)
    assert b.candidates(50.0, connected_peers={P1}) == []
    (c,) = b.candidates(50.0)
    assert c.peer_id == P1 and c.failures == 0 and c.sources == {Source.STATIC, Source.KNOWN}


def test_fresh_mdns_sighting_makes_a_backed_off_endpoint_due() -> None:
    b = book()
    b.mdns_seen(P1, ["10.0.0.2"], 1, None, now=0.0)
    ep = Endpoint("10.0.0.2", 1, Q)
    for _ in range(8):
        b.failed(ep, 0.0)
    assert b.candidates(1.0) == []
    b.mdns_seen(P1, ["10.0.0.2"], 1, None, now=2.0)  # it announced itself again
    assert [c.endpoint for c in b.candidates(2.0)] == [ep]


def test_goodbye_drops_mdns_only_endpoints_but_keeps_known_and_static() -> None:
    b = book(static=["quic://10.0.0.2:1"])
    b.mdns_seen(P1, ["10.0.0.2", "10.0.0.3", "10.0.0.4"], 1, None, now=0.0)
    b.connected(Endpoint("10.0.0.3", 1, Q), P1, now=0.0)
    b.mdns_gone(P1)
    assert {c.endpoint.host for c in b.candidates(1.0)} == {"10.0.0.2", "10.0.0.3"}


def test_address_reused_by_another_peer_forgets_old_history() -> None:
    """A handshake that proves another peer at the address (DHCP reuse) relabels it."""
    b = book()
    ep = Endpoint("10.0.0.2", 1, Q)
    b.connected(ep, P1, now=0.0)
    b.failed(ep, 1.0)
    b.connected(ep, P2, now=2.0)
    (c,) = b.candidates(2.0)
    assert (c.peer_id, c.failures, c.sources) == (P2, 0, frozenset({Source.KNOWN}))


def test_mdns_claim_never_relabels_an_address_a_handshake_proved() -> None:
    """Issue 20.2: a neighbour advertising a made-up id Z at B's proved address changes
    nothing: B keeps its label, its history and its saved (KNOWN) address."""
    b = book()
    ep = Endpoint("10.0.0.2", 1, Q)
    b.connected(ep, P1, now=0.0)
    b.failed(ep, 1.0)
    b.mdns_seen(P2, ["10.0.0.2"], 1, None, now=2.0)
    (row,) = b.entries()
    assert (row.peer_id, row.failures, row.sources, row.proved) == (
        P1, 1, frozenset({Source.KNOWN}), True)
    assert b.known_to_json()["peers"] == {P1: [{"addr": str(ep), "last_ok": 0.0}]}


def test_mdns_claim_relabels_an_unproved_address_and_a_handshake_wins() -> None:
    """Before any handshake a sighting is all we know, so a later sighting may relabel it;
    the handshake then proves who is there and a repeated false claim is ignored."""
    b = book()
    ep = Endpoint("10.0.0.2", 1, Q)
    b.mdns_seen(P1, ["10.0.0.2"], 1, None, now=0.0)
    b.mdns_seen(P2, ["10.0.0.2"], 1, None, now=1.0)
    assert [c.peer_id for c in b.candidates(1.0)] == [P2]
    b.connected(ep, P1, now=2.0)  # the dial expecting P2 reached P1
    b.mdns_seen(P2, ["10.0.0.2"], 1, None, now=3.0)
    assert [r.peer_id for r in b.entries()] == [P1]


def test_loaded_known_addresses_count_as_proved() -> None:
    b = book()
    b.load_known({"version": 1, "peers": {P1: [{"addr": "quic://10.0.0.2:1", "last_ok": 5}]}})
    b.mdns_seen(P2, ["10.0.0.2"], 1, None, now=6.0)
    assert [r.peer_id for r in b.entries()] == [P1]


def test_stale_sightings_and_known_addresses_expire() -> None:
    b = book(mdns_ttl=100.0, known_ttl=1000.0)
    b.mdns_seen(P1, ["10.0.0.2"], 1, None, now=0.0)
    b.connected(Endpoint("10.0.0.9", 1, Q), P2, now=0.0)
    b.failed(Endpoint("10.0.0.2", 1, Q), 0.0)
    assert {c.peer_id for c in b.candidates(50.0)} == {P1, P2}
    assert {c.peer_id for c in b.candidates(500.0)} == {P2}  # sighting stale and failing
    assert b.candidates(5000.0) == []


def test_clock_going_backwards_does_not_stall_dialling() -> None:
    b = book(static=["quic://h:1"])
    b.failed(Endpoint("h", 1, Q), 1_000_000.0)
    assert len(b.candidates(0.0)) == 1


def test_next_due_and_empty_book() -> None:
    assert book().next_due(0.0) is None
    b = book(static=["quic://h:1"])
    b.failed(Endpoint("h", 1, Q), 10.0)
    assert b.next_due(10.0) == 11.0


def test_known_per_peer_is_capped_most_recent_kept() -> None:
    b = book(max_known_per_peer=2)
    for i in range(4):
        b.connected(Endpoint(f"10.0.0.{i + 1}", 1, Q), P1, now=float(i))
    assert [e.host for e in b.endpoints_of(P1)] == ["10.0.0.3", "10.0.0.4"]


# --- persistence ------------------------------------------------------------------------------
def test_known_addresses_persist_atomically_without_link_local(tmp_path: Path) -> None:
    b = book(static=["quic://10.0.0.7:1"])
    b.connected(Endpoint("10.0.0.2", 1, Q), P1, now=10.0)
    b.connected(Endpoint("fe80::1%2", 1, Q), P1, now=11.0)
    b.connected(Endpoint("backup.example", 2, T), P2, now=12.0)
    b.mdns_seen(P2, ["10.0.0.3"], 1, None, now=12.0)  # sightings are not persisted
    path = tmp_path / "home" / "peers.json"
    save_known_file(b, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["peers.json"]  # no temp file left
    data = json.loads(path.read_text())
    assert data["peers"] == {
        P1: [{"addr": "quic://10.0.0.2:1", "last_ok": 10.0}],
        P2: [{"addr": "tcp://backup.example:2", "last_ok": 12.0}],
    }
    fresh = book()
    assert load_known_file(fresh, path) == 2
    assert fresh.endpoints_of(P1) == [Endpoint("10.0.0.2", 1, Q)]
    assert {c.sources for c in fresh.candidates(13.0)} == {frozenset({Source.KNOWN})}


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '{"version": 2, "peers": {}}', '{"version": 1, "peers": []}',
     '{"version": 1, "peers": {"junk": [{"addr": "quic://h:1", "last_ok": 1}]}}',
     json.dumps({"version": 1, "peers": {P1: [{"addr": "nope", "last_ok": 1},
                                              {"addr": "quic://h:1"}, "x", None]}}),
     json.dumps({"version": 1, "peers": {P1: "quic://h:1"}})],
)
def test_corrupt_known_file_loads_nothing_and_never_raises(tmp_path: Path, content: str) -> None:
    path = tmp_path / "peers.json"
    path.write_text(content)
    assert load_known_file(book(), path) == 0


def test_missing_known_file_is_empty(tmp_path: Path) -> None:
    assert load_known_file(book(), tmp_path / "nope.json") == 0


def test_bad_static_entry_is_a_typed_error() -> None:
    with pytest.raises(BadPeerAddress, match="missing ':port'"):
        AddressBook(static=["10.0.0.1"])
    with pytest.raises(BadPeerAddress):
        AddressBook(backup="h:1", backup_peer_id="not-a-peer")
