"""A removed member, a declined requester, a requester whose invite was revoked: each is told
at once by a push although it is no longer (or not yet) a member (issue 14), and its status
and edits say so. Two in-process agents on loopback."""

from __future__ import annotations

import asyncio

import pytest

from p2psync.agent import ops
from p2psync.agent.core import Agent
from p2psync.errors import AccessDenied
from p2psync.replica.acl import InviteCode
from p2psync.sync.notice import notice
from tests.conftest import Fleet
from tests.test_join_states import invite, pair


async def state_becomes(agent: Agent, space: str, want: str, timeout: float = 10) -> dict:  # type: ignore[type-arg]
    async with asyncio.timeout(timeout):
        while (st := agent.join_state(space))["state"] != want:
            await asyncio.sleep(0.02)
    return st


async def test_a_removed_member_is_told_by_a_push(fleet: Fleet) -> None:
    a, b, space = await pair(fleet)
    assert a.device is not None and b.device is not None
    await b.join(invite(a, space, no_approval=True), timeout=10)
    await b.wait_synced(space, 10)
    doc = ops.doc_list(b.device, space)[0]["doc"]
    ops.space_invite(a.device, space)  # ACL records after the removal are not sent to it
    ops.space_remove(a.device, space, b.keys.account.id)
    after = ops.space_invite(a.device, space)
    st = await state_becomes(b, space, "removed")
    assert st["by"] == a.keys.account.id
    [row] = b.status()["spaces"]
    assert row["role"] == "removed" and row["join"]["by"] == a.keys.account.id
    with pytest.raises(AccessDenied, match="you were removed from"):
        ops.doc_set(b.device, space, doc, "x", 1)
    later = InviteCode.decode(after["invite"]).invite_id
    await asyncio.sleep(0.2)
    assert later not in b.node.spaces[space].acl  # cut at the notice


async def test_a_declined_request_is_told_without_waiting(fleet: Fleet) -> None:
    a, b, space = await pair(fleet)
    assert a.device is not None
    st = b.join_state((await b.join(invite(a, space), timeout=10)).id)
    assert st["state"] == "pending"  # and nobody calls wait_access: no ACL pulls
    ops.space_decline(a.device, space, st["request"])
    await state_becomes(b, space, "declined")
    assert [r["role"] for r in ops.space_list(b.device)] == ["declined"]  # type: ignore[arg-type]


async def test_a_revoked_invite_is_told_to_its_requester(fleet: Fleet) -> None:
    a, b, space = await pair(fleet)
    assert a.device is not None
    code = invite(a, space)
    await b.join(code, timeout=10)
    ops.space_revoke(a.device, space, ops.space_invites(a.device, space)[0]["invite"])
    await state_becomes(b, space, "revoked")


async def test_only_the_concerned_account_is_told(fleet: Fleet) -> None:
    a, b, space = await pair(fleet)
    assert a.device is not None
    await b.join(invite(a, space, no_approval=True), timeout=10)
    sp = a.node.spaces[space]
    raw = sp.emit_acl(lambda acl: acl.remove(a.keys.account, [b.keys.account.public]))
    from p2psync.codec import content_id

    rid = content_id(raw)
    assert notice(sp, [rid], a.keys.account.public, 1 << 20) is None
    assert notice(sp, [rid], Fleet.peer_id().encode()[:32], 1 << 20) is None
    told = notice(sp, [rid], b.keys.account.public, 1 << 20)
    assert told is not None and told.heads == (rid,) and told.records[-1] == raw


def test_a_damaged_code_shows_no_decoder_internals() -> None:
    """Issue 14: 'invite code is damaged: … malformed msgpack (71 exceeds max_ext_len(0))'
    told the person nothing they could act on."""
    for bad in ("p2psync-invite2:AAAA", "p2psync-invite2:" + "Z" * 90, "hello"):
        with pytest.raises(ops.InvalidParams) as err:
            ops.parse_invite(bad)
        text = str(err.value)
        assert "msgpack" not in text and "[" not in text and "base32" not in text, text
        assert "copy" in text
