"""ACL record wire format: signed, domain-separated envelopes forming a causal DAG.

``raw = pack([body, sig])`` signed by the author's account key under domain ``"acl-record"``;
``body = pack([1, space_id, prev, author, timestamp, kind, payload])``. The record id is the
BLAKE2b-256 of ``raw`` exactly as received. Decoding is strict (types, sizes, sorted unique
lists, no trailing fields) and raises :class:`~p2psync.errors.InvalidAclRecord`. Field order of
every payload is documented in ``docs/acl.md``.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2psync.codec import ID_SIZE, Reader, content_id, pack, unpack
from p2psync.crypto.keys import SigningKey, verify
from p2psync.crypto.signed import make_signed, open_signed
from p2psync.errors import BadSignature, DecodeError, InvalidAclRecord

RECORD_DOMAIN = "acl-record"
#: Domain of the proof a joiner makes with the invite key (binds space, invite and joiner).
JOIN_DOMAIN = "acl-join"
VERSION = 1
#: A rotation seals one key per member: 256 KiB holds ~2 000 members with room to spare.
MAX_ACL_RECORD_SIZE = 256 * 1024
MAX_PREV = 64
MAX_ENTRIES = 2048
#: libsodium sealed box of a 32-byte key: 32 (ephemeral pk) + 16 (tag) + 32.
SEALED_KEY_SIZE = 80
#: ReadKey.encrypt of a 32-byte key: 24 (nonce) + 16 (tag) + 32.
WRAPPED_KEY_SIZE = 72
KEY_SIZE = 32


class Role(enum.IntEnum):
    """Member roles, ordered by rank (a higher value outranks a lower one)."""

    READER = 1
    WRITER = 2
    ADMIN = 3
    OWNER = 4


class Kind(enum.IntEnum):
    """ACL record kinds (the ``kind`` field of the body)."""

    ROOT = 0
    INVITE = 1
    REQUEST_JOIN = 2
    INVITE_JOIN = 3
    ACCEPT = 4
    DECLINE = 5
    REVOKE_INVITE = 6
    PERMISSION_CHANGE = 7
    REMOVE = 8
    LEAVE = 9
    TRANSFER_OWNERSHIP = 10
    ADD_REPLICATOR = 11
    REMOVE_REPLICATOR = 12
    ROTATE = 13
    MERGE = 14
    DELETE_OBJECTS = 15  #: tombstones for objects (docs/backup.md "Deletion")
    DELETE_SPACE = 16
    SPACE_META = 17  #: the space's encrypted metadata (its name), admins only (docs/acl.md)


@dataclass(frozen=True)
class KeyEntry:
    """``[ref, blob]``: a key sealed to a member/invite, or wrapped under a newer key."""

    ref: bytes
    blob: bytes


@dataclass(frozen=True)
class Rotation:
    """A new read key (id = the carrying record's id) for everyone who stays.

    ``members``: new key sealed to each remaining member (ref = account key); ``invites``: sealed
    to each open anyone-can-join invite key (ref = invite id); ``wraps``: every previous key tip
    encrypted under the new key (ref = old key id), so the new key unlocks all history.
    """

    members: tuple[KeyEntry, ...]
    invites: tuple[KeyEntry, ...]
    wraps: tuple[KeyEntry, ...]


@dataclass(frozen=True)
class Root:
    sealed_key: bytes


@dataclass(frozen=True)
class Invite:
    invite_key: bytes
    anyone_can_join: bool
    role: Role
    keys: tuple[KeyEntry, ...]  # current key tips sealed to the invite key (anyone-can-join)
    #: unix seconds after which the invite no longer admits joins (0 = never). Optional
    #: trailing field, encoded only when set, so invites without it keep their bytes and ids.
    expires_at: int = 0


@dataclass(frozen=True)
class RequestJoin:
    invite_id: bytes
    proof: bytes


@dataclass(frozen=True)
class InviteJoin:
    invite_id: bytes
    proof: bytes
    keys: tuple[KeyEntry, ...]  # the joiner seals the current key tips to itself


@dataclass(frozen=True)
class Accept:
    request_id: bytes
    role: Role
    keys: tuple[KeyEntry, ...]  # current key tips sealed to the joiner


@dataclass(frozen=True)
class Decline:
    request_id: bytes


@dataclass(frozen=True)
class RevokeInvite:
    invite_id: bytes


@dataclass(frozen=True)
class PermissionChange:
    member: bytes
    role: Role


@dataclass(frozen=True)
class Remove:
    members: tuple[bytes, ...]
    rotation: Rotation


@dataclass(frozen=True)
class Leave:
    pass


@dataclass(frozen=True)
class TransferOwnership:
    new_owner: bytes


@dataclass(frozen=True)
class AddReplicator:
    account: bytes


@dataclass(frozen=True)
class RemoveReplicator:
    account: bytes


@dataclass(frozen=True)
class Rotate:
    rotation: Rotation


@dataclass(frozen=True)
class Merge:
    pass


@dataclass(frozen=True)
class DeleteObjects:
    objects: tuple[bytes, ...]  #: object (tree) ids, sorted, unique, 1..MAX_ENTRIES


@dataclass(frozen=True)
class DeleteSpace:
    pass


#: Largest encrypted metadata blob of a SpaceMeta record (nonce + tag + a small msgpack map).
MAX_META_SIZE = 2048


@dataclass(frozen=True)
class SpaceMeta:
    """The space's metadata (``{"name": ...}`` as msgpack), encrypted under the read key
    ``key_id`` (XChaCha20-Poly1305, AAD :func:`meta_aad`): members read it, replicators and
    strangers see only its size. The latest valid one in replay order is the space's."""

    key_id: bytes
    sealed: bytes


def meta_aad(space_id: str, key_id: bytes) -> bytes:
    """Associated data binding encrypted space metadata to its space and read key."""
    return b"p2psync/space-meta\0" + space_id.encode() + b"\0" + key_id


Payload = (
    Root | Invite | RequestJoin | InviteJoin | Accept | Decline | RevokeInvite
    | PermissionChange | Remove | Leave | TransferOwnership | AddReplicator | RemoveReplicator
    | Rotate | Merge | DeleteObjects | DeleteSpace | SpaceMeta
)

_KIND_OF: dict[type[Any], Kind] = {
    Root: Kind.ROOT, Invite: Kind.INVITE, RequestJoin: Kind.REQUEST_JOIN,
    InviteJoin: Kind.INVITE_JOIN, Accept: Kind.ACCEPT, Decline: Kind.DECLINE,
    RevokeInvite: Kind.REVOKE_INVITE, PermissionChange: Kind.PERMISSION_CHANGE,
    Remove: Kind.REMOVE, Leave: Kind.LEAVE, TransferOwnership: Kind.TRANSFER_OWNERSHIP,
    AddReplicator: Kind.ADD_REPLICATOR, RemoveReplicator: Kind.REMOVE_REPLICATOR,
    Rotate: Kind.ROTATE, Merge: Kind.MERGE,
    DeleteObjects: Kind.DELETE_OBJECTS, DeleteSpace: Kind.DELETE_SPACE,
    SpaceMeta: Kind.SPACE_META,
}


def kind_of(payload: Payload) -> Kind:
    return _KIND_OF[type(payload)]


@dataclass(frozen=True)
class AclRecord:
    """A decoded, signature-checked ACL record. ``id`` is the content id of ``raw``."""

    id: bytes
    raw: bytes
    space_id: str
    prev: tuple[bytes, ...]
    author: bytes
    timestamp: int
    payload: Payload

    @property
    def kind(self) -> Kind:
        return kind_of(self.payload)

    @property
    def rotation(self) -> Rotation | None:
        """The read-key rotation this record carries, if any (root has its own form)."""
        if isinstance(self.payload, (Remove, Rotate)):
            return self.payload.rotation
        return None

    @property
    def introduces_key(self) -> bool:
        return isinstance(self.payload, (Root, Remove, Rotate))


# --- encoding ---------------------------------------------------------------------------------
def _entries(entries: Sequence[KeyEntry]) -> list[Any]:
    return [[e.ref, e.blob] for e in sorted(entries, key=lambda e: e.ref)]


def _rotation(rot: Rotation) -> list[Any]:
    return [_entries(rot.members), _entries(rot.invites), _entries(rot.wraps)]


def _payload_fields(p: Payload) -> list[Any]:
    match p:
        case Root():
            return [p.sealed_key]
        case Invite():
            fields = [p.invite_key, p.anyone_can_join, int(p.role), _entries(p.keys)]
            return [*fields, p.expires_at] if p.expires_at else fields
        case RequestJoin():
            return [p.invite_id, p.proof]
        case InviteJoin():
            return [p.invite_id, p.proof, _entries(p.keys)]
        case Accept():
            return [p.request_id, int(p.role), _entries(p.keys)]
        case Decline():
            return [p.request_id]
        case RevokeInvite():
            return [p.invite_id]
        case PermissionChange():
            return [p.member, int(p.role)]
        case Remove():
            return [sorted(p.members), _rotation(p.rotation)]
        case TransferOwnership():
            return [p.new_owner]
        case AddReplicator() | RemoveReplicator():
            return [p.account]
        case Rotate():
            return [_rotation(p.rotation)]
        case Leave() | Merge() | DeleteSpace():
            return []
        case DeleteObjects():
            return [sorted(p.objects)]
        case SpaceMeta():
            return [p.key_id, p.sealed]
    raise TypeError(f"unknown payload {p!r}")  # pragma: no cover


def build_record(
    author: SigningKey, space_id: str, prev: Sequence[bytes], payload: Payload,
    timestamp: int | None = None,
) -> bytes:
    """Sign a new record; ``prev`` are the ACL heads the author saw (sorted on the wire)."""
    ts = int(time.time()) if timestamp is None else timestamp
    body = pack([
        VERSION, space_id, sorted(set(prev)), author.public, ts, int(kind_of(payload)),
        _payload_fields(payload),
    ])
    return make_signed(author, RECORD_DOMAIN, body)


def join_proof_message(space_id: str, invite_id: bytes, joiner: bytes) -> bytes:
    """What the invite key signs to let ``joiner`` in: bound to space, invite and account."""
    return pack([space_id, invite_id, joiner])


# --- decoding ---------------------------------------------------------------------------------
def _sorted_unique(name: str, items: Sequence[bytes]) -> None:
    if any(a >= b for a, b in itertools.pairwise(items)):
        raise DecodeError(f"{name}: must be sorted and unique")


def _read_entries(r: Reader, name: str, ref_size: int, blob_size: int) -> tuple[KeyEntry, ...]:
    out = []
    for i, item in enumerate(r.array(name, max_items=MAX_ENTRIES)):
        e = Reader(item, f"{r.what}.{name}[{i}]")
        ref = e.blob("ref", size=ref_size)
        blob = e.blob("blob", size=blob_size)
        e.end()
        out.append(KeyEntry(ref, blob))
    _sorted_unique(name, [e.ref for e in out])
    return tuple(out)


def _read_role(r: Reader) -> Role:
    return Role(r.integer("role", min_value=Role.READER, max_value=Role.OWNER))


def _read_rotation(r: Reader) -> Rotation:
    rr = Reader(r.value("rotation"), f"{r.what}.rotation")
    rot = Rotation(
        members=_read_entries(rr, "members", 32, SEALED_KEY_SIZE),
        invites=_read_entries(rr, "invites", ID_SIZE, SEALED_KEY_SIZE),
        wraps=_read_entries(rr, "wraps", ID_SIZE, WRAPPED_KEY_SIZE),
    )
    rr.end()
    return rot


def _read_payload(kind: Kind, value: Any) -> Payload:
    r = Reader(value, f"acl {kind.name.lower()}")
    p: Payload
    match kind:
        case Kind.ROOT:
            p = Root(r.blob("sealed_key", size=SEALED_KEY_SIZE))
        case Kind.INVITE:
            p = Invite(r.blob("invite_key", size=32), r.boolean("anyone_can_join"),
                       _read_role(r), _read_entries(r, "keys", ID_SIZE, SEALED_KEY_SIZE))
            if len(value) == 5:  # optional expiry (present only when set: never 0)
                p = Invite(p.invite_key, p.anyone_can_join, p.role, p.keys,
                           r.integer("expires_at", min_value=1, max_value=2**63 - 1))
        case Kind.REQUEST_JOIN:
            p = RequestJoin(r.blob("invite_id", size=ID_SIZE), r.blob("proof", size=64))
        case Kind.INVITE_JOIN:
            p = InviteJoin(r.blob("invite_id", size=ID_SIZE), r.blob("proof", size=64),
                           _read_entries(r, "keys", ID_SIZE, SEALED_KEY_SIZE))
        case Kind.ACCEPT:
            p = Accept(r.blob("request_id", size=ID_SIZE), _read_role(r),
                       _read_entries(r, "keys", ID_SIZE, SEALED_KEY_SIZE))
        case Kind.DECLINE:
            p = Decline(r.blob("request_id", size=ID_SIZE))
        case Kind.REVOKE_INVITE:
            p = RevokeInvite(r.blob("invite_id", size=ID_SIZE))
        case Kind.PERMISSION_CHANGE:
            p = PermissionChange(r.blob("member", size=32), _read_role(r))
        case Kind.REMOVE:
            members = tuple(r.blob_list("members", size=32, max_items=MAX_ENTRIES))
            _sorted_unique("members", members)
            if not members:
                raise DecodeError("remove: names no member")
            p = Remove(members, _read_rotation(r))
        case Kind.LEAVE:
            p = Leave()
        case Kind.TRANSFER_OWNERSHIP:
            p = TransferOwnership(r.blob("new_owner", size=32))
        case Kind.ADD_REPLICATOR:
            p = AddReplicator(r.blob("account", size=32))
        case Kind.REMOVE_REPLICATOR:
            p = RemoveReplicator(r.blob("account", size=32))
        case Kind.ROTATE:
            p = Rotate(_read_rotation(r))
        case Kind.MERGE:
            p = Merge()
        case Kind.DELETE_OBJECTS:
            objects = tuple(r.blob_list("objects", size=ID_SIZE, max_items=MAX_ENTRIES))
            _sorted_unique("objects", objects)
            if not objects:
                raise DecodeError("delete objects: names no object")
            p = DeleteObjects(objects)
        case Kind.DELETE_SPACE:
            p = DeleteSpace()
        case Kind.SPACE_META:
            key_id = r.blob("key_id", size=ID_SIZE)
            sealed = r.blob("sealed", max_len=MAX_META_SIZE)
            if len(sealed) < 40:  # nonce + tag: not even an empty ciphertext
                raise DecodeError("space meta: sealed metadata is too short")
            p = SpaceMeta(key_id, sealed)
    r.end()
    return p


def decode_record(raw: bytes, expected_space_id: str | None = None) -> AclRecord:
    """Strictly decode ``raw`` and verify its signature; raise InvalidAclRecord otherwise."""
    try:
        body, sig = open_signed(raw, "acl record", MAX_ACL_RECORD_SIZE)
        r = Reader(unpack(body, max_size=MAX_ACL_RECORD_SIZE, what="acl body"), "acl body")
        r.version([VERSION])
        space_id = r.text("space_id", max_len=128)
        prev = tuple(r.blob_list("prev", size=ID_SIZE, max_items=MAX_PREV))
        _sorted_unique("prev", prev)
        author = r.blob("author", size=32)
        timestamp = r.integer("timestamp", min_value=0, max_value=2**63 - 1)
        kind_n = r.integer("kind", min_value=0, max_value=max(Kind))
        payload = _read_payload(Kind(kind_n), r.value("payload"))
        r.end()
    except DecodeError as exc:
        raise InvalidAclRecord(f"malformed ACL record: {exc}") from exc
    if (kind_n == Kind.ROOT) != (not prev):
        raise InvalidAclRecord("only the root record has no previous ACL heads")
    if kind_n == Kind.MERGE and len(prev) < 2:
        raise InvalidAclRecord("a merge record must join at least two ACL heads")
    if expected_space_id is not None and space_id != expected_space_id:
        raise InvalidAclRecord(
            f"ACL record belongs to space {space_id!r}, not {expected_space_id!r}"
        )
    try:
        verify(author, RECORD_DOMAIN, body, sig)
    except BadSignature as exc:
        raise InvalidAclRecord("ACL record signature does not verify (forged or damaged)") from exc
    return AclRecord(content_id(bytes(raw)), bytes(raw), space_id, prev, author, timestamp,
                     payload)
