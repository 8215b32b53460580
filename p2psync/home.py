"""The agent's home directory: keystore, store, config — one folder per device identity.

``--home DIR`` (or ``$P2PSYNC_HOME``) overrides everything, which is how tests and the demo run
several devices on one machine. Otherwise the home is the platform's user data folder
(``platformdirs``): ``$XDG_DATA_HOME/p2psync`` (default ``~/.local/share/p2psync``) on Linux.
The passphrase comes from ``$P2PSYNC_PASSPHRASE`` or a prompt when
stdin is a terminal; choosing none (keys then rest protected only by file permissions) must be
explicit: an empty ``$P2PSYNC_PASSPHRASE`` or ``init --no-passphrase``.

Everything in a home is private to its user: the folder 0700, every file 0600, whatever existed
before (:meth:`Home.secure`, run when a home is created or its keys are opened, and by the agent
once its store is open); a looser mode is fixed and reported as a warning.
"""

from __future__ import annotations

import getpass
import logging
import os
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2psync.errors import KeystoreError, WrongPassphrase

if TYPE_CHECKING:  # imported where used: the CLI's thin path needs a Home but no crypto
    from p2psync.crypto.cert import DeviceCertificate
    from p2psync.crypto.keys import AccountKey
    from p2psync.crypto.keystore import Keystore

log = logging.getLogger(__name__)

KEYSTORE = "keystore"
STORE = "store.sqlite3"
CONFIG = "config.toml"


def default_home() -> Path:
    """``$P2PSYNC_HOME``, else the platform's user data folder from ``platformdirs``:
    ``$XDG_DATA_HOME/p2psync`` (default ``~/.local/share/p2psync``) on Linux, as before;
    ``~/Library/Application Support/p2psync`` on macOS; ``%LOCALAPPDATA%\\p2psync`` on
    Windows."""
    env = os.environ.get("P2PSYNC_HOME")
    if env:
        return Path(env)
    import platformdirs

    return platformdirs.user_data_path("p2psync", appauthor=False)


def interactive() -> bool:
    """Whether a person can be prompted (stdin is a terminal)."""
    return sys.stdin is not None and sys.stdin.isatty()


def passphrase(prompt: str = "Keystore passphrase: ", *, confirm: bool = False,
               require: bool = False) -> str:
    """The keystore passphrase from ``$P2PSYNC_PASSPHRASE`` or a prompt.

    With neither (no terminal, variable unset) it is empty when opening a keystore (an
    unprotected one opens; a protected one then fails with a clear :class:`WrongPassphrase`),
    but ``require`` (choosing one for a new keystore) refuses: an identity is never left
    without a passphrase silently."""
    env = os.environ.get("P2PSYNC_PASSPHRASE")
    if env is not None:
        return env
    if interactive():
        first = getpass.getpass(prompt)
        if confirm and first and getpass.getpass("Repeat passphrase: ") != first:
            raise KeystoreError("passphrases do not match")
        return first
    if require:
        raise KeystoreError(
            "no terminal to ask for a keystore passphrase: set P2PSYNC_PASSPHRASE (the "
            "passphrase; empty for none), or pass --no-passphrase to keep the keys protected "
            "only by file permissions")
    return ""


PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


def secure_tree(root: Path) -> list[tuple[Path, int]]:
    """Make ``root`` and every folder under it 0700 and every other entry 0600 (symlinks are
    left alone); returns what was looser, as ``(path, old mode)``. Entries another user owns
    cannot be changed: they are reported (logged) and skipped."""
    fixed: list[tuple[Path, int]] = []

    def fix(path: Path, want: int) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            return
        mode = stat.S_IMODE(st.st_mode)
        if mode & ~want:
            try:
                os.chmod(path, mode & want)
            except OSError as exc:
                log.warning("cannot make %s private (mode %03o): %s", path, mode, exc)
                return
            fixed.append((path, mode))

    if not root.is_dir():
        return fixed
    fix(root, PRIVATE_DIR)
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for d in dirnames:
            fix(base / d, PRIVATE_DIR)
        for f in filenames:
            fix(base / f, PRIVATE_FILE)
    return fixed


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

    def secure(self) -> list[tuple[Path, int]]:
        """Make the home 0700 and everything in it 0600 (store, its -wal/-shm, config, keystore,
        socket), warning once per entry that was looser; returns what was fixed."""
        fixed = secure_tree(self.path)
        for path, mode in fixed:
            log.warning("%s was mode %03o (others could read it); made it private (%03o)",
                        path, mode, PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)
        return fixed

    def create(self, account: AccountKey, secret: str) -> Keystore:
        """Write a new identity (fresh device key) into this home; refuses to overwrite one.
        The home is made private first, whatever existed (an empty folder made 0755 by hand)."""
        if self.exists():
            raise KeystoreError(f"{self.path} already holds an identity; use another --home")
        self.path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        self.secure()
        from p2psync.crypto.keys import DeviceKey
        from p2psync.crypto.keystore import Keystore, write_keystore

        device = DeviceKey.generate()
        write_keystore(self.keystore_path, account, device, secret)
        return Keystore(account, device, protected=secret != "")

    def open_keys(self, secret: str | None = None) -> Keystore:
        """Decrypt the keystore (passphrase from the environment or a prompt), after making the
        home private: every command and the agent open the keys before the store."""
        from p2psync.crypto.keystore import read_keystore

        self.secure()
        try:
            return read_keystore(self.keystore_path,
                                 passphrase() if secret is None else secret)
        except WrongPassphrase as exc:
            if secret is None and "P2PSYNC_PASSPHRASE" not in os.environ and not interactive():
                raise WrongPassphrase(f"{exc}: it is protected by a passphrase and there is no "
                                      "terminal to ask for it; set P2PSYNC_PASSPHRASE") from None
            raise

    def certificate(self, keys: Keystore) -> DeviceCertificate:
        from p2psync.crypto.cert import DeviceCertificate

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
