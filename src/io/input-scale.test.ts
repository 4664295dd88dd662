import { test } from "node:test";
import assert from "node:assert/strict";
import { UserError } from "../errors.js";
import { lowerModel } from "../model/lower.js";
import type { ModelSpec } from "../model/spec.js";
import { mulberry32 } from "../util/random.js";
import { memoryDataset, uint8Dataset } from "./dataset.js";
import { accuracyByScale, chanceAccuracy, chanceWarning, detectInputScale, nearChance } from "./input-scale.js";

const S = 4;
const SHAPE: [number, number, number] = [1, S, S];

/** Dark (class 0) or bright (class 1) 4x4 images; the model thresholds the mean at 0.5, i.e. expects pixels/255. */
function brightnessModel() {
  const per = S * S;
  const kernel = new Float32Array(per * 2);
  for (let p = 0; p < per; p++) {
    kernel[p * 2] = -1 / per;
    kernel[p * 2 + 1] = 1 / per;
  }
  const spec: ModelSpec = {
    name: "brightness",
    inputLayer: "in",
    outputLayer: "fc",
    inputShape: [S, S, 1],
    source: "test",
    layers: [
      { name: "in", className: "InputLayer", config: { batch_input_shape: [null, S, S, 1] }, inbound: [], weights: [] },
      { name: "flat", className: "Flatten", config: {}, inbound: ["in"], weights: [] },
      {
        name: "fc",
        className: "Dense",
        config: { units: 2, activation: "linear" },
        inbound: ["flat"],
        weights: [
          { name: "kernel:0", shape: [per, 2], data: kernel },
          { name: "bias:0", shape: [2], data: Float32Array.of(0.5, -0.5) },
        ],
      },
    ],
  };
  return lowerModel(spec);
}

function rawPixels(n: number, seed: number): { pixels: Uint8Array; labels: Int32Array } {
  const rand = mulberry32(seed);
  const pixels = new Uint8Array(n * S * S);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % 2;
    for (let p = 0; p < S * S; p++) pixels[i * S * S + p] = Math.round((labels[i] ? 180 : 20) + 50 * rand());
  }
  return { pixels, labels };
}

test("input scale not given: detected from labelled clean data (raw 0..255 pixels → 255)", async () => {
  const { pixels, labels } = rawPixels(60, 1);
  const d = await detectInputScale(brightnessModel(), uint8Dataset("valid.h5", SHAPE, pixels, labels, 1));
  assert.equal(d.scale, 255);
  assert.deepEqual(d.tried.map((t) => t.scale), [255, 1]);
  assert.equal(d.tried[0]!.accuracy, 1);
  assert.equal(d.tried[1]!.accuracy, 0.5);
  assert.equal(d.chance, 0.5);
});

test("input scale not given: data stored already in [0, 1] is detected as --input-scale 1", async () => {
  const { pixels, labels } = rawPixels(60, 2);
  const d = await detectInputScale(brightnessModel(), memoryDataset("unit.h5", SHAPE, Float32Array.from(pixels, (v) => v / 255), labels));
  assert.equal(d.scale, 1);
});

test("input scale not given and no scale gives real accuracy: an error, not a guess", async () => {
  const { pixels } = rawPixels(60, 3);
  const shuffled = Int32Array.from({ length: 60 }, (_, i) => (i * 7) % 3 === 0 ? 1 : 0);
  await assert.rejects(detectInputScale(brightnessModel(), uint8Dataset("noise.h5", SHAPE, pixels, shuffled, 1)), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /cannot detect the input scale: clean accuracy on 60 images of noise\.h5 is near chance .*; give --input-scale$/);
    return true;
  });
});

test("a clean accuracy near chance at the given --input-scale is a loud warning naming the scale that works", async () => {
  const { pixels, labels } = rawPixels(60, 4);
  const model = brightnessModel();
  const wrong = await chanceWarning(model, uint8Dataset("valid.h5", SHAPE, pixels, labels, 1), 1);
  assert.match(wrong ?? "", /^WARNING: clean accuracy 50\.0% at --input-scale 1 is near chance \(50\.0%\) on 60 images of valid\.h5; 100\.0% at --input-scale 255/);
  assert.equal(await chanceWarning(model, uint8Dataset("valid.h5", SHAPE, pixels, labels, 255), 255), undefined);
  assert.equal(await chanceWarning(model, uint8Dataset("unlabelled", SHAPE, pixels, null, 1), 1), undefined);
  // One image: right at the given scale, no warning; wrong, a warning against 1/K, not "near chance (100%)".
  const one = (scale: number) => uint8Dataset("one.h5", SHAPE, pixels.slice(0, SHAPE[0] * SHAPE[1] * SHAPE[2]), labels.slice(0, 1), scale);
  assert.equal(await chanceWarning(model, one(255), 255), undefined);
  assert.match((await chanceWarning(model, one(1), 1)) ?? "", /near chance \(50\.0%\) on 1 images of one\.h5/);
});

test("the probe stops at the first scale that is enough: a model working at the given scale is run once", async () => {
  const { pixels, labels } = rawPixels(60, 5);
  const ds = uint8Dataset("valid.h5", SHAPE, pixels, labels, 255);
  const all = await accuracyByScale(brightnessModel(), ds, 255, [255, 1]);
  assert.deepEqual(all.tried.map((t) => [t.scale, t.accuracy]), [[255, 1], [1, 0.5]]);
  const early = await accuracyByScale(brightnessModel(), ds, 255, [255, 1], (t, chance) => !nearChance(t.accuracy, chance));
  assert.deepEqual(early.tried.map((t) => [t.scale, t.accuracy]), [[255, 1]]);
  // Near chance at the first scale: the probe goes on to the next.
  const wrong = await accuracyByScale(brightnessModel(), uint8Dataset("valid.h5", SHAPE, pixels, labels, 1), 1, [1, 255], (t, chance) => !nearChance(t.accuracy, chance));
  assert.deepEqual(wrong.tried.map((t) => [t.scale, t.accuracy]), [[1, 0.5], [255, 1]]);
});

test("chance is the larger of 1/K and the most common label's share; near chance is within a tenth of the way to 100%", () => {
  assert.equal(chanceAccuracy(Int32Array.of(0, 1, 2, 3), 10), 0.25);
  assert.equal(chanceAccuracy(Int32Array.of(0, 1, 2, 3), 2), 0.5);
  assert.equal(chanceAccuracy(Int32Array.of(5, 5, 5, 1), 1283), 0.75);
  // One label only (one image, a one-class set): its share says nothing, 1/K is the baseline.
  assert.equal(chanceAccuracy(Int32Array.of(3), 10), 0.1);
  assert.equal(chanceAccuracy(Int32Array.of(7, 7, 7), 4), 0.25);
  assert.ok(nearChance(0.1, 0.1) && nearChance(0.19, 0.1) && !nearChance(0.2, 0.1));
  assert.ok(nearChance(0, 1 / 1283) && !nearChance(0.8, 1 / 1283));
});
