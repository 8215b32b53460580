"""The asyncio shell of chunk transfer (docs/files.md): serve chunk requests on a stream, and
drive a :class:`~p2psync.sync.files.ChunkFetch` over one stream per peer.

Works on :class:`~p2psync.transport.interface.PeerStream`s, so chunks travel on their own
streams, never on the document-sync ones. Wiring into the engine (accepting such streams next
to the sync streams, opening them when a file is opened or pinned) is not done here."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from p2psync.errors import FileChunkInvalid, P2PSyncError
from p2psync.replica.storage import ReplicaStore
from p2psync.sync.files import ChunkFetch, Peer, answer
from p2psync.sync.messages import (
    ChunkRequest,
    ChunkResponse,
    ErrorCode,
    ErrorMessage,
    decode,
    encode,
)
from p2psync.transport.interface import PeerStream


async def serve_stream(stream: PeerStream, store: ReplicaStore,
                       may_access: Callable[[str], bool]) -> int:
    """Answer chunk requests arriving on ``stream`` until the peer finishes it or the
    connection goes; a space the peer may not access is UNKNOWN_SPACE (existence never leaks).
    Returns how many requests were answered."""
    served = 0
    try:
        async for raw in stream:
            env = decode(raw)
            msg = env.message
            if not isinstance(msg, ChunkRequest):
                reply: Any = ErrorMessage(ErrorCode.MALFORMED, "chunk streams carry chunk requests")
            elif not may_access(msg.space_id):
                reply = ErrorMessage(ErrorCode.UNKNOWN_SPACE, "")
            else:
                reply = answer(store, msg)
                served += 1
            await stream.send(encode(reply, env.request_id))
    except P2PSyncError as exc:  # the peer went away, sent garbage, or we could not answer:
        with contextlib.suppress(P2PSyncError):  # tell it, so its fetch asks someone else
            stream.reset(str(exc)[:100])
    return served


async def run_fetch(fetch: ChunkFetch, streams: dict[Peer, PeerStream],
                    store: Callable[[Sequence[tuple[bytes, bytes]]], object]) -> bool:
    """Fetch until done or stuck over one stream per peer (requests spread by ``fetch``).
    A peer whose stream fails is lost (its requests go to others); a peer sending a bad chunk
    has its stream reset. Returns ``fetch.done``."""
    rids = itertools.count(1)
    pending: dict[tuple[Peer, int], ChunkRequest] = {}
    inbox: asyncio.Queue[tuple[Peer, Any]] = asyncio.Queue()

    async def read(peer: Peer, st: PeerStream) -> None:
        try:
            async for raw in st:
                await inbox.put((peer, decode(raw)))
        except P2PSyncError as exc:
            await inbox.put((peer, exc))
            return
        await inbox.put((peer, EOFError("finished")))

    readers = [asyncio.create_task(read(p, st)) for p, st in streams.items()]
    for p in streams:
        fetch.add_peer(p)
    try:
        while True:
            for peer, req in fetch.requests():
                rid = next(rids)
                pending[(peer, rid)] = req
                try:
                    await streams[peer].send(encode(req, rid))
                except P2PSyncError:
                    fetch.on_peer_lost(peer)
            if fetch.done or fetch.stuck:
                return fetch.done
            peer, got = await inbox.get()
            if isinstance(got, BaseException):
                fetch.on_peer_lost(peer)
                continue
            key = (peer, int(got.request_id))
            asked = pending.pop(key) if key in pending else None
            msg = got.message
            if asked is None or not isinstance(msg, ChunkResponse):
                fetch.on_peer_lost(peer)  # an error answer (e.g. no chunk support): ask others
                continue
            try:
                fetch.on_response(peer, asked, msg, store)
            except FileChunkInvalid:
                streams[peer].reset("bad chunk")
    finally:
        for t in readers:
            t.cancel()
        for st in streams.values():
            with contextlib.suppress(P2PSyncError):
                st.finish()
