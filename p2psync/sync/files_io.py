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
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, cast

from p2psync.errors import (
    DecodeError,
    FileChunkInvalid,
    MessageTooLarge,
    P2PSyncError,
    UnknownMessageType,
)
from p2psync.replica import filespace as FS
from p2psync.replica.files import chunk_address
from p2psync.replica.space import Space
from p2psync.replica.storage import ReplicaStore
from p2psync.sync.files import ChunkFetch, Gate, Peer, answer, gate_refusal
from p2psync.sync.messages import (
    MAX_KEEP_ADDRESSES,
    MAX_KEEP_PARTS,
    MAX_OFFER_ADDRESSES,
    ChunkKeep,
    ChunkKeepPart,
    ChunkOffer,
    ChunkRequest,
    ChunkResponse,
    ErrorCode,
    ErrorMessage,
    decode,
    encode,
)
from p2psync.sync.replicas import Replicas
from p2psync.transport.interface import PeerConnection, PeerStream


class PeerEngine(Protocol):
    """What these hooks use of :class:`p2psync.sync.engine.PeerEngine` (declared here: the
    engine imports this module, so importing it back would be a cycle)."""

    replicas: Replicas
    conn: PeerConnection
    remote_account: bytes
    ready: asyncio.Event

    @property
    def shared(self) -> set[str]: ...

    def __hash__(self) -> int: ...

    def _spawn(self, coro: Any) -> asyncio.Task[Any]: ...

    def _strike(self, why: str, *, violation: bool = False) -> None: ...

    @property
    def responder(self) -> _HasGate: ...


class _HasGate(Protocol):
    @property
    def gate(self) -> Gate: ...

#: what makes a peer's message garbage (a strike), as opposed to the stream going away
GARBLED = (DecodeError, UnknownMessageType, MessageTooLarge)

Strike = Callable[[str], None]

log = logging.getLogger("p2psync.files")

#: seconds without any answer from any peer after which the peers asked are given up on
IDLE_TIMEOUT = 30.0


def _no_strike(why: str) -> None:
    return None


#: answers a chunk stream prepares ahead of the one being sent (reads in a worker thread)
SERVE_DEPTH = 4


