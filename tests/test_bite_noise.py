"""Secure handshake and Noise details that mutation testing found unguarded at unit level
(docs/testing.md): the channel binding reaches the Noise prologue; the result carries the
negotiated version, features and the peer's limits; truncated messages, size and nonce limits,
nonce encoding and HKDF follow the Noise spec."""

from __future__ import annotations

import hashlib
import hmac
import logging

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from p2psync.codec import pack, unpack
from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import FrameError, HandshakeError
from p2psync.transport.handshake import MAX_FEATURES, Hello, Limits, SecureHandshake
from p2psync.transport.noise import (
    _MAX_NONCE,
    DH_LEN,
    MAX_MESSAGE_LEN,
    CipherState,
    HandshakeState,
    KeyPair,
    Suite,
    SymmetricState,
)


def identity() -> tuple[DeviceKey, DeviceCertificate]:
    dev = DeviceKey.generate()
    return dev, DeviceCertificate.issue(AccountKey.generate(), dev)


def run(i: SecureHandshake, r: SecureHandshake) -> None:
    m2 = r.receive(i.start())
    assert m2 is not None
    m3 = i.receive(m2)
    assert m3 is not None
    r.receive(m3)


@pytest.mark.parametrize(("bind_i", "bind_r"), [(b"conn-1", b"conn-2"), (b"conn-1", b""),
                                                (b"", b"conn-2")])
def test_handshake_is_bound_to_the_channel(bind_i: bytes, bind_r: bytes) -> None:
    """A handshake relayed onto another connection (another binding) cannot complete."""
    (d1, c1), (d2, c2) = identity(), identity()
    i = SecureHandshake(initiator=True, device_key=d1, certificate=c1, binding=bind_i)
    r = SecureHandshake(initiator=False, device_key=d2, certificate=c2, binding=bind_r)
    with pytest.raises(HandshakeError):
        run(i, r)
    assert i.result is None and r.result is None


def test_same_binding_completes_with_negotiated_result() -> None:
    (d1, c1), (d2, c2) = identity(), identity()
    li, lr = Limits(max_streams=3), Limits(max_streams=5, stream_window=1 << 21)
    i = SecureHandshake(initiator=True, device_key=d1, certificate=c1, binding=b"conn-1",
                        limits=li, features=("a", "b"))
    r = SecureHandshake(initiator=False, device_key=d2, certificate=c2, binding=b"conn-1",
                        limits=lr, features=("b", "c"))
    run(i, r)
    assert i.result is not None and r.result is not None
    assert i.result.remote_limits == lr and r.result.remote_limits == li
    assert i.result.features == r.result.features == frozenset({"b"})
    assert i.result.version == r.result.version == i.hello.max_version
    assert i.result.handshake_hash == r.result.handshake_hash
    assert i.result.stream_secret == r.result.stream_secret != i.result.handshake_hash
    assert i.result.peer_id == d2.id and r.result.peer_id == d1.id
    assert len(i.result.handshake_hash) == 64 and len(i.result.stream_secret) == 32
    for a, b in ((i.result, r.result), (r.result, i.result)):  # the transport ciphers pair up
        assert b.recv_cipher.decrypt_with_ad(b"", a.send_cipher.encrypt_with_ad(b"", b"m")) \
            == b"m"
    # a second session between the same devices derives different secrets
    i2 = SecureHandshake(initiator=True, device_key=d1, certificate=c1, binding=b"conn-1")
    r2 = SecureHandshake(initiator=False, device_key=d2, certificate=c2, binding=b"conn-1")
    run(i2, r2)
    assert i2.result is not None and i2.result.stream_secret != i.result.stream_secret
    assert i2.result.handshake_hash != i.result.handshake_hash


# --- Noise core (p2psync/transport/noise.py) -------------------------------------------------
S_I, S_R = KeyPair.from_private(b"\x01" * 32), KeyPair.from_private(b"\x02" * 32)
E_I, E_R = KeyPair.from_private(b"\x03" * 32), KeyPair.from_private(b"\x04" * 32)


