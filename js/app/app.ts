/**
 * The phone-sized p2psync web app (served by the agent at /app/; docs/phones.md).
 *
 * Screens (hash routes): `#/` spaces, join by invite (paste, camera QR scan, or a photo of the
 * QR code), new space; `#/space/<id>` documents, members, peers; `#/doc/<space>/<doc>` view and
 * edit a document's fields (text, numbers, checkboxes, lists). Everything lives in this
 * browser's IndexedDB through the Repo (src/repo.ts), so edits made offline survive a reload and
 * sync when a peer is back. Sync runs through `app/driver.ts` (a WebSocket to the serving agent).
 */
import * as A from "@automerge/automerge";
import jsQRModule, { type QRCode } from "jsqr";
import { type DocHandle, Repo, type SpaceHandle, type SyncStatus } from "../src/repo.js";
import { IdbStorage } from "../src/storage/idb.js";
import { rememberPeers, syncOptions } from "./driver.js";

type Json = Record<string, unknown>;
type Decode = (data: Uint8ClampedArray, width: number, height: number) => QRCode | null;
// jsqr is a CommonJS module whose types declare an ES default export: take whichever is callable.
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- the declared type is not the runtime one
const jsQR: Decode = typeof jsQRModule === "function" ? (jsQRModule as Decode) : (jsQRModule as unknown as { default: Decode }).default;
type Child = Node | string | null | undefined | false;

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string | boolean | ((e: Event) => void)> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === "function") el.addEventListener(k, v);
    else if (typeof v === "boolean") {
      if (v) el.setAttribute(k, "");
    } else el.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

const main = (): HTMLElement => document.getElementById("main")!;
const short = (id: string): string => `${id.slice(0, 8)}…`;
/** A space's local name, or "Space <id…>" when it has none (ids are long). */
const spaceName = (s: { id: string; name: string }): string => (s.name === s.id ? `Space ${short(s.id)}` : s.name);
let repo: Repo;
let unsubscribe: (() => void) | null = null;

function titleOf(doc: DocHandle<Json>): string {
  const t = doc.json().title;
  return typeof t === "string" && t.trim() !== "" ? t : `Untitled ${short(doc.id)}`;
}

function showStatus(s: SyncStatus): void {
  const pill = document.getElementById("sync")!;
  pill.className = `pill ${s.state}`;
  const connected = s.peers.filter((p) => p.connected).length;
  pill.textContent = s.state === "offline" ? "offline" : `${s.state} · ${String(connected)} peer${connected === 1 ? "" : "s"}`;
}

// --- screens ---------------------------------------------------------------------------------

function homeScreen(): Node[] {
  const spaces = repo.spaces();
  const err = h("p", { id: "join-error", class: "error" });
  const invite = h("textarea", { id: "invite", placeholder: "p2psync-invite2:…", autocomplete: "off", spellcheck: "false" });
  const join = async (): Promise<void> => {
    err.textContent = "";
    const code = invite.value.trim();
    if (code === "") return;
    try {
      const space = await repo.join(code);
      await rememberPeers(repo.storage, repo.driver);
      location.hash = `#/space/${space.id}`;
    } catch (e) {
      err.textContent = e instanceof Error ? e.message : String(e);
    }
  };
  const scanOut = h("div", { id: "scan" });
  const photo = h("input", { id: "qr-photo", type: "file", accept: "image/*", capture: "environment", hidden: true });
  photo.addEventListener("change", () => {
    const f = photo.files?.[0];
    if (f !== undefined) void decodeImageFile(f).then((text) => { if (text !== null) { invite.value = text; void join(); } else err.textContent = "no QR code found in that picture"; });
  });
  const name = h("input", { id: "space-name", type: "text", placeholder: "Name (only on this device)" });
  return [
    h("h2", {}, "Spaces"),
    ...(spaces.length === 0 ? [h("p", { class: "muted" }, "No spaces on this device yet.")] : spaces.map((s) =>
      h("a", { class: "item card space", href: `#/space/${s.id}` }, h("div", {}, spaceName(s)), h("div", { class: "sub" }, `${String(s.documents)} document${s.documents === 1 ? "" : "s"} · ${s.role ?? "not a member"}`)))),
    h("h2", {}, "Join a space"),
    h("div", { class: "card" },
      h("label", { class: "field", for: "invite" }, "Paste the invite code (p2psync space invite)"),
      invite,
      h("div", { class: "row", style: "margin-top:8px" },
        h("button", { id: "join", class: "primary", click: () => void join() }, "Join"),
        h("button", { id: "scan-qr", click: () => void scanCamera(scanOut, (text) => { invite.value = text; void join(); }, err) }, "Scan QR"),
        h("button", { id: "photo-qr", click: () => { photo.click(); } }, "Photo"),
      ),
      photo, scanOut, err),
    h("h2", {}, "New space"),
    h("div", { class: "card row" }, name, h("button", {
      id: "new-space", click: () => void repo.createSpace(name.value.trim() || undefined).then((s) => { location.hash = `#/space/${s.id}`; }),
    }, "Create")),
  ];
}

