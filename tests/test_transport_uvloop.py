"""Both carriers work under uvloop, the loop the agent runs on (`p2psync run` uses it)."""

from __future__ import annotations

import asyncio

import pytest

from p2psync.crypto import AccountKey, DeviceCertificate, DeviceKey
from p2psync.transport import Connection, connect, listen

uvloop = pytest.importorskip("uvloop")


def _identity() -> tuple[DeviceKey, DeviceCertificate]:
    device = DeviceKey.generate()
    return device, DeviceCertificate.issue(AccountKey.generate(), device)


async def _roundtrip(transport: str) -> bytes:
    server_key, server_cert = _identity()
    client_key, client_cert = _identity()

    async def echo(conn: Connection) -> None:
        stream = await conn.accept_stream()
        await stream.send(await stream.recv())

    server = await listen("127.0.0.1", 0, device_key=server_key, certificate=server_cert,
                          on_connection=echo, transport=transport)  # type: ignore[arg-type]
    try:
        conn = await asyncio.wait_for(connect(
            ("127.0.0.1", server.port), device_key=client_key, certificate=client_cert,
            expected_peer=server_key.id, transport=transport), 10)  # type: ignore[arg-type]
        try:
            stream = await conn.open_stream()
            await stream.send(b"over uvloop")
            return await asyncio.wait_for(stream.recv(), 10)
        finally:
            await conn.close()
    finally:
        await server.close()


@pytest.mark.parametrize("transport", ["tcp", "quic"])
def test_carrier_under_uvloop(transport: str) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(_roundtrip(transport)) == b"over uvloop"


def test_loop_closed_with_a_live_connection_leaves_nothing_for_the_gc() -> None:
    """An app (or test) that closes its loop without closing a QUIC connection must not get
    errors later from the garbage collector calling into the dead loop."""
    import gc
    import sys

    caught: list[object] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = caught.append
    try:
        loop = asyncio.new_event_loop()
        server_key, server_cert = _identity()
        client_key, client_cert = _identity()

        async def open_and_leave() -> None:
            server = await listen("127.0.0.1", 0, device_key=server_key,
                                  certificate=server_cert, on_connection=lambda c: None,
                                  transport="quic")
            await connect(("127.0.0.1", server.port), device_key=client_key,
                          certificate=client_cert, transport="quic")

        loop.run_until_complete(open_and_leave())
        loop.close()  # deliberately without cancelling the tasks or closing anything
        del loop
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    closer_errors = [u for u in caught if "_close_transport_when_done" in repr(
        getattr(u, "object", ""))]
    assert closer_errors == []
