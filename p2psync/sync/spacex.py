"""Shared-space discovery between two authenticated peers that leaks nothing else (sans-IO).

Each side sends a fresh 32-byte nonce (:class:`SpaceHello`), then a token per space it holds
(:class:`SpaceTokens`)::

    token = HMAC-SHA256(K_space, "p2psync/spacex/v1" || sender_key || receiver_key
                        || sender_nonce || receiver_nonce || channel_binding)[:16]

``K_space`` is the space's *exchange key*, :func:`exchange_key` of the space's first read key
(every member can decrypt the first read key, since each rotation carries the previous key).
A replicator holds no read key: the ACL record that names it seals ``K_space`` to its device
key, so it can take part without ever being able to read content. Token lists are padded with
random 16-byte values to a fixed bucket size (16, 64, 256, 1024, 4096) and sorted, so a peer
that shares no space sees only random bytes whose count reveals only the bucket.

The sender's key comes first in the MAC, so a peer cannot reflect our own tokens back at us;
both nonces are fresh, so tokens are unlinkable across sessions. A match proves that the peer
knows ``K_space``, not that it is still a member: the engine must still check the ACL (a
removed member keeps the first read key) before serving anything.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2psync.errors import ProtocolError
from p2psync.sync.messages import (
    MAX_SPACE_ID_LEN,
    NONCE_SIZE,
    TOKEN_BUCKETS,
    TOKEN_SIZE,
    Message,
    SpaceHello,
    SpaceTokens,
    decode,
    encode,
)

_LABEL = b"p2psync/spacex/v1"
_KDF_SALT = b"p2psync space exchange key v1"
KEY_SIZE = 32
PEER_KEY_SIZE = 32


def exchange_key(first_read_key: bytes, space_id: str) -> bytes:
    """The space's exchange key: HKDF-SHA256 of its first read key, bound to the space id.

    One-way: holding it (as a replicator does) reveals nothing about any read key."""
    if len(first_read_key) != 32:
        raise ValueError("read keys are 32 bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=_KDF_SALT,
                info=space_id.encode())
    return hkdf.derive(first_read_key)


_HEADER_KDF_SALT = b"p2psync space exchange key from header v1"


def header_exchange_key(header_raw: bytes, space_id: str) -> bytes:
    """The exchange key the engine uses: HKDF-SHA256 of the full signed space header.

    Every member *and* replicator holds the header (a replicator holds no read key, so a key
    derived from a read key would shut it out). The header carries a random seed, so the key
    cannot be computed from the space id alone. Holders of the header who are no longer
    members (removed members) still match; the engine lists a space only for a peer whose
    account is a member or replicator in our ACL copy and checks the ACL on every request."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=_HEADER_KDF_SALT,
                info=space_id.encode())
    return hkdf.derive(header_raw)


def space_token(key: bytes, sender: bytes, receiver: bytes, sender_nonce: bytes,
                receiver_nonce: bytes, channel_binding: bytes = b"") -> bytes:
    """The token ``sender`` sends to ``receiver`` for the space whose exchange key is ``key``."""
    mac = hmac.new(key, _LABEL, hashlib.sha256)
    for part in (sender, receiver, sender_nonce, receiver_nonce):
        mac.update(part)
    mac.update(channel_binding)
    return mac.digest()[:TOKEN_SIZE]


def padded_size(n: int) -> int:
    """The bucket a list of ``n`` real tokens is padded to."""
    for bucket in TOKEN_BUCKETS:
        if n <= bucket:
            return bucket
    raise ProtocolError(f"{n} spaces exceed one exchange (max {TOKEN_BUCKETS[-1]})")


