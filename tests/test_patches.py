"""Change events carry patches (issue 14): the diff of the JSON views before and after a
change, in Automerge's patch shape; applying them to the old view gives the new one."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.agent import ops
from p2psync.replica.patches import apply, diff
from tests.conftest import Fleet

scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab", max_size=3)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from("xyz"), inner, max_size=3), max_leaves=12)
docs = st.dictionaries(st.sampled_from("abcd"), values, max_size=4)


@settings(max_examples=300, deadline=None)
@given(docs, docs)
def test_patches_turn_the_old_view_into_the_new(before: Any, after: Any) -> None:
    assert apply(before, diff(before, after)) == after


def test_patch_shapes() -> None:
    before = {"t": "hello", "l": [1, 2, 3], "k": 1, "gone": True}
    after = {"t": "hello world", "l": [1, 3], "k": 2, "new": {"a": 1}}
    assert diff(before, after) == [
        {"action": "del", "path": ["gone"], "length": 1},
        {"action": "splice", "path": ["t", 5], "value": " world"},
        {"action": "del", "path": ["l", 1], "length": 1},
        {"action": "put", "path": ["k"], "value": 2},
        {"action": "put", "path": ["new"], "value": {"a": 1}},
    ]
    assert diff(before, before) == []


async def test_change_events_carry_patches_local_and_remote(fleet: Fleet) -> None:
    a, b = await fleet.agent("a"), await fleet.agent("b")
    assert a.device is not None and b.device is not None
    space = ops.space_create(a.device, "n")["space_id"]
    doc = ops.doc_new(a.device, space)["doc"]
    ops.doc_change(a.device, space, doc, ops.edits_mod.decode_edits(
        [{"op": "put", "path": "t", "value": "hi", "text": True}]))
    code = ops.space_invite(a.device, space, no_approval=True,
                            addresses=a.reachable_addresses())["invite"]
    await b.join(code, timeout=10)
    await b.wait_synced(space, 10)
    sub = b.subscribe(space, doc, patches=True)
    plain = b.subscribe(space, doc)
    ops.doc_splice(b.device, space, doc, "t", 2, insert="!")
    ev = await asyncio.wait_for(sub.queue.get(), 10)
    assert ev["origin"] == "local"
    assert ev["patches"] == [{"action": "splice", "path": ["t", 2], "value": "!"}]
    assert "patches" not in (await asyncio.wait_for(plain.queue.get(), 10))
    ops.doc_change(a.device, space, doc, ops.edits_mod.decode_edits(
        [{"op": "put", "path": "n", "value": [1, 2]}, {"op": "delete", "path": "t"}]))
    ev = await asyncio.wait_for(sub.queue.get(), 10)
    assert ev["origin"] == "peer"
    assert ev["patches"] == [{"action": "del", "path": ["t"], "length": 1},
                             {"action": "put", "path": ["n"], "value": [1, 2]}]
