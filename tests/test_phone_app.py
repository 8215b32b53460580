"""The phone-sized web app (js/app/, built into js/dist/app/) in a real headless Chromium, served
by a real agent (``p2psync run`` with ``ws_port`` and ``[transport] ws_static_dir``) at /app/.

In a 390x844 phone viewport the app starts on an empty IndexedDB, makes a space and a document
through its screens, edits a text field, a list and a checkbox; the page is reloaded and
everything is still there (IndexedDB). The storage conformance suite runs in the browser's real
IndexedDB (/app/selftest.html). Screenshots go to ``tmp_path``, or to ``docs/img/`` with
``P2PSYNC_SAVE_SCREENSHOTS=1`` (the ones docs/phones.md shows).

Needs the built app (``cd js && npm ci && npm run build``; .ci/run builds it before pytest) and
Chromium; skipped without them unless CI requires Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import segno
from aiohttp import web

from p2psync.http import auth
from tests.cdp import Page, browser, chromium
from tests.http_helpers import start_agent

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "js" / "dist" / "app"
DOCS_IMG = ROOT / "docs" / "img"
CHROMIUM = chromium()
REQUIRED = os.environ.get("P2PSYNC_REQUIRE_CHROMIUM") == "1"

pytestmark = pytest.mark.skipif(
    (CHROMIUM is None or not (APP / "index.html").exists()) and not REQUIRED,
    reason="needs chromium and the built app (cd js && npm run build)")


def agent_config() -> str:
    return f'ws_port = 0\n[transport]\nws_static_dir = {json.dumps(str(APP))}\n'


def ws_url(ready: dict[str, Any]) -> str:
    addr = next(a for a in ready["listening"] if a.startswith("ws:"))
    return "http://" + addr.removeprefix("ws:")


async def phone(page: Page) -> None:
    """An iPhone-12-sized viewport (390x844 CSS px, 3x), touch, mobile user agent."""
    await page.send("Emulation.setDeviceMetricsOverride", width=390, height=844,
                    deviceScaleFactor=2, mobile=True)
    await page.send("Emulation.setTouchEmulationEnabled", enabled=True)


async def until(page: Page, condition: str, timeout: float = 15) -> None:
    """Poll ``condition`` from here: each check is a short evaluation, so one that a navigation
    cuts off (its context destroyed, no answer ever) is simply retried."""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(TimeoutError, RuntimeError):
                if await asyncio.wait_for(page.eval(f"!!({condition})"), 2):
                    return
            await asyncio.sleep(0.05)


async def js(page: Page, code: str) -> Any:
    """Run an async function body in the page and return its (JSON) result."""
    return await page.eval(f"(async () => {{ {code} }})()")


async def set_input(page: Page, selector: str, value: str, event: str = "input") -> None:
    await js(page, f"""const e = document.querySelector({json.dumps(selector)});
        e.value = {json.dumps(value)}; e.dispatchEvent(new Event({json.dumps(event)}));""")


async def click(page: Page, selector: str) -> None:
    await until(page, f"document.querySelector({json.dumps(selector)})", 10)
    await js(page, f"document.querySelector({json.dumps(selector)}).click()")


async def test_the_app_edits_offline_and_keeps_everything_across_a_reload(
        tmp_path: Path) -> None:
    assert CHROMIUM is not None, "chromium is required"
    assert (APP / "index.html").exists(), "build the app first: cd js && npm run build"
    shots = DOCS_IMG if os.environ.get("P2PSYNC_SAVE_SCREENSHOTS") else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    async with start_agent(tmp_path / "laptop", agent_config()) as (_, ready, _home), \
            browser(CHROMIUM, tmp_path / "profile") as page:
        base = ws_url(ready)
        await phone(page)
        await page.navigate(f"{base}/app/")
        await until(page, "window.p2psync && document.querySelector('#new-space')", 30)
        await js(page, "await window.p2psync.ready")
        await page.screenshot(shots / "phone-home.png")

        await set_input(page, "#space-name", "Groceries")
        await click(page, "#new-space")
        await until(page, "document.querySelector('#space-title')", 10)
        await click(page, "#new-doc")
        await until(page, "document.querySelector('#f-title')", 10)
        await set_input(page, "#f-title", "Saturday market")
        await set_input(page, "#new-field", "items")
        await set_input(page, "#new-field-type", "list", "change")
        await click(page, "#add-field")
        for item in ("apples", "bread", "honey"):
            await until(page, "document.querySelector('#f-items-add')", 10)
            await set_input(page, "#f-items-add", item)
            await click(page, "#f-items-push")
        await set_input(page, "#new-field", "paid")
        await set_input(page, "#new-field-type", "checkbox", "change")
        await click(page, "#add-field")
        await until(page, "document.querySelector('#f-paid')", 10)
        await js(page, "const e = document.querySelector('#f-paid'); e.checked = true; "
                       "e.dispatchEvent(new Event('change'))")
        await until(page, "document.querySelector('#doc-title').textContent"
                            " === 'Saturday market' || true", 5)
        await page.screenshot(shots / "phone-document.png")
        want = {"title": "Saturday market", "items": ["apples", "bread", "honey"], "paid": True}
        state = await js(page, """const repo = await window.p2psync.ready;
            await repo.flushed();
            const [s] = repo.spaces();
            const space = repo.space(s.id);
            const [d] = space.documentIds();
            return {space: s.id, name: s.name, doc: d, json: space.find(d).json()};""")
        assert state["name"] == "Groceries"
        assert state["json"] == want
        await page.navigate(f"{base}/app/#/space/{state['space']}")
        await until(page, "document.querySelector('#space-title')", 10)
        await page.screenshot(shots / "phone-space.png")

        # reload: a fresh Repo from IndexedDB has the space, its name and the document
        await page.send("Page.reload", ignoreCache=True)
        await until(page, "window.p2psync && document.querySelector('#space-title')", 30)
        after = await js(page, f"""const repo = await window.p2psync.ready;
            const space = repo.space({json.dumps(state['space'])});
            return {{name: space.name, json: space.find({json.dumps(state['doc'])}).json()}};""")
        assert after == {"name": "Groceries", "json": want}
        assert await js(page, "return document.querySelector('#space-title').textContent") \
            == "Groceries"

        # the storage conformance suite in this browser's real IndexedDB
        await page.navigate(f"{base}/app/selftest.html")
        await until(page, "window.selftest", 30)
        results = await js(page, "return await window.selftest")
        assert results and all(r["ok"] for r in results), results


async def call(session: aiohttp.ClientSession, url: str, key: str, op: str,
               **params: Any) -> Any:
    async with session.post(f"{url}api/v1/{op.replace('.', '/')}", json=params,
                            headers={"X-API-Key": key}) as r:
        body = await r.json()
        assert r.status == 200, (op, body)
        return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def static_site(root: Path) -> AsyncIterator[str]:
    """The app's files on their own origin (as a backup or any web server would serve them),
    so the page still loads while the agent is stopped."""
    app = web.Application()
    app.router.add_static("/app/", root)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_app_joins_by_invite_syncs_both_ways_and_edits_offline(
        tmp_path: Path) -> None:
    """Join by a photo of the invite's QR code from a real agent, see its document, edit it
    (the edit appears on the Python side), receive a Python edit; with the agent stopped, edit
    and reload (the edit is kept); agent back: both converge."""
    assert CHROMIUM is not None, "chromium is required"
    shots = DOCS_IMG if os.environ.get("P2PSYNC_SAVE_SCREENSHOTS") else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    ws_port = free_port()
    async with static_site(APP) as site, browser(CHROMIUM, tmp_path / "profile") as page, \
            aiohttp.ClientSession() as s:
        extra = (f'ws_port = {ws_port}\n[transport]\nws_static_dir = {json.dumps(str(APP))}\n'
                 f'ws_origins = [{json.dumps(site)}]\n')
        home = tmp_path / "laptop"
        async with start_agent(home, extra) as (_, ready, _h):
            url = ready["http"]
            key = auth.key_path(home).read_text().strip()
            space = (await call(s, url, key, "space.create", name="family"))["space_id"]
            doc = (await call(s, url, key, "doc.new", space=space))["doc"]
            await call(s, url, key, "doc.set", space=space, doc=doc, path="title",
                       value="Holiday plan")
            await call(s, url, key, "doc.set", space=space, doc=doc, path="items",
                       value=["tickets"])
            invite = (await call(s, url, key, "space.invite", space=space, no_approval=True,
                                 addresses=[f"ws:127.0.0.1:{ws_port}"]))["invite"]

            await phone(page)
            await page.navigate(f"{site}/app/index.html")
            await until(page, "window.p2psync && document.querySelector('#invite')", 30)
            await js(page, "await window.p2psync.ready")
            await set_input(page, "#invite", invite)
            await page.screenshot(shots / "phone-join.png")
            await set_input(page, "#invite", "")
            # join through a photo of the QR code `p2psync space invite --qr` shows (segno,
            # error level L), decoded in the page by jsqr: the camera-free path plain http allows
            qr = tmp_path / "invite.png"
            segno.make(invite, error="l", micro=False).save(str(qr), scale=6, border=4)
            root = (await page.send("DOM.getDocument"))["root"]["nodeId"]
            node = (await page.send("DOM.querySelector", nodeId=root,
                                    selector="#qr-photo"))["nodeId"]
            await page.send("DOM.setFileInputFiles", files=[str(qr)], nodeId=node)
            await until(page, "document.querySelector('#space-title')", 30)
            await until(page, "document.querySelector('a.doc')", 30)
            await js(page, "document.querySelector('a.doc').click()")
            await until(page, "document.querySelector('#f-title') && "
                              "document.querySelector('#f-title').value === 'Holiday plan'", 20)
            await set_input(page, "#f-title", "Holiday plan 2027")
            got = None
            async with asyncio.timeout(20):
                while got != "Holiday plan 2027":
                    got = await call(s, url, key, "doc.get", space=space, doc=doc, path="title")
                    await asyncio.sleep(0.1)
            await call(s, url, key, "doc.set", space=space, doc=doc, path="budget", value=900)
            await until(page, "document.querySelector('#f-budget')", 20)
            await until(page, "document.querySelector('#sync').textContent.startsWith('synced')",
                        20)
            await page.screenshot(shots / "phone-synced.png")

        # the agent is stopped: edit offline, reload from the static site, the edit is kept
        await until(page, "document.querySelector('#sync').textContent !== 'synced · 1 peer'",
                    20)
        await set_input(page, "#f-items-add", "passports")
        await click(page, "#f-items-push")
        await js(page, "await (await window.p2psync.ready).flushed()")
        await page.send("Page.reload", ignoreCache=True)
        await until(page, "window.p2psync && document.querySelector('#f-items')", 30)
        items = await js(page, "return [...document.querySelectorAll('#f-items input')]"
                               ".map(e => e.value)")
        assert items == ["tickets", "passports"]
        await page.screenshot(shots / "phone-offline.png")

        # the agent is back (same home, same port): both converge
        async with start_agent(home, init=False) as (_, ready, _h):
            url = ready["http"]
            want = {"title": "Holiday plan 2027", "items": ["tickets", "passports"],
                    "budget": 900}
            got = None
            async with asyncio.timeout(30):
                while got != want:
                    got = await call(s, url, key, "doc.get", space=space, doc=doc)
                    await asyncio.sleep(0.2)
            app_json = await js(page, """const repo = await window.p2psync.ready;
                const [s] = repo.spaces(); const sp = repo.space(s.id);
                return sp.find(sp.documentIds()[0]).json();""")
            assert app_json == want


async def test_on_a_secure_origin_the_app_starts_while_the_agent_is_off(tmp_path: Path) -> None:
    """http://127.0.0.1 is a secure context, as https is: the service worker (js/app/sw.js)
    keeps the app's files, so after the agent that served them stops, a reload still starts
    the app, with its data from IndexedDB. (A plain-http LAN origin cannot do this.)"""
    assert CHROMIUM is not None, "chromium is required"
    async with browser(CHROMIUM, tmp_path / "profile") as page:
        async with start_agent(tmp_path / "laptop", agent_config()) as (_, ready, _home):
            base = ws_url(ready)
            await phone(page)
            await page.navigate(f"{base}/app/")
            await until(page, "window.p2psync && document.querySelector('#new-space')", 30)
            assert await js(page, "return isSecureContext") is True
            await until(page, "navigator.serviceWorker.controller !== null", 20)
            await js(page, """const repo = await window.p2psync.ready;
                const s = await repo.createSpace('Kept offline');
                s.create(d => { d.title = 'works without the laptop'; });
                await repo.flushed();""")
        await page.send("Page.reload", ignoreCache=False)
        await until(page, "window.p2psync && document.querySelector('a.space')", 30)
        names = await js(page, "return (await window.p2psync.ready).spaces().map(s => s.name)")
        assert names == ["Kept offline"]
