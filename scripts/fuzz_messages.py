#!/usr/bin/env python3
"""Random-mutation fuzz of the sync message decoder (issue 12, "Must show").

Each input is a valid message of a random type (from scripts/bench_decode.py's largest-message
builders, shrunk, or a small random one) with 1-4 random mutations (bit flips, cuts, inserted
bytes, a rewritten length prefix), or a random envelope around a random msgpack body. Every
input must either decode to a message that re-encodes and decodes again, or raise one of the
typed errors; anything else is a crash. Peak allocation per input is tracked (tracemalloc on
every 100th input) and must stay under 64 MiB.

    python3 scripts/fuzz_messages.py --count 100000 [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc

from p2psync.codec import pack
from p2psync.errors import DecodeError, MessageTooLarge, UnknownMessageType
from p2psync.sync import messages as m

TYPED = (DecodeError, UnknownMessageType, MessageTooLarge)
PEAK_LIMIT = 64 * 1024 * 1024


def _small(rng: random.Random) -> m.Message:
    rid = bytes(rng.getrandbits(8) for _ in range(32))
    sid = "s" * rng.randint(1, 70)
    batch = tuple(bytes(rng.randint(0, 40)) for _ in range(rng.randint(0, 5)))
    heads = tuple(rid for _ in range(rng.randint(0, 3)))
    choices: list[m.Message] = [
        m.SpaceHello(rid), m.SpaceTokens((bytes(16),) * 16),
        m.HeadSyncRequest(sid, 32, (m.RangeQuery(4, 3, rid, 9),)),
        m.HeadSyncResponse(sid, (m.RangeResult(4, 3, rid, 1, ((rid, rid),)),
                                 m.RangeResult(8, 1, rid, 900, None))),
        m.HeadUpdate(sid, rid, heads, batch),
        m.FullSyncRequest(sid, rid, heads, (rid,), batch, 1000, True),
        m.FullSyncResponse(sid, rid, heads, batch, False),
        m.AclHeadUpdate(sid, heads, batch), m.AclSyncRequest(sid, heads, batch, 5),
        m.AclSyncResponse(sid, heads, batch, True),
        m.BootstrapRequest(sid, None, rid, 10), m.BootstrapResponse(sid, b"h", batch, heads, None),
        m.SpaceOffer(sid), m.ReceiptRequest(sid, rid), m.ReceiptResponse(b"r" * 50),
        m.StorageRefused(sid, rid, m.ErrorCode.QUOTA_EXCEEDED, "q"),
        m.ErrorMessage(m.ErrorCode.MALFORMED, "x", None),
    ]
    return rng.choice(choices)


def _garbage(rng: random.Random, depth: int = 0) -> object:
    k = rng.randint(0, 7 if depth < 4 else 5)
    if k == 0:
        return None
    if k == 1:
        return rng.random() < 0.5
    if k == 2:
        return rng.randint(-(2**63), 2**64 - 1)
    if k == 3:
        return bytes(rng.randint(0, 40))
    if k == 4:
        return "t" * rng.randint(0, 10)
    if k == 5:
        return rng.randint(0, 300)
    return [_garbage(rng, depth + 1) for _ in range(rng.randint(0, 6))]


def one_input(rng: random.Random) -> bytes:
    if rng.random() < 0.2:
        return pack([1, rng.randint(0, 70), rng.randint(0, 2**33), _garbage(rng)])
    raw = bytearray(m.encode(_small(rng), rng.randint(0, 2**32 - 1)))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        i = rng.randrange(len(raw)) if raw else 0
        if op == 0 and raw:
            raw[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            del raw[i:]
        elif op == 2:
            raw[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 5)))
        else:  # a hostile 32-bit array/bin length at a random position
            raw[i:i] = bytes([rng.choice([0xDD, 0xC6, 0xDB])]) + rng.getrandbits(32).to_bytes(4,
                                                                                       "big")
    return bytes(raw)


def run(count: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    decoded = refused = 0
    max_peak = 0
    t0 = time.perf_counter()
    for n in range(count):
        raw = one_input(rng)
        trace = n % 100 == 0
        if trace:
            tracemalloc.start()
        try:
            env = m.decode(raw)
            again = m.decode(m.encode(env.message, env.request_id))
            assert again == env, raw.hex()
            decoded += 1
        except TYPED:
            refused += 1
        if trace:
            max_peak = max(max_peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            assert max_peak < PEAK_LIMIT, f"input {n} allocated {max_peak} bytes: {raw[:64].hex()}"
    return {"inputs": count, "decoded": decoded, "refused": refused, "crashes": 0,
            "seconds": round(time.perf_counter() - t0, 1), "max_peak_kib": max_peak // 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(run(args.count, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
