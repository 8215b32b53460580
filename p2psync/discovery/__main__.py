"""``python -m p2psync.discovery``: advertise and browse, printing events as JSON lines.

A debugging aid ("who does mDNS see from here?") and the process the LAN tests run inside network
namespaces. Reads commands from stdin, one per line: ``refresh``, ``quit``. SIGTERM/SIGINT say
goodbye on mDNS and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from p2psync import PROTOCOL_VERSION
from p2psync.crypto.ids import peer_id
from p2psync.discovery.mdns import (
    DiscoveryEvent,
    MdnsConfig,
    MdnsDiscovery,
    NetworkChanged,
    PeerGone,
    PeerSeen,
)
from p2psync.discovery.records import Advert

_T0 = time.monotonic()


def _out(obj: dict[str, Any]) -> None:
    obj["t"] = round(time.monotonic() - _T0, 3)
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _event_json(ev: DiscoveryEvent) -> dict[str, Any]:
    if isinstance(ev, PeerSeen):
        return {"event": "seen", "peer_id": ev.peer_id, "addresses": list(ev.addresses),
                "quic_port": ev.quic_port, "tcp_port": ev.tcp_port, "version": ev.version}
    if isinstance(ev, PeerGone):
        return {"event": "gone", "peer_id": ev.peer_id}
    assert isinstance(ev, NetworkChanged)
    return {"event": "network", "addresses": list(ev.addresses)}


async def _main(args: argparse.Namespace) -> int:
    pid = args.peer_id or peer_id(os.urandom(32))
    advert = None
    if not args.browse_only:
        advert = Advert(pid, args.advertise_version, args.quic_port, args.tcp_port)
    config = MdnsConfig(poll_interval=args.poll, interfaces=args.interface or None,
                        ipv6=not args.no_ipv6)
    disco = MdnsDiscovery(advert, on_event=lambda ev: _out(_event_json(ev)), config=config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def commands() -> None:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            cmd = line.decode().strip()
            if cmd == "refresh":
                await disco.refresh()
                _out({"event": "refreshed"})
            elif cmd == "quit":
                break
        stop.set()

    await disco.start()
    registered = await disco.wait_registered(timeout=15)
    _out({"event": "ready", "peer_id": pid, "registered": registered,
          "addresses": list(disco.local_addresses)})
    cmd_task = loop.create_task(commands()) if args.stdin else None
    await stop.wait()
    if cmd_task is not None:
        cmd_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await cmd_task
    await disco.close()
    _out({"event": "closed"})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2psync.discovery", description=__doc__)
    p.add_argument("--peer-id", help="advertise this peer id (default: a random one)")
    p.add_argument("--quic-port", type=int, default=4433)
    p.add_argument("--tcp-port", type=int, default=4433)
    p.add_argument("--advertise-version", type=int, default=PROTOCOL_VERSION,
                   help=argparse.SUPPRESS)
    p.add_argument("--browse-only", action="store_true", help="do not advertise")
    p.add_argument("--poll", type=float, default=3.0, help="interface poll interval, seconds")
    p.add_argument("--interface", action="append", help="use only this interface (repeatable)")
    p.add_argument("--no-ipv6", action="store_true")
    p.add_argument("--stdin", action="store_true", help="read commands (refresh, quit) on stdin")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if not args.verbose:
        logging.getLogger("zeroconf").setLevel(logging.ERROR)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
