"""Space names travel with the space (issue 14): a SpaceMeta ACL record sealed under the read
key, written by admins, read by members, opaque to replicators; local aliases stay local."""

from __future__ import annotations

import pytest

from p2psync.agent import ops
from p2psync.codec import pack
from p2psync.errors import AccessDenied, InvalidAclRecord
from p2psync.replica.acl import Acl
from p2psync.replica.acl_records import (
    SpaceMeta,
    build_record,
    decode_record,
    meta_aad,
)
from tests.acl_dsl import SPACE, account, scenario
from tests.conftest import Fleet
from tests.test_join_states import invite, pair


def test_the_record_round_trips_and_is_bounded() -> None:
    owner = account("owner")
    p = SpaceMeta(b"\x01" * 32, b"\x02" * 60)
    rec = decode_record(build_record(owner, "s.1", [b"\x0a" * 32], p, timestamp=3))
    assert rec.payload == p
    for bad in (SpaceMeta(b"\x01" * 31, b"\x02" * 60), SpaceMeta(b"\x01" * 32, b"\x02" * 39),
                SpaceMeta(b"\x01" * 32, b"\x02" * 2049)):
        with pytest.raises(InvalidAclRecord):
            decode_record(build_record(owner, "s.1", [b"\x0a" * 32], bad))


def test_members_read_the_name_replicators_and_strangers_do_not() -> None:
    w = scenario("owner invites bob as writer openly; bob joins")
    acl = w.acl("main")
    raw = acl.set_meta(account("owner"), {"name": "Family photos"})
    assert b"Family photos" not in raw  # sealed: the bytes a backup stores do not hold it
    copy = Acl.from_records(SPACE, acl.export())  # a replicator's copy: records, no keys
    assert copy.state.meta == decode_record(raw).id
    assert copy.meta() is None and copy.meta(account("mallory")) is None
    assert copy.meta(account("bob")) == {"name": "Family photos"}
    assert acl.meta() == {"name": "Family photos"}  # the owner's own replica
    assert acl.meta(account("owner")) == {"name": "Family photos"}


def test_only_admins_rename() -> None:
    w = scenario("owner invites bob as writer openly; bob joins; "
                 "owner invites carol as writer openly; carol joins; owner sets carol to admin")
    acl = w.acl("main")
    with pytest.raises(AccessDenied, match="only admins and the owner rename"):
        acl.set_meta(account("bob"), {"name": "mine now"})
    # a hand-built record by a writer (a modified client) is refused too
    kid = acl.state.current_key_id
    key = acl.keys_of(account("bob"))[kid]
    forged = build_record(account("bob"), SPACE, acl.heads,
                          SpaceMeta(kid, key.encrypt(pack({"name": "x"}), meta_aad(SPACE, kid))))
    with pytest.raises(AccessDenied):
        acl.add(forged)
    acl.set_meta(account("carol"), {"name": "by an admin"})
    assert acl.meta(account("bob")) == {"name": "by an admin"}


def test_rotation_keeps_old_names_readable_and_hides_new_ones_from_the_removed() -> None:
    """The name is sealed under the read key current when it was set. A member removed later
    (rotation) keeps what it knew but cannot read a rename made after; a member who joins
    after the rotation reads a name sealed under the old key (rotations wrap old keys)."""
    w = scenario("owner invites bob as writer openly; bob joins")
    acl = w.acl("main")
    acl.set_meta(account("owner"), {"name": "before"})
    w.run("owner removes bob; owner invites dave as writer openly; dave joins")
    assert acl.meta(account("dave")) == {"name": "before"}
    assert acl.meta(account("bob")) == {"name": "before"}  # it knew that one already
    acl.set_meta(account("owner"), {"name": "after"})
    assert acl.meta(account("dave")) == {"name": "after"}
    assert acl.meta(account("bob")) is None


def test_concurrent_renames_resolve_the_same_everywhere() -> None:
    w = scenario("owner invites carol as writer openly; carol joins; "
                 "owner sets carol to admin; fork r2")
    w.acl("main").set_meta(account("owner"), {"name": "one"})
    w.acl("r2").set_meta(account("carol"), {"name": "two"})
    w.run("sync all")
    a, b = w.acl("main"), w.acl("r2")
    assert a.state.meta == b.state.meta and a.meta(account("carol")) == b.meta(account("carol"))


async def test_a_joined_space_shows_its_name_and_admins_rename_it(fleet: Fleet) -> None:
    a, b, space = await pair(fleet)
    assert a.device is not None and b.device is not None
    await b.join(invite(a, space, no_approval=True), timeout=10)
    await b.wait_synced(space, 10)
    [row] = ops.space_list(b.device)
    assert (row["name"], row["shared_name"], row["alias"]) == ("notes", "notes", None)
    assert b.device.resolve_space("notes").id == space  # found by its shared name
    with pytest.raises(AccessDenied, match="only admins and the owner rename"):
        ops.space_rename(b.device, space, "hijacked")
    ops.space_rename(a.device, "notes", "Groceries")
    b.node.spaces[space].add_acl_records(a.node.spaces[space].acl_records())
    assert ops.space_list(b.device)[0]["name"] == "Groceries"
    # a local alias wins on this device only, and clears back to the shared name
    out = ops.space_rename(b.device, space, "shopping", local=True)
    assert out == {"space_id": space, "alias": "shopping", "name": "Groceries"}
    assert ops.space_list(b.device)[0]["name"] == "shopping"
    assert ops.space_list(a.device)[0]["name"] == "Groceries"
    ops.space_rename(b.device, space, "", local=True)
    assert ops.space_list(b.device)[0]["name"] == "Groceries"
