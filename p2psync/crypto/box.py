"""Sealed boxes to a member's account key, and symmetric read keys.

* :func:`seal` / :func:`unseal`: anonymous-sender public-key encryption (libsodium sealed box)
  to the X25519 twin of a member's Ed25519 account key. Used to hand read keys to members.
* :class:`ReadKey`: a 32-byte symmetric key; :meth:`ReadKey.encrypt` is XChaCha20-Poly1305 with
  a random 24-byte nonce (safe to pick at random) and associated data binding the ciphertext to
  its context (e.g. tree id + change header), so ciphertext cannot be moved between changes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.public

from p2psync.crypto.keys import SigningKey, x25519_public
from p2psync.errors import DecryptionFailed

NONCE_SIZE = 24
TAG_SIZE = 16

#: Source of every random byte this module uses (read keys, AEAD nonces, sealed-box ephemeral
#: keys). A seam for the golden vectors (scripts/gen_vectors.py swaps in a seeded generator);
#: nothing else may replace it.
random_bytes: Callable[[int], bytes] = os.urandom


def seal(plaintext: bytes, recipient_ed25519_public: bytes) -> bytes:
    """Encrypt ``plaintext`` so only the holder of that account key can read it."""
    recipient = x25519_public(recipient_ed25519_public)
    if random_bytes is os.urandom:  # the normal path: libsodium picks the ephemeral key
        return bytes(nacl.public.SealedBox(nacl.public.PublicKey(recipient)).encrypt(plaintext))
    return _seal_with(random_bytes(32), plaintext, recipient)


def _seal_with(ephemeral_private: bytes, plaintext: bytes, recipient: bytes) -> bytes:
    """libsodium's ``crypto_box_seal`` with a given ephemeral key (vectors only):
    ``epk || crypto_box(m, nonce = BLAKE2b-192(epk || pk), pk, esk)``; opened by :func:`unseal`."""
    epk = nacl.bindings.crypto_scalarmult_base(ephemeral_private)
    nonce = hashlib.blake2b(epk + recipient, digest_size=24).digest()
    return epk + nacl.bindings.crypto_box(plaintext, nonce, recipient, ephemeral_private)


def unseal(ciphertext: bytes, key: SigningKey) -> bytes:
    """Open a :func:`seal`-ed box with our account key; :class:`DecryptionFailed` if not ours."""
    box = nacl.public.SealedBox(nacl.public.PrivateKey(key.x25519_private()))
    try:
        return bytes(box.decrypt(ciphertext))
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptionFailed("sealed box is not for this key or was tampered with") from exc


@dataclass(frozen=True)
class ReadKey:
    """A symmetric key that encrypts change payloads of a space."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError("read keys are 32 bytes")

    @classmethod
    def generate(cls) -> ReadKey:
        return cls(random_bytes(32))

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        nonce = random_bytes(NONCE_SIZE)
        ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, aad, nonce, self.key
        )
        return nonce + ct

    def decrypt(self, ciphertext: bytes, aad: bytes = b"") -> bytes:
        if len(ciphertext) < NONCE_SIZE + TAG_SIZE:
            raise DecryptionFailed("ciphertext too short")
        try:
            return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                ciphertext[NONCE_SIZE:], aad, ciphertext[:NONCE_SIZE], self.key
            )
        except (nacl.exceptions.CryptoError, ValueError) as exc:
            raise DecryptionFailed("payload does not decrypt under this read key") from exc
