"""Switch-off tests: with one safety mechanism monkeypatched off, the test that guards it must
FAIL (and pass with the mechanism on, in the same test).

A cheap CI check that the guarding tests bite. The property → guarding test → switch-off map
is in docs/testing.md; the switches are in tests/guards.py.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import tests.test_acl_records as test_acl_records
import tests.test_acl_scenarios as test_acl_scenarios
import tests.test_backup as test_backup
import tests.test_change as test_change
import tests.test_change_seal as test_change_seal
import tests.test_noise as test_noise
import tests.test_space as test_space
import tests.test_store as test_store
import tests.test_transport as test_transport
import tests.test_tree as test_tree
from tests.backup_helpers import assert_no_plaintext, back_up_marked_space, new_marker
from tests.conftest import Fleet
from tests.guards import (
    binding_off,
    bites,
    encryption_off,
    quotas_off,
    removal_off,
    replay_off,
    rollback_off,
    rotation_off,
    sealing_off,
    signatures_off,
    write_rule_off,
)
from tests.netns import JsonLinesProcess
from tests.test_transport import server, server_id

__all__ = ["server", "server_id"]  # fixtures used by the channel-binding switch-off


def _dirs(tmp_path: Path) -> list[Path]:
    """One fresh directory for the run with the mechanism on, one for the run with it off."""
    out = [tmp_path / "on", tmp_path / "off"]
    for d in out:
        d.mkdir()
    return out


async def test_e2e_encryption(tmp_path: Path) -> None:
    exc = await bites(test_change.test_round_trip_fields_and_id, encryption_off)
    assert "hello" in str(exc)  # the plaintext showed up in the change bytes
    exc = await bites(functools.partial(
        test_space.test_member_joins_and_reads_replicator_holds_only_ciphertext, tmp_path),
        encryption_off)
    assert "MARKER" in str(exc)


async def test_signature_check() -> None:
    await bites(test_acl_records.test_forged_signature_is_refused, signatures_off)
    await bites(test_change.test_wrong_signature_and_wrong_domain, signatures_off)


async def test_acl_write_rule() -> None:
    await bites(test_acl_records.test_gate_rules, write_rule_off)
    await bites(functools.partial(test_acl_scenarios.test_scenario,
                                  "request then accept with another role"), write_rule_off)


async def test_removal() -> None:
    exc = await bites(functools.partial(test_acl_scenarios.test_scenario,
                                        "invite, join, remove, write rejected"), removal_off)
    assert "bob is 2, expected None" in str(exc)  # bob is still a writer


async def test_key_rotation() -> None:
    await bites(test_acl_records.test_removed_member_cannot_read_after_rotation_and_others_read_with_newest_key,  # noqa: E501
                rotation_off)


async def test_replay_protection() -> None:
    await bites(test_noise.test_transport_nonce_strict, replay_off)


@pytest.mark.parametrize("transport", ["quic"])
async def test_channel_binding(server: test_transport.Server) -> None:
    exc = await bites(functools.partial(
        test_transport.test_handshake_relayed_to_another_quic_connection, server), binding_off)
    assert "DID NOT RAISE" in str(exc)


def _quotas_off_waiting_briefly(mp: pytest.MonkeyPatch) -> None:
    """quotas_off, and the guarding test waits 3 s (not 20) for the refusal that never comes;
    with quotas on it runs with its own timeouts."""
    quotas_off(mp)
    mp.setattr(test_backup, "wait_any", functools.partial(test_backup.wait_any, timeout=3.0))


async def _in_fleet(path: Path, test: Callable[[Fleet], Awaitable[None]]) -> None:
    """Run a ``fleet``-taking test outside pytest's fixtures (once on, once off)."""
    fleet = Fleet(path)
    try:
        await test(fleet)
    finally:
        await fleet.close()


async def test_quotas(tmp_path: Path) -> None:
    runs = iter(_dirs(tmp_path))
    await bites(lambda: _in_fleet(next(runs), test_backup.test_quota_refusal_reaches_the_pushing_device_and_nothing_partial_is_stored),  # noqa: E501
                _quotas_off_waiting_briefly)


async def test_crash_safety_rollback(tmp_path: Path) -> None:
    await bites(test_tree.test_failing_persist_rolls_the_tree_back, rollback_off)
    runs = iter(_dirs(tmp_path))
    await bites(lambda: test_store.test_full_disk_gives_store_error_and_memory_rolls_back(
        next(runs)), rollback_off)


async def test_backup_no_plaintext_fails_with_encryption_off(
        tmp_path: Path, procs: list[JsonLinesProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    """The control run of test_backup_process's no-plaintext test: the same flow with read keys
    switched off puts the marker in the backup's files, and assert_no_plaintext catches it.
    (With encryption on, test_backup_process runs it and the check passes.)"""
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


def _failing_line(exc: BaseException) -> str:
    """The source line where ``exc`` was raised (for an assertion: which one failed)."""
    return (traceback.extract_tb(exc.__traceback__)[-1].line or "").strip()


async def test_sealed_change_metadata() -> None:
    """Issue 20.6: with the time and snapshot flag back in the clear header, the header
    differs between two changes made at different times (the time is in it) and a replicator
    without the read key learns both."""
    exc = await bites(
        test_change_seal.test_the_signed_clear_header_holds_no_timestamp_and_no_snapshot_flag,
        sealing_off)
    assert _failing_line(exc) == "assert a.header == b.header"
    exc = await bites(
        test_change_seal.test_a_key_holder_sees_time_and_snapshots_a_replicator_does_not,
        sealing_off)
    assert _failing_line(exc).startswith("assert snap is not None and snap.snapshot is None")
