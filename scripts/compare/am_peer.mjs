// One automerge-repo peer driven by scripts/bench_compare.py over stdin/stdout (JSON lines).
//
// The twin of p2psync_peer.py: same verbs, same events, one process per peer. The writer /
// source listens with a WebSocket server on 127.0.0.1 (NodeWSServerAdapter); the reader /
// fresh peer connects with the WebSocket client adapter. No storage adapter: the repo keeps
// documents in memory (p2psync uses non-durable SQLite; see docs/performance.md).
//
// Times are CLOCK_MONOTONIC microseconds (process.hrtime), the clock Python's
// time.monotonic_ns reads.
import { Repo, splice } from "@automerge/automerge-repo"
import {
  WebSocketClientAdapter,
  WebSocketServerAdapter,
} from "@automerge/automerge-repo-network-websocket"
import { readFileSync } from "node:fs"
import { createInterface } from "node:readline"
import { setImmediate as tick } from "node:timers/promises"
import { WebSocketServer } from "ws"

const nowUs = () => Number(process.hrtime.bigint() / 1000n)
const emit = obj => process.stdout.write(JSON.stringify(obj) + "\n")

function rss() {
  const out = {}
  for (const line of readFileSync("/proc/self/status", "utf8").split("\n")) {
    if (line.startsWith("VmRSS:")) out.rss_kb = parseInt(line.split(/\s+/)[1])
    if (line.startsWith("VmHWM:")) out.hwm_kb = parseInt(line.split(/\s+/)[1])
  }
  return out
}

let repo = null
let wss = null
let handles = [] // indexed like the orchestrator's document numbers
const lastT = new Map()
const expect = new Map() // doc index -> key whose arrival ends a burst
const expectValue = new Map() // doc index -> ["value", v] or ["length", n] the key must reach

// Resolves once the repo sees a peer (the client adapter's join handshake completed).
function whenPeer() {
  if (repo.peers.length > 0) return Promise.resolve()
  return new Promise(resolve => repo.networkSubsystem.once("peer", () => resolve()))
}

async function start({ listen }) {
  if (listen) {
    wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
    await new Promise(resolve => wss.once("listening", resolve))
    repo = new Repo({ network: [new WebSocketServerAdapter(wss)] })
    return { address: `ws://127.0.0.1:${wss.address().port}` }
  }
  return {}
}

function connect(address) {
  repo = new Repo({ network: [new WebSocketClientAdapter(address)] })
  return whenPeer()
}

function createDocs({ n }) {
  for (let i = 0; i < n; i++) handles.push(repo.create({}))
  return { docs: handles.map(h => h.url) }
}

async function seed({ docs, edits }) {
  const t = performance.now()
  for (let d = 0; d < docs; d++) {
    const h = repo.create({})
    handles.push(h)
    for (let j = 0; j < edits; j++) h.change(doc => { doc[`k${j}`] = j })
    if (d % 50 === 49) await tick()
  }
  return { seconds: (performance.now() - t) / 1000, docs: handles.map(h => h.url) }
}

function edit({ doc }) {
  const ts = nowUs()
  handles[doc].change(d => { d.t = ts })
  return { ts }
}

// mode: "keys" puts k<i> = i (a growing map), "hot" puts h = i (one key overwritten), "text"
// appends one character to the text field txt (typing; strings are text in Automerge 3).
async function burst({ doc, n, mode = "keys" }) {
  const h = handles[doc]
  if (mode === "text") h.change(d => { d.txt = "" })
  const t0 = nowUs()
  for (let i = 0; i < n; i++) {
    if (mode === "keys") h.change(d => { d[`k${i}`] = i })
    else if (mode === "hot") h.change(d => { d.h = i })
    else h.change(d => { splice(d, ["txt"], i, 0, "abcdefghij"[i % 10]) })
    await tick() // let the repo send while we write, as p2psync's writer yields per edit
  }
  return { t0_us: t0, t1_us: nowUs() }
}

// The change notification of one watched document: report a new `t`, or an expected key.
function onChange(i, doc) {
  const t = nowUs()
  const v = doc.t
  if (v !== undefined && v !== lastT.get(i)) {
    lastT.set(i, v)
    emit({ ev: "t", doc: i, v, lat_us: t - v })
  }
  const key = expect.get(i)
  const want = expectValue.get(i)
  const got = key === undefined ? undefined : doc[key]
  const ok = got !== undefined && (want === undefined ||
    (want[0] === "value" ? got === want[1] : got.length >= want[1]))
  if (ok) {
    expect.delete(i)
    emit({ ev: "done", doc: i, t_us: t })
  }
}

async function join({ address, docs }) {
  await connect(address)
  handles = await Promise.all(docs.map(url => repo.find(url)))
  handles.forEach((h, i) => {
    lastT.set(i, h.doc().t)
    h.on("change", ({ doc }) => onChange(i, doc))
  })
  return {}
}

// Fresh peer: connect, find every document, wait until each holds its last edit.
async function fetchAll({ address, docs, last_key }) {
  const t = performance.now()
  await connect(address)
  const tJoined = (performance.now() - t) / 1000
  handles = await Promise.all(docs.map(async url => {
    const h = await repo.find(url)
    if (h.doc()[last_key] === undefined) {
      await new Promise(resolve => {
        const check = ({ doc }) => {
          if (doc[last_key] !== undefined) { h.off("change", check); resolve() }
        }
        h.on("change", check)
      })
    }
    return h
  }))
  return { seconds: (performance.now() - t) / 1000, join_seconds: tJoined, docs: handles.length }
}

async function dispatch(req) {
  switch (req.cmd) {
    case "start": return start(req)
    case "create_docs": return createDocs(req)
    case "seed": return seed(req)
    case "edit": return edit(req)
    case "burst": return burst(req)
    case "join": return join(req)
    case "expect":
      expect.set(req.doc, req.key)
      if ("value" in req) expectValue.set(req.doc, ["value", req.value])
      else if ("length" in req) expectValue.set(req.doc, ["length", req.length])
      return {}
    case "fetch": return fetchAll(req)
    case "materialise": return { seconds: 0 } // find() already loaded every document
    case "rss": return rss()
    case "quit":
      emit({ id: req.id })
      process.exit(0)
    default: throw new Error(`unknown command ${req.cmd}`)
  }
}

createInterface({ input: process.stdin }).on("line", async line => {
  const req = JSON.parse(line)
  try {
    emit({ id: req.id, ...(await dispatch(req)) })
  } catch (err) {
    emit({ id: req.id, error: String(err && err.stack || err) })
  }
})
process.stdin.on("end", () => process.exit(0))
