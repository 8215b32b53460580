"""A hostile insider (a writer member driving the protocol by hand) against an honest node:
bad signatures, unknown parents forever, giant batches, requests for spaces it is not in,
one request 10 000 times. The honest node stays responsive, stores nothing invalid and keeps
syncing with its honest peer."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from p2psync.crypto import AccountKey
from p2psync.replica.change import build_change, verify_change
from p2psync.replica.document import ROOT, encode_payload
from p2psync.sync.messages import (
    ErrorCode,
    ErrorMessage,
    FullSyncRequest,
    FullSyncResponse,
    HeadSyncRequest,
    HeadSyncResponse,
    HeadUpdate,
    RangeQuery,
    encode,
)
from tests.sync_helpers import RawPeer, close_all, converged, fast_config, make_node, wait_any


def _liar(msg: Any) -> Any:
    """Answers the honest node's requests with heads it will never be able to fetch."""
    if isinstance(msg, FullSyncRequest):
        return FullSyncResponse(msg.space_id, msg.object_id, (os.urandom(32),), (), False)
    if isinstance(msg, HeadSyncRequest):
        return HeadSyncResponse(msg.space_id, ())
    return ErrorMessage(ErrorCode.INTERNAL)


async def test_hostile_member_cannot_hurt_the_honest_node(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a", config=fast_config(strikes_to_close=10_000))
    c = await make_node(tmp_path, "c")
    evil_account = AccountKey.generate()
    h = await make_node(tmp_path, "h", account=evil_account)
    try:
        space = a.create_space()
        private = a.create_space()  # h is not a member of this one
        doc = space.new_document()
        with doc.edit() as e:
            e.put(ROOT, "n", 0)
        tid = doc.tree.id
        await c.join(a.invite(space.id))
        await h.join(a.invite(space.id), keep=False)
        await wait_any([a, c, h], lambda: converged([a, c, h], space.id))
        hs = h.spaces[space.id]
        key = hs.acl.read_key(hs.acl.state.current_key_id)
        assert key is not None
        acl_head, key_id = hs.acl.heads[-1], hs.acl.state.current_key_id

        def change(prev: tuple[bytes, ...], n: int = 0) -> Any:
            return build_change(evil_account, key, encode_payload([], [b"x" * n]),
                                space_id=space.id, tree_id=tid, prev_ids=prev,
                                acl_head=acl_head, read_key_id=key_id)

        await h.close()
        evil = await RawPeer.dial(a.address(), account=evil_account, answer=_liar)
        bad_ids: list[bytes] = []
        try:
            # 1. bad signatures, pushed and offered in a full sync
            good = change(space.heads(tid))
            bad = good.raw[:-1] + bytes([good.raw[-1] ^ 1])
            await evil.send(HeadUpdate(space.id, tid, (good.id,), (bad,)))
            ans = await evil.request(FullSyncRequest(space.id, tid, (), (), (bad,), 1 << 20))
            assert isinstance(ans, FullSyncResponse)  # still served
            bad_ids.append(good.id)

            # 2. unknown parents, forever: signed, but their parents never exist
            for _ in range(300):
                orphan = change((os.urandom(32),))
                bad_ids.append(orphan.id)
                await evil.send(HeadUpdate(space.id, tid, (orphan.id,), (orphan.raw,)))

            # 3. requests about a space it is not in, and about a made-up one
            for sid in (private.id, "made-up.1"):
                ans = await evil.request(FullSyncRequest(sid, tid, (), (), (), 1 << 20))
                assert isinstance(ans, ErrorMessage) and ans.code == ErrorCode.UNKNOWN_SPACE

            # 4. the same request 10 000 times, while the honest peer keeps editing
            same = encode(HeadSyncRequest(space.id, 32, (RangeQuery(0, 0, bytes(32), 0),)),
                          4242)
            t0 = time.monotonic()
            for i in range(10_000):
                await evil.send_raw(same)
                if i == 5000:
                    cdoc = c.spaces[space.id].document(tid)
                    with cdoc.edit() as e:
                        e.put(ROOT, "n", 1)
            await wait_any([a, c], lambda: space.document(tid).get(["n"]) == 1, timeout=20)
            flood_seconds = time.monotonic() - t0
            assert flood_seconds < 20
            answers = [r for r in evil.received if r != same]
            assert len(answers) <= 10_001

            # 5. giant batches: over the 4 MiB batch cap (refused as malformed) …
            junk = tuple(os.urandom(1 << 20) for _ in range(5))
            ans = await evil.request(FullSyncRequest(space.id, tid, (), (), junk[:4], 1 << 20))
            assert isinstance(ans, (FullSyncResponse, ErrorMessage))
            await evil.send_raw(encode(HeadUpdate(space.id, tid, (), junk[:4])))
        finally:
            await evil.close()
        # … and over the transport's message cap (that connection is dropped, nothing else)
        evil2 = await RawPeer.dial(a.address(), account=evil_account, answer=_liar)
        try:
            await evil2.send_raw(b"\x00" * (9 << 20))
        except Exception:  # our own send may be refused locally: fine
            pass
        finally:
            await evil2.close()

        # the honest node stored nothing invalid, parked nothing, and still syncs with c
        tree = space.tree(tid)
        assert tree.waiting_ids == []
        assert a.store is not None
        for bid in bad_ids:
            assert not a.store.has_change(tid, bid)
        for t in space.tree_ids():
            for cid, raw in a.store.raw_changes(t):
                verify_change(raw, expected_id=cid)
        # the liar was asked for its phantom heads only a bounded number of times
        asked = [m for m in evil.requests_seen if isinstance(m, FullSyncRequest)]
        assert len(asked) <= a.config.engine.max_stuck + 3
        with c.spaces[space.id].document(tid).edit() as e:
            e.put(ROOT, "n", 2)
        await wait_any([a, c], lambda: converged([a, c], space.id))
        assert space.document(tid).get(["n"]) == 2
    finally:
        await close_all([a, c, h])


async def test_hostile_peer_is_disconnected_after_too_many_violations(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a", config=fast_config(strikes_to_close=20))
    try:
        a.invite(a.create_space().id)  # an open invite lets a non-member pass the handshake
        evil = await RawPeer.dial(a.address())
        try:
            for _ in range(50):
                try:
                    await evil.send_raw(b"\xc1garbage")
                except Exception:  # the node hung up on us: expected
                    break
            await wait_any([a], lambda: not a.engines)
            assert evil.conn.is_closed or not a.engines
        finally:
            await evil.close()
    finally:
        await a.close()
