"""The asyncio shell of chunk transfer (docs/files.md): serve chunk requests on a stream, drive
a :class:`~p2psync.sync.files.ChunkFetch` over one stream per peer, and the two engine hooks.

Works on :class:`~p2psync.transport.interface.PeerStream`s, so chunks travel on their own
streams, never on the document-sync ones. The engine opens exactly one stream each way for
sync; :func:`serve_extra_streams` (spawned by the engine once its sync stream is accepted)
accepts every further stream the peer opens and dispatches it by kind (today one kind: chunk
streams, whose first message is a ``CHUNK_REQUEST``). :func:`fetch_file` is the requester side:
one new stream per connected peer sharing the space, a fetch spread over all of them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from p2psync.errors import (
    DecodeError,
    FileChunkInvalid,
    MessageTooLarge,
    P2PSyncError,
    UnknownMessageType,
)
from p2psync.replica import filespace as FS
from p2psync.replica.space import Space
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

if TYPE_CHECKING:  # pragma: no cover
    from p2psync.sync.engine import PeerEngine

#: what makes a peer's message garbage (a strike), as opposed to the stream going away
GARBLED = (DecodeError, UnknownMessageType, MessageTooLarge)

Strike = Callable[[str], None]

#: seconds without any answer from any peer after which the peers asked are given up on
IDLE_TIMEOUT = 30.0


def _no_strike(why: str) -> None:
    return None


async def serve_stream(stream: PeerStream, store: ReplicaStore,
                       may_access: Callable[[str], bool], strike: Strike = _no_strike) -> int:
    """Answer chunk requests arriving on ``stream`` until the peer finishes it or the
    connection goes; a space the peer may not access is UNKNOWN_SPACE (existence never leaks).
    Garbage (undecodable, over the schema's bounds, another message type) is a ``strike`` and
    ends the stream. Returns how many requests were answered."""
    served = 0
    try:
        async for raw in stream:
            try:
                env = decode(raw)
            except GARBLED as exc:
                strike(f"bad chunk request: {exc}")
                raise
            msg = env.message
            if not isinstance(msg, ChunkRequest):
                strike(f"{type(msg).__name__} on a chunk stream")
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
                    store: Callable[[Sequence[tuple[bytes, bytes]]], object], *,
                    on_bad: Callable[[Peer, str], None] | None = None,
                    progress: Callable[[int], None] | None = None,
                    idle_timeout: float | None = None) -> bool:
    """Fetch until done or stuck over one stream per peer (requests spread by ``fetch``).
    A peer whose stream fails, or that leaves a request unanswered while nothing arrives for
    ``idle_timeout`` seconds, is lost (its requests go to others); a peer sending a bad chunk
    or garbage has its stream reset and is reported to ``on_bad`` (the engine strikes it);
    ``progress(n)`` is called with the number of new chunks after each stored answer.
    Returns ``fetch.done``."""
    rids = itertools.count(1)
    pending: dict[tuple[Peer, int], ChunkRequest] = {}
    inbox: asyncio.Queue[tuple[Peer, Any]] = asyncio.Queue()

    def bad(peer: Peer, why: str) -> None:
        with contextlib.suppress(P2PSyncError):
            streams[peer].reset(why[:100])
        if on_bad is not None:
            on_bad(peer, why)

    async def read(peer: Peer, st: PeerStream) -> None:
        try:
            async for raw in st:
                try:
                    env = decode(raw)
                except GARBLED as exc:
                    bad(peer, f"bad chunk response: {exc}")
                    raise
                await inbox.put((peer, env))
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
            try:
                async with asyncio.timeout(IDLE_TIMEOUT if idle_timeout is None
                                           else idle_timeout):
                    peer, got = await inbox.get()
            except TimeoutError:
                for p in {p for p, _ in pending}:  # silent peers: give up on them
                    with contextlib.suppress(P2PSyncError):
                        streams[p].reset("no answer")
                    fetch.on_peer_lost(p)
                pending.clear()
                continue
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
                new = fetch.on_response(peer, asked, msg, store)
            except FileChunkInvalid as exc:
                bad(peer, str(exc))
                continue
            if progress is not None and new:
                progress(new)
    finally:
        for t in readers:
            t.cancel()
        for st in streams.values():
            with contextlib.suppress(P2PSyncError):
                st.finish()


# --- engine hooks -------------------------------------------------------------------------------
async def serve_extra_streams(engine: PeerEngine) -> None:
    """Accept every stream the peer opens after the engine's sync stream and serve it by kind
    (a chunk stream: :func:`serve_stream` under the engine's access rule and strikes). Runs
    until the connection closes. The transport bounds how many streams may be open at once."""
    replicas, account = engine.replicas, engine.remote_account

    def may_access(space_id: str) -> bool:
        return replicas.may_access(space_id, account)

    while not engine.conn.is_closed:
        try:
            stream = await engine.conn.accept_stream()
        except P2PSyncError:
            return
        engine._spawn(serve_stream(stream, replicas.store, may_access, engine._strike))


def peers_for(engines: Iterable[PeerEngine], space_id: str) -> list[PeerEngine]:
    """Connected, ready engines whose peer shares ``space_id`` (devices and backups alike)."""
    return [e for e in engines
            if e.ready.is_set() and not e.conn.is_closed and space_id in e.shared]


async def fetch_file(engines: Iterable[PeerEngine], space: Space, file_id: bytes, *,
                     window: int = 4, progress: Callable[[int], None] | None = None) -> bool:
    """Fetch the chunks of one file this store lacks from every connected peer sharing the
    space at once, each verified and stored as it arrives (so an interrupted fetch resumes
    with what is still missing). A peer sending a wrong chunk is struck and the chunk asked
    of the others. Returns True when the file is complete here."""
    wanted = FS.missing_chunks(space, file_id)
    if not wanted:
        return True
    streams: dict[Peer, PeerStream] = {}
    for e in peers_for(engines, space.id):
        with contextlib.suppress(P2PSyncError):
            streams[e] = await e.conn.open_stream()
    if not streams:
        return False

    def on_bad(peer: Peer, why: str) -> None:
        peer._strike(why)  # type: ignore[attr-defined]  # peers here are engines

    fetch = ChunkFetch(space.id, file_id, wanted, window=window)
    return await run_fetch(fetch, streams, lambda ps: FS.accept_chunks(space, file_id, ps),
                           on_bad=on_bad, progress=progress)
