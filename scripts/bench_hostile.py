#!/usr/bin/env python3
"""Hostile-peer benchmark (issue 12): what each attack costs a listening device, and whether an
honest peer still gets through.

For every attack of ``ATTACKS`` a fresh *target* process is started (this script with
``--target``): TCP and QUIC listeners with the sync engine's transport limits (8 MiB messages,
16 MiB stream windows) whose handler behaves like the engine — it accepts one stream per
connection and answers on it. The target starts with the usual soft ``RLIMIT_NOFILE`` of 1024
and reports every 100 ms its RSS, CPU time and the longest event-loop stall (lateness of a
10 ms ticker). Meanwhile this process runs the attack, and an honest peer in a third process
(a) keeps one connection open and does a round trip every 50 ms ("kept syncing": longest gap),
(b) dials a new connection every 250 ms, alternating TCP and QUIC ("connects within 2 s").

Phases: *before* (1.5 s), *during* (``--duration``), *after* (2.5 s, attack sockets closed).

    python scripts/bench_hostile.py [--listener guarded|api] [--only NAME ...]
                                    [--duration 8] [--json bench_hostile.json]

``--listener guarded`` uses ``tcp.serve_tcp``/``quic.serve_quic`` (Retry, admission caps,
EMFILE-proof accept loop); ``api`` uses ``transport.api.listen``, which builds the same guarded
listeners since the transport branch wired them (before that it had no Retry, no caps and
asyncio's accept loop — the "before" of issue 12.4). The WebSocket listener (``ws_flood``) is
always ``api.listen``. Receive
budgets apply to both; ``P2PSYNC_NO_BUDGET=1`` switches them off (careful: the stream flood
then grows the target by gigabytes; use ``--hostile 5 --flood-mib 32``).

Head-sync poisoning (issue 20 item 1) runs in-process against a real engine instead (a
lying *member*, not a stranger): ``--headsync-only [--headsync-before] [--only NAME]``;
``--headsync-before`` adds a run with the head-sync rules switched off, for ``--duration`` s.

Adding an attack: write ``async def attack_x(ctx: Ctx) -> None`` that runs until
``ctx.stop`` is set (and cleans up), and add a row to ``ATTACKS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aioquic.quic.connection import QuicConnection  # noqa: E402

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey  # noqa: E402
from p2psync.errors import TransportError  # noqa: E402
from p2psync.transport import Connection, TransportConfig, connect  # noqa: E402
from p2psync.transport.connection import shared_pool  # noqa: E402
from p2psync.transport.handshake import Limits  # noqa: E402
from p2psync.transport.quic import quic_configuration  # noqa: E402

#: The sync engine's transport limits (node.sync_transport_config), without importing node.
ENGINE_LIMITS = Limits(max_message=(8 << 20) + 4096, stream_window=16 << 20)
PAGE = os.sysconf("SC_PAGE_SIZE")


def identity() -> tuple[DeviceKey, DeviceCertificate]:
    dev = DeviceKey.generate()
    return dev, DeviceCertificate.issue(AccountKey.generate(), dev)


# --- the target process ------------------------------------------------------------------------
async def run_target(listener: str, pool_mib: int | None) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    # On loopback every peer, honest or not, has the source address 127.0.0.1: per-source
    # caps are raised so the honest peer is not refused for sharing the attackers' address
    # (they are tested in tests/test_hostile_transport.py); total caps stay at their defaults.
    cfg = TransportConfig(limits=ENGINE_LIMITS, max_connections_per_source=256,
                          max_half_open_per_source=256)
    if pool_mib is not None:
        cfg = replace(cfg, pool_budget=pool_mib << 20)
    dev, cert = identity()

    async def handle(conn: Connection) -> None:  # like the engine: one stream, answered
        try:
            st = await conn.accept_stream()
            async for msg in st:
                await st.send(msg[:64])
        except TransportError:
            pass

    ports: dict[str, int] = {}
    if listener == "api":
        from p2psync.transport.api import listen

        for t in ("tcp", "quic"):
            srv = await listen("127.0.0.1", 0, device_key=dev, certificate=cert,
                               on_connection=handle, transport=t,  # type: ignore[arg-type]
                               config=cfg)
            ports[t] = srv.port
    else:
        from p2psync.transport.connection import Link
        from p2psync.transport.quic import (
            QuicCarrier,
            aioquic_server_socket,
            serve_quic,
            tls_binding,
        )
        from p2psync.transport.tcp import TCP_BINDING, TcpCarrier, serve_tcp

        tasks: set[asyncio.Task[None]] = set()

        def ready(conn: Connection) -> None:
            task = asyncio.get_running_loop().create_task(handle(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def make_link(carrier: Any, binding: bytes, per_stream: bool) -> Link:
            return Link(carrier, initiator=False, device_key=dev, certificate=cert, config=cfg,
                        binding=binding, per_stream_keys=per_stream, on_ready=ready)

        tcp = await serve_tcp("127.0.0.1", 0, lambda: TcpCarrier(
            lambda c: make_link(c, TCP_BINDING, False)), cfg)
        ports["tcp"] = tcp.sock.getsockname()[1]
        qcfg = quic_configuration(is_client=False, max_datagram_size=cfg.max_datagram_size,
                                  window=cfg.quic_window, idle_timeout=cfg.keepalive.timeout * 2)
        quic = await serve_quic("127.0.0.1", 0, configuration=qcfg, config=cfg,
                                create_protocol=lambda q, **kw: QuicCarrier(
                                    q, make_link=lambda c: make_link(
                                        c, tls_binding(c.quic), True), **kw))
        sock = aioquic_server_socket(quic)
        assert sock is not None
        ports["quic"] = sock.getsockname()[1]
    from p2psync.transport.api import listen as api_listen

    # the WebSocket carrier always through the API (its listener is the guarded accept loop)
    ws = await api_listen("127.0.0.1", 0, device_key=dev, certificate=cert, on_connection=handle,
                          transport="ws", config=cfg)
    ports["ws"] = ws.port
    print(json.dumps(ports), flush=True)
    loop = asyncio.get_running_loop()
    stall = 0.0
    last_report = loop.time()
    while True:
        t0 = loop.time()
        await asyncio.sleep(0.01)
        stall = max(stall, loop.time() - t0 - 0.01)
        if loop.time() - last_report >= 0.1:
            last_report = loop.time()
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * PAGE
            pool = shared_pool(cfg.pool_budget)
            print(json.dumps({"t": time.time(), "rss": rss, "cpu": time.process_time(),
                              "stall": stall, "pool": pool.used, "pool_peak": pool.peak}),
                  flush=True)
            stall = 0.0


# --- the attacker side -------------------------------------------------------------------------
@dataclass
class Ctx:
    ports: dict[str, int]
    stop: asyncio.Event
    args: argparse.Namespace
    stats: dict[str, Any] = field(default_factory=dict)


async def hostile_flood(ctx: Ctx, transport: str) -> None:
    """One hostile peer: handshake, one answered stream (as the engine expects), then fill
    every further stream to its credit with 1 MiB messages; reconnect when dropped."""
    payload = os.urandom(1 << 20)
    cap = ctx.args.flood_mib << 20
    sent = 0
    cfg = TransportConfig(limits=ENGINE_LIMITS)
    while not ctx.stop.is_set() and sent < cap:
        dev, cert = identity()
        try:
            conn = await connect(("127.0.0.1", ctx.ports[transport]), device_key=dev,
                                 certificate=cert, transport=transport,  # type: ignore[arg-type]
                                 config=cfg)
        except TransportError:
            await asyncio.sleep(0.2)
            continue
        ctx.stats["hostile_connections"] = ctx.stats.get("hostile_connections", 0) + 1
        try:
            first = await conn.open_stream()
            await first.send(b"hello")
            while not ctx.stop.is_set() and sent < cap:
                async with asyncio.timeout(1):
                    st = await conn.open_stream()
                for _ in range(16):
                    if ctx.stop.is_set() or sent >= cap:
                        break
                    await st.send(payload)
                    sent += len(payload)
        except (TransportError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.close()
    ctx.stats["bytes_sent"] = ctx.stats.get("bytes_sent", 0) + sent
    await ctx.stop.wait()


async def attack_stream_flood(ctx: Ctx) -> None:
    n = ctx.args.hostile
    await asyncio.gather(*(hostile_flood(ctx, "tcp" if i % 5 else "quic") for i in range(n)))


async def attack_ws_flood(ctx: Ctx) -> None:
    await asyncio.gather(*(hostile_flood(ctx, "ws") for _ in range(ctx.args.hostile)))


def initial_packets(n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        cfg = quic_configuration(is_client=True, max_datagram_size=1452, window=1 << 20,
                                 idle_timeout=5.0)
        cfg.server_name = "p2psync"
        q = QuicConnection(configuration=cfg)
        q.connect(("127.0.0.1", 9), now=0.0)
        out.append(q.datagrams_to_send(now=0.0)[0][0])
    return out


async def attack_quic_initial_flood(ctx: Ctx) -> None:
    """Spoofable QUIC Initials at ``--initial-rate`` packets/s, each with a fresh destination
    connection id (so each asks for new connection state)."""
    base = initial_packets(32)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)
    dest = ("127.0.0.1", ctx.ports["quic"])
    rate = ctx.args.initial_rate
    sent = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        while not ctx.stop.is_set():
            due = int((loop.time() - t0) * rate)
            while sent < due:
                pkt = bytearray(base[sent % len(base)])
                dcid_len = pkt[5]
                pkt[6:6 + dcid_len] = os.urandom(dcid_len)
                with contextlib.suppress(BlockingIOError):
                    udp.sendto(pkt, dest)
                sent += 1
            await asyncio.sleep(0.005)
    finally:
        udp.close()
        ctx.stats["initials_sent"] = sent


async def attack_idle_tcp(ctx: Ctx) -> None:
    """``--idle`` TCP connections that never say a word."""
    socks: list[socket.socket] = []
    failed = 0
    try:
        for i in range(ctx.args.idle):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.bind((f"127.0.{1 + i // 250 % 200}.{2 + i % 250}", 0))
                s.connect_ex(("127.0.0.1", ctx.ports["tcp"]))
                socks.append(s)
            except OSError:
                failed += 1
                s.close()
            if i % 200 == 199:
                await asyncio.sleep(0)
        ctx.stats["idle_open"] = len(socks)
        ctx.stats["idle_failed"] = failed
        await ctx.stop.wait()
    finally:
        for s in socks:
            s.close()


async def attack_initials_and_idle(ctx: Ctx) -> None:
    await asyncio.gather(attack_quic_initial_flood(ctx), attack_idle_tcp(ctx))


@dataclass(frozen=True)
class Attack:
    name: str
    what: str
    run: Callable[[Ctx], Awaitable[None]]


ATTACKS = [
    Attack("stream_flood", "N hostile peers (4/5 TCP, 1/5 QUIC) fill every stream, reconnect",
           attack_stream_flood),
    Attack("ws_flood", "N hostile peers over WebSocket fill every stream, reconnect",
           attack_ws_flood),
    Attack("quic_initials", "spoofable QUIC Initials, fresh connection id each",
           attack_quic_initial_flood),
    Attack("idle_tcp", "idle TCP sockets from many source addresses", attack_idle_tcp),
    Attack("initials+idle", "both of the above at once", attack_initials_and_idle),
]


# --- the honest peer ---------------------------------------------------------------------------
def emit(kind: str, t0: float, d: float, transport: str = "tcp") -> None:
    print(json.dumps({"k": kind, "t": t0, "d": d if d != float("inf") else None,
                      "transport": transport}), flush=True)


async def honest_syncing(ports: dict[str, int]) -> None:
    """One long-lived connection doing a round trip every 50 ms; emits (time, duration);
    a lost connection is an ``inf`` mark and is dialled again."""
    dev, cert = identity()
    while True:
        t0 = time.time()
        try:
            async with asyncio.timeout(10):
                conn = await connect(("127.0.0.1", ports["tcp"]), device_key=dev,
                                     certificate=cert, transport="tcp")
                st = await conn.open_stream()
        except (TransportError, TimeoutError, OSError):
            emit("sync", t0, float("inf"))
            await asyncio.sleep(0.5)
            continue
        try:
            while True:
                t0 = time.time()
                async with asyncio.timeout(10):
                    await st.send(b"sync")
                    await st.recv()
                emit("sync", t0, time.time() - t0)
                await asyncio.sleep(0.05)
        except (TransportError, TimeoutError):
            emit("sync", t0, float("inf"))
        finally:
            with contextlib.suppress(Exception):
                await conn.close()


async def honest_dialing(ports: dict[str, int]) -> None:
    """A new connection every 250 ms (TCP, QUIC alternately); emits (time, carrier, seconds
    to a first answer, None on failure within 2 s)."""
    i = 0
    while True:
        transport = ("tcp", "quic")[i % 2]
        i += 1
        dev, cert = identity()
        t0 = time.time()
        try:
            async with asyncio.timeout(2):
                conn = await connect(("127.0.0.1", ports[transport]), device_key=dev,
                                     certificate=cert, transport=transport)  # type: ignore[arg-type]
                st = await conn.open_stream()
                await st.send(b"hi")
                await st.recv()
            emit("dial", t0, time.time() - t0, transport)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.close()
        except (TransportError, TimeoutError, OSError):
            emit("dial", t0, float("inf"), transport)
        await asyncio.sleep(0.25)


async def run_honest(ports: dict[str, int]) -> None:
    """The honest peer in its own process, so the attackers' load does not slow it down."""
    await asyncio.gather(honest_syncing(ports), honest_dialing(ports))


