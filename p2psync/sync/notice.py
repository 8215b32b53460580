"""Telling an account it was shown the door (issue 14), sans-IO.

Pushes reach members only (:func:`p2psync.sync.push.may_push`), so the account a record
removes, whose join request it declines, or whose request's invite it revokes would never hear
of it: its copy would keep saying "member" or "pending", and its edits would look fine locally.
:func:`notice` finds, among ACL records just made or received, the ones that concern the
peer's account this way and returns them with the causal past the peer most likely lacks —
newest first up to the byte cap — as one ``ACL_HEAD_UPDATE`` whose only head is the notice.

The peer learns nothing it may not know: the records are signed metadata every replicator
holds, cut at the notice (nothing written after it is sent), and no content, no read key
sealed to anyone else is readable to it.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2psync.codec import content_id
from p2psync.replica.acl_records import Decline, Remove, RequestJoin, RevokeInvite
from p2psync.replica.space import Space
from p2psync.sync.messages import AclHeadUpdate, take_batch


def _records(space: Space) -> list[tuple[bytes, bytes]]:
    """(id, raw) of every admitted ACL record, parents before children."""
    return [(content_id(raw), raw) for raw in space.acl.export()]


def concerns(space: Space, record_id: bytes, account: bytes) -> bool:
    """Whether this ACL record removes ``account``, declines its join request, or revokes
    the invite of a request it made."""
    acl = space.acl
    if record_id not in acl:
        return False
    p = acl.record(record_id).payload
    if isinstance(p, Remove):
        return account in p.members
    if isinstance(p, Decline):
        return p.request_id in acl and acl.record(p.request_id).author == account
    if isinstance(p, RevokeInvite):
        return any(isinstance(r.payload, RequestJoin) and r.author == account
                   and r.payload.invite_id == p.invite_id
                   for r in (acl.record(i) for i, _ in _records(space)))
    return False


def notice(space: Space, record_ids: Sequence[bytes], account: bytes,
           max_bytes: int) -> AclHeadUpdate | None:
    """The ``ACL_HEAD_UPDATE`` that tells ``account`` about the first record of
    ``record_ids`` that concerns it, or None."""
    acl = space.acl
    for rid in record_ids:
        if concerns(space, rid, account):
            past = [raw for i, raw in _records(space)
                    if i == rid or acl.is_ancestor(i, rid)]
            batch, _ = take_batch(past[::-1], max_bytes)  # the newest: what it lacks
            return AclHeadUpdate(space.id, (rid,), tuple(batch[::-1]))
    return None
