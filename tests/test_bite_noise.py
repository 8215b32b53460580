"""Secure handshake details that mutation testing found unguarded at unit level
(docs/testing.md): the channel binding reaches the Noise prologue, and the result carries the
negotiated version, features and the peer's limits."""

from __future__ import annotations

import pytest

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import HandshakeError
from p2psync.transport.handshake import Limits, SecureHandshake


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
