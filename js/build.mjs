// Build with esbuild: every module to dist/ (ESM for Node, tests included), plus one
// browser bundle (dist/p2psync.browser.js) of the platform-neutral entry point.
import { build } from "esbuild";
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";

function tsFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []);
}

// Automerge's "browser" export imports a .wasm module (for bundlers that handle wasm); browsers
// get its base64 entry instead, which instantiates the inlined wasm on import.
const AUTOMERGE_BROWSER = { "@automerge/automerge": "./node_modules/@automerge/automerge/dist/mjs/entrypoints/fullfat_base64.js" };

rmSync("dist", { recursive: true, force: true });
await build({
  entryPoints: [...tsFiles("src"), ...tsFiles("test")],
  outdir: "dist",
  outbase: ".",
  format: "esm",
  platform: "node",
  target: "node20",
  sourcemap: "inline",
  logLevel: "warning",
});
await build({
  entryPoints: ["src/index.ts"],
  outfile: "dist/p2psync.browser.js",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  logLevel: "warning",
  alias: AUTOMERGE_BROWSER,
});
