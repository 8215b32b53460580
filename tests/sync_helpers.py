"""Helpers for engine/node tests: fast nodes on loopback, convergence checks, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.node import Node, NodeConfig
from p2psync.sync.engine import EngineConfig
from p2psync.transport.api import TransportName

TIMEOUT = 20.0


def fast_config(transport: TransportName = "tcp", *, port: int = 0, seed: int | None = None,
                **engine: Any) -> NodeConfig:
    """A node config for tests: non-durable store, quick reconnects, quick timeouts."""
    eng = EngineConfig(request_timeout=10.0, exchange_timeout=5.0, seed=seed, **engine)
    return NodeConfig(listen=[("127.0.0.1", port, transport)], engine=eng,
                      reconnect_base=0.05, reconnect_cap=0.4, durable=False, seed=seed)


async def make_node(tmp_path: Path, name: str, *, account: AccountKey | None = None,
                    device: DeviceKey | None = None, config: NodeConfig | None = None) -> Node:
    node = Node(tmp_path / f"{name}.sqlite3", account or AccountKey.generate(),
                device or DeviceKey.generate(), config=config or fast_config())
    return await node.start()


async def wait_any(nodes: Sequence[Node], predicate: Callable[[], bool],
                   timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds, re-checking whenever any of ``nodes`` changes."""
    async with asyncio.timeout(timeout):
        while not predicate():
            waits = [n.replicas.changed() for n in nodes if not n.closed]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()


def converged(nodes: Sequence[Node], space_id: str) -> bool:
    """Every node holds the space with the same head-sync fingerprint."""
    hashes = set()
    for n in nodes:
        if space_id not in n.spaces:
            return False
        hashes.add(n.space_hash(space_id))
    return len(hashes) == 1


def documents_json(node: Node, space_id: str) -> dict[bytes, Any]:
    space = node.spaces[space_id]
    return {tid: space.document(tid).to_json() for tid in space.tree_ids()}


async def close_all(nodes: Sequence[Node]) -> None:
    for n in nodes:
        await n.close()


class RawPeer:
    """A hand-driven peer that speaks the transport and the sync envelope but none of the
    engine's rules: for access and hostile-peer tests. Records every byte it receives."""

    def __init__(self, conn: Any, device: DeviceKey, keys: dict[str, bytes] | None = None,
                 answer: Callable[[Any], Any] | None = None) -> None:
        from p2psync.sync.spacex import SpaceExchange

        self.conn = conn
        self.device = device
        self.received: list[bytes] = []  #: every message the honest node sent us
        self.requests_seen: list[Any] = []  #: decoded requests the honest node sent us
        self.answer = answer
        self.exchange = SpaceExchange(device.public, conn.certificate.device, keys or {},
                                      channel_binding=conn.result.handshake_hash)
        self._responses: dict[int, asyncio.Future[bytes]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.out: Any = None
        self.inp: Any = None
        self.next_id = 0

    @classmethod
    async def dial(cls, address: str, account: AccountKey | None = None,
                   device: DeviceKey | None = None, **kw: Any) -> RawPeer:
        from p2psync.crypto.cert import DeviceCertificate
        from p2psync.node import sync_transport_config
        from p2psync.transport.api import connect

        account = account or AccountKey.generate()
        device = device or DeviceKey.generate()
        conn = await connect(address, device_key=device,
                             certificate=DeviceCertificate.issue(account, device),
                             transport="tcp", config=sync_transport_config())
        peer = cls(conn, device, **kw)
        await peer._start()
        return peer

    async def _start(self) -> None:
        from p2psync.sync.messages import encode

        # The engine's hello (its stream) must be read before the tokens that answer ours (our
        # stream): the exchange refuses tokens first. The engine sends its hello before it
        # reads ours, so on the wire the hello always comes first; the reader of its stream is
        # started first so that, when both are already buffered, it runs (and takes the hello
        # without suspending) before the reader of ours.
        self.out = await self.conn.open_stream()
        await self.out.send(encode(self.exchange.start()))
        self.inp = await asyncio.wait_for(self.conn.accept_stream(), 5)
        self._tasks = [asyncio.ensure_future(self._read_in()),
                       asyncio.ensure_future(self._read_out())]
        await asyncio.wait_for(self._exchanged(), 5)

    async def _exchanged(self) -> None:
        while self.exchange.shared is None:
            fut = asyncio.get_running_loop().create_future()
            self._responses[0] = fut
            await fut

    async def _read_out(self) -> None:
        from p2psync.sync.messages import SpaceTokens, decode

        try:
            while True:
                raw = await self.out.recv()
                self.received.append(raw)
                env = decode(raw)
                if isinstance(env.message, SpaceTokens):
                    self.exchange.receive(env.message)
                    env_id = 0
                else:
                    env_id = env.request_id
                fut = self._responses.pop(env_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(raw)
        except Exception:
            return

    async def _read_in(self) -> None:
        from p2psync.sync.messages import SpaceHello, decode, encode

        try:
            while True:
                raw = await self.inp.recv()
                self.received.append(raw)
                env = decode(raw)
                if isinstance(env.message, SpaceHello):
                    for m in self.exchange.receive(env.message):
                        await self.inp.send(encode(m, env.request_id))
                    continue
                self.requests_seen.append(env.message)
                if self.answer is not None:
                    reply = self.answer(env.message)
                    if reply is not None:
                        await self.inp.send(encode(reply, env.request_id))
        except Exception:
            return

    async def send_raw(self, raw: bytes) -> None:
        await self.out.send(raw)

    async def send(self, message: Any, request_id: int = 0) -> None:
        from p2psync.sync.messages import encode

        await self.out.send(encode(message, request_id))

    async def request(self, message: Any, timeout: float = 5.0) -> Any:
        """Send a request and return the decoded answer."""
        from p2psync.sync.messages import decode, encode

        self.next_id += 1
        rid = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self._responses[rid] = fut
        await self.out.send(encode(message, rid))
        raw = await asyncio.wait_for(fut, timeout)
        return decode(raw).message

    async def request_raw(self, raw: bytes, rid: int, timeout: float = 5.0) -> Any:
        from p2psync.sync.messages import decode

        fut = asyncio.get_running_loop().create_future()
        self._responses[rid] = fut
        await self.out.send(raw)
        return decode(await asyncio.wait_for(fut, timeout)).message

    async def close(self) -> None:
        await self.conn.close("test done")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
