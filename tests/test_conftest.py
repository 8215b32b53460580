"""The ``fleet`` fixture closes what it made, newest first (its fixture does so in a
``finally``, so a failing test closes them too)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Fleet


class Thing:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def close(self) -> None:
        self.log.append(self.name)


async def test_fleet_closes_everything_newest_first(tmp_path: Path) -> None:
    log: list[str] = []
    fleet = Fleet(tmp_path)
    node = await fleet.node("n")
    agent = await fleet.agent("a")
    fleet.track(Thing("t", log))
    await fleet.close()
    assert log == ["t"] and node.closed and agent.closed
    await fleet.close()  # idempotent
