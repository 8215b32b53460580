"""The message channel of one engine over its two streams (asyncio; the only sync I/O).

Each side opens one *request stream*: on it the opener sends requests and pushes, the other
side only answers (matched by request id). :class:`Channel` writes whole messages (one lock
per stream), matches answers to the futures of our outstanding requests (at most
``max_in_flight``, each with ``request_timeout``), and counts traffic for status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from p2psync.errors import EndOfStream, PeerRefused, ProtocolError
from p2psync.sync.limits import EngineConfig
from p2psync.sync.messages import ErrorMessage, Message, encode
from p2psync.transport.interface import PeerStream

M = TypeVar("M")


class Channel:
    """Sending, request/answer matching and traffic counters of one connection."""

    def __init__(self, config: EngineConfig, strike: Callable[[str], None]) -> None:
        self.config = config
        self._strike = strike
        self.out: PeerStream | None = None  #: our request stream
        self.inp: PeerStream | None = None  #: the peer's request stream
        self._locks: dict[int, asyncio.Lock] = {}
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._next_id = 0
        self._inflight = asyncio.Semaphore(config.max_in_flight)
        self.messages_in = self.messages_out = 0
        self.bytes_in = self.bytes_out = 0
        #: (direction, message type name) -> [messages, bytes]; for status and benchmarks
        self.traffic: dict[tuple[str, str], list[int]] = {}
        #: called before every message is sent: the store commits grouped writes, so a peer
        #: is never told of a change this device has not committed (docs/replica.md)
        self.before_send: Callable[[], None] | None = None

    async def send(self, stream: PeerStream, message: Message, request_id: int) -> None:
        raw = encode(message, request_id)
        lock = self._locks.setdefault(stream.id, asyncio.Lock())
        async with lock:
            if self.before_send is not None:
                self.before_send()
            await stream.send(raw)
        self.messages_out += 1
        self.bytes_out += len(raw)
        self.count("out", message, len(raw))

    def count(self, direction: str, message: Message, size: int) -> None:
        slot = self.traffic.setdefault((direction, message.TYPE.name), [0, 0])
        slot[0] += 1
        slot[1] += size

    async def recv(self, stream: PeerStream) -> AsyncIterator[bytes]:
        """Raw messages from ``stream`` until the peer finishes it."""
        try:
            while True:
                raw = await stream.recv()
                self.messages_in += 1
                self.bytes_in += len(raw)
                yield raw
        except EndOfStream:
            return

    async def request(self, message: Message, expect: type[M]) -> M:
        """Send one request on our stream and wait for its answer (typed errors on refusal)."""
        assert self.out is not None
        async with self._inflight:
            self._next_id = self._next_id % 0xFFFFFFFE + 1
            rid = self._next_id
            fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            self._pending[rid] = fut
            try:
                await self.send(self.out, message, rid)
                async with asyncio.timeout(self.config.request_timeout):
                    resp = await fut
            finally:
                self._pending.pop(rid, None)
        if isinstance(resp, ErrorMessage):
            retry = None if resp.retry_after_ms is None else resp.retry_after_ms / 1000
            raise PeerRefused(str(resp.to_exception()), int(resp.code), retry)
        if not isinstance(resp, expect):
            self._strike(f"answered {type(message).__name__} with {type(resp).__name__}")
            raise ProtocolError(f"unexpected {type(resp).__name__}")
        return resp

    def resolve(self, request_id: int, message: Message) -> bool:
        """Hand an answer to its request; False if we never sent (or already got) it."""
        fut = self._pending.get(request_id)
        if fut is None or fut.done():
            return False
        fut.set_result(message)
        return True

    def cancel_all(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
