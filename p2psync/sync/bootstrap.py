"""Bootstrap (sans-IO): fetching a space from a peer, with an invite code or as a member.

The joiner proves the invite key by signing this session's challenge
(:func:`bootstrap_message`: space, invite id, the responder's hello nonce, both devices, the
transport's handshake hash — fresh per session, so it cannot be replayed elsewhere). The
responder side checks it in :meth:`p2psync.sync.responder.Responder.proof_ok`. The joiner side
is :class:`BootstrapJoin`: request → adopt the header and ACL → ACL pull → (with a code, if we
are not a member yet) commit the join record or join request → ACL pull → schedule a space
sync. See docs/engine.md, "Bootstrap".
"""

from __future__ import annotations

from p2psync.codec import Reader, pack, unpack
from p2psync.errors import JoinError
from p2psync.replica.acl import InviteCode
from p2psync.replica.space import Space
from p2psync.sync.effects import Effect, Submit
from p2psync.sync.messages import BootstrapRequest, BootstrapResponse, Message
from p2psync.sync.peerstate import PeerState
from p2psync.sync.pull import AclPull, Core
from p2psync.sync.replicas import Pusher

BOOTSTRAP_DOMAIN = "sync-bootstrap-v1"


def bootstrap_message(space_id: str, invite_id: bytes, responder_nonce: bytes,
                      joiner_device: bytes, responder_device: bytes, binding: bytes) -> bytes:
    """What the invite key signs to prove possession to one responder in one session."""
    return pack([space_id, invite_id, responder_nonce, joiner_device, responder_device, binding])


def parse_proof(proof: bytes) -> tuple[bytes, bytes]:
    """``(invite id, signature)`` from a bootstrap proof (DecodeError if malformed)."""
    r = Reader(unpack(proof, max_size=4096, what="bootstrap proof"), "bootstrap proof")
    invite_id = r.blob("invite_id", size=32)
    sig = r.blob("signature", size=64)
    r.end()
    return invite_id, sig


def make_proof(state: PeerState, space_id: str, code: InviteCode) -> bytes:
    """Our proof of ``code``'s invite key for this session."""
    data = bootstrap_message(space_id, code.invite_id, state.their_nonce,
                             state.replicas.device.public, state.remote_device, state.binding)
    return pack([code.invite_id, code.key.sign(BOOTSTRAP_DOMAIN, data)])


class BootstrapJoin(Core):
    """Joiner side of one bootstrap; :attr:`space` is the adopted space once :attr:`done`."""

    def __init__(self, state: PeerState, source: Pusher, space_id: str,
                 code: InviteCode | None = None) -> None:
        super().__init__(state, source)
        self.space_id = space_id
        self.code = code
        self.space: Space | None = None
        self._asked = False
        self._joined = False

    def _next(self) -> tuple[int, Message] | None:
        if self._asked:
            return None
        self._asked = True
        proof = None if self.code is None else make_proof(self.state, self.space_id, self.code)
        return 0, BootstrapRequest(self.space_id, proof, None, 0)

    def _receive(self, tag: int, msg: Message, now: float) -> list[Effect]:
        assert isinstance(msg, BootstrapResponse)
        if msg.header is None or msg.space_id != self.space_id:
            self._fail(JoinError("peer sent no space header"))
            return []
        self.space = self.state.replicas.adopt(self.space_id, msg.header, msg.acl_records)
        self.state.shared.add(self.space_id)
        return self._pull_acl(now)

    def _pull_acl(self, now: float) -> list[Effect]:
        self.sub = AclPull(self.state, self.source, self.space_id)
        if self.sub.done:
            sub, self.sub = self.sub, None
            return self._sub_done(sub, now)
        return []

    def _sub_done(self, sub: Core, now: float) -> list[Effect]:
        st, sid, space = self.state, self.space_id, self.space
        assert space is not None
        me = st.replicas.account
        if self.code is not None and not self._joined and not st.replicas.may_access(
                sid, me.public):
            self._joined = True
            inv = space.acl.state.invites.get(self.code.invite_id)
            if inv is None:
                self._fail(JoinError("the invite is no longer valid (revoked or already used)"))
                return []
            if not inv.anyone_can_join and any(
                    q.joiner == me.public for q in space.acl.state.requests.values()):
                # our request (this code's or an earlier one's) still waits for an admin: a
                # second one would be refused; the caller reports the pending one
                self.done = True
                return []
            raw = (space.acl.join(me, self.code) if inv.anyone_can_join
                   else space.acl.request_join(me, self.code))
            space.commit_acl(raw)  # pushes it to every engine sharing the space
            return self._pull_acl(now)
        self.done = True
        if st.replicas.may_access(sid, me.public):
            return [Submit(("space", sid, b""), 0)]
        return []
