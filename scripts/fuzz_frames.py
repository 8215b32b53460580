#!/usr/bin/env python3
"""Random-mutation fuzz of the transport framing layer (issue 12, "Must show": the frame
decoder), fast enough for 100 000 cases in about a minute (``scripts/fuzz_transport.py`` runs
the hypothesis properties of ``tests/test_framing.py`` instead, much slower per case).

Targets, in turn:

* ``frames``: a stream of valid frames (random bodies up to the frame limit) with 0-4 byte
  mutations (bit flips — often in a length prefix —, cuts, inserted bytes, a rewritten length),
  fed to :class:`FrameDecoder` in random chunk sizes. Unmutated: exactly the bodies come out.
  Mutated: bodies or ``FrameError``; the decoder never holds more than one frame.
* ``secure``: records sealed by a peer's :class:`SecureFramer`, mutated the same way, opened by
  ours: the records, or ``FrameError`` (forgeries fail authentication).
* ``records``: random or mutated record plaintexts through ``decode_record`` into a live
  :class:`Session` (sans-IO): events, or a ``TransportError`` that closes the connection.
* ``hello``: random or mutated handshake hellos through ``Hello.decode``: ``HandshakeError``.

Anything else raised is a crash. Peak allocation is sampled (tracemalloc on every 200th case).

    python3 scripts/fuzz_frames.py --count 100000 [--seed 1] [--json fuzz_frames.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2psync import PROTOCOL_VERSION
from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.errors import FrameError, HandshakeError, TransportError
from p2psync.transport.framing import (
    HEADER,
    MAX_FRAME,
    FrameDecoder,
    RecordType,
    SecureFramer,
    decode_record,
    encode_frame,
    encode_record,
)
from p2psync.transport.handshake import MIN_PROTOCOL_VERSION, Hello, Limits
from p2psync.transport.noise import CipherState
from p2psync.transport.session import Session

TARGETS = ("frames", "secure", "records", "hello")
KEY = bytes(range(32))
LIM = Limits(max_streams=4, stream_window=4096, max_message=2048)
PEAK_LIMIT = 64 * 1024 * 1024


def mutate(rng: random.Random, raw: bytes, n: int) -> bytes:
    b = bytearray(raw)
    for _ in range(n):
        op = rng.randint(0, 4)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            i = rng.randint(0, len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and len(b) >= 4:  # a hostile length prefix at a frame boundary or not
            i = rng.randrange(len(b) - 3)
            b[i:i + 4] = HEADER.pack(rng.choice([0, 1, MAX_FRAME, MAX_FRAME + 1, 2**32 - 1,
                                                 rng.randrange(2**32)]))
        elif b:
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def chunks(rng: random.Random, data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice([1, 3, 4, 5, 17, 1024, 70_000])
        out.append(data[pos:pos + n])
        pos += n
    return out


def body(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([1, 2, 16, 100, rng.randint(1, 2000), MAX_FRAME]))


def case_frames(rng: random.Random, nmut: int) -> str:
    bodies = [body(rng) for _ in range(rng.randint(1, 4))]
    wire = b"".join(encode_frame(b) for b in bodies)
    if nmut:
        wire = mutate(rng, wire, nmut)
    dec = FrameDecoder(rng.choice([MAX_FRAME, MAX_FRAME, 1024, 1]))
    got: list[bytes] = []
    try:
        for part in chunks(rng, wire):
            got += dec.feed(part)
            assert dec.pending <= dec.max_frame + 4, "decoder holds more than one frame"
        dec.eof()
    except FrameError:
        return "refused"
    if not nmut and dec.max_frame == MAX_FRAME:
        assert got == bodies, "valid frames did not round-trip"
    return "accepted"


def case_secure(rng: random.Random, nmut: int) -> str:
    a = SecureFramer(CipherState(KEY), CipherState(KEY))
    b = SecureFramer(CipherState(KEY), CipherState(KEY))
    recs = [(rng.choice(list(RecordType)), rng.randrange(2**32), rng.randbytes(rng.randint(0, 300)))
            for _ in range(rng.randint(1, 4))]
    wire = b"".join(a.seal(encode_record(t, s, p)) for t, s, p in recs)
    if nmut:
        wire = mutate(rng, wire, nmut)
    got = []
    try:
        for part in chunks(rng, wire):
            got += b.open(part)
        b.decoder.eof()
    except FrameError:
        return "refused"
    if not nmut:
        assert [(r.type, r.stream, r.payload) for r in got] == recs, "records did not round-trip"
    return "accepted"


def case_records(rng: random.Random, nmut: int) -> str:
    s = Session(initiator=False, local=LIM, remote=LIM)
    raws = []
    for _ in range(rng.randint(1, 10)):
        if rng.random() < 0.5:
            raw = rng.randbytes(rng.randint(0, 40))
        else:
            raw = encode_record(rng.choice(list(RecordType)), rng.choice([0, 1, 4, 5, 8, 9, 2**31]),
                                rng.randbytes(rng.choice([0, 1, 2, 4, 8, 12, 100])))
            raw = mutate(rng, raw, nmut) if nmut else raw
        raws.append(raw)
    recs = []
    for r in raws:  # an undecodable record alone is refused; the rest go to the session
        with contextlib.suppress(FrameError):
            recs.append(decode_record(r))
    try:
        s.receive(recs, None, 0.0)
    except TransportError:
        return "refused"
    return "accepted"


_HELLO: list[bytes] = []


def case_hello(rng: random.Random, nmut: int) -> str:
    if not _HELLO:
        dev = DeviceKey.generate()
        cert = DeviceCertificate.issue(AccountKey.generate(), dev)
        _HELLO.append(Hello(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, cert.raw, ("x",), LIM).encode())
    raw = mutate(rng, _HELLO[0], nmut) if nmut else rng.randbytes(rng.randint(0, 600))
    try:
        Hello.decode(raw)
    except HandshakeError:
        return "refused"
    return "accepted"


CASES = {"frames": case_frames, "secure": case_secure, "records": case_records,
         "hello": case_hello}


def run(count: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    outcomes: Counter[tuple[str, str]] = Counter()
    crashes: list[str] = []
    peak = 0
    t0 = time.perf_counter()
    for i in range(count):
        target = TARGETS[i % len(TARGETS)]
        nmut = rng.choice([0, 1, 1, 2, 3, 4])
        sample = i % 200 == 0
        if sample:
            tracemalloc.start()
        try:
            outcome = CASES[target](rng, nmut)
        except Exception as exc:
            outcome = "crash"
            crashes.append(f"{target}: {type(exc).__name__}: {exc}"[:200])
        if sample:
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        outcomes[(target, outcome)] += 1
    took = time.perf_counter() - t0
    return {"count": count, "seed": seed, "seconds": round(took, 2),
            "crashes": len(crashes), "peak_alloc_kib": peak // 1024,
            "accepted": sum(n for (_, o), n in outcomes.items() if o == "accepted"),
            "refused": sum(n for (_, o), n in outcomes.items() if o == "refused"),
            "table": {f"{t}/{o}": n for (t, o), n in sorted(outcomes.items())},
            "crash_samples": crashes[:10]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="fuzz_frames.json")
    args = ap.parse_args()
    stats = run(args.count, args.seed)
    print(f"{'target':<10} {'accepted':>9} {'refused':>8} {'crash':>6}")
    for t in TARGETS:
        row = [stats["table"].get(f"{t}/{o}", 0) for o in ("accepted", "refused", "crash")]
        print(f"{t:<10} {row[0]:>9} {row[1]:>8} {row[2]:>6}")
    print(f"{stats['count']} cases in {stats['seconds']} s: {stats['crashes']} crashes, peak "
          f"allocation {stats['peak_alloc_kib']} KiB")
    Path(args.json).write_text(json.dumps(stats, indent=2))
    print(f"wrote {args.json}")
    if stats["crashes"] or stats["peak_alloc_kib"] * 1024 > PEAK_LIMIT:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
