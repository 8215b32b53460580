"""A receiving device as its own process, for the SIGKILL-resume test (tests/test_files_kill.py).

    python -m tests.files_receiver STORE ACCOUNT_SEED DEVICE_SEED ADDRESS SPACE FILE OUT [CODE]

With CODE it joins the space by invite at ADDRESS, else it reopens STORE and connects to
ADDRESS. Then it fetches the file's missing chunks (one request in flight) and writes it to
OUT, printing JSON lines: ``start`` (how many chunks are missing), ``got`` per stored batch,
``done``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from p2psync.crypto import AccountKey, DeviceKey
from p2psync.node import Node
from p2psync.replica import filespace as FS
from p2psync.sync import files_io
from tests.sync_helpers import fast_config, wait_any


def say(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


async def main(argv: list[str]) -> None:
    store, acc, dev, addr, sid, fhex, out, *code = argv
    node = await Node(Path(store), AccountKey(bytes.fromhex(acc)), DeviceKey(bytes.fromhex(dev)),
                      config=fast_config()).start()
    fid = bytes.fromhex(fhex)
    try:
        if code:
            await node.join(code[0], [f"tcp:{addr}"])
        else:
            await node.connect(addr)
        await wait_any([node], lambda: sid in node.spaces and any(
            i.file_id == fid for i in FS.list_files(node.spaces[sid])) and bool(
            files_io.peers_for(node.engines, sid)))
        sp = node.spaces[sid]
        say(event="start", missing=len(FS.missing_chunks(sp, fid)))
        ok = await files_io.fetch_file(node.engines, sp, fid, window=1,
                                       progress=lambda n: say(event="got", n=n))
        FS.get_file(sp, fid, out)
        say(event="done", ok=ok)
    finally:
        await node.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
