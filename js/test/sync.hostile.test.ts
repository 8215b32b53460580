/**
 * A listening TS peer under hostile input (the Python responder's defences, mirrored): a
 * stranger is held to the restricted receive budget and closed after its grace unless it proves
 * an invite; a member's requests pass the inbound gate (500/s, burst 1000, RATE_LIMITED with a
 * retry time); an oversized frame and garbled messages close only the offending connection with
 * a typed error. In every test an honest member on another connection keeps syncing.
 *
 * Each test was run once with its defence switched off and failed (docs/threat-model.md,
 * "A listening JS peer").
 */
import assert from "node:assert/strict";
import { connect as netConnect, type Socket } from "node:net";
import { test } from "node:test";
import { pack } from "../src/codec.js";
import { AccountKey, DeviceCertificate, DeviceKey } from "../src/crypto/index.js";
import { AdmissionRefused, BudgetExceeded, ConnectionClosed, FrameError, PeerMisbehaved, PeerTimeout, RefusedByPeer, StrangerGraceOver, StrangerRefused, TransportError } from "../src/errors.js";
import { connectTcp, listenTcp, type TcpListener } from "../src/node/tcp.js";
import { listenWebSocket } from "../src/node/ws.js";
import { WS_PATH } from "../src/transport/websocket.js";
import WebSocket from "ws";
import type { Connection, Stream } from "../src/transport/connection.js";
import { Limits } from "../src/transport/handshake.js";
import { Budget, Session } from "../src/transport/session.js";
import { decodeRecord, RecordType } from "../src/transport/framing.js";
import { invite, join } from "../src/bootstrap.js";
import { Acl } from "../src/replica/acl.js";
import { Role } from "../src/replica/aclRecords.js";
import { DEFAULT_CONFIG, type SyncConfig } from "../src/sync/core.js";
import { PeerSync } from "../src/sync/engine.js";
import { decode, encode, ErrorCode, type Message, MsgType } from "../src/sync/messages.js";
import { InboundGate, Admission, TokenBucket } from "../src/sync/sched.js";
import { SyncReplicas, type SyncSpace } from "../src/sync/replica.js";
import { SpaceExchange } from "../src/sync/spacex.js";
import { spawnPython, utf8 } from "./helpers.js";

const LIMITS = new Limits(64, 16 << 20, 8 * 1024 * 1024 + 4096);
const EMPTY_DOC = pack([1, [], []]);

interface Id { account: AccountKey; deviceKey: DeviceKey; certificate: DeviceCertificate; config: { limits: Limits } }

function identity(limits = LIMITS): Id {
  const account = AccountKey.generate();
  const deviceKey = DeviceKey.generate();
  return { account, deviceKey, certificate: DeviceCertificate.issue(account, deviceKey), config: { limits } };
}

interface Holder { replicas: SyncReplicas; space: SyncSpace; listener: TcpListener; syncs: PeerSync[]; runs: Promise<void>[]; id: Id; tree: Uint8Array }

/** A TS peer holding a space with one document, listening on TCP. */
async function holder(config: Partial<SyncConfig> = {}, o: { policy?: boolean } = {}): Promise<Holder> {
  const id = identity();
  const replicas = new SyncReplicas(id.account, id.deviceKey);
  if (o.policy === true) Object.assign(id.config, { revealCertificate: (c: DeviceCertificate) => replicas.revealsTo(c) });
  const space = replicas.createSpace();
  const root = space.createChange(null, EMPTY_DOC);
  space.createChange(root.id, utf8("first edit"));
  const syncs: PeerSync[] = [];
  const runs: Promise<void>[] = [];
  const listener = await listenTcp("127.0.0.1", 0, id, (conn) => {
    const s = new PeerSync(replicas, conn, config);
    syncs.push(s);
    runs.push(s.run());
  });
  return { replicas, space, listener, syncs, runs, id, tree: root.id };
}

async function shutdown(h: Holder, ...others: { sync: PeerSync; run: Promise<void> }[]): Promise<void> {
  for (const o of others) o.sync.close("test over");
  await Promise.all(others.map((o) => o.run));
  for (const s of h.syncs) s.close("test over");
  await Promise.all(h.runs);
  await h.listener.close();
}

