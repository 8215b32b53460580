"""Finding peers: mDNS on the LAN, plus static, last-known and backup addresses.

``mdns`` is the asyncio shell around zeroconf; ``records`` validates what mDNS carries;
``peers`` is the sans-IO address book that merges every source into dial candidates.
"""

from p2psync.discovery.mdns import (
    DiscoveryEvent,
    MdnsConfig,
    MdnsDiscovery,
    NetworkChanged,
    PeerGone,
    PeerSeen,
)
from p2psync.discovery.records import SERVICE_TYPE, Advert, BadAdvert

__all__ = [
    "SERVICE_TYPE",
    "Advert",
    "BadAdvert",
    "DiscoveryEvent",
    "MdnsConfig",
    "MdnsDiscovery",
    "NetworkChanged",
    "PeerGone",
    "PeerSeen",
]