def pair() -> tuple[HandshakeState, HandshakeState]:
    """A deterministic pair (fixed ephemerals): the same messages every time."""
    return (HandshakeState(initiator=True, static=S_I, ephemeral=E_I, prologue=b"p"),
            HandshakeState(initiator=False, static=S_R, ephemeral=E_R, prologue=b"p"))


def messages() -> list[bytes]:
    i, r = pair()
    m1 = i.write_message(b"")
    r.read_message(m1)
    m2 = r.write_message(b"two")
    i.read_message(m2)
    return [m1, m2, i.write_message(b"three")]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_every_truncated_handshake_message_is_a_handshake_error(which: int) -> None:
    full = messages()
    for cut in range(len(full[which])):
        i, r = pair()
        steps = [(i, r), (r, i), (i, r)]
        for k in range(which):  # replay the good messages before the truncated one
            sender, receiver = steps[k]
            assert sender.write_message(b"" if k == 0 else b"two") == full[k]
            receiver.read_message(full[k])
        sender, receiver = steps[which]
        sender.write_message(b"" if which == 0 else (b"two" if which == 1 else b"three"))
        with pytest.raises(HandshakeError):
            receiver.read_message(full[which][:cut])


def test_an_empty_encrypted_payload_is_accepted() -> None:
    i, r = pair()
    r.read_message(i.write_message(b""))
    assert i.read_message(r.write_message(b"")) == b""  # just the 16-byte tag after the keys
    assert r.read_message(i.write_message(b"")) == b""


def test_handshake_message_size_limit_is_inclusive() -> None:
    i, r = pair()
    m1 = i.write_message(b"x" * (MAX_MESSAGE_LEN - DH_LEN))
    assert len(m1) == MAX_MESSAGE_LEN
    assert r.read_message(m1) == b"x" * (MAX_MESSAGE_LEN - DH_LEN)
    with pytest.raises(HandshakeError):
        pair()[0].write_message(b"x" * (MAX_MESSAGE_LEN - DH_LEN + 1))
    with pytest.raises(HandshakeError):
        pair()[1].read_message(m1 + b"x")


def test_last_nonce_is_reserved() -> None:
    c = CipherState(bytes(32))
    c.n = _MAX_NONCE - 1
    c.encrypt_with_ad(b"", b"last one")
    assert c.n == _MAX_NONCE
    with pytest.raises(FrameError, match="exhausted"):
        c.encrypt_with_ad(b"", b"one too many")


@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
def test_transport_nonce_encoding_matches_the_noise_spec(cipher: str) -> None:
    """ChaChaPoly: 4 zero bytes + little-endian counter; AESGCM: big-endian (Noise §5.1)."""
    key = bytes(range(32))
    c = CipherState(key, cipher)
    for n in (0, 1, 258):
        c.n = n
        order = "little" if cipher == "ChaChaPoly" else "big"
        nonce = bytes(4) + n.to_bytes(8, order)
        aead = ChaCha20Poly1305(key) if cipher == "ChaChaPoly" else AESGCM(key)
        assert c.encrypt_with_ad(b"ad", b"msg") == aead.encrypt(nonce, b"msg", b"ad")


def test_hkdf_matches_the_noise_spec() -> None:
    ss = SymmetricState(Suite())

    def mac(k: bytes, d: bytes) -> bytes:
        return hmac.new(k, d, hashlib.blake2b).digest()

    temp = mac(ss.ck, b"ikm")
    o1 = mac(temp, b"\x01")
    o2 = mac(temp, o1 + b"\x02")
    assert ss.hkdf(b"ikm", 3) == (o1, o2, mac(temp, o2 + b"\x03"))
    assert ss.hkdf(b"ikm", 2) == (o1, o2)


