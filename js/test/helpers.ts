/** Test helpers: paths, hex, and running the Python reference implementation. */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import type { Value } from "../src/codec.js";

/** js/ (tests run from js/dist/test/). */
export const JS_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The repository root holding the Python package `p2psync`. */
export const REPO_ROOT = resolve(JS_ROOT, "..");

export const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
export const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "hex"));
export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/**
 * Run `code` with python3 (PYTHONPATH = the repository root, or $P2PSYNC_PY_ROOT to check
 * against another checkout), `input` on stdin; return stdout.
 */
export function python(code: string, input = ""): string {
  const r = spawnSync("python3", ["-c", code], {
    input,
    env: { ...process.env, PYTHONPATH: process.env.P2PSYNC_PY_ROOT ?? REPO_ROOT },
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`python failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** Run Python code that prints one JSON document; return it parsed. */
export function pythonJson(code: string, input: unknown = null): unknown {
  return JSON.parse(python(code, JSON.stringify(input)));
}

/**
 * The directory of the shared Noise vectors: $P2PSYNC_NOISE_VECTORS, else the first
 * `shared/vectors` beside the repository root or one of its ancestors (a worktree at
 * /work/wt/x finds /work/shared/vectors). Undefined when there is none (tests skip).
 */
export function sharedVectorsDir(): string | undefined {
  const env = process.env.P2PSYNC_NOISE_VECTORS;
  if (env) return env;
  let dir = dirname(REPO_ROOT);
  for (;;) {
    const candidate = join(dir, "shared", "vectors");
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** Golden vectors of the protocol spec (tests/vectors/*.json) if present. */
export function goldenVectorsDir(): string | undefined {
  const env = process.env.P2PSYNC_GOLDEN_VECTORS;
  if (env) return env;
  const d = join(REPO_ROOT, "tests", "vectors");
  return existsSync(d) ? d : undefined;
}

/** The golden vector file `name` (parsed JSON), or undefined after marking the test skipped. */
export function loadVector<T>(t: TestContext, name: string): T | undefined {
  const dir = goldenVectorsDir();
  const path = dir === undefined ? undefined : join(dir, `${name}.json`);
  if (path === undefined || !existsSync(path)) {
    t.skip(`no golden vector ${name}.json (tests/vectors/ absent; set P2PSYNC_GOLDEN_VECTORS)`);
    return undefined;
  }
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

/** A msgpack value as the vectors write it (tests/vectors/README.md: tagged JSON). */
export type Tagged = { nil: null } | { bool: boolean } | { int: string } | { str: string } | { bin: string } | { array: Tagged[] };

/** The value a tagged vector value stands for (integers beyond 2^53 stay bigint). */
export function untag(t: Tagged): Value {
  if ("nil" in t) return null;
  if ("bool" in t) return t.bool;
  if ("int" in t) {
    const b = BigInt(t.int);
    const n = Number(b);
    return Number.isSafeInteger(n) ? n : b;
  }
  if ("str" in t) return t.str;
  if ("bin" in t) return unhex(t.bin);
  return t.array.map(untag);
}

/** A long-running Python child speaking JSON lines on stdout. */
export interface PyProcess {
  /** The next JSON line it prints (rejects if it exits first). */
  next(): Promise<Record<string, unknown>>;
  /** Write one line to its stdin (a command, for fixtures that take them). */
  send(line: string): void;
  /** Close its stdin (the fixtures exit on EOF) and wait for it to exit. */
  stop(): Promise<number | null>;
  stderr(): string;
}

export function spawnPython(script: string, args: string[]): PyProcess {
  const proc = spawn("python3", [join(JS_ROOT, "test", "fixtures", script), ...args], {
    env: { ...process.env, PYTHONPATH: process.env.P2PSYNC_PY_ROOT ?? REPO_ROOT },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const waiters: { resolve: (s: string) => void; reject: (e: Error) => void }[] = [];
  let err = "";
  let partial = "";
  let exited = false;
  proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
  proc.stdout.on("data", (d: Buffer) => {
    partial += d.toString();
    let i: number;
    while ((i = partial.indexOf("\n")) >= 0) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      const w = waiters.shift();
      if (w) w.resolve(line);
      else lines.push(line);
    }
  });
  const exit = new Promise<number | null>((resolve) => proc.on("exit", (code) => {
    exited = true;
    for (const w of waiters.splice(0)) w.reject(new Error(`python exited (${code}): ${err}`));
    resolve(code);
  }));
  return {
    next: async () => {
      const line = lines.shift() ?? (await new Promise<string>((resolve, reject) => {
        if (exited) reject(new Error(`python exited: ${err}`));
        else waiters.push({ resolve, reject });
      }));
      return JSON.parse(line) as Record<string, unknown>;
    },
    send: (line) => {
      proc.stdin.write(line + "\n");
    },
    stop: async () => {
      proc.stdin.end();
      const timer = setTimeout(() => proc.kill(), 5000);
      const code = await exit;
      clearTimeout(timer);
      return code;
    },
    stderr: () => err,
  };
}
