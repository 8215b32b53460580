#!/usr/bin/env python3
"""Transport benchmark: raw aioquic streams vs p2psync QUIC, TCP and WebSocket sessions.

One run measures, on loopback, for each carrier: handshake time (connect until usable), one-stream
bulk throughput (MB/s, sender → receiver, until the receiver has it all) and small-message round
trips per second on one stream. QUIC uses ``max_datagram_size`` 1452 (LAN MTU). Prints a table of
medians and the p2psync/raw ratios, and writes JSON.

    python scripts/bench_transport.py [--repeat 5] [--json bench_transport.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aioquic.asyncio.client import connect as quic_connect  # noqa: E402
from aioquic.asyncio.protocol import QuicConnectionProtocol  # noqa: E402
from aioquic.asyncio.server import serve  # noqa: E402
from aioquic.quic import events  # noqa: E402

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey  # noqa: E402
from p2psync.transport import Connection, TransportConfig, connect, listen  # noqa: E402
from p2psync.transport.quic import quic_configuration  # noqa: E402

CHUNK = 64 * 1024
SMALL = b"x" * 64
MB = 1e6


# --- raw aioquic -----------------------------------------------------------------------------
class RawServer(QuicConnectionProtocol):
    """Bulk: count bytes, answer b"ok" at end of stream. Small: echo each 64-byte message."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.counts: dict[int, int] = {}

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            sid = event.stream_id
            if sid % 8 == 4:  # rtt stream: echo
                if event.data:
                    self._quic.send_stream_data(sid, event.data)
                    self.transmit()
                return
            self.counts[sid] = self.counts.get(sid, 0) + len(event.data)
            if event.end_stream:
                self._quic.send_stream_data(sid, b"ok", end_stream=True)
                self.transmit()


class RawClient(QuicConnectionProtocol):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.waiters: dict[int, asyncio.Future[bytes]] = {}
        self.bufs: dict[int, bytearray] = {}
        self.want: dict[int, int] = {}

    def expect(self, sid: int, n: int) -> asyncio.Future[bytes]:
        fut = self.waiters[sid] = asyncio.get_running_loop().create_future()
        self.bufs[sid] = bytearray()
        self.want[sid] = n
        return fut

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived) and event.stream_id in self.waiters:
            buf = self.bufs[event.stream_id]
            buf += event.data
            if len(buf) >= self.want[event.stream_id]:
                fut = self.waiters.pop(event.stream_id)
                if not fut.done():
                    fut.set_result(bytes(buf))


