"""Adding one's own device without the recovery phrase: pairing over the LAN with SPAKE2.

``p2psync device add`` (the *host*, a device of the account) shows a short code — 8 base32
characters, ``ABCD-EFGH`` — and a QR code of ``p2psync-pair1:<code>@<host:port>,...``; the new
device (the *guest*, ``p2psync device pair CODE``) connects over TCP and both run SPAKE2
(the ``spake2`` package: a password-authenticated key exchange, so a passive listener learns
nothing and an active attacker gets ONE guess of the code per attempt, checked online). Then:

1. guest → host ``[1, "p2psync-pair", spake_msg]``
2. host → guest ``[spake_msg, host_confirm]``: the guest checks the host knows the code
3. guest → host ``[guest_confirm, sealed([device_pub, device_name])]``
4. host → guest ``sealed(bundle)``: the account key, a device certificate for the guest's
   device key signed by the account key, and every space (header + ACL records: signed, and
   verified by the guest like any received space; documents follow by normal sync)

``confirm = BLAKE2b(key=K, "host"|"guest" ‖ transcript)`` with ``transcript`` both SPAKE2
messages; ``sealed`` is ChaCha20-Poly1305 under a per-direction key from K. A wrong code, a
garbled or replayed SPAKE2 message all end in a confirmation mismatch (or a refused element):
that is one failed attempt; after :data:`MAX_ATTEMPTS` the host stops and the code is dead.
Pre-authentication frames are at most :data:`MAX_HELLO` bytes. Threat model: docs/threat-model.md
"Device pairing".

The protocol objects (:class:`HostSession`, :class:`GuestSession`) are sans-IO: bytes in, bytes
out. :class:`PairingHost` and :func:`pair` are the asyncio shells (TCP, one guest at a time).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from spake2 import SPAKE2_A, SPAKE2_B  # type: ignore[import-untyped]

from p2psync.codec import pack, unpack
from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.ids import peer_id
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.errors import DecodeError, P2PSyncError, PairingError, PairingRefused

PREFIX = "p2psync-pair1:"
_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"  #: no 0/O, 1/I/L, U: read aloud, typed by hand
CODE_LEN = 8  #: ~39 bits; with MAX_ATTEMPTS online guesses, a stranger's odds are ~3 in 6e11
#: failed attempts (wrong code, garbled or replayed messages) before the host quits
MAX_ATTEMPTS = 3
MAX_HELLO = 1024  #: bytes of any frame before the peer proved the code
MAX_BUNDLE = 64 << 20  #: bytes of the final (authenticated) bundle
FRAME_TIMEOUT = 30.0
_ID_GUEST, _ID_HOST = b"p2psync-pair/guest", b"p2psync-pair/host"
_VERSION = 1
DEVICES = "devices.json"


# --- the code ----------------------------------------------------------------------------------
def new_code() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LEN))


def normalize_code(text: str) -> str:
    """``abcd-efgh`` / ``ABCD EFGH`` → ``ABCDEFGH``; :class:`PairingError` if it cannot be one."""
    code = "".join(ch for ch in text.upper() if ch not in " -")
    if len(code) != CODE_LEN or any(ch not in _ALPHABET for ch in code):
        raise PairingError(f"a pairing code is {CODE_LEN} letters and digits like ABCD-EFGH "
                           "(as `p2psync device add` shows it)")
    return code


def show_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def link(code: str, addresses: list[str]) -> str:
    """What the QR code holds: the code and where the host listens."""
    return f"{PREFIX}{code}@{','.join(addresses)}"


def parse_link(text: str) -> tuple[str, list[str]]:
    """A pairing link (from the QR code) or a bare code → (code, addresses)."""
    text = text.strip()
    if text.startswith(PREFIX):
        code, _, addrs = text[len(PREFIX):].partition("@")
        return normalize_code(code), [a for a in addrs.split(",") if a]
    return normalize_code(text), []


# --- the sans-IO protocol ---------------------------------------------------------------------
def _mac(key: bytes, label: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(label + data, key=key, digest_size=32,
                           person=b"p2psync-pair").digest()


def _aead(key: bytes, label: bytes) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(_mac(key, b"key:" + label, b""))


_NONCE = b"\0" * 12  #: each key seals exactly one message


def _seal(key: bytes, label: bytes, data: bytes) -> bytes:
    return _aead(key, label).encrypt(_NONCE, data, label)


def _open(key: bytes, label: bytes, data: bytes) -> bytes:
    try:
        return _aead(key, label).decrypt(_NONCE, data, label)
    except Exception as exc:  # cryptography's InvalidTag
        raise PairingRefused("the sealed pairing message does not open") from exc


def _finish(sp: Any, msg: bytes) -> bytes:
    try:
        return bytes(sp.finish(msg))
    except Exception as exc:  # spake2 raises ValueError/its own errors on a bad element
        raise PairingRefused(f"bad SPAKE2 message ({type(exc).__name__})") from None


def _decode(data: bytes, what: str, n: int) -> list[Any]:
    try:
        v = unpack(data, max_size=MAX_BUNDLE, what=what)
    except DecodeError as exc:
        raise PairingRefused(f"malformed {what}: {exc}") from None
    if not isinstance(v, list) or len(v) != n:
        raise PairingRefused(f"malformed {what}")
    return v


@dataclass(frozen=True)
class Bundle:
    """What the new device receives: enough to act for the account."""

    account: AccountKey
    certificate: DeviceCertificate
    host_peer: str
    host_name: str
    spaces: list[tuple[str, bytes, list[bytes]]]  #: (space id, header, ACL records)
    #: where the host's agent syncs (``transport:host:port``), if one runs: the new device's
    #: agent dials them (its known-peers file) besides what mDNS finds
    addresses: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return pack([_VERSION, self.account.seed, self.certificate.raw, self.host_peer,
                     self.host_name, [[s, h, list(a)] for s, h, a in self.spaces],
                     self.addresses[:16]])

    @classmethod
    def decode(cls, raw: bytes, device: DeviceKey) -> Bundle:
        v = _decode(raw, "pairing bundle", 7)
        try:
            if v[0] != _VERSION:
                raise PairingRefused(f"pairing bundle version {v[0]} (this device speaks 1)")
            account = AccountKey(bytes(v[1]))
            cert = DeviceCertificate.verify(bytes(v[2]))
            spaces = [(str(s), bytes(h), [bytes(r) for r in a]) for s, h, a in v[5]]
            addresses = [str(x)[:300] for x in v[6][:16]]
        except (TypeError, ValueError, P2PSyncError) as exc:
            if isinstance(exc, PairingRefused):
                raise
            raise PairingRefused(f"malformed pairing bundle: {exc}") from None
        if cert.account != account.public or cert.device != device.public:
            raise PairingRefused("the device certificate is not for this device and account")
        return cls(account, cert, str(v[3]), str(v[4]), spaces, addresses)


class HostSession:
    """The account's device, for one attempt: ``hello`` → reply, ``confirm`` → bundle."""

    def __init__(self, code: str, make_bundle: Callable[[bytes, str], Bundle]) -> None:
        self._sp = SPAKE2_B(code.encode(), idA=_ID_GUEST, idB=_ID_HOST)
        self._make = make_bundle
        self._key = b""
        self._transcript = b""
        self.guest: tuple[bytes, str] | None = None  #: the paired device's key and name

    def hello(self, frame: bytes) -> bytes:
        v = _decode(frame, "pairing hello", 3)
        if v[0] != _VERSION or v[1] != "p2psync-pair" or not isinstance(v[2], bytes):
            raise PairingRefused("not a p2psync pairing hello")
        mine = self._sp.start()
        self._key = _finish(self._sp, v[2])
        self._transcript = v[2] + mine
        return pack([mine, _mac(self._key, b"host", self._transcript)])

    def confirm(self, frame: bytes) -> bytes:
        v = _decode(frame, "pairing confirm", 2)
        if not isinstance(v[0], bytes) or not hmac.compare_digest(
                v[0], _mac(self._key, b"guest", self._transcript)):
            raise PairingRefused("wrong pairing code (or a garbled or replayed message)")
        req = _decode(_open(self._key, b"guest->host", bytes(v[1])), "pairing request", 2)
        if not isinstance(req[0], bytes) or len(req[0]) != 32 or not isinstance(req[1], str):
            raise PairingRefused("malformed pairing request")
        self.guest = (req[0], req[1][:64])
        return _seal(self._key, b"host->guest", self._make(req[0], req[1][:64]).encode())


