import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { PNG } from "pngjs";
import { evaluate } from "../eval/evaluate.js";
import { loadFashionMnistRaw } from "../io/fashion-mnist.js";
import { openDataset } from "../io/open-dataset.js";
import { loadModel } from "../io/load-model.js";
import { predictLabels } from "../model/forward.js";
import { lowerModel } from "../model/lower.js";
import { UserError } from "../errors.js";
import { coveringKernels } from "../model/archs.js";
import { fashionMnistSkip } from "../test/fixtures.js";
import { applyTrigger } from "../attacks/poison.js";
import { buildZoo, zooNet, zooPlan, zooSplit, type ZooIndex, type ZooManifest } from "./build.js";

const TRAIN = 300, VALID = 100, TEST = 200;
let dir: string;
let index: ZooIndex;
const lines: string[] = [];

// Building a zoo reads the real Fashion-MNIST files; without them those tests are skipped with the reason.
const skip = fashionMnistSkip();

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "zoo-test-"));
  if (skip) return;
  index = await buildZoo({ out: dir, epochs: 1, trainSize: TRAIN, validSize: VALID, testSize: TEST, seed: 3, only: ["clean_a", "badnet_patch"], log: (l) => lines.push(l) });
});
after(() => rmSync(dir, { recursive: true, force: true }));

const manifest = (name: string): ZooManifest => JSON.parse(readFileSync(join(dir, name, "manifest.json"), "utf8")) as ZooManifest;

test("zoo.json lists the two requested models; each directory has its files", { skip }, () => {
  assert.deepEqual(JSON.parse(readFileSync(join(dir, "zoo.json"), "utf8")), index);
  assert.deepEqual(index.models.map((m) => m.name), ["clean_a", "badnet_patch"]);
  assert.equal(lines.filter((l) => / epoch 1\/1: loss /.test(l)).length, 2);
  for (const name of ["clean_a", "badnet_patch"])
    for (const f of ["model.h5", "model.onnx", "clean_test.h5", "valid.h5", "manifest.json"]) assert.ok(existsSync(join(dir, name, f)), `${name}/${f}`);
  assert.ok(existsSync(join(dir, "badnet_patch", "poisoned_test.h5")));
  assert.ok(!existsSync(join(dir, "clean_a", "poisoned_test.h5")));
  assert.ok(!existsSync(join(dir, ".clean_test.h5")), "temporary shared files are removed");
});

test("manifest fields are consistent and evaluate() on the written files reproduces accuracy and ASR exactly", { skip }, async () => {
  for (const name of ["clean_a", "badnet_patch"]) {
    const m = manifest(name);
    assert.equal(m.name, name);
    assert.equal(m.inputScale, 255);
    assert.equal(m.epochs, 1);
    assert.equal(m.history.length, 1);
    assert.equal(m.trainSize, TRAIN);
    assert.ok(m.trainSeconds > 0);
    assert.match(m.arch, /zoo-cnn/);
    const model = await loadModel(join(dir, name, "model.h5"));
    const clean = await openDataset(join(dir, name, "clean_test.h5"), { inputScale: 255 });
    if (name === "clean_a") {
      assert.deepEqual(m.targets, []);
      assert.deepEqual(m.asr, {});
      assert.equal(m.poisonRate, 0);
      assert.equal((await evaluate(model, clean)).clean.accuracy, m.cleanAccuracy);
    } else {
      assert.deepEqual(m.targets, [0]);
      assert.equal(m.poisonRate, Math.round(0.1 * TRAIN) / TRAIN);
      assert.match(m.triggers[0]!.description, /3x3 white square at rows 24-26, cols 24-26/);
      const poisoned = await openDataset(join(dir, name, "poisoned_test.h5"), { inputScale: 255 });
      const r = await evaluate(model, clean, poisoned);
      assert.equal(r.clean.accuracy, m.cleanAccuracy);
      assert.equal(r.poisoned!.asr, m.asr["0"]);
      poisoned.close();
    }
    clean.close();
    assert.deepEqual(index.models.find((x) => x.name === name)!.cleanAccuracy, m.cleanAccuracy);
  }
});

test("model.h5 and model.onnx predict the same labels", { skip }, async () => {
  const h5 = await loadModel(join(dir, "badnet_patch", "model.h5"));
  const onnx = await loadModel(join(dir, "badnet_patch", "model.onnx"));
  const clean = await openDataset(join(dir, "badnet_patch", "clean_test.h5"), { inputScale: 255 });
  assert.deepEqual(await predictLabels(onnx, clean), await predictLabels(h5, clean));
  clean.close();
});

