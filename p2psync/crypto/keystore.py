"""The keystore: account and device private keys encrypted at rest.

File format (msgpack array): ``[1, opslimit, memlimit, salt(16), nonce(24), ciphertext]``; the
key is argon2id(passphrase, salt, opslimit, memlimit) and the ciphertext is XChaCha20-Poly1305
of ``pack([account_seed, device_seed])`` with the header fields as associated data. The file is
written atomically (temp file + rename) with mode 0600. An empty passphrase is allowed — the
keys are then protected only by file permissions, and :attr:`Keystore.protected` says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.pwhash
import nacl.utils

from p2psync.codec import Reader, pack, unpack
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.errors import DecodeError, KeystoreError, WrongPassphrase

_VERSION = 1
#: argon2id cost: libsodium's "interactive" level (64 MiB, 2 passes) — a Pi can afford it.
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


@dataclass(frozen=True)
class Keystore:
    """Decrypted contents of a keystore file."""

    account: AccountKey
    device: DeviceKey
    protected: bool  #: False when the passphrase was empty


def _derive(passphrase: str, salt: bytes, ops: int, mem: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(32, passphrase.encode(), salt, opslimit=ops, memlimit=mem)


def write_keystore(
    path: Path, account: AccountKey, device: DeviceKey, passphrase: str,
    *, opslimit: int = OPSLIMIT, memlimit: int = MEMLIMIT,
) -> None:
    """Encrypt the keys under ``passphrase`` and write them atomically with mode 0600."""
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    nonce = nacl.utils.random(24)
    key = _derive(passphrase, salt, opslimit, memlimit)
    aad = pack([_VERSION, opslimit, memlimit, salt, nonce])
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        pack([account.seed, device.seed]), aad, nonce, key
    )
    data = pack([_VERSION, opslimit, memlimit, salt, nonce, ct])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_keystore(path: Path, passphrase: str) -> Keystore:
    """Decrypt a keystore; :class:`WrongPassphrase` leaves the file untouched."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise KeystoreError(f"no keystore at {path} (run `p2psync init` first)") from exc
    try:
        r = Reader(unpack(data, max_size=4096, what="keystore"), "keystore")
        version = r.version([_VERSION])
        ops = r.integer("opslimit", min_value=1, max_value=64)
        mem = r.integer("memlimit", min_value=8192, max_value=4 * 1024**3)
        salt = r.blob("salt", size=nacl.pwhash.argon2id.SALTBYTES)
        nonce = r.blob("nonce", size=24)
        ct = r.blob("ciphertext", max_len=1024)
        r.end()
    except DecodeError as exc:
        raise KeystoreError(f"keystore {path} is corrupt: {exc}") from exc
    key = _derive(passphrase, salt, ops, mem)
    aad = pack([version, ops, mem, salt, nonce])
    try:
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, key)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise WrongPassphrase(f"wrong passphrase for keystore {path}") from exc
    try:
        k = Reader(unpack(plain, what="keystore keys"), "keystore keys")
        account = AccountKey(k.blob("account", size=32))
        device = DeviceKey(k.blob("device", size=32))
        k.end()
    except DecodeError as exc:
        raise KeystoreError(f"keystore {path} holds malformed keys: {exc}") from exc
    return Keystore(account, device, protected=passphrase != "")
