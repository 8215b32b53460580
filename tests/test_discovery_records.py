"""What goes into mDNS and the strict parser for what comes out of it (no network)."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync.crypto.ids import account_id, peer_id
from p2psync.discovery.mdns import _scope_link_local
from p2psync.discovery.netwatch import LocalAddress, zeroconf_interfaces
from p2psync.discovery.records import (
    MAX_ADDRESSES,
    MAX_TXT_BYTES,
    SERVICE_TYPE,
    Advert,
    BadAdvert,
    instance_name,
    parse_advert,
    parse_txt,
    usable_addresses,
)
from p2psync.errors import DiscoveryError

PID = peer_id(bytes(range(32)))


def txt(props: dict[str, str]) -> bytes:
    """Encode TXT rdata the way zeroconf does: length-prefixed ``key=value`` strings."""
    out = b""
    for k, v in props.items():
        entry = f"{k}={v}".encode()
        out += bytes([len(entry)]) + entry
    return out


def test_advert_round_trips_and_stays_small() -> None:
    adv = Advert(PID, quic_port=4433, tcp_port=4434)
    raw = txt(adv.txt())
    assert len(raw) < 100
    assert parse_advert(adv.instance_name, raw) == adv
    assert adv.instance_name == f"{PID}.{SERVICE_TYPE}"


def test_advert_carries_no_account_or_space_ids() -> None:
    adv = Advert(PID, quic_port=1)
    assert set(adv.txt()) == {"id", "v", "q"}


def test_advert_rejects_bad_local_values() -> None:
    with pytest.raises(DiscoveryError):
        Advert(PID)  # no port
    with pytest.raises(DiscoveryError):
        Advert(PID, quic_port=70000)
    with pytest.raises(DiscoveryError):
        Advert(account_id(bytes(32)), quic_port=1)  # an account id is not a peer id


OTHER = peer_id(os.urandom(32))


@pytest.mark.parametrize(
    ("name", "props", "why"),
    [
        (PID, {"v": "1", "q": "1"}, "no peer id"),
        (PID, {"id": OTHER, "v": "1", "q": "1"}, "name and TXT peer id differ"),
        ("junk", {"id": "junk", "v": "1", "q": "1"}, "not a peer id"),
        (PID[:-1] + ("a" if PID[-1] != "a" else "b"),
         {"id": PID[:-1] + ("a" if PID[-1] != "a" else "b"), "v": "1", "q": "1"}, "checksum"),
        (PID, {"id": PID, "v": "2", "q": "1"}, "version we do not speak"),
        (PID, {"id": PID, "v": "x", "q": "1"}, "non-numeric version"),
        (PID, {"id": PID, "q": "1"}, "no version"),
        (PID, {"id": PID, "v": "1"}, "no port"),
        (PID, {"id": PID, "v": "1", "q": "0"}, "port 0"),
        (PID, {"id": PID, "v": "1", "q": "65536"}, "port too big"),
        (PID, {"id": PID, "v": "1", "q": "-1"}, "negative port"),
        (PID, {"id": PID, "v": "1", "t": "٣"}, "non-ASCII digit"),
        (PID, {"id": PID, "v": "1", "q": "1", "x": "y" * 101}, "value too long"),
    ],
)
def test_parse_advert_rejects_hostile_records(name: str, props: dict[str, str], why: str) -> None:
    with pytest.raises(BadAdvert):
        parse_advert(instance_name(name), txt(props))


def test_parse_advert_accepts_other_versions_only_when_asked() -> None:
    raw = txt({"id": PID, "v": "2", "t": "9"})
    adv = parse_advert(instance_name(PID), raw, accept_versions={1, 2})
    assert (adv.version, adv.quic_port, adv.tcp_port) == (2, None, 9)


def test_parse_advert_ignores_unknown_keys_and_key_case() -> None:
    raw = txt({"ID": PID, "V": "1", "q": "5", "future": "thing"})
    assert parse_advert(instance_name(PID), raw).quic_port == 5


def test_parse_advert_rejects_wrong_service_type() -> None:
    with pytest.raises(BadAdvert):
        parse_advert(f"{PID}._other._udp.local.", txt({"id": PID, "v": "1", "q": "1"}))


def test_parse_txt_limits() -> None:
    with pytest.raises(BadAdvert, match="exceeds"):
        parse_txt(b"\x01a" * (MAX_TXT_BYTES // 2 + 1))
    with pytest.raises(BadAdvert, match="too many"):
        parse_txt(txt({f"k{i}": "" for i in range(17)}))
    with pytest.raises(BadAdvert, match="truncated"):
        parse_txt(b"\x09id=abc")
    with pytest.raises(BadAdvert, match="duplicate"):
        parse_txt(txt({"a": "1"}) + txt({"A": "2"}))
    with pytest.raises(BadAdvert, match="not text"):
        parse_txt(b"\x04a=\xff\xfe")
    with pytest.raises(BadAdvert, match="empty"):
        parse_txt(b"\x02=x")
    assert parse_txt(b"\x00") == {}
    assert parse_txt(b"\x04flag") == {"flag": ""}


@given(st.binary(max_size=600))
def test_parse_txt_never_fails_other_than_bad_advert(raw: bytes) -> None:
    with contextlib.suppress(BadAdvert):
        parse_txt(raw)


@given(st.text(max_size=80), st.dictionaries(st.text(max_size=12), st.text(max_size=120),
                                             max_size=8))
def test_parse_advert_never_fails_other_than_bad_advert(
    label: str, props: dict[str, str]
) -> None:
    try:
        raw = txt(props)
    except ValueError:  # an entry over 255 bytes cannot even be encoded
        return
    with contextlib.suppress(BadAdvert):
        parse_advert(f"{label}.{SERVICE_TYPE}", raw)


def test_usable_addresses_filters_hostile_lists() -> None:
    got = usable_addresses([
        "fe80::1%2", "10.0.0.2", "127.0.0.1", "::1", "224.0.0.251", "0.0.0.0", "fe80::2",
        "::ffff:10.0.0.9", "junk", "10.0.0.2", "2001:db8::5", "240.0.0.1",
    ])
    assert got == ("10.0.0.2", "fe80::1%2", "2001:db8::5")
    many = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(300)]
    assert len(usable_addresses(many)) == MAX_ADDRESSES


def test_unscoped_link_local_gets_our_only_ipv6_interface() -> None:
    one = (LocalAddress("eth0", 2, "10.0.0.1", 4), LocalAddress("eth0", 2, "fe80::a", 6))
    assert _scope_link_local(["10.0.0.2", "fe80::b", "fe80::c%2"], one) == [
        "10.0.0.2", "fe80::b%2", "fe80::c%2"
    ]
    two = (*one, LocalAddress("wlan0", 3, "fe80::d", 6))
    assert _scope_link_local(["fe80::b"], two) == ["fe80::b"]  # ambiguous: left unscoped


def test_zeroconf_interfaces_one_v4_address_and_one_v6_index_per_interface() -> None:
    addrs = [
        LocalAddress("eth0", 2, "10.0.0.1", 4), LocalAddress("eth0", 2, "10.0.0.7", 4),
        LocalAddress("eth0", 2, "fe80::1", 6), LocalAddress("eth0", 2, "2001:db8::1", 6),
        LocalAddress("wlan0", 3, "fe80::2", 6),
    ]
    assert zeroconf_interfaces(addrs) == ["10.0.0.1", 2, 3]