function spaceScreen(space: SpaceHandle): Node[] {
  const docs = space.documentIds().map((id) => space.find<Json>(id));
  const status = repo.status();
  const off = space.on(() => { route(); });
  unsubscribe = off;
  return [
    h("h2", { id: "space-title" }, spaceName(space)),
    h("p", { class: "muted" }, `Your role: ${space.role ?? "none"} · `, h("code", {}, short(space.id))),
    h("h2", {}, "Documents"),
    ...(docs.length === 0 ? [h("p", { class: "muted" }, "No documents yet.")] : docs.map((d) =>
      h("a", { class: "item card doc", href: `#/doc/${space.id}/${d.id}` }, h("div", {}, titleOf(d)), h("div", { class: "sub" }, `${String(Object.keys(d.json()).length)} fields`)))),
    h("button", {
      id: "new-doc", class: "primary", click: () => {
        const d = space.create<Json>((x) => { x.title = "New document"; });
        location.hash = `#/doc/${space.id}/${d.id}`;
      },
    }, "New document"),
    h("h2", {}, "Members"),
    h("div", { class: "card" }, ...space.members().map(([k, role]) => h("div", { class: "row" }, h("code", {}, short(k)), h("span", { class: "muted" }, role, k === hexOf(repo.account.public) ? " (you)" : "")))),
    h("h2", {}, "Peers"),
    h("div", { class: "card", id: "peers" }, status.peers.length === 0
      ? h("span", { class: "muted" }, status.state === "offline" ? "Offline: edits stay on this phone and sync when a peer is back." : "No peer yet.")
      : h("div", {}, ...status.peers.map((p) => h("div", { class: "row" }, h("span", {}, p.connected ? "●" : "○"), h("code", {}, short(p.peer)), h("span", { class: "muted" }, p.synced.includes(space.id) ? "in sync" : p.lastError ?? "connecting"))))),
  ];
}

