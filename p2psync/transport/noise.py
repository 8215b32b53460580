"""Sans-IO Noise XX (revision 34 of the Noise Protocol Framework spec).

p2psync speaks ``Noise_XX_25519_ChaChaPoly_BLAKE2b``; the other 25519 suites (AESGCM, SHA256,
SHA512, BLAKE2s) are implemented too so the published test vectors can check every code path.
Primitives: X25519 from pynacl, AEADs from ``cryptography`` (objects built once per key and
reused), hashes from :mod:`hashlib`. The objects here never touch a socket: they turn bytes into
bytes and raise :class:`~p2psync.errors.HandshakeError` / :class:`~p2psync.errors.FrameError`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from p2psync.errors import FrameError, HandshakeError

#: Largest Noise message (handshake or transport), ciphertext included (spec section 3).
MAX_MESSAGE_LEN = 65535
TAG_LEN = 16
DH_LEN = 32
#: The suite p2psync uses on the wire.
PROTOCOL_NAME = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
_MAX_NONCE = 2**64 - 1

_HASHES: dict[str, tuple[Callable[..., Any], int, int]] = {
    # name: (constructor, HASHLEN, BLOCKLEN)
    "BLAKE2b": (hashlib.blake2b, 64, 128),
    "BLAKE2s": (hashlib.blake2s, 32, 64),
    "SHA256": (hashlib.sha256, 32, 64),
    "SHA512": (hashlib.sha512, 64, 128),
}
_CIPHERS = ("ChaChaPoly", "AESGCM")


@dataclass(frozen=True)
class Suite:
    """A parsed ``Noise_XX_25519_<cipher>_<hash>`` protocol name."""

    cipher: str = "ChaChaPoly"
    hash: str = "BLAKE2b"

    @property
    def name(self) -> str:
        return f"Noise_XX_25519_{self.cipher}_{self.hash}"

    @classmethod
    def parse(cls, name: str) -> Suite:
        parts = name.split("_")
        if (len(parts) != 5 or parts[0] != "Noise" or parts[1] != "XX" or parts[2] != "25519"
                or parts[3] not in _CIPHERS or parts[4] not in _HASHES):
            raise ValueError(f"unsupported Noise protocol {name!r} (only XX over 25519)")
        return cls(parts[3], parts[4])


DEFAULT_SUITE = Suite()


# --- DH --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair."""

    private: bytes
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != DH_LEN:
            raise ValueError("X25519 private keys are 32 bytes")
        return cls(private, nacl.bindings.crypto_scalarmult_base(private))

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_private(os.urandom(DH_LEN))


def dh(private: bytes, public: bytes) -> bytes:
    """X25519; a low-order peer key (all-zero output) is refused as a handshake error."""
    try:
        return nacl.bindings.crypto_scalarmult(private, public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, ValueError) as exc:
        raise HandshakeError("peer sent an invalid X25519 public key") from exc


# --- CipherState -----------------------------------------------------------------------------
class CipherState:
    """Noise CipherState: one AEAD key and a strictly increasing 64-bit nonce."""

    __slots__ = ("_aead", "_chacha", "k", "n")

    def __init__(self, k: bytes | None = None, cipher: str = "ChaChaPoly") -> None:
        self._chacha = cipher == "ChaChaPoly"
        self.n = 0
        self.k: bytes | None = None
        self._aead: ChaCha20Poly1305 | AESGCM | None = None
        if k is not None:
            self.initialize_key(k)

    def initialize_key(self, k: bytes) -> None:
        self.k = k
        self.n = 0
        self._aead = ChaCha20Poly1305(k) if self._chacha else AESGCM(k)

    def has_key(self) -> bool:
        return self.k is not None

    def _nonce(self) -> bytes:
        if self.n >= _MAX_NONCE:
            raise FrameError("Noise nonce space exhausted; the session must be re-established")
        if self._chacha:
            return b"\x00\x00\x00\x00" + struct.pack("<Q", self.n)
        return b"\x00\x00\x00\x00" + struct.pack(">Q", self.n)

    def encrypt_with_ad(self, ad: bytes | None, plaintext: bytes) -> bytes:
        if self._aead is None:
            return bytes(plaintext)
        out = self._aead.encrypt(self._nonce(), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes | None, ciphertext: bytes) -> bytes:
        """Decrypt; the nonce advances only on success, so a failed frame cannot desync us."""
        if self._aead is None:
            return bytes(ciphertext)
        try:
            out = self._aead.decrypt(self._nonce(), ciphertext, ad)
        except InvalidTag as exc:
            raise FrameError("frame failed authentication (tampered, replayed or reordered)") \
                from exc
        self.n += 1
        return out

    def rekey(self) -> None:
        """Noise REKEY(k) = first 32 bytes of ENCRYPT(k, maxnonce, zerolen, zeros)."""
        assert self._aead is not None and self.k is not None
        if self._chacha:
            nonce = b"\x00\x00\x00\x00" + struct.pack("<Q", _MAX_NONCE)
        else:
            nonce = b"\x00\x00\x00\x00" + struct.pack(">Q", _MAX_NONCE)
        n = self.n
        self.initialize_key(self._aead.encrypt(nonce, bytes(32), b"")[:32])
        self.n = n


