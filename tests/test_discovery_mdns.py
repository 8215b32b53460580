"""MdnsDiscovery plumbing that needs no network: event delivery to callbacks and iterators."""

from __future__ import annotations

import asyncio

from p2psync.crypto.ids import peer_id
from p2psync.discovery import MdnsConfig, MdnsDiscovery, NetworkChanged, PeerGone, PeerSeen

P1 = peer_id(b"\x01" * 32)


async def test_events_reach_callback_and_every_iterator_and_end_on_close() -> None:
    got: list[object] = []
    d = MdnsDiscovery(None, on_event=got.append)
    it1, it2 = d.events(), d.events()
    ev = PeerSeen(P1, ("10.0.0.2",), 1, None, 1)
    d._emit(ev)
    d._emit(PeerGone(P1))
    async with asyncio.timeout(2):
        assert [await anext(it1), await anext(it1)] == [ev, PeerGone(P1)]
        assert await anext(it2) == ev
    await d.close()
    async with asyncio.timeout(2):
        rest = [e async for e in it1]
    assert rest == []
    assert got == [ev, PeerGone(P1)]


async def test_a_failing_callback_does_not_stop_delivery() -> None:
    def boom(_: object) -> None:
        raise RuntimeError("app bug")

    d = MdnsDiscovery(None, on_event=boom)
    it = d.events()
    d._emit(NetworkChanged(()))
    async with asyncio.timeout(2):
        assert await anext(it) == NetworkChanged(())
    await d.close()


async def test_full_queue_drops_instead_of_growing() -> None:
    d = MdnsDiscovery(None, config=MdnsConfig(queue_size=2))
    it = d.events()
    for i in range(5):
        d._emit(NetworkChanged((f"10.0.0.{i}",)))
    async with asyncio.timeout(2):
        assert [await anext(it), await anext(it)] == [
            NetworkChanged(("10.0.0.0",)), NetworkChanged(("10.0.0.1",))
        ]
    await d.close()


async def test_refresh_and_recheck_before_start_are_harmless() -> None:
    d = MdnsDiscovery(None)
    await d.refresh()
    assert await d.recheck_interfaces() is False
    assert d.peers == {} and d.local_addresses == ()
    await d.close()


async def test_iterator_ends_on_close_even_when_its_queue_is_full() -> None:
    d = MdnsDiscovery(None, config=MdnsConfig(queue_size=2))
    it = d.events()
    for i in range(3):
        d._emit(NetworkChanged((f"10.0.0.{i}",)))
    await d.close()
    async with asyncio.timeout(2):
        assert len([e async for e in it]) == 1