/** The holder's engine for the connection from `id`'s device (made when the handshake is done). */
function engineFor(h: Holder, id: Id): PeerSync {
  const found = h.syncs.find((s) => Buffer.from(s.conn.certificate.device).equals(Buffer.from(id.deviceKey.public)));
  if (found !== undefined) return found;
  throw new Error("no engine for that connection");
}

/** The reason `conn` closed, or a failure if it is still open after `seconds`. */
async function closedWithin(conn: Connection, seconds: number): Promise<TransportError> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`connection still open after ${seconds} s`));
    }, seconds * 1000);
  });
  try {
    return await Promise.race([conn.waitClosed(), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** An honest member: joins by invite over its own connection and holds the document. */
async function honest(h: Holder): Promise<{ sync: PeerSync; run: Promise<void>; space: SyncSpace }> {
  const id = identity();
  const r = new SyncReplicas(id.account, id.deviceKey);
  const [raw, code] = invite(h.space.acl, h.id.account, Role.WRITER, { anyoneCanJoin: true });
  h.replicas.commitAcl(h.space, raw);
  const conn = await connectTcp("127.0.0.1", h.listener.port, { ...id, expectedPeer: h.id.deviceKey.id });
  const sync = new PeerSync(r, conn);
  const run = sync.run();
  const { space } = await sync.bootstrap(h.space.id, code);
  await sync.waitFor(() => space.tree(h.tree)?.size === 2);
  return { sync, run, space };
}

/** Both directions still work with the honest member: an edit each way arrives. */
async function stillSyncs(h: Holder, m: { sync: PeerSync; space: SyncSpace }, label: string): Promise<void> {
  const before = h.space.tree(h.tree)!.size;
  h.space.createChange(h.tree, utf8(`holder edit ${label}`));
  await m.sync.waitFor(() => m.space.tree(h.tree)!.size === before + 1, 10);
  m.space.createChange(h.tree, utf8(`member edit ${label}`));
  const mine = h.syncs.find((s) => s.shared.has(h.space.id) && Buffer.from(s.conn.certificate.account).equals(Buffer.from(m.space.owner.account.public)))!;
  await mine.waitFor(() => h.space.tree(h.tree)!.size === before + 2, 10);
}

/** A raw peer that completes the space exchange (listing nothing, or the spaces in `keys`)
 * and then sends whatever the test wants on its request stream. */
async function rawPeer(h: Holder, id: Id = identity(), keys = new Map<string, Uint8Array>()): Promise<{ conn: Connection; mine: Stream; theirs: Stream; eng: PeerSync }> {
  const conn = await connectTcp("127.0.0.1", h.listener.port, { ...id, expectedPeer: h.id.deviceKey.id });
  const x = new SpaceExchange(id.deviceKey.public, h.id.deviceKey.public, keys, conn.result.handshakeHash);
  const mine = await conn.openStream();
  await mine.send(encode(x.start()));
  const theirs = await conn.acceptStream();
  const hello = decode(await theirs.recv()).message;
  assert.equal(hello.type, MsgType.SPACE_HELLO);
  await theirs.send(encode(x.receive(hello)[0]!));
  assert.equal(decode(await mine.recv()).message.type, MsgType.SPACE_TOKENS);
  const eng = engineFor(h, id);
  await eng.waitFor(() => eng.isReady);
  return { conn, mine, theirs, eng };
}

const headSync = (sid: string, rid: number): Uint8Array => encode({ type: MsgType.HEAD_SYNC_REQUEST, spaceId: sid, threshold: 32, ranges: [] }, rid);

// --- sans-IO -------------------------------------------------------------------------------------
test("inbound gate: burst, then the rate; RATE_LIMITED with a retry time; in progress capped", () => {
  // Python's EngineConfig: in_rate 500, in_burst 1000, in_concurrency 16; strangers 10 s
  assert.deepEqual([DEFAULT_CONFIG.inRate, DEFAULT_CONFIG.inBurst, DEFAULT_CONFIG.inConcurrency, DEFAULT_CONFIG.strangerGrace, DEFAULT_CONFIG.strikesToClose], [500, 1000, 16, 10, 100]);
  const b = new TokenBucket(DEFAULT_CONFIG.inRate, DEFAULT_CONFIG.inBurst, 0);
  let taken = 0;
  while (b.tryTake(0)) taken++;
  assert.equal(taken, 1000);
  assert.ok(Math.abs(b.waitTime(0) - 1 / 500) < 1e-9);
  assert.ok(b.tryTake(0.002));
  assert.ok(!b.tryTake(0.002));
  assert.ok(!b.tryTake(0.001), "a clock going backwards adds nothing");
  const g = new InboundGate<number>({ now: 0, rate: 500, burst: 1000, maxConcurrent: 16 });
  for (let i = 0; i < 16; i++) assert.equal(g.admit(i, 0), Admission.ACCEPT);
  assert.equal(g.admit(3, 0), Admission.DUPLICATE);
  assert.equal(g.admit(99, 0), Admission.BUSY);
  for (let i = 0; i < 16; i++) g.finished(i);
  let n = 0;
  while (g.admit(1000 + n, 0) === Admission.ACCEPT) g.finished(1000 + n++);
  assert.equal(n, 1000 - 16);
  assert.ok(g.retryAfter(0) > 0);
});

test("Session.restrict resets pending streams largest first until the bytes held fit, and allows one pending stream; unrestrict restores", () => {
  const limits = new Limits();
  const a = new Session({ initiator: true, local: limits, remote: limits });
  const b = new Session({ initiator: false, local: limits, remote: limits, budget: new Budget() });
  const deliver = (): ReturnType<Session["receive"]> => b.receive(a.takeOutgoing().map(([, rec]) => decodeRecord(rec)), null, 0);
  const sizes = [200 << 10, 300 << 10, 100 << 10];
  const sids = sizes.map((n) => {
    const sid = a.openStream();
    a.write(sid, new Uint8Array(n), false); // unfinished messages: held by b, unaccepted
    return sid;
  });
  deliver();
  assert.equal(b.buffered, 600 << 10);
  const events = b.restrict(250 << 10);
  assert.deepEqual(events.map((e) => e.kind === "reset" ? e.stream : -1), [sids[1], sids[0]], "largest first");
  assert.equal(b.buffered, 100 << 10);
  assert.equal(b.connBudget, 250 << 10);
  // one pending stream already waits: a new one is reset on arrival
  const extra = a.openStream();
  a.write(extra, new Uint8Array(10), false);
  deliver();
  assert.ok(!b.unaccepted.has(extra));
  b.unrestrict(new Budget());
  assert.equal(b.connBudget, 16 << 20);
});

// --- strangers ------------------------------------------------------------------------------------
test("a stranger flooding requests it does not read the answers to is closed at the restricted budget; an honest member keeps syncing", { timeout: 60_000 }, async () => {
  const h = await holder();
  const m = await honest(h);
  try {
    // the stranger reads nothing and grants 1 KiB for our answers: we stop reading it soon
    const s = await rawPeer(h, identity(new Limits(64, 1024, 1024)));
    const eng = s.eng;
    assert.equal(eng.core.state.restricted, true, "a stranger is restricted at the exchange");
    const ranges = Array.from({ length: 256 }, (_, i) => ({ bits: 8, prefix: BigInt(i), hash: new Uint8Array(32), count: 1 }));
    const big = encode({ type: MsgType.HEAD_SYNC_REQUEST, spaceId: "nosuchspace.1", threshold: 32, ranges }, 1);
    let sent = 0;
    try {
      for (; sent < (4 << 20); sent += big.length) await s.mine.send(big);
    } catch (exc) {
      assert.ok(exc instanceof TransportError);
    }
    const why = await closedWithin(eng.conn, 10);
    const session = eng.conn.link.session!;
    assert.ok(session.peakBuffered <= (1 << 20) + big.length, `held ${session.peakBuffered} bytes for a stranger`);
    assert.ok(why instanceof ConnectionClosed || why instanceof BudgetExceeded, String(why));
    assert.match(eng.lastError ?? "", /budget|restricted/);
    await stillSyncs(h, m, "after the stranger flood");
  } finally {
    await shutdown(h, m);
  }
});

test("a stranger's oversized message ends its connection; a member's of the same size is taken", { timeout: 60_000 }, async () => {
  const h = await holder();
  const m = await honest(h);
  try {
    const s = await rawPeer(h);
    const eng = s.eng;
    const blob = encode({ type: MsgType.FULL_SYNC_REQUEST, spaceId: h.space.id, objectId: new Uint8Array(32), heads: [], snapshotPath: [], changes: [new Uint8Array(1 << 20), new Uint8Array(1 << 20)], maxBytes: 0, fromSnapshot: false }, 5);
    await s.mine.send(blob).catch(() => undefined);
    await closedWithin(eng.conn, 10);
    assert.ok(eng.core.state.restricted);
    assert.match(eng.lastError ?? "", /budget|restricted/);
    // the member's engine has the configured budget: the same message is answered (a strike for
    // its junk changes, not a disconnect)
    const member = identity();
    const [raw, code] = invite(h.space.acl, h.id.account, Role.WRITER, { anyoneCanJoin: true });
    h.replicas.commitAcl(h.space, raw);
    assert.deepEqual(h.space.addAcl([join(Acl.fromRecords(h.space.id, h.space.acl.export(), { me: member.account }), member.account, code)], null).rejected, []);
    const p = await rawPeer(h, member, new Map([[h.space.id, h.space.exchangeKey]]));
    const peng = p.eng;
    assert.equal(peng.core.state.restricted, false);
    await p.mine.send(blob);
    const answer = decode(await p.mine.recv()).message;
    assert.equal(answer.type, MsgType.FULL_SYNC_RESPONSE);
    assert.equal(p.conn.isClosed, false);
    p.conn.close();
    await stillSyncs(h, m, "after the oversized message");
  } finally {
    await shutdown(h, m);
  }
});

test("a stranger is closed after the grace (StrangerGraceOver); an invitee proving its invite in time is not", { timeout: 60_000 }, async () => {
  const h = await holder({ strangerGrace: 1.5 });
  const m = await honest(h);
  try {
    const s = await rawPeer(h);
    const eng = s.eng;
    // an invitee connects at the same time: a stranger until its bootstrap proves the invite
    const id = identity();
    const r = new SyncReplicas(id.account, id.deviceKey);
    const [raw, code] = invite(h.space.acl, h.id.account, Role.WRITER, { anyoneCanJoin: true });
    h.replicas.commitAcl(h.space, raw);
    const conn = await connectTcp("127.0.0.1", h.listener.port, { ...id, expectedPeer: h.id.deviceKey.id });
    const inv = new PeerSync(r, conn);
    const run = inv.run();
    const { space } = await inv.bootstrap(h.space.id, code);
    const why = await closedWithin(eng.conn, 10);
    assert.ok(why instanceof StrangerGraceOver, String(why));
    assert.match(eng.lastError ?? "", /grace period over/);
    // the invitee was befriended when it proved its invite: no grace timer, the full budget
    const ieng = engineFor(h, id);
    assert.equal(ieng.core.state.restricted, false);
    assert.equal(ieng.conn.restricted, false);
    assert.equal(ieng.conn.link.grace, null, "the invitee's grace timer is cancelled");
    assert.equal(conn.isClosed, false);
    await inv.waitFor(() => space.tree(h.tree)?.size === 2);
    inv.close();
    await run;
    await stillSyncs(h, m, "after the grace");
  } finally {
    await shutdown(h, m);
  }
});

test("a joiner lifts its own stranger restriction before it bootstraps (an answer bigger than that budget arrives)", { timeout: 60_000 }, async () => {
  const h = await holder();
  try {
    const id = identity();
    // restricted to 512 bytes with no floor: the bootstrap answer (header and ACL) is bigger
    Object.assign(id.config, { restrictedBudget: 512, budget: new Budget(4, 16 << 20, 0) });
    const r = new SyncReplicas(id.account, id.deviceKey);
    const [raw, code] = invite(h.space.acl, h.id.account, Role.WRITER, { anyoneCanJoin: true });
    h.replicas.commitAcl(h.space, raw);
    const conn = await connectTcp("127.0.0.1", h.listener.port, { ...id, expectedPeer: h.id.deviceKey.id });
    const s = new PeerSync(r, conn);
    const run = s.run();
    await s.ready;
    assert.equal(s.core.state.restricted, true, "the holder shares nothing with the joiner yet");
    const { space } = await s.bootstrap(h.space.id, code);
    await s.waitFor(() => space.tree(h.tree)?.size === 2);
    assert.equal(conn.restricted, false);
    s.close();
    await run;
  } finally {
    await shutdown(h);
  }
});

test("with the revealsTo policy a stranger is refused at the handshake while no invite is open; an invitee gets through", { timeout: 60_000 }, async () => {
  const h = await holder({}, { policy: true });
  try {
    const id = identity();
    await assert.rejects(connectTcp("127.0.0.1", h.listener.port, { ...id, expectedPeer: h.id.deviceKey.id }), RefusedByPeer);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(h.listener.errors.some((e) => e instanceof StrangerRefused), h.listener.errors.map(String).join("; "));
    assert.equal(h.syncs.length, 0, "no sync engine ever ran for it");
    const m = await honest(h); // makes an open invite first, as a joiner's inviter would
    await stillSyncs(h, m, "with the policy");
    m.sync.close();
    await m.run;
  } finally {
    await shutdown(h);
  }
});

test("a peer that never finishes the space exchange is closed after exchangeTimeout (PeerTimeout)", { timeout: 60_000 }, async () => {
  const h = await holder({ exchangeTimeout: 0.5 });
  try {
    const id = identity();
    const conn = await connectTcp("127.0.0.1", h.listener.port, { ...id, expectedPeer: h.id.deviceKey.id });
    const mine = await conn.openStream();
    await mine.send(encode({ type: MsgType.SPACE_HELLO, nonce: new Uint8Array(32) }));
    // … and never answers the holder's hello with its token list
    const eng = engineFor(h, id);
    const why = await closedWithin(eng.conn, 10);
    assert.ok(why instanceof PeerTimeout, String(why));
    assert.match(eng.lastError ?? "", /space exchange did not finish/);
    assert.equal(eng.isReady, false);
  } finally {
    await shutdown(h);
  }
});

test("idle sockets and too many connections from one address are capped (AdmissionGuard); an honest member keeps syncing", { timeout: 60_000 }, async () => {
  const h = await holder();
  const m = await honest(h); // from 127.0.0.1
  const guard = h.listener.guard!;
  const socks: Socket[] = [];
  let closed = 0;
  let wake = (): void => undefined;
  const idle = (localAddress: string): void => {
    const s = netConnect({ host: "127.0.0.1", port: h.listener.port, localAddress });
    s.on("error", () => undefined);
    s.on("close", () => {
      closed++;
      wake();
    });
    socks.push(s);
  };
  const closedAtLeast = (n: number): Promise<void> => closed >= n ? Promise.resolve() : new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      reject(new Error(`only ${closed} of the idle sockets were dropped, wanted ${n}`));
    }, 5000); // at once, well before the 10 s handshake timeout would drop them anyway
    wake = () => {
      if (closed >= n) {
        clearTimeout(t);
        resolve();
      }
    };
  });
  try {
    // 40 idle sockets from one address: 16 wait for their handshake, 24 are dropped at once
    for (let i = 0; i < 40; i++) idle("127.0.0.2");
    await closedAtLeast(24);
    const halfOpen = (): number => guard.halfOpenCount;
    assert.equal(halfOpen(), 16);
    // 280 more from 20 other addresses: the table holds 256, the oldest are dropped for them
    for (let a = 0; a < 20; a++) for (let i = 0; i < 14; i++) idle(`127.0.1.${a + 1}`);
    await closedAtLeast(24 + 40);
    assert.ok(halfOpen() <= 256 && guard.evicted >= 40, `${halfOpen()} half-open, ${guard.evicted} evicted`);
    await stillSyncs(h, m, "beside 296 idle sockets");
    // 32 authenticated connections from one address are allowed, the 33rd is refused
    const conns: Connection[] = [];
    for (let i = 0; i < 32; i++) conns.push(await connectTcp("127.0.0.1", h.listener.port, { ...identity(), expectedPeer: h.id.deviceKey.id, localAddress: "127.0.0.3" }));
    await assert.rejects(connectTcp("127.0.0.1", h.listener.port, { ...identity(), expectedPeer: h.id.deviceKey.id, localAddress: "127.0.0.3" }), ConnectionClosed);
    assert.ok(h.listener.errors.some((e) => e instanceof AdmissionRefused && /too many connections from 127.0.0.3/.test(e.message)));
    for (const c of conns) c.close();
    await stillSyncs(h, m, "after the connection flood");
  } finally {
    for (const s of socks) s.destroy();
    await shutdown(h, m);
  }
});

