import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { UserError } from "../errors.js";
import { requireLabels } from "../io/dataset.js";
import { openDataset } from "../io/open-dataset.js";
import { writeCsawH5 } from "../io/csaw-h5.js";
import { loadModel } from "../io/load-model.js";
import { predictLabels } from "../model/forward.js";
import { paramValues } from "../model/params.js";
import { parse } from "./command.js";
import { emptyClassesWarning, trainCommand } from "./commands/train.js";
import { ROOT } from "../test/fixtures.js";

let dir: string;
const N = 96;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "train-cmd-"));
  // Real Fashion-MNIST images from the bundled example (in the repository, so this runs on a bare clone).
  const src = await openDataset(join(ROOT, "examples/badnet-fmnist/clean_test.h5"), { inputScale: 1 });
  try {
    const pixels = Uint8Array.from(src.read(0, 2 * N));
    const labels = requireLabels(src, "train test data");
    await writeCsawH5(join(dir, "train.h5"), pixels.slice(0, N * 784), [N, 1, 28, 28], labels.slice(0, N));
    await writeCsawH5(join(dir, "valid.h5"), pixels.slice(N * 784), [N, 1, 28, 28], labels.slice(N, 2 * N));
  } finally {
    src.close();
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

interface TrainJson {
  epochs: { epoch: number; loss: number; accuracy: number; validAccuracy: number | null }[];
  files: string[];
  numClasses: number;
  images: number;
}

async function run(args: string[]): Promise<TrainJson> {
  const ctx = parse(trainCommand, [...args, "--quiet", "--json"]);
  return (await trainCommand.run(ctx)).json as TrainJson;
}

const base = (out: string, seed: number) => ["--data", join(dir, "train.h5"), "--input-scale", "255", "--arch", "zoo-cnn", "--out", join(dir, out), "--epochs", "2", "--batch-size", "32", "--seed", String(seed)];

test("train writes .h5 and .onnx with the same predictions, per-epoch history with validation accuracy", async () => {
  const r = await run([...base("a.h5", 0), "--valid", join(dir, "valid.h5")]);
  assert.deepEqual(r.files, [join(dir, "a.h5"), join(dir, "a.onnx")]);
  assert.equal(r.images, N);
  assert.equal(r.numClasses, 10);
  assert.deepEqual(r.epochs.map((e) => e.epoch), [1, 2]);
  for (const e of r.epochs) assert.ok(e.validAccuracy !== null && e.validAccuracy >= 0 && e.validAccuracy <= 1);
  assert.ok(r.epochs[1]!.loss < r.epochs[0]!.loss, "loss goes down");
  const h5 = await loadModel(join(dir, "a.h5"));
  const onnx = await loadModel(join(dir, "a.onnx"));
  const valid = await openDataset(join(dir, "valid.h5"), { inputScale: 255 });
  assert.deepEqual(await predictLabels(onnx, valid), await predictLabels(h5, valid));
  valid.close();
});

test("same seed → identical weights; another seed → different weights", async () => {
  await run(base("s1.h5", 7));
  await run(base("s2.h5", 7));
  await run(base("s3.h5", 8));
  assert.deepEqual(readFileSync(join(dir, "s1.onnx")), readFileSync(join(dir, "s2.onnx")));
  const p1 = paramValues(await loadModel(join(dir, "s1.h5")));
  const p2 = paramValues(await loadModel(join(dir, "s2.h5")));
  const p3 = paramValues(await loadModel(join(dir, "s3.h5")));
  for (const [k, t] of p1) {
    assert.deepEqual(p2.get(k)!.data, t.data, k);
    assert.notDeepEqual(p3.get(k)!.data, t.data, k);
  }
});

test("train continues from --model and can use sgd", async () => {
  const r = await run(["--data", join(dir, "train.h5"), "--input-scale", "255", "--model", join(dir, "a.h5"), "--out", join(dir, "b.h5"), "--epochs", "1", "--optimizer", "sgd", "--lr", "0.01"]);
  assert.ok(existsSync(join(dir, "b.h5")) && existsSync(join(dir, "b.onnx")));
  assert.equal(r.epochs.length, 1);
});

test("bad options are one-line UserErrors", async () => {
  const d = ["--data", join(dir, "train.h5"), "--input-scale", "255"];
  await assert.rejects(run([...d, "--out", join(dir, "x.h5")]), UserError, "needs --arch or --model");
  await assert.rejects(run([...d, "--arch", "zoo-cnn", "--out", join(dir, "x.h5"), "--optimizer", "rmsprop"]), UserError);
  await assert.rejects(run([...d, "--arch", "nope", "--out", join(dir, "x.h5")]), /unknown architecture/);
  await assert.rejects(run([...d, "--arch", "zoo-cnn", "--out", join(dir, "x.txt")]), UserError);
  await assert.rejects(run([...d, "--arch", "zoo-cnn", "--out", join(dir, "missing", "x.h5")]), /does not exist/);
  await assert.rejects(run([...d, "--arch", "zoo-cnn", "--out", join(dir, "x.h5"), "--num-classes", "5"]), /outside the model's 5 classes/);
  await assert.rejects(run([...d, "--model", join(dir, "a.h5"), "--out", join(dir, "x.h5"), "--num-classes", "12"]), /--num-classes 12 does not match the 10 classes of --model .*a\.h5; leave --num-classes out/);
});

test("training data with one label is an error; classes without an image are a warning on stderr", async () => {
  const px = (n: number) => new Uint8Array(n * 784).map((_, i) => (i * 31) % 256);
  await writeCsawH5(join(dir, "one.h5"), px(1), [1, 1, 28, 28], Int32Array.of(5));
  await writeCsawH5(join(dir, "same.h5"), px(4), [4, 1, 28, 28], Int32Array.of(2, 2, 2, 2));
  await writeCsawH5(join(dir, "gaps.h5"), px(6), [6, 1, 28, 28], Int32Array.of(0, 1, 1, 3, 0, 3));
  const args = (data: string, out: string, ...more: string[]) => ["--data", join(dir, data), "--input-scale", "255", "--arch", "zoo-cnn", "--out", join(dir, out), "--epochs", "1", ...more];
  await assert.rejects(run(args("one.h5", "one_model.h5")), (e: unknown) => e instanceof UserError && e.message === "data one.h5: its only image has label 5; training needs images of at least 2 different labels");
  // --num-classes does not make a single label learnable (the old message suggested it would).
  await assert.rejects(run(args("same.h5", "same_model.h5", "--num-classes", "3")), /all 4 images have label 2; training needs images of at least 2 different labels$/);
  assert.ok(!existsSync(join(dir, "one_model.h5")) && !existsSync(join(dir, "same_model.h5")));

  // Labels 0, 1, 3 of --num-classes 6: classes 2, 4 and 5 get no image. Said on stderr, once, and training goes on.
  const stderr: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => (stderr.push(String(chunk)), true)) as typeof process.stderr.write;
  let r: TrainJson;
  try {
    r = await run(args("gaps.h5", "gaps_model.h5", "--num-classes", "6"));
  } finally {
    process.stderr.write = write;
  }
  const warnings = stderr.join("").split("\n").filter((l) => l.includes("WARNING"));
  assert.deepEqual(warnings, ["badnet: WARNING: 3 of the 6 classes have no training image in gaps.h5 (classes 2, 4, 5); the trained model will not learn to predict them"]);
  assert.equal(r.numClasses, 6);
  assert.ok(existsSync(join(dir, "gaps_model.h5")));

  // The default class count (largest label + 1) still leaves the gap at 2; full coverage says nothing.
  assert.equal(emptyClassesWarning(Int32Array.of(0, 1, 3), 4, "d"), "WARNING: class 2 of 4 has no training image in d; the trained model will not learn to predict it");
  assert.equal(emptyClassesWarning(Int32Array.of(0, 1, 2, 1), 3, "d"), undefined);
  const many = emptyClassesWarning(Int32Array.from({ length: 10 }, (_, i) => 2 * i), 1283, "faces.h5")!;
  assert.equal(many, "WARNING: 1273 of the 1283 classes have no training image in faces.h5 (classes 1, 3, 5, 7, 9, 11, 13, 15 … and 1265 more); the trained model will not learn to predict them");
});
