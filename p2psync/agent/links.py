"""Which duplicate connections to drop (sans-IO).

:func:`duplicates_to_close` settles the race where two peers dial each other at once: both
sides keep the connection dialled by the smaller peer id, so they agree without talking.
(What to dial is :func:`p2psync.dialer.plan_dials`.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PeerLink:
    """One live peer connection as the agent sees it (not the transport's ``Link``)."""

    key: int  #: identity of the engine (id())
    peer_id: str
    outgoing: bool  #: we dialled it


def duplicates_to_close(me: str, links: Iterable[PeerLink]) -> list[int]:
    """Keys of our links to close so one connection per peer remains.

    Rule: the connection dialled by the smaller peer id wins; among several of the same
    direction, the first listed (oldest) wins. The remote side applies the same rule.
    """
    by_peer: dict[str, list[PeerLink]] = {}
    for link in links:
        by_peer.setdefault(link.peer_id, []).append(link)
    close: list[int] = []
    for peer, group in by_peer.items():
        if len(group) < 2:
            continue
        preferred_outgoing = me < peer  # we are the smaller id: our dial wins
        keep = next((lk for lk in group if lk.outgoing == preferred_outgoing), group[0])
        close.extend(lk.key for lk in group if lk is not keep)
    return close
