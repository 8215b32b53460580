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
