"""What a p2psync peer puts in mDNS, and the strict parser for what others put there (sans-IO).

The TXT record says only how to *reach* a device: its peer id, protocol version and ports. It
never carries account or space ids: anyone on the LAN can read it, and the handshake, not mDNS,
authenticates the peer. Everything read from the network is hostile until validated here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from p2psync import PROTOCOL_VERSION
from p2psync.crypto.ids import PEER, decode_key
from p2psync.errors import BadId, DiscoveryError

SERVICE_TYPE = "_p2psync._udp.local."

MAX_TXT_BYTES = 400  #: whole TXT rdata; ours is ~90 bytes
MAX_TXT_ENTRIES = 16
MAX_VALUE_BYTES = 100  #: per value; a peer id is 59 characters
MAX_ADDRESSES = 16  #: addresses kept per sighting (a hostile record may list hundreds)

KEY_ID = "id"
KEY_VERSION = "v"
KEY_QUIC = "q"
KEY_TCP = "t"
#: WebSocket port (transport/websocket.py), for peers that can dial neither QUIC nor TCP.
KEY_WS = "w"


class BadAdvert(DiscoveryError):
    """An mDNS advertisement from the network is malformed, oversized or not for us."""


@dataclass(frozen=True)
class Advert:
    """What one peer advertises: who it is and which ports it listens on."""

    peer_id: str
    version: int = PROTOCOL_VERSION
    quic_port: int | None = None
    tcp_port: int | None = None
    ws_port: int | None = None

    def __post_init__(self) -> None:
        _check_peer_id(self.peer_id)
        if self.quic_port is None and self.tcp_port is None:
            raise DiscoveryError("an advert needs a QUIC port, a TCP port or both")
        for port in (self.quic_port, self.tcp_port, self.ws_port):
            if port is not None and not 1 <= port <= 65535:
                raise DiscoveryError(f"port {port} is out of range 1-65535")

    def txt(self) -> dict[str, str]:
        """The TXT properties to register (small: about 90 bytes on the wire)."""
        props = {KEY_ID: self.peer_id, KEY_VERSION: str(self.version)}
        if self.quic_port is not None:
            props[KEY_QUIC] = str(self.quic_port)
        if self.tcp_port is not None:
            props[KEY_TCP] = str(self.tcp_port)
        if self.ws_port is not None:
            props[KEY_WS] = str(self.ws_port)
        return props

    @property
    def instance_name(self) -> str:
        return instance_name(self.peer_id)


def instance_name(peer_id: str) -> str:
    """The service instance name: the peer id itself, unique on the LAN by construction."""
    return f"{peer_id}.{SERVICE_TYPE}"


def instance_label(name: str) -> str:
    """The instance label of a full service name, or raise :class:`BadAdvert`."""
    suffix = "." + SERVICE_TYPE
    if not name.lower().endswith(suffix.lower()) or len(name) <= len(suffix):
        raise BadAdvert(f"not a {SERVICE_TYPE} instance: {name[:80]!r}")
    return name[: -len(suffix)]


def _check_peer_id(text: str) -> None:
    if len(text) > MAX_VALUE_BYTES:
        raise BadAdvert("peer id too long")
    try:
        decode_key(PEER, text)
    except BadId as exc:
        raise BadAdvert(str(exc)) from None


def parse_txt(raw: bytes) -> dict[str, str]:
    """Decode raw TXT rdata (length-prefixed strings) into key → value, strictly.

    Rejects oversize records, too many entries, empty or duplicate keys, non-UTF-8 text and
    truncated strings. Keys are case-insensitive (RFC 6763 §6.4) and returned lowercased.
    """
    if len(raw) > MAX_TXT_BYTES:
        raise BadAdvert(f"TXT record of {len(raw)} bytes exceeds {MAX_TXT_BYTES}")
    out: dict[str, str] = {}
    i = 0
    entries = 0
    while i < len(raw):
        n = raw[i]
        chunk = raw[i + 1 : i + 1 + n]
        if len(chunk) != n:
            raise BadAdvert("truncated TXT string")
        i += 1 + n
        if n == 0:
            continue  # an empty string is how an empty TXT record is encoded
        entries += 1
        if entries > MAX_TXT_ENTRIES:
            raise BadAdvert("too many TXT entries")
        key_b, sep, value_b = chunk.partition(b"=")
        try:
            key = key_b.decode("ascii").lower()
            value = value_b.decode("utf-8")
        except UnicodeDecodeError:
            raise BadAdvert("TXT entry is not text") from None
        if not key or not key.isprintable():
            raise BadAdvert("empty or unprintable TXT key")
        if key in out:
            raise BadAdvert(f"duplicate TXT key {key!r}")
        if len(value_b) > MAX_VALUE_BYTES:
            raise BadAdvert(f"TXT value for {key!r} is too long")
        out[key] = value if sep else ""
    return out


def _port(props: dict[str, str], key: str) -> int | None:
    text = props.get(key)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise BadAdvert(f"bad port {text[:10]!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise BadAdvert(f"port {port} out of range")
    return port


def parse_advert(
    name: str,
    raw_txt: bytes,
    accept_versions: Collection[int] = (PROTOCOL_VERSION,),
) -> Advert:
    """Validate a sighting's instance name and TXT; return the advert or raise BadAdvert.

    The instance label must equal the TXT peer id (so one peer cannot advertise under another's
    name and a different id), the id must have a valid checksum, the version must be one we
    speak and at least one port must be present. Unknown keys are ignored (forward compatible).
    """
    label = instance_label(name)
    props = parse_txt(raw_txt)
    pid = props.get(KEY_ID)
    if pid is None:
        raise BadAdvert("TXT has no peer id")
    if pid != label:
        raise BadAdvert("instance name and TXT peer id differ")
    _check_peer_id(pid)
    vtext = props.get(KEY_VERSION, "")
    if not (vtext.isascii() and vtext.isdigit()) or len(vtext) > 5:
        raise BadAdvert(f"bad protocol version {vtext[:10]!r}")
    version = int(vtext)
    if version not in accept_versions:
        raise BadAdvert(f"protocol version {version} is not one we speak")
    quic, tcp = _port(props, KEY_QUIC), _port(props, KEY_TCP)
    if quic is None and tcp is None:
        raise BadAdvert("advert has no port")
    return Advert(peer_id=pid, version=version, quic_port=quic, tcp_port=tcp,
                  ws_port=_port(props, KEY_WS))


def usable_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Keep addresses worth dialling: unicast, not loopback/unspecified; deduplicated, capped.

    IPv6 link-local addresses keep their ``%scope`` (without it they cannot be dialled); one
    without a scope is dropped. IPv4 comes first so the common case is tried first.
    """
    v4: list[str] = []
    v6: list[str] = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
            continue
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                continue
            if ip.is_link_local and not ip.scope_id:
                continue
            bucket = v6
        else:
            bucket = v4
        if str(ip) not in bucket:
            bucket.append(str(ip))
    return tuple((v4 + v6)[:MAX_ADDRESSES])
