"""Noise XX against the published cacophony/snow vectors and the `noiseprotocol` package."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from p2psync.errors import FrameError, HandshakeError
from p2psync.transport.noise import (
    PROTOCOL_NAME,
    CipherState,
    HandshakeState,
    KeyPair,
    Suite,
)

ROOT = Path(__file__).resolve().parent.parent


def _vector_files() -> list[Path]:
    env = os.environ.get("P2PSYNC_NOISE_VECTORS")
    base = Path(env) if env else ROOT.parent / "shared" / "vectors"
    if base.is_file():
        return [base]
    return sorted(base.glob("noise-*.json")) if base.is_dir() else []


def _load_vectors() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in _vector_files():
        for v in json.loads(f.read_text())["vectors"]:
            try:
                Suite.parse(v["protocol_name"])
            except ValueError:
                continue
            if v.get("init_psks") or v.get("resp_psks"):
                continue
            out.append((f"{f.stem}:{v['protocol_name']}", v))
    return out


VECTORS = _load_vectors()
NO_VECTORS = "no Noise vectors: ../shared/vectors/ missing and P2PSYNC_NOISE_VECTORS unset"


def test_vectors_present_for_our_suite() -> None:
    if not VECTORS:
        pytest.skip(NO_VECTORS)
    assert any(v["protocol_name"] == PROTOCOL_NAME for _, v in VECTORS)


@pytest.mark.parametrize(
    "vector", [v for _, v in VECTORS] or [None], ids=[n for n, _ in VECTORS] or ["none"]
)
def test_vector(vector: dict[str, Any] | None) -> None:
    if vector is None:
        pytest.skip(NO_VECTORS)
    suite = Suite.parse(vector["protocol_name"])
    h = bytes.fromhex
    init = HandshakeState(
        initiator=True, suite=suite, prologue=h(vector["init_prologue"]),
        static=KeyPair.from_private(h(vector["init_static"])),
        ephemeral=KeyPair.from_private(h(vector["init_ephemeral"])),
    )
    resp = HandshakeState(
        initiator=False, suite=suite, prologue=h(vector["resp_prologue"]),
        static=KeyPair.from_private(h(vector["resp_static"])),
        ephemeral=KeyPair.from_private(h(vector["resp_ephemeral"])),
    )
    msgs = vector["messages"]
    assert len(msgs) > 3, "vector should include transport messages"
    for i, m in enumerate(msgs):
        sender, receiver = (init, resp) if i % 2 == 0 else (resp, init)
        payload, ct = h(m["payload"]), h(m["ciphertext"])
        if i < 3:
            assert sender.write_message(payload) == ct
            assert receiver.read_message(ct) == payload
        else:
            assert sender.send_cipher is not None and receiver.recv_cipher is not None
            assert sender.send_cipher.encrypt_with_ad(b"", payload) == ct
            assert receiver.recv_cipher.decrypt_with_ad(b"", ct) == payload
    assert init.handshake_hash == resp.handshake_hash
    if "handshake_hash" in vector:  # the snow file omits it
        assert init.handshake_hash == h(vector["handshake_hash"])
    assert init.remote_static == resp.s.public and resp.remote_static == init.s.public


def _pair(prologue_a: bytes = b"p", prologue_b: bytes = b"p") -> tuple[HandshakeState, ...]:
    return (HandshakeState(initiator=True, static=KeyPair.generate(), prologue=prologue_a),
            HandshakeState(initiator=False, static=KeyPair.generate(), prologue=prologue_b))


def test_replayed_message_rejected() -> None:
    i1, r1 = _pair()
    m1 = i1.write_message()
    r1.read_message(m1)
    m2 = r1.write_message(b"hello")
    i1.read_message(m2)
    m3 = i1.write_message(b"me")
    r1.read_message(m3)
    # Same message again on the finished session: refused.
    with pytest.raises(HandshakeError):
        r1.read_message(m3)
    # A message from session 1 replayed into session 2 fails authentication.
    i2, r2 = _pair()
    r2.read_message(i2.write_message())
    r2.write_message(b"")
    with pytest.raises(HandshakeError):
        r2.read_message(m3)
    i3, _ = _pair()
    i3.write_message()
    with pytest.raises(HandshakeError):
        i3.read_message(m2)


def test_prologue_mismatch_fails() -> None:
    i, r = _pair(b"conn-A", b"conn-B")
    r.read_message(i.write_message())
    with pytest.raises(HandshakeError):
        i.read_message(r.write_message())


def test_out_of_turn_and_truncated() -> None:
    i, r = _pair()
    with pytest.raises(HandshakeError):
        i.read_message(b"\x00" * 48)
    with pytest.raises(HandshakeError):
        r.write_message()
    with pytest.raises(HandshakeError):
        r.read_message(b"short")


def test_transport_nonce_strict() -> None:
    a, b = CipherState(bytes(32)), CipherState(bytes(32))
    c1, c2 = a.encrypt_with_ad(b"", b"one"), a.encrypt_with_ad(b"", b"two")
    with pytest.raises(FrameError):
        b.decrypt_with_ad(b"", c2)  # skipped nonce
    assert b.decrypt_with_ad(b"", c1) == b"one"  # failed decrypt did not advance
    with pytest.raises(FrameError):
        b.decrypt_with_ad(b"", c1)  # replay
    assert b.decrypt_with_ad(b"", c2) == b"two"


noise_conn = pytest.importorskip("noise.connection")


def _theirs(initiator: bool, static: KeyPair, prologue: bytes) -> Any:
    conn = noise_conn.NoiseConnection.from_name(PROTOCOL_NAME.encode())
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_keypair_from_private_bytes(noise_conn.Keypair.STATIC, static.private)
    conn.set_prologue(prologue)
    conn.start_handshake()
    return conn


@pytest.mark.parametrize("we_initiate", [True, False], ids=["we-initiate", "they-initiate"])
def test_interop_noiseprotocol(we_initiate: bool) -> None:
    ours_kp, theirs_kp = KeyPair.generate(), KeyPair.generate()
    ours = HandshakeState(initiator=we_initiate, static=ours_kp, prologue=b"interop")
    theirs = _theirs(not we_initiate, theirs_kp, b"interop")
    for step in range(3):
        payload = f"msg{step}".encode()
        if (step % 2 == 0) == we_initiate:
            assert theirs.read_message(ours.write_message(payload)) == payload
        else:
            assert ours.read_message(theirs.write_message(payload)) == payload
    assert ours.complete and theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    assert ours.remote_static == theirs_kp.public
    assert ours.send_cipher is not None and ours.recv_cipher is not None
    for k in range(5):
        data = bytes([k]) * (1000 + k)
        assert theirs.decrypt(ours.send_cipher.encrypt_with_ad(b"", data)) == data
        assert ours.recv_cipher.decrypt_with_ad(b"", theirs.encrypt(data)) == data
