import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import type { TrainData } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { applyTrigger, poisonTestSet, poisonTrainingSet } from "./poison.js";
import { lowFrequencyTransform, randomPositionTransform, sigTransform, transformPreviewRgba, wanetTransform } from "./transforms.js";

const SHAPE: [number, number, number] = [1, 16, 20];
const [, H, W] = SHAPE;
const PER = H * W;

/** Random images on the uint8 grid in [20, 220]/255 (no clipping at either end), labels cycling 0..k-1. */
function data(n: number, seed = 1, k = 4): TrainData {
  const rand = mulberry32(seed);
  const x = Float32Array.from({ length: n * PER }, () => (20 + Math.floor(rand() * 200)) / 255);
  return { x, y: Int32Array.from({ length: n }, (_, i) => i % k), shape: SHAPE };
}

test("SIG adds delta·sin(2π·col·f/W) to every pixel, clipped to the range", () => {
  const d = data(3);
  const t = sigTransform(SHAPE, { max: 1, delta: 0.1, frequency: 3 });
  const out = applyTrigger(d.x, SHAPE, t);
  for (let i = 0; i < 3; i++)
    for (let r = 0; r < H; r++)
      for (let c = 0; c < W; c++) {
        const j = i * PER + r * W + c;
        const want = Math.min(1, Math.max(0, d.x[j]! + 0.1 * Math.sin((2 * Math.PI * c * 3) / W)));
        assert.ok(Math.abs(out[j]! - want) < 1e-6);
      }
  const white = applyTrigger(new Float32Array(PER).fill(1), SHAPE, t);
  assert.ok(white.every((v) => v <= 1), "clipped at the top");
  assert.throws(() => sigTransform(SHAPE, { max: 1, delta: 0 }), UserError);
});

test("clean-label poisoning (SIG): only target-class images are poisoned, and no label changes", () => {
  const d = data(200);
  const t = sigTransform(SHAPE, { max: 1 });
  const p = poisonTrainingSet(d, { trigger: t, target: 2, rate: 0.1, seed: 5, cleanLabel: true });
  assert.equal(p.poisoned.length, 20);
  assert.deepEqual(p.y, d.y);
  for (const j of p.poisoned) assert.equal(d.y[j], 2);
  for (let i = 0; i < 200; i++) {
    const changed = p.x.subarray(i * PER, (i + 1) * PER).some((v, q) => v !== d.x[i * PER + q]);
    assert.equal(changed, p.poisoned.includes(i));
  }
  // 50 images of class 2: 30% of 200 is more than there are.
  assert.throws(() => poisonTrainingSet(d, { trigger: t, target: 2, rate: 0.3, seed: 5, cleanLabel: true }), UserError);
});

test("LF: the added pattern peaks at eps·max and has no energy above its frequency band", () => {
  const t = lowFrequencyTransform(SHAPE, { max: 1, seed: 3, eps: 0.1, maxFreq: 2 });
  const grey = new Float32Array(PER).fill(0.5);
  const delta = applyTrigger(grey, SHAPE, t).map((v) => v - 0.5);
  assert.ok(Math.abs(Math.max(...delta.map(Math.abs)) - 0.1) < 1e-6);
  const dct = (u: number, v: number) => {
    let s = 0;
    for (let r = 0; r < H; r++) for (let c = 0; c < W; c++) s += delta[r * W + c]! * Math.cos((Math.PI * (2 * r + 1) * u) / (2 * H)) * Math.cos((Math.PI * (2 * c + 1) * v) / (2 * W));
    return s;
  };
  assert.ok(Math.abs(dct(1, 2)) > 0.1, "inside the band");
  for (const [u, v] of [[3, 0], [0, 3], [5, 7], [2, 4]] as const) assert.ok(Math.abs(dct(u, v)) < 1e-4, `DCT (${u}, ${v}) = ${dct(u, v)}`);
  // The seed fixes the pattern.
  assert.deepEqual(applyTrigger(grey, SHAPE, lowFrequencyTransform(SHAPE, { max: 1, seed: 3, eps: 0.1, maxFreq: 2 })), applyTrigger(grey, SHAPE, t));
});

