"""``[limits]`` of the agent's config reaches the device's storage policy (issue 20.7 wired):
a member whose pushes exceed the per-author change limit is refused, without a strike."""

from __future__ import annotations

import tomllib

from p2psync.config import parse_config, render_config
from p2psync.replica.document import ROOT
from p2psync.sync.memberlimits import MemberLimits
from tests.conftest import Fleet
from tests.sync_helpers import wait_any


def test_limits_table_parses_and_renders() -> None:
    cfg = parse_config(tomllib.loads("[limits]\nauthor_changes = 2\nspace_bytes = 1000\n"))
    assert cfg.limits == MemberLimits(author_changes=2, space_bytes=1000)
    assert parse_config(tomllib.loads(render_config(cfg))) == cfg
    assert parse_config({}).limits == MemberLimits()  # no table: no limit


async def test_config_limits_refuse_a_members_pushes_in_the_agent(fleet: Fleet) -> None:
    limits = parse_config(tomllib.loads("[limits]\nauthor_changes = 2\n")).limits
    a = await fleet.agent("a", limits=limits)
    b = await fleet.agent("b")
    space = a.node.create_space()
    doc = space.new_document()
    with doc.edit() as e:
        e.put(ROOT, "n", 0)
    await b.join(a.node.invite(space.id).encode(), [f"tcp://{a.node.address('tcp')}"])
    bspace = b.node.spaces[space.id]
    await wait_any([a.node, b.node], lambda: bspace.has_tree(doc.tree.id))
    bdoc = bspace.document(doc.tree.id)
    await wait_any([a.node, b.node], lambda: bdoc.to_json() == {"n": 0})
    for i in range(4):  # b makes a store 4 changes of its own: over the limit of 2
        with bdoc.edit() as e:
            e.put(ROOT, "n", i + 1)

    def refused() -> bool:
        return any("author change limit" in (eng.state.space_state(space.id).last_error or "")
                   for eng in a.node.engines)

    await wait_any([a.node, b.node], refused)
    by_b = [c for c in space.tree(doc.tree.id).changes()
            if c.author == b.keys.account.public]
    assert len(by_b) <= 2