# --- round 5: the handshake's decorated code, which mutmut does not mutate -------------------
# (``Hello.decode``, ``Limits``, ``Suite.parse``, ``KeyPair.from_private``,
# ``HandshakeResult.require_certificate``): hand-made mutants of each survived the suite.
CERT_1 = identity()[1]


def hello(**over: object) -> bytes:
    good: dict[str, object] = dict(
        v=1, max_v=3, min_v=1, cert=CERT_1.raw, features=["a"], max_streams=64,
        window=1 << 20, message=1 << 20)
    good.update(over)
    return pack(list(good.values()))


@pytest.mark.parametrize("over", [
    {}, {"max_v": 2**32, "min_v": 2**32}, {"max_v": 0, "min_v": 0}, {"cert": b""},
    {"cert": b"c" * 1024}, {"features": []}, {"features": [f"f{i}" for i in range(MAX_FEATURES)]},
    {"features": ["x" * 64]}, {"max_streams": 1}, {"max_streams": 1 << 16},
    {"window": 1024, "message": 1024}, {"window": 1 << 30, "message": 1 << 30},
])
def test_hello_decode_accepts_every_field_at_its_bounds(over: dict[str, object]) -> None:
    raw = hello(**over)
    h = Hello.decode(raw)
    v = dict(dict(v=1, max_v=3, min_v=1, cert=CERT_1.raw, features=["a"], max_streams=64,
                  window=1 << 20, message=1 << 20), **over)
    assert (h.max_version, h.min_version, h.certificate, list(h.features)) \
        == (v["max_v"], v["min_v"], v["cert"], v["features"])
    assert h.limits == Limits(v["max_streams"], v["window"], v["message"])  # type: ignore[arg-type]
    assert Hello.decode(h.encode()) == h


@pytest.mark.parametrize("over", [
    {"v": 2}, {"max_v": 2**32 + 1}, {"max_v": -1}, {"min_v": -1}, {"min_v": 4},
    {"cert": b"c" * 1025}, {"features": [f"f{i}" for i in range(MAX_FEATURES + 1)]},
    {"features": [""]}, {"features": ["x" * 65]}, {"features": [1]}, {"features": [b"a"]},
    {"max_streams": 0}, {"max_streams": (1 << 16) + 1}, {"window": 1023, "message": 1023},
    {"window": (1 << 30) + 1}, {"message": (1 << 30) + 1}, {"message": 1023},
    {"window": 4096, "message": 8192},  # a message bigger than the window: ValueError inside
    {"features": ["f" * 60] * 31},  # every field valid, but the whole Hello over 2 KiB
])
def test_hello_decode_refuses_every_field_out_of_bounds(over: dict[str, object]) -> None:
    with pytest.raises(HandshakeError, match="malformed handshake payload"):
        Hello.decode(hello(**over))


def test_hello_decode_refuses_a_trailing_field() -> None:
    with pytest.raises(HandshakeError):
        Hello.decode(pack([*unpack(hello()), 0]))


@pytest.mark.parametrize(("streams", "window", "message", "ok"), [
    (1, 1024, 1024, True), (1 << 16, 1 << 30, 1 << 30, True), (0, 1024, 1024, False),
    ((1 << 16) + 1, 1024, 1024, False), (1, 1023, 1023, False), (1, 2048, 4096, False),
    (1, (1 << 30) + 1, 1024, False),
])
def test_limits_bounds(streams: int, window: int, message: int, ok: bool) -> None:
    if ok:
        assert Limits(streams, window, message).max_streams == streams
    else:
        with pytest.raises(ValueError):
            Limits(streams, window, message)


@pytest.mark.parametrize("name", [
    "Noise_XX_25519_ChaChaPoly_BLAKE2b_x", "Noise_XX_25519_ChaChaPoly",
    "Nois_XX_25519_ChaChaPoly_BLAKE2b",
    "Noise_IK_25519_ChaChaPoly_BLAKE2b", "Noise_XX_448_ChaChaPoly_BLAKE2b",
    "Noise_XX_25519_AESGCMX_SHA256", "Noise_XX_25519_ChaChaPoly_MD5",
])
def test_suite_parse_refuses_other_protocols(name: str) -> None:
    with pytest.raises(ValueError):
        Suite.parse(name)


