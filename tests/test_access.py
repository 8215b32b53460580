"""Access control over real connections: strangers learn nothing, readers cannot write,
removed members stop receiving."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.codec import pack
from p2psync.crypto import AccountKey
from p2psync.errors import AccessDenied, RefusedByPeer
from p2psync.replica.acl_records import Role
from p2psync.replica.change import build_change
from p2psync.replica.document import ROOT, encode_payload
from p2psync.sync.messages import (
    AclSyncRequest,
    BootstrapRequest,
    ErrorCode,
    ErrorMessage,
    FullSyncRequest,
    HeadSyncRequest,
    HeadUpdate,
    RangeQuery,
    SpaceTokens,
    decode,
)
from tests.sync_helpers import RawPeer, close_all, converged, make_node, wait_any


async def test_stranger_learns_nothing_from_the_bytes_it_receives(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a")
    stranger_node = await make_node(tmp_path, "s")
    try:
        space = a.create_space()
        other = a.create_space()
        doc = space.new_document()
        with doc.edit() as e:
            e.put(ROOT, "secret", "x")
        tid = doc.tree.id
        # issue 12.6: a plain stranger is refused at the handshake, before reading a's account
        with pytest.raises(RefusedByPeer):
            await RawPeer.dial(a.address())
        # while a space has an open invite anyone passes the handshake (the joiner is no
        # member yet); past it, the sync layer must still tell a non-member nothing
        a.invite(other.id)
        peer = await RawPeer.dial(a.address())
        try:
            def probes(sid: str) -> list[object]:
                return [
                    HeadSyncRequest(sid, 32, (RangeQuery(0, 0, bytes(32), 0),)),
                    FullSyncRequest(sid, tid, (), (), (), 1 << 20),
                    AclSyncRequest(sid, (), (), 1 << 20),
                    BootstrapRequest(sid, None, None, 100),
                    BootstrapRequest(sid, pack([bytes(32), bytes(64)]), None, 100),
                    HeadUpdate(sid, tid, (tid,), ()),
                ]
            real = [await peer.request(m) for m in probes(space.id)[:5]]
            fake = [await peer.request(m) for m in probes("doesnotexist.1")[:5]]
            for m in probes(space.id)[5:]:
                await peer.send(m)
            # existing and non-existing spaces are refused identically
            assert real == fake
            assert all(isinstance(r, ErrorMessage) and r.code == ErrorCode.UNKNOWN_SPACE
                       for r in real)
            blob = b"".join(peer.received)
            for secret in (space.id.encode(), other.id.encode(), tid, space.header.raw[:40],
                           space.acl.heads[0], a.account.public):
                assert secret not in blob
            tokens = [decode(r).message for r in peer.received
                      if isinstance(decode(r).message, SpaceTokens)]
            assert len(tokens) == 1 and len(tokens[0].tokens) == 16  # padding only
            assert peer.exchange.shared == frozenset()
        finally:
            await peer.close()
        # a stranger running the real engine ends up with nothing either
        engine = await stranger_node.connect(a.address())
        engine.sync_now()
        await wait_any([a, stranger_node], lambda: engine.idle)
        assert engine.shared == set() and stranger_node.spaces == {}
        assert all(not e.shared for e in a.engines)
    finally:
        await close_all([a, stranger_node])


async def test_reader_receives_but_its_writes_are_refused(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a")
    b = await make_node(tmp_path, "b")
    try:
        space = a.create_space()
        doc = space.new_document()
        with doc.edit() as e:
            e.put(ROOT, "x", 1)
        await b.join(a.invite(space.id, Role.READER))
        await wait_any([a, b], lambda: converged([a, b], space.id))
        bs = b.spaces[space.id]
        assert bs.role() == Role.READER and bs.document(doc.tree.id).to_json() == {"x": 1}
        # forge a write with the reader's own key and the read key it holds
        st = bs.acl.state
        key = bs.acl.read_key(st.current_key_id)
        assert key is not None
        forged = build_change(b.account, key, encode_payload([], []), space_id=space.id,
                              tree_id=doc.tree.id, prev_ids=bs.heads(doc.tree.id),
                              acl_head=bs.acl.heads[-1], read_key_id=st.current_key_id)
        # sent as a second device of the reader's account (a member, so it is heard)
        peer = await RawPeer.dial(a.address(), account=b.account)
        try:
            await peer.send(HeadUpdate(space.id, doc.tree.id, (forged.id,), (forged.raw,)))
            ans = await peer.request(FullSyncRequest(space.id, doc.tree.id, (), (),
                                                     (forged.raw,), 1 << 20))
            assert not isinstance(ans, ErrorMessage)  # served (a member) …
        finally:
            await peer.close()
        assert a.store is not None
        assert not a.store.has_change(doc.tree.id, forged.id)  # … but its write refused
        assert forged.id not in space.tree(doc.tree.id)
    finally:
        await close_all([a, b])


async def test_removed_member_stops_receiving(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a")
    b = await make_node(tmp_path, "b", account=AccountKey.generate())
    c = await make_node(tmp_path, "c")
    try:
        space = a.create_space()
        await b.join(a.invite(space.id))
        await c.join(a.invite(space.id))
        doc = space.new_document()
        with doc.edit() as e:
            e.put(ROOT, "v", "before")
        await wait_any([a, b, c], lambda: converged([a, b, c], space.id))
        space.emit_acl(lambda acl: acl.remove(a.account, [b.account.public]))
        with doc.edit() as e:
            e.put(ROOT, "v", "after")
        fresh = space.new_document()
        with fresh.edit() as e:
            e.put(ROOT, "new", True)
        await wait_any([a, c], lambda: converged([a, c], space.id))  # c, a member, has it
        for engine in b.engines:
            engine.sync_now()  # b asks explicitly: still refused
        await wait_any([a, b, c], lambda: all(e.idle for e in b.engines))
        bs = b.spaces[space.id]
        assert bs.document(doc.tree.id).to_json() == {"v": "before"}
        assert not bs.has_tree(fresh.tree.id)
        errors = [s.last_error for e in b.engines for s in e.status().spaces]
        assert any(err and "unknown_space" in err for err in errors)
        # b was told it was removed (issue 14: the removal is pushed to it), so its own
        # edits are refused here ...
        assert b.account.public in bs.acl.state.departed
        with pytest.raises(AccessDenied), bs.document(doc.tree.id).edit() as e:
            e.put(ROOT, "v", "from removed b")
        # ... and a back-dated change a modified client signs anyway (at the ACL head before
        # its removal) no longer reaches a
        removal = bs.acl.record(bs.acl.state.departed[b.account.public])
        head = removal.prev[-1]
        key_id = bs.acl.state_at(head).current_key_id
        key = bs.acl.read_key(key_id)
        assert key is not None
        forged = build_change(b.account, key, encode_payload([], []), space_id=space.id,
                              tree_id=doc.tree.id, prev_ids=bs.heads(doc.tree.id),
                              acl_head=head, read_key_id=key_id)
        bs.add_changes(doc.tree.id, [forged.raw])
        for engine in b.engines:
            engine.sync_now()
        await wait_any([a, b], lambda: all(e.idle for e in b.engines))
        assert space.document(doc.tree.id).to_json() == {"v": "after"}
        assert forged.id not in {c.id for c in space.tree(doc.tree.id).changes()}
    finally:
        await close_all([a, b, c])