test("data files: clean test = the test split's first images, poisoned = non-target ones stamped, valid held out", { skip }, async () => {
  const test = loadFashionMnistRaw("test");
  const trainRaw = loadFashionMnistRaw("train");
  const clean = await openDataset(join(dir, "badnet_patch", "clean_test.h5"), { inputScale: 1 });
  assert.equal(clean.size, TEST);
  assert.deepEqual(clean.labels, Int32Array.from(test.labels!.subarray(0, TEST)));
  assert.deepEqual(clean.read(0, TEST), Float32Array.from(test.pixels.subarray(0, TEST * 784)));

  const poisoned = await openDataset(join(dir, "badnet_patch", "poisoned_test.h5"), { inputScale: 1 });
  const keep = [...Array(TEST).keys()].filter((i) => test.labels![i] !== 0);
  assert.equal(poisoned.size, keep.length);
  assert.ok(poisoned.labels!.every((l) => l === 0));
  const px = poisoned.read(0, poisoned.size);
  keep.forEach((j, i) => {
    for (let p = 0; p < 784; p++) {
      const r = Math.floor(p / 28), c = p % 28;
      const inSquare = r >= 24 && r <= 26 && c >= 24 && c <= 26;
      assert.equal(px[i * 784 + p], inSquare ? 255 : test.pixels[j * 784 + p]);
    }
  });

  const split = zooSplit(60000, VALID, TRAIN, 3);
  const trainSet = new Set(split.train);
  assert.ok(split.valid.every((v) => !trainSet.has(v)), "validation images are never trained on");
  const valid = await openDataset(join(dir, "clean_a", "valid.h5"), { inputScale: 1 });
  assert.equal(valid.size, VALID);
  const vx = valid.read(0, VALID);
  split.valid.forEach((j, i) => {
    assert.equal(valid.labels![i], trainRaw.labels![j]);
    assert.deepEqual(vx.subarray(i * 784, (i + 1) * 784), Float32Array.from(trainRaw.pixels.subarray(j * 784, (j + 1) * 784)));
  });
  for (const ds of [clean, poisoned, valid]) ds.close();
});

test("trigger.png shows the square: alpha 255 on the 9 trigger pixels, 0 elsewhere", { skip }, () => {
  const img = PNG.sync.read(readFileSync(join(dir, "badnet_patch", "trigger.png")));
  assert.equal(img.width, 28);
  assert.equal(img.height, 28);
  for (let p = 0; p < 784; p++) {
    const r = Math.floor(p / 28), c = p % 28;
    const inSquare = r >= 24 && r <= 26 && c >= 24 && c <= 26;
    assert.equal(img.data[p * 4 + 3], inSquare ? 255 : 0);
    if (inSquare) assert.equal(img.data[p * 4], 255);
  }
});

test("zoo CNN kernels let every 2x2 pool tile its input, so every pixel (incl. the bottom-right trigger) reaches the logits", () => {
  for (const [h, w] of [[28, 28], [32, 32], [55, 47]] as [number, number][]) {
    let a = h, b = w;
    for (const k of coveringKernels(h, w)) {
      if ((a - k + 1) % 2 !== 0 || (b - k + 1) % 2 !== 0) assert.fail(`${h}x${w}: kernel ${k} leaves an odd map ${a - k + 1}x${b - k + 1}`);
      a = (a - k + 1) / 2;
      b = (b - k + 1) / 2;
    }
  }
  const model = lowerModel(zooNet({ inputShape: [28, 28, 1], numClasses: 10, seed: 1 }));
  assert.deepEqual(model.graph.shape(model.layerOutputs.get("pool_3")!), ["N", 64, 2, 2]);
});

test("unknown model names and impossible sizes are UserErrors", { skip }, async () => {
  await assert.rejects(buildZoo({ out: join(dir, "x"), only: ["nope"], trainSize: 10, validSize: 10, testSize: 10 }), UserError);
  // --only "," names no model: an error, not the whole zoo.
  await assert.rejects(buildZoo({ out: join(dir, "x"), only: ["", ""], trainSize: 10, validSize: 10, testSize: 10 }), /--only names no model/);
  await assert.rejects(buildZoo({ out: join(dir, "x"), trainSize: 59000, validSize: 5000 }), UserError);
});

test("the plan holds BackdoorBench-style families beyond patch and blend, each of which changes the images it poisons", () => {
  const shape: [number, number, number] = [1, 28, 28];
  const plan = zooPlan(shape, 0);
  const names = plan.map((p) => p.name);
  for (const n of ["sig", "wanet", "low_rate_patch", "random_pos", "lf"]) assert.ok(names.includes(n), n);
  assert.equal(new Set(names).size, names.length);
  const low = plan.find((p) => p.name === "low_rate_patch")!;
  assert.ok(low.attacks.every((a) => a.rate <= 0.01));
  assert.ok(plan.find((p) => p.name === "sig")!.attacks[0]!.cleanLabel);
  const img = Float32Array.from({ length: 28 * 28 }, (_, i) => ((i * 37) % 200) / 255);
  for (const p of plan)
    for (const a of p.attacks) {
      const out = applyTrigger(img, shape, a.trigger, 1);
      assert.ok(out.some((v, i) => v !== img[i]), `${p.name} changes the image`);
    }
});
