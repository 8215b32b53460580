"""A tiny text DSL for ACL scenarios, so each test reads like the story it checks.

One statement per line or separated by ``;``. ``[r2]`` in front runs it on replica ``r2``
(default ``main``, where ``owner`` created the space). ``-> ok`` (default), ``-> rejected``
(any ReplicaError), ``-> AccessDenied`` / ``-> InvalidAclRecord`` / ... (that error type), or
``-> skipped`` (admitted, but without effect at its replay position).

Actions: ``A invites B as writer [openly]``, ``B requests``, ``A accepts B [as reader]``,
``A declines B``, ``A revokes invite B``, ``B joins`` (open invite: join; else request + the
inviter accepts), ``A sets B to admin``, ``A removes B[, C]``, ``B leaves``, ``A transfers
ownership to B``, ``A adds replicator R``, ``A removes replicator R``, ``A rotates``,
``A merges``, ``B writes``, ``fork r2 [from main]``, ``sync r1 r2``, ``sync all``.

Checks: ``expect B is writer|gone``, ``expect space owner is B``, ``expect replicator R [gone]``,
``expect rotation needed|fine``, ``expect B reads all``, ``expect B cannot read latest``,
``expect converged``, ``expect heads N``.
"""

from __future__ import annotations

import hashlib

from p2psync import errors
from p2psync.crypto.keys import AccountKey
from p2psync.errors import ReplicaError
from p2psync.replica.acl import Acl, InviteCode, Role
from p2psync.replica.acl_records import decode_record

SPACE = "space.test"
ROLES = {r.name.lower(): r for r in Role}


def account(name: str) -> AccountKey:
    return AccountKey(hashlib.blake2b(name.encode(), digest_size=32).digest())


