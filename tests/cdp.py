"""A tiny Chrome DevTools Protocol client over aiohttp's WebSocket: headless Chromium for the
status page test (tests/test_http_page.py), without playwright or puppeteer (neither is
installed; the system ``chromium`` and aiohttp, already a dependency, are enough)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Page:
    """One browser tab: ``await page.navigate(url)``, ``await page.eval(js)``, screenshots."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            fut = self._waiting.pop(data.get("id", -1), None)
            if fut is not None and not fut.done():
                if "error" in data:
                    fut.set_exception(RuntimeError(str(data["error"])))
                else:
                    fut.set_result(data.get("result"))

    async def send(self, method: str, **params: Any) -> Any:
        n = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[n] = fut
        await self.ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
        return await fut

    async def navigate(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Page.navigate", url=url)

    async def eval(self, expression: str) -> Any:
        """The value of ``expression`` in the page (a Promise is awaited)."""
        out = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                              awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(str(out["exceptionDetails"]))
        return out["result"].get("value")

    async def wait_for(self, condition: str, timeout: float) -> None:
        """Until the JS ``condition`` holds in the page (checked there every 50 ms)."""
        js = ("new Promise(r => { const t = () => { let ok = false; try { ok = !!(" + condition
              + ") } catch (e) {} ok ? r(true) : setTimeout(t, 50) }; t() })")
        async with asyncio.timeout(timeout):
            await self.eval(js)

    async def screenshot(self, path: Path) -> None:
        out = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(out["data"]))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


@contextlib.asynccontextmanager
async def browser(binary: str, profile: Path) -> AsyncIterator[Page]:
    """Headless Chromium with one blank tab, its DevTools on an ephemeral loopback port."""
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-extensions", "--window-size=1100,900", "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    drain: asyncio.Task[bytes] | None = None
    try:
        assert proc.stderr is not None
        port = None
        async with asyncio.timeout(60):
            while port is None:
                line = (await proc.stderr.readline()).decode()
                assert line, "chromium exited before DevTools listened"
                m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                port = int(m.group(1)) if m else None
        drain = asyncio.get_running_loop().create_task(proc.stderr.read())  # never blocks it
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/json/list") as r:
                targets = await r.json(content_type=None)
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            ws = await s.ws_connect(url, max_msg_size=0)
            page = Page(ws)
            try:
                yield page
            finally:
                await page.close()
    finally:
        if drain is not None:
            drain.cancel()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