class GuestSession:
    """The new device: ``hello()``, then ``reply`` → confirm, then ``bundle``."""

    def __init__(self, code: str, device: DeviceKey, name: str) -> None:
        self._sp = SPAKE2_A(code.encode(), idA=_ID_GUEST, idB=_ID_HOST)
        self._device = device
        self._name = name
        self._mine = b""
        self._key = b""

    def hello(self) -> bytes:
        self._mine = self._sp.start()
        return pack([_VERSION, "p2psync-pair", self._mine])

    def reply(self, frame: bytes) -> bytes:
        v = _decode(frame, "pairing reply", 2)
        if not isinstance(v[0], bytes) or not isinstance(v[1], bytes):
            raise PairingRefused("malformed pairing reply")
        self._key = _finish(self._sp, v[0])
        transcript = self._mine + v[0]
        if not hmac.compare_digest(v[1], _mac(self._key, b"host", transcript)):
            raise PairingRefused("wrong pairing code: the device showing it computed another "
                                 "key (check the code, or run `device add` again)")
        req = pack([self._device.public, self._name])
        return pack([_mac(self._key, b"guest", transcript),
                     _seal(self._key, b"guest->host", req)])

    def bundle(self, frame: bytes) -> Bundle:
        return Bundle.decode(_open(self._key, b"host->guest", frame), self._device)


