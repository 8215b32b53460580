"""Keys and cryptography: identities, certificates, sealed boxes, read keys, keystore."""

from p2psync.crypto.box import ReadKey, seal, unseal
from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.ids import account_id, decode_key, peer_id
from p2psync.crypto.keys import (
    AccountKey,
    DeviceKey,
    SigningKey,
    account_from_phrase,
    new_recovery_phrase,
    verify,
    x25519_public,
)

__all__ = [
    "AccountKey",
    "DeviceCertificate",
    "DeviceKey",
    "ReadKey",
    "SigningKey",
    "account_from_phrase",
    "account_id",
    "decode_key",
    "new_recovery_phrase",
    "peer_id",
    "seal",
    "unseal",
    "verify",
    "x25519_public",
]
