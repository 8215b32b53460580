"""Account and device keys.

* The **account** key is Ed25519, derived from a BIP39 recovery phrase by SLIP-0010 along the
  hardened path ``m/44'/7337'/<index>'`` — the same phrase gives the same account on any machine.
* A **device** key is a random Ed25519 key, one per device; the transport uses its X25519 twin
  (the standard Ed25519→Curve25519 map) as the Noise static key, so one key names the device.
* Signatures are domain-separated: the signed message is ``b"p2psync/" + domain + b"\\0" + data``
  so a signature made for one record kind can never be replayed as another.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import Self

import nacl.bindings
import nacl.exceptions
import nacl.signing
from mnemonic import Mnemonic

from p2psync.crypto.ids import account_id, peer_id
from p2psync.errors import BadRecoveryPhrase, BadSignature

#: SLIP-0044 coin types are a namespace; 7337 is unregistered and ours.
DERIVATION_PURPOSE = 44
DERIVATION_COIN = 7337
_HARDENED = 0x80000000


def _signed_message(domain: str, data: bytes) -> bytes:
    return b"p2psync/" + domain.encode() + b"\0" + data


def verify(public_key: bytes, domain: str, data: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature made with :meth:`SigningKey.sign`; raise :class:`BadSignature`."""
    if len(public_key) != 32 or len(signature) != 64:
        raise BadSignature(f"{domain}: malformed key or signature")
    try:
        nacl.bindings.crypto_sign_open(signature + _signed_message(domain, data), public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.RuntimeError, ValueError) as exc:
        raise BadSignature(f"{domain}: signature does not verify") from exc


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key pair with domain-separated signing and the X25519 twin for key exchange."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("Ed25519 seeds are 32 bytes")

    @cached_property
    def _nacl(self) -> nacl.signing.SigningKey:
        # Expanding the seed costs ~17 µs: once per key, not once per signature.
        return nacl.signing.SigningKey(self.seed)

    @cached_property
    def public(self) -> bytes:
        return bytes(self._nacl.verify_key)

    def sign(self, domain: str, data: bytes) -> bytes:
        return self._nacl.sign(_signed_message(domain, data)).signature

    @cached_property
    def _x25519(self) -> bytes:
        return nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(self.seed + self.public)

    def x25519_private(self) -> bytes:
        """Curve25519 private scalar matching :func:`x25519_public` of our public key."""
        return self._x25519

    @classmethod
    def generate(cls) -> Self:
        return cls(bytes(nacl.signing.SigningKey.generate()))


def x25519_public(ed25519_public: bytes) -> bytes:
    """The X25519 public key of an Ed25519 public key (for sealing and Noise static keys)."""
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public)
    except (nacl.exceptions.RuntimeError, ValueError) as exc:
        raise BadSignature("not a valid Ed25519 public key") from exc


class AccountKey(SigningKey):
    """The account identity: signs device certificates, ACL records and tree changes."""

    @property
    def id(self) -> str:
        return account_id(self.public)


class DeviceKey(SigningKey):
    """A device's own key: authenticates the device in the transport handshake."""

    @property
    def id(self) -> str:
        return peer_id(self.public)


_MNEMONIC = Mnemonic("english")


def new_recovery_phrase(words: int = 24) -> str:
    """A fresh BIP39 phrase (24 words = 256 bits of entropy by default)."""
    strength = {12: 128, 15: 160, 18: 192, 21: 224, 24: 256}.get(words)
    if strength is None:
        raise ValueError("a recovery phrase has 12, 15, 18, 21 or 24 words")
    return str(_MNEMONIC.generate(strength))


def normalize_phrase(phrase: str) -> str:
    """Lowercase, single-spaced words; raises :class:`BadRecoveryPhrase` if it does not check."""
    words = phrase.lower().split()
    norm = " ".join(words)
    unknown = [w for w in words if w not in _MNEMONIC.wordlist]
    if unknown:
        raise BadRecoveryPhrase(f"unknown word(s) in recovery phrase: {', '.join(unknown[:3])}")
    if len(words) not in (12, 15, 18, 21, 24) or not _MNEMONIC.check(norm):
        raise BadRecoveryPhrase("recovery phrase checksum does not match (a word is wrong?)")
    return norm


def _slip10_ed25519(seed: bytes, path: list[int]) -> bytes:
    digest = hmac.new(b"ed25519 seed", seed, hashlib.sha512).digest()
    key, chain = digest[:32], digest[32:]
    for index in path:
        data = b"\x00" + key + struct.pack(">I", index | _HARDENED)
        digest = hmac.new(chain, data, hashlib.sha512).digest()
        key, chain = digest[:32], digest[32:]
    return key


def account_from_phrase(phrase: str, index: int = 0) -> AccountKey:
    """Derive the account key from a BIP39 phrase (no BIP39 passphrase), SLIP-0010 path."""
    seed = _MNEMONIC.to_seed(normalize_phrase(phrase), passphrase="")
    return AccountKey(_slip10_ed25519(seed, [DERIVATION_PURPOSE, DERIVATION_COIN, index]))
