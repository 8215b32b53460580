"""Keys, ids, certificates, sealed boxes and read keys."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.codec import pack, unpack
from p2psync.crypto import (
    AccountKey,
    DeviceCertificate,
    DeviceKey,
    ReadKey,
    account_from_phrase,
    account_id,
    decode_key,
    new_recovery_phrase,
    peer_id,
    seal,
    unseal,
    verify,
)
from p2psync.crypto.ids import ACCOUNT, PEER
from p2psync.errors import (
    BadCertificate,
    BadId,
    BadRecoveryPhrase,
    BadSignature,
    DecryptionFailed,
)

# BIP39 reference phrase (all-zero entropy); its account id must never change across releases.
ABANDON = " ".join(["abandon"] * 11 + ["about"])


def test_same_phrase_same_account_and_normalisation() -> None:
    phrase = new_recovery_phrase()
    a = account_from_phrase(phrase)
    b = account_from_phrase("  " + phrase.upper().replace(" ", "   ") + "\n")
    assert a.public == b.public
    assert account_from_phrase(new_recovery_phrase()).public != a.public


def test_derivation_is_stable() -> None:
    # Pinned: changing the derivation would silently lose every user's account.
    assert account_from_phrase(ABANDON).id == (
        "aybq7lxpvwjn4ejcclssw2z2ftzvzhteupmawd6le5qxhfobtujztunj77e"
    )
    assert account_from_phrase(ABANDON, index=1).id != account_from_phrase(ABANDON).id


def test_bad_phrases_are_refused() -> None:
    words = ABANDON.split()
    with pytest.raises(BadRecoveryPhrase, match="unknown word"):
        account_from_phrase(" ".join([*words[:-1], "notaword"]))
    with pytest.raises(BadRecoveryPhrase, match="checksum"):
        account_from_phrase(" ".join(["abandon"] * 12))


def test_ids_roundtrip_and_catch_typos_and_kind_confusion() -> None:
    key = AccountKey.generate().public
    text = account_id(key)
    assert decode_key(ACCOUNT, text) == key
    typo = text[:10] + ("a" if text[10] != "a" else "b") + text[11:]
    with pytest.raises(BadId):
        decode_key(ACCOUNT, typo)
    with pytest.raises(BadId):
        decode_key(PEER, "p" + text[1:])
    assert decode_key(PEER, peer_id(key)) == key


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_decode_key_never_crashes(text: str) -> None:
    with contextlib.suppress(BadId):
        decode_key(ACCOUNT, text)


def test_signatures_are_domain_separated() -> None:
    key = AccountKey.generate()
    sig = key.sign("tree-change", b"data")
    verify(key.public, "tree-change", b"data", sig)
    with pytest.raises(BadSignature):
        verify(key.public, "acl-record", b"data", sig)
    with pytest.raises(BadSignature):
        verify(key.public, "tree-change", b"datb", sig)
    with pytest.raises(BadSignature):
        verify(AccountKey.generate().public, "tree-change", b"data", sig)


def test_device_certificate_binds_device_to_account() -> None:
    account, device = AccountKey.generate(), DeviceKey.generate()
    cert = DeviceCertificate.issue(account, device)
    ok = DeviceCertificate.verify(cert.raw)
    assert (ok.account, ok.device) == (account.public, device.public)
    assert ok.peer_id == device.id and ok.account_id == account.id


def test_forged_or_tampered_certificates_are_refused() -> None:
    account, device = AccountKey.generate(), DeviceKey.generate()
    cert = DeviceCertificate.issue(account, device)
    body, sig = unpack(cert.raw)
    other = DeviceKey.generate().public
    forged_body = pack([*unpack(body)[:2], other, *unpack(body)[3:]])
    with pytest.raises(BadCertificate, match="not signed"):
        DeviceCertificate.verify(pack([forged_body, sig]))
    with pytest.raises(BadCertificate, match="malformed"):
        DeviceCertificate.verify(cert.raw[:-3])
    for i in range(len(cert.raw)):
        flipped = bytearray(cert.raw)
        flipped[i] ^= 0x01
        with pytest.raises(BadCertificate):
            DeviceCertificate.verify(bytes(flipped))


def test_expired_certificate_is_refused() -> None:
    cert = DeviceCertificate.issue(
        AccountKey.generate(), DeviceKey.generate(), issued_at=100, expires_at=200
    )
    assert DeviceCertificate.verify(cert.raw, now=150).expires_at == 200
    with pytest.raises(BadCertificate, match="expired"):
        DeviceCertificate.verify(cert.raw, now=201)


def test_sealed_box_opens_only_for_recipient() -> None:
    alice, bob = AccountKey.generate(), AccountKey.generate()
    box = seal(b"secret", alice.public)
    assert unseal(box, alice) == b"secret"
    with pytest.raises(DecryptionFailed):
        unseal(box, bob)
    with pytest.raises(DecryptionFailed):
        unseal(box[:-1] + bytes([box[-1] ^ 1]), alice)


def test_read_key_aead_binds_context() -> None:
    key = ReadKey.generate()
    ct = key.encrypt(b"payload", b"ctx")
    assert key.decrypt(ct, b"ctx") == b"payload"
    with pytest.raises(DecryptionFailed):
        key.decrypt(ct, b"other")
    with pytest.raises(DecryptionFailed):
        ReadKey.generate().decrypt(ct, b"ctx")
    with pytest.raises(DecryptionFailed):
        key.decrypt(ct[:10], b"ctx")
    assert key.encrypt(b"payload", b"ctx") != ct  # random nonces
