"""Resume after SIGKILL of the receiving process midway (issue 18): the receiver, its own
process, is killed after its first stored batch; restarted on the same store, it asks only for
the remainder (counted at the sender), and the file it writes is identical."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from p2psync.replica import filespace as FS
from p2psync.sync import files_io
from tests.conftest import Fleet
from tests.netns import JsonLinesProcess

ROOT = Path(__file__).resolve().parent.parent
SIZE = 12_000_000


async def spawn(args: list[str], tmp_path: Path, name: str) -> JsonLinesProcess:
    err = tmp_path / f"{name}.stderr"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.files_receiver", *args, stdout=asyncio.subprocess.PIPE,
        stderr=err.open("wb"), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return JsonLinesProcess(proc, name=name, stderr_path=err)


async def test_receiver_killed_midway_resumes_with_the_remainder(
        fleet: Fleet, tmp_path: Path, procs: list[JsonLinesProcess],
        monkeypatch: pytest.MonkeyPatch) -> None:
    sender = await fleet.node("sender")
    space = sender.create_space()
    data = random.Random(12).randbytes(SIZE)
    fid = FS.add_file(space, data, name="big").manifest.file_id
    total = len(set(FS.manifest_of(space, fid).addresses))
    served = [0]
    real = files_io.answer

    def slow_counting(store: Any, req: Any) -> Any:
        resp = real(store, req)
        served[0] += len(resp.chunks)
        time.sleep(0.02)  # a throttle, so the kill lands midway (not a synchronisation)
        return resp

    monkeypatch.setattr(files_io, "answer", slow_counting)
    acc, dev = os.urandom(32).hex(), os.urandom(32).hex()
    out = tmp_path / "out.bin"
    common = [str(tmp_path / "receiver.sqlite3"), acc, dev, sender.address(), space.id,
              fid.hex(), str(out)]
    first = await spawn([*common, sender.invite(space.id).encode()], tmp_path, "first")
    procs.append(first)
    assert (await first.expect(lambda e: e.get("event") == "start", 30))["missing"] == total
    await first.expect(lambda e: e.get("event") == "got", 30)
    first.proc.kill()  # SIGKILL: no clean shutdown
    await first.proc.wait()
    assert not out.exists()  # nothing written for a partial file

    before = served[0]
    second = await spawn(common, tmp_path, "second")
    procs.append(second)
    start = await second.expect(lambda e: e.get("event") == "start", 30)
    assert 0 < start["missing"] < total  # what the killed process stored survived
    assert (await second.expect(lambda e: e.get("event") == "done", 60))["ok"]
    assert served[0] - before == start["missing"]  # only the remainder was sent
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
