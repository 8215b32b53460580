/**
 * The storage conformance suite (src/storage/conformance.ts) in this browser's real IndexedDB:
 * opened by tests/test_phone_app.py in headless Chromium, and useful on a phone to check that
 * its browser keeps data (private modes may not). Results in `window.selftest`.
 */
import { checks } from "../src/storage/conformance.js";
import { IdbStorage } from "../src/storage/idb.js";

interface Result { name: string; ok: boolean; error: string | null }

async function main(): Promise<Result[]> {
  const out: Result[] = [];
  let n = 0;
  const run = `selftest-${String(Date.now())}`;
  const list = document.getElementById("results")!;
  for (const c of checks) {
    let error: string | null = null;
    try {
      await c.run({
        fresh: () => IdbStorage.open(`${run}-${String(n++)}`),
        reopen: async (s) => {
          await s.close();
          return IdbStorage.open(`${run}-${String(n - 1)}`);
        },
      });
    } catch (e) {
      error = e instanceof Error ? e.message : String(e);
    }
    out.push({ name: c.name, ok: error === null, error });
    const li = document.createElement("li");
    li.textContent = `${error === null ? "✔" : "✘"} ${c.name}${error === null ? "" : `: ${error}`}`;
    list.append(li);
  }
  const failed = out.filter((r) => !r.ok).length;
  document.getElementById("summary")!.textContent = `${String(out.length - failed)} passed, ${String(failed)} failed`;
  return out;
}

(window as unknown as { selftest: Promise<Result[]> }).selftest = main();
