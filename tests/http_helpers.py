"""``p2psync run`` subprocesses with the HTTP server on (tests/test_http*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

CONFIG = ('listen = "127.0.0.1"\nport = 0\nmdns = false\nreconnect_cap = 1.0\n'
          'durable = false\n')


def env() -> dict[str, str]:
    return dict(os.environ, P2PSYNC_PASSPHRASE="", PYTHONUNBUFFERED="1")


def init_home(home: Path, extra: str = "") -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "p2psync", "--json", "init", "--home",
                           str(home)], capture_output=True, text=True, env=env(), timeout=60,
                          stdin=subprocess.DEVNULL, check=True)
    (home / "config.toml").write_text(CONFIG + extra + "\n[http]\nenabled = true\nport = 0\n")
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


@contextlib.asynccontextmanager
async def start_agent(home: Path, extra: str = "", *, init: bool = True
                      ) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, Any], Path]]:
    """Init ``home`` (config ``extra`` lines before ``[http]``), run the agent until its ready
    line, yield ``(process, ready, home)``; SIGTERM (then kill) on exit."""
    if init:
        init_home(home, extra)
    log = (home / "agent.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2psync", "--json", "run", "--home", str(home),
        stdout=asyncio.subprocess.PIPE, stderr=log, env=env(), stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, f"agent exited: {(home / 'agent.log').read_text()}"
        ready = json.loads(line)
        assert ready["event"] == "ready"
        yield proc, ready, home
    finally:
        await stop(proc)
        log.close()


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