function hexOf(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function fieldEditor(doc: DocHandle<Json>, key: string, value: unknown): HTMLElement {
  const id = `f-${key}`;
  const label = h("label", { class: "field", for: id }, key);
  const del = h("button", { class: "danger", title: `delete ${key}`, click: () => { doc.change((d) => { Reflect.deleteProperty(d, key); }); route(); } }, "✕");
  if (typeof value === "string") {
    const long = value.length > 40 || value.includes("\n");
    const input = long ? h("textarea", { id, "data-key": key }) : h("input", { id, type: "text", "data-key": key });
    input.value = value;
    input.addEventListener("input", () => { doc.change((d) => { if (typeof d[key] === "string") A.updateText(d, [key], input.value); else d[key] = input.value; }); });
    return h("div", {}, label, h("div", { class: "row" }, input, del));
  }
  if (typeof value === "number") {
    const input = h("input", { id, type: "number", "data-key": key });
    input.value = String(value);
    input.addEventListener("change", () => { const n = Number(input.value); if (Number.isFinite(n)) doc.change((d) => { d[key] = n; }); });
    return h("div", {}, label, h("div", { class: "row" }, input, del));
  }
  if (typeof value === "boolean") {
    const input = h("input", { id, type: "checkbox", "data-key": key, style: "width:auto" });
    input.checked = value;
    input.addEventListener("change", () => { doc.change((d) => { d[key] = input.checked; }); });
    return h("div", {}, label, h("div", { class: "row" }, input, del));
  }
  if (Array.isArray(value)) {
    const add = h("input", { id: `${id}-add`, type: "text", placeholder: "Add an item" });
    const push = (): void => {
      const text = add.value.trim();
      if (text === "") return;
      doc.change((d) => { (d[key] as unknown[]).push(text); });
      route();
    };
    add.addEventListener("keydown", (e) => { if (e.key === "Enter") push(); });
    return h("div", { class: "list-field", "data-key": key }, label,
      h("ul", { class: "list", id }, ...value.map((item, i) => {
        if (typeof item !== "string") return h("li", {}, h("code", {}, JSON.stringify(item)));
        const input = h("input", { type: "text", "data-index": String(i) });
        input.value = item;
        input.addEventListener("change", () => { doc.change((d) => { (d[key] as unknown[])[i] = input.value; }); });
        return h("li", {}, input, h("button", { class: "danger", click: () => { doc.change((d) => { (d[key] as unknown[]).splice(i, 1); }); route(); } }, "✕"));
      })),
      h("div", { class: "row" }, add, h("button", { id: `${id}-push`, click: push }, "Add")), del);
  }
  return h("div", {}, label, h("div", { class: "row" }, h("code", {}, JSON.stringify(value)), del));
}

function docScreen(space: SpaceHandle, doc: DocHandle<Json>): Node[] {
  const json = doc.json();
  const fields = h("div", { class: "card", id: "fields" }, ...fieldOrder(json).map((k) => fieldEditor(doc, k, json[k])));
  const name = h("input", { id: "new-field", type: "text", placeholder: "Field name" });
  const kind = h("select", { id: "new-field-type" }, ...["text", "number", "checkbox", "list"].map((k) => h("option", { value: k }, k)));
  unsubscribe = doc.on((_json, m) => { if (m.remote) refreshFields(doc); });
  return [
    h("p", {}, h("a", { href: `#/space/${space.id}` }, `← ${spaceName(space)}`)),
    h("h2", { id: "doc-title" }, titleOf(doc)),
    fields,
    h("h2", {}, "Add a field"),
    h("div", { class: "card row" }, name, kind, h("button", {
      id: "add-field", click: () => {
        const k = name.value.trim();
        if (k === "") return;
        const initial: Record<string, unknown> = { text: "", number: 0, checkbox: false, list: [] };
        doc.change((d) => { d[k] = initial[kind.value]; });
        route();
      },
    }, "Add")),
    h("p", { class: "muted" }, `Document ${short(doc.id)} · changes are signed and encrypted on this phone`),
  ];
}

/** A remote change: update fields in place, leaving the one being edited alone. */
function refreshFields(doc: DocHandle<Json>): void {
  const json = doc.json();
  const box = document.getElementById("fields");
  if (box === null) return;
  const focused = document.activeElement;
  const keys = fieldOrder(json);
  const shown = [...box.querySelectorAll<HTMLElement>("[data-key]")].map((e) => e.dataset.key);
  if (keys.join("\n") !== [...new Set(shown)].join("\n") || focused === null || !box.contains(focused)) {
    box.replaceChildren(...keys.map((k) => fieldEditor(doc, k, json[k])));
  }
  const title = document.getElementById("doc-title");
  if (title !== null) title.textContent = titleOf(doc);
}

// --- QR codes ----------------------------------------------------------------------------------

async function decodeImageFile(f: Blob): Promise<string | null> {
  const bmp = await createImageBitmap(f);
  const c = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = c.getContext("2d")!;
  ctx.drawImage(bmp, 0, 0);
  const img = ctx.getImageData(0, 0, bmp.width, bmp.height);
  return jsQR(img.data, img.width, img.height)?.data ?? null;
}

/** Camera scan (needs a secure origin: https or localhost; docs/phones.md). */
async function scanCamera(out: HTMLElement, found: (text: string) => void, err: HTMLElement): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- absent on insecure origins
  if (navigator.mediaDevices?.getUserMedia === undefined) {
    err.textContent = "The camera needs a secure origin (https); use Photo, or paste the code.";
    return;
  }
  const video = h("video", { playsinline: true, muted: true });
  out.replaceChildren(video);
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  video.srcObject = stream;
  await video.play();
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true })!;
  const tick = (): void => {
    if (video.videoWidth > 0) {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      ctx.drawImage(video, 0, 0);
      const code = jsQR(ctx.getImageData(0, 0, canvas.width, canvas.height).data, canvas.width, canvas.height);
      if (code !== null) {
        for (const t of stream.getTracks()) t.stop();
        out.replaceChildren();
        found(code.data);
        return;
      }
    }
    requestAnimationFrame(tick);
  };
  tick();
}

// --- routing ---------------------------------------------------------------------------------

function route(): void {
  unsubscribe?.();
  unsubscribe = null;
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  let nodes: Node[];
  try {
    if (parts[0] === "space" && parts[1] !== undefined) nodes = spaceScreen(repo.space(parts[1]));
    else if (parts[0] === "doc" && parts[1] !== undefined && parts[2] !== undefined) {
      const space = repo.space(parts[1]);
      nodes = docScreen(space, space.find<Json>(parts[2]));
    } else nodes = homeScreen();
  } catch (e) {
    nodes = [h("p", { class: "error" }, e instanceof Error ? e.message : String(e)), h("a", { href: "#/" }, "Home")];
  }
  main().replaceChildren(...nodes);
}

async function boot(): Promise<Repo> {
  const storage = await IdbStorage.open("p2psync");
  repo = await Repo.open({ storage, ...(await syncOptions(storage, location)) });
  document.getElementById("who")!.textContent = `account ${repo.accountId} · device ${repo.deviceId}`;
  showStatus(repo.status());
  repo.onStatus((s) => {
    showStatus(s);
    if (location.hash.startsWith("#/space/")) route();
  });
  addEventListener("hashchange", route);
  // flush pending edits when the page is hidden (phones kill background tabs)
  addEventListener("visibilitychange", () => { if (document.visibilityState === "hidden") void repo.flushed(); });
  route();
  // offline start: only secure origins may run a service worker (docs/phones.md)
  if (isSecureContext && "serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js").catch((e: unknown) => { console.warn("service worker not registered", e); });
  }
  return repo;
}

(window as unknown as { p2psync: { ready: Promise<Repo> } }).p2psync = { ready: boot() };

/** Fields in display order: the title first, then by name. */
function fieldOrder(json: Json): string[] {
  return Object.keys(json).sort((a, b) => (a === "title" ? -1 : b === "title" ? 1 : a.localeCompare(b)));
}