test("the WebSocket listener caps half-open connections per source too", { timeout: 30_000 }, async () => {
  const id = identity();
  const lis = await listenWebSocket("127.0.0.1", 0, id, () => undefined);
  const clients: WebSocket[] = [];
  try {
    let closed = 0;
    const fourClosed = new Promise<void>((resolve, reject) => {
      // at once, well before the 10 s handshake timeout would drop them anyway
      const late = setTimeout(() => {
        reject(new Error(`${closed} of 20 dropped within 5 s`));
      }, 5000);
      for (let i = 0; i < 20; i++) {
        const ws = new WebSocket(`ws://127.0.0.1:${lis.port}${WS_PATH}`);
        ws.on("error", () => undefined);
        ws.on("close", () => {
          if (++closed === 4) {
            clearTimeout(late);
            resolve();
          }
        });
        clients.push(ws);
      }
    });
    await fourClosed; // 16 wait in their (never started) handshake, 4 were dropped at once
    assert.equal(lis.guard!.halfOpenCount, 16);
    assert.equal(lis.guard!.refused, 4);
  } finally {
    for (const ws of clients) ws.terminate();
    await lis.close();
  }
});

// --- members ---------------------------------------------------------------------------------------
test("a member flooding requests is answered RATE_LIMITED past the burst (no strike, not closed); an honest member keeps syncing", { timeout: 60_000 }, async () => {
  // smaller numbers than the defaults (500/s, burst 1000) keep the test short on a slow machine
  const h = await holder({ inRate: 100, inBurst: 200 });
  const m = await honest(h);
  try {
    const member = identity();
    const [raw, code] = invite(h.space.acl, h.id.account, Role.WRITER, { anyoneCanJoin: true });
    h.replicas.commitAcl(h.space, raw);
    h.space.addAcl([join(Acl.fromRecords(h.space.id, h.space.acl.export(), { me: member.account }), member.account, code)], null);
    const p = await rawPeer(h, member, new Map([[h.space.id, h.space.exchangeKey]]));
    const eng = p.eng;
    const N = 1500;
    const t0 = performance.now();
    const sending = (async () => {
      for (let i = 1; i <= N; i++) await p.mine.send(headSync(h.space.id, i));
    })();
    let served = 0;
    let limited = 0;
    let retry = 0;
    for (let i = 0; i < N; i++) {
      const a: Message = decode(await p.mine.recv()).message;
      if (a.type === MsgType.HEAD_SYNC_RESPONSE) served++;
      else if (a.type === MsgType.ERROR && a.code === ErrorCode.RATE_LIMITED) {
        limited++;
        retry = Math.max(retry, a.retryAfterMs ?? 0);
      } else assert.fail(`unexpected answer ${MsgType[a.type]}`);
    }
    await sending;
    const elapsed = (performance.now() - t0) / 1000;
    assert.ok(limited > 0, `no request was rate limited (${served} served in ${elapsed.toFixed(2)} s)`);
    assert.ok(served <= 200 + 100 * elapsed + 1, `${served} served in ${elapsed.toFixed(2)} s: more than burst + rate`);
    assert.ok(retry >= 1 && retry <= 11, `retry after ${retry} ms`);
    assert.equal(eng.strikes, 0, "being rate limited is not a strike");
    assert.equal(p.conn.isClosed, false);
    await stillSyncs(h, m, "during the member flood");
    p.conn.close();
  } finally {
    await shutdown(h, m);
  }
});

