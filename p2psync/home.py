"""The agent's home directory: keystore, store, config — one folder per device identity.

``--home DIR`` (or ``$P2PSYNC_HOME``) overrides everything, which is how tests and the demo run
several devices on one machine. Otherwise the home is ``$XDG_DATA_HOME/p2psync`` (default
``~/.local/share/p2psync``). The passphrase comes from ``$P2PSYNC_PASSPHRASE``, a prompt when
stdin is a terminal, or is empty (allowed, with a warning: keys then rest unencrypted-by-secret).
"""

from __future__ import annotations

import getpass
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.crypto.keystore import Keystore, read_keystore, write_keystore
from p2psync.errors import KeystoreError

KEYSTORE = "keystore"
STORE = "store.sqlite3"
CONFIG = "config.toml"


def default_home() -> Path:
    env = os.environ.get("P2PSYNC_HOME")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "p2psync"


def passphrase(prompt: str = "Keystore passphrase: ", *, confirm: bool = False) -> str:
    """The keystore passphrase from the environment or a prompt; empty if neither."""
    env = os.environ.get("P2PSYNC_PASSPHRASE")
    if env is not None:
        return env
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if confirm and first and getpass.getpass("Repeat passphrase: ") != first:
            raise KeystoreError("passphrases do not match")
        return first
    return ""


@dataclass
class Home:
    """A device's home folder and the identity in it."""

    path: Path

    @property
    def keystore_path(self) -> Path:
        return self.path / KEYSTORE

    @property
    def store_path(self) -> Path:
        return self.path / STORE

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def exists(self) -> bool:
        return self.keystore_path.exists()

    def create(self, account: AccountKey, secret: str) -> Keystore:
        """Write a new identity (fresh device key) into this home; refuses to overwrite one."""
        if self.exists():
            raise KeystoreError(f"{self.path} already holds an identity; use another --home")
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        device = DeviceKey.generate()
        write_keystore(self.keystore_path, account, device, secret)
        return Keystore(account, device, protected=secret != "")

    def open_keys(self, secret: str | None = None) -> Keystore:
        return read_keystore(self.keystore_path, passphrase() if secret is None else secret)

    def certificate(self, keys: Keystore) -> DeviceCertificate:
        return DeviceCertificate.issue(keys.account, keys.device, issued_at=0)

    def config(self) -> dict[str, Any]:
        """The parsed ``config.toml`` (empty when absent)."""
        try:
            with self.config_path.open("rb") as f:
                return tomllib.load(f)
        except FileNotFoundError:
            return {}
        except tomllib.TOMLDecodeError as exc:
            raise KeystoreError(f"{self.config_path} is not valid TOML: {exc}") from exc
