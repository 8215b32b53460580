"""The space ACL: a causal DAG of signed records, replayed deterministically, sans-IO.

* :class:`Acl` holds the records of one space (in memory), admits new raw records, exports them
  in causal order, builds new records for a local author, and implements the
  :class:`~p2psync.replica.acl_gate.AclGate` protocol for object trees.
* :class:`AclState` is the result of replaying a down-closed set of records: members and roles,
  invites, pending join requests, replicators, the read-key graph, and skipped records with the
  reason.

Rules in brief (full text with examples in ``docs/acl.md``):

* **Admission**: a record is stored only if it is well formed, signed, and valid in the state of
  its *own causal past* (so strangers and privilege escalations are refused with a typed error
  and change nothing). Records whose parents are missing wait.
* **Replay order**: topological by ``(depth, id)`` where depth is the longest path from the root;
  the order is intrinsic to each record, so the state of any head is the same on every replica.
* **Conflicts**: records valid in their past may still be skipped at their replay position
  (e.g. the target is already gone). Strong removal: records by an account that a concurrent
  record removes or demotes below admin are vetoed; joins concurrent with the revocation of their
  invite are vetoed; among concurrent permission changes of one member the lowest role wins.
* **Read keys**: every key-introducing record (root, remove, rotate) adds a key to a key graph
  whatever its validity (keys are facts: content may exist under them). The current key is the
  latest *clean* tip (held by members and open invites only). Several tips, an unclean or
  incomplete current key raise :attr:`AclState.rotation_needed`; an admin answers with
  :meth:`Acl.rotate`, which wraps every tip so one key unlocks all history.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from p2psync.codec import Reader, pack, unpack
from p2psync.crypto.box import ReadKey, seal, unseal
from p2psync.crypto.keys import SigningKey, verify
from p2psync.errors import (
    AccessDenied,
    BadId,
    BadSignature,
    DecodeError,
    DecryptionFailed,
    InvalidAclRecord,
    InvalidChange,
    RemovedAuthor,
    ReplicaError,
    UnknownReadKey,
)
from p2psync.replica.acl_records import (
    JOIN_DOMAIN,
    MAX_PREV,
    Accept,
    AclRecord,
    AddReplicator,
    Decline,
    DeleteObjects,
    DeleteSpace,
    Invite,
    InviteJoin,
    KeyEntry,
    Kind,
    Leave,
    Merge,
    Payload,
    PermissionChange,
    Remove,
    RemoveReplicator,
    RequestJoin,
    RevokeInvite,
    Role,
    Root,
    Rotate,
    Rotation,
    SpaceMeta,
    TransferOwnership,
    build_record,
    decode_record,
    join_proof_message,
    meta_aad,
)

__all__ = ["Acl", "AclState", "AddResult", "InviteCode", "RequestInfo", "Role"]

#: At most this many records may wait for missing parents (bounds memory against junk).
MAX_PENDING = 4096
#: At most this many merges by departed members are kept aside ("shelved") in case an honest
#: record names them; the oldest is dropped beyond that (a merge is ≤ ~2.3 KiB).
MAX_SHELVED = 1024
#: Pending join requests one invite may hold at once (issue 20.3); one per account besides.
MAX_REQUESTS_PER_INVITE = 32
#: What a replica does with a change whose author was removed at or after the ACL head it
#: names (issue 20.5, docs/acl.md "Removed members' edits"): "flag" keeps it and reports it,
#: "strict" refuses it once the removal is known.
RemovalPolicy = Literal["flag", "strict"]
REMOVAL_POLICIES: tuple[str, ...] = get_args(RemovalPolicy)
_MEMBER, _INVITE = 0, 1
Holder = tuple[int, bytes]
Order = tuple[int, bytes]
_Failure = tuple[type[ReplicaError], str]


def wrap_aad(space_id: str, old_key_id: bytes) -> bytes:
    """Associated data binding a wrapped old key to its space and id."""
    return b"p2psync/acl-wrap\0" + space_id.encode() + b"\0" + old_key_id


def _may_act(actor: Role | None, role: Role) -> bool:
    """May ``actor`` grant ``role``, or change, remove or revoke something holding it?

    One rule for both: only the owner grants or acts on admin, admins grant and act on writer
    and reader, nobody grants or acts on owner (ownership moves only by transfer).
    """
    if actor is None or role == Role.OWNER:
        return False
    if role == Role.ADMIN:
        return actor == Role.OWNER
    return actor >= Role.ADMIN


@dataclass(frozen=True)
class InviteCode:
    """The out-of-band invite secret: the invite record id and the invite key's private seed,
    plus (format 2) the space id and optional ``host:port`` hints so ``join CODE`` can find a
    peer that holds the space."""

    invite_id: bytes
    seed: bytes
    space_id: str = ""
    addresses: tuple[str, ...] = ()

    PREFIX = "p2psync-invite1:"
    PREFIX2 = "p2psync-invite2:"
    MAX_ADDRESSES = 8

    def encode(self) -> str:
        if not self.space_id:
            return self.PREFIX + base64.b32encode(self.invite_id + self.seed).decode().rstrip("=")
        body = pack([self.invite_id, self.seed, self.space_id,
                     list(self.addresses[:self.MAX_ADDRESSES])])
        return self.PREFIX2 + base64.b32encode(body).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> InviteCode:
        text = text.strip()
        v2 = text.startswith(cls.PREFIX2)
        if not v2 and not text.startswith(cls.PREFIX):
            raise BadId("not a p2psync invite code")
        body = text[len(cls.PREFIX):].strip().upper()
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError as exc:
            raise BadId("invite code is not valid base32") from exc
        if v2:
            try:
                r = Reader(unpack(raw, max_size=4096, what="invite code"), "invite code")
                invite_id = r.blob("invite_id", size=32)
                seed = r.blob("seed", size=32)
                space_id = r.text("space_id", max_len=128)
                addrs = r.array("addresses", max_items=cls.MAX_ADDRESSES)
                r.end()
            except DecodeError as exc:
                raise BadId(f"invite code is damaged: {exc}") from exc
            if not space_id or not all(isinstance(a, str) and 0 < len(a) <= 256 for a in addrs):
                raise BadId("invite code is damaged: bad space id or address")
            return cls(invite_id, seed, space_id, tuple(addrs))
        if len(raw) != 64:
            raise BadId("invite code has the wrong length")
        return cls(raw[:32], raw[32:])

    @property
    def key(self) -> SigningKey:
        return SigningKey(self.seed)


@dataclass(frozen=True)
class InviteInfo:
    record_id: bytes
    invite_key: bytes
    anyone_can_join: bool
    role: Role
    author: bytes
    expires_at: int = 0  #: unix seconds, 0 = never

    def expired(self, at: int) -> bool:
        return bool(self.expires_at) and at > self.expires_at


@dataclass(frozen=True)
class RequestInfo:
    record_id: bytes
    joiner: bytes
    invite_id: bytes


@dataclass
class AclState:
    """ACL state after replaying a down-closed set of records (mutable only during replay)."""

    owner: bytes = b""
    members: dict[bytes, Role] = field(default_factory=dict)
    replicators: set[bytes] = field(default_factory=set)
    invites: dict[bytes, InviteInfo] = field(default_factory=dict)
    requests: dict[bytes, RequestInfo] = field(default_factory=dict)
    role_set_by: dict[bytes, bytes] = field(default_factory=dict)
    #: account -> id of the record that removed it (or its leave record).
    departed: dict[bytes, bytes] = field(default_factory=dict)
    #: record id -> why it had no effect at its replay position.
    skipped: dict[bytes, str] = field(default_factory=dict)
    key_order: dict[bytes, Order] = field(default_factory=dict)
    wrapped: set[bytes] = field(default_factory=set)
    holders: dict[bytes, set[Holder]] = field(default_factory=dict)
    #: object id -> id of the tombstone record that deleted it (docs/backup.md "Deletion").
    deleted: dict[bytes, bytes] = field(default_factory=dict)
    #: id of the record that deleted the whole space, if any.
    space_deleted: bytes | None = None
    #: id of the space's current metadata record (SpaceMeta: its name), if any.
    meta: bytes | None = None

    def copy(self) -> AclState:
        return AclState(
            self.owner, dict(self.members), set(self.replicators), dict(self.invites),
            dict(self.requests), dict(self.role_set_by), dict(self.departed),
            dict(self.skipped), dict(self.key_order), set(self.wrapped),
            {k: set(v) for k, v in self.holders.items()}, dict(self.deleted),
            self.space_deleted, self.meta,
        )

    def is_deleted(self, object_id: bytes) -> bool:
        """Whether a tombstone deleted this object or the whole space."""
        return self.space_deleted is not None or object_id in self.deleted

    def role(self, account: bytes) -> Role | None:
        return self.members.get(account)

    def can_write(self, account: bytes) -> bool:
        r = self.members.get(account)
        return r is not None and r >= Role.WRITER

    @property
    def tips(self) -> list[bytes]:
        """Read keys not wrapped by a newer key, oldest first in replay order."""
        return sorted((k for k in self.key_order if k not in self.wrapped),
                      key=self.key_order.__getitem__)

    def _clean(self, key_id: bytes) -> bool:
        for kind, who in self.holders.get(key_id, set()):
            if kind == _MEMBER and who not in self.members:
                return False
            if kind == _INVITE and (who not in self.invites
                                    or not self.invites[who].anyone_can_join):
                return False
        return True

    @property
    def current_key_id(self) -> bytes:
        """The key new content is encrypted under: the latest clean tip, else the latest tip."""
        tips = self.tips
        clean = [k for k in tips if self._clean(k)]
        return (clean or tips)[-1]

    @property
    def rotation_reasons(self) -> list[str]:
        """Why an admin should rotate now (empty when the current key is fine)."""
        reasons = []
        tips = self.tips
        if len(tips) > 1:
            reasons.append(f"{len(tips)} concurrent read keys must be merged")
        cur = self.current_key_id
        if not self._clean(cur):
            reasons.append("the current read key is held by someone who is no longer a member")
        holders = {who for kind, who in self.holders.get(cur, set()) if kind == _MEMBER}
        if any(m not in holders for m in self.members):
            reasons.append("a member does not hold the current read key")
        return reasons

    @property
    def rotation_needed(self) -> bool:
        return bool(self.rotation_reasons)

    def fingerprint(self) -> tuple[object, ...]:
        """Everything replay decides, in a comparable form (for convergence tests)."""
        return (
            self.owner, sorted(self.members.items()), sorted(self.replicators),
            sorted(self.invites), sorted(self.requests), sorted(self.departed.items()),
            sorted(self.skipped.items()), self.tips, self.current_key_id,
            self.rotation_reasons, sorted(self.deleted), self.space_deleted, self.meta,
        )


@dataclass(frozen=True)
class AddResult:
    """Outcome of :meth:`Acl.add`: the record's status, and waiters it released or dropped."""

    id: bytes
    status: Literal["added", "duplicate", "waiting", "ignored"]
    released: tuple[bytes, ...] = ()
    rejected: tuple[tuple[bytes, str], ...] = ()


