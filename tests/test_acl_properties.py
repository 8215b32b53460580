"""Property: any arrival order of the same record set gives the same ACL state and gate answers.

Random operations run on three replicas that sync now and then, so branches are concurrent;
junk (forged, foreign, escalating, orphaned) records are mixed in. Every permutation of the
union must converge to one state, one export, one set of refusals and one set of decisions for
synthetic tree changes (author x head x key x parent head).
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync.errors import ReplicaError
from p2psync.replica.acl import Acl, Role
from p2psync.replica.acl_records import PermissionChange, build_record, decode_record
from tests.acl_dsl import SPACE, World, account

NAMES = ["owner", "alice", "bob", "carl", "dan"]
PRELUDE = World().run("""
    owner invites alice as admin; alice joins; owner invites bob as writer; bob joins
    owner invites carl as reader; carl joins; owner invites dan as writer openly
""")
PRELUDE_RAWS = PRELUDE.acl("main").export()

ACTIONS = ["remove", "promote", "demote", "rotate", "invite_accept", "leave", "join_dan",
           "revoke_dan", "transfer", "replicator", "merge", "sync"]


def _do(w: World, acl: Acl, actor: str, action: str, target: str) -> None:
    a, t = account(actor), account(target)
    if action == "remove":
        acl.remove(a, [t.public])
    elif action == "promote":
        acl.change_permission(a, t.public, Role.ADMIN if actor == "owner" else Role.WRITER)
    elif action == "demote":
        acl.change_permission(a, t.public, Role.READER)
    elif action == "rotate":
        acl.rotate(a)
    elif action == "invite_accept":
        _raw, code = acl.invite(a, Role.WRITER)
        req = acl.request_join(t, code)
        acl.accept(a, decode_record(req).id)
    elif action == "leave":
        acl.leave(a)
    elif action == "join_dan":
        acl.join(account("dan"), PRELUDE.codes["dan"][0])
    elif action == "revoke_dan":
        acl.revoke_invite(a, PRELUDE.codes["dan"][0].invite_id)
    elif action == "transfer":
        acl.transfer_ownership(a, t.public)
    elif action == "replicator":
        acl.add_replicator(a, account("backup").public)
    elif action == "merge":
        acl.merge(a)


def _outcome(acl: Acl) -> tuple[object, ...]:
    heads = [decode_record(r).id for r in acl.export()]
    keys = sorted({k for h in heads for k in acl.state_at(h).key_order})
    decisions = []
    for h in heads[::3] + heads[-2:]:
        for name in [*NAMES, "mallory"]:
            for k in keys[:2] + keys[-2:]:
                for parents in ([], [heads[len(heads) // 2]]):
                    try:
                        acl.check_change(account(name).public, h, k, parents)
                        decisions.append("ok")
                    except ReplicaError as exc:
                        decisions.append(type(exc).__name__)
    return (acl.state.fingerprint(), acl.export(), acl.waiting, sorted(acl.rejected),
            decisions)


ACTORS = ["owner", "owner", "alice", "alice", "bob", "dan"]  # mostly those who may act
op = st.tuples(st.integers(0, 2), st.sampled_from(ACTORS), st.sampled_from(ACTIONS),
               st.sampled_from(NAMES))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(op, min_size=1, max_size=16), data=st.data())
def test_every_arrival_order_converges(ops: list[tuple[int, str, str, str]],
                                       data: st.DataObject) -> None:
    w = World()
    w.replicas = {f"r{i}": Acl.from_records(SPACE, PRELUDE_RAWS) for i in range(3)}
    for idx, actor, action, target in ops:
        name = f"r{idx}"
        if action == "sync":
            w.sync(name, f"r{(idx + 1) % 3}")
            continue
        # Not allowed in that replica's past: the builder refuses it and nothing is added.
        with contextlib.suppress(ReplicaError):
            _do(w, w.replicas[name], actor, action, target)
    union: dict[bytes, bytes] = {}
    for acl in w.replicas.values():
        for raw in acl.export():
            union[decode_record(raw).id] = raw
    base = w.replicas["r0"]
    junk = [
        union[max(union)][:-3],  # truncated
        build_record(account("bob"), SPACE, base.heads,
                     PermissionChange(account("bob").public, Role.ADMIN)),  # escalation
        build_record(account("owner"), SPACE, [b"\x07" * 32],
                     PermissionChange(account("bob").public, Role.READER)),  # orphan: waits
        build_record(account("owner"), "other.space", base.heads,
                     PermissionChange(account("bob").public, Role.READER)),  # foreign
    ]
    raws = list(union.values()) + junk
    outcomes = []
    for _ in range(3):
        order = data.draw(st.permutations(raws))
        outcomes.append(_outcome(Acl.from_records(SPACE, order)))
    assert all(o == outcomes[0] for o in outcomes[1:])
    assert len(outcomes[0][3]) >= 2  # the truncated, escalating and foreign junk was refused
