"""Sans-IO authenticated handshake: Noise XX whose payloads carry a :class:`Hello`.

Message 1 (initiator → responder) is a bare ephemeral key: it is sent before any encryption, so
it carries nothing. Message 2 carries the responder's Hello (encrypted, after ``ee``/``es``) and
message 3 the initiator's Hello.

Deferred certificate (issue 12.6): a responder built with ``defer_certificate=True`` sends its
Hello in message 2 *without* its certificate (which names its account): the initiator then
knows only the responder's device key — what mDNS already advertises — and checks it against
``expected_peer`` before revealing itself in message 3. The responder's certificate travels
later, in the ACCEPT record, and only if the responder's policy accepts the authenticated
initiator (see ``transport/connection.py``); :meth:`SecureHandshake.check_deferred_certificate`
verifies it there. Each side checks the other's certificate, that the certificate's
device key is the one the Noise static key proved, the expected peer id and the protocol version,
and raises a :class:`~p2psync.errors.HandshakeError` subclass whose message a user can act on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from p2psync import PROTOCOL_VERSION
from p2psync.codec import Reader, pack, unpack
from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.ids import decode_key
from p2psync.crypto.keys import DeviceKey, x25519_public
from p2psync.errors import (
    BadCertificate,
    BadId,
    BadSignature,
    DecodeError,
    HandshakeError,
    IncompatibleVersion,
    PeerCertificateInvalid,
    UnexpectedPeer,
)
from p2psync.transport.noise import CipherState, HandshakeState, KeyPair, Suite

log = logging.getLogger(__name__)

#: Oldest wire protocol this build can still talk.
MIN_PROTOCOL_VERSION = 1
HELLO_FORMAT = 1
MAX_HELLO_SIZE = 2048
MAX_FEATURES = 32
#: Domain separation for everything derived from the Noise chaining key.
PROLOGUE_PREFIX = b"p2psync/noise/1\x00"


@dataclass(frozen=True)
class Limits:
    """What a side accepts from its peer; announced in the Hello so the sender can respect it."""

    max_streams: int = 64  #: concurrent streams the peer may open to us
    stream_window: int = 1 << 20  #: bytes of unconsumed message data per stream (credit)
    max_message: int = 1 << 20  #: largest message the peer may send on a stream

    def __post_init__(self) -> None:
        if not 1 <= self.max_streams <= 1 << 16:
            raise ValueError("max_streams must be within 1..65536")
        if not 1024 <= self.max_message <= self.stream_window <= 1 << 30:
            raise ValueError("need 1 KiB <= max_message <= stream_window <= 1 GiB "
                             "(a whole message must fit in the window)")


@dataclass(frozen=True)
class Hello:
    """Handshake payload: ``pack([1, max_version, min_version, certificate, features,
    max_streams, stream_window, max_message])``."""

    max_version: int
    min_version: int
    certificate: bytes
    features: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)

    def encode(self) -> bytes:
        lim = self.limits
        return pack([HELLO_FORMAT, self.max_version, self.min_version, self.certificate,
                     list(self.features), lim.max_streams, lim.stream_window, lim.max_message])

    @classmethod
    def decode(cls, raw: bytes) -> Hello:
        """Parse a peer's Hello strictly; any defect is a :class:`HandshakeError`."""
        try:
            r = Reader(unpack(raw, max_size=MAX_HELLO_SIZE, what="handshake hello"),
                       "handshake hello")
            r.version([HELLO_FORMAT])
            max_v = r.integer("max_version", min_value=0, max_value=2**32)
            min_v = r.integer("min_version", min_value=0, max_value=max_v)
            cert = r.blob("certificate", max_len=1024)
            feats = r.array("features", max_items=MAX_FEATURES)
            if not all(isinstance(f, str) and 0 < len(f) <= 64 for f in feats):
                raise DecodeError("handshake hello.features: expected short strings")
            limits = Limits(r.integer("max_streams", min_value=1, max_value=1 << 16),
                            r.integer("stream_window", min_value=1024, max_value=1 << 30),
                            r.integer("max_message", min_value=1024, max_value=1 << 30))
            r.end()
        except (DecodeError, ValueError) as exc:
            raise HandshakeError(f"peer sent a malformed handshake payload: {exc}") from exc
        return cls(max_v, min_v, cert, tuple(feats), limits)


@dataclass(frozen=True)
class HandshakeResult:
    """The authenticated outcome: who the peer is and the keys of the session."""

    #: None only on an initiator whose responder deferred it (until ACCEPT brings it).
    certificate: DeviceCertificate | None
    version: int
    features: frozenset[str]
    remote_limits: Limits
    send_cipher: CipherState
    recv_cipher: CipherState
    handshake_hash: bytes
    #: Secret for per-stream keys (third HKDF output of the final chaining key).
    stream_secret: bytes

    def require_certificate(self) -> DeviceCertificate:
        if self.certificate is None:
            raise HandshakeError("the peer's certificate has not been received")
        return self.certificate

    @property
    def peer_id(self) -> str:
        return self.require_certificate().peer_id

    @property
    def account_id(self) -> str:
        return self.require_certificate().account_id


def negotiate_version(local: Hello, remote: Hello) -> int:
    """The highest version both speak, or :class:`IncompatibleVersion` saying who must upgrade."""
    version = min(local.max_version, remote.max_version)
    if version < max(local.min_version, remote.min_version):
        older = "the peer" if remote.max_version < local.min_version else "this device"
        raise IncompatibleVersion(
            f"peer speaks protocol versions {remote.min_version}..{remote.max_version}, this "
            f"device {local.min_version}..{local.max_version}: update p2psync on {older}")
    return version


