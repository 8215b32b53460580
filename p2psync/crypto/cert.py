"""Device certificates: the account key vouches for a device key.

Raw form: a signed envelope (:mod:`p2psync.crypto.signed`), ``pack([body, signature])`` where
``body = pack([1, account_pub, device_pub, issued_at, expires_at])`` (``expires_at`` 0 =
never). The transport sends the raw bytes in the Noise handshake payload; the receiver checks
the signature, the validity window, and that the device key is the one the handshake
authenticated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from p2psync.codec import Reader, pack, unpack
from p2psync.crypto.ids import account_id, peer_id
from p2psync.crypto.keys import AccountKey, DeviceKey, verify
from p2psync.crypto.signed import make_signed, open_signed
from p2psync.errors import BadCertificate, BadSignature, DecodeError

CERT_DOMAIN = "device-cert"
_VERSION = 1
MAX_CERT_SIZE = 512


@dataclass(frozen=True)
class DeviceCertificate:
    """A verified binding of a device key to an account key."""

    account: bytes
    device: bytes
    issued_at: int
    expires_at: int
    raw: bytes

    @property
    def account_id(self) -> str:
        return account_id(self.account)

    @property
    def peer_id(self) -> str:
        return peer_id(self.device)

    @classmethod
    def issue(
        cls, account: AccountKey, device: DeviceKey | bytes, *, issued_at: int | None = None,
        expires_at: int = 0,
    ) -> DeviceCertificate:
        device_pub = device if isinstance(device, bytes) else device.public
        now = int(time.time()) if issued_at is None else issued_at
        body = pack([_VERSION, account.public, device_pub, now, expires_at])
        raw = make_signed(account, CERT_DOMAIN, body)
        return cls(account.public, device_pub, now, expires_at, raw)

    @classmethod
    def verify(cls, raw: bytes, *, now: float | None = None) -> DeviceCertificate:
        """Parse and check a certificate; raise :class:`BadCertificate` with the reason."""
        try:
            body, sig = open_signed(raw, "device certificate", MAX_CERT_SIZE)
            r = Reader(unpack(body, what="certificate body"), "certificate body")
            r.version([_VERSION])
            account = r.blob("account", size=32)
            device = r.blob("device", size=32)
            issued = r.integer("issued_at", min_value=0)
            expires = r.integer("expires_at", min_value=0)
            r.end()
        except DecodeError as exc:
            raise BadCertificate(f"malformed device certificate: {exc}") from exc
        try:
            verify(account, CERT_DOMAIN, body, sig)
        except BadSignature as exc:
            raise BadCertificate("device certificate is not signed by its account") from exc
        t = time.time() if now is None else now
        if expires and t > expires:
            raise BadCertificate("device certificate has expired")
        return cls(account, device, issued, expires, bytes(raw))
