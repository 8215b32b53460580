"""Keystore at rest: argon2id + AEAD, 0600, wrong passphrase changes nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.crypto.keystore import read_keystore, write_keystore
from p2psync.errors import KeystoreError, WrongPassphrase


def test_roundtrip_and_permissions(tmp_path: Path) -> None:
    account, device = AccountKey.generate(), DeviceKey.generate()
    path = tmp_path / "home" / "keystore"
    write_keystore(path, account, device, "correct horse")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    ks = read_keystore(path, "correct horse")
    assert ks.account.public == account.public
    assert ks.device.public == device.public
    assert ks.protected
    assert b"correct" not in path.read_bytes() and account.seed not in path.read_bytes()


def test_wrong_passphrase_fails_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    write_keystore(path, AccountKey.generate(), DeviceKey.generate(), "right")
    before = path.read_bytes()
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        read_keystore(path, "wrong")
    assert path.read_bytes() == before


def test_empty_passphrase_allowed_but_flagged(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    write_keystore(path, AccountKey.generate(), DeviceKey.generate(), "")
    assert read_keystore(path, "").protected is False


def test_missing_and_corrupt_keystores(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="no keystore"):
        read_keystore(tmp_path / "none", "x")
    path = tmp_path / "keystore"
    write_keystore(path, AccountKey.generate(), DeviceKey.generate(), "pw")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WrongPassphrase):  # AEAD cannot tell a flipped bit from a wrong key
        read_keystore(path, "pw")
    path.write_bytes(b"\x93garbage")
    with pytest.raises(KeystoreError, match="corrupt"):
        read_keystore(path, "pw")
