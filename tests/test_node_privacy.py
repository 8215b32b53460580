"""The node's certificate policy (issue 12.6 wired): who may learn this device's account.

A listening node reveals its certificate only to another device of its account, a peer that
shares a space with it, or anyone while one of its spaces has an open invite (the joiner is not
a member yet); a stranger is refused (``RefusedByPeer``) and never reads the account. With
``NodeConfig.hide_identity`` off (the switch-off; on by default), the stranger connects and
learns it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.backup.config import ReplicatorConfig
from p2psync.backup.policy import BackupPolicy
from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import RefusedByPeer
from p2psync.node import Node, NodeConfig
from p2psync.transport import connect
from p2psync.transport.connection import Connection
from tests.sync_helpers import converged, fast_config, make_node, wait_any


def hiding() -> NodeConfig:
    cfg = fast_config()
    cfg.hide_identity = True
    return cfg


async def dial(node: Node, account: AccountKey | None = None) -> Connection:
    acc = account or AccountKey.generate()
    dev = DeviceKey.generate()
    host, _, port = node.address("tcp").rpartition(":")
    return await connect((host, int(port)), device_key=dev,
                         certificate=DeviceCertificate.issue(acc, dev), transport="tcp",
                         expected_peer=node.device.id, config=node.config.transport)


async def test_stranger_is_refused_and_never_learns_the_account(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a", config=hiding())
    try:
        a.create_space()
        with pytest.raises(RefusedByPeer):
            await dial(a)
    finally:
        await a.close()


async def test_same_account_member_and_invitee_are_answered(tmp_path: Path) -> None:
    a = await make_node(tmp_path, "a", config=hiding())
    b = await make_node(tmp_path, "b", config=hiding())
    try:
        # another device of a's account
        conn = await dial(a, a.account)
        assert conn.account_id == a.account.id
        await conn.close()
        # an invitee joins while the invite is open, then shares the space
        space = a.create_space()
        code = a.invite(space.id)
        joined = await b.join(code, [f"tcp:{a.address('tcp')}"])
        await wait_any([a, b], lambda: converged([a, b], joined.id))
        space.commit_acl(space.acl.revoke_invite(a.account, code.invite_id))
        with pytest.raises(RefusedByPeer):  # no open invite left: strangers refused again
            await dial(a)
        conn = await dial(a, b.account)  # a member of a shared space still is answered
        assert conn.account_id == a.account.id
        await conn.close()
    finally:
        await b.close()
        await a.close()


async def test_hiding_is_the_default() -> None:
    assert NodeConfig().hide_identity


async def test_hide_identity_off_answers_anyone(tmp_path: Path) -> None:
    cfg = fast_config()
    cfg.hide_identity = False
    a = await make_node(tmp_path, "a", config=cfg)
    try:
        conn = await dial(a)
        assert conn.account_id == a.account.id  # the stranger learnt the account
        await conn.close()
    finally:
        await a.close()


async def test_a_backup_answers_devices_it_does_not_know_yet(tmp_path: Path) -> None:
    backup = await make_node(tmp_path, "backup", config=hiding())
    BackupPolicy(backup.replicas, ReplicatorConfig()).install()
    try:
        conn = await dial(backup)  # the backup's policy answers anyone
        assert conn.account_id == backup.account.id
        await conn.close()
    finally:
        await backup.close()