class SecureHandshake:
    """Drives Noise XX with Hello payloads; feed it peer messages, send what it returns."""

    def __init__(
        self, *, initiator: bool, device_key: DeviceKey, certificate: DeviceCertificate,
        binding: bytes = b"", expected_peer: str | None = None, limits: Limits | None = None,
        features: tuple[str, ...] = (), max_version: int = PROTOCOL_VERSION,
        min_version: int = MIN_PROTOCOL_VERSION, suite: Suite | None = None,
        defer_certificate: bool = False, ephemeral: KeyPair | None = None,
    ) -> None:
        if certificate.device != device_key.public:
            raise ValueError("certificate is for another device key than the one given")
        self.initiator = initiator
        self.expected_peer = expected_peer
        self.certificate = certificate
        self.hello = Hello(max_version, min_version, certificate.raw, features,
                           limits or Limits())
        #: Responder: message 2 goes without the certificate. Initiator: set when the
        #: responder deferred (its certificate must come with ACCEPT).
        self.deferred = defer_certificate and not initiator
        static = KeyPair.from_private(device_key.x25519_private())
        # ``ephemeral`` is fixed only by the golden vectors (scripts/gen_vectors.py); by
        # default Noise generates a fresh one per handshake.
        self._noise = HandshakeState(initiator=initiator, static=static,
                                     prologue=PROLOGUE_PREFIX + binding,
                                     suite=suite or Suite(), ephemeral=ephemeral)
        self.result: HandshakeResult | None = None
        self._remote_hello: Hello | None = None
        self._remote_cert: DeviceCertificate | None = None

    @property
    def complete(self) -> bool:
        return self.result is not None

    def start(self) -> bytes:
        """Initiator only: the first message (the bare ephemeral key)."""
        if not self.initiator:
            raise HandshakeError("responder cannot start the handshake")
        return self._noise.write_message(b"")

    def receive(self, message: bytes) -> bytes | None:
        """Process a peer message; return our next message, or None when nothing is owed."""
        payload = self._noise.read_message(message)
        step = self._noise._step
        if step == 1:  # responder read message 1
            if payload:
                raise HandshakeError("first handshake message must carry no payload")
            hello = self.hello
            if self.deferred:
                hello = Hello(hello.max_version, hello.min_version, b"", hello.features,
                              hello.limits)
            return self._noise.write_message(hello.encode())
        self._check_peer(payload)
        if step == 2:  # initiator read message 2
            out = self._noise.write_message(self.hello.encode())
            self._finish()
            return out
        self._finish()  # responder read message 3
        return None

    def _check_peer(self, payload: bytes) -> None:
        hello = Hello.decode(payload)
        if not hello.certificate and self.initiator:  # responder deferred its certificate
            self._check_expected_static()
            negotiate_version(self.hello, hello)
            self.deferred = True
            self._remote_hello = hello
            return
        self._remote_cert = self._verify_certificate(hello.certificate)
        negotiate_version(self.hello, hello)
        self._remote_hello = hello

    def _check_expected_static(self) -> None:
        """Deferred: all we know is the Noise static key; it must be ``expected_peer``'s."""
        if self.expected_peer is None:
            return
        try:
            device = decode_key("p", self.expected_peer)
            static = x25519_public(device)
        except (BadId, BadSignature) as exc:
            raise UnexpectedPeer(f"expected peer id {self.expected_peer!r} is invalid") from exc
        if static != self._noise.remote_static:
            raise UnexpectedPeer(
                f"expected device {self.expected_peer} but reached another device key; "
                "the address may belong to another device now")

    def check_deferred_certificate(self, raw: bytes) -> DeviceCertificate:
        """Initiator: verify the certificate a deferring responder sent with ACCEPT."""
        if not raw:
            raise PeerCertificateInvalid("peer accepted without sending its certificate")
        cert = self._verify_certificate(raw)
        self._remote_cert = cert
        return cert

    def _verify_certificate(self, raw: bytes) -> DeviceCertificate:
        try:
            cert = DeviceCertificate.verify(raw)
        except BadCertificate as exc:
            raise PeerCertificateInvalid(f"peer's device certificate was refused: {exc}") \
                from exc
        try:
            cert_static = x25519_public(cert.device)
        except BadSignature as exc:
            raise PeerCertificateInvalid("peer's certificate names an invalid device key") \
                from exc
        if cert_static != self._noise.remote_static:
            raise PeerCertificateInvalid(
                f"peer presented the certificate of {cert.peer_id} but does not hold that "
                "device key (copied certificate or impersonation attempt)")
        if self.expected_peer is not None and cert.peer_id != self.expected_peer:
            raise UnexpectedPeer(
                f"expected device {self.expected_peer} but reached {cert.peer_id} "
                f"(account {cert.account_id}); the address may belong to another device now")
        return cert

    def _finish(self) -> None:
        n = self._noise
        assert n.complete and n.send_cipher and n.recv_cipher
        assert self._remote_hello is not None
        assert self._remote_cert is not None or (self.initiator and self.deferred)
        _, _, extra = n.ss.hkdf(b"", 3)
        self.result = HandshakeResult(
            certificate=self._remote_cert,
            version=negotiate_version(self.hello, self._remote_hello),
            features=frozenset(self.hello.features) & frozenset(self._remote_hello.features),
            remote_limits=self._remote_hello.limits,
            send_cipher=n.send_cipher, recv_cipher=n.recv_cipher,
            handshake_hash=n.handshake_hash,
            stream_secret=hashlib.blake2b(extra, digest_size=32,
                                          person=b"p2psync-streams").digest(),
        )
        log.debug("handshake complete", extra={
            "peer": self._remote_cert.peer_id if self._remote_cert else "(deferred)"})