class Acl:
    """All known ACL records of one space, their replayed states, and the AclGate on top."""

    def __init__(
        self, space_id: str, root_raw: bytes, *, me: SigningKey | None = None,
        owner: bytes | None = None,
    ) -> None:
        root = decode_record(root_raw, space_id)
        if not isinstance(root.payload, Root):
            raise InvalidAclRecord("the first ACL record must be the root")
        if owner is not None and root.author != owner:
            raise AccessDenied("the ACL root is not signed by the space owner")
        self.space_id = space_id
        self.me = me
        self.root_id = root.id
        self._records: dict[bytes, AclRecord] = {}
        self._bit: dict[bytes, int] = {}
        self._anc: dict[bytes, int] = {}
        self._order: dict[bytes, Order] = {}
        self._heads: set[bytes] = set()
        self._state_at: dict[bytes, AclState] = {}
        self._set_states: dict[int, AclState] = {}
        self._pending: dict[bytes, AclRecord] = {}
        self._waiting_on: dict[bytes, set[bytes]] = {}
        self.rejected: dict[bytes, str] = {}
        self._sealed: dict[bytes, list[tuple[bytes, bytes]]] = {}  # key id -> (to, blob)
        self._wraps: dict[bytes, list[tuple[bytes, bytes]]] = {}  # new key -> (old id, ct)
        self._invite_sealed: dict[bytes, dict[bytes, bytes]] = {}  # invite -> key id -> blob
        self._keyrings: dict[bytes, dict[bytes, ReadKey]] = {}
        self._ring_size: dict[bytes, int] = {}
        self._by_bit: list[bytes] = []  # bit -> record id
        self._effective = 0  # mask of every admitted record that is not a merge
        #: merges by departed members, not admitted (see :meth:`_ignorable`); oldest first
        self._shelf: dict[bytes, AclRecord] = {}
        #: account -> admitted removes naming it and leaves by it (admission order)
        self._departures: dict[bytes, list[bytes]] = {}
        #: see RemovalPolicy; set by the space (default "flag")
        self.removal_policy: RemovalPolicy = "flag"
        self._built: list[bytes] = []  # records built here since the last take_built()
        self._promoted: list[bytes] = []  # shelved merges admitted since take_promoted()
        self._register(root)

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def create(cls, space_id: str, owner: SigningKey) -> Acl:
        """A new space ACL: the root record names ``owner`` and seals the first read key."""
        key = ReadKey.generate()
        raw = build_record(owner, space_id, (), Root(seal(key.key, owner.public)))
        return cls(space_id, raw, me=owner, owner=owner.public)

    @classmethod
    def from_records(
        cls, space_id: str, raws: Iterable[bytes], *, me: SigningKey | None = None,
        owner: bytes | None = None,
    ) -> Acl:
        """Rebuild from stored records in any order; bad ones are recorded in ``rejected``."""
        decoded: dict[bytes, AclRecord] = {}
        bad: dict[bytes, str] = {}
        for raw in raws:
            try:
                rec = decode_record(raw, space_id)
            except InvalidAclRecord as exc:
                bad[_safe_id(raw)] = str(exc)
                continue
            decoded[rec.id] = rec
        roots = [rec for rec in decoded.values() if isinstance(rec.payload, Root)]
        if len(roots) != 1:
            raise InvalidAclRecord(f"expected exactly one ACL root, found {len(roots)}")
        acl = cls(space_id, roots[0].raw, me=me, owner=owner)
        acl.rejected.update(bad)
        # Admit in (depth within the set, id) order, and merges by departing accounts that no
        # other record needs last, once every departure is known: which of them are shelved
        # then depends on the set only, not on the order the records were stored in.
        depth = _depths(decoded)
        gone: set[bytes] = set()
        for rec in decoded.values():
            if isinstance(rec.payload, Remove):
                gone.update(rec.payload.members)
            elif isinstance(rec.payload, Leave):
                gone.add(rec.author)
        suspect = {rid for rid, rec in decoded.items()
                   if isinstance(rec.payload, Merge) and rec.author in gone}
        needed: set[bytes] = set()
        stack = [rid for rid in decoded if rid not in suspect]
        while stack:
            cur = stack.pop()
            if cur in needed:
                continue
            needed.add(cur)
            stack.extend(p for p in decoded[cur].prev if p in decoded and p not in needed)
        for rid in sorted(decoded, key=lambda r: (r not in needed, depth[r], r)):
            try:
                acl._add(decoded[rid])
            except ReplicaError as exc:
                acl.rejected[rid] = str(exc)
        return acl

    # --- adding and exporting ----------------------------------------------------------------
    def add(self, raw: bytes) -> AddResult:
        """Admit one raw record. Raises InvalidAclRecord / AccessDenied and changes nothing if
        it is malformed, forged, for another space, or not allowed in its own causal past.

        A merge by a member who has since departed and that does not descend from the
        departure is ``"ignored"`` (kept aside, not admitted) unless a later admitted record
        names it: a removed member's back-dated merges cannot grow the ACL's heads.
        """
        return self._add(decode_record(raw, self.space_id))

    def _add(self, rec: AclRecord) -> AddResult:
        if rec.id in self._records:
            return AddResult(rec.id, "duplicate")
        if rec.id in self._pending:
            return AddResult(rec.id, "waiting")
        if rec.id in self._shelf:
            return AddResult(rec.id, "ignored")
        if isinstance(rec.payload, Root):
            raise InvalidAclRecord("a space has exactly one ACL root")
        missing = [p for p in rec.prev if p not in self._records and p not in self._shelf]
        if missing:
            if len(self._pending) >= MAX_PENDING:
                raise InvalidAclRecord("too many ACL records waiting for missing parents")
            self._pending[rec.id] = rec
            for p in rec.prev:
                if p not in self._records:
                    self._waiting_on.setdefault(p, set()).add(rec.id)
            return AddResult(rec.id, "waiting")
        status = self._settle(rec)
        released: list[bytes] = []
        rejected: list[tuple[bytes, str]] = []
        queue = [rec.id]
        while queue:
            done = queue.pop()
            for wid in sorted(self._waiting_on.pop(done, set())):
                w = self._pending.get(wid)
                if w is None or any(p not in self._records and p not in self._shelf
                                    for p in w.prev):
                    continue
                del self._pending[wid]
                try:
                    got = self._settle(w)
                except ReplicaError as exc:
                    self.rejected[wid] = str(exc)
                    rejected.append((wid, str(exc)))
                    continue
                if got == "added":
                    released.append(wid)
                queue.append(wid)
        return AddResult(rec.id, status, tuple(released), tuple(rejected))

    def _settle(self, rec: AclRecord) -> Literal["added", "ignored"]:
        """Admit or shelve a record whose parents are all admitted or shelved."""
        if self._ignorable(rec):
            self._shelf[rec.id] = rec
            while len(self._shelf) > MAX_SHELVED:
                del self._shelf[next(iter(self._shelf))]
            return "ignored"
        for p in rec.prev:
            if p in self._shelf:
                self._promote(p)
        self._admit(rec)
        return "added"

    def _ignorable(self, rec: AclRecord) -> bool:
        """A merge whose author has departed (removed or left, not back), shelved unless its
        admitted parents descend from that departure. Only merges: they have no effect, so
        leaving one out never changes any state (docs/acl.md "Merges")."""
        if not isinstance(rec.payload, Merge) or rec.author not in self._departures:
            return False
        st = self.state
        gone = st.departed.get(rec.author)
        if gone is None or rec.author in st.members or rec.author in st.replicators:
            return False
        return not any(p in self._records and self.is_ancestor(gone, p) for p in rec.prev)

    def _promote(self, rid: bytes) -> None:
        """Admit a shelved merge (and its shelved ancestors) because an admitted record or a
        tree change names it."""
        order: list[bytes] = []
        stack: list[tuple[bytes, bool]] = [(rid, False)]
        seen: set[bytes] = set()
        while stack:
            cur, expanded = stack.pop()
            if expanded:
                order.append(cur)
                continue
            if cur in seen or cur not in self._shelf:
                continue
            seen.add(cur)
            stack.append((cur, True))
            stack.extend((p, False) for p in self._shelf[cur].prev if p in self._shelf)
        for cur in order:
            self._admit(self._shelf.pop(cur))
            self._promoted.append(cur)

    @property
    def shelved(self) -> list[bytes]:
        """Ids of merges by departed members that were ignored (kept aside, bounded)."""
        return list(self._shelf)

    def take_promoted(self) -> list[bytes]:
        """Ids of shelved merges admitted since the last call (a record or a tree change named
        them), parents first: the caller stores them like any admitted record."""
        out, self._promoted = self._promoted, []
        return out

    def take_built(self) -> list[bytes]:
        """Records built by this replica's builders since the last call, parents first.

        An action may build more than its own record (automatic merges first when there are
        more heads than a record may name): the caller stores and sends all of them.
        """
        out, self._built = self._built, []
        return out

    def export(self) -> list[bytes]:
        """Every admitted record, raw, in causal (replay) order: parents before children."""
        return [self._records[i].raw for i in sorted(self._records, key=self._order.__getitem__)]

    def record(self, record_id: bytes) -> AclRecord:
        return self._records[record_id]

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    @property
    def heads(self) -> list[bytes]:
        return sorted(self._heads, key=self._order.__getitem__)

    @property
    def waiting(self) -> list[bytes]:
        """Ids of records that wait for missing parents."""
        return sorted(self._pending)

    @property
    def state(self) -> AclState:
        """The state after replaying every admitted record."""
        if len(self._heads) == 1:
            return self.state_at(next(iter(self._heads)))
        return self._replay((1 << len(self._bit)) - 1)  # every admitted record

    def state_at(self, record_id: bytes) -> AclState:
        """The state of the causal past of ``record_id`` (itself included); cached."""
        if record_id not in self._records:
            raise InvalidChange("unknown ACL head")
        chain: list[bytes] = []
        cur = record_id
        while cur not in self._state_at:
            prev = self._records[cur].prev
            if len(prev) != 1:
                break
            chain.append(cur)
            cur = prev[0]
        if cur not in self._state_at:
            self._state_at[cur] = self._replay(self._anc[cur])
        state = self._state_at[cur]
        for rid in reversed(chain):
            state = state.copy()
            self._apply(state, self._records[rid], None)
            self._state_at[rid] = state
        return state

    def is_ancestor(self, ancestor: bytes, descendant: bytes) -> bool:
        """Whether ``ancestor`` is in the causal past of ``descendant`` (or equal)."""
        return bool(self._anc[descendant] >> self._bit[ancestor] & 1)

    def concurrent(self, a: bytes, b: bytes) -> bool:
        return not self.is_ancestor(a, b) and not self.is_ancestor(b, a)

    # --- AclGate -----------------------------------------------------------------------------
    def knows_head(self, acl_head: bytes) -> bool:
        """Known and admitted; a shelved merge that a tree change names is admitted now."""
        if acl_head in self._shelf:
            self._promote(acl_head)
        return acl_head in self._records

    def check_change(
        self, author: bytes, acl_head: bytes, read_key_id: bytes,
        parent_acl_heads: Sequence[bytes],
    ) -> None:
        """A tree change is allowed iff its author may write at ``acl_head``, the head does not
        go back from its parents' heads, and its read key is a current key tip at the head."""
        if not self.knows_head(acl_head):
            raise InvalidChange("change names an unknown ACL head")
        for ph in parent_acl_heads:
            if not self.knows_head(ph):
                raise InvalidChange("a parent change names an unknown ACL head")
            if not self.is_ancestor(ph, acl_head):
                raise InvalidChange("change's ACL head is earlier than (or concurrent with) "
                                    "its parents' ACL heads")
        st = self.state_at(acl_head)
        if not st.can_write(author):
            raise AccessDenied("the author may not write at this ACL head")
        if read_key_id not in st.key_order or read_key_id in st.wrapped:
            raise UnknownReadKey("change is not encrypted under a current read key of its head")
        if self.removal_policy == "strict":
            gone = self.removed_after(author, acl_head)
            if gone is not None:
                raise RemovedAuthor(
                    f"the author was removed at or after the ACL head this change names "
                    f"(record {gone.hex()[:16]}…); this space refuses such changes (strict)")

    def removed_after(self, author: bytes, acl_head: bytes) -> bytes | None:
        """Id of an effective removal (or leave) of ``author`` that ``acl_head`` does not
        descend from — the author was removed at or after the head a change names — or None.

        Unlike the gate's decision this depends on every record known here, not only on the
        head's past: a change accepted yesterday may be flagged today, once the removal
        arrives. Such a change may be a genuine edit made before the removal, or one
        back-dated by the removed member and relayed by a colluder: nothing tells them apart
        without a consensus server, so it is flagged (or refused under "strict").
        """
        ids = self._departures.get(author)
        if not ids or acl_head not in self._records:
            return None
        skipped = self.state.skipped
        for rid in ids:
            if rid not in skipped and not self.is_ancestor(rid, acl_head):
                return rid
        return None

    def read_key(self, read_key_id: bytes) -> ReadKey | None:
        if self.me is None:
            return None
        return self._keyring(self.me).get(read_key_id)

    def write_position(self, author: bytes) -> tuple[bytes, bytes]:
        """The latest head (replay order) at which ``author`` may write, and its current key.
        With several ACL heads, call :meth:`merge` first so changes can name one head."""
        for h in reversed(self.heads):
            st = self.state_at(h)
            if st.can_write(author):
                return h, st.current_key_id
        raise AccessDenied("you may not write in this space")

    def concurrent_removal(self, author: bytes, acl_head: bytes) -> bytes | None:
        """Id of a removal (or leave) of ``author`` concurrent with ``acl_head``, if any.

        Such changes are accepted by the gate (their head allows them) but an application may
        flag or hide them: they may be back-dated edits by a removed member. Superseded by
        :meth:`removed_after`, which also catches removals that descend from the head.
        """
        for rid, rec in self._records.items():
            p = rec.payload
            hit = (isinstance(p, Remove) and author in p.members) or (
                isinstance(p, Leave) and rec.author == author)
            if hit and self.concurrent(rid, acl_head):
                return rid
        return None

    # --- invitees (issue 20.3) ---------------------------------------------------------------
    def invite_open(self, invite_id: bytes, now: float) -> bool:
        """Whether the invite exists, is not revoked and has not expired at ``now``."""
        inv = self.state.invites.get(invite_id)
        return inv is not None and not inv.expired(int(now))

    def pending_requests(self, now: float | None = None) -> list[RequestInfo]:
        """Join requests waiting for an admin, oldest first; with ``now``, those whose invite
        has expired are left out (they are void: an accept would be refused)."""
        st = self.state
        out = [q for q in st.requests.values()
               if now is None or not st.invites[q.invite_id].expired(int(now))]
        return sorted(out, key=lambda q: self._order[q.record_id])

    def check_invitee_push(
        self, raws: Sequence[bytes], account: bytes, now: float | None = None,
    ) -> None:
        """Screen ACL records pushed by a peer whose account is not a member or replicator
        (an invitee) *before* admitting any of them; raise AccessDenied if the push holds
        anything but that account's own join (request or open-invite join).

        Records already held pass. A new join must be signed by ``account`` (the connection's
        certificate account), name an open, unexpired invite, and fit: one pending request
        per account, at most MAX_REQUESTS_PER_INVITE per invite. At most one new record per
        push. The sync engine calls this for non-members and strikes the peer on AccessDenied.
        """
        st = self.state
        new = 0
        for raw in raws:
            try:
                rec = decode_record(raw, self.space_id)
            except InvalidAclRecord as exc:
                raise AccessDenied(f"an invitee pushed a malformed ACL record: {exc}") from exc
            if rec.id in self._records:
                continue
            p = rec.payload
            if not isinstance(p, (RequestJoin, InviteJoin)) or rec.author != account:
                raise AccessDenied("an invitee may push only its own join request")
            new += 1
            if new > 1:
                raise AccessDenied("an invitee may push one join request at a time")
            inv = st.invites.get(p.invite_id)
            if inv is None or (now is not None and inv.expired(int(now))):
                raise AccessDenied("the invite does not exist, was revoked or has expired")
            if account in st.members or account in st.replicators:
                raise AccessDenied("already a member")
            if isinstance(p, RequestJoin):
                if any(q.joiner == account for q in st.requests.values()):
                    raise AccessDenied("this account already has a pending join request")
                if sum(q.invite_id == p.invite_id
                       for q in st.requests.values()) >= MAX_REQUESTS_PER_INVITE:
                    raise AccessDenied("too many pending join requests for this invite")

    # --- keys --------------------------------------------------------------------------------
    def _keyring(self, who: SigningKey) -> dict[bytes, ReadKey]:
        """Every read key ``who`` can open: sealed to it, or wrapped by a key it holds."""
        ring = self._keyrings.setdefault(who.public, {})
        if self._ring_size.get(who.public) == len(self._records):
            return ring
        self._ring_size[who.public] = len(self._records)
        for kid in sorted(self._sealed.keys() | self._wraps.keys(),
                          key=self._order.__getitem__, reverse=True):
            if kid not in ring:
                for to, blob in self._sealed.get(kid, ()):
                    if to == who.public:
                        try:
                            ring[kid] = ReadKey(unseal(blob, who))
                            break
                        except (DecryptionFailed, ValueError):
                            continue
            if kid in ring:
                for old, ct in self._wraps.get(kid, ()):
                    if old not in ring:
                        try:
                            ring[old] = ReadKey(ring[kid].decrypt(ct, wrap_aad(self.space_id,
                                                                               old)))
                        except (DecryptionFailed, ValueError):
                            continue
        return ring

    def history_keys(self, key_id: bytes, key: ReadKey) -> dict[bytes, ReadKey]:
        """Every older key reachable from one key by unwrapping rotations (no account key)."""
        ring = {key_id: key}
        for kid in sorted(self._wraps, key=self._order.__getitem__, reverse=True):
            if kid in ring:
                for old, ct in self._wraps[kid]:
                    if old not in ring:
                        ring[old] = ReadKey(ring[kid].decrypt(ct, wrap_aad(self.space_id, old)))
        return ring

    def keys_of(self, who: SigningKey) -> dict[bytes, ReadKey]:
        """Read keys an account can open from the records (for tests and key export)."""
        return dict(self._keyring(who))

    def _key_for(self, who: SigningKey, key_id: bytes) -> ReadKey:
        key = self._keyring(who).get(key_id)
        if key is None:
            raise AccessDenied("you do not hold the current read key")
        return key

    # --- record builders ---------------------------------------------------------------------
    def _emit(self, author: SigningKey, payload: Payload) -> bytes:
        """Build, admit and remember (:meth:`take_built`) a record naming every head; with
        more heads than a record may name, merge them first in groups (issue 12.3: however
        many heads others made, an admin's action still builds)."""
        heads = self.heads
        if (isinstance(payload, (RequestJoin, InviteJoin)) and len(heads) > MAX_PREV
                and payload.invite_id in self):
            # A joiner is no member and cannot merge: name the newest heads that hold the
            # invite, at most MAX_PREV of them.
            heads = [h for h in reversed(heads)
                     if self.is_ancestor(payload.invite_id, h)][:MAX_PREV] or heads
        elif not isinstance(payload, Merge):
            self._merge_down(author)
            heads = self.heads
        raw = build_record(author, self.space_id, heads, payload)
        self.add(raw)
        self._built.append(raw)
        return raw

    def _merge_down(self, author: SigningKey) -> None:
        """Merge heads in groups of ≤ MAX_PREV until one record can name them all."""
        while len(self._heads) > MAX_PREV:
            heads = self.heads
            for i in range(0, len(heads), MAX_PREV):
                group = heads[i:i + MAX_PREV]
                if len(group) >= 2:
                    raw = build_record(author, self.space_id, group, Merge())
                    self.add(raw)
                    self._built.append(raw)

    def _sealed_tips(self, author: SigningKey, to: bytes) -> tuple[KeyEntry, ...]:
        return tuple(KeyEntry(k, seal(self._key_for(author, k).key, to)) for k in self.state.tips)

    def _rotation(self, author: SigningKey, st: AclState, members: Iterable[bytes]) -> Rotation:
        new = ReadKey.generate()
        return Rotation(
            members=tuple(KeyEntry(m, seal(new.key, m)) for m in sorted(members)),
            invites=tuple(KeyEntry(i, seal(new.key, inv.invite_key))
                          for i, inv in sorted(st.invites.items()) if inv.anyone_can_join),
            wraps=tuple(KeyEntry(k, new.encrypt(self._key_for(author, k).key,
                                                wrap_aad(self.space_id, k)))
                        for k in st.tips),
        )

    def invite(
        self, author: SigningKey, role: Role = Role.WRITER, *, anyone_can_join: bool = False,
        expires_at: int = 0,
    ) -> tuple[bytes, InviteCode]:
        """Create an invite; hand the returned code to the invitee out of band. With
        ``expires_at`` (unix seconds) joins and accepts after that time are refused and its
        pending requests void."""
        ikey = SigningKey.generate()
        keys = self._sealed_tips(author, ikey.public) if anyone_can_join else ()
        raw = self._emit(author, Invite(ikey.public, anyone_can_join, role, keys, expires_at))
        return raw, InviteCode(decode_record(raw).id, ikey.seed, self.space_id)

    def request_join(self, joiner: SigningKey, code: InviteCode) -> bytes:
        """Ask to join through an approval-required invite (an admin must accept)."""
        proof = code.key.sign(JOIN_DOMAIN, join_proof_message(self.space_id, code.invite_id,
                                                              joiner.public))
        return self._emit(joiner, RequestJoin(code.invite_id, proof))

    def join(self, joiner: SigningKey, code: InviteCode) -> bytes:
        """Join through an anyone-can-join invite: the code unlocks the current read key."""
        proof = code.key.sign(JOIN_DOMAIN, join_proof_message(self.space_id, code.invite_id,
                                                              joiner.public))
        entries = []
        sealed = self._invite_sealed.get(code.invite_id, {})
        for k in self.state.tips:
            if k not in sealed:
                raise AccessDenied("this invite does not unlock the current read key")
            entries.append(KeyEntry(k, seal(unseal(sealed[k], code.key), joiner.public)))
        return self._emit(joiner, InviteJoin(code.invite_id, proof, tuple(entries)))

    def accept(self, author: SigningKey, request_id: bytes, role: Role | None = None) -> bytes:
        """Accept a join request: seal the current key(s) to the joiner with ``role``."""
        req = self._records.get(request_id)
        if req is None or not isinstance(req.payload, RequestJoin):
            raise InvalidAclRecord("no such join request")
        if role is None:
            inv = self._records.get(req.payload.invite_id)
            role = inv.payload.role if inv and isinstance(inv.payload, Invite) else Role.READER
        return self._emit(author, Accept(request_id, role,
                                         self._sealed_tips(author, req.author)))

    def decline(self, author: SigningKey, request_id: bytes) -> bytes:
        return self._emit(author, Decline(request_id))

    def revoke_invite(self, author: SigningKey, invite_id: bytes) -> bytes:
        return self._emit(author, RevokeInvite(invite_id))

    def change_permission(self, author: SigningKey, member: bytes, role: Role) -> bytes:
        return self._emit(author, PermissionChange(member, role))

    def remove(self, author: SigningKey, members: Sequence[bytes]) -> bytes:
        """Remove members and rotate the read key to everyone who stays."""
        st = self.state
        stay = [m for m in st.members if m not in set(members)]
        return self._emit(author, Remove(tuple(sorted(set(members))),
                                         self._rotation(author, st, stay)))

    def leave(self, author: SigningKey) -> bytes:
        """Leave the space; an admin then rotates (the state reports ``rotation_needed``)."""
        return self._emit(author, Leave())

    def transfer_ownership(self, author: SigningKey, new_owner: bytes) -> bytes:
        return self._emit(author, TransferOwnership(new_owner))

    def add_replicator(self, author: SigningKey, account: bytes) -> bytes:
        return self._emit(author, AddReplicator(account))

    def remove_replicator(self, author: SigningKey, account: bytes) -> bytes:
        return self._emit(author, RemoveReplicator(account))

    def rotate(self, author: SigningKey) -> bytes:
        """New read key for all members, wrapping every current tip (merges concurrent keys)."""
        st = self.state
        return self._emit(author, Rotate(self._rotation(author, st, st.members)))

    def merge(self, author: SigningKey) -> bytes:
        """A no-op record joining all current ACL heads (any member or replicator may); with
        more than MAX_PREV heads, merges in groups and returns the last one."""
        before = len(self._built)
        self._merge_down(author)
        if len(self._heads) < 2 and len(self._built) > before:
            return self._built[-1]
        return self._emit(author, Merge())

    def delete_objects(self, author: SigningKey, objects: Sequence[bytes]) -> bytes:
        """A tombstone: these objects are deleted everywhere (writers and above may)."""
        return self._emit(author, DeleteObjects(tuple(sorted(set(objects)))))

    def set_meta(self, author: SigningKey, meta: dict[str, Any]) -> bytes:
        """A SpaceMeta record: ``meta`` (e.g. ``{"name": "Notes"}``) encrypted under the
        current read key, so only members can read it (admins and the owner only)."""
        kid = self.state.current_key_id
        key = self._key_for(author, kid)
        sealed = key.encrypt(pack(meta), meta_aad(self.space_id, kid))
        return self._emit(author, SpaceMeta(kid, sealed))

    def meta(self, who: SigningKey | None = None) -> dict[str, Any] | None:
        """The space's current metadata as ``who`` (default: this replica's account) reads
        it, or None: none set, or no key ``who`` holds opens it (a replicator, a pending
        joiner, a member removed before the rename)."""
        rid = self.state.meta
        who = who if who is not None else self.me
        if rid is None or who is None:
            return None
        p = self._records[rid].payload
        assert isinstance(p, SpaceMeta)
        key = self._keyring(who).get(p.key_id)
        if key is None:
            return None
        try:
            out = unpack(key.decrypt(p.sealed, meta_aad(self.space_id, p.key_id)),
                         what="space metadata")
        except (DecryptionFailed, DecodeError):
            return None
        return out if isinstance(out, dict) else None

    def delete_space(self, author: SigningKey) -> bytes:
        """A tombstone for the whole space: every object dropped, no new changes (owner)."""
        return self._emit(author, DeleteSpace())

    # --- admission, replay -------------------------------------------------------------------
    def _state_before(self, rec: AclRecord) -> AclState:
        if len(rec.prev) == 1:
            return self.state_at(rec.prev[0])
        mask = 0
        for p in rec.prev:
            mask |= self._anc[p]
        return self._replay(mask)

    def _admit(self, rec: AclRecord) -> None:
        past = self._state_before(rec)
        fail = self._check_structure(past, rec) or self._check(past, rec)
        if fail is not None:
            raise fail[0](fail[1])
        self._register(rec)

    def _register(self, rec: AclRecord) -> None:
        bit = len(self._bit)
        self._bit[rec.id] = bit
        self._by_bit.append(rec.id)
        if not isinstance(rec.payload, Merge):
            self._effective |= 1 << bit
        if isinstance(rec.payload, Remove):
            for m in rec.payload.members:
                self._departures.setdefault(m, []).append(rec.id)
        elif isinstance(rec.payload, Leave):
            self._departures.setdefault(rec.author, []).append(rec.id)
        anc = 1 << bit
        depth = 0
        for parent in rec.prev:
            anc |= self._anc[parent]
            depth = max(depth, self._order[parent][0] + 1)
            self._heads.discard(parent)
        self._anc[rec.id] = anc
        self._order[rec.id] = (depth, rec.id)
        self._heads.add(rec.id)
        self._records[rec.id] = rec
        p = rec.payload
        if isinstance(p, Root):
            self._sealed.setdefault(rec.id, []).append((rec.author, p.sealed_key))
        rot = rec.rotation
        if rot is not None:
            self._sealed.setdefault(rec.id, []).extend((e.ref, e.blob) for e in rot.members)
            self._wraps[rec.id] = [(e.ref, e.blob) for e in rot.wraps]
            for e in rot.invites:
                self._invite_sealed.setdefault(e.ref, {})[rec.id] = e.blob
        if isinstance(p, Invite):
            for e in p.keys:
                self._invite_sealed.setdefault(rec.id, {})[e.ref] = e.blob
        if isinstance(p, (Accept, InviteJoin)):
            joiner = self._joiner(rec)
            for e in p.keys:
                self._sealed.setdefault(e.ref, []).append((joiner, e.blob))

    def _joiner(self, rec: AclRecord) -> bytes:
        if isinstance(rec.payload, Accept):
            return self._records[rec.payload.request_id].author
        return rec.author

    def _replay(self, mask: int) -> AclState:
        """Replay the records in ``mask`` (a down-closed set) in (depth, id) order; cached.

        Merges have no effect and their place in the order is intrinsic to the others, so
        they are left out and the cache is keyed by the non-merge records: any number of merges
        over the same records share one replay (a flood of merges costs no replays).
        """
        mask &= self._effective
        cached = self._set_states.get(mask)
        if cached is not None:
            return cached
        bits = bin(mask)[:1:-1]
        ids = sorted((self._by_bit[b] for b, c in enumerate(bits) if c == "1"),
                     key=self._order.__getitem__)
        vetoers: dict[bytes, list[bytes]] = {}
        revokes: dict[bytes, list[bytes]] = {}
        for rid in ids:
            p = self._records[rid].payload
            if isinstance(p, Remove):
                for m in p.members:
                    vetoers.setdefault(m, []).append(rid)
            elif isinstance(p, PermissionChange) and p.role < Role.ADMIN:
                vetoers.setdefault(p.member, []).append(rid)
            elif isinstance(p, RevokeInvite):
                revokes.setdefault(p.invite_id, []).append(rid)
        state = AclState()
        for rid in ids:
            rec = self._records[rid]
            veto = None
            if rec.kind not in (Kind.ROOT, Kind.LEAVE, Kind.MERGE):
                for d in vetoers.get(rec.author, ()):
                    if self.concurrent(d, rid):
                        veto = f"vetoed: its author is removed or demoted by concurrent {d.hex()}"
                        break
            if isinstance(rec.payload, (RequestJoin, InviteJoin)):
                for d in revokes.get(rec.payload.invite_id, ()):
                    if self.concurrent(d, rid):
                        veto = f"vetoed: its invite is revoked by concurrent {d.hex()}"
                        break
            self._apply(state, rec, veto)
        if len(self._set_states) > 256:
            self._set_states.clear()
        self._set_states[mask] = state
        return state

    def _apply(self, s: AclState, rec: AclRecord, veto: str | None) -> None:
        """Apply one record at its replay position: key-graph facts always, effects if valid."""
        p = rec.payload
        rid = rec.id
        if rec.introduces_key:
            s.key_order[rid] = self._order[rid]
            holders: set[Holder] = {(_MEMBER, rec.author)}
            rot = rec.rotation
            if rot is not None:
                s.wrapped.update(e.ref for e in rot.wraps)
                holders.update((_MEMBER, e.ref) for e in rot.members)
                holders.update((_INVITE, e.ref) for e in rot.invites)
            s.holders[rid] = holders
        if isinstance(p, Invite):
            for e in p.keys:
                s.holders.setdefault(e.ref, set()).add((_INVITE, rid))
        if isinstance(p, (Accept, InviteJoin)):
            joiner = self._joiner(rec)
            for e in p.keys:
                s.holders.setdefault(e.ref, set()).add((_MEMBER, joiner))
        if isinstance(p, Root):
            s.owner = rec.author
            s.members[rec.author] = Role.OWNER
            s.role_set_by[rec.author] = rid
            return
        if veto is not None:
            s.skipped[rid] = veto
            return
        fail = self._check(s, rec)
        if fail is not None:
            s.skipped[rid] = fail[1]
            return
        author = rec.author
        match p:
            case Invite():
                s.invites[rid] = InviteInfo(rid, p.invite_key, p.anyone_can_join, p.role,
                                            author, p.expires_at)
            case RequestJoin():
                s.requests[rid] = RequestInfo(rid, author, p.invite_id)
            case InviteJoin():
                self._set_role(s, author, s.invites[p.invite_id].role, rid)
            case Accept():
                req = s.requests.pop(p.request_id)
                self._set_role(s, req.joiner, p.role, rid)
            case Decline():
                del s.requests[p.request_id]
            case RevokeInvite():
                del s.invites[p.invite_id]
                for q in [q for q, info in s.requests.items() if info.invite_id == p.invite_id]:
                    del s.requests[q]  # revoking an invite voids its pending requests
            case PermissionChange():
                self._set_role(s, p.member, p.role, rid)
            case Remove():
                for m in p.members:
                    if m in s.members:
                        self._depart(s, m, rid)
            case Leave():
                self._depart(s, author, rid)
            case TransferOwnership():
                self._set_role(s, author, Role.ADMIN, rid)
                self._set_role(s, p.new_owner, Role.OWNER, rid)
                s.owner = p.new_owner
            case AddReplicator():
                s.replicators.add(p.account)
            case RemoveReplicator():
                s.replicators.discard(p.account)
            case Rotate() | Merge():
                pass
            case DeleteObjects():
                for obj in p.objects:
                    s.deleted.setdefault(obj, rid)
            case DeleteSpace():
                s.space_deleted = rid
            case SpaceMeta():
                s.meta = rid

    def _role_seen(self, s: AclState, rec: AclRecord, member: bytes, current: Role) -> Role:
        """The member's role for judging ``rec``'s right to act on them.

        If a record concurrent with ``rec`` set the member's current role, ``rec``'s author
        could not have seen it: judge against the role in ``rec``'s own causal past instead, so
        the outcome (remove wins, lowest role wins) does not depend on the id tie-break.
        A member made owner by a concurrent transfer is judged as owner: no admin acts on the
        owner, so a removal or demotion racing the transfer never leaves the space ownerless.
        """
        if current == Role.OWNER:
            return current
        setter = s.role_set_by.get(member)
        if setter is None or rec.id not in self._bit or not self.concurrent(setter, rec.id):
            return current
        seen = self._state_before(rec).role(member)
        return current if seen is None else seen

    @staticmethod
    def _set_role(s: AclState, who: bytes, role: Role, rid: bytes) -> None:
        s.members[who] = role
        s.role_set_by[who] = rid
        s.departed.pop(who, None)

    @staticmethod
    def _depart(s: AclState, who: bytes, rid: bytes) -> None:
        del s.members[who]
        s.role_set_by.pop(who, None)
        s.departed[who] = rid

    def _check(self, s: AclState, rec: AclRecord) -> _Failure | None:
        """Is ``rec`` allowed in state ``s``? ``None`` if yes, else (error type, reason)."""
        p = rec.payload
        a = rec.author
        ra = s.role(a)
        denied = AccessDenied
        bad = InvalidAclRecord
        match p:
            case Root():
                return bad, "a space has exactly one ACL root"
            case Invite():
                if not _may_act(ra, p.role):
                    return denied, f"author may not invite as {p.role.name.lower()}"
                if p.anyone_can_join and p.role > Role.WRITER:
                    return bad, "anyone-can-join invites grant reader or writer only"
            case RequestJoin() | InviteJoin():
                inv = s.invites.get(p.invite_id)
                if inv is None:
                    return bad, "the invite does not exist or was revoked"
                if inv.anyone_can_join != isinstance(p, InviteJoin):
                    return bad, "wrong join kind for this invite"
                if ra is not None:
                    return bad, "the joiner is already a member"
                if inv.expired(rec.timestamp):
                    return bad, "the invite has expired"
                if isinstance(p, RequestJoin):
                    if any(q.joiner == a for q in s.requests.values()):
                        return bad, "this account already has a pending join request"
                    if sum(q.invite_id == p.invite_id
                           for q in s.requests.values()) >= MAX_REQUESTS_PER_INVITE:
                        return bad, "too many pending join requests for this invite"
            case Accept():
                req = s.requests.get(p.request_id)
                if req is None:
                    return bad, "the join request is not pending"
                if not _may_act(ra, p.role):
                    return denied, f"author may not accept as {p.role.name.lower()}"
                if req.joiner in s.members:
                    return bad, "the joiner is already a member"
                inv = s.invites.get(req.invite_id)
                if inv is not None and inv.expired(rec.timestamp):
                    return bad, "the invite has expired (its requests are void)"
            case Decline():
                if p.request_id not in s.requests:
                    return bad, "the join request is not pending"
                if ra is None or ra < Role.ADMIN:
                    return denied, "only admins decline join requests"
            case RevokeInvite():
                inv = s.invites.get(p.invite_id)
                if inv is None:
                    return bad, "the invite does not exist or was revoked"
                if not _may_act(ra, inv.role):
                    return denied, "author may not revoke this invite"
            case PermissionChange():
                target = s.role(p.member)
                if target is None:
                    return bad, "not a member"
                if not _may_act(ra, self._role_seen(s, rec, p.member, target)) or not _may_act(
                        ra, p.role):
                    return denied, "author may not change this member's role"
                if target == p.role:
                    return bad, "role unchanged"
                setter = s.role_set_by.get(p.member)
                if (setter is not None and target < p.role and rec.id in self._bit
                        and self.concurrent(setter, rec.id)):
                    return bad, "a concurrent change set a lower role (lowest role wins)"
            case Remove():
                if ra is None or ra < Role.ADMIN:
                    return denied, "only admins and the owner remove members"
                present = [m for m in p.members if m in s.members]
                if not present:
                    return bad, "every named member is already gone"
                for m in present:
                    if not _may_act(ra, self._role_seen(s, rec, m, s.members[m])):
                        return denied, "author may not remove a member of equal or higher rank"
            case Leave():
                if ra is None:
                    return bad, "not a member"
                if ra == Role.OWNER:
                    return denied, "the owner must transfer ownership before leaving"
            case TransferOwnership():
                if ra != Role.OWNER:
                    return denied, "only the owner transfers ownership"
                if p.new_owner not in s.members or p.new_owner == a:
                    return bad, "the new owner must be another member"
            case AddReplicator():
                if ra is None or ra < Role.ADMIN:
                    return denied, "only admins and the owner add replicators"
                if p.account in s.replicators or p.account in s.members:
                    return bad, "already a replicator or a member"
            case RemoveReplicator():
                if ra is None or ra < Role.ADMIN:
                    return denied, "only admins and the owner remove replicators"
                if p.account not in s.replicators:
                    return bad, "not a replicator"
            case Rotate():
                if ra is None or ra < Role.ADMIN:
                    return denied, "only admins and the owner rotate the read key"
            case Merge():
                if ra is None and a not in s.replicators:
                    return denied, "only members and replicators merge ACL heads"
            case DeleteObjects():
                if ra is None or ra < Role.WRITER:
                    return denied, "only writers, admins and the owner delete objects"
                if all(o in s.deleted for o in p.objects):
                    return bad, "every named object is already deleted"
            case DeleteSpace():
                if ra != Role.OWNER:
                    return denied, "only the owner deletes the space"
                if s.space_deleted is not None:
                    return bad, "the space is already deleted"
            case SpaceMeta():
                if ra is None or ra < Role.ADMIN:
                    return denied, "only admins and the owner rename the space"
                if p.key_id not in s.key_order:
                    return bad, "space metadata under an unknown read key"
        return None

    def _check_structure(self, past: AclState, rec: AclRecord) -> _Failure | None:
        """Checks that only make sense against the author's own causal past (done once)."""
        p = rec.payload
        bad = InvalidAclRecord
        tips = set(past.tips)
        if isinstance(p, Invite):
            want = tips if p.anyone_can_join else set()
            if {e.ref for e in p.keys} != want:
                return bad, "invite must seal exactly the current read key(s) (anyone-can-join)"
        if isinstance(p, (RequestJoin, InviteJoin)):
            inv = past.invites.get(p.invite_id)
            if inv is None:
                return bad, "the invite does not exist or was revoked"
            try:
                verify(inv.invite_key, JOIN_DOMAIN,
                       join_proof_message(self.space_id, p.invite_id, rec.author), p.proof)
            except BadSignature:
                return AccessDenied, "join proof does not match the invite (wrong invite code)"
        if isinstance(p, (InviteJoin, Accept)) and {e.ref for e in p.keys} != tips:
            return bad, "must seal exactly the current read key(s) to the joiner"
        if isinstance(p, Accept):
            req = self._records.get(p.request_id)
            if req is None or not isinstance(req.payload, RequestJoin):
                return bad, "accept names no join request"
        if isinstance(p, Merge):
            below = 0  # everything strictly below some parent
            for q in rec.prev:
                below |= self._anc[q] & ~(1 << self._bit[q])
            if any(below >> self._bit[q] & 1 for q in rec.prev):
                return bad, ("a merge must join heads it saw: none of its parents may be an "
                             "ancestor of another")
        if isinstance(p, Remove) and any(m not in past.members for m in p.members):
            return bad, "remove names an account that is not a member"
        rot = rec.rotation
        if rot is not None:
            gone = set(p.members) if isinstance(p, Remove) else set()
            stay = set(past.members) - gone
            if {e.ref for e in rot.members} != stay:
                return bad, "rotation must seal the new key to exactly the remaining members"
            open_inv = {i for i, inv in past.invites.items() if inv.anyone_can_join}
            if {e.ref for e in rot.invites} != open_inv:
                return bad, "rotation must seal the new key to exactly the open invites"
            if {e.ref for e in rot.wraps} != tips:
                return bad, "rotation must wrap exactly the current read key tips"
        return None


def _depths(records: dict[bytes, AclRecord]) -> dict[bytes, int]:
    """Depth of each record within ``records`` (a parent outside the set counts as very deep,
    so records that will wait sort last)."""
    far = 1 << 62
    depth: dict[bytes, int] = {}
    for start in records:
        stack = [start]
        while stack:
            cur = stack[-1]
            if cur in depth:
                stack.pop()
                continue
            todo = [p for p in records[cur].prev if p in records and p not in depth]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            depth[cur] = 1 + max((depth[p] if p in records else far for p in records[cur].prev),
                                 default=-1)
    return depth


def _safe_id(raw: bytes) -> bytes:
    from p2psync.codec import content_id

    try:
        return content_id(bytes(raw))
    except TypeError:
        return b""
