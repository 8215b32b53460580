"""Which endpoints to dial and which duplicate connections to drop (sans-IO).

The agent feeds the address book's candidates in with what is connected and being dialled;
:func:`plan_dials` answers what to start now. :func:`duplicates_to_close` settles the race where
two peers dial each other at once: both sides keep the connection dialled by the smaller peer id,
so they agree without talking.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from p2psync.discovery.peers import DialCandidate, Endpoint


@dataclass(frozen=True)
class Link:
    """One live connection as the agent sees it."""

    key: int  #: identity of the engine (id())
    peer_id: str
    outgoing: bool  #: we dialled it


def plan_dials(candidates: Iterable[DialCandidate], *, connected: Collection[str],
               dialing: Collection[Endpoint], dialing_peers: Collection[str],
               aliases: Mapping[tuple[str, int], str], limit: int) -> list[DialCandidate]:
    """The candidates to dial now, best first: at most one dial per peer (and per host:port
    when the peer is not known yet), none to connected peers, ``limit`` dials in flight."""
    out: list[DialCandidate] = []
    busy_hosts = {(ep.host, ep.port) for ep in dialing}
    busy_peers = set(dialing_peers)
    for cand in candidates:
        if len(dialing) + len(out) >= limit:
            break
        ep = cand.endpoint
        pid = cand.peer_id or aliases.get((ep.host, ep.port))
        if pid is not None and (pid in connected or pid in busy_peers):
            continue
        if ep in dialing or (ep.host, ep.port) in busy_hosts:
            continue
        out.append(cand)
        busy_hosts.add((ep.host, ep.port))
        if pid is not None:
            busy_peers.add(pid)
    return out


def duplicates_to_close(me: str, links: Iterable[Link]) -> list[int]:
    """Keys of our links to close so one connection per peer remains.

    Rule: the connection dialled by the smaller peer id wins; among several of the same
    direction, the first listed (oldest) wins. The remote side applies the same rule.
    """
    by_peer: dict[str, list[Link]] = {}
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
