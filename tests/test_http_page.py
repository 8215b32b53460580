"""The status page in a real headless Chromium, against two real agents (``p2psync run``).

A dials B; they share a space. The page of A must show B connected and the space in sync,
then, once B stops, B disconnected and the space without a peer within a few seconds, and
show the same as the ``status`` op (what ``p2psync status`` prints). Screenshots go to
``tmp_path``, or to ``docs/img/`` with ``P2PSYNC_SAVE_SCREENSHOTS=1`` (how the ones in
docs/http.md were made). Skipped when no Chromium is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2psync.http import auth
from tests.cdp import browser, chromium
from tests.http_helpers import start_agent, stop

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
CHROMIUM = chromium()


async def call(session: aiohttp.ClientSession, url: str, key: str, op: str,
               **params: Any) -> Any:
    async with session.post(f"{url}api/v1/{op.replace('.', '/')}", json=params,
                            headers={"X-API-Key": key}) as r:
        body = await r.json()
        assert r.status == 200, (op, body)
        return body


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("P2PSYNC_REQUIRE_CHROMIUM") != "1",
                    reason="no chromium installed (apt-get install chromium)")
async def test_the_page_shows_a_peer_going_away(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    shots = DOCS_IMG if os.environ.get("P2PSYNC_SAVE_SCREENSHOTS") else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    async with start_agent(tmp_path / "b") as (proc_b, ready_b, home_b):
        tcp_b = next(a for a in ready_b["listening"] if a.startswith("tcp:"))
        peers = json.dumps(["tcp://" + tcp_b.removeprefix("tcp:")])
        async with start_agent(tmp_path / "a", f"peers = {peers}") as (_, ready_a, home_a), \
                aiohttp.ClientSession() as s:
            url_a, url_b = ready_a["http"], ready_b["http"]
            key_a = auth.key_path(home_a).read_text().strip()
            key_b = auth.key_path(home_b).read_text().strip()
            space = (await call(s, url_a, key_a, "space.create", name="notes"))["space_id"]
            doc = (await call(s, url_a, key_a, "doc.new", space=space))["doc"]
            await call(s, url_a, key_a, "doc.set", space=space, doc=doc, path="title",
                       value="shopping")
            code = (await call(s, url_a, key_a, "space.invite", space=space,
                               no_approval=True))["invite"]
            # B joins over the invite's hints: A answers it because the invite is open (a
            # device hides who it is from strangers; docs/threat-model.md). A's dial of B, a
            # static peer, succeeds once they share the space.
            await call(s, url_b, key_b, "space.join", code=code, name="notes")
            await call(s, url_a, key_a, "space.wait_synced", space=space, timeout=30)
            peer_b = ready_b["peer_id"]

            async with browser(CHROMIUM, tmp_path / "profile") as page:
                await page.navigate(f"{url_a}#key={key_a}")
                await page.wait_for(f'document.querySelector(\'[data-peer="{peer_b}"]\')'
                                    f'?.dataset.state === "connected" && document.querySelector('
                                    f'\'[data-space="{space}"]\')?.dataset.state === "in-sync"',
                                    30)
                # the key left the address bar (it stays in the tab's sessionStorage)
                assert "key=" not in await page.eval("location.href")
                # truthful: the same spaces, peers and in-sync counts as the status op
                status = await call(s, url_a, key_a, "status")
                shown = await page.eval(
                    "[...document.querySelectorAll('[data-space]')].map(r => "
                    "[r.dataset.space, r.children[4].textContent])")
                assert shown == [[sp["space_id"], f"{sp['peers_in_sync']}/{sp['peers']} "
                                  "(in sync)"] for sp in status["spaces"]]
                assert [p["peer_id"] for p in status["peers"]] == [peer_b]
                await page.wait_for("document.getElementById('banner').className === 'ok'", 10)
                # a peer's edit reaches the timeline through the change stream
                await call(s, url_b, key_b, "doc.set", space=space, doc=doc, path="title",
                           value="shopping list")
                await page.wait_for(f"document.getElementById('timeline').textContent"
                                    f".includes('document {doc} changed (peer')", 15)
                await page.screenshot(shots / "http-status-in-sync.png")

                await stop(proc_b)  # B goes away
                gone = time.monotonic()
                await page.wait_for(f'document.querySelector(\'[data-peer="{peer_b}"]\')'
                                    f'?.dataset.state === "disconnected" && document.querySelector('
                                    f'\'[data-space="{space}"]\')?.dataset.state === "offline"',
                                    10)
                seconds = time.monotonic() - gone
                print(f"page showed the peer gone after {seconds:.2f} s")
                timeline = await page.eval("document.getElementById('timeline').textContent")
                assert "disconnected" in timeline
                # the dial error appears once A retried B (reconnect_cap = 1 s)
                await page.wait_for("document.getElementById('timeline').textContent"
                                    ".includes('dial tcp://')", 15)
                await page.screenshot(shots / "http-status-peer-gone.png")
                status = await call(s, url_a, key_a, "status")
                assert status["peers"] == [] and status["spaces"][0]["peers"] == 0
    assert seconds < 10