class World:
    """Accounts, replicas and written messages of one scenario."""

    def __init__(self) -> None:
        self.replicas: dict[str, Acl] = {"main": Acl.create(SPACE, account("owner"))}
        self.codes: dict[str, tuple[InviteCode, str, bool]] = {}
        self.requests: dict[str, bytes] = {}
        self.messages: list[tuple[bytes, bytes, bytes]] = []  # (key id, ciphertext, plain)
        self.last_raw: dict[str, bytes] = {}

    # --- helpers -----------------------------------------------------------------------------
    def acl(self, replica: str) -> Acl:
        return self.replicas[replica]

    def pub(self, name: str) -> bytes:
        return account(name).public

    def sync(self, a: str, b: str) -> None:
        ra, rb = self.replicas[a], self.replicas[b]
        for raw in ra.export():
            rb.add(raw)
        for raw in rb.export():
            ra.add(raw)

    # --- running -----------------------------------------------------------------------------
    def run(self, script: str) -> World:
        for line in script.replace(";", "\n").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                self.step(line)
        return self

    def step(self, line: str) -> None:
        expect = "ok"
        if "->" in line:
            line, expect = (x.strip() for x in line.split("->", 1))
        replica = "main"
        if line.startswith("["):
            replica, line = line[1:].split("]", 1)
            line = line.strip()
        try:
            raw = self.do(replica, line)
        except ReplicaError as exc:
            if expect == "ok" or expect == "skipped":
                raise AssertionError(f"{line!r} failed: {type(exc).__name__}: {exc}") from exc
            if expect != "rejected":
                want = getattr(errors, expect)
                assert isinstance(exc, want), f"{line!r}: {type(exc).__name__}, want {expect}"
            return
        if expect == "skipped":
            assert raw is not None
            rid = decode_record(raw).id
            assert rid in self.acl(replica).state.skipped, f"{line!r} was not skipped"
            return
        assert expect == "ok", f"{line!r} succeeded, expected {expect}"

    def do(self, r: str, line: str) -> bytes | None:
        w = line.replace(",", " ").split()
        acl = self.replicas.get(r)
        if w[0] == "fork":
            src = w[3] if len(w) > 3 else "main"
            self.replicas[w[1]] = Acl.from_records(SPACE, self.replicas[src].export())
            return None
        if w[0] == "sync":
            names = list(self.replicas) if w[1] == "all" else w[1:]
            for _ in range(2):
                for a in names:
                    for b in names:
                        if a != b:
                            self.sync(a, b)
            return None
        if w[0] == "expect":
            self.check(r, w[1:])
            return None
        assert acl is not None, f"no replica {r}"
        actor, verb, rest = account(w[0]), w[1], w[2:]
        if verb == "invites":
            role = ROLES[rest[2]]
            openly = rest[-1] == "openly"
            _raw, code = acl.invite(actor, role, anyone_can_join=openly)
            self.codes[rest[0]] = (code, w[0], openly)
            return _raw
        if verb == "requests":
            raw = acl.request_join(actor, self.codes[w[0]][0])
            self.requests[w[0]] = decode_record(raw).id
            return raw
        if verb == "joins":
            code, inviter, openly = self.codes[w[0]]
            if openly:
                return acl.join(actor, code)
            raw = acl.request_join(actor, code)
            self.requests[w[0]] = decode_record(raw).id
            return acl.accept(account(inviter), self.requests[w[0]])
        if verb == "accepts":
            role = ROLES[rest[2]] if len(rest) > 2 else None
            return acl.accept(actor, self.requests[rest[0]], role)
        if verb == "declines":
            return acl.decline(actor, self.requests[rest[0]])
        if verb == "revokes":
            return acl.revoke_invite(actor, self.codes[rest[1]][0].invite_id)
        if verb == "sets":
            return acl.change_permission(actor, self.pub(rest[0]), ROLES[rest[2]])
        if verb == "removes" and rest[0] == "replicator":
            return acl.remove_replicator(actor, self.pub(rest[1]))
        if verb == "removes":
            return acl.remove(actor, [self.pub(n) for n in rest if n != "and"])
        if verb == "leaves":
            return acl.leave(actor)
        if verb == "transfers":
            return acl.transfer_ownership(actor, self.pub(rest[-1]))
        if verb == "adds":
            return acl.add_replicator(actor, self.pub(rest[1]))
        if verb == "rotates":
            return acl.rotate(actor)
        if verb == "merges":
            return acl.merge(actor)
        if verb == "writes":
            self.write(acl, actor)
            return None
        raise AssertionError(f"unknown statement {line!r}")

    def write(self, acl: Acl, author: AccountKey) -> None:
        """A tree change by ``author``: ask the gate, then encrypt under the named key."""
        head, key_id = acl.write_position(author.public)
        acl.check_change(author.public, head, key_id, [])
        key = acl.keys_of(author).get(key_id)
        if key is None:
            raise errors.UnknownReadKey("author does not hold the key it must write with")
        plain = f"msg {len(self.messages)}".encode()
        self.messages.append((key_id, key.encrypt(plain), plain))

    def check(self, r: str, w: list[str]) -> None:
        acl = self.replicas[r]
        st = acl.state
        if w[0] == "space":
            assert st.owner == self.pub(w[3]), "unexpected owner"
        elif w[0] == "rotation":
            assert st.rotation_needed == (w[1] == "needed"), st.rotation_reasons
        elif w[0] == "replicator":
            gone = len(w) > 2 and w[2] == "gone"
            assert (self.pub(w[1]) in st.replicators) != gone
        elif w[0] == "converged":
            prints = {n: a.state.fingerprint() for n, a in self.replicas.items()}
            assert len({repr(p) for p in prints.values()}) == 1, "replicas diverge"
        elif w[0] == "heads":
            assert len(acl.heads) == int(w[1]), f"{len(acl.heads)} heads"
        elif w[1:3] == ["reads", "all"]:
            ring = acl.keys_of(account(w[0]))
            newest = ring.get(st.current_key_id)
            assert newest is not None, f"{w[0]} lacks the current key"
            for kid, ct, plain in self.messages:
                assert kid in ring, f"{w[0]} cannot reach key {kid.hex()[:8]}"
                assert ring[kid].decrypt(ct) == plain
        elif w[1:4] == ["cannot", "read", "latest"]:
            ring = acl.keys_of(account(w[0]))
            kid, _ct, _plain = self.messages[-1]
            assert kid not in ring, f"{w[0]} can read the latest message"
        elif w[1] == "is":
            role = st.role(self.pub(w[0]))
            want = None if w[2] == "gone" else ROLES[w[2]]
            assert role == want, f"{w[0]} is {role}, expected {want}"
        else:
            raise AssertionError(f"unknown check {w}")


def scenario(script: str) -> World:
    return World().run(script)


#: Owner, a reader (rita) and two concurrent invites: two ACL heads a merge may join.
FORKED = """
    owner invites rita as reader; rita joins
    fork r2
    owner invites ann as writer
    [r2] owner invites bob as writer
    sync main r2
    expect heads 2
"""


def forked_world() -> World:
    """A world in the :data:`FORKED` state (branch ``main`` holds both heads)."""
    return scenario(FORKED)
