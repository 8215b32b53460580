"""Chunk transfer, sans-IO (docs/files.md): the responder's answer to a
:class:`~p2psync.sync.messages.ChunkRequest`, and :class:`ChunkFetch`, the state of fetching the
missing chunks of one file from any number of peers.

No I/O here: the asyncio shell (:mod:`p2psync.sync.files_io`, spawned by the engine for every
stream after the sync one) sends what :meth:`ChunkFetch.requests` returns on a dedicated stream
per peer, feeds back responses and peer losses, and stops when :attr:`ChunkFetch.done` or
:attr:`ChunkFetch.stuck`. Resuming after an interruption is starting a new fetch with what
the store still lacks (:func:`p2psync.replica.filespace.missing_chunks`): chunks are stored
as they arrive, verified, so nothing received is fetched twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2psync.errors import FileChunkInvalid
from p2psync.replica.files import chunk_address
from p2psync.replica.storage import ChunkIO, ReplicaStore
from p2psync.sync.messages import (
    MAX_CHUNK_ADDRESSES,
    ChunkRequest,
    ChunkResponse,
    ErrorCode,
    ErrorMessage,
)
from p2psync.sync.sched import Admission

Peer = Hashable


class Gate(Protocol):
    """The inbound admission gate of one peer (:class:`~p2psync.sync.sched.InboundGate`, the
    engine's ``responder.gate``): chunk-stream messages spend the same rate and concurrency
    budget as the peer's document-sync requests."""

    def admit(self, key: Any, now: float, cost: float = 1.0) -> Admission: ...

    def finished(self, key: Any) -> None: ...

    def retry_after(self, now: float, cost: float = 1.0) -> float: ...


def gate_refusal(gate: Gate, msg: Any, now: float) -> ErrorMessage | None:
    """Pass one chunk-stream message through the peer's inbound gate: None when admitted (the
    caller must call ``gate.finished(msg)`` once answered), else the typed RATE_LIMITED answer
    with the wait the peer should observe (over budget, too many in progress, or the very same
    request already being answered)."""
    if gate.admit(msg, now) is Admission.ACCEPT:
        return None
    retry = int(gate.retry_after(now) * 1000) + 1
    return ErrorMessage(ErrorCode.RATE_LIMITED, "slow down", retry)


#: RATE_LIMITED answers in a row after which a fetch stops asking that peer (it serves nothing)
MAX_REFUSALS = 64


#: ciphertext bytes per response: under the transport's default 1 MiB message limit
MAX_RESPONSE_BYTES = 1024 * 1024 - 64 * 1024


def answer(store: ReplicaStore | ChunkIO, req: ChunkRequest,
           max_bytes: int = MAX_RESPONSE_BYTES) -> ChunkResponse:
    """What a responder sends back: the requested chunks it holds **of that file of that
    space** (the caller has checked the peer may access the space), the others as missing.
    Chunks beyond ``max_bytes`` are left out (neither sent nor missing: ask again); the first
    held chunk is always sent, so every answer makes progress."""
    held = store.get_file_chunks(req.space_id, req.file_id, req.addresses)
    chunks: list[tuple[bytes, bytes]] = []
    missing: list[bytes] = []
    budget = max_bytes
    for a in dict.fromkeys(req.addresses):
        data = held.get(a)
        if data is None:
            missing.append(a)
            continue
        if budget <= 0:
            continue
        if chunks and len(data) > budget:
            budget = 0
        else:
            chunks.append((a, data))
            budget -= len(data)
    return ChunkResponse(req.space_id, req.file_id, tuple(chunks), tuple(missing))


@dataclass
class ChunkFetch:
    """Fetching ``wanted`` chunk addresses of one file from several peers at once.

    Each peer has at most ``window`` requests in flight, of up to MAX_CHUNK_ADDRESSES
    addresses each; unrequested addresses are spread over the peers that might hold them. A
    peer that answers "missing" is not asked for that address again; a peer that sends a chunk
    not matching its address is dropped (its chunk refused, its other requests re-queued). A
    lost peer's requests are re-queued for the others."""

    space_id: str
    file_id: bytes
    wanted: list[bytes]
    window: int = 2
    _queue: list[bytes] = field(default_factory=list)
    _in_flight: dict[Peer, list[tuple[bytes, ...]]] = field(default_factory=dict)
    _lacks: dict[Peer, set[bytes]] = field(default_factory=dict)
    _bad: set[Peer] = field(default_factory=set)
    _got: set[bytes] = field(default_factory=set)
    _paused: dict[Peer, float] = field(default_factory=dict)  #: asked to wait until (clock)
    _refusals: dict[Peer, int] = field(default_factory=dict)  #: RATE_LIMITED in a row

    def __post_init__(self) -> None:
        self.wanted = list(dict.fromkeys(self.wanted))
        self._queue = list(self.wanted)

    def add_peer(self, peer: Peer) -> None:
        if peer not in self._bad:
            self._in_flight.setdefault(peer, [])
            self._lacks.setdefault(peer, set())

    @property
    def remaining(self) -> int:
        return len(self.wanted) - len(self._got)

    @property
    def done(self) -> bool:
        return self.remaining == 0

    @property
    def stuck(self) -> bool:
        """Nothing in flight and no peer left that might hold a remaining chunk."""
        if self.done or any(self._in_flight.values()):
            return False
        return not any(next(self._candidates(p), None) for p in self._in_flight)

    def _candidates(self, peer: Peer) -> Iterator[bytes]:
        """Queued addresses this peer might hold, lazily (a 1 GiB file queues ~16 000: only
        the first batch is looked at per request)."""
        lacks = self._lacks[peer]
        return (a for a in self._queue if a not in lacks)

    def requests(self, now: float | None = None) -> list[tuple[Peer, ChunkRequest]]:
        """New requests to send now (each peer up to its window; a peer that answered
        RATE_LIMITED is not asked before its wait is over at clock ``now``)."""
        out: list[tuple[Peer, ChunkRequest]] = []
        if now is not None:
            for peer in [p for p, t in self._paused.items() if t <= now]:
                del self._paused[peer]
        progress = True
        while progress:
            progress = False
            for peer, flying in self._in_flight.items():  # round-robin: spread the load
                if len(flying) >= self.window or peer in self._paused:
                    continue
                batch = list(itertools.islice(self._candidates(peer), MAX_CHUNK_ADDRESSES))
                if not batch:
                    continue
                for a in batch:
                    self._queue.remove(a)
                flying.append(tuple(batch))
                out.append((peer, ChunkRequest(self.space_id, self.file_id, tuple(batch))))
                progress = True
        return out

    def on_response(self, peer: Peer, req: ChunkRequest, resp: ChunkResponse,
                    store: Callable[[Sequence[tuple[bytes, bytes]]], object],
                    hashes: Sequence[bytes] | None = None, *, verify_later: bool = False) -> int:
        """Take a peer's answer to ``req`` (the shell matches them by request id): verified
        chunks go to ``store`` (all at once), missing ones back to the queue for other peers.
        Returns how many chunks were new. A chunk not asked for or not matching its address
        drops the peer (nothing of that answer is stored) and raises FileChunkInvalid.
        ``hashes``: :func:`chunk_address` of each chunk of ``resp`` in order, when the shell
        computed them already (off the event loop); computed here otherwise.
        ``verify_later``: the shell compares every chunk of ``resp`` with its address itself,
        after this returns and **before storing any** (off the event loop, so the next request
        need not wait for the hashing; docs/files.md "tcpfile2"): ``store`` gets the new
        chunks unchecked, and a mismatch must be reported with :meth:`on_invalid` (nothing of
        that answer stored). Chunks not asked for are still refused here."""
        if verify_later:
            hashes = [addr for addr, _ in resp.chunks]  # checked by the shell before storing
        flying = self._in_flight.get(peer)
        asked = tuple(req.addresses)
        if not flying or asked not in flying:
            return 0  # a late answer from a peer already dropped or lost
        flying.remove(asked)
        asked_set = set(asked)
        good: list[tuple[bytes, bytes]] = []
        if hashes is None or len(hashes) != len(resp.chunks):
            hashes = [chunk_address(data) for _, data in resp.chunks]
        for (addr, data), digest in zip(resp.chunks, hashes, strict=True):
            if addr not in asked_set or digest != addr:
                self._drop(peer, asked)
                raise FileChunkInvalid(f"peer {peer!r} sent a chunk not matching its address")
            if addr not in self._got:
                good.append((addr, data))
        store(good)
        self._refusals.pop(peer, None)
        self._got.update(a for a, _ in good)
        self._lacks[peer].update(resp.missing)
        back = [a for a in asked if a not in self._got]
        self._queue[:0] = [a for a in back if a not in self._queue]
        return len(good)

    @property
    def resume_at(self) -> float | None:
        """The earliest clock time a paused peer may be asked again (None: none paused)."""
        return min(self._paused.values(), default=None)

    def on_refused(self, peer: Peer, req: ChunkRequest, until: float) -> None:
        """The peer answered ``req`` with RATE_LIMITED (its inbound gate, shared with document
        sync): the addresses go back to the queue (other peers may take them now) and the peer
        is not asked again before clock ``until``. A peer refusing MAX_REFUSALS times in a row
        is given up on, as if lost."""
        flying = self._in_flight.get(peer)
        asked = tuple(req.addresses)
        if not flying or asked not in flying:
            return
        flying.remove(asked)
        self._queue[:0] = [a for a in asked if a not in self._got and a not in self._queue]
        n = self._refusals[peer] = self._refusals.get(peer, 0) + 1
        if n >= MAX_REFUSALS:
            self.on_peer_lost(peer)
        else:
            self._paused[peer] = max(until, self._paused.get(peer, until))

    def on_invalid(self, peer: Peer, addresses: Sequence[bytes]) -> None:
        """An answer of ``peer`` taken with ``verify_later`` held a chunk not matching its
        address, and the shell stored none of it: ``addresses`` (the new chunks that answer
        gave) are wanted again, from other peers; the peer is dropped like a tampering one."""
        lost = [a for a in addresses if a in self._got]
        self._got.difference_update(lost)
        self._drop(peer, tuple(lost))

    def on_peer_lost(self, peer: Peer) -> None:
        """The peer went away: what it was asked is asked of others."""
        for batch in self._in_flight.pop(peer, []):
            self._queue[:0] = [a for a in batch if a not in self._got]
        self._lacks.pop(peer, None)
        self._paused.pop(peer, None)

    def _drop(self, peer: Peer, current: tuple[bytes, ...]) -> None:
        self._bad.add(peer)
        self._queue[:0] = [a for a in current if a not in self._got]
        self.on_peer_lost(peer)
