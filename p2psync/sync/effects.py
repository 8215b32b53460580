"""What the sans-IO sync cores ask the engine shell to do (frozen dataclasses).

The cores (:mod:`responder`, :mod:`pull`, :mod:`bootstrap`, :mod:`ingest`, :mod:`push`) decide;
they never send, sleep or close anything. Each decision that needs the connection or the event
loop is returned as one of these effects and carried out by
:class:`~p2psync.sync.engine.PeerEngine` in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2psync.sync.messages import Message

#: ("space"|"heads"|"acl"|"tree", space id, tree id or b""); "heads" is a head sync without
#: the ACL pull (the in-sync check after our pushes, :mod:`p2psync.sync.insync`)
JobKey = tuple[str, str, bytes]


@dataclass(frozen=True)
class Strike:
    """The peer broke a rule: count it; past ``strikes_to_close`` the connection closes."""

    why: str


@dataclass(frozen=True)
class Violation:
    """The peer broke a rule that ends the connection at once (strike + disconnect)."""

    why: str


@dataclass(frozen=True)
class Push:
    """Queue ``message`` on our request stream (request id 0); bounded by the push queue."""

    message: Message
    space_id: str


@dataclass(frozen=True)
class Submit:
    """Schedule a sync job with this peer (deduped, rate limited by the scheduler); with
    ``spacing``, throttled: runs of the key start at least that many seconds apart."""

    key: JobKey
    priority: int = 1
    spacing: float = 0.0


@dataclass(frozen=True)
class Offered:
    """The peer offered us a space it replicates for us (a backup decides what to do)."""

    space_id: str


@dataclass(frozen=True)
class Answer:
    """Send ``message`` on the peer's request stream as the answer to ``request_id`` (in the
    order given; the read loop waits for the send, so a flooding peer is slowed down)."""

    message: Message
    request_id: int


@dataclass(frozen=True)
class Serve:
    """An admitted request: answer it in its own task (``Responder.prepare`` → take in the
    changes it carries → ``Responder.answer`` → send → ``Responder.served``)."""

    message: Message
    request_id: int


@dataclass(frozen=True)
class Befriend:
    """The peer shares something with us now: lift the transport's stranger restriction."""


Effect = Strike | Violation | Push | Submit | Offered | Answer | Serve | Befriend
