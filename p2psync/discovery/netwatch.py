"""Which local interfaces mDNS should use, as a comparable snapshot.

zeroconf reads interfaces once, at start, so the mDNS shell polls this snapshot and restarts
zeroconf when it changes (new WiFi, DHCP lease, link down/up). The snapshot includes whether the
link is up, so a flap that leaves the IPv4 address configured is still noticed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import ifaddr

_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_MULTICAST = 0x1000
_SYS_NET = Path("/sys/class/net")
_IF_INET6 = Path("/proc/net/if_inet6")
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40


@dataclass(frozen=True, order=True)
class LocalAddress:
    """One address on one interface that mDNS can use."""

    ifname: str
    index: int
    ip: str  #: without scope
    version: int  #: 4 or 6

    @property
    def link_local(self) -> bool:
        return ipaddress.ip_address(self.ip).is_link_local


def _link_ok(ifname: str) -> bool:
    """True when the link is up and can do multicast (Linux /sys; elsewhere assume so)."""
    base = _SYS_NET / ifname
    try:
        flags = int((base / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return True
    if not flags & _IFF_UP or not flags & _IFF_MULTICAST or flags & _IFF_LOOPBACK:
        return False
    try:
        state = (base / "operstate").read_text().strip()
    except OSError:
        return True
    return state in ("up", "unknown")


def _unready_ipv6() -> set[tuple[str, str]]:
    """(ifname, address) of IPv6 addresses still in duplicate address detection, or failed it.

    Binding to a tentative address fails, and zeroconf would then run without IPv6 on that link
    until the next restart; leaving them out makes their readiness a change the watch sees.
    """
    out: set[tuple[str, str]] = set()
    try:
        text = _IF_INET6.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 6:
            continue
        hexaddr, _index, _plen, _scope, flags, name = parts
        try:
            if not int(flags, 16) & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED):
                continue
            ip = ipaddress.IPv6Address(bytes.fromhex(hexaddr))
        except ValueError:
            continue
        out.add((name, str(ip)))
    return out


def local_addresses(
    allow: Collection[str] | None = None, ipv6: bool = True
) -> tuple[LocalAddress, ...]:
    """Addresses of the interfaces that are up and multicast-capable, sorted, loopback excluded.

    IPv6 addresses still in duplicate address detection are left out until they are usable.

    ``allow`` restricts to the named interfaces (config option); ``ipv6=False`` keeps IPv4 only.
    """
    out: set[LocalAddress] = set()
    unready = _unready_ipv6() if ipv6 else set()
    for adapter in ifaddr.get_adapters():
        name = adapter.nice_name
        if allow is not None and name not in allow:
            continue
        if not _link_ok(name):
            continue
        for entry in adapter.ips:
            if isinstance(entry.ip, tuple):
                if not ipv6:
                    continue
                text, version = entry.ip[0].split("%")[0], 6
            else:
                text, version = entry.ip, 4
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if ip.is_loopback or ip.is_multicast or ip.is_unspecified:
                continue
            if version == 6 and (name, str(ip)) in unready:
                continue
            out.add(LocalAddress(name, int(adapter.index or 0), str(ip), version))
    return tuple(sorted(out))


def zeroconf_interfaces(addrs: Collection[LocalAddress]) -> list[str | int]:
    """zeroconf's ``interfaces=`` list: one IPv4 address and one IPv6 index per interface.

    One IPv4 address per interface avoids joining the multicast group twice on one link; IPv6
    multicast is joined by interface index (what zeroconf wants for IPv6).
    """
    v4: dict[str, str] = {}
    v6: dict[str, int] = {}
    for a in sorted(addrs):
        if a.version == 4:
            v4.setdefault(a.ifname, a.ip)
        elif a.index:
            v6.setdefault(a.ifname, a.index)
    return [*v4.values(), *v6.values()]
