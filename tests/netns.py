"""A real LAN for tests: N Linux network namespaces joined by a bridge.

Each namespace gets one veth (``eth0`` inside) plugged into a bridge in the root namespace, an
IPv4 address in a private test subnet (``10.77.<lan>.0/24``) and an IPv6 link-local address,
with multicast on, so mDNS works between namespaces exactly as on a switched LAN. The harness can
run processes inside a namespace, take a link down/up, change an address and block multicast.

Everything it creates is named ``p2pt<pid>...`` (namespaces ``p2pt<pid>-<i>``). Cleanup always
runs (context manager / fixture finaliser / atexit), and :func:`cleanup_stale` removes leftovers of
earlier runs whose process is gone, so a crashed run never leaks namespaces into the next.

Tests using it are marked ``@pytest.mark.netns`` and skipped with a reason when not root or when
``ip`` (iproute2) is missing. Only our own namespaces' addresses and loopback are ever targeted.

Multicast blocking uses the bridge: ``mcast_flood off`` on a namespace's bridge port stops
multicast frames from reaching it (snooping is off, so all multicast is "unknown" and subject to
that flag). It needs nothing beyond iproute2: nft/iptables are not installed on the CI image and
tc action modules cannot be loaded in the CI VM.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PREFIX = "p2pt"
REPO = Path(__file__).resolve().parent.parent
_NAME_RE = re.compile(rf"^{PREFIX}(\d+)")


def skip_reason() -> str | None:
    """Why netns tests cannot run here, or None when they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the netns tests as root)"
    if shutil.which("ip") is None:
        return "iproute2 'ip' is missing (apt-get install iproute2)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"'ip netns' does not work here: {probe.stderr.strip()}"
    return None


#: Apply to netns tests: marks them and skips them with a clear reason when unsupported.
netns_test = pytest.mark.netns
requires_netns = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


def _ip(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=20)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {res.stderr.strip()}")
    return res


def _sysctl(ns: str | None, key: str, value: str) -> None:
    """Write a sysctl inside a namespace (``ip netns exec`` gives it its own /proc/sys/net)."""
    path = "/proc/sys/" + key.replace(".", "/")
    argv = ["ip", "netns", "exec", ns, "sh", "-c", f"echo {value} > {path}"] if ns else None
    if argv is None:
        Path(path).write_text(value)
        return
    subprocess.run(argv, capture_output=True, check=False, timeout=10)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete namespaces and links left by earlier runs whose owning process is gone."""
    removed: list[str] = []
    res = _ip("netns", "list", check=False)
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    res = _ip("-o", "link", "show", check=False)
    for line in res.stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = _NAME_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _ip("link", "del", name, check=False)
            removed.append(name)
    return removed


@dataclass
class Node:
    """One namespace on the test LAN."""

    index: int
    ns: str
    host_if: str  #: bridge-side veth, in the root namespace
    ipv4: str
    ifname: str = "eth0"

    def link_local6(self) -> str | None:
        """The namespace's IPv6 link-local address (without scope), if it has one yet."""
        res = _ip("-j", "-6", "addr", "show", "dev", self.ifname, ns=self.ns, check=False)
        try:
            data = json.loads(res.stdout or "[]")
        except json.JSONDecodeError:
            return None
        for dev in data:
            for a in dev.get("addr_info", []):
                if a.get("scope") == "link":
                    return str(a["local"])
        return None


_live: list[NetnsLan] = []


@atexit.register
def _cleanup_all() -> None:
    for lan in list(_live):
        lan.close()