def test_suite_parse_round_trips_every_supported_suite() -> None:
    for cipher in ("ChaChaPoly", "AESGCM"):
        for h in ("SHA256", "SHA512", "BLAKE2b", "BLAKE2s"):
            s = Suite.parse(f"Noise_XX_25519_{cipher}_{h}")
            assert (s.cipher, s.hash) == (cipher, h) and s.name == f"Noise_XX_25519_{cipher}_{h}"


def test_keypair_needs_a_32_byte_private_key() -> None:
    with pytest.raises(ValueError):
        KeyPair.from_private(b"\x01" * 31)
    assert KeyPair.from_private(b"\x01" * 32).public == S_I.public != b"\x01" * 32


def test_a_result_without_certificate_has_no_peer_id() -> None:
    (d1, c1), (d2, c2) = identity(), identity()
    i = SecureHandshake(initiator=True, device_key=d1, certificate=c1)
    r = SecureHandshake(initiator=False, device_key=d2, certificate=c2, defer_certificate=True)
    run(i, r)
    assert i.result is not None and i.result.certificate is None and i.deferred
    for get in (i.result.require_certificate, lambda: i.result.peer_id,  # type: ignore[union-attr]
                lambda: i.result.account_id):  # type: ignore[union-attr]
        with pytest.raises(HandshakeError):
            get()


def test_the_suite_and_a_fixed_ephemeral_reach_the_noise_handshake() -> None:
    (d1, c1), (d2, c2) = identity(), identity()
    suite = Suite("AESGCM", "SHA256")
    i = SecureHandshake(initiator=True, device_key=d1, certificate=c1, suite=suite,
                        ephemeral=E_I)
    r = SecureHandshake(initiator=False, device_key=d2, certificate=c2, suite=suite)
    m1 = i.start()
    assert m1 == E_I.public  # message 1 is the bare ephemeral given
    m2 = r.receive(m1)
    assert m2 is not None
    m3 = i.receive(m2)
    assert m3 is not None
    r.receive(m3)
    assert i.result is not None and r.result is not None
    assert len(i.result.handshake_hash) == 32  # SHA-256, not the default BLAKE2b
    assert not i.result.send_cipher._chacha  # AES-GCM transport ciphers


@pytest.mark.parametrize("defer", [False, True])
def test_completion_is_logged_with_the_peer(defer: bool, caplog: pytest.LogCaptureFixture) -> None:
    (d1, c1), (d2, c2) = identity(), identity()
    i = SecureHandshake(initiator=True, device_key=d1, certificate=c1)
    r = SecureHandshake(initiator=False, device_key=d2, certificate=c2, defer_certificate=defer)
    caplog.set_level(logging.DEBUG, logger="p2psync.transport.handshake")
    run(i, r)
    peers = [getattr(rec, "peer", None) for rec in caplog.records
             if rec.getMessage() == "handshake complete"]
    assert peers == ["(deferred)" if defer else d2.id, d1.id]


def test_a_deferring_responder_still_announces_its_limits_and_features() -> None:
    (d1, c1), (d2, c2) = identity(), identity()
    lr = Limits(max_streams=5, stream_window=1 << 21, max_message=1 << 11)
    i = SecureHandshake(initiator=True, device_key=d1, certificate=c1, features=("a", "b"))
    r = SecureHandshake(initiator=False, device_key=d2, certificate=c2, limits=lr,
                        features=("b",), defer_certificate=True)
    run(i, r)
    assert i.result is not None and i.result.certificate is None
    assert i.result.remote_limits == lr and i.result.features == frozenset({"b"})
