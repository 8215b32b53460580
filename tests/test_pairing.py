"""Adding one's own device by pairing (issue 14): SPAKE2 over the LAN, sans-IO protocol checks
(wrong code, garbled and replayed messages), the rate limit on a real loopback socket, and
the whole story with two agents: the new device acts for the account, then is removed."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest

from p2psync.agent import ops, pairing
from p2psync.agent.core import Agent
from p2psync.api import handle_request
from p2psync.codec import pack, unpack
from p2psync.config import AgentConfig
from p2psync.crypto.cert import DeviceCertificate
from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.device import LocalDevice
from p2psync.errors import PairingError, PairingRefused, TransportError
from p2psync.home import Home
from tests.conftest import Fleet

ACCOUNT = AccountKey(b"\x07" * 32)
CODE = "ABCDEFGH"


def bundle_for(pub: bytes, name: str) -> pairing.Bundle:
    cert = DeviceCertificate.issue(ACCOUNT, pub)
    return pairing.Bundle(ACCOUNT, cert, "p-host", "laptop", [], ["tcp:10.0.0.2:4000"])


def run(host: pairing.HostSession, guest: pairing.GuestSession) -> pairing.Bundle:
    reply = host.hello(guest.hello())
    return guest.bundle(host.confirm(guest.reply(reply)))


def test_the_right_code_hands_over_the_account_and_a_certificate() -> None:
    device = DeviceKey.generate()
    host = pairing.HostSession(CODE, bundle_for)
    got = run(host, pairing.GuestSession(CODE, device, "phone"))
    assert got.account.public == ACCOUNT.public
    assert (got.certificate.account, got.certificate.device) == (ACCOUNT.public, device.public)
    assert host.guest == (device.public, "phone") and got.addresses == ["tcp:10.0.0.2:4000"]


def test_a_wrong_code_is_refused_before_anything_is_sent() -> None:
    host = pairing.HostSession(CODE, bundle_for)
    guest = pairing.GuestSession("ABCDEFGJ", DeviceKey.generate(), "phone")
    reply = host.hello(guest.hello())
    with pytest.raises(PairingRefused, match="wrong pairing code"):
        guest.reply(reply)  # the host's confirmation does not match: the guest stops here
    # and a guest that lies about the confirmation gets nothing either
    forged = pack([b"\0" * 32, b"\0" * 60])
    with pytest.raises(PairingRefused, match="wrong pairing code"):
        host.confirm(forged)
    assert host.guest is None


def test_garbled_pake_messages_fail_the_attempt() -> None:
    guest = pairing.GuestSession(CODE, DeviceKey.generate(), "phone")
    hello = unpack(guest.hello())
    flipped = bytes([hello[2][0]]) + bytes([hello[2][1] ^ 1]) + hello[2][2:]
    host = pairing.HostSession(CODE, bundle_for)
    try:
        reply = host.hello(pack([1, "p2psync-pair", flipped]))
    except PairingRefused:
        return  # not a group element: refused at once
    with pytest.raises(PairingRefused):
        guest.reply(reply)  # another key on each side: the confirmations differ
    for junk in (b"", b"\xc1", pack([1, "p2psync-pair", b"\x41" + b"\0" * 32]),
                 pack([1, "other-protocol", hello[2]]), pack(["x"] * 5)):
        with pytest.raises(PairingRefused):
            pairing.HostSession(CODE, bundle_for).hello(junk)


def test_a_replayed_exchange_opens_nothing() -> None:
    """An eavesdropper records a whole successful pairing and replays the guest's messages
    to a new host session with the same code: the host's fresh SPAKE2 secret gives another
    key, so the recorded confirmation fails and no bundle is sealed."""
    guest = pairing.GuestSession(CODE, DeviceKey.generate(), "phone")
    first = pairing.HostSession(CODE, bundle_for)
    hello = guest.hello()
    confirm = guest.reply(first.hello(hello))
    first.confirm(confirm)
    again = pairing.HostSession(CODE, bundle_for)
    again.hello(hello)
    with pytest.raises(PairingRefused, match="wrong pairing code"):
        again.confirm(confirm)


def test_the_bundle_must_be_for_this_device() -> None:
    me, other = DeviceKey.generate(), DeviceKey.generate()

    def wrong(pub: bytes, name: str) -> pairing.Bundle:
        return bundle_for(other.public, name)

    with pytest.raises(PairingRefused, match="not for this device"):
        run(pairing.HostSession(CODE, wrong), pairing.GuestSession(CODE, me, "phone"))


def test_codes_and_links() -> None:
    code = pairing.new_code()
    assert pairing.normalize_code(pairing.show_code(code).lower()) == code
    link = pairing.link(code, ["10.0.0.2:4000", "127.0.0.1:4000"])
    assert pairing.parse_link(link) == (code, ["10.0.0.2:4000", "127.0.0.1:4000"])
    for bad in ("ABC", "ABCD-EFG0", "p2psync-pair1:xx@1.2.3.4:5"):
        with pytest.raises(PairingError):
            pairing.parse_link(bad)


# --- the shell, on a real loopback socket ----------------------------------------------------
async def test_too_many_wrong_codes_end_the_pairing() -> None:
    host = await pairing.PairingHost(bundle_for, host="127.0.0.1").start()
    addr = f"127.0.0.1:{host.bound_port}"
    wrong = "ABCDEFGJ" if host.code != "ABCDEFGJ" else "ABCDEFGK"
    waiter = asyncio.ensure_future(host.wait(20))
    for _ in range(pairing.MAX_ATTEMPTS):
        with pytest.raises(PairingRefused):
            await pairing.pair(wrong, addr, DeviceKey.generate(), "mallory", timeout=10)
    with pytest.raises(PairingRefused, match=f"{pairing.MAX_ATTEMPTS} failed pairing"):
        await waiter
    assert host.attempts == pairing.MAX_ATTEMPTS
    with pytest.raises(PairingError):  # the right code is too late: nobody listens now
        await pairing.pair(host.code, addr, DeviceKey.generate(), "me", timeout=5)


async def test_an_oversized_hello_is_refused_unread() -> None:
    host = await pairing.PairingHost(bundle_for, host="127.0.0.1").start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", host.bound_port)
        writer.write(struct.pack(">I", pairing.MAX_HELLO + 1) + b"\0" * 64)
        await writer.drain()
        (n,) = struct.unpack(">I", await reader.readexactly(4))
        assert unpack(await reader.readexactly(n))[0] == "error"
        writer.close()
        assert host.attempts == 1 and "frame of" in host.failures[0]
    finally:
        await host.close()


# --- the whole story with two agents ----------------------------------------------------------
async def call(agent: Agent, op: str, **params: Any) -> Any:
    answer = await handle_request(agent, {"op": op, "params": params})
    assert answer["ok"], answer
    return answer["result"]


async def test_a_paired_device_acts_for_the_account_then_is_removed(
        fleet: Fleet, tmp_path: Path) -> None:
    a = await fleet.agent("laptop")
    space = (await call(a, "space.create", name="Notes"))["space_id"]
    doc = (await call(a, "doc.new", space=space))["doc"]
    await call(a, "doc.set", space=space, doc=doc, path="title", value="from the laptop")
    started = await call(a, "device.add")
    assert started["link"].startswith(pairing.PREFIX)
    waiter = asyncio.ensure_future(call(a, "device.add_wait", code=started["code"],
                                        timeout=20))
    device = DeviceKey.generate()
    addr = next(x for x in started["addresses"] if x.startswith("127.0.0.1:"))
    bundle = await pairing.pair(started["code"], addr, device, "phone", timeout=20)
    assert (await waiter)["peer_id"] == device.id
    home = Home(tmp_path / "phone")
    pairing.create_home(home, bundle.account, device, "")
    with LocalDevice(home, home.open_keys("")) as dev:
        for sid, header, acl in bundle.spaces:
            dev.adopt_space(sid, header, acl)
        assert [r["name"] for r in ops.space_list(dev)] == ["Notes"]  # the shared name
    pairing.remember_host(home.path, bundle.host_peer, bundle.addresses)
    cfg = AgentConfig(listen="127.0.0.1", quic_port=0, tcp_port=0, mdns=False,
                      durable=False, reconnect_cap=1.0)
    b = fleet.track(await Agent(home, home.open_keys(""), cfg).start())
    assert b.keys.account.id == a.keys.account.id and b.keys.device.id == device.id
    await b.wait_synced(space, 20)  # its agent dials the laptop on its own (known peers)
    assert await call(b, "doc.get", space=space, doc=doc, path="title") == "from the laptop"
    await call(b, "doc.set", space=space, doc=doc, path="by", value="the phone")
    async with asyncio.timeout(20):
        while (await call(a, "doc.get", space=space, doc=doc)).get("by") != "the phone":
            await asyncio.sleep(0.05)
    rows = await call(a, "device.list")
    assert [(r["name"], r["state"]) for r in rows] == [("this device", "active"),
                                                        ("phone", "active")]
    # removed: its connection is dropped and a new one refused
    assert (await call(a, "device.remove", device=device.id[:12]))["removed"]
    assert [r["state"] for r in await call(a, "device.list")] == ["active", "removed"]
    async with asyncio.timeout(10):
        while device.id in a.node.connected_peers():
            await asyncio.sleep(0.05)
    with pytest.raises(TransportError, match="this device was removed from the account"):
        await b.node.connect(a.node.address("tcp"))
    assert device.id not in a.node.connected_peers()