# --- SymmetricState --------------------------------------------------------------------------
class SymmetricState:
    """Noise SymmetricState: chaining key ``ck``, handshake hash ``h`` and a CipherState."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self._hash, self.hashlen, _ = _HASHES[suite.hash]
        name = suite.name.encode()
        if len(name) <= self.hashlen:
            self.h = name + bytes(self.hashlen - len(name))
        else:
            self.h = self._hash(name).digest()
        self.ck = self.h
        self.cipher = CipherState(cipher=suite.cipher)

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self._hash).digest()

    def hkdf(self, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
        temp = self._hmac(self.ck, ikm)
        out1 = self._hmac(temp, b"\x01")
        out2 = self._hmac(temp, out1 + b"\x02")
        if outputs == 2:
            return out1, out2
        return out1, out2, self._hmac(temp, out2 + b"\x03")

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self.hkdf(ikm, 2)
        self.cipher.initialize_key(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self.h = self._hash(self.h + data).digest()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ct = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        try:
            pt = self.cipher.decrypt_with_ad(self.h, ciphertext)
        except FrameError as exc:
            raise HandshakeError(
                "handshake message failed authentication: replayed, relayed from another "
                "connection, or tampered") from exc
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = self.hkdf(b"", 2)
        return (CipherState(k1[:32], self.suite.cipher), CipherState(k2[:32], self.suite.cipher))


# --- HandshakeState (XX only) ----------------------------------------------------------------
#: XX: -> e ; <- e, ee, s, es ; -> s, se
_XX = (("e",), ("e", "ee", "s", "es"), ("s", "se"))


class HandshakeState:
    """Noise XX HandshakeState; call :meth:`write_message` / :meth:`read_message` in turn.

    After the third message :attr:`complete` is true and :attr:`send_cipher`,
    :attr:`recv_cipher`, :attr:`remote_static` and :attr:`handshake_hash` are set. Messages are
    accepted only in pattern order: a replayed or out-of-turn message raises HandshakeError.
    """

    def __init__(
        self, *, initiator: bool, static: KeyPair, prologue: bytes = b"",
        suite: Suite = DEFAULT_SUITE, ephemeral: KeyPair | None = None,
    ) -> None:
        self.initiator = initiator
        self.ss = SymmetricState(suite)
        self.ss.mix_hash(prologue)
        self.s = static
        self.e = ephemeral
        self.re: bytes | None = None
        self.rs: bytes | None = None
        self._step = 0
        self.send_cipher: CipherState | None = None
        self.recv_cipher: CipherState | None = None
        self.handshake_hash = b""

    @property
    def complete(self) -> bool:
        return self._step >= len(_XX)

    @property
    def remote_static(self) -> bytes | None:
        return self.rs

    def _my_turn(self) -> bool:
        return (self._step % 2 == 0) == self.initiator

    def _dh(self, token: str) -> bytes:
        assert self.e is not None and self.re is not None
        if token == "ee":
            return dh(self.e.private, self.re)
        # es: initiator's e with responder's s; se: initiator's s with responder's e.
        if (token == "es") == self.initiator:
            assert self.rs is not None
            return dh(self.e.private, self.rs)
        return dh(self.s.private, self.re)

    def write_message(self, payload: bytes = b"") -> bytes:
        if self.complete or not self._my_turn():
            raise HandshakeError("handshake message written out of turn")
        out = bytearray()
        for token in _XX[self._step]:
            if token == "e":
                if self.e is None:
                    self.e = KeyPair.generate()
                out += self.e.public
                self.ss.mix_hash(self.e.public)
            elif token == "s":
                out += self.ss.encrypt_and_hash(self.s.public)
            else:
                self.ss.mix_key(self._dh(token))
        out += self.ss.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE_LEN:
            raise HandshakeError("handshake payload too large for one Noise message")
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        if self.complete or self._my_turn():
            raise HandshakeError("unexpected handshake message (replayed or out of order)")
        if len(message) > MAX_MESSAGE_LEN:
            raise HandshakeError("handshake message longer than the Noise limit")
        pos = 0
        has_key = self.ss.cipher.has_key
        for token in _XX[self._step]:
            if token == "e":
                if len(message) - pos < DH_LEN:
                    raise HandshakeError("handshake message truncated (ephemeral key)")
                self.re = bytes(message[pos:pos + DH_LEN])
                pos += DH_LEN
                self.ss.mix_hash(self.re)
            elif token == "s":
                n = DH_LEN + (TAG_LEN if has_key() else 0)
                if len(message) - pos < n:
                    raise HandshakeError("handshake message truncated (static key)")
                self.rs = self.ss.decrypt_and_hash(bytes(message[pos:pos + n]))
                pos += n
            else:
                self.ss.mix_key(self._dh(token))
        rest = bytes(message[pos:])
        if has_key() and len(rest) < TAG_LEN:
            raise HandshakeError("handshake message truncated (payload tag)")
        payload = self.ss.decrypt_and_hash(rest)
        self._advance()
        return payload

    def _advance(self) -> None:
        self._step += 1
        if self.complete:
            c1, c2 = self.ss.split()
            self.send_cipher, self.recv_cipher = (c1, c2) if self.initiator else (c2, c1)
            self.handshake_hash = self.ss.h