// --- garbled input -----------------------------------------------------------------------------------
test("garbled messages: typed answers, a strike each ('not a request' too), closed with PeerMisbehaved after strikesToClose", { timeout: 60_000 }, async () => {
  const h = await holder({ strikesToClose: 10 });
  const m = await honest(h);
  try {
    const s = await rawPeer(h);
    const eng = s.eng;
    const ask = async (raw: Uint8Array): Promise<Message> => {
      await s.mine.send(raw);
      return decode(await s.mine.recv()).message;
    };
    // a response sent as a request: MALFORMED "not a request" and a strike (Python's rule)
    const notReq = await ask(encode({ type: MsgType.HEAD_SYNC_RESPONSE, spaceId: h.space.id, results: [] }, 9));
    assert.deepEqual([notReq.type, notReq.type === MsgType.ERROR ? [notReq.code, notReq.message] : null], [MsgType.ERROR, [ErrorCode.MALFORMED, "not a request"]]);
    assert.equal(eng.strikes, 1);
    const junk = await ask(new Uint8Array([0x94, 0x01, 0x0a, 0x07, 0xc1]));
    assert.equal(junk.type === MsgType.ERROR ? junk.code : -1, ErrorCode.MALFORMED);
    assert.equal(eng.strikes, 2);
    for (let i = 0; i < 20 && !s.conn.isClosed; i++) await s.mine.send(new Uint8Array([0x93, i])).catch(() => undefined);
    const why = await closedWithin(eng.conn, 10);
    assert.ok(why instanceof PeerMisbehaved, String(why));
    assert.match(eng.lastError ?? "", /closed after 10 protocol violations/);
    await stillSyncs(h, m, "after the garbled messages");
  } finally {
    await shutdown(h, m);
  }
});

