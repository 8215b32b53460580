"""Crypto details that mutation testing found unguarded (docs/testing.md): the signature
domain prefix (wire compatibility: it must be exactly the documented bytes), id kinds, every
recovery-phrase length, malformed signature inputs."""

from __future__ import annotations

from pathlib import Path

import nacl.bindings
import nacl.signing
import pytest

from p2psync.crypto.ids import ACCOUNT, decode_key, peer_id
from p2psync.crypto.keys import (
    AccountKey,
    account_from_phrase,
    new_recovery_phrase,
    normalize_phrase,
    verify,
)
from p2psync.errors import BadId, BadSignature


def test_signatures_are_over_the_documented_domain_separated_bytes() -> None:
    """docs/README.md: ``b"p2psync/<domain>\\0" + body`` — built independently here."""
    seed = bytes(range(32))
    key = AccountKey(seed)
    sig = key.sign("tree-change", b"body")
    assert sig == nacl.signing.SigningKey(seed).sign(b"p2psync/tree-change\x00body").signature
    verify(key.public, "tree-change", b"body", sig)
    with pytest.raises(BadSignature):
        verify(key.public, "tree-chang", b"e\x00body", sig)  # the separator counts


@pytest.mark.parametrize(("key_len", "sig_len"), [(31, 64), (32, 63), (33, 64), (32, 65)])
def test_malformed_key_or_signature_is_refused_as_malformed(key_len: int, sig_len: int) -> None:
    with pytest.raises(BadSignature, match="malformed"):
        verify(b"\x01" * key_len, "d", b"x", b"\x02" * sig_len)


def test_an_id_of_another_kind_or_type_is_refused_up_front() -> None:
    key = AccountKey(b"\x05" * 32).public
    with pytest.raises(BadId, match="not an account id"):
        decode_key(ACCOUNT, peer_id(key))
    with pytest.raises(BadId, match="not an account id"):
        decode_key(ACCOUNT, 12345)  # type: ignore[arg-type]
    with pytest.raises(BadId, match="not a peer id"):
        decode_key("z", "z" + peer_id(key)[1:])


@pytest.mark.parametrize(("words", "bits"), [(12, 128), (15, 160), (18, 192), (21, 224),
                                             (24, 256)])
def test_every_bip39_length_generates_and_normalises(words: int, bits: int) -> None:
    phrase = new_recovery_phrase(words)
    assert len(phrase.split()) == words
    assert normalize_phrase(phrase.upper()) == phrase
    account_from_phrase(phrase)
    from mnemonic import Mnemonic

    assert len(Mnemonic("english").to_entropy(phrase)) * 8 == bits


def test_keystore_key_derivation_uses_the_stored_cost_parameters() -> None:
    """A keystore names its argon2id cost; reading must use exactly that, not a default."""
    import nacl.pwhash

    from p2psync.crypto.keystore import _derive

    salt = b"\x01" * nacl.pwhash.argon2id.SALTBYTES
    got = _derive("pw", salt, 1, 8192)
    assert got == nacl.pwhash.argon2id.kdf(32, b"pw", salt, opslimit=1, memlimit=8192)
    assert got != _derive("pw", salt, 2, 8192)


def test_seal_with_a_given_random_source_is_libsodiums_box_with_that_ephemeral(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Round 5: the deterministic path (the golden vectors fix ``random_bytes``) had no test in
    the crypto group: any change to it passed."""
    from p2psync.crypto import box
    from p2psync.crypto.keys import x25519_public

    key = AccountKey(bytes(range(32)))
    monkeypatch.setattr(box, "random_bytes", lambda n: b"\x05" * n)
    a, b = box.seal(b"secret", key.public), box.seal(b"secret", key.public)
    assert a == b  # the given source decides the ephemeral: not libsodium's own random one
    assert a[:32] == nacl.bindings.crypto_scalarmult_base(b"\x05" * 32)
    assert a == box._seal_with(b"\x05" * 32, b"secret", x25519_public(key.public))
    assert box.unseal(a, key) == b"secret"


def test_a_keystore_is_written_into_a_folder_not_made_yet(tmp_path: Path) -> None:
    from p2psync.crypto.keys import DeviceKey
    from p2psync.crypto.keystore import read_keystore, write_keystore

    path = tmp_path / "home" / "p2psync" / "keystore"
    acct, dev = AccountKey(b"\x01" * 32), DeviceKey(b"\x02" * 32)
    write_keystore(path, acct, dev, "pw", opslimit=1, memlimit=8192)
    ks = read_keystore(path, "pw")
    assert (ks.account.public, ks.device.public) == (acct.public, dev.public)
    assert path.stat().st_mode & 0o777 == 0o600


# --- round 5: decorated code mutmut does not mutate (DeviceCertificate, ReadKey) ---------------
def _cert_raw(*fields: object) -> bytes:
    from p2psync.codec import pack
    from p2psync.crypto.cert import CERT_DOMAIN
    from p2psync.crypto.signed import make_signed

    return make_signed(AccountKey(b"\x01" * 32), CERT_DOMAIN, pack(list(fields)))


def test_certificate_fields_round_trip_and_expiry_is_inclusive() -> None:
    from p2psync.crypto.cert import DeviceCertificate
    from p2psync.crypto.keys import DeviceKey

    acct, dev = AccountKey(b"\x01" * 32), DeviceKey(b"\x02" * 32)
    cert = DeviceCertificate.issue(acct, dev, issued_at=1000, expires_at=5000)
    assert (cert.issued_at, cert.expires_at) == (1000, 5000)
    got = DeviceCertificate.verify(cert.raw, now=5000)  # valid up to its expiry second
    assert (got.account, got.device, got.issued_at, got.expires_at) \
        == (acct.public, dev.public, 1000, 5000)
    import time as _time

    fresh = DeviceCertificate.issue(acct, dev)  # stamped now, never expires
    assert abs(fresh.issued_at - _time.time()) < 60 and fresh.expires_at == 0


@pytest.mark.parametrize("fields", [
    (1, b"\x01" * 32, b"\x02" * 33, 0, 0), (1, b"\x01" * 32, b"\x02" * 31, 0, 0),
    (1, b"\x01" * 32, b"\x02" * 32, -1, 0), (1, b"\x01" * 32, b"\x02" * 32, 0, -1),
    (1, b"\x01" * 32, b"\x02" * 32, 0, 0, 0),
])
def test_malformed_certificate_bodies_are_refused_even_when_signed(fields: tuple) -> None:
    from p2psync.crypto.cert import DeviceCertificate
    from p2psync.errors import BadCertificate

    f = list(fields)
    f[1] = AccountKey(b"\x01" * 32).public  # signed by the account it names
    with pytest.raises(BadCertificate, match="malformed"):
        DeviceCertificate.verify(_cert_raw(*f))


def test_read_key_edges() -> None:
    from p2psync.crypto.box import NONCE_SIZE, TAG_SIZE, ReadKey
    from p2psync.errors import DecryptionFailed

    key = ReadKey(b"\x03" * 32)
    empty = key.encrypt(b"", b"ad")
    assert len(empty) == NONCE_SIZE + TAG_SIZE and key.decrypt(empty, b"ad") == b""
    for short in (b"", b"x" * 10, b"x" * (NONCE_SIZE + TAG_SIZE - 1)):
        with pytest.raises(DecryptionFailed):
            key.decrypt(short, b"ad")
    with pytest.raises(ValueError):
        ReadKey(b"\x03" * 31)
