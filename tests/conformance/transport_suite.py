"""Conformance suite of the transport seam: what every carrier must do, over real sockets.

Use: subclass :class:`TransportSuite` in a test module that provides a ``carrier_name`` fixture
(one param per carrier in :func:`p2psync.transport.registry.carrier_names`). The suite dials
and listens through :func:`p2psync.transport.api.connect` / ``listen`` exactly as the node does,
so it checks the registry wiring too, and covers: dial/accept and the declared protocols, streams
opened by either side, large and empty messages, the close semantics (finish, reset, close with a
reason, wait_closed never raising), peer identity (expected peer, account), and a peer that
vanishes without a word (typed ``PeerTimeout``, the listener keeps serving others).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import (
    ConnectionClosed,
    EndOfStream,
    PeerTimeout,
    StreamReset,
    TransportError,
    UnexpectedPeer,
)
from p2psync.transport import Keepalive, Limits, Server, TransportConfig, connect, listen
from p2psync.transport.connection import Connection
from p2psync.transport.interface import Listener, PeerConnection, PeerStream

#: Quick keepalive so a vanished peer is noticed in about a second. Up to 16 streams may wait
#: to be accepted (the default, 4, is a hardening budget tested in test_transport_budget.py;
#: the ordering tests open 8 before reading any).
FAST = TransportConfig(keepalive=Keepalive(interval=0.2, timeout=0.8), handshake_timeout=3.0,
                       max_pending_streams=16,
                       limits=Limits(max_streams=16, stream_window=2 << 20,
                                     max_message=2 << 20))


@dataclass
class Identity:
    account: AccountKey
    device: DeviceKey
    cert: DeviceCertificate


def identity(account: AccountKey | None = None) -> Identity:
    acc = account or AccountKey.generate()
    dev = DeviceKey.generate()
    return Identity(acc, dev, DeviceCertificate.issue(acc, dev))


@dataclass
class Pair:
    server: Server
    client: PeerConnection
    accepted: PeerConnection  #: the listener's side of the same connection
    server_id: Identity
    client_id: Identity


class TransportSuite:
    """Every carrier passes these. Needs a ``carrier_name`` fixture."""

    @contextlib.asynccontextmanager
    async def pair(self, carrier_name: str, host: str = "127.0.0.1",
                   config: TransportConfig = FAST) -> AsyncIterator[Pair]:
        sid, cid = identity(), identity()
        accepted: asyncio.Queue[Connection] = asyncio.Queue()

        async def on_conn(conn: Connection) -> None:
            await accepted.put(conn)
            await conn.wait_closed()

        server = await listen(host, 0, device_key=sid.device, certificate=sid.cert,
                              on_connection=on_conn, transport=carrier_name, config=config)
        try:
            client = await connect((host, server.port), device_key=cid.device,
                                   certificate=cid.cert, expected_peer=sid.device.id,
                                   transport=carrier_name, config=config)
            try:
                acc = await asyncio.wait_for(accepted.get(), 5)
                yield Pair(server, client, acc, sid, cid)
            finally:
                await client.close()
        finally:
            await server.close()

    # --- dial / accept ---------------------------------------------------------------------
    async def test_dial_accept_and_declared_protocols(self, carrier_name: str) -> None:
        async with self.pair(carrier_name) as p:
            assert isinstance(p.server, Listener)
            assert p.server.transport == carrier_name and p.server.port > 0
            for conn in (p.client, p.accepted):
                assert isinstance(conn, PeerConnection)
                assert conn.transport == carrier_name
                assert not conn.is_closed and conn.close_reason is None
            # both ends derive the same handshake hash (what sync-level proofs bind to)
            assert p.client.result.handshake_hash == p.accepted.result.handshake_hash
            assert len(p.client.result.handshake_hash) >= 32

    async def test_ipv6_loopback(self, carrier_name: str) -> None:
        async with self.pair(carrier_name, host="::1") as p:
            st = await p.client.open_stream()
            await st.send(b"v6")
            peer = await p.accepted.accept_stream()
            assert await peer.recv() == b"v6"

    # --- peer identity ---------------------------------------------------------------------
    async def test_peer_identity_both_ways(self, carrier_name: str) -> None:
        async with self.pair(carrier_name) as p:
            assert p.client.peer_id == p.server_id.device.id
            assert p.client.account_id == p.server_id.account.id
            assert p.client.certificate.device == p.server_id.device.public
            assert p.accepted.peer_id == p.client_id.device.id
            assert p.accepted.account_id == p.client_id.account.id
            assert p.accepted.certificate.account == p.client_id.account.public

    async def test_unexpected_peer_is_refused(self, carrier_name: str) -> None:
        sid, cid = identity(), identity()
        server = await listen("127.0.0.1", 0, device_key=sid.device, certificate=sid.cert,
                              on_connection=lambda c: None, transport=carrier_name,
                              config=FAST)
        try:
            with pytest.raises(UnexpectedPeer):
                await connect(("127.0.0.1", server.port), device_key=cid.device,
                              certificate=cid.cert, expected_peer=identity().device.id,
                              transport=carrier_name, config=FAST)
            assert not server.connections
        finally:
            await server.close()

    # --- streams -------------------------------------------------------------------------
    async def test_streams_opened_by_either_side(self, carrier_name: str) -> None:
        async with self.pair(carrier_name) as p:
            out = await p.client.open_stream()
            assert isinstance(out, PeerStream)
            await out.send(b"from client")
            inc = await p.accepted.accept_stream()
            assert await inc.recv() == b"from client"
            await inc.send(b"reply on the same stream")
            assert await out.recv() == b"reply on the same stream"

            back = await p.accepted.open_stream()
            await back.send(b"from server")
            got = await p.client.accept_stream()
            assert got.id == back.id and got.id != out.id
            assert await got.recv() == b"from server"

    async def test_many_streams_keep_their_own_order(self, carrier_name: str) -> None:
        async with self.pair(carrier_name) as p:
            n, per = 8, 20
            streams = [await p.client.open_stream() for _ in range(n)]

            async def write(i: int) -> None:
                for k in range(per):
                    await streams[i].send(f"{i}:{k}".encode())
                streams[i].finish()

            async def read_one(st: PeerStream) -> tuple[int, list[bytes]]:
                msgs = [m async for m in st]
                return int(msgs[0].split(b":")[0]), msgs

            async def read_all() -> list[tuple[int, list[bytes]]]:
                # accept_stream has one caller at a time (as in the engine); readers overlap
                readers = [asyncio.create_task(read_one(await p.accepted.accept_stream()))
                           for _ in range(n)]
                return await asyncio.gather(*readers)

            writers = [asyncio.create_task(write(i)) for i in range(n)]
            results = await asyncio.wait_for(read_all(), 10)
            await asyncio.gather(*writers)
            assert sorted(i for i, _ in results) == list(range(n))
            for i, msgs in results:
                assert msgs == [f"{i}:{k}".encode() for k in range(per)]

    async def test_large_and_empty_messages_arrive_whole(self, carrier_name: str) -> None:
        async with self.pair(carrier_name) as p:
            big = os.urandom(FAST.limits.max_message)  # exactly the peer's limit
            odd = os.urandom(200_003)  # not a multiple of any record size
            st = await p.client.open_stream()
            sender = asyncio.create_task(_send_all(st, [big, b"", odd, big]))
            inc = await p.accepted.accept_stream()
            got = [await asyncio.wait_for(inc.recv(), 10) for _ in range(4)]  # a stall fails
            await sender
            assert got == [big, b"", odd, big]

    async def test_message_over_the_peer_limit_is_refused_locally(self,
                                                                  carrier_name: str) -> None:
        async with self.pair(carrier_name) as p:
            st = await p.client.open_stream()
            with pytest.raises(TransportError):
                await st.send(b"x" * (FAST.limits.max_message + 1))
            await st.send(b"still fine")  # the stream and connection stay usable
            inc = await p.accepted.accept_stream()
            assert await inc.recv() == b"still fine"

    # --- close semantics -----------------------------------------------------------------
    async def test_finish_delivers_everything_then_end_of_stream(self,
                                                                 carrier_name: str) -> None:
        async with self.pair(carrier_name) as p:
            st = await p.client.open_stream()
            await st.send(b"one")
            await st.send(b"two")
            st.finish()
            inc = await p.accepted.accept_stream()
            assert [m async for m in inc] == [b"one", b"two"]
            with pytest.raises(EndOfStream):
                await inc.recv()
            await inc.send(b"half-closed: the other way still works")
            assert await st.recv() == b"half-closed: the other way still works"

    async def test_reset_reaches_the_peer_and_spares_other_streams(self,
                                                                   carrier_name: str) -> None:
        async with self.pair(carrier_name) as p:
            doomed = await p.client.open_stream()
            other = await p.client.open_stream()
            await doomed.send(b"a")
            await other.send(b"b")
            inc = {(s := await p.accepted.accept_stream()).id: s for _ in range(2)}
            peer_doomed, peer_other = inc[doomed.id], inc[other.id]
            assert await peer_doomed.recv() == b"a"
            doomed.reset("changed my mind")
            with pytest.raises(StreamReset, match="changed my mind"):
                await peer_doomed.recv()
            with pytest.raises(StreamReset):
                await doomed.send(b"after reset")
            assert await peer_other.recv() == b"b"
            await other.send(b"c")
            assert await peer_other.recv() == b"c"

    async def test_close_with_reason(self, carrier_name: str) -> None:
        async with self.pair(carrier_name) as p:
            st = await p.accepted.open_stream()
            await st.send(b"hello")
            mine = await p.client.accept_stream()
            pending = asyncio.create_task(st.recv())
            await p.client.close("going away")
            await p.client.close("twice is fine")
            reason = await asyncio.wait_for(p.accepted.wait_closed(), 5)
            assert isinstance(reason, ConnectionClosed) and "going away" in str(reason)
            assert p.accepted.is_closed and p.accepted.close_reason is reason
            with pytest.raises(ConnectionClosed):
                await pending
            with pytest.raises(TransportError):
                await p.accepted.open_stream()
            with pytest.raises(TransportError):
                await mine.send(b"after close")
            assert isinstance(await p.client.wait_closed(), ConnectionClosed)

    # --- a peer that vanishes ------------------------------------------------------------
    async def test_vanished_peer_times_out_and_listener_keeps_serving(
            self, carrier_name: str) -> None:
        async with self.pair(carrier_name) as p:
            st = await p.client.open_stream()
            pending = asyncio.create_task(st.recv())
            _black_hole(p.accepted)  # the server process froze: reads and writes nothing
            reason = await asyncio.wait_for(p.client.wait_closed(), 10)
            assert isinstance(reason, PeerTimeout), reason
            with pytest.raises(PeerTimeout):
                await pending
            # only that connection ended: a new client is served
            cid = identity()
            other = await connect(("127.0.0.1", p.server.port), device_key=cid.device,
                                  certificate=cid.cert, transport=carrier_name, config=FAST)
            try:
                s2 = await other.open_stream()
                await s2.send(b"alive?")
                assert not other.is_closed
            finally:
                await other.close()


async def bulk_one_stream(p: Pair, nbytes: int, chunk_size: int = 60_000) -> None:
    """Send ``nbytes`` (whole ``chunk_size`` messages) client → accepted side on one stream,
    finish it, and check the reader got every byte before the end: the bulk load of the
    carrier tests that count datagrams and transmits."""

    async def drain() -> int:
        srv = await p.accepted.accept_stream()
        return sum([len(msg) async for msg in srv])

    reader = asyncio.create_task(drain())
    st = await p.client.open_stream()
    chunk = b"\0" * chunk_size
    for _ in range(nbytes // chunk_size):
        await st.send(chunk)
    st.finish()
    assert await reader == nbytes // chunk_size * chunk_size


async def _send_all(st: PeerStream, msgs: list[bytes]) -> None:
    for m in msgs:
        await st.send(m)


def _black_hole(conn: PeerConnection) -> None:
    """Make one end silent both ways without closing anything, as a frozen or unplugged peer
    looks from the other end (Link internals: the only way to mute a live carrier)."""
    assert isinstance(conn, Connection)
    link = conn._link
    carrier = link.carrier
    link.on_frames = lambda route, bodies: None  # type: ignore[method-assign]
    carrier.write_frames = lambda route, frames: None  # type: ignore[method-assign]
    carrier.end_route = lambda route: None  # type: ignore[method-assign]
    carrier.teardown = lambda code, reason: None  # type: ignore[method-assign]
