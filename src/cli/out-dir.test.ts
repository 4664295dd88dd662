// The staging life cycle of out-dir.ts in-process (the CLI cases are in out-safety.test.ts).
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { UserError } from "../errors.js";
import { tempDir } from "../test/make-bad-files.js";
import type { Context } from "./command.js";
import { checkNotInput, finalPaths, prepareOutDir, prepareOutFiles, withOutputs } from "./out-dir.js";

const dir = tempDir("out-dir");
after(() => rmSync(dir, { recursive: true, force: true }));

const ctx = (values: Context["values"] = {}, positionals: string[] = []): Context => ({ values, positionals, json: false, quiet: true });

test("a finished run's staging folder becomes --out; its JSON and text name the final paths", async () => {
  const out = join(dir, "ok", "result");
  let staging = "";
  const r = await withOutputs(async () => {
    staging = prepareOutDir(ctx(), out);
    assert.notEqual(staging, out);
    assert.ok(!existsSync(out), "nothing at --out while the run writes");
    writeFileSync(join(staging, "result.json"), "{}");
    // A sub-command writing inside its caller's staging folder gets that folder back, not a new one.
    const sub = prepareOutDir(ctx(), join(staging, "detect"));
    assert.equal(sub, join(staging, "detect"));
    writeFileSync(join(sub, "result.json"), "{}");
    return { json: { files: [join(staging, "result.json")], nested: { f: join(sub, "result.json") } }, text: `wrote ${staging}/result.json` };
  });
  assert.deepEqual(r.json, { files: [join(out, "result.json")], nested: { f: join(out, "detect", "result.json") } });
  assert.equal(r.text, `wrote ${out}/result.json`);
  assert.deepEqual(readdirSync(join(dir, "ok")), ["result"]);
  assert.deepEqual(readdirSync(out).sort(), ["detect", "result.json"]);
  assert.ok(!existsSync(staging));
});

test("a failed run leaves neither --out, its staging folder, nor the parent folders made for it", async () => {
  const top = join(dir, "failed");
  await assert.rejects(
    withOutputs(async () => {
      const s = prepareOutDir(ctx(), join(top, "a", "b"));
      writeFileSync(join(s, "G.onnx"), "half");
      throw new UserError("boom");
    }),
    /boom/,
  );
  assert.ok(!existsSync(top));
});

test("an earlier result is replaced only with --force, as a whole; a folder of other files never", async () => {
  const out = join(dir, "again");
  const once = (values: Context["values"], file: string) =>
    withOutputs(async () => {
      const s = prepareOutDir(ctx(values), out);
      writeFileSync(join(s, file), "x");
      writeFileSync(join(s, "result.json"), JSON.stringify({ file }));
      return { json: null, text: "" };
    });
  await once({}, "G_4.onnx");
  await assert.rejects(once({}, "G_10.onnx"), /earlier result; add --force/);
  await once({ force: true }, "G_10.onnx");
  assert.deepEqual(readdirSync(out).sort(), ["G_10.onnx", "result.json"]);
  const other = join(dir, "other");
  mkdirSync(other);
  writeFileSync(join(other, "notes.txt"), "mine");
  assert.throws(() => prepareOutDir(ctx({ force: true }), other), /other files in it/);
  assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith(".")), []);
});

test("an input at or under --out is refused, whatever path spelling (real paths compared)", () => {
  const out = join(dir, "holds");
  mkdirSync(out);
  writeFileSync(join(out, "result.json"), "{}");
  writeFileSync(join(out, "model.h5"), "weights");
  const spelled = join(dir, "holds", "..", "holds", "model.h5");
  assert.throws(() => prepareOutDir(ctx({ model: spelled, force: true }), out), /would overwrite the input/);
  assert.equal(readFileSync(join(out, "model.h5"), "utf8"), "weights");
});

test("an input that is a symlink inside --out (to a file elsewhere) is refused too: --force would remove the link", () => {
  const out = join(dir, "linked");
  mkdirSync(out);
  writeFileSync(join(out, "result.json"), "{}");
  const data = join(dir, "data-elsewhere.h5");
  writeFileSync(data, "images");
  symlinkSync(data, join(out, "valid.h5"));
  assert.throws(() => prepareOutDir(ctx({ clean: join(out, "valid.h5"), force: true }), out), /would overwrite the input/);
  assert.equal(readlinkSync(join(out, "valid.h5")), data);
  // The link's target named directly is outside --out: allowed.
  assert.doesNotThrow(() => checkNotInput(ctx({ clean: data }), out, "--out"));
});

test("output files: existing ones need --force, inputs never; written files move into place together", async () => {
  const d = join(dir, "files");
  mkdirSync(d);
  writeFileSync(join(d, "m.h5"), "old");
  writeFileSync(join(d, "data.h5"), "data");
  assert.throws(() => prepareOutFiles(ctx(), [join(d, "m.h5")], "--out"), /already exists; add --force/);
  assert.throws(() => prepareOutFiles(ctx({ data: join(d, "data.h5"), force: true }), [join(d, "data.h5")], "--out"), /would overwrite the input/);
  assert.throws(() => prepareOutFiles(ctx(), [d], "--output"), /is a folder/);
  const outs = [join(d, "m.h5"), join(d, "m.onnx")];
  const files = await prepareOutFiles(ctx({ force: true }), outs, "--out").write(async (stage) => {
    for (const f of outs) writeFileSync(join(stage, f.slice(d.length + 1)), "new");
    return outs.map((f) => join(stage, f.slice(d.length + 1)));
  });
  assert.deepEqual(files, outs);
  assert.equal(readFileSync(join(d, "m.h5"), "utf8"), "new");
  assert.deepEqual(readdirSync(d).sort(), ["data.h5", "m.h5", "m.onnx"]);
});

test("finalPaths leaves strings that are not under a staging folder alone", () => {
  const v = { a: "/x/y", b: ["data:image/png;base64,AAAA"], n: 3, nil: null };
  assert.deepEqual(finalPaths(structuredClone(v)), v);
});