# --- one run -----------------------------------------------------------------------------------
async def run_attack(attack: Attack, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--target", args.listener,
        *(["--pool-mib", str(args.pool_mib)] if args.pool_mib is not None else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        limit=1 << 20)
    assert proc.stdout is not None
    ports = json.loads(await proc.stdout.readline())
    loop = asyncio.get_running_loop()
    samples: list[tuple[float, dict[str, float]]] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            sample = json.loads(line)
            samples.append((sample["t"], sample))

    reader = loop.create_task(read())
    ctx = Ctx(ports, asyncio.Event(), args)
    honest = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--honest", json.dumps(ports),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
    events: list[dict[str, Any]] = []

    async def read_honest() -> None:
        assert honest.stdout is not None
        async for line in honest.stdout:
            events.append(json.loads(line))

    honest_reader = loop.create_task(read_honest())
    await asyncio.sleep(1.5)
    t_start = time.time()
    atk = loop.create_task(attack.run(ctx))
    await asyncio.sleep(args.duration)
    ctx.stop.set()
    with contextlib.suppress(asyncio.TimeoutError, Exception):
        await asyncio.wait_for(atk, 10)
    t_end = time.time()
    await asyncio.sleep(2.5)
    for p in (honest, proc):
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        await p.wait()
    for t in (reader, honest_reader):
        t.cancel()
    await asyncio.gather(reader, honest_reader, return_exceptions=True)
    marks = [(e["t"], e["d"] if e["d"] is not None else float("inf")) for e in events
             if e["k"] == "sync"]
    dials = [(e["t"], e["transport"], e["d"] if e["d"] is not None else float("inf"))
             for e in events if e["k"] == "dial"]

    def phase(t: float) -> str:
        return "before" if t < t_start else "during" if t < t_end else "after"

    out: dict[str, Any] = {"attack": attack.name, "listener": args.listener,
                           "budget": os.environ.get("P2PSYNC_NO_BUDGET") != "1", **ctx.stats}
    cpu_at: dict[str, float] = {}
    for name in ("before", "during", "after"):
        ss = [s for t, s in samples if phase(t) == name]
        if not ss:
            continue
        out[f"rss_{name}_mib"] = round(max(s["rss"] for s in ss) / 2**20, 1)
        out[f"stall_{name}_ms"] = round(max(s["stall"] for s in ss) * 1000, 1)
        out[f"pool_peak_{name}_mib"] = round(max(s["pool_peak"] for s in ss) / 2**20, 1)
        cpu_at[name] = ss[-1]["cpu"] - ss[0]["cpu"]
        out[f"cpu_{name}_pct"] = round(100 * cpu_at[name] / max(
            1e-9, (len(ss) - 1) * 0.1), 0)
    during = [d for t, d in marks if phase(t) == "during"]
    out["sync_rtt_max_ms"] = round(1000 * max(during), 1) if during else None
    out["sync_kept"] = bool(during) and max(during) < 2.0 and not any(
        d == float("inf") for _, d in marks)
    dd = [d for t, _, d in dials if phase(t) == "during"]
    out["dials_during"] = len(dd)
    out["dials_ok_2s"] = sum(1 for d in dd if d < 2.0)
    out["dial_max_s"] = round(max(dd), 2) if dd and max(dd) != float("inf") else None
    for carrier in ("tcp", "quic"):
        dc = [d for t, c, d in dials if phase(t) == "during" and c == carrier]
        out[f"dials_{carrier}"] = f"{sum(1 for d in dc if d < 2.0)}/{len(dc)}"
        ok = [d for d in dc if d < 2.0]
        out[f"dial_{carrier}_max_s"] = round(max(ok), 2) if ok else None
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [("attack", "attack"), ("listener", "listener"),
            ("rss_before_mib", "RSS before"), ("rss_during_mib", "RSS during (peak)"),
            ("rss_after_mib", "RSS after"), ("cpu_during_pct", "CPU during %"),
            ("pool_peak_during_mib", "pool peak MiB"),
            ("stall_during_ms", "max stall ms"), ("sync_rtt_max_ms", "honest RTT max ms"),
            ("sync_kept", "kept syncing"), ("dials_tcp", "TCP dials ok <2 s"),
            ("dial_tcp_max_s", "TCP dial max s"), ("dials_quic", "QUIC dials ok <2 s"),
            ("dial_quic_max_s", "QUIC dial max s")]
    print("| " + " | ".join(h for _, h in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k, _ in cols) + " |")


# --- head-sync poisoning (issue 20 item 1) ----------------------------------------------------
#: name -> what the lying member does. Each runs in a fresh process (``--headsync NAME``): a
#: real PeerEngine over the memory carrier (real handshake) against a member of the space.
HEADSYNC_ATTACKS = {
    "headsync_2^40": "every range 'differs, count 2^40, not listed' (sums consistent)",
    "headsync_65536_ids": "rule-abiding answers listing 65 536 made-up ids; every fetch of "
                          "one answered 'nothing here'",
}


async def run_headsync_target(name: str, seconds: float, rules_off: bool) -> dict[str, Any]:
    """One head-sync attack against a real engine; RSS sampled every 20 ms."""
    import tempfile

    from p2psync.node import sync_transport_config
    from p2psync.replica.document import ROOT as DOC_ROOT
    from p2psync.sync.engine import EngineConfig, PeerEngine
    from p2psync.sync.ldiff import HeadSyncSession
    from p2psync.sync.messages import (
        AclSyncRequest,
        AclSyncResponse,
        FullSyncRequest,
        FullSyncResponse,
        HeadSyncRequest,
        HeadSyncResponse,
        RangeResult,
    )
    from p2psync.sync.spacex import header_exchange_key
    from p2psync.transport.memory import memory_pair
    from tests.memory_net import SimNode
    from tests.sync_helpers import RawPeer  # reads in order: hello first

    if rules_off:  # the "before": main without the rules (and without anchors' sum check)
        for rule in [r for r in vars(HeadSyncSession) if r.startswith("_rule_")]:
            setattr(HeadSyncSession, rule, lambda *a, **k: None)
    tmp = Path(tempfile.mkdtemp(prefix="bench-headsync-"))
    a, evil = SimNode(0, tmp / "a.sqlite3"), SimNode(1, tmp / "evil.sqlite3")
    a.start()
    evil.start()
    assert a.replicas is not None
    space = a.replicas.create_space()
    with space.new_document().edit() as e:
        e.put(DOC_ROOT, "x", 1)
    raw, code = space.acl.invite(a.account, anyone_can_join=True)
    space.commit_acl(raw)
    space.commit_acl(space.acl.join(evil.account, code))
    fake = bytes([1]) * 32
    counts = {"head_sync_requests": 0, "ranges_asked": 0, "full_sync_requests": 0}

    def ids(bits: int, prefix: int, n: int) -> tuple[tuple[bytes, bytes], ...]:
        head = (prefix << (64 - bits)) if bits else 0
        return tuple((head.to_bytes(8, "big") + i.to_bytes(24, "big"), fake) for i in range(n))

    def result(q: Any) -> RangeResult:
        if name == "headsync_2^40":
            return RangeResult(q.bits, q.prefix, fake, (1 << 40) >> q.bits, None)
        n = 65536 >> q.bits  # 65 536 at the root, 16 per range at 12 bits: listed there
        return RangeResult(q.bits, q.prefix, fake, n, ids(q.bits, q.prefix, n) if n <= 32
                           else None)

    def answer(msg: Any) -> Any:
        if isinstance(msg, HeadSyncRequest):
            counts["head_sync_requests"] += 1
            counts["ranges_asked"] += len(msg.ranges)
            return HeadSyncResponse(msg.space_id, tuple(result(q) for q in msg.ranges))
        if isinstance(msg, AclSyncRequest):
            return AclSyncResponse(msg.space_id, msg.heads, (), False)
        if isinstance(msg, FullSyncRequest):
            counts["full_sync_requests"] += 1
            return FullSyncResponse(msg.space_id, msg.object_id, (), (), False)
        return None

    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE / (1 << 20)

    ca, cb, _ = await memory_pair(a.device, a.certificate, evil.device, evil.certificate,
                                  config=sync_transport_config())
    engine = PeerEngine(a.replicas, ca, EngineConfig(request_timeout=5.0, exchange_timeout=5.0))
    before = rss()
    peak = before
    t0 = time.perf_counter()
    task = asyncio.ensure_future(engine.run())
    peer = RawPeer(cb, evil.device,
                          {space.id: header_exchange_key(space.header.raw, space.id)},
                          answer=answer)
    await peer._start()
    while not engine.finished.is_set() and time.perf_counter() - t0 < seconds:
        peak = max(peak, rss())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(engine.finished.wait(), 0.02)
    closed = engine.finished.is_set()
    took = time.perf_counter() - t0
    peak = max(peak, rss())
    await peer.close()
    await engine.close("bench done")
    await asyncio.gather(task, return_exceptions=True)
    return {"attack": name, "rules": "off" if rules_off else "on",
            "disconnected": closed, "seconds": round(took, 2),
            "rss_before_mib": round(before, 1), "rss_peak_mib": round(peak, 1),
            "rss_growth_mib": round(peak - before, 1), **counts,
            "strikes": engine.strikes, "last_error": (engine.last_error or "")[:120]}


async def run_headsync(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in HEADSYNC_ATTACKS:
        if args.only and name not in args.only:
            continue
        for off in ([False, True] if args.headsync_before else [False]):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "--headsync", name,
                "--duration", str(args.duration), *(["--rules-off"] if off else []),
                stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
            out, _ = await proc.communicate()
            row = json.loads(out.decode().strip().splitlines()[-1])
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    return rows


def print_headsync_table(rows: list[dict[str, Any]]) -> None:
    cols = [("attack", "attack"), ("rules", "rules"), ("disconnected", "disconnected"),
            ("seconds", "s"), ("rss_growth_mib", "RSS growth MiB"),
            ("head_sync_requests", "head-sync requests"), ("ranges_asked", "ranges asked"),
            ("full_sync_requests", "fetches"), ("strikes", "strikes"),
            ("last_error", "why closed")]
    print("| " + " | ".join(h for _, h in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k, _ in cols) + " |")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for attack in ATTACKS:
        if args.headsync_only or (args.only and attack.name not in args.only):
            continue
        row = await run_attack(attack, args)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--target", choices=["guarded", "api"], help=argparse.SUPPRESS)
    ap.add_argument("--honest", help=argparse.SUPPRESS)
    ap.add_argument("--listener", choices=["guarded", "api"], default="guarded")
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--hostile", type=int, default=50)
    ap.add_argument("--flood-mib", type=int, default=64, help="per hostile peer")
    ap.add_argument("--initial-rate", type=int, default=10_000)
    ap.add_argument("--idle", type=int, default=5_000)
    ap.add_argument("--pool-mib", type=int, default=None,
                    help="target's pool_budget (default: TransportConfig's)")
    ap.add_argument("--json", default="bench_hostile.json")
    ap.add_argument("--headsync", choices=list(HEADSYNC_ATTACKS), help=argparse.SUPPRESS)
    ap.add_argument("--rules-off", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--headsync-only", action="store_true",
                    help="run only the head-sync attacks (issue 20 item 1)")
    ap.add_argument("--headsync-before", action="store_true",
                    help="also run each head-sync attack with the rules switched off")
    args = ap.parse_args()
    if args.headsync:
        print(json.dumps(asyncio.run(run_headsync_target(args.headsync, args.duration,
                                                         args.rules_off))))
        return
    if args.target:
        asyncio.run(run_target(args.target, args.pool_mib))
        return
    if args.honest:
        asyncio.run(run_honest(json.loads(args.honest)))
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = asyncio.run(main_async(args))
    print_table(rows)
    headsync = asyncio.run(run_headsync(args))
    print_headsync_table(headsync)
    meta = {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "args": {k: v for k, v in vars(args).items()
                                            if k != "target"}}
    Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "headsync": headsync},
                                          indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
