// Hostile data at the boundary, through the real CLI (issue 12's cases): NaN/Inf pixels, data already in
// [0, 1] under --input-scale 255, a model run at the wrong scale, a detected scale, LZF compression and
// train --arch zoo-cnn --model. Each error case exits 2 with one stderr line and writes nothing.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import h5wasm from "h5wasm/node";
import { fixture, ROOT } from "../test/fixtures.js";
import { makeFaceData, runCli, tempDir, type FaceData } from "../test/make-bad-files.js";
import { mulberry32 } from "../util/random.js";

const dir = tempDir("bad-input");
after(() => rmSync(dir, { recursive: true, force: true }));
const EXAMPLE = join(ROOT, "examples/badnet-fmnist");
const MODEL = join(EXAMPLE, "model.h5");
const N = 40;

/** N float32 Fashion-MNIST-shaped images (N×1×28×28, labels 0..9) with `edit` applied to the pixels. */
async function floatData(name: string, edit: (a: Float32Array) => void): Promise<string> {
  await h5wasm.ready;
  const rand = mulberry32(9);
  const a = Float32Array.from({ length: N * 28 * 28 }, () => Math.round(255 * rand()));
  edit(a);
  const path = join(dir, name);
  const f = new h5wasm.File(path, "w");
  f.create_dataset({ name: "data", data: a, shape: [N, 1, 28, 28], dtype: "<f4" });
  f.create_dataset({ name: "label", data: Float64Array.from({ length: N }, (_, i) => i % 10), shape: [N], dtype: "<d" });
  f.close();
  return path;
}

let nan: string, allNan: string, inf: string, unit: string, faces: FaceData;
before(async () => {
  // Image 3, row 5, column 7 (N×C×H×W).
  nan = await floatData("one-nan.h5", (a) => (a[3 * 784 + 5 * 28 + 7] = NaN));
  allNan = await floatData("all-nan.h5", (a) => a.fill(NaN));
  inf = await floatData("inf.h5", (a) => (a[10 * 784] = Infinity));
  unit = await floatData("unit.h5", (a) => a.forEach((v, i) => (a[i] = v / 255)));
  faces = await makeFaceData(dir);
});

function assertOneLine(args: string[], r: { code: number; stdout: string; stderr: string }, ...names: (string | RegExp)[]): void {
  const cmd = `badnet ${args.join(" ")}`;
  assert.equal(r.code, 2, `${cmd}: exit ${r.code}\n${r.stderr}`);
  assert.equal(r.stdout, "", cmd);
  assert.match(r.stderr, /^badnet: error: [^\n]+\n$/, `${cmd}: ${r.stderr}`);
  for (const n of names) {
    if (typeof n === "string") assert.ok(r.stderr.includes(n), `${cmd}: ${r.stderr}`);
    else assert.match(r.stderr, n, cmd);
  }
}

describe("bad data through the CLI", { concurrency: 2 }, () => {
  const out = (name: string) => join(dir, `out-${name}`);
  const cases: { name: string; args: () => string[]; names: () => (string | RegExp)[]; out?: string }[] = [
    { name: "NaN pixels in detect", args: () => ["detect", "--model", MODEL, "--input-scale", "255", "--clean", nan, "--labels", "0-1", "--out", out("detect")], names: () => [nan, "pixel data[3, 0, 5, 7] is NaN"], out: out("detect") },
    { name: "NaN pixels in fine-prune", args: () => ["fine-prune", "--model", MODEL, "--input-scale", "255", "--clean", nan, "--out", out("fine-prune")], names: () => [nan, "pixel data[3, 0, 5, 7] is NaN"], out: out("fine-prune") },
    { name: "NaN pixels in train", args: () => ["train", "--data", nan, "--input-scale", "255", "--arch", "zoo-cnn", "--out", join(dir, "trained.h5")], names: () => [nan, "is NaN"], out: join(dir, "trained.h5") },
    { name: "all-NaN images labelled 0 in eval (clean and poisoned)", args: () => ["eval", "--model", MODEL, "--input-scale", "255", "--clean", allNan, "--poisoned", allNan], names: () => [allNan, "pixel data[0, 0, 0, 0] is NaN"] },
    { name: "prune on all-NaN data writes no G", args: () => ["prune", "--model", MODEL, "--input-scale", "255", "--clean", allNan, "--out", out("prune")], names: () => [allNan, "is NaN"], out: join(out("prune"), "G_4.onnx") },
    { name: "Inf pixels in eval", args: () => ["eval", "--model", MODEL, "--input-scale", "255", "--clean", inf], names: () => [inf, "pixel data[10, 0, 0, 0] is Infinity"] },
    { name: "float data in [0, 1] with --input-scale 255", args: () => ["eval", "--model", MODEL, "--input-scale", "255", "--clean", unit], names: () => [unit, /already scaled to \[0, 1\].*--input-scale 1/] },
    { name: "LZF-compressed HDF5", args: () => ["eval", "--model", MODEL, "--input-scale", "255", "--clean", join(ROOT, "fixtures/hdf5/lzf_data.h5")], names: () => ["lzf_data.h5", "LZF compression is not supported"] },
    { name: "train --out on a read-only file system: one line naming the path, no HDF5-DIAG", args: () => ["train", "--data", join(EXAMPLE, "clean_test.h5"), "--input-scale", "255", "--arch", "zoo-cnn", "--epochs", "1", "--quiet", "--out", "/proc/badnet-test.h5"], names: () => ["/proc/badnet-test.h5"] },
    { name: "train --arch zoo-cnn --model M", args: () => ["train", "--data", join(EXAMPLE, "valid.h5"), "--input-scale", "255", "--arch", "zoo-cnn", "--model", MODEL, "--out", join(dir, "t.h5")], names: () => ["--arch zoo-cnn", "without --model"], out: join(dir, "t.h5") },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const args = c.args();
      assertOneLine(args, await runCli(args), ...c.names());
      // An empty --out folder may be created up front; no file may be written.
      if (c.out) assert.ok(!existsSync(c.out) || (statSync(c.out).isDirectory() && readdirSync(c.out).length === 0), `${c.out} was written`);
    });
  }
});

test("third-party CSAW lab network at the wrong scale: a loud warning, and the scale that works", async () => {
  const args = ["eval", "--model", fixture("csaw2020/models/lab3_bd_weights.h5"), "--arch", "deepid", "--input-scale", "255", "--clean", faces.clean];
  const r = await runCli(args);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^badnet: WARNING: clean accuracy 0\.0% at --input-scale 255 is near chance .* on 5 images of faces_clean\.h5; 100\.0% at --input-scale 1: the model probably expects --input-scale 1\n$/);
});

test("input scale not given: detected from the labelled clean data and said on stderr", async () => {
  const args = ["eval", "--model", MODEL, "--clean", join(EXAMPLE, "valid.h5"), "--json"];
  const r = await runCli(args);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^badnet: input scale not given: using --input-scale 255 \(clean accuracy on 512 images of valid\.h5: \d+\.\d% at --input-scale 255, \d+\.\d% at --input-scale 1\)\n$/);
  assert.equal((JSON.parse(r.stdout) as { nClean: number }).nClean, 1000);
  const noLabels = ["predict", "--model", MODEL, join(EXAMPLE, "sample_clean_label9.png")];
  assertOneLine(noLabels, await runCli(noLabels), "missing required option --input-scale");
});