async def serve_stream(stream: PeerStream, store: ReplicaStore,
                       may_access: Callable[[str], bool], strike: Strike = _no_strike,
                       on_offer: Callable[[ChunkOffer | ChunkKeep], None] | None = None,
                       gate: Gate | None = None, *, depth: int = SERVE_DEPTH) -> int:
    """Answer chunk requests arriving on ``stream`` until the peer finishes it or the
    connection goes; a space the peer may not access is UNKNOWN_SPACE (existence never leaks).
    Chunk offers and keep statements are passed to ``on_offer`` (a replicator pulls what it
    lacks, collects what no current manifest names) and answered with an empty response.
    Garbage (undecodable, over the schema's bounds, another message type) is a ``strike`` and
    ends the stream. Every well-formed message first passes the peer's inbound ``gate`` (the
    engine's, shared with document sync): over its rate or concurrency budget the answer is
    RATE_LIMITED with the wait, and nothing is read from the store; an admitted message holds
    its slot until its answer is sent. At most ``depth`` answers wait to be sent per stream
    (the transport bounds streams and their buffers), so a flood costs bounded memory.
    Returns how many requests were answered.

    Throughput (docs/files.md, "filesperf"): when the store has a :meth:`chunk_io`, answers
    are read from it in a worker thread, up to ``depth`` requests ahead of the answer being
    sent, so the store's reads overlap with encrypting and sending (answers go out in request
    order). Without one (or ``depth=0``) each answer is read on the loop's thread."""
    io = store.chunk_io() if depth > 0 else None
    pool = ThreadPoolExecutor(1, thread_name_prefix="p2psync-serve") if io is not None else None
    loop = asyncio.get_running_loop()
    out: asyncio.Queue[tuple[int, Any, Any] | None] = asyncio.Queue(maxsize=max(depth, 1))
    admitted: list[Any] = []  #: messages holding a gate slot until their answer is sent
    served = 0

    async def send_replies() -> None:
        while (item := await out.get()) is not None:
            rid, reply, release = item
            if isinstance(reply, asyncio.Future):
                reply = await reply  # the store's errors surface here
            await stream.send(encode(reply, rid))
            if release is not None and gate is not None:  # the peer's slot is free again
                admitted.remove(release)
                gate.finished(release)

    sender = asyncio.create_task(send_replies())

    async def queue(item: tuple[int, Any, Any] | None) -> None:
        put = asyncio.ensure_future(out.put(item))
        await asyncio.wait({put, sender}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():  # the sender failed: its error ends the stream
            put.cancel()
            sender.result()

    try:
        async for raw in stream:
            try:
                env = decode(raw)
            except GARBLED as exc:
                strike(f"bad chunk request: {exc}")
                raise
            msg = env.message
            release: Any = None
            if gate is not None and isinstance(msg, (ChunkRequest, ChunkOffer, ChunkKeep)):
                refusal = gate_refusal(gate, msg, time.monotonic())
                if refusal is not None:  # not admitted: nothing to release
                    await queue((env.request_id, refusal, None))
                    continue
                admitted.append(msg)
                release = msg
            if isinstance(msg, (ChunkOffer, ChunkKeep)):
                if not may_access(msg.space_id):
                    reply: Any = ErrorMessage(ErrorCode.UNKNOWN_SPACE, "")
                else:
                    if on_offer is not None:
                        on_offer(msg)
                    reply = ChunkResponse(msg.space_id, msg.file_id, (), ())
            elif not isinstance(msg, ChunkRequest):
                strike(f"{type(msg).__name__} on a chunk stream")
                reply = ErrorMessage(ErrorCode.MALFORMED, "chunk streams carry chunk requests")
            elif not may_access(msg.space_id):
                reply = ErrorMessage(ErrorCode.UNKNOWN_SPACE, "")
            else:
                reply = (answer(store, msg) if io is None or pool is None
                         else loop.run_in_executor(pool, answer, io, msg))
                served += 1
            await queue((env.request_id, reply, release))
        await queue(None)
        await sender
    except P2PSyncError as exc:  # the peer went away, sent garbage, or we could not answer:
        with contextlib.suppress(P2PSyncError):  # tell it, so its fetch asks someone else
            stream.reset(str(exc)[:100])
    finally:
        sender.cancel()
        if gate is not None:  # failed or cancelled while answering: release the slots
            for m in admitted:
                gate.finished(m)
        if pool is not None:
            pool.shutdown(wait=True)  # a read still running ends before its connection closes
        if io is not None:
            io.close()
    return served


#: verified chunk bytes gathered into one store call (one transaction, one fsync on a durable
#: store) while the previous group is still being written
GROUP_BYTES = 8 << 20


#: chunks a fetch must want before its writes go to a worker thread (a small file is stored
#: faster on the loop's thread than a thread and a second connection cost)
THREADED_MIN_CHUNKS = 64


def _hashes(chunks: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    return [chunk_address(data) for _, data in chunks]


#: what :func:`run_fetch` says of a peer whose chunk does not match its address
NOT_MATCHING = "sent a chunk not matching its address"


@dataclass(frozen=True)
class _Taken:
    """One answer taken by the fetch, waiting in a write group: ``new`` (its chunks not held
    yet) are stored only if every chunk of the answer matches its address. ``hashes`` is None
    when ``ChunkFetch.on_response`` verified them already, else the hashing of ``chunks`` under
    way in the hash thread (compared by the writer, before storing)."""

    peer: Peer
    chunks: Sequence[tuple[bytes, bytes]]
    hashes: Future[list[bytes]] | None
    new: Sequence[tuple[bytes, bytes]]


def _verify_and_store(store: Callable[[Sequence[tuple[bytes, bytes]]], object],
                      answers: Sequence[_Taken]) -> tuple[int, list[tuple[Peer, list[bytes]]]]:
    """Store, in one call, the new chunks of every answer of ``answers`` whose chunks all match
    their addresses (waiting for their hashing if needed); nothing of any other answer.
    Returns how many chunks were stored and ``(peer, new addresses)`` of each refused answer."""
    good: list[tuple[bytes, bytes]] = []
    refused: list[tuple[Peer, list[bytes]]] = []
    for t in answers:
        if t.hashes is not None and any(
                addr != digest for (addr, _), digest in zip(t.chunks, t.hashes.result(),
                                                            strict=True)):
            refused.append((t.peer, [addr for addr, _ in t.new]))
        else:
            good.extend(t.new)
    if good:
        store(good)
    return len(good), refused


async def run_fetch(fetch: ChunkFetch, streams: dict[Peer, PeerStream],
                    store: Callable[[Sequence[tuple[bytes, bytes]]], object], *,
                    on_bad: Callable[[Peer, str], None] | None = None,
                    progress: Callable[[int], None] | None = None,
                    idle_timeout: float | None = None,
                    threaded: bool = False, group_bytes: int = GROUP_BYTES,
                    verify_later: bool = False) -> bool:
    """Fetch until done or stuck over one stream per peer (requests spread by ``fetch``).
    A peer whose stream fails, or that leaves a request unanswered while nothing arrives for
    ``idle_timeout`` seconds, is lost (its requests go to others); a peer sending a bad chunk
    or garbage has its stream reset and is reported to ``on_bad`` (the engine strikes it).

    Throughput (docs/files.md, "filesperf", "tcpfile2"): each answer's chunk hashes are
    computed in a worker thread (hashlib releases the GIL). Without ``threaded``, the stream's
    reader waits for them and ``ChunkFetch.on_response`` compares them before taking the
    answer, which is stored at once on the loop's thread. With ``threaded``, ``store`` runs in
    a writer thread of its own (one call at a time, in order). With ``verify_later`` too, the
    answer is taken (its request's slot freed, so the next request goes out) while its chunks
    are still being hashed in a hash thread, and the writer first compares every chunk of each
    answer with its address: an answer with a mismatch is stored not at all, its peer is
    dropped and reported once and its chunks asked of others (``ChunkFetch.on_invalid``).
    Otherwise the reader waits for each answer's hashes as without ``threaded``. (Faster with
    the CPU to spare, slower on an oversubscribed one: docs/files.md "tcpfile2".) Answers
    taken while a write runs are **grouped** (up to ``group_bytes``; beyond, receiving waits
    for the write) into the next call: one transaction and one fsync per group instead of per
    answer. Either way every group is stored (what verifies) before this returns; a kill
    loses at most the groups not stored yet (never reported: a resumed fetch asks for them
    again). ``progress(n)`` is called with the number of new chunks after each stored group.
    Returns ``fetch.done``."""
    rids = itertools.count(1)
    pending: dict[tuple[Peer, int], ChunkRequest] = {}
    inbox: asyncio.Queue[tuple[Peer, Any, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="p2psync-chunks") if threaded else None
    hasher = (ThreadPoolExecutor(1, thread_name_prefix="p2psync-hash")
              if threaded and verify_later else None)
    group: list[_Taken] = []
    group_size = 0
    writing: asyncio.Future[tuple[int, list[tuple[Peer, list[bytes]]]]] | None = None

    def take(peer: Peer, chunks: Sequence[tuple[bytes, bytes]],
             hashes: Future[list[bytes]] | None) -> Callable[[Sequence[tuple[bytes, bytes]]],
                                                             None]:
        def gather(new: Sequence[tuple[bytes, bytes]]) -> None:
            nonlocal group_size
            group.append(_Taken(peer, chunks, hashes, new))
            group_size += sum(len(d) for _, d in new)
        return gather

    liars: set[Peer] = set()

    def refuse(refused: list[tuple[Peer, list[bytes]]]) -> None:
        for peer, addresses in refused:  # nothing of those answers was stored
            fetch.on_invalid(peer, addresses)
            if peer not in liars:  # reported once, however many of its answers were taken
                liars.add(peer)
                bad(peer, f"peer {peer!r} {NOT_MATCHING}")

    def stored(n: int) -> None:
        if progress is not None and n:
            progress(n)

    async def write(wait: bool) -> None:
        """Hand the group to ``store``: at once when no write is running; when one is, only
        if ``wait`` or the group is full (after that write ends)."""
        nonlocal group, group_size, writing
        if writing is not None:
            if not writing.done() and not wait and group_size < group_bytes:
                return
            _, refused = await writing  # raises what the store raised
            writing = None
            refuse(refused)
        if not group:
            return
        batch, group, group_size = group, [], 0
        if pool is None:
            n, refused = _verify_and_store(store, batch)
            stored(n)
            refuse(refused)
            return
        writing = loop.run_in_executor(pool, _verify_and_store, store, batch)
        writing.add_done_callback(
            lambda f: stored(f.result()[0]) if not f.cancelled() and f.exception() is None
            else None)

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
                msg = env.message
                hashes: Any = None
                if isinstance(msg, ChunkResponse) and msg.chunks:
                    if hasher is not None:  # compared by the writer: read on meanwhile
                        hashes = hasher.submit(_hashes, msg.chunks)
                    else:
                        hashes = await loop.run_in_executor(None, _hashes, msg.chunks)
                await inbox.put((peer, env, hashes))
        except P2PSyncError as exc:
            await inbox.put((peer, exc, None))
            return
        await inbox.put((peer, EOFError("finished"), None))

    readers = [asyncio.create_task(read(p, st)) for p, st in streams.items()]
    for p in streams:
        fetch.add_peer(p)
    try:
        while True:
            for peer, req in fetch.requests(loop.time()):
                rid = next(rids)
                pending[(peer, rid)] = req
                try:
                    await streams[peer].send(encode(req, rid))
                except P2PSyncError:
                    fetch.on_peer_lost(peer)
            if fetch.done or fetch.stuck:
                await write(True)
                await write(True)
                if fetch.done or fetch.stuck:  # else: a refused answer is wanted again
                    return fetch.done
                continue
            await write(False)
            wait = IDLE_TIMEOUT if idle_timeout is None else idle_timeout
            resume = fetch.resume_at  # a peer that said RATE_LIMITED may be asked again then
            paused = resume is not None and resume - loop.time() < wait
            try:
                async with asyncio.timeout(max(0.0, resume - loop.time()) if resume is not None
                                           and paused else wait):
                    peer, got, hashes = await inbox.get()
            except TimeoutError:
                if paused:
                    continue
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
            if (asked is not None and isinstance(msg, ErrorMessage)
                    and msg.code == ErrorCode.RATE_LIMITED):  # the peer's gate: wait, ask again
                fetch.on_refused(peer, asked, loop.time() + (msg.retry_after_ms or 1000) / 1000)
                continue
            if asked is None or not isinstance(msg, ChunkResponse):
                fetch.on_peer_lost(peer)  # an error answer (e.g. no chunk support): ask others
                continue
            try:
                if isinstance(hashes, Future):  # taken now, compared before it is stored
                    fetch.on_response(peer, asked, msg, take(peer, msg.chunks, hashes),
                                      verify_later=True)
                else:
                    fetch.on_response(peer, asked, msg, take(peer, msg.chunks, None), hashes)
            except FileChunkInvalid as exc:
                bad(peer, str(exc))
                continue
    finally:
        for t in readers:
            t.cancel()
        for st in streams.values():
            with contextlib.suppress(P2PSyncError):
                st.finish()
        try:  # verified chunks already received are kept (a resume skips them)
            if writing is not None and not writing.done():
                await asyncio.shield(writing)
            if group:
                _verify_and_store(store, group)  # (waits for the hash thread if needed)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)  # a write cut off by cancellation ends first
            if hasher is not None:
                hasher.shutdown(wait=True, cancel_futures=True)


# --- engine hooks -------------------------------------------------------------------------------
async def serve_extra_streams(engine: PeerEngine) -> None:
    """Accept every stream the peer opens after the engine's sync stream and serve it by kind
    (a chunk stream: :func:`serve_stream` under the engine's access rule and strikes). Runs
    until the connection closes. The transport bounds how many streams may be open at once."""
    replicas, account = engine.replicas, engine.remote_account

    def may_access(space_id: str) -> bool:
        return replicas.may_access(space_id, account)

    engine._spawn(offer_to_replicator(engine))
    puller = Puller.of(replicas)
    while not engine.conn.is_closed:
        try:
            stream = await engine.conn.accept_stream()
        except P2PSyncError:
            return
        engine._spawn(serve_stream(stream, replicas.store, may_access, engine._strike,
                                   lambda m: puller.on_offer(m, account),
                                   engine.responder.gate))


def peers_for(engines: Iterable[PeerEngine], space_id: str) -> list[PeerEngine]:
    """Connected, ready engines whose peer shares ``space_id`` (devices and backups alike)."""
    return [e for e in engines
            if e.ready.is_set() and not e.conn.is_closed and space_id in e.shared]


#: :func:`fetch_file` takes answers before their hashes are known (``run_fetch``'s
#: ``verify_later``): ~1.3x the MB/s of a 100 MiB TCP transfer here when the process has the
#: CPU, ~0.8x on a machine oversubscribed ~5x (docs/files.md, "tcpfile2")
VERIFY_LATER = True


async def fetch_file(engines: Iterable[PeerEngine], space: Space, file_id: bytes, *,
                     window: int = 4, progress: Callable[[int], None] | None = None) -> bool:
    """Fetch the chunks of one file this store lacks from every connected peer sharing the
    space at once, each verified and stored as it arrives (so an interrupted fetch resumes
    with what is still missing). A peer sending a wrong chunk is struck and the chunk asked
    of the others. Returns True when the file is complete here. A paged file takes two
    rounds: its manifest pages, then the chunks they list (docs/files.md "bigfile")."""
    for _phase in range(2):
        wanted = FS.missing_chunks(space, file_id)
        if not wanted:
            return True
        if not await _fetch_chunks(engines, space, file_id, wanted, window, progress):
            return False
    return not FS.missing_chunks(space, file_id)


async def _fetch_chunks(engines: Iterable[PeerEngine], space: Space, file_id: bytes,
                        wanted: list[bytes], window: int,
                        progress: Callable[[int], None] | None) -> bool:
    streams: dict[Peer, PeerStream] = {}
    for e in peers_for(engines, space.id):
        with contextlib.suppress(P2PSyncError):
            streams[e] = await e.conn.open_stream()
    if not streams:
        return False

    fetch = ChunkFetch(space.id, file_id, wanted, window=window)
    writer = space.store.chunk_io() if len(wanted) >= THREADED_MIN_CHUNKS else None
    put_chunks = space.store.put_chunks if writer is None else writer.put_chunks

    def put(pairs: Sequence[tuple[bytes, bytes]]) -> None:  # verified by fetch.on_response
        put_chunks(space.id, file_id, pairs)

    try:
        return await run_fetch(fetch, streams, put, on_bad=_strike_engine, progress=progress,
                               threaded=writer is not None, verify_later=VERIFY_LATER)
    finally:
        if writer is not None:
            writer.close()


# --- replicators (backups): offered chunks are pulled -----------------------------------------
def is_replicator(replicas: Replicas, space_id: str, account: bytes) -> bool:
    space = replicas.spaces.get(space_id)
    return space is not None and account in space.acl.state.replicators


#: addresses a replicator keeps queued from offers (~10 MiB; ~16 GiB of chunks)
MAX_QUEUED = 1 << 18
#: seconds a replicator waits for an offered file's document to arrive
TREE_WAIT = 30.0


class Puller:
    """What a replicator of a space (a backup) does with chunk offers: pull the offered chunks
    it lacks from every connected peer of the space, one file at a time, verified by address
    (it cannot decrypt them) and counted against the backup's quota, if it has one. A peer that
    is not a replicator of the space (an ordinary device) ignores offers: devices fetch chunks
    lazily, when a file is opened or pinned."""

    _by_replicas: ClassVar[weakref.WeakKeyDictionary[Replicas, Puller]] = (
        weakref.WeakKeyDictionary())

    def __init__(self, replicas: Replicas) -> None:
        self.replicas = replicas
        self.queue: dict[tuple[str, bytes], set[bytes]] = {}
        self.task: asyncio.Task[None] | None = None
        self.queued = 0  #: addresses waiting (bounded: offers cost the offerer nothing)
        self.pulled = 0  #: chunks stored from offers
        self.failures = 0
        #: the latest keep statement per file, applied between pulls (one per file: bounded
        #: by the files of the space)
        self.keeps: dict[tuple[str, bytes], ChunkKeep] = {}
        self.kept = 0  #: addresses in those statements and parts (bounded by MAX_QUEUED)
        #: the parts of a paged keep statement gathered so far, per file: (heads, parts,
        #: {part: addresses}); one statement per file, a newer one replaces it
        self.parts: dict[tuple[str, bytes], tuple[tuple[bytes, ...], int,
                                                  dict[int, tuple[bytes, ...]]]] = {}
        self.collected = 0  #: chunks deleted on keep statements
        self.idle = asyncio.Event()
        self.idle.set()

    @classmethod
    def of(cls, replicas: Replicas) -> Puller:
        p = cls._by_replicas.get(replicas)
        if p is None:
            p = cls._by_replicas[replicas] = cls(replicas)
        return p

    def on_offer(self, offer: ChunkOffer | ChunkKeep, sender: bytes = b"") -> None:
        """An offer (pull what we lack) or a keep statement (collect what no current manifest
        names) from the peer of account ``sender``; ignored unless we replicate the space."""
        r = self.replicas
        if not is_replicator(r, offer.space_id, r.account.public):
            return
        if isinstance(offer, ChunkKeep):
            space, key = r.spaces[offer.space_id], (offer.space_id, offer.file_id)
            if not (offer.heads and space.acl.state.can_write(sender)  # what a writer may say
                    and space.has_tree(offer.file_id)):  # of a file we hold (else: nothing to
                return  # collect), so statements are bounded by files and by MAX_QUEUED:
            if isinstance(offer, ChunkKeepPart):
                whole = self._gather(key, offer)
                if whole is None:
                    return  # more parts to come (nothing is deleted on a partial statement)
                offer = whole
            old = self.keeps.get(key)
            kept = self.kept + len(offer.addresses) - (len(old.addresses) if old else 0)
            if kept <= MAX_QUEUED:  # too much waiting: said again at the next connection
                self.keeps[key], self.kept = offer, kept
                self._start()
            return
        have = r.store.has_chunks(list(offer.addresses))
        lacking = [a for a in offer.addresses if a not in have]
        if not lacking or self.queued + len(lacking) > MAX_QUEUED:
            return  # nothing new, or too much queued: offered again at the next connection
        self.queue.setdefault((offer.space_id, offer.file_id), set()).update(lacking)
        self.queued += len(lacking)
        self._start()

    def _gather(self, key: tuple[str, bytes], part: ChunkKeepPart) -> ChunkKeep | None:
        """Hold one part of a paged keep statement (docs/files.md "bigfile"); once every part
        of that statement (same heads, same count) is here, the whole statement. Parts of an
        older statement of the file are dropped when a newer one's arrive; all parts waiting
        count in ``kept`` (≤ MAX_QUEUED: beyond, a part is ignored and said again later)."""
        heads, parts, got = self.parts.get(key, (part.heads, part.parts, {}))
        if (heads, parts) != (part.heads, part.parts):
            self.kept -= sum(len(a) for a in got.values())
            heads, parts, got = part.heads, part.parts, {}
        old = got.get(part.part, ())
        if self.kept - len(old) + len(part.addresses) > MAX_QUEUED:
            return None
        got[part.part] = part.addresses
        self.kept += len(part.addresses) - len(old)
        self.parts[key] = (heads, parts, got)
        if len(got) < parts:
            return None
        del self.parts[key]
        self.kept -= sum(len(a) for a in got.values())
        return ChunkKeep(part.space_id, part.file_id, heads,
                         tuple(a for i in range(parts) for a in got[i]))

    def _start(self) -> None:
        self.idle.clear()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.queue or self.keeps:
                if not self.queue:  # pulls first: a keep statement follows its file's offers
                    key, keep = next(iter(self.keeps.items()))
                    del self.keeps[key]
                    self.kept -= len(keep.addresses)
                    await self._keep(keep)
                    continue
                (sid, fid), wanted = next(iter(self.queue.items()))
                del self.queue[(sid, fid)]
                self.queued -= len(wanted)
                space = self.replicas.spaces.get(sid)
                if space is None:
                    continue
                try:  # the file's document may arrive after the offer (another stream)
                    await self.replicas.wait_for(_known(space, fid), TREE_WAIT)
                except TimeoutError:
                    continue  # no such file here: chunks of unknown files are not kept
                if space.is_deleted(fid):
                    continue
                try:
                    await self._pull(space, fid, sorted(wanted))
                except P2PSyncError as exc:  # e.g. over quota: the rest of this file waits
                    self.failures += 1
                    log.info("event=chunk_pull_failed space=%s file=%s error=%r", sid,
                             fid.hex()[:16], str(exc))
        finally:
            self.idle.set()
            self.replicas.notify()

    async def _pull(self, space: Space, fid: bytes, wanted: list[bytes]) -> None:
        store = self.replicas.store
        usage = getattr(self.replicas.policy, "usage", None)  # a backup's quota tally

        def keep(pairs: Sequence[tuple[bytes, bytes]]) -> None:
            have = store.has_chunks([a for a, _ in pairs])
            new = [(a, d) for a, d in pairs if a not in have]
            size = sum(len(d) for _, d in new)
            if usage is not None:
                usage.check(space.id, size, 0)  # QuotaExceeded: nothing of it stored
            self.pulled += FS.accept_chunks(space, fid, new)
            if usage is not None:
                usage.stored(space.id, size, 0)

        engines = cast("list[PeerEngine]", list(self.replicas.pushers))  # the live engines
        streams: dict[Peer, PeerStream] = {}
        for e in peers_for(engines, space.id):
            with contextlib.suppress(P2PSyncError):
                streams[e] = await e.conn.open_stream()
        if streams:
            await run_fetch(ChunkFetch(space.id, fid, wanted, window=4), streams, keep,
                            on_bad=_strike_engine)


    async def _keep(self, keep: ChunkKeep) -> None:
        """Apply a writer's keep statement: once this replica's heads of the file's document
        are exactly the statement's heads (it may be behind: wait up to TREE_WAIT), delete our
        other chunks of the file. Any other heads (behind, ahead, concurrent): nothing is
        deleted (the next statement will do). The quota tally is re-read from the store after,
        even if the deletion failed midway, so it always matches what is stored."""
        space = self.replicas.spaces.get(keep.space_id)
        if space is None:
            return
        store, fid, heads = self.replicas.store, keep.file_id, set(keep.heads)

        def arrived() -> bool:
            return space.is_deleted(fid) or (space.has_tree(fid) and all(
                store.has_change(fid, h) for h in heads))

        try:
            await self.replicas.wait_for(arrived, TREE_WAIT)
        except TimeoutError:
            return
        if space.is_deleted(fid) or set(space.heads(fid)) != heads:
            return
        live = set(keep.addresses)
        dead = [a for a in store.list_chunks(space.id, fid) if a not in live]
        if not dead:
            return
        recount = getattr(self.replicas.policy, "recount", None)  # a backup's quota tally
        try:
            self.collected += store.delete_chunks(dead)
            log.info("event=chunks_collected space=%s file=%s chunks=%d", space.id,
                     fid.hex()[:16], len(dead))
        except P2PSyncError as exc:
            self.failures += 1
            log.info("event=chunk_gc_failed space=%s file=%s error=%r", space.id,
                     fid.hex()[:16], str(exc))
        finally:
            if recount is not None:
                recount(space.id)


def _known(space: Space, fid: bytes) -> Callable[[], bool]:
    return lambda: space.is_deleted(fid) or space.has_tree(fid)


def _strike_engine(peer: Peer, why: str) -> None:
    peer._strike(why)  # type: ignore[attr-defined]  # peers here are engines


async def offer_chunks(engine: PeerEngine, space: Space,
                       file_ids: Iterable[bytes] | None = None) -> int:
    """Tell a replicator peer (a backup) which chunks of ``file_ids`` (default: every file of
    the space) this store holds, so it pulls what it lacks. Returns how many offers it took."""
    fids = list(file_ids) if file_ids is not None else [i.file_id for i in FS.list_files(space)]
    offers: list[ChunkOffer | ChunkKeep] = []
    for fid in fids:
        addrs, keep = _offered(engine.replicas.store, space, fid)
        offers += [ChunkOffer(space.id, fid, tuple(addrs[i:i + MAX_OFFER_ADDRESSES]))
                   for i in range(0, len(addrs), MAX_OFFER_ADDRESSES)]
        offers += keep
    if not offers:
        return 0
    stream = await engine.conn.open_stream()
    taken = 0
    try:
        for rid, offer in enumerate(offers, 1):
            await stream.send(encode(offer, rid))
            reply = decode(await stream.recv())
            taken += isinstance(offer, ChunkOffer) and isinstance(reply.message, ChunkResponse)
    finally:
        with contextlib.suppress(P2PSyncError):
            stream.finish()
    return taken


async def offer_to_replicator(engine: PeerEngine) -> None:
    """For the life of the connection: whenever the peer is a replicator of a space of ours and
    holds it (the backup fetched it, or the ACL named it), offer it the chunks of every
    file of that space once (it pulls what it lacks: a backup catches up with files added
    while it was away). Later files are offered as they are added (:func:`offer_file`)."""
    await engine.ready.wait()
    offered: set[str] = set()
    retry = 0.25
    while not engine.conn.is_closed:
        changed = engine.replicas.changed()
        refused = False
        for sid, space in sorted(engine.replicas.spaces.items()):
            if sid in offered or engine.remote_account not in space.acl.state.replicators:
                continue
            try:
                files = [i.file_id for i in FS.list_files(space)]
                if await offer_chunks(engine, space, files) == _offers(engine, space, files):
                    offered.add(sid)
                else:  # the backup does not hold the space yet (it is fetching it): retry
                    refused = True
            except P2PSyncError:
                refused = True
        if not refused:
            await changed
            continue
        with contextlib.suppress(TimeoutError):  # a timer: the backup's fetch is not seen here
            async with asyncio.timeout(retry):
                await changed
        changed.cancel()
        retry = min(retry * 2, 30.0)


def _offered(store: ReplicaStore, space: Space,
             fid: bytes) -> tuple[list[bytes], list[ChunkKeep]]:
    """What we tell a replicator about one file: the chunks we hold that a manifest at the
    document's current heads names (a replaced version's chunks are not offered again), and
    a keep statement for those heads when we can read the manifests (a writer's statement
    lets the backup collect the rest; docs/files.md "Backup GC") — in parts
    (:class:`ChunkKeepPart`) when it does not fit in one message (a paged file)."""
    addrs = store.list_chunks(space.id, fid)
    try:
        heads, live = FS.live_chunks(space, fid)
    except P2PSyncError:
        heads, live = (), set()
    if not live:
        return addrs, []  # unreadable here: offer what we hold, say nothing about the rest
    addrs = [a for a in addrs if a in live]
    every = sorted(live)
    if not heads or len(every) > MAX_KEEP_PARTS * MAX_KEEP_ADDRESSES:
        return addrs, []
    if len(every) <= MAX_KEEP_ADDRESSES:
        return addrs, [ChunkKeep(space.id, fid, heads, tuple(every))]
    slices = [tuple(every[i:i + MAX_KEEP_ADDRESSES])
              for i in range(0, len(every), MAX_KEEP_ADDRESSES)]
    return addrs, [ChunkKeepPart(space.id, fid, heads, part, i, len(slices))
                   for i, part in enumerate(slices)]


def _offers(engine: PeerEngine, space: Space, fids: list[bytes]) -> int:
    store = engine.replicas.store
    return sum(-(-len(_offered(store, space, f)[0]) // MAX_OFFER_ADDRESSES) for f in fids)


async def offer_file(engines: Iterable[PeerEngine], space: Space, file_id: bytes) -> int:
    """Offer one file's chunks to every connected replicator of its space (after an add)."""
    n = 0
    for e in peers_for(engines, space.id):
        if e.remote_account in space.acl.state.replicators:
            with contextlib.suppress(P2PSyncError):
                n += await offer_chunks(e, space, [file_id])
    return n
