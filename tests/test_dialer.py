"""The one dialler and its small helpers: backoff, host:port, timestamps; relabelling on a
handshake that proves someone else at an address (issue 20.2), on real loopback sockets."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from p2psync.backoff import Backoff
from p2psync.crypto import AccountKey
from p2psync.discovery.peers import AddressBook, Endpoint, Source, Transport
from p2psync.hostport import bracket, host_port
from p2psync.node import Node
from p2psync.timefmt import local_time
from tests.conftest import Fleet
from tests.sync_helpers import wait_any


def test_backoff_exact_without_jitter_and_capped() -> None:
    bo = Backoff(base=1, factor=2, cap=10, jitter=0)
    assert [bo.delay(n) for n in (1, 2, 3, 4, 5, 99)] == [1, 2, 4, 8, 10, 10]


def test_backoff_jitter_only_shortens_within_its_share() -> None:
    bo = Backoff(base=4, cap=4, jitter=0.25, rng=random.Random(7))
    delays = {bo.delay(1) for _ in range(50)}
    assert all(3.0 <= d <= 4.0 for d in delays) and len(delays) > 1
    assert bo.delay(1, rand=0.0) == 4.0 and bo.delay(1, rand=1.0) == 3.0
    with pytest.raises(ValueError):
        bo.delay(0)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)


def test_host_port_brackets_ipv6_only() -> None:
    assert host_port("10.0.0.1", 1) == "10.0.0.1:1"
    assert host_port("nas.local", 2) == "nas.local:2"
    assert host_port("fe80::1%eth0", 3) == "[fe80::1%eth0]:3"
    assert bracket("[::1]") == "[::1]"
    assert str(Endpoint("::1", 4, Transport.TCP)) == "tcp://[::1]:4"


def test_local_time_format() -> None:
    ms = int(time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1)) * 1000)
    assert local_time(ms) == "2026-01-02 03:04:05"


async def test_add_peer_keeps_an_address_connected_and_reconnects(fleet: Fleet) -> None:
    # two devices of one account (b answers a stranger's dial with a refusal, issue 12.6)
    a, b = await fleet.nodes("a", "b", account=AccountKey.generate())
    a.add_peer(b.address())

    def dialled() -> bool:
        return [(r.connected, r.peer_id) for r in a.status().dialing] == [(True, b.device.id)]

    await wait_any([a, b], dialled)
    await b.disconnect_all()
    await wait_any([a, b], lambda: not a.connected_peers())
    await wait_any([a, b], dialled)
    await a.remove_peer(b.address())
    await wait_any([a, b], lambda: not a.connected_peers())
    assert a.status().dialing == []


async def test_reaching_another_peer_than_expected_keeps_and_relabels(fleet: Fleet) -> None:
    """A neighbour advertised a made-up id Z at B's address: the dial reaches B, the handshake
    proves it is B, and the connection stays (it used to be closed and backed off)."""
    a, b = await fleet.nodes("a", "b", account=AccountKey.generate())  # one user's devices
    z = fleet.peer_id()
    host, port = b.address().rsplit(":", 1)
    a.dialer.book.mdns_seen(z, [host], None, int(port), time.time())
    a.dialer.wake()
    ep = Endpoint(host, int(port), Transport.TCP)
    await wait_any([a, b], lambda: ep in a.dialer.state and a.dialer.state[ep].connected)
    assert a.dialer.state[ep].relabelled == (z, b.device.id)
    (row,) = a.dialer.book.entries()
    assert (row.peer_id, row.proved, Source.KNOWN in row.sources) == (b.device.id, True, True)
    # the squatter keeps advertising: the proved label stays
    a.dialer.book.mdns_seen(z, [host], None, int(port), time.time())
    assert [r.peer_id for r in a.dialer.book.entries()] == [b.device.id]
    assert b.device.id in a.connected_peers()


def test_book_entries_are_sorted_and_removable() -> None:
    book = AddressBook(static=["tcp://10.0.0.2:1", "tcp://10.0.0.1:1"])
    assert [r.endpoint.host for r in book.entries()] == ["10.0.0.1", "10.0.0.2"]
    book.remove(Endpoint("10.0.0.1", 1, Transport.TCP))
    assert [r.endpoint.host for r in book.entries()] == ["10.0.0.2"]


async def test_node_closes_its_dialler(tmp_path: Path) -> None:
    from tests.sync_helpers import make_node

    n: Node = await make_node(tmp_path, "n")
    n.add_peer("127.0.0.1:9")
    await n.close()
    assert n.dialer.closed
