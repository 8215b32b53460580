"""Who learns a device's account (issue 12.6): a stranger learns at most its device key.

With a ``reveal_certificate`` policy, the responder's Hello in handshake message 2 carries no
certificate; the certificate (which names the account) goes with ACCEPT, only to an initiator
the policy accepts. Sans-IO tests read the decrypted handshake payloads; socket tests run both
carriers. Switched off (responder not deferring), the account key is in message 2 and
``test_message_2_does_not_name_the_account`` fails.
"""

from __future__ import annotations

import pytest

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import RefusedByPeer, StrangerRefused, UnexpectedPeer
from p2psync.transport import Keepalive, TransportConfig, connect, listen
from p2psync.transport.handshake import SecureHandshake


def identity() -> tuple[AccountKey, DeviceKey, DeviceCertificate]:
    acc, dev = AccountKey.generate(), DeviceKey.generate()
    return acc, dev, DeviceCertificate.issue(acc, dev)


def recording(hs: SecureHandshake) -> list[bytes]:
    """Record every decrypted payload ``hs`` reads (what the peer could learn from us)."""
    seen: list[bytes] = []
    noise = hs._noise
    read = noise.read_message

    def spy(message: bytes) -> bytes:
        payload = read(message)
        seen.append(payload)
        return payload

    noise.read_message = spy  # type: ignore[method-assign]
    return seen


def run(i: SecureHandshake, r: SecureHandshake) -> None:
    m2 = r.receive(i.start())
    assert m2 is not None
    m3 = i.receive(m2)
    assert m3 is not None
    assert r.receive(m3) is None


def test_message_2_does_not_name_the_account() -> None:
    _, dev_i, cert_i = identity()
    acc_r, dev_r, cert_r = identity()
    i = SecureHandshake(initiator=True, device_key=dev_i, certificate=cert_i)
    r = SecureHandshake(initiator=False, device_key=dev_r, certificate=cert_r,
                        defer_certificate=True)
    seen = recording(i)
    run(i, r)
    assert acc_r.public not in b"".join(seen), "the responder's account leaked in message 2"
    assert i.result is not None and i.result.certificate is None and i.deferred
    # the responder authenticated the initiator fully
    assert r.result is not None and r.result.account_id == cert_i.account_id
    # ACCEPT then carries the certificate, checked against the proven device key
    assert i.check_deferred_certificate(cert_r.raw).account_id == cert_r.account_id
    _, _, other = identity()
    with pytest.raises(Exception, match="does not hold that device key"):
        i.check_deferred_certificate(other.raw)


def test_initiator_checks_the_device_before_revealing_itself() -> None:
    _, dev_i, cert_i = identity()
    _, dev_r, cert_r = identity()
    _, dev_x, _ = identity()
    i = SecureHandshake(initiator=True, device_key=dev_i, certificate=cert_i,
                        expected_peer=dev_x.id)
    r = SecureHandshake(initiator=False, device_key=dev_r, certificate=cert_r,
                        defer_certificate=True)
    with pytest.raises(UnexpectedPeer):
        i.receive(r.receive(i.start()) or b"")
    # and with the right expected peer it proceeds
    i = SecureHandshake(initiator=True, device_key=dev_i, certificate=cert_i,
                        expected_peer=dev_r.id)
    r = SecureHandshake(initiator=False, device_key=dev_r, certificate=cert_r,
                        defer_certificate=True)
    run(i, r)


FAST = TransportConfig(keepalive=Keepalive(interval=0.5, timeout=3.0), handshake_timeout=3.0)


@pytest.mark.parametrize("transport", ["tcp", "quic"])
async def test_policy_decides_over_real_sockets(transport: str) -> None:
    _, dev_r, cert_r = identity()
    _, friend_dev, friend_cert = identity()
    _, stranger_dev, stranger_cert = identity()
    asked: list[str] = []

    def policy(peer: DeviceCertificate) -> bool:
        asked.append(peer.account_id)
        return peer.account_id == friend_cert.account_id

    cfg = TransportConfig(keepalive=FAST.keepalive, handshake_timeout=3.0,
                          reveal_certificate=policy)
    server = await listen("127.0.0.1", 0, device_key=dev_r, certificate=cert_r,
                          on_connection=lambda c: None, transport=transport,  # type: ignore[arg-type]
                          config=cfg)
    try:
        with pytest.raises(RefusedByPeer, match="strangers"):
            await connect(("127.0.0.1", server.port), device_key=stranger_dev,
                          certificate=stranger_cert, expected_peer=dev_r.id,
                          transport=transport, config=FAST)  # type: ignore[arg-type]
        assert isinstance(await server.next_error(), StrangerRefused)
        conn = await connect(("127.0.0.1", server.port), device_key=friend_dev,
                             certificate=friend_cert, expected_peer=dev_r.id,
                             transport=transport, config=FAST)  # type: ignore[arg-type]
        assert conn.account_id == cert_r.account_id and conn.peer_id == dev_r.id
        st = await conn.open_stream()
        await st.send(b"hi")
        await conn.close()
        assert asked == [stranger_cert.account_id, friend_cert.account_id]
    finally:
        await server.close()
