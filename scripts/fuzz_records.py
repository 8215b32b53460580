#!/usr/bin/env python3
"""Fuzz of what peers hand a store (issue 12, "Must show"): ACL records, tree changes and device
certificates, against a real SQLite store (``open_store``) through the sync path
(``Replicas.apply_acl`` / ``apply_changes``; certificates through ``DeviceCertificate.verify``).

A *source* device (the space's owner, its own SQLite store) builds a history: invites, a join, role
changes, a replicator, a key rotation, a removal, documents with edits by the owner and by a
writer. The *target* (a second device of the owner, SQLite on disk) adopts the space with the
first ACL record only, so every other valid record and change is new to it. Each input is one
of

* ``valid``: an unmodified record/change/certificate from the corpus (applied, or a duplicate);
* ``mutated``: a valid one with 1-4 byte-level mutations (bit flips, cuts, inserted or replaced
  bytes) — the signature no longer matches;
* ``resigned``: a valid one whose signed body had one msgpack field replaced by another value
  (other type, other id, other number, truncated list...) and was **signed again by its real
  author**, so it reaches the semantic checks (ACL rules, parents, ids, gate);
* ``random``: random bytes, or random msgpack around random fields.

Every input must be either *applied* (ACL: added/waiting/ignored; change: attached/waiting/
duplicate; certificate: verifies) or *refused* with a typed error (``P2PSyncError``, or listed as
rejected); anything else is a crash. A refused input must leave the store byte-for-byte as it
was: every table's rows are hashed before and after (``unintended`` counts the ones that did
not; checked per input with SQLite's ``data_version``, which moves on every commit, and at the
end by hashing every row: a run with no applied write must leave the hash as it was). Peak
allocation is sampled (tracemalloc on every 200th input) and time per input kept.

    python3 scripts/fuzz_records.py --count 100000 [--seed 1] [--json fuzz_records.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2psync.codec import pack, unpack
from p2psync.crypto import AccountKey, DeviceKey
from p2psync.crypto.cert import CERT_DOMAIN, DeviceCertificate
from p2psync.crypto.signed import make_signed, open_signed
from p2psync.errors import P2PSyncError
from p2psync.replica.acl_records import RECORD_DOMAIN, Role
from p2psync.replica.change import CHANGE_DOMAIN
from p2psync.replica.document import ROOT
from p2psync.replica.storage import open_store
from p2psync.sync.replicas import Replicas

KINDS = ("acl", "change", "cert")
HOWS = ("valid", "mutated", "resigned", "random")
PEAK_LIMIT = 64 * 1024 * 1024


class _Quiet:
    """The peer the inputs come from (the sync path echoes nothing back to it)."""

    def push_tree(self, space: Any, tree_id: bytes, result: Any) -> None:
        pass

    def push_acl(self, space: Any, record_ids: list[bytes]) -> None:
        pass


class Corpus:
    """Valid inputs, each with the key of its real author (to sign mutations again)."""

    def __init__(self, tmp: Path, rng: random.Random) -> None:
        self.owner = AccountKey.generate()
        writer, other = AccountKey.generate(), AccountKey.generate()
        self.keys: dict[bytes, AccountKey] = {k.public: k for k in (self.owner, writer, other)}
        src = Replicas(open_store(tmp / "source.sqlite3", durable=False), self.owner,
                       DeviceKey.generate())
        space = src.create_space()
        acl = space.acl
        raw, code = acl.invite(self.owner, anyone_can_join=True)
        space.commit_acl(raw)
        space.commit_acl(acl.join(writer, code))
        space.commit_acl(acl.join(other, code))
        space.commit_acl(acl.change_permission(self.owner, other.public, Role.READER))
        space.commit_acl(acl.add_replicator(self.owner, AccountKey.generate().public))
        docs = []
        for i in range(3):
            d = space.new_document()
            for j in range(4):
                with d.edit() as e:
                    e.put(ROOT, f"k{j}", i * 10 + j)
            docs.append(d)
        space.commit_acl(acl.rotate(self.owner))
        space.commit_acl(acl.remove(self.owner, [other.public]))
        with docs[0].edit() as e:
            e.put(ROOT, "after", 1)
        self.space_id = space.id
        self.header = space.header.raw
        self.acl = acl.export()  # causal order, first is the space's first record
        self.changes: list[tuple[bytes, bytes]] = [
            (tid, r) for tid in space.tree_ids() for _, r in space.store.raw_changes(tid)]
        dev = DeviceKey.generate()
        self.certs = [DeviceCertificate.issue(self.owner, dev).raw,
                      DeviceCertificate.issue(writer, dev, expires_at=2**40).raw,
                      DeviceCertificate.issue(other, DeviceKey.generate(),
                                              issued_at=5, expires_at=10).raw]
        self.trees = sorted({t for t, _ in self.changes})
        self.rng = rng

    def author(self, raw: bytes) -> AccountKey | None:
        """The corpus key that signed ``raw`` (tried by signature), or None."""
        try:
            body, sig = open_signed(raw, "x", 1 << 20)
        except P2PSyncError:
            return None
        for domain in (RECORD_DOMAIN, CHANGE_DOMAIN, CERT_DOMAIN):
            for key in self.keys.values():
                if key.sign(domain, body) == sig:
                    return key
        return None


def _garbage(rng: random.Random, depth: int = 0) -> Any:
    k = rng.randint(0, 7 if depth < 3 else 5)
    if k == 0:
        return None
    if k == 1:
        return rng.random() < 0.5
    if k == 2:
        return rng.choice([0, 1, -1, 2**32, 2**63 - 1, 2**64 - 1, rng.randint(-(2**63), 2**64 - 1)])
    if k == 3:
        return rng.randbytes(rng.choice([0, 1, 31, 32, 33, 64, rng.randint(0, 300)]))
    if k == 4:
        return "".join(chr(rng.randint(32, 0x2FF)) for _ in range(rng.randint(0, 20)))
    if k == 5:
        return rng.randbytes(32)
    return [_garbage(rng, depth + 1) for _ in range(rng.randint(0, 8))]


def mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        op = rng.randint(0, 3)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            i = rng.randint(0, len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif b:
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def _replace_field(rng: random.Random, value: Any, corpus: Corpus) -> Any:
    """``value`` with one nested field replaced (type, size, id or number changes)."""
    if isinstance(value, list) and value and rng.random() < 0.7:
        out = list(value)
        i = rng.randrange(len(out))
        out[i] = _replace_field(rng, out[i], corpus)
        if rng.random() < 0.1:
            del out[rng.randrange(len(out)):]
        return out
    choices: list[Any] = [_garbage(rng), None, 0, -1, 2**64 - 1, b"", [],
                          rng.choice(list(corpus.keys)), rng.randbytes(32)]
    if isinstance(value, int) and not isinstance(value, bool):
        choices += [value + 1, value - 1, value * 2, 0]
    if isinstance(value, bytes):
        choices += [value[:-1], value + b"\0", bytes(len(value))]
    return rng.choice(choices)


def resign(rng: random.Random, raw: bytes, domain: str, corpus: Corpus) -> bytes | None:
    key = corpus.author(raw)
    if key is None:
        return None
    body, _ = open_signed(raw, "x", 1 << 20)
    try:
        fields = unpack(body)
        new_body = pack(_replace_field(rng, fields, corpus))
    except P2PSyncError:
        return None
    return make_signed(key, domain, new_body)


def store_version(db: sqlite3.Connection) -> int:
    """SQLite's ``PRAGMA data_version`` seen from a separate read connection: it changes
    whenever another connection commits to the file, so any write by the store shows up, in
    O(1) (hashing every row per input made the run quadratic)."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])


