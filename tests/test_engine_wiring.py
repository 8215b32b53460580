"""The engine calls the hardening mechanisms the sans-IO cores and the transport provide:
the storage policy through its declared seam, the stranger restriction of the transport,
the invitee screen of the ACL, and error replies that name the request they answer.

Each test fails when the engine stops calling its mechanism (see the report of the engine
helper for the switch-off runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from p2psync.errors import PeerRefused
from p2psync.replica.acl import Acl
from p2psync.replica.header import SpaceHeader
from p2psync.replica.space import Space
from p2psync.sync.engine import EngineConfig
from p2psync.sync.messages import NONCE_SIZE
from p2psync.sync.replicas import DevicePolicy, OfferingPeer
from tests.memory_net import Running, SimNode


def node(tmp: Path, name: str) -> SimNode:
    n = SimNode(0, tmp / f"{name}.sqlite3")
    n.start()
    return n


def config(**kw: object) -> EngineConfig:
    return EngineConfig(request_timeout=5.0, exchange_timeout=5.0, **kw)  # type: ignore[arg-type]


class RecordingPolicy(DevicePolicy):
    """A complete StoragePolicy that records the engine's calls and signs fake receipts."""

    def __init__(self) -> None:
        self.offers: list[tuple[OfferingPeer, str]] = []
        self.offered = asyncio.Event()
        self.receipts: list[tuple[str, bytes]] = []

    def on_offer(self, peer: OfferingPeer, space_id: str) -> None:
        self.offers.append((peer, space_id))
        self.offered.set()

    def receipt(self, space: Space, nonce: bytes) -> bytes:
        self.receipts.append((space.id, nonce))
        return b"receipt:" + nonce


class Partial:
    """Not a StoragePolicy: no on_offer, no receipt."""

    def admit_space(self, space_id: str, header: SpaceHeader, acl: Acl) -> None:
        return None

    def admit_changes(self, space: Space, tree_id: bytes, raws: Sequence[bytes]) -> None:
        return None


async def test_offers_and_receipts_go_through_the_declared_policy(tmp_path: Path) -> None:
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    assert a.replicas is not None and b.replicas is not None
    space = a.replicas.create_space()
    space.emit_acl(lambda acl: acl.add_replicator(a.account, b.account.public))
    policy = RecordingPolicy()
    b.replicas.policy = policy
    run = Running()
    try:
        ea, eb = await run.link(a, b, config())
        await asyncio.wait_for(policy.offered.wait(), 5)  # a offers: b's policy decides
        assert [(p, sid) for p, sid in policy.offers] == [(eb, space.id)]
        await eb.bootstrap(space.id)  # a replicator fetches without a code
        nonce = bytes(range(NONCE_SIZE))
        assert await ea.request_receipt(space.id, nonce) == b"receipt:" + nonce
        assert policy.receipts == [(space.id, nonce)]
        with pytest.raises(PeerRefused):  # a bad nonce never reaches the policy
            await ea.request_receipt(space.id, b"short")
        assert len(policy.receipts) == 1
    finally:
        await run.close()
        a.stop()
        b.stop()


def test_a_partial_policy_is_refused_when_installed(tmp_path: Path) -> None:
    a = node(tmp_path, "a")
    assert a.replicas is not None
    with pytest.raises(TypeError, match="StoragePolicy"):
        a.replicas.policy = Partial()  # type: ignore[assignment]
    a.stop()


# --- strangers (issue 12.1): restricted at the exchange, closed after the grace -------------
GRACE = 0.5


async def test_a_stranger_is_closed_after_the_grace_and_a_joiner_is_not(tmp_path: Path) -> None:
    from tests.sync_helpers import RawPeer, close_all, fast_config, make_node

    cfg = fast_config(stranger_grace=GRACE)
    a = await make_node(tmp_path, "a", config=cfg)
    j = await make_node(tmp_path, "j", config=cfg)
    try:
        space = a.create_space()
        code = a.invite(space.id)
        stranger = await RawPeer.dial(a.address())
        joined = await j.join(code)  # both sides start restricted: each is a stranger to the other
        assert joined.id == space.id
        closed = await asyncio.wait_for(stranger.conn.wait_closed(), GRACE + 5)
        assert "shares no space" in str(closed)
        mine = [e for e in a.engines if e.remote_account == stranger.conn.certificate.account]
        assert all(e.conn.is_closed for e in mine)
        # the joiner's connection outlives the grace on both sides, and syncs
        (ej,) = j.engines
        done, _ = await asyncio.wait([asyncio.ensure_future(ej.finished.wait())],
                                     timeout=GRACE * 3)
        assert not done and not ej.conn.is_closed
        assert all(not e.conn.is_closed for e in a.engines if e.remote_account == j.account.public)
        await stranger.close()
    finally:
        await close_all([a, j])


async def test_a_stranger_gets_a_small_receive_budget(tmp_path: Path) -> None:
    """Before the grace ends, a stranger cannot make us buffer a big message: its stream is
    refused (a member's 2 MiB message would be read and answered)."""
    from p2psync.codec import pack
    from tests.sync_helpers import RawPeer, close_all, fast_config, make_node

    a = await make_node(tmp_path, "a", config=fast_config(stranger_grace=60.0))
    try:
        a.invite(a.create_space().id)  # open invite: a non-member passes the handshake
        stranger = await RawPeer.dial(a.address())
        try:
            big = pack([1, 10, 5, [b"\0" * (2 << 20)]])  # malformed but 2 MiB
            with pytest.raises((TimeoutError, asyncio.TimeoutError)):
                await stranger.request_raw(big, 5, timeout=2.0)  # never answered
            await asyncio.wait_for(stranger.conn.wait_closed(), 5)
        finally:
            await stranger.close()
    finally:
        await close_all([a])
