"""Engine behaviour between real nodes over loopback: push, head sync, bootstrap, status,
protocol errors, replicators."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2psync.codec import pack
from p2psync.crypto import AccountKey
from p2psync.errors import JoinError
from p2psync.replica.acl_records import Role
from p2psync.replica.document import ROOT
from p2psync.sync.messages import (
    MAX_BATCH_BYTES,
    ErrorCode,
    ErrorMessage,
    HeadSyncRequest,
    RangeQuery,
)
from tests.sync_helpers import (
    RawPeer,
    close_all,
    converged,
    documents_json,
    fast_config,
    make_node,
    wait_any,
)

NO_PERIODIC = 3600.0


async def test_push_delivers_an_edit_without_head_sync(tmp_path: Path) -> None:
    cfg = fast_config(head_sync_interval=NO_PERIODIC)
    a = await make_node(tmp_path, "a", config=cfg)
    b = await make_node(tmp_path, "b", config=fast_config(head_sync_interval=NO_PERIODIC))
    try:
        space = a.create_space()
        await b.join(a.invite(space.id))
        await wait_any([a, b], lambda: converged([a, b], space.id) and all(
            e.idle for e in (*a.engines, *b.engines)))
        engine = next(iter(a.engines))

        def requests_in() -> int:  # A's answers to its own in-sync check are not requests
            return sum(n for (way, kind), (n, _) in engine.traffic.items()
                       if way == "in" and kind.endswith("_REQUEST"))

        requests_before = requests_in()
        doc = space.new_document()
        with doc.edit() as e:
            e.put(ROOT, "k", "v")
        await wait_any([a, b], lambda: converged([a, b], space.id))
        assert documents_json(b, space.id) == {doc.tree.id: {"k": "v"}}
        # it arrived as a push: A received no request from B in between (no head sync ran)
        assert requests_in() == requests_before
    finally:
        await close_all([a, b])


async def test_offline_edits_on_both_sides_meet_on_connect(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a")
    b = await make_node(tmp_path, "b")
    try:
        space = a.create_space()
        await b.join(a.invite(space.id), keep=False)
        await wait_any([a, b], lambda: converged([a, b], space.id))
        await b.disconnect_all()
        await wait_any([a, b], lambda: not a.engines and not b.engines)
        d1 = space.new_document()
        with d1.edit() as e:
            e.put(ROOT, "from", "a")
        d2 = b.spaces[space.id].new_document()
        with d2.edit() as e:
            e.put(ROOT, "from", "b")
        assert not converged([a, b], space.id)
        engine = await b.connect(a.address())
        await wait_any([a, b], lambda: converged([a, b], space.id))
        assert documents_json(a, space.id) == documents_json(b, space.id)
        assert len(documents_json(a, space.id)) == 2
        # status is truthful: after an explicit head sync both agree and nothing is pending
        engine.sync_now()
        await wait_any([a, b], lambda: all(s.in_sync and s.pending_trees == 0
                                           for s in engine.status().spaces))
        st = b.status()
        assert st.spaces[0].peers_in_sync == 1
        assert st.spaces[0].heads_hash == a.status().spaces[0].heads_hash
    finally:
        await close_all([a, b])


async def test_quic_transport_syncs_too(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a", config=fast_config("quic"))
    b = await make_node(tmp_path, "b", config=fast_config("quic"))
    try:
        space = a.create_space()
        doc = space.new_document()
        with doc.edit() as e:
            e.put(ROOT, "t", "quic")
        code = a.invite(space.id)
        assert code.addresses[0].startswith("quic:")
        await b.join(code.encode())
        await wait_any([a, b], lambda: converged([a, b], space.id))
        assert documents_json(b, space.id) == {doc.tree.id: {"t": "quic"}}
    finally:
        await close_all([a, b])


async def test_approval_invite_waits_for_accept(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a")
    b = await make_node(tmp_path, "b")
    try:
        space = a.create_space()
        doc = space.new_document()
        with doc.edit() as e:
            e.put(ROOT, "x", 1)
        code = a.invite(space.id, Role.READER, anyone_can_join=False)
        bs = await b.join(code)
        assert bs.role() is None and bs.tree_ids() == []  # asked, not yet accepted
        await wait_any([a, b], lambda: bool(space.acl.state.requests))
        (req_id,) = space.acl.state.requests
        space.emit_acl(lambda acl: acl.accept(a.account, req_id))
        await wait_any([a, b], lambda: converged([a, b], space.id))
        assert bs.role() == Role.READER
        assert documents_json(b, space.id) == {doc.tree.id: {"x": 1}}
    finally:
        await close_all([a, b])


async def test_revoked_invite_cannot_join(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a")
    b = await make_node(tmp_path, "b")
    try:
        space = a.create_space()
        code = a.invite(space.id)
        space.emit_acl(lambda acl: acl.revoke_invite(a.account, code.invite_id))
        with pytest.raises(JoinError):
            await b.join(code)
        assert space.id not in b.spaces
    finally:
        await close_all([a, b])


async def test_replicator_stores_ciphertext_it_cannot_read(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a")
    r = await make_node(tmp_path, "r")
    c = await make_node(tmp_path, "c")
    try:
        space = a.create_space()
        space.emit_acl(lambda acl: acl.add_replicator(a.account, r.account.public))
        doc = space.new_document()
        with doc.edit() as e:
            e.put(ROOT, "secret", "MARKER-1")
        engine = await r.connect(a.address())
        await r.fetch_space(space.id, engine)
        await wait_any([a, r], lambda: converged([a, r], space.id))
        assert r.status().spaces[0].role == "replicator"
        assert r.store is not None and r.store.count_changes(doc.tree.id) >= 2
        assert r.spaces[space.id].acl.read_key(space.acl.state.current_key_id) is None
        # c joins through the replicator only (a is offline): the backup serves the space
        code = a.invite(space.id)
        await wait_any([a, r], lambda: converged([a, r], space.id) and code.invite_id
                       in r.spaces[space.id].acl.state.invites)
        await a.close()
        await c.join(code, [f"tcp:{r.address()}"])
        await wait_any([r, c], lambda: converged([r, c], space.id))
        assert documents_json(c, space.id) == {doc.tree.id: {"secret": "MARKER-1"}}
    finally:
        await close_all([a, r, c])


async def test_unknown_message_type_and_garbage_get_error_messages(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a")
    try:
        space = a.create_space()
        a.invite(space.id)  # an open invite: the node answers a non-member's handshake
        peer = await RawPeer.dial(a.address())
        try:
            ans = await peer.request_raw(pack([1, 99, 7, []]), 7)
            assert isinstance(ans, ErrorMessage) and ans.code == ErrorCode.UNKNOWN_MESSAGE_TYPE
            ans = await peer.request_raw(pack([2, 10, 8, []]), 8)
            assert isinstance(ans, ErrorMessage) and ans.code == ErrorCode.UNSUPPORTED_VERSION
            ans = await peer.request_raw(pack([1, 10, 9, ["x"]]), 9)
            assert isinstance(ans, ErrorMessage) and ans.code == ErrorCode.MALFORMED
            # still served afterwards (politely refused: it is not a member)
            ans = await peer.request(HeadSyncRequest(space.id, 32, (RangeQuery(
                0, 0, bytes(32), 0),)))
            assert isinstance(ans, ErrorMessage) and ans.code == ErrorCode.UNKNOWN_SPACE
            assert not peer.conn.is_closed
        finally:
            await peer.close()
        assert MAX_BATCH_BYTES > 0
    finally:
        await a.close()


async def test_restart_keeps_spaces_and_resyncs(tmp_path: Path) -> None:
    acct = AccountKey.generate()
    a = await make_node(tmp_path, "a", account=acct)
    b = await make_node(tmp_path, "b")
    try:
        space = a.create_space()
        await b.join(a.invite(space.id))
        doc = space.new_document()
        with doc.edit() as e:
            e.put(ROOT, "v", 1)
        await wait_any([a, b], lambda: converged([a, b], space.id))
        port = int(a.address().rsplit(":", 1)[1])
        device = a.device
        await a.close()
        bd = b.spaces[space.id].document(doc.tree.id)
        with bd.edit() as e:
            e.put(ROOT, "v", 2)
        a = await make_node(tmp_path, "a", account=acct, device=device,
                            config=fast_config(port=port))
        b.reconnect_now()
        await wait_any([a, b], lambda: converged([a, b], space.id))
        assert a.spaces[space.id].document(doc.tree.id).to_json() == {"v": 2}
    finally:
        await close_all([a, b])
        await asyncio.sleep(0)
