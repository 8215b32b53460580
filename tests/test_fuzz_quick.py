"""A few hundred inputs of the sync-message fuzzer (scripts/fuzz_messages.py runs 100 000)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "fuzz_messages", Path(__file__).resolve().parent.parent / "scripts" / "fuzz_messages.py")
assert _spec is not None and _spec.loader is not None
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


def test_fuzz_messages_quick() -> None:
    stats = fuzz.run(500, seed=7)
    assert stats["crashes"] == 0 and stats["decoded"] + stats["refused"] == 500
    assert stats["refused"] > 0 and stats["decoded"] > 0