async def bench_raw(bulk_bytes: int, rtts: int) -> dict[str, float]:
    qs = quic_configuration(is_client=False, max_datagram_size=1452, window=4 << 20,
                            idle_timeout=30)
    server = await serve("127.0.0.1", 0, configuration=qs, create_protocol=RawServer)
    port = server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    qc = quic_configuration(is_client=True, max_datagram_size=1452, window=4 << 20,
                            idle_timeout=30)
    qc.server_name = "p2psync"
    try:
        t0 = time.perf_counter()
        async with quic_connect("127.0.0.1", port, configuration=qc,
                                create_protocol=RawClient) as client:
            hs = time.perf_counter() - t0
            assert isinstance(client, RawClient)
            sid = client._quic.get_next_available_stream_id()  # 0 → bulk
            done = client.expect(sid, 2)
            payload = b"\0" * CHUNK
            t0 = time.perf_counter()
            for _ in range(bulk_bytes // CHUNK):
                client._quic.send_stream_data(sid, payload)
                client.transmit()
                await asyncio.sleep(0)
            client._quic.send_stream_data(sid, b"", end_stream=True)
            client.transmit()
            await done
            bulk = bulk_bytes / (time.perf_counter() - t0) / MB
            sid = client._quic.get_next_available_stream_id()  # 4 → rtt
            t0 = time.perf_counter()
            for _ in range(rtts):
                fut = client.expect(sid, len(SMALL))
                client._quic.send_stream_data(sid, SMALL)
                client.transmit()
                await fut
            rtt = rtts / (time.perf_counter() - t0)
    finally:
        server.close()
    return {"handshake_ms": hs * 1000, "bulk_MBps": bulk, "rtt_per_s": rtt}


# --- p2psync ---------------------------------------------------------------------------------
def _ident() -> tuple[DeviceKey, DeviceCertificate]:
    d = DeviceKey.generate()
    return d, DeviceCertificate.issue(AccountKey.generate(), d)


async def _p2p_handler(conn: Connection) -> None:
    from p2psync.errors import TransportError

    try:
        bulk = await conn.accept_stream()
        total = 0
        async for msg in bulk:
            total += len(msg)
        await bulk.send(total.to_bytes(8, "big"))
        bulk.finish()
        rtt = await conn.accept_stream()
        async for msg in rtt:
            await rtt.send(msg)
    except TransportError:
        pass


async def bench_p2p(transport: str, bulk_bytes: int, rtts: int) -> dict[str, float]:
    sdev, scert = _ident()
    cdev, ccert = _ident()
    cfg = TransportConfig()
    srv = await listen("127.0.0.1", 0, device_key=sdev, certificate=scert,
                       on_connection=_p2p_handler, transport=transport,  # type: ignore
                       config=cfg)
    try:
        t0 = time.perf_counter()
        conn = await connect(("127.0.0.1", srv.port), device_key=cdev, certificate=ccert,
                             expected_peer=sdev.id, transport=transport,  # type: ignore
                             config=cfg)
        hs = time.perf_counter() - t0
        st = await conn.open_stream()
        payload = b"\0" * CHUNK
        t0 = time.perf_counter()
        for _ in range(bulk_bytes // CHUNK):
            await st.send(payload)
        st.finish()
        got = int.from_bytes(await st.recv(), "big")
        bulk = bulk_bytes / (time.perf_counter() - t0) / MB
        assert got == bulk_bytes // CHUNK * CHUNK, got
        r = await conn.open_stream()
        t0 = time.perf_counter()
        for _ in range(rtts):
            await r.send(SMALL)
            await r.recv()
        rtt = rtts / (time.perf_counter() - t0)
        await conn.close()
    finally:
        await srv.close()
    return {"handshake_ms": hs * 1000, "bulk_MBps": bulk, "rtt_per_s": rtt}


async def run(repeat: int, quic_mb: int, tcp_mb: int, rtts: int,
              ws_mb: int = 64) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {"raw_aioquic": [], "p2psync_quic": [],
                                                  "p2psync_tcp": [], "p2psync_ws": []}
    for _ in range(repeat):  # interleaved so machine noise hits all alike
        results["raw_aioquic"].append(await bench_raw(quic_mb << 20, rtts))
        results["p2psync_quic"].append(await bench_p2p("quic", quic_mb << 20, rtts))
        results["p2psync_tcp"].append(await bench_p2p("tcp", tcp_mb << 20, rtts))
        results["p2psync_ws"].append(await bench_p2p("ws", ws_mb << 20, rtts))
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
           for name, runs in results.items()}
    ratios = {
        "quic_bulk_vs_raw": med["p2psync_quic"]["bulk_MBps"] / med["raw_aioquic"]["bulk_MBps"],
        "quic_rtt_vs_raw": med["p2psync_quic"]["rtt_per_s"] / med["raw_aioquic"]["rtt_per_s"],
        "tcp_bulk_vs_raw_quic": med["p2psync_tcp"]["bulk_MBps"]
        / med["raw_aioquic"]["bulk_MBps"],
        "ws_bulk_vs_tcp": med["p2psync_ws"]["bulk_MBps"] / med["p2psync_tcp"]["bulk_MBps"],
        "ws_rtt_vs_tcp": med["p2psync_ws"]["rtt_per_s"] / med["p2psync_tcp"]["rtt_per_s"],
    }
    return {"medians": med, "ratios": ratios, "runs": results,
            "params": {"repeat": repeat, "quic_bulk_MiB": quic_mb, "tcp_bulk_MiB": tcp_mb,
                       "ws_bulk_MiB": ws_mb,
                       "round_trips": rtts, "max_datagram_size": 1452, "chunk": CHUNK,
                       "python": platform.python_version(), "machine": platform.machine()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quic-mb", type=int, default=16, help="MiB per QUIC bulk run")
    ap.add_argument("--tcp-mb", type=int, default=256, help="MiB per TCP bulk run")
    ap.add_argument("--ws-mb", type=int, default=64, help="MiB per WebSocket bulk run")
    ap.add_argument("--rtts", type=int, default=2000)
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop")
    ap.add_argument("--json", default="bench_transport.json")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    out = asyncio.run(run(args.repeat, args.quic_mb, args.tcp_mb, args.rtts, args.ws_mb))
    med = out["medians"]
    print(f"{'carrier':<14} {'handshake ms':>13} {'bulk MB/s':>10} {'round trips/s':>14}")
    for name, m in med.items():
        print(f"{name:<14} {m['handshake_ms']:>13.1f} {m['bulk_MBps']:>10.1f} "
              f"{m['rtt_per_s']:>14.0f}")
    for k, v in out["ratios"].items():
        print(f"{k:<22} {v:6.2f}")
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