class SpaceExchange:
    """One side of a space exchange with one authenticated peer.

    ``start()`` → send the hello; feed every message from the peer to ``receive()`` and send
    what it returns; when ``done``, ``shared`` holds the space ids both sides hold.
    """

    def __init__(self, local_peer: bytes, remote_peer: bytes, space_keys: Mapping[str, bytes],
                 *, channel_binding: bytes = b"",
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if len(local_peer) != PEER_KEY_SIZE or len(remote_peer) != PEER_KEY_SIZE:
            raise ValueError("peer keys are 32 bytes")
        if local_peer == remote_peer:
            raise ProtocolError("space exchange with ourselves")
        for space_id, key in space_keys.items():
            if len(key) != KEY_SIZE or not 0 < len(space_id) <= MAX_SPACE_ID_LEN:
                raise ValueError(f"bad exchange key or space id for {space_id!r}")
        padded_size(len(space_keys))  # refuse too many spaces up front
        self.local_peer = local_peer
        self.remote_peer = remote_peer
        self._keys = dict(space_keys)
        self._binding = channel_binding
        self._random = random_bytes
        self._nonce: bytes | None = None
        self._remote_nonce: bytes | None = None
        self._sent_tokens = False
        self.shared: frozenset[str] | None = None

    @property
    def done(self) -> bool:
        return self.shared is not None

    def start(self) -> SpaceHello:
        """Our hello with a fresh nonce; call once, before anything is received."""
        if self._nonce is not None:
            raise ProtocolError("space exchange already started")
        self._nonce = self._random(NONCE_SIZE)
        return SpaceHello(self._nonce)

    def receive(self, message: Message) -> list[Message]:
        """Take one message from the peer; returns the messages to send back."""
        if self._nonce is None:
            raise ProtocolError("space exchange not started")
        if isinstance(message, SpaceHello):
            if self._remote_nonce is not None:
                raise ProtocolError("second space hello from the peer")
            if message.nonce == self._nonce:
                raise ProtocolError("peer echoed our nonce")
            self._remote_nonce = message.nonce
            self._sent_tokens = True
            return [self._our_tokens()]
        if isinstance(message, SpaceTokens):
            if self._remote_nonce is None:
                raise ProtocolError("space tokens before the peer's hello")
            if self.shared is not None:
                raise ProtocolError("second token list from the peer")
            expected = {
                space_token(key, self.remote_peer, self.local_peer, self._remote_nonce,
                            self._nonce, self._binding): space_id
                for space_id, key in self._keys.items()
            }
            self.shared = frozenset(expected[t] for t in message.tokens if t in expected)
            return []
        raise ProtocolError(f"unexpected {type(message).__name__} during space exchange")

    def _our_tokens(self) -> SpaceTokens:
        assert self._nonce is not None and self._remote_nonce is not None
        tokens = [
            space_token(key, self.local_peer, self.remote_peer, self._nonce,
                        self._remote_nonce, self._binding)
            for key in self._keys.values()
        ]
        pad = padded_size(len(tokens)) - len(tokens)
        tokens.extend(self._random(TOKEN_SIZE) for _ in range(pad))
        tokens.sort()  # order by value: as good as a shuffle for random-looking tokens
        return SpaceTokens(tuple(tokens))


@dataclass
class ExchangeTranscript:
    """What an in-memory exchange produced: each side's result and the raw bytes it received."""

    shared_a: frozenset[str]
    shared_b: frozenset[str]
    received_by_a: list[bytes]
    received_by_b: list[bytes]


def run_exchange(a: SpaceExchange, b: SpaceExchange) -> ExchangeTranscript:
    """Drive two :class:`SpaceExchange` sides against each other through encode/decode."""
    to_b = [encode(a.start())]
    to_a = [encode(b.start())]
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    while to_a or to_b:
        if to_b:
            raw = to_b.pop(0)
            got_b.append(raw)
            to_a.extend(encode(m) for m in b.receive(decode(raw).message))
        if to_a:
            raw = to_a.pop(0)
            got_a.append(raw)
            to_b.extend(encode(m) for m in a.receive(decode(raw).message))
    if a.shared is None or b.shared is None:
        raise ProtocolError("space exchange did not finish")
    return ExchangeTranscript(a.shared, b.shared, got_a, got_b)
