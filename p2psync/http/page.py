"""The status page served at ``/``: one static HTML file with inline CSS and JavaScript.

No build step and no data in the HTML itself: the page is the same for everyone, so it is
served without the key; everything it shows comes from the API with the key, which the page
takes from the URL fragment (``/#key=...``, printed by ``p2psync http``; a fragment is never
sent to a server nor kept in the Referer) or from a form, and keeps in ``sessionStorage``.
It polls ``status`` (the very op behind ``p2psync status``, so both show the same) and
``space/list`` every second, and reads the change stream (``/api/v1/events``, via ``fetch``
since ``EventSource`` cannot send a header) for the timeline. Each space and peer row carries
``data-state`` (``in-sync``/``syncing``/``offline``, ``connected``/``error``/``disconnected``)
with a colour per state; the browser test reads those attributes.
"""

from __future__ import annotations

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>p2psync status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em} h2{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e4e4e4;vertical-align:top}
th{font-weight:600;color:#555;font-size:.9em}
code{font:12px ui-monospace,monospace}
.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.4em;
 vertical-align:-.05em}
[data-state=in-sync] .dot,[data-state=connected] .dot,.ok .dot{background:#2e9d4a}
[data-state=syncing] .dot,[data-state=error] .dot,.warn .dot{background:#e0a100}
[data-state=disconnected] .dot,.bad .dot{background:#d2362b}
[data-state=offline] .dot,.none .dot{background:#999}
#banner{padding:.5em .8em;border-radius:4px;margin:.5em 0;font-weight:600}
#banner.ok{background:#e3f4e6} #banner.warn{background:#fff4d6} #banner.bad{background:#fbe2e0}
#timeline{list-style:none;padding:0;margin:0;max-height:18em;overflow:auto;background:#fff}
#timeline li{padding:.2em .6em;border-bottom:1px solid #eee}
.muted{color:#777} form{margin:1em 0}
</style></head>
<body>
<h1>p2psync <span id="who" class="muted"></span></h1>
<div id="banner" class="none">connecting…</div>
<form id="keyform" hidden><label>API key (in &lt;home&gt;/http-api-key):
 <input id="keyinput" size="50" autocomplete="off"></label> <button>Use</button></form>
<h2>Spaces</h2>
<table><thead><tr><th>space</th><th>role</th><th>documents</th><th>members</th>
<th>peers in sync</th><th>id</th></tr></thead><tbody id="spaces"></tbody></table>
<h2>Peers</h2>
<table><thead><tr><th>peer</th><th>transport</th><th>address</th><th>shared spaces</th>
<th>traffic in / out</th><th>last error</th></tr></thead><tbody id="peers"></tbody></table>
<h2>Backups</h2>
<table><thead><tr><th>space</th><th>backup peer</th><th>receipt</th><th>state</th></tr></thead>
<tbody id="backups"></tbody></table>
<h2>Recent activity</h2>
<ul id="timeline"></ul>
<p class="muted">Same data as <code>p2psync status</code>; refreshed every second.
<a href="/api/v1/openapi.json">API description</a></p>
<script>
"use strict";
const $ = id => document.getElementById(id);
const frag = new URLSearchParams(location.hash.slice(1));
if (frag.get("key")) { sessionStorage.setItem("p2psync-key", frag.get("key"));
  history.replaceState(null, "", location.pathname); }
let key = sessionStorage.getItem("p2psync-key") || "";
const seen = new Map();      // peer id -> {last: time, transport, address}
let lastPeers = null, lastSpaces = new Map(), lastErrors = new Map(), streaming = false;

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
const dot = () => h("span", {class: "dot"});
const short = s => s ? String(s).slice(0, 16) + "…" : "–";
const bytes = n => n < 1024 ? n + " B" : n < 1 << 20 ? (n / 1024).toFixed(1) + " KiB"
  : (n / (1 << 20)).toFixed(1) + " MiB";
const clock = t => new Date(t).toLocaleTimeString();

async function api(path) {
  const r = await fetch("/api/v1/" + path, {headers: {"X-API-Key": key}});
  const body = await r.json();
  if (!r.ok) { const e = new Error(body.error.message); e.type = body.error.type; throw e; }
  return body;
}
function note(cls, text) {
  const list = $("timeline");
  list.prepend(h("li", {class: cls}, dot(), clock(Date.now()) + "  " + text));
  while (list.children.length > 50) list.lastChild.remove();
}
function spaceState(s) {
  if (!s.peers) return "offline";
  return s.peers_in_sync === s.peers ? "in-sync" : "syncing";
}
function render(st, list) {
  $("who").textContent = "peer " + st.peer_id + " · v" + st.version + " · up "
    + Math.round(st.uptime) + " s";
  const members = new Map(list.map(s => [s.space_id, s.members]));
  const rows = st.spaces.map(s => {
    const state = spaceState(s), label = {"in-sync": "in sync", "syncing": "syncing",
      "offline": "no peer connected"}[state];
    if (lastSpaces.has(s.space_id) && lastSpaces.get(s.space_id) !== state)
      note({"in-sync": "ok", "syncing": "warn", "offline": "none"}[state],
        "space " + (s.name || short(s.space_id)) + ": " + label);
    lastSpaces.set(s.space_id, state);
    return h("tr", {"data-space": s.space_id, "data-state": state},
      h("td", {}, dot(), s.name || "–"), h("td", {}, s.role || "–"), h("td", {}, s.objects),
      h("td", {}, members.get(s.space_id) ?? "–"),
      h("td", {}, s.peers_in_sync + "/" + s.peers + " (" + label + ")"),
      h("td", {}, h("code", {}, s.space_id)));
  });
  $("spaces").replaceChildren(...rows);

  const now = new Map(st.peers.map(p => [p.peer_id, p]));
  const eps = new Map();
  for (const e of st.endpoints) if (e.peer_id) eps.set(e.peer_id, e);
  for (const [id, p] of now) seen.set(id, {last: Date.now(), transport: p.transport});
  if (lastPeers) {
    for (const id of now.keys())
      if (!lastPeers.has(id)) note("ok", "peer " + short(id) + " connected");
    for (const id of lastPeers.keys())
      if (!now.has(id)) note("bad", "peer " + short(id) + " disconnected");
  }
  lastPeers = now;
  for (const e of st.endpoints) {  // a new dial error is an event too
    if (e.last_error && !e.connected && lastErrors.get(e.endpoint) !== e.last_error)
      note("bad", "dial " + e.endpoint + ": " + e.last_error);
    lastErrors.set(e.endpoint, e.connected ? null : e.last_error);
  }
  for (const p of st.peers) {
    if (p.last_error && lastErrors.get(p.peer_id) !== p.last_error)
      note("warn", "peer " + short(p.peer_id) + ": " + p.last_error);
    lastErrors.set(p.peer_id, p.last_error);
  }
  const ids = [...new Set([...now.keys(), ...eps.keys(), ...seen.keys()])].sort();
  $("peers").replaceChildren(...ids.map(id => {
    const p = now.get(id), e = eps.get(id);
    let state, err;
    if (p && p.connected) { err = p.last_error; state = err ? "error" : "connected"; }
    else { state = "disconnected"; err = e && e.last_error; }
    const traffic = p ? bytes(p.bytes_in) + " / " + bytes(p.bytes_out)
      : "last seen " + (seen.has(id) ? clock(seen.get(id).last) : "never");
    return h("tr", {"data-peer": id, "data-state": state},
      h("td", {title: id}, dot(), short(id), " ", h("span", {class: "muted"}, state)),
      h("td", {}, p ? p.transport : (e ? e.endpoint.split("://")[0] : "–")),
      h("td", {}, e ? e.endpoint : "–"),
      h("td", {}, p ? p.spaces.length : "–"), h("td", {}, traffic),
      h("td", {}, err || ""));
  }));

  const b = [];
  for (const [sid, r] of Object.entries(st.backup_receipts || {})) {
    for (const rc of r.receipts || []) {
      const good = !rc.error && rc.all_backed_up;
      b.push(h("tr", {class: rc.error ? "bad" : good ? "ok" : "warn"},
        h("td", {}, dot(), short(sid)), h("td", {}, short(rc.backup_peer)),
        h("td", {}, rc.receipt_time ? clock(rc.receipt_time * 1000) : "–"),
        h("td", {}, rc.error ? "NOT VERIFIED: " + rc.error : good ? "everything backed up"
          : rc.documents_backed_up + "/" + rc.documents + " documents backed up")));
    }
  }
  if (!b.length) b.push(h("tr", {}, h("td", {colspan: 4, class: "muted"},
    "no verified backup receipt yet (p2psync space backup-status)")));
  $("backups").replaceChildren(...b);

  const states = st.spaces.map(spaceState);
  const banner = $("banner");
  if (!st.spaces.length) { banner.className = "none"; banner.textContent = "no spaces yet"; }
  else if (states.every(s => s === "in-sync")) { banner.className = "ok";
    banner.textContent = "everything is in sync with connected peers"; }
  else if (states.includes("offline")) { banner.className = "bad";
    banner.textContent = states.filter(s => s === "offline").length
      + " space(s) have no connected peer"; }
  else { banner.className = "warn"; banner.textContent = "syncing…"; }
}

async function stream() {
  if (streaming) return;
  streaming = true;
  try {
    const r = await fetch("/api/v1/events", {headers: {"X-API-Key": key}});
    if (!r.ok) return;
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2);
        const ev = (block.match(/^event: (.*)$/m) || [])[1];
        const data = (block.match(/^data: (.*)$/m) || [])[1];
        if (ev === "change") { const d = JSON.parse(data);
          note("ok", "document " + d.doc + " changed (" + d.origin + ", "
            + d.changes + " change(s))"); }
      }
    }
  } catch (e) { /* reconnect below */ }
  finally { streaming = false; }
}

async function tick() {
  if (!key) { $("keyform").hidden = false; $("banner").textContent = "API key needed"; return; }
  try {
    const [st, list] = await Promise.all([api("status"), api("space/list")]);
    $("keyform").hidden = true;
    render(st, list);
    stream();
  } catch (e) {
    const banner = $("banner");
    banner.className = "bad";
    banner.textContent = e.type === "Unauthorized" ? "wrong API key"
      : "agent not answering: " + e.message;
    if (e.type === "Unauthorized") $("keyform").hidden = false;
    lastPeers = null;
  }
}
$("keyform").addEventListener("submit", ev => { ev.preventDefault();
  key = $("keyinput").value.trim(); sessionStorage.setItem("p2psync-key", key); tick(); });
tick();
setInterval(tick, 1000);
</script>
</body></html>
"""