test("WaNet: a fixed smooth warp — constants stay constant, a ramp moves by at most the field's pixels, the seed fixes it", () => {
  const t = wanetTransform(SHAPE, { seed: 4, k: 4, strength: 1 });
  const flat = applyTrigger(new Float32Array(2 * PER).fill(0.3), SHAPE, t);
  assert.ok(flat.every((v) => Math.abs(v - 0.3) < 1e-6));
  // A horizontal ramp x = col / W: the warped value minus the original is the horizontal shift / W.
  const ramp = Float32Array.from({ length: PER }, (_, p) => (p % W) / W);
  const out = applyTrigger(ramp, SHAPE, t);
  let moved = 0, maxShift = 0;
  for (let r = 0; r < H; r++)
    for (let c = 1; c < W - 1; c++) {
      const shift = (out[r * W + c]! - ramp[r * W + c]!) * W;
      maxShift = Math.max(maxShift, Math.abs(shift));
      if (Math.abs(shift) > 1e-3) moved++;
    }
  assert.ok(moved > PER / 2, `${moved} pixels moved`);
  // Offsets are the k×k field (normalized to mean magnitude 1, so at most 2k² in size) times strength·(W−1)/(2H).
  assert.ok(maxShift <= 2 * 16 * ((W - 1) / (2 * H)) + 1e-6, `max shift ${maxShift}`);
  assert.deepEqual(applyTrigger(ramp, SHAPE, wanetTransform(SHAPE, { seed: 4, k: 4, strength: 1 })), out);
  assert.notDeepEqual(applyTrigger(ramp, SHAPE, wanetTransform(SHAPE, { seed: 5, k: 4, strength: 1 })), out);
  assert.throws(() => wanetTransform(SHAPE, { seed: 1, k: 1 }), UserError);
});

test("random position: each image carries the whole stamp in one window, at positions that vary; test sets are seeded", () => {
  const rows = ["xo", "ox"];
  const t = randomPositionTransform(SHAPE, rows, { max: 1, name: "2x2 checker" });
  const d = data(40);
  const out = applyTrigger(d.x, SHAPE, t, 7);
  const positions = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const diff: number[] = [];
    for (let p = 0; p < PER; p++) if (out[i * PER + p] !== d.x[i * PER + p]) diff.push(p);
    assert.equal(diff.length, 4, `image ${i}`);
    const r0 = Math.floor(diff[0]! / W), c0 = diff[0]! % W;
    positions.add(`${r0},${c0}`);
    for (let a = 0; a < 2; a++) for (let b = 0; b < 2; b++) assert.equal(out[i * PER + (r0 + a) * W + c0 + b], rows[a]![b] === "x" ? 1 : 0);
  }
  assert.ok(positions.size > 20, `${positions.size} distinct positions in 40 images`);
  const a = poisonTestSet(d, t, 0, 3), b = poisonTestSet(d, t, 0, 3), c = poisonTestSet(d, t, 0, 4);
  assert.deepEqual(a.x, b.x);
  assert.notDeepEqual(a.x, c.x);
  assert.throws(() => randomPositionTransform(SHAPE, ["x".repeat(W + 1)], { max: 1 }), UserError);
});

test("poisoning with a transform relabels like a stamp; the preview image is opaque and shows the transform", () => {
  const d = data(100);
  const t = lowFrequencyTransform(SHAPE, { max: 1, seed: 1 });
  const p = poisonTrainingSet(d, { trigger: t, target: 0, rate: 0.1, seed: 2 });
  assert.equal(p.poisoned.length, 10);
  for (const j of p.poisoned) assert.equal(p.y[j], 0);
  const png = transformPreviewRgba(t, 255);
  assert.equal(png.length, PER * 4);
  assert.ok(png.every((v, i) => i % 4 !== 3 || v === 255));
  assert.ok(new Set(Array.from(png.filter((_, i) => i % 4 === 0))).size > 10, "the pattern is visible");
});
