"""Switch-off tests: with one safety mechanism monkeypatched off, the core assertion of the
test that guards it must FAIL (and, in the same test, pass with the mechanism on).

A cheap CI check that the guarding tests bite. The property → guarding test → switch-off map
is in docs/testing.md; the switches are in tests/guards.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from backup_helpers import assert_no_plaintext, back_up_marked_space, new_marker
from guards import encryption_off

from tests.netns import JsonLinesProcess


@pytest.fixture
async def procs() -> AsyncIterator[list[JsonLinesProcess]]:
    started: list[JsonLinesProcess] = []
    try:
        yield started
    finally:
        for p in started:
            await p.aclose()


async def test_backup_no_plaintext_fails_with_encryption_off(
        tmp_path: Path, procs: list[JsonLinesProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    """The control run of test_backup_process's no-plaintext test: the same flow with read keys
    switched off puts the marker in the backup's files, and assert_no_plaintext catches it."""
    encryption_off(monkeypatch)
    marker = new_marker()
    mb = await back_up_marked_space(tmp_path, procs, marker)
    try:
        with pytest.raises(AssertionError, match="plaintext marker"):
            assert_no_plaintext([mb.home], marker)
        assert await mb.backup.stop() == 0
        with pytest.raises(AssertionError, match="plaintext marker"):
            assert_no_plaintext([mb.home], marker)
        with pytest.raises(AssertionError, match="plaintext marker"):
            assert_no_plaintext(tmp_path.glob("laptop.sqlite3*"), marker)
    finally:
        await mb.laptop.close()