def store_digest(db: sqlite3.Connection) -> str:
    """A hash of every row of every table (the store's whole content)."""
    h = hashlib.blake2b(digest_size=16)
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    for t in tables:
        h.update(t.encode())
        for row in db.execute(f'SELECT * FROM "{t}" ORDER BY 1'):
            h.update(repr(row).encode())
    return h.hexdigest()


def run(count: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-records-"))
    corpus = Corpus(tmp, rng)
    path = tmp / "target.sqlite3"
    store = open_store(path, durable=False)
    target = Replicas(store, corpus.owner, DeviceKey.generate())
    space = target.adopt(corpus.space_id, corpus.header, corpus.acl[:1])
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    digest_start = store_digest(db)
    applied_writes = 0
    source = _Quiet()
    outcomes: Counter[tuple[str, str, str]] = Counter()
    crashes: list[str] = []
    unintended = 0
    stored = 0  #: inputs that changed the store (applied ones; shows the digest sees writes)
    peak = 0
    slowest = 0.0
    t_start = time.perf_counter()
    for i in range(count):
        kind = KINDS[i % 3]
        how = rng.choices(HOWS, weights=(1, 4, 4, 2))[0]
        valid_pool = {"acl": corpus.acl, "change": [r for _, r in corpus.changes],
                      "cert": corpus.certs}[kind]
        domain = {"acl": RECORD_DOMAIN, "change": CHANGE_DOMAIN, "cert": CERT_DOMAIN}[kind]
        tree = rng.choice(corpus.trees)
        if kind == "change" and how != "random":
            tree, raw = rng.choice(corpus.changes)
        else:
            raw = rng.choice(valid_pool)
        if how == "mutated":
            raw = mutate_bytes(rng, raw)
        elif how == "resigned":
            raw = resign(rng, raw, domain, corpus) or mutate_bytes(rng, raw)
        elif how == "random":
            raw = rng.randbytes(rng.randint(0, 400)) if rng.random() < 0.5 else \
                pack([pack(_garbage(rng)), rng.randbytes(64)])
        sample = i % 200 == 0
        if sample:
            tracemalloc.start()
        before = store_version(db)
        t0 = time.perf_counter()
        outcome = "?"
        try:
            if kind == "acl":
                res = target.apply_acl(source, space, [raw])
                outcome = "applied" if (res.added or res.waiting or res.ignored) else (
                    "refused" if res.rejected else "duplicate")
            elif kind == "change":
                cres = target.apply_changes(source, space, tree, [raw])
                outcome = "applied" if (cres.attached or cres.waiting) else (
                    "refused" if cres.rejected else "duplicate")
            else:
                DeviceCertificate.verify(raw)
                outcome = "applied"
        except P2PSyncError:
            outcome = "refused"
        except Exception as exc:  # a crash: anything untyped
            outcome = "crash"
            crashes.append(f"{kind}/{how}: {type(exc).__name__}: {exc}"[:200])
        slowest = max(slowest, time.perf_counter() - t0)
        if sample:
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        changed = store_version(db) != before
        if outcome in ("refused", "duplicate", "crash") and changed:
            unintended += 1
            crashes.append(f"{kind}/{how}: store changed on {outcome}")
        stored += changed
        applied_writes += changed and outcome == "applied"
        outcomes[(kind, how, outcome)] += 1
    took = time.perf_counter() - t_start
    if not applied_writes and store_digest(db) != digest_start:
        unintended += 1
        crashes.append("store content changed though no input was applied")
    db.close()
    store.close()
    by_kind: dict[str, dict[str, int]] = {}
    for k in KINDS:
        c: Counter[str] = Counter()
        for (kk, _, o), n in outcomes.items():
            if kk == k:
                c[o] += n
        by_kind[k] = dict(c)
    return {
        "count": count, "seed": seed, "seconds": round(took, 2),
        "crashes": sum(1 for c in crashes if "store changed" not in c), "unintended": unintended,
        "applied": sum(n for (_, _, o), n in outcomes.items() if o == "applied"),
        "refused": sum(n for (_, _, o), n in outcomes.items() if o == "refused"),
        "duplicate": sum(n for (_, _, o), n in outcomes.items() if o == "duplicate"),
        "stored": stored, "peak_alloc_kib": peak // 1024, "slowest_ms": round(slowest * 1000, 2),
        "by_kind": by_kind,
        "table": {f"{k}/{h}/{o}": n for (k, h, o), n in sorted(outcomes.items())},
        "crash_samples": crashes[:10],
        "corpus": {"acl": len(corpus.acl), "changes": len(corpus.changes),
                   "certs": len(corpus.certs)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="fuzz_records.json")
    args = ap.parse_args()
    stats = run(args.count, args.seed)
    print(f"{'kind/how':<18} {'applied':>8} {'duplicate':>9} {'refused':>8} {'crash':>6}")
    for k in KINDS:
        for h in HOWS:
            row = [stats["table"].get(f"{k}/{h}/{o}", 0)
                   for o in ("applied", "duplicate", "refused", "crash")]
            print(f"{k + '/' + h:<18} {row[0]:>8} {row[1]:>9} {row[2]:>8} {row[3]:>6}")
    print(f"{stats['count']} inputs in {stats['seconds']} s: {stats['crashes']} crashes, "
          f"{stats['unintended']} unintended store changes ({stats['stored']} applied inputs "
          f"changed it), peak allocation "
          f"{stats['peak_alloc_kib']} KiB, slowest input {stats['slowest_ms']} ms")
    Path(args.json).write_text(json.dumps(stats, indent=2))
    print(f"wrote {args.json}")
    if stats["crashes"] or stats["unintended"] or stats["peak_alloc_kib"] * 1024 > PEAK_LIMIT:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