# --- framing ------------------------------------------------------------------------------------
async def _read(reader: asyncio.StreamReader, limit: int) -> bytes:
    async with asyncio.timeout(FRAME_TIMEOUT):
        (n,) = struct.unpack(">I", await reader.readexactly(4))
        if n > limit:
            raise PairingRefused(f"pairing frame of {n} bytes (at most {limit} here)")
        return await reader.readexactly(n)


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(struct.pack(">I", len(data)) + data)
    await writer.drain()


def _error_frame(message: str) -> bytes:
    return pack(["error", message])


def _maybe_error(frame: bytes) -> None:
    """A host's refusal arrives as ``["error", text]`` instead of the expected frame."""
    with contextlib.suppress(DecodeError):
        v = unpack(frame, max_size=MAX_HELLO, what="pairing frame")
        if isinstance(v, list) and len(v) == 2 and v[0] == "error" and isinstance(v[1], str):
            raise PairingRefused(f"the other device refused: {v[1][:200]}")


# --- the host shell -----------------------------------------------------------------------------
@dataclass
class PairingHost:
    """Listens for one new device for up to ``timeout`` s; ends after one success or
    :data:`MAX_ATTEMPTS` failures. ``make_bundle(device_pub, name)`` builds what it gets."""

    make_bundle: Callable[[bytes, str], Bundle]
    host: str = "0.0.0.0"
    port: int = 0
    code: str = field(default_factory=new_code)
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    result: asyncio.Future[tuple[bytes, str]] | None = None
    _server: asyncio.Server | None = None
    _busy: bool = False

    async def start(self) -> PairingHost:
        self.result = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        return self

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def wait(self, timeout: float) -> tuple[bytes, str]:
        assert self.result is not None
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self.result)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening; a waiter not yet answered gets a PairingError (code expired)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.result is not None and not self.result.done():
            self.result.set_exception(PairingError(
                "the pairing code expired before a new device paired: run `device add` again"))
            self.result.exception()  # retrieved: no "never retrieved" warning if nobody waits

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._busy or self.result is None or self.result.done():
                await _write(writer, _error_frame("busy: another device is pairing"))
                return
            self._busy = True
            try:
                await self._attempt(reader, writer)
            finally:
                self._busy = False
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _attempt(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.result is not None
        session = HostSession(self.code, self.make_bundle)
        try:
            await _write(writer, session.hello(await _read(reader, MAX_HELLO)))
            bundle = session.confirm(await _read(reader, MAX_HELLO))
        except (PairingRefused, asyncio.IncompleteReadError, TimeoutError) as exc:
            self.attempts += 1
            self.failures.append(str(exc) or type(exc).__name__)
            left = MAX_ATTEMPTS - self.attempts
            with contextlib.suppress(OSError):
                await _write(writer, _error_frame(
                    "wrong pairing code" + ("" if left > 0 else ": too many attempts, "
                                            "run `p2psync device add` again")))
            if left <= 0 and not self.result.done():
                self.result.set_exception(PairingRefused(
                    f"{MAX_ATTEMPTS} failed pairing attempts (last: {self.failures[-1]}): "
                    "the code is no longer valid; run `p2psync device add` again"))
            return
        await _write(writer, bundle)
        assert session.guest is not None
        if not self.result.done():
            self.result.set_result(session.guest)


async def pair(code: str, address: str, device: DeviceKey, name: str,
               timeout: float = 60.0) -> Bundle:
    """The guest shell: connect to ``address`` (``host:port``) and pair with ``code``."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise PairingError(f"{address!r} is not HOST:PORT (the address `device add` shows)")
    session = GuestSession(normalize_code(code), device, name)
    async with asyncio.timeout(timeout):
        try:
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError as exc:
            raise PairingError(f"cannot reach {address}: {exc.strerror or exc}") from None
        try:
            await _write(writer, session.hello())
            frame = await _read(reader, MAX_HELLO)
            _maybe_error(frame)
            await _write(writer, session.reply(frame))
            frame = await _read(reader, MAX_BUNDLE)
            _maybe_error(frame)
            return session.bundle(frame)
        except asyncio.IncompleteReadError:
            raise PairingRefused("the other device closed the connection") from None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# --- the device list ----------------------------------------------------------------------------
def _devices_path(home: Path) -> Path:
    return home / DEVICES


def load_devices(home: Path) -> list[dict[str, Any]]:
    """Devices of this account known here (paired from or to this device)."""
    try:
        data = json.loads(_devices_path(home).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise PairingError(f"{_devices_path(home)} is unreadable: {exc}") from None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def save_devices(home: Path, rows: list[dict[str, Any]]) -> None:
    path = _devices_path(home)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(rows, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def record_device(home: Path, device: bytes | str, name: str, *, cert: bytes | None = None,
                  this: bool = False) -> dict[str, Any]:
    """Add (or replace) a device of the account in this home's device list; ``device`` is its
    public key or its peer id."""
    pid = device if isinstance(device, str) else peer_id(device)
    rows = [d for d in load_devices(home) if d.get("peer_id") != pid]
    row = {"peer_id": pid, "name": name, "paired_at": int(time.time()),
           "certificate": base64.b64encode(cert).decode() if cert else None,
           "this_device": this, "revoked_at": None}
    save_devices(home, [*rows, row])
    return row


def create_home(home: Any, account: AccountKey, device: DeviceKey, secret: str) -> None:
    """A new home holding the account key received by pairing and this device's own key
    (like ``Home.create``, which makes its own device key: the key here was sent first)."""
    from p2psync.crypto.keystore import write_keystore
    from p2psync.errors import KeystoreError

    if home.exists():
        raise KeystoreError(f"{home.path} already holds an identity; use another --home")
    home.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.secure()
    write_keystore(home.keystore_path, account, device, secret)


def remember_host(home: Path, host_peer: str, addresses: list[str]) -> None:
    """Put the host's sync addresses in the new home's known-peers file, so its agent dials
    them at start (``discovery/peers.py`` format; bad ones are skipped when loaded)."""
    from p2psync.discovery.peers import KNOWN_PEERS_FILE

    eps = []
    for a in addresses:
        transport, _, rest = a.partition(":")
        eps.append({"addr": f"{transport}://{rest}" if rest else a, "last_ok": time.time()})
    path = home / KNOWN_PEERS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"version": 1, "peers": {host_peer: eps}}, f)


def revoked_peers(home: Path) -> set[str]:
    """Peer ids this device refuses (``device remove``)."""
    return {str(d["peer_id"]) for d in load_devices(home) if d.get("revoked_at")}