class NetnsLan:
    """N namespaces on one bridge. Use as a context manager or via the ``netns_lan`` fixture."""

    _counter = 0

    def __init__(self, count: int, *, lan: int | None = None) -> None:
        if not 1 <= count <= 50:
            raise ValueError("between 1 and 50 namespaces")
        NetnsLan._counter += 1
        self.tag = f"{PREFIX}{os.getpid()}{chr(ord('a') + (NetnsLan._counter - 1) % 26)}"
        self.lan = lan if lan is not None else 77 + (NetnsLan._counter - 1) % 100
        self.bridge = f"{self.tag}br"
        self.nodes = [
            Node(i, f"{self.tag}-{i}", f"{self.tag}{i}", f"10.77.{self.lan}.{i + 1}")
            for i in range(count)
        ]
        self._closed = False
        self._procs: list[JsonLinesProcess] = []
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{self.tag}-")

    # --- lifecycle ------------------------------------------------------------------------------
    def up(self) -> NetnsLan:
        """Create the bridge, namespaces and links. Cleans up what it made if anything fails."""
        _live.append(self)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("link", "set", self.bridge, "type", "bridge", "mcast_snooping", "0")
            _sysctl(None, f"net.ipv6.conf.{self.bridge}.disable_ipv6", "1")
            _ip("link", "set", self.bridge, "up")
            for node in self.nodes:
                self._add_node(node)
        except BaseException:
            self.close()
            raise
        return self

    def _add_node(self, node: Node) -> None:
        _ip("netns", "add", node.ns)
        _ip("link", "set", "lo", "up", ns=node.ns)
        _ip("link", "add", node.host_if, "type", "veth", "peer", "name", node.ifname,
            "netns", node.ns)
        _sysctl(None, f"net.ipv6.conf.{node.host_if}.disable_ipv6", "1")
        _ip("link", "set", node.host_if, "master", self.bridge)
        _ip("link", "set", node.host_if, "up")
        _ip("addr", "add", f"{node.ipv4}/24", "dev", node.ifname, ns=node.ns)
        _ip("link", "set", node.ifname, "multicast", "on", ns=node.ns)
        _ip("link", "set", node.ifname, "up", ns=node.ns)

    def close(self) -> None:
        """Stop our processes and delete everything we created. Idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            proc.kill_now()
        for node in self.nodes:
            _ip("netns", "del", node.ns, check=False)  # takes its veth pair with it
            _ip("link", "del", node.host_if, check=False)
        _ip("link", "del", self.bridge, check=False)
        if self in _live:
            _live.remove(self)
        self._tmp.cleanup()

    async def aclose(self) -> None:
        """Kill and reap our processes inside the event loop, then :meth:`close`."""
        for proc in self._procs:
            await proc.aclose()
        self.close()

    def __enter__(self) -> NetnsLan:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- actions --------------------------------------------------------------------------------
    def exec_argv(self, node: Node, argv: list[str]) -> list[str]:
        """The argv that runs ``argv`` inside ``node``'s namespace."""
        return ["ip", "netns", "exec", node.ns, *argv]

    def run(self, node: Node, argv: list[str], *, check: bool = True,
            timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace and wait for it."""
        return subprocess.run(self.exec_argv(node, argv), capture_output=True, text=True,
                              check=check, timeout=timeout)

    async def spawn_python(self, node: Node, args: list[str], *, stdin: bool = False,
                           env: dict[str, str] | None = None) -> JsonLinesProcess:
        """Start ``python <args>`` inside a namespace, reading its stdout as JSON lines.

        ``stdin=True`` gives it a pipe (see :meth:`JsonLinesProcess.send`).
        """
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        err_path = Path(self._tmp.name) / f"ns{node.index}-{len(self._procs)}.stderr"
        with err_path.open("wb") as err:  # a file, not a pipe: a chatty child never blocks
            proc = await asyncio.create_subprocess_exec(
                *self.exec_argv(node, [sys.executable, *args]),
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=err,
                env=full_env, cwd=str(REPO), start_new_session=True,
            )
        jp = JsonLinesProcess(proc, name=f"ns{node.index}", stderr_path=err_path)
        self._procs.append(jp)
        return jp

    def link_down(self, node: Node) -> None:
        """Take the namespace's interface down (as if it left the WiFi)."""
        _ip("link", "set", node.ifname, "down", ns=node.ns)

    def link_up(self, node: Node) -> None:
        _ip("link", "set", node.ifname, "up", ns=node.ns)

    def set_ipv4(self, node: Node, address: str) -> None:
        """Replace the namespace's IPv4 address (as if DHCP gave it a new lease)."""
        _ip("addr", "flush", "dev", node.ifname, "scope", "global", ns=node.ns)
        _ip("addr", "add", f"{address}/24", "dev", node.ifname, ns=node.ns)
        node.ipv4 = address

    def block_multicast(self, node: Node | None = None) -> None:
        """Stop multicast frames from reaching ``node`` (all nodes when None); unicast stays.

        Done on the bridge (``mcast_flood off`` on the port), outside the namespace, so the
        process under test sees a normal multicast-capable interface that simply hears nothing,
        like WiFi with multicast filtering. Note: IPv6 neighbour discovery is multicast too, so
        IPv6 unicast *to* a blocked node fails; use its IPv4 address for unicast.
        """
        for n in [node] if node is not None else self.nodes:
            subprocess.run(["bridge", "link", "set", "dev", n.host_if, "mcast_flood", "off"],
                           capture_output=True, check=True, timeout=10)

    def unblock_multicast(self, node: Node | None = None) -> None:
        for n in [node] if node is not None else self.nodes:
            subprocess.run(["bridge", "link", "set", "dev", n.host_if, "mcast_flood", "on"],
                           capture_output=True, check=True, timeout=10)


class ProcessExited(AssertionError):
    """The process under test exited while a test was waiting for one of its lines."""


@dataclass
class JsonLinesProcess:
    """A subprocess whose stdout is JSON lines; tests await lines matching a predicate."""

    proc: asyncio.subprocess.Process
    name: str = "proc"
    stderr_path: Path | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    _taken: set[int] = field(default_factory=set)

    async def _read_one(self) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            return None
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            obj = {"event": "non-json", "text": raw.decode(errors="replace").rstrip()}
        if not isinstance(obj, dict):
            obj = {"event": "non-json", "text": repr(obj)}
        self.lines.append(obj)
        return obj

    async def send(self, line: str) -> None:
        """Write one line to the process's stdin (spawned with ``stdin=True``)."""
        assert self.proc.stdin is not None, "spawned without stdin=True"
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    def mark(self) -> int:
        """A position in the output: pass it as ``since`` to wait only for later lines."""
        return len(self.lines)

    async def expect(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                     *, since: int = 0, what: str = "a matching line") -> dict[str, Any]:
        """Wait for a line at index >= ``since`` satisfying ``pred`` and not returned before.

        Lines already read are searched first, so an event that arrived before the test
        started waiting is not missed.
        """
        for i in range(since, len(self.lines)):
            if i not in self._taken and pred(self.lines[i]):
                self._taken.add(i)
                return self.lines[i]
        try:
            async with asyncio.timeout(timeout):
                while True:
                    obj = await self._read_one()
                    if obj is None:
                        raise ProcessExited(f"{self.name} exited (rc={await self.proc.wait()}) "
                                            f"before {what}; stderr: {await self.stderr()}")
                    if len(self.lines) - 1 >= since and pred(obj):
                        self._taken.add(len(self.lines) - 1)
                        return obj
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no {what} within {timeout}s; lines: {self.lines[-20:]}"
            ) from None

    async def stderr(self) -> str:
        """The last few KB the process wrote to stderr (for failure messages)."""
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_bytes()[-4000:].decode(errors="replace")

    async def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout``; keeps the remaining lines."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                while await self._read_one() is not None:
                    pass
        except TimeoutError:
            self.kill_now()
        return await self.aclose()

    async def aclose(self) -> int:
        """Kill if still running and reap, closing the pipes inside the event loop."""
        self.kill_now()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                if self.proc.stdout is not None:
                    await self.proc.stdout.read()
                return await self.proc.wait()
        return -1

    def kill_now(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
async def netns_lan() -> AsyncIterator[Callable[[int], NetnsLan]]:
    """Factory fixture: ``lan = netns_lan(3)`` gives a LAN torn down after the test, pass or
    fail (processes killed and reaped, namespaces and bridge deleted)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cleanup_stale()
    made: list[NetnsLan] = []

    def make(count: int) -> NetnsLan:
        lan = NetnsLan(count).up()
        made.append(lan)
        return lan

    try:
        yield make
    finally:
        for lan in made:
            try:
                await lan.aclose()
            finally:
                lan.close()

