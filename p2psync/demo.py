"""``p2psync demo``: three agents on this machine — a laptop, a phone and a backup — syncing a
space over real loopback connections, driven through the local API as an app would drive them.

The agents run in one background event loop (each with its own temp home, keystore, SQLite
store, QUIC + TCP listeners and API socket); the demo talks to each over its Unix socket with
the blocking :class:`~p2psync.api.ApiClient`. The laptop creates a space and a document, makes
the backup a *replicator* (it stores and serves ciphertext it cannot read), invites the phone;
the phone joins by the invite code over the network; laptop and phone edit at the same moment;
the demo waits for all three to agree and prints the documents and each device's status.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from p2psync.agent.core import Agent
from p2psync.api import ApiClient, ApiError, ApiServer
from p2psync.config import AgentConfig
from p2psync.crypto.keys import account_from_phrase, new_recovery_phrase
from p2psync.errors import P2PSyncError
from p2psync.home import Home

T = TypeVar("T")
DEVICES = ("laptop", "phone", "backup")
TIMEOUT = 30.0


class DemoFailed(P2PSyncError):
    """A demo step failed or the devices did not converge in time."""


class _Loop:
    """An asyncio loop in a daemon thread; :meth:`run` executes a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="p2psync-demo-agents")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _config(**kw: Any) -> AgentConfig:
    return AgentConfig(listen="127.0.0.1", quic_port=0, tcp_port=0, mdns=False, durable=False,
                       reconnect_cap=2.0, **kw)