test("an oversized frame and a garbled record close only their own connection (FrameError)", { timeout: 60_000 }, async () => {
  const h = await holder();
  const m = await honest(h);
  try {
    for (const garbage of [
      Buffer.from([0xff, 0xff, 0xff, 0xf0, 1, 2, 3]), // a frame announcing ~4 GiB
      Buffer.concat([Buffer.from([0, 0, 0, 64]), Buffer.alloc(64, 0x5a)]), // a well-framed record that does not decrypt
    ]) {
      const s = await rawPeer(h);
      const eng = s.eng;
      (s.conn.link.carrier as unknown as { socket: Socket }).socket.write(garbage);
      const why = await closedWithin(eng.conn, 10);
      assert.ok(why instanceof FrameError, `${why.name}: ${why.message}`);
    }
    await stillSyncs(h, m, "after the garbled frames");
  } finally {
    await shutdown(h, m);
  }
});

// --- a hostile Python client -------------------------------------------------------------------------
for (const mode of ["flood", "garbage"] as const) test(`a hostile Python stranger (${mode}) is closed by the TS listener; an honest member keeps syncing`, { timeout: 60_000 }, async () => {
  const h = await holder();
  const m = await honest(h);
  const py = spawnPython("py_hostile.py", [String(h.listener.port), h.id.deviceKey.id, mode]);
  try {
    const hello = await py.next() as { peer_id?: string; error?: string };
    assert.equal(hello.error, undefined, String(hello.error));
    const eng = h.syncs.find((s) => s.conn.peerId === hello.peer_id)!;
    const done = await py.next() as { sent: number; answers: Record<string, number>; closed: string | null };
    assert.notEqual(done.closed, null, `the TS peer left the ${mode} connection open`);
    const why = await closedWithin(eng.conn, 10);
    if (mode === "flood") {
      assert.ok(eng.conn.link.session!.peakBuffered <= (1 << 20) + (16 << 10), `held ${eng.conn.link.session!.peakBuffered} bytes`);
      assert.match(eng.lastError ?? "", /budget|restricted/);
    } else {
      assert.ok(why instanceof PeerMisbehaved, String(why));
      assert.equal(done.answers[String(ErrorCode.MALFORMED)], 99, JSON.stringify(done.answers));
      assert.match(done.closed ?? "", /protocol violation/);
    }
    await stillSyncs(h, m, `after the Python ${mode}`);
  } finally {
    await py.stop();
    await shutdown(h, m);
  }
});

test("a FIN record with a payload is a protocol error (protocol.md: FIN is empty); the bare FIN finishes the stream", () => {
  const limits = new Limits();
  for (const payload of [utf8enc("junk"), new Uint8Array(0)]) {
    const a = new Session({ initiator: true, local: limits, remote: limits });
    const b = new Session({ initiator: false, local: limits, remote: limits, budget: new Budget() });
    const sid = a.openStream();
    a.write(sid, utf8enc("hi"), true);
    b.receive(a.takeOutgoing().map(([, rec]) => decodeRecord(rec)), null, 0);
    const fin = { type: RecordType.FIN, stream: sid, payload };
    if (payload.length > 0) assert.throws(() => b.receive([fin], null, 0), FrameError);
    else assert.ok(b.receive([fin], null, 0).some((e) => e.kind === "finished"));
  }
});

function utf8enc(s: string): Uint8Array { return new TextEncoder().encode(s); }
