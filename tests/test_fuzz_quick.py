"""A few hundred inputs of the sync-message fuzzer (scripts/fuzz_messages.py runs 100 000)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location(
    "fuzz_messages", Path(__file__).resolve().parent.parent / "scripts" / "fuzz_messages.py")
assert _spec is not None and _spec.loader is not None
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


def test_fuzz_messages_quick() -> None:
    stats = fuzz.run(500, seed=7)
    assert stats["crashes"] == 0 and stats["decoded"] + stats["refused"] == 500
    assert stats["refused"] > 0 and stats["decoded"] > 0


_rspec = importlib.util.spec_from_file_location(
    "fuzz_records", Path(__file__).resolve().parent.parent / "scripts" / "fuzz_records.py")
assert _rspec is not None and _rspec.loader is not None
fuzz_records = importlib.util.module_from_spec(_rspec)
_rspec.loader.exec_module(fuzz_records)


def test_fuzz_records_quick() -> None:
    """ACL records, tree changes, device certificates (valid, mutated, re-signed by their real
    author, random) against a real SQLite store: each applied or refused with a typed error,
    and no refused one changes the store (scripts/fuzz_records.py runs 100 000)."""
    stats = fuzz_records.run(1500, seed=3)
    assert stats["crashes"] == 0 and stats["unintended"] == 0
    assert stats["applied"] + stats["refused"] + stats["duplicate"] == 1500
    assert stats["applied"] > 0 and stats["refused"] > 0 and stats["stored"] > 0
    for kind in ("acl", "change", "cert"):
        assert stats["by_kind"][kind].get("refused", 0) > 0


def test_fuzz_records_sees_a_store_written_by_a_refused_input(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The detector bites: if the sync path stored records before refusing them, the fuzz
    reports unintended store changes."""
    from p2psync.codec import content_id
    from p2psync.sync.replicas import Replicas

    real = Replicas.apply_acl

    def leaky(self: Replicas, source: Any, space: Any, raws: Any) -> Any:
        for raw in raws:  # the bug: store first, check afterwards
            self.store.add_acl_record(space.id, content_id(raw), raw)
        return real(self, source, space, raws)

    monkeypatch.setattr(Replicas, "apply_acl", leaky)
    stats = fuzz_records.run(300, seed=3)
    assert stats["unintended"] > 0


_fspec = importlib.util.spec_from_file_location(
    "fuzz_frames", Path(__file__).resolve().parent.parent / "scripts" / "fuzz_frames.py")
assert _fspec is not None and _fspec.loader is not None
fuzz_frames = importlib.util.module_from_spec(_fspec)
_fspec.loader.exec_module(fuzz_frames)


def test_fuzz_frames_quick() -> None:
    """A few thousand of the framing fuzzer's cases (scripts/fuzz_frames.py runs 100 000)."""
    stats = fuzz_frames.run(2000, seed=5)
    assert stats["crashes"] == 0 and stats["accepted"] + stats["refused"] == 2000
    for target in fuzz_frames.TARGETS:
        assert stats["table"].get(f"{target}/refused", 0) > 0
        assert stats["table"].get(f"{target}/accepted", 0) > 0
