"""Issue 12.3: a reader floods the ACL with junk merges; the owner still removes it in one call.

A merge only has to name records its author has seen; before the fix a reader could push merges
of the same two heads with new timestamps until the ACL had more heads than a record may name
(64), and every admin action failed for good. Now an admin action merges the heads first (in
groups), merges must join heads (no parent an ancestor of another), and once the reader is
removed its back-dated merges are ignored.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.errors import InvalidAclRecord, ReplicaError
from p2psync.replica.acl import Acl, Role
from p2psync.replica.acl_records import MAX_PREV, Leave, Merge, build_record, decode_record
from p2psync.replica.space import Space
from p2psync.replica.store import Store
from tests.acl_dsl import SPACE, account, forked_world

FLOOD = 10_000


def _junk(acl: Acl, n: int, start: int = 0) -> list[bytes]:
    heads = acl.heads
    return [build_record(account("rita"), SPACE, heads, Merge(), timestamp=start + i)
            for i in range(n)]


def test_merges_must_join_heads() -> None:
    w = forked_world()
    acl = w.acl("main")
    a, b = acl.heads
    parent = acl.record(a).prev[0]  # an ancestor of both heads
    with pytest.raises(InvalidAclRecord, match="ancestor"):
        acl.add(build_record(account("rita"), SPACE, [parent, a], Merge()))
    acl.add(build_record(account("rita"), SPACE, [a, b], Merge()))  # a real merge is fine


def test_flood_then_one_call_removal_then_ignored(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3", durable=False)
    owner = account("owner")
    sp = Space.create(store, owner, b"dev-owner", window=0)
    acl = sp.acl
    code_r = acl.invite(owner, Role.READER)[1]
    req = acl.request_join(account("rita"), code_r)
    acl.accept(owner, decode_record(req).id)
    fork = Acl.from_records(sp.id, acl.export())
    acl.invite(owner, Role.WRITER)
    fork.invite(owner, Role.WRITER)
    sp.add_acl_records(fork.export())
    for raw in acl.take_built():
        sp.commit_acl(raw)
    assert len(acl.heads) == 2

    rita = account("rita")
    heads = acl.heads
    junk = [build_record(rita, sp.id, heads, Merge(), timestamp=i) for i in range(FLOOD)]
    res = sp.add_acl_records(junk)
    assert len(res.added) == FLOOD and not res.rejected
    assert len(acl.heads) == FLOOD  # the attack worked: far more heads than a record may name

    # One call: merges are built first, then the removal names a single head.
    removal = sp.emit_acl(lambda a: a.remove(owner, [rita.public]))
    assert acl.heads == [decode_record(removal).id]
    assert acl.state.role(rita.public) is None
    assert all(len(decode_record(r).prev) <= MAX_PREV for r in acl.export())

    # The reader's later records: back-dated merges are ignored, new ones refused.
    later = [build_record(rita, sp.id, heads, Merge(), timestamp=FLOOD + i) for i in range(200)]
    res = sp.add_acl_records(later)
    assert not res.added and len(res.ignored) == 200
    assert acl.heads == [decode_record(removal).id]
    with pytest.raises(ReplicaError):  # not a member at the head it names
        acl.add(build_record(rita, sp.id, [decode_record(removal).id], Leave()))

    # Everything the removal needed was stored: a restart sees the same ACL.
    again = Space.open(store, owner, b"dev-owner", sp.id)
    assert again.acl.heads == acl.heads
    assert again.acl.state.fingerprint() == acl.state.fingerprint()
    # A replica that learns the junk after the removal keeps none of the later merges.
    other = Acl.from_records(sp.id, [*acl.export(), *later])
    assert other.heads == acl.heads and len(other.shelved) == 200
    store.close()


def test_shelved_merge_is_promoted_when_an_honest_record_names_it() -> None:
    main = forked_world().acl("main")
    junk = _junk(main, 1)[0]
    bystander = Acl.from_records(SPACE, main.export())
    bystander.add(junk)  # this replica saw rita's merge before her removal ...
    main.remove(account("owner"), [account("rita").public])
    assert main.add(junk).status == "ignored"  # ... main learns it after: ignored
    honest, _code = bystander.invite(account("owner"), Role.WRITER)  # names rita's merge
    assert main.add(honest).status == "added"  # the shelved merge is admitted with it
    assert main.take_promoted() == [decode_record(junk).id]
    assert decode_record(junk).id in main and not main.shelved
