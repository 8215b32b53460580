"""The per-connection sync state the sans-IO cores share (plain data, no I/O).

One :class:`PeerState` per connection: who the peer is (authenticated account and device, the
channel binding), which spaces we sync with it, which invites it proved here, per-space
progress and the "stuck" counters of tree pulls. The responder, the pulls and bootstrap read
and update it; :class:`~p2psync.sync.engine.PeerEngine` only owns it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from p2psync.replica.space import Space
from p2psync.sync.effects import Befriend, Effect, Submit
from p2psync.sync.limits import EngineConfig
from p2psync.sync.messages import StorageRefused
from p2psync.sync.replicas import Replicas
from p2psync.sync.status import PeerSpaceStatus, SpaceState, space_status

UNKNOWN = "unknown space"  #: the one refusal text, so it never names a space


@dataclass
class PeerState:
    """Everything the cores know about one peer on one connection."""

    replicas: Replicas
    config: EngineConfig
    remote_account: bytes
    remote_device: bytes
    binding: bytes  #: the transport's handshake hash (bootstrap proofs are bound to it)
    #: Spaces both sides hold (space exchange, bootstrap, or pushes from an allowed peer).
    shared: set[str] = field(default_factory=set)
    #: space -> invite the peer proved on this connection (ACL access only, while the invite
    #: stays open and the peer has not been a member that left or was removed)
    invited: dict[str, bytes] = field(default_factory=dict)
    spaces: dict[str, SpaceState] = field(default_factory=dict)
    #: (space, tree) -> pulls that left the peer's announced heads missing
    stuck: dict[tuple[str, bytes], int] = field(default_factory=dict)
    my_nonce: bytes = b""  #: our SPACE_HELLO nonce (the peer's bootstrap proof signs it)
    their_nonce: bytes = b""  #: the peer's SPACE_HELLO nonce (our proof signs it)
    #: backup peers: refusals we sent (quota) and the last the peer sent us, per space
    quota_refusals: int = 0
    refused_by_peer: dict[str, StorageRefused] = field(default_factory=dict)
    offered: set[str] = field(default_factory=set)
    strikes: int = 0  #: rules the peer broke on this connection
    #: the peer shared nothing at the exchange: the transport holds it to a small receive
    #: budget and closes it after ``stranger_grace`` unless :meth:`befriend` lifts that
    restricted: bool = False

    def punish(self, why: str, *, violation: bool = False) -> str | None:
        """Count a broken rule; the reason to close the connection when that is the verdict
        (at once for a violation, else once ``strikes_to_close`` is reached), else None."""
        self.strikes += 1
        if violation:
            return f"closed: protocol violation: {why}"
        if self.strikes >= self.config.strikes_to_close:
            return f"closed after {self.strikes} protocol violations (last: {why})"
        return None

    def exchanged(self, shared: Iterable[str]) -> list[Effect]:
        """The space exchange found ``shared``: sync those the peer may access (our ACL), and
        restrict a stranger (see :attr:`restricted`)."""
        out: list[Effect] = []
        for sid in shared:
            if self.may_access(sid):
                self.shared.add(sid)
                out.append(Submit(("space", sid, b"")))
        self.restricted = self.config.stranger_grace is not None and self.is_stranger()
        return out

    def befriend(self, *, force: bool = False, acl_changed: bool = False) -> list[Effect]:
        """Lift the stranger restriction once the peer shares something with us (it proved an
        invite, we bootstrap from it, the ACL made it a member) or we chose to trust it
        (``force``). Cheap after every message (a space or an invite on this connection); the
        walk over every space's ACL runs only when an ACL changed."""
        if self.restricted and (force or self.shared or self.invited
                                or (acl_changed and not self.is_stranger())):
            self.restricted = False
            return [Befriend()]
        return []

    def space_state(self, space_id: str) -> SpaceState:
        st = self.spaces.get(space_id)
        if st is None:
            st = self.spaces[space_id] = SpaceState()
        return st

    def statuses(self) -> list[PeerSpaceStatus]:
        """Each shared space's status with this peer, against our fingerprint now."""
        out = []
        for sid in sorted(self.shared):
            local = self.replicas.ldiff(sid).hash() if sid in self.replicas.spaces else b""
            out.append(space_status(sid, self.space_state(sid), local))
        return out

    def may_access(self, space_id: str) -> bool:
        """Our ACL copy lets the peer's account receive this space (checked on every use)."""
        return self.replicas.may_access(space_id, self.remote_account)

    def allowed(self, space_id: str) -> Space | None:
        """The space if we still sync it with this peer (it may access it by our ACL)."""
        space = self.replicas.spaces.get(space_id)
        if space is None or space_id not in self.shared or not self.may_access(space_id):
            return None
        return space

    def invite_open(self, space: Space, now: float) -> bool:
        """The peer proved an invite for this space here, the invite is still open (not
        revoked, not expired at ``now``), and the peer was never removed from (or left) the
        space."""
        invite_id = self.invited.get(space.id)
        return (invite_id is not None and space.acl.invite_open(invite_id, now)
                and self.remote_account not in space.acl.state.departed)

    def is_stranger(self) -> bool:
        """The peer shares nothing with us: no space in common, no invite proved, not our own
        account, and not a member or replicator of any space we hold (so nothing to sync)."""
        if self.shared or self.invited or self.remote_account == self.replicas.account.public:
            return False
        return not any(self.may_access(sid) for sid in self.replicas.spaces)
