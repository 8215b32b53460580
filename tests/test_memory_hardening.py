"""Engine-side hardening over the in-memory carrier (real engines, real handshake, no sockets):
strangers are dropped after a grace period (invite bootstrap still works within it), a peer
that breaks head sync is disconnected and its claims discarded, and a big incoming batch is
stored a chunk at a time with the event loop running in between."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from p2psync.replica.document import ROOT
from p2psync.sync.engine import EngineConfig
from p2psync.sync.messages import (
    AclSyncRequest,
    AclSyncResponse,
    FullSyncRequest,
    HeadSyncRequest,
    HeadSyncResponse,
    RangeResult,
)
from tests.memory_net import Running, SimNode, lying_member

GRACE = 0.3


def node(tmp: Path, name: str) -> SimNode:
    n = SimNode(0, tmp / f"{name}.sqlite3")
    n.start()
    return n


def config(**kw: Any) -> EngineConfig:
    return EngineConfig(request_timeout=5.0, exchange_timeout=5.0, **kw)


async def test_stranger_is_dropped_after_the_grace_but_an_invitee_may_join(tmp_path: Path,
                                                                          ) -> None:
    a, s, j = node(tmp_path, "a"), node(tmp_path, "s"), node(tmp_path, "j")
    assert a.replicas is not None
    space = a.replicas.create_space()
    raw, code = space.acl.invite(a.account, anyone_can_join=True)
    space.commit_acl(raw)
    run = Running()
    try:
        ea, es = await run.link(a, s, config(stranger_grace=GRACE))
        eaj, ej = await run.link(a, j, config(stranger_grace=GRACE))
        await ej.bootstrap(space.id, code)  # within the grace: works, and j is a member now
        # the stranger is closed by a (and s by its own rule: a shares nothing with it)
        await asyncio.wait_for(ea.finished.wait(), GRACE + 5)
        assert ea.last_error is not None and "shares no space" in ea.last_error
        await asyncio.wait_for(es.finished.wait(), 5)
        # the invitee's connection outlives the grace on both sides
        done, _ = await asyncio.wait([asyncio.ensure_future(eaj.finished.wait())],
                                     timeout=GRACE * 3)
        assert not done and not eaj.conn.is_closed and space.id in eaj.shared
    finally:
        await run.close()
        for n in (a, s, j):
            n.stop()


async def test_head_sync_violation_disconnects_and_discards_the_claims(tmp_path: Path) -> None:
    a, evil = node(tmp_path, "a"), node(tmp_path, "evil")
    assert a.replicas is not None
    space = a.replicas.create_space()
    doc = space.new_document()
    with doc.edit() as e:
        e.put(ROOT, "x", 1)
    # the evil account is a real member of the space
    raw, code = space.acl.invite(a.account, anyone_can_join=True)
    space.commit_acl(raw)
    space.commit_acl(space.acl.join(evil.account, code))

    def poison(msg: Any) -> Any:
        if isinstance(msg, HeadSyncRequest):  # a made-up range with a made-up object
            return HeadSyncResponse(msg.space_id, (RangeResult(
                8, 0x5A, bytes(32), 1 << 40, None),))
        if isinstance(msg, AclSyncRequest):  # "same ACL as yours"
            return AclSyncResponse(msg.space_id, msg.heads, (), False)
        return None

    async with lying_member(a, evil, space, poison,
                            config(strikes_to_close=10_000)) as (ea, peer):
        await asyncio.wait_for(ea.finished.wait(), 5)
        assert ea.last_error is not None and "protocol violation" in ea.last_error
        assert ea.strikes >= 1
        assert not any(isinstance(m, FullSyncRequest) for m in peer.requests_seen)
        assert ea.state.space_state(space.id).pending == set()


async def test_big_batch_is_stored_in_chunks_with_the_loop_running(tmp_path: Path) -> None:
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    assert a.replicas is not None and b.replicas is not None
    space = a.replicas.create_space()
    raw, code = space.acl.invite(a.account, anyone_can_join=True)
    space.commit_acl(raw)
    run = Running()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    calls: list[tuple[int, int]] = []  # (ticks at the call, changes in it)
    real_apply = a.replicas.apply_changes

    def counting(source: Any, sp: Any, tid: bytes, raws: Any, **kw: Any) -> Any:
        calls.append((ticks, len(raws)))
        return real_apply(source, sp, tid, raws, **kw)

    a.replicas.apply_changes = counting  # type: ignore[method-assign]
    tick = asyncio.ensure_future(ticker())
    try:
        _, eb = await run.link(a, b, config())
        bs = await eb.bootstrap(space.id, code)
        await run.close()
        # b writes 600 changes while unlinked; a pulls them in one full-sync batch
        d = bs.new_document()
        d.snapshot_policy = None  # the whole history travels (no snapshot-first fetch)
        for i in range(600):
            with d.edit() as e:
                e.put(ROOT, "n", i)
        run = Running()
        await run.link(a, b, config())
        async with asyncio.timeout(20):
            while not (space.has_tree(d.tree.id)
                       and space.heads(d.tree.id) == bs.heads(d.tree.id)):
                await a.replicas.changed()
        sizes = [n for _, n in calls]
        assert max(sizes) <= 32 and len(sizes) >= 600 // 32
        at = [t for t, _ in calls]
        assert all(y > x for x, y in itertools.pairwise(at))  # the loop ran in between
    finally:
        tick.cancel()
        await run.close()
        a.stop()
        b.stop()