def run_demo(*, out_json: bool = False, base: Path | None = None) -> dict[str, Any]:
    """Run the walkthrough; returns (and with ``out_json`` prints) the report."""
    tmp = tempfile.TemporaryDirectory(prefix="p2psync-demo-") if base is None else None
    root = Path(tmp.name) if tmp is not None else base
    assert root is not None
    say: Callable[..., None] = (lambda *a: None) if out_json else print
    t0 = time.monotonic()
    loop = _Loop()
    agents: dict[str, Agent] = {}
    servers: list[ApiServer] = []
    clients: dict[str, ApiClient] = {}
    report: dict[str, Any] = {"converged": False}
    try:
        homes = {name: Home(root / name) for name in DEVICES}
        keys = {name: homes[name].create(account_from_phrase(new_recovery_phrase()), "")
                for name in DEVICES}

        async def start(name: str, cfg: AgentConfig) -> None:
            agent = await Agent(homes[name], keys[name], cfg).start()
            agents[name] = agent
            servers.append(await ApiServer(agent).start())

        loop.run(start("backup", _config()))
        backup_addr = agents["backup"].node.address("tcp")
        loop.run(start("laptop", _config(backup=f"tcp://{backup_addr}",
                                         backup_peer_id=keys["backup"].device.id)))
        loop.run(start("phone", _config()))

        async def backup_dials_laptop() -> None:
            # the backup is a plain agent: it answers only devices it has a reason to (issue
            # 12.6). Dialling the laptop (which names it as its backup) gives it one.
            agents["backup"].node.add_peer(agents["laptop"].node.address("tcp"))

        loop.run(backup_dials_laptop())
        for name in DEVICES:
            clients[name] = ApiClient(homes[name].path, timeout=TIMEOUT + 5)
            say(f"{name:7} peer {keys[name].device.id[:16]}…  listening "
                f"{', '.join(agents[name].node.addresses)}")
        laptop, phone, backup = clients["laptop"], clients["phone"], clients["backup"]

        # the laptop makes a space and a document, and lets the backup replicate it
        space = laptop.call("space.create", name="groceries")["space_id"]
        doc = laptop.call("doc.new", space=space)["doc"]
        laptop.call("doc.set", space=space, doc=doc, path="title", value="Groceries")
        laptop.call("doc.set", space=space, doc=doc, path="items", value=["milk"])
        laptop.call("space.add_replicator", space=space,
                    account=keys["backup"].account.id)
        loop.run(agents["laptop"].node.wait_for(
            lambda: keys["backup"].device.id in agents["laptop"].connected_peers(), TIMEOUT))
        for attempt in range(5):  # both dialled each other: one link may close as a duplicate
            try:
                backup.call("space.replicate", space_id=space)
                break
            except ApiError:
                if attempt == 4:
                    raise
                time.sleep(0.1)
        say(f"space   {space} (laptop owns it; backup replicates ciphertext)")

        # the phone joins by invite code, over the network
        invite = laptop.call("space.invite", space=space, role="writer", no_approval=True)
        say(f"invite  {invite['invite'][:48]}…  hints {', '.join(invite['addresses'])}")
        joined = phone.call("space.join", code=invite["invite"], name="groceries")
        phone.call("space.wait_synced", space=space, timeout=TIMEOUT)
        say(f"phone   joined as {joined['role']}: {phone.call('doc.get', space=space, doc=doc)}")

        # both edit at the same moment (each a signed change made before seeing the other's)
        def edit(who: ApiClient, item: str) -> Any:
            return who.call("doc.set", space=space, doc=doc, path="items/1", value=item)

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(edit, laptop, "eggs"), pool.submit(edit, phone, "bread")]
            for f in futures:
                f.result(TIMEOUT)
        # once the phone holds both edits, its next change names both as parents (a merge)
        deadline = time.monotonic() + TIMEOUT
        while _space_hash(phone, space) != _space_hash(laptop, space):
            if time.monotonic() > deadline:
                raise DemoFailed("the phone never received the laptop's concurrent edit")
            phone.call("space.wait_synced", space=space, timeout=5.0)
        phone.call("doc.set", space=space, doc=doc, path="done", value=False)

        # wait until all three hold the same heads (each wait is event-driven in the agent)
        deadline = time.monotonic() + TIMEOUT
        while True:
            hashes = {n: _space_hash(clients[n], space) for n in DEVICES}
            docs_equal = (laptop.call("doc.get", space=space, doc=doc)
                          == phone.call("doc.get", space=space, doc=doc))
            if len(set(hashes.values())) == 1 and docs_equal:
                break
            if time.monotonic() > deadline:
                raise DemoFailed(f"no convergence within {TIMEOUT:.0f}s: {hashes}")
            for n in DEVICES:
                clients[n].call("space.wait_synced", space=space, timeout=5.0)
        # a device learns that its peers hold what it has one acknowledgement later (its
        # in-sync check after a push, docs/engine.md): give that round trip before reporting
        settle = time.monotonic() + 2.0
        while time.monotonic() < settle and not all(
                _all_in_sync(clients[n].call("status"), space) for n in DEVICES):
            time.sleep(0.01)
        a = laptop.call("doc.get", space=space, doc=doc)
        b = phone.call("doc.get", space=space, doc=doc)
        history = laptop.call("doc.history", space=space, doc=doc)
        status = {n: _summary(clients[n].call("status"), space) for n in DEVICES}
        report = {"space": space, "doc": doc, "laptop": a, "phone": b,
                  "converged": a == b and len(set(hashes.values())) == 1,
                  "history": len(history),
                  "merge": any(len(h["parents"]) > 1 for h in history),
                  "members": laptop.call("space.members", space=space),
                  "status": status, "seconds": round(time.monotonic() - t0, 2)}
        say(f"laptop  {json.dumps(a, sort_keys=True)}")
        say(f"phone   {json.dumps(b, sort_keys=True)}")
        for n in DEVICES:
            s = status[n]
            say(f"{n:7} role={s['role']:10} documents={s['documents']} peers={s['peers']} "
                f"in_sync={s['peers_in_sync']}/{s['peers']} fingerprint={s['heads_hash'][:12]}")
        say(f"converged: {report['converged']}  ({report['history']} signed changes, "
            f"concurrent edits merged: {report['merge']}, {report['seconds']} s)")
    except (P2PSyncError, TimeoutError, OSError) as exc:
        report = dict(report, converged=False, error=f"{type(exc).__name__}: {exc}")
        say(f"demo failed: {report['error']}")
    finally:
        for c in clients.values():
            c.close()

        async def shutdown() -> None:
            for s in servers:
                await s.close()
            for ag in agents.values():
                await ag.close()

        try:
            loop.run(shutdown())
        finally:
            loop.stop()
            if tmp is not None:
                tmp.cleanup()
    if out_json:
        print(json.dumps(report, indent=1, sort_keys=True))
    return report


def _space_hash(client: ApiClient, space: str) -> str:
    for s in client.call("status")["spaces"]:
        if s["space_id"] == space:
            return str(s["heads_hash"])
    return ""


def _all_in_sync(status: dict[str, Any], space: str) -> bool:
    sp = next((s for s in status["spaces"] if s["space_id"] == space), None)
    return sp is not None and sp["peers_in_sync"] == sp["peers"]


def _summary(status: dict[str, Any], space: str) -> dict[str, Any]:
    """One device's status for the report: its role and the sync state of the space."""
    sp = next((s for s in status["spaces"] if s["space_id"] == space), None)
    peers = [{"peer_id": p["peer_id"],
              "spaces": [ps for ps in p["spaces"] if ps["space_id"] == space]}
             for p in status["peers"]]
    return {"peer_id": status["peer_id"], "role": sp["role"] if sp else None,
            "documents": sp["objects"] if sp else 0, "heads_hash": sp["heads_hash"] if sp else "",
            "peers": sp["peers"] if sp else 0, "peers_in_sync": sp["peers_in_sync"] if sp else 0,
            "connections": peers}
