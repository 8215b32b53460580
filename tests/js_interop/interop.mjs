// .automerge interop with the JavaScript Automerge (tests/test_automerge_interop.py).
//   node interop.mjs load FILE   -> prints the document as JSON
//   node interop.mjs save FILE   -> writes a document made here, prints its JSON
import { readFileSync, writeFileSync } from "node:fs";
import * as Automerge from "@automerge/automerge";

const [mode, file] = process.argv.slice(2);
if (mode === "load") {
  const doc = Automerge.load(new Uint8Array(readFileSync(file)));
  process.stdout.write(JSON.stringify(Automerge.toJS(doc)) + "\n");
} else if (mode === "save") {
  let doc = Automerge.from({ title: "made in JS", items: ["a", "b"], n: 3, nested: { ok: true } });
  doc = Automerge.change(doc, (d) => {
    Automerge.splice(d, ["title"], 0, 0, "Hello, ");
    d.items.push("c");
  });
  writeFileSync(file, Automerge.save(doc));
  process.stdout.write(JSON.stringify(Automerge.toJS(doc)) + "\n");
} else {
  process.stderr.write("usage: node interop.mjs load|save FILE\n");
  process.exit(2);
}
