#!/usr/bin/env python3
"""Worst-case decode time and peak memory per sync message type (issue 12.2).

For every message type two inputs are decoded with :func:`p2psync.sync.messages.decode`:

* ``attack``: an 8 MiB envelope of that type whose body is an array of ~8 million empty arrays
  (the event-loop stall of issue 12.2); it must be refused.
* ``largest``: the biggest *valid* message of that type the protocol allows (full batches,
  256 enumerated ranges of 256 elements, a 16 384-id bootstrap page...); it must decode.

Time is the best of ``--repeat`` runs without tracing; peak memory is measured separately with
tracemalloc. ``--legacy`` adds the old generic decoder (``msgpack.unpackb`` with every cap set to
the message size, run twice on a refused message because the old engine decoded it again to
find its request id) as a comparison column; its attack row is the same for every type, so it
is measured once. Prints a table and writes JSON (default bench-results/decode.json).

    python3 scripts/bench_decode.py [--legacy] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from p2psync.errors import P2PSyncError
from p2psync.sync import messages as m

ID = bytes(range(32))
PAIR = (ID, ID)
KIB = bytes(1024)


def _largest(t: m.MsgType) -> m.Message:
    """The biggest valid message of type ``t`` (every list at its cap, within 8 MiB)."""
    heads = (ID,) * m.MAX_HEADS
    batch = (KIB,) * 4000  # 4000 KiB: just under the 4 MiB batch cap
    builders: dict[m.MsgType, Callable[[], m.Message]] = {
        m.MsgType.SPACE_HELLO: lambda: m.SpaceHello(ID),
        m.MsgType.SPACE_TOKENS: lambda: m.SpaceTokens((bytes(16),) * m.MAX_TOKENS),
        m.MsgType.HEAD_SYNC_REQUEST: lambda: m.HeadSyncRequest(
            "s" * 66, m.MAX_RANGE_ELEMENTS,
            tuple(m.RangeQuery(16, i, ID, 2**40) for i in range(m.MAX_RANGES))),
        m.MsgType.HEAD_SYNC_RESPONSE: lambda: m.HeadSyncResponse("s" * 66, tuple(
            m.RangeResult(16, i, ID, m.MAX_RANGE_ELEMENTS, (PAIR,) * m.MAX_RANGE_ELEMENTS)
            for i in range(m.MAX_RANGES))),
        m.MsgType.HEAD_UPDATE: lambda: m.HeadUpdate("s" * 66, ID, heads, batch),
        m.MsgType.FULL_SYNC_REQUEST: lambda: m.FullSyncRequest(
            "s" * 66, ID, heads, (ID,) * m.MAX_SNAPSHOT_PATH, batch, m.MAX_BATCH_BYTES, True),
        m.MsgType.FULL_SYNC_RESPONSE: lambda: m.FullSyncResponse("s" * 66, ID, heads, batch,
                                                                 True),
        m.MsgType.ACL_HEAD_UPDATE: lambda: m.AclHeadUpdate("s" * 66, heads, batch),
        m.MsgType.ACL_SYNC_REQUEST: lambda: m.AclSyncRequest("s" * 66, heads, batch,
                                                             m.MAX_BATCH_BYTES),
        m.MsgType.ACL_SYNC_RESPONSE: lambda: m.AclSyncResponse("s" * 66, heads, batch, True),
        m.MsgType.BOOTSTRAP_REQUEST: lambda: m.BootstrapRequest(
            "s" * 66, bytes(m.MAX_PROOF_SIZE), ID, m.MAX_OBJECT_PAGE),
        m.MsgType.BOOTSTRAP_RESPONSE: lambda: m.BootstrapResponse(
            "s" * 66, bytes(m.MAX_HEADER_SIZE), batch, (ID,) * m.MAX_OBJECT_PAGE, ID),
        m.MsgType.SPACE_OFFER: lambda: m.SpaceOffer("s" * 66),
        m.MsgType.RECEIPT_REQUEST: lambda: m.ReceiptRequest("s" * 66, ID),
        m.MsgType.RECEIPT_RESPONSE: lambda: m.ReceiptResponse(bytes(m.MAX_RECEIPT_SIZE)),
        m.MsgType.STORAGE_REFUSED: lambda: m.StorageRefused(
            "s" * 66, ID, m.ErrorCode.QUOTA_EXCEEDED, "x" * m.MAX_ERROR_TEXT),
        m.MsgType.ERROR: lambda: m.ErrorMessage(m.ErrorCode.INTERNAL, "x" * m.MAX_ERROR_TEXT,
                                                2**32 - 1),
    }
    return builders[t]()


def attack(t: int, size: int = m.MAX_MESSAGE_SIZE) -> bytes:
    """An envelope of type ``t`` whose body is an array of as many empty arrays as fit."""
    head = bytes([0x94, 1, t]) + b"\xce" + (77).to_bytes(4, "big")
    n = size - len(head) - 5
    return head + b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n


def new_decode(raw: bytes) -> bool:
    """True when ``raw`` decodes; False when refused with a typed error."""
    try:
        m.decode(raw)
    except P2PSyncError:
        return False
    return True


def _generic(raw: bytes) -> Any:
    cap = m.MAX_MESSAGE_SIZE
    return msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=cap,
                           max_str_len=cap, max_array_len=cap, max_map_len=cap, max_ext_len=0)


def legacy_decode(raw: bytes) -> bool:
    """The decoder before issue 12.2: one generic msgpack decode with every cap at the message
    size, checked field by field afterwards; when the check refused the message the old engine
    decoded it a second time (peek_request_id). The field checks are not replayed, so the
    legacy "largest" column is a lower bound of the old cost."""
    value = _generic(raw)
    body = value[3] if isinstance(value, list) and len(value) == 4 else None
    if isinstance(body, list) and any(x == [] for x in body[:1]):  # the attack shape
        del value, body
        _generic(raw)
        return False
    return True


def measure(fn: Callable[[bytes], bool], raw: bytes, repeat: int) -> dict[str, Any]:
    best = float("inf")
    ok = False
    for _ in range(repeat):
        t0 = time.perf_counter()
        ok = fn(raw)
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    fn(raw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"ms": round(best * 1000, 3), "peak_kib": round(peak / 1024, 1), "accepted": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--legacy", action="store_true", help="add the old generic decoder column")
    ap.add_argument("--out", default="bench-results/decode.json")
    args = ap.parse_args()

    rows: list[dict[str, Any]] = []
    legacy_attack: dict[str, Any] | None = None
    if args.legacy:
        legacy_attack = measure(legacy_decode, attack(int(m.MsgType.HEAD_UPDATE)), 1)
    hdr = f"{'type':<20} {'size':>9} {'largest ms':>10} {'peak KiB':>9} {'attack ms':>9} " \
          f"{'peak KiB':>9}"
    if args.legacy:
        hdr += f" | {'legacy largest ms':>17} {'legacy attack ms':>16} {'peak MiB':>9}"
    print(hdr)
    for t in m.MsgType:
        big = m.encode(_largest(t), 1)
        atk = attack(int(t))
        row: dict[str, Any] = {"type": t.name.lower(), "largest_bytes": len(big),
                               "largest": measure(new_decode, big, args.repeat),
                               "attack": measure(new_decode, atk, args.repeat)}
        assert row["largest"]["accepted"] and not row["attack"]["accepted"], row
        line = (f"{row['type']:<20} {len(big):>9} {row['largest']['ms']:>10.3f} "
                f"{row['largest']['peak_kib']:>9.0f} {row['attack']['ms']:>9.3f} "
                f"{row['attack']['peak_kib']:>9.1f}")
        if args.legacy and legacy_attack is not None:
            row["legacy_largest"] = measure(legacy_decode, big, args.repeat)
            row["legacy_attack"] = legacy_attack
            line += (f" | {row['legacy_largest']['ms']:>17.3f} {legacy_attack['ms']:>16.1f} "
                     f"{legacy_attack['peak_kib'] / 1024:>9.0f}")
        print(line, flush=True)
        rows.append(row)
    worst = max(r["largest"]["ms"] for r in rows)
    worst_attack = max(r["attack"]["ms"] for r in rows)
    print(f"worst legitimate decode: {worst:.2f} ms; worst attack refusal: {worst_attack:.3f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "worst_largest_ms": worst,
                               "worst_attack_ms": worst_attack}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
