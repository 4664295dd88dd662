import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import type { TrainData } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import {
  applyTrigger,
  blendTrigger,
  fromPixels,
  patchTrigger,
  pixelMax,
  poisonTestSet,
  poisonTrainingSet,
  stampTrigger,
  targetLabel,
  toPixels,
  triggerRgba,
} from "./poison.js";

/** Random images on the uint8 grid (scale 255), labels cycling 0..k-1. */
function data(n: number, shape: [number, number, number], k = 10, seed = 1): TrainData {
  const rand = mulberry32(seed);
  const x = Float32Array.from({ length: n * shape[0] * shape[1] * shape[2] }, () => Math.floor(rand() * 200) / 255);
  return { x, y: Int32Array.from({ length: n }, (_, i) => i % k), shape };
}

/** Flat (c, row, col) positions where two images of `shape` differ. */
function diffPixels(a: Float32Array, b: Float32Array, shape: [number, number, number], img: number): [number, number, number][] {
  const [C, H, W] = shape;
  const out: [number, number, number][] = [];
  const base = img * C * H * W;
  for (let c = 0; c < C; c++)
    for (let r = 0; r < H; r++)
      for (let q = 0; q < W; q++) {
        const j = base + c * H * W + r * W + q;
        if (a[j] !== b[j]) out.push([c, r, q]);
      }
  return out;
}

test("pixelMax is 255 / inputScale", () => {
  assert.equal(pixelMax(255), 1);
  assert.equal(pixelMax(1), 255);
  assert.throws(() => pixelMax(0), UserError);
});

test("default patch: a 3x3 white square one pixel from the bottom-right corner, nothing else changes", () => {
  for (const shape of [[1, 28, 28], [3, 10, 12]] as [number, number, number][]) {
    const d = data(4, shape);
    const before = d.x.slice();
    const t = patchTrigger(shape, { max: 1 });
    const out = applyTrigger(d.x, shape, t);
    assert.deepEqual(d.x, before, "input untouched");
    const [C, H, W] = shape;
    for (let i = 0; i < 4; i++) {
      const changed: Set<string> = new Set(diffPixels(out, d.x, shape, i).map(([c, r, q]) => `${c},${r},${q}`));
      for (let c = 0; c < C; c++)
        for (let r = H - 4; r <= H - 2; r++)
          for (let q = W - 4; q <= W - 2; q++) {
            assert.equal(out[i * C * H * W + c * H * W + r * W + q], 1);
            changed.delete(`${c},${r},${q}`);
          }
      assert.equal(changed.size, 0, `only the square changes, also changed: ${[...changed].join(" ")}`);
    }
    assert.match(t.description, /3x3 white square at rows/);
  }
});

test("patch placement: corner, margin, explicit position, value, and a stamp that does not fit is a UserError", () => {
  const shape: [number, number, number] = [1, 8, 8];
  const zero = new Float32Array(64);
  const at = (t: ReturnType<typeof patchTrigger>) => {
    const out = applyTrigger(zero, shape, t);
    return [...out].flatMap((v, i) => (v !== 0 ? [[Math.floor(i / 8), i % 8, v]] : []));
  };
  assert.deepEqual(at(patchTrigger(shape, { max: 255, size: 2, corner: "top-left", margin: 0 })), [[0, 0, 255], [0, 1, 255], [1, 0, 255], [1, 1, 255]]);
  assert.deepEqual(at(patchTrigger(shape, { max: 255, size: 1, corner: "top-right", margin: 2 })), [[2, 5, 255]]);
  assert.deepEqual(at(patchTrigger(shape, { max: 255, size: 1, corner: "bottom-left", margin: 0, value: 7 })), [[7, 0, 7]]);
  assert.deepEqual(at(patchTrigger(shape, { max: 255, size: 1, at: { row: 3, col: 4 } })), [[3, 4, 255]]);
  assert.throws(() => patchTrigger(shape, { max: 1, size: 9 }), UserError);
  assert.throws(() => patchTrigger(shape, { max: 1, size: 2, at: { row: 7, col: 0 } }), UserError);
});

test("stamp rows: x is white, o is black, . leaves the pixel alone", () => {
  const shape: [number, number, number] = [2, 5, 5];
  const ones = new Float32Array(50).fill(0.5);
  const t = stampTrigger(shape, ["x.o", "ox."], { max: 1, at: { row: 1, col: 1 }, name: "test" });
  const out = applyTrigger(ones, shape, t);
  for (let c = 0; c < 2; c++) {
    const v = (r: number, q: number) => out[c * 25 + r * 5 + q];
    assert.equal(v(1, 1), 1);
    assert.equal(v(1, 2), 0.5);
    assert.equal(v(1, 3), 0);
    assert.equal(v(2, 1), 0);
    assert.equal(v(2, 2), 1);
    assert.equal(v(2, 3), 0.5);
  }
  assert.equal(diffPixels(out, ones, shape, 0).length, 2 * 4);
  assert.throws(() => stampTrigger(shape, ["xa"], { max: 1 }), UserError);
  assert.throws(() => stampTrigger(shape, ["xx", "x"], { max: 1 }), UserError);
});

test("blend trigger: x' = 0.8 x + 0.2 pattern everywhere, the pattern is fixed by the seed", () => {
  const shape: [number, number, number] = [1, 6, 6];
  const d = data(3, shape);
  const t = blendTrigger(shape, { seed: 5, max: 1 });
  assert.deepEqual(t.pattern, blendTrigger(shape, { seed: 5, max: 1 }).pattern);
  assert.notDeepEqual(t.pattern, blendTrigger(shape, { seed: 6, max: 1 }).pattern);
  const out = applyTrigger(d.x, shape, t);
  for (let i = 0; i < out.length; i++) {
    const expected = 0.8 * d.x[i]! + 0.2 * t.pattern[i % 36]!;
    assert.ok(Math.abs(out[i]! - expected) < 1e-6, `pixel ${i}: ${out[i]} vs ${expected}`);
  }
  for (const v of t.pattern) assert.ok(v >= 0 && v <= 1 && Number.isInteger(Math.round(v * 255 * 1e4) / 1e4));
  assert.throws(() => blendTrigger(shape, { seed: 1, alpha: 0, max: 1 }), UserError);
});

test("a trigger for other image sizes is a UserError", () => {
  const t = patchTrigger([1, 28, 28], { max: 1 });
  assert.throws(() => applyTrigger(new Float32Array(3 * 28 * 28), [3, 28, 28], t), UserError);
  assert.throws(() => poisonTrainingSet(data(2, [1, 10, 10]), { trigger: t, target: 0, rate: 0.5, seed: 0 }), UserError);
});

test("poisonTrainingSet stamps and relabels exactly round(rate·N) images, never one already of the target class", () => {
  const shape: [number, number, number] = [1, 8, 8];
  const d = data(200, shape);
  const before = { x: d.x.slice(), y: d.y.slice() };
  const trigger = patchTrigger(shape, { max: 1 });
  const p = poisonTrainingSet(d, { trigger, target: 3, rate: 0.1, seed: 9 });
  assert.deepEqual(d.x, before.x);
  assert.deepEqual(d.y, before.y);
  assert.equal(p.poisoned.length, 20);
  const set = new Set(p.poisoned);
  const stamped = applyTrigger(d.x, shape, trigger);
  for (let i = 0; i < 200; i++) {
    const img = (a: Float32Array) => a.subarray(i * 64, (i + 1) * 64);
    if (set.has(i)) {
      assert.notEqual(d.y[i], 3);
      assert.equal(p.y[i], 3);
      assert.deepEqual(img(p.x), img(stamped));
    } else {
      assert.equal(p.y[i], d.y[i]);
      assert.deepEqual(img(p.x), img(d.x));
    }
  }
  // Seeded: same seed, same picks; another seed, other picks.
  assert.deepEqual(poisonTrainingSet(d, { trigger, target: 3, rate: 0.1, seed: 9 }).poisoned, p.poisoned);
  assert.notDeepEqual(poisonTrainingSet(d, { trigger, target: 3, rate: 0.1, seed: 10 }).poisoned, p.poisoned);
  // exclude: a second trigger avoids the first one's images.
  const q = poisonTrainingSet(p, { trigger: patchTrigger(shape, { max: 1, corner: "top-left" }), target: 5, rate: 0.1, seed: 9, exclude: p.poisoned });
  assert.equal(q.poisoned.length, 20);
  for (const j of q.poisoned) assert.ok(!set.has(j));
  assert.throws(() => poisonTrainingSet(d, { trigger, target: 3, rate: 1, seed: 0 }), UserError, "only 180 eligible");
  assert.throws(() => poisonTrainingSet(d, { trigger, target: 3, rate: 1.5, seed: 0 }), UserError);
});

test("all-to-all poisoning maps y to (y + shift) mod K", () => {
  const shape: [number, number, number] = [1, 4, 4];
  const d = data(50, shape, 5);
  const target = { kind: "all-to-all" as const, numClasses: 5 };
  const p = poisonTrainingSet(d, { trigger: patchTrigger(shape, { max: 1, size: 1 }), target, rate: 0.2, seed: 1 });
  assert.equal(p.poisoned.length, 10);
  for (const j of p.poisoned) assert.equal(p.y[j], (d.y[j]! + 1) % 5);
  assert.equal(targetLabel({ kind: "all-to-all", numClasses: 5, shift: -1 }, 0), 4);
  const t = poisonTestSet(d, patchTrigger(shape, { max: 1, size: 1 }), target);
  assert.equal(t.y.length, 50);
  for (let i = 0; i < 50; i++) assert.equal(t.y[i], (d.y[i]! + 1) % 5);
});

test("poisonTestSet keeps the non-target images, stamped, with the target label stored", () => {
  const shape: [number, number, number] = [1, 8, 8];
  const d = data(30, shape);
  const trigger = patchTrigger(shape, { max: 1, size: 2 });
  const t = poisonTestSet(d, trigger, 0);
  const keep = [...d.y.keys()].filter((i) => d.y[i] !== 0);
  assert.equal(t.y.length, keep.length);
  assert.ok(t.y.every((v) => v === 0));
  const stamped = applyTrigger(d.x, shape, trigger);
  keep.forEach((j, i) => assert.deepEqual(t.x.subarray(i * 64, (i + 1) * 64), stamped.subarray(j * 64, (j + 1) * 64)));
});

test("pixel conversion rounds and clamps; the trigger image carries the pattern and the mask as alpha", () => {
  assert.deepEqual([...toPixels(Float32Array.of(0, 0.5, 1, 2, -1), 255)], [0, 128, 255, 255, 0]);
  assert.deepEqual([...toPixels(fromPixels(Uint8Array.of(0, 7, 255), 255), 255)], [0, 7, 255]);
  const t = stampTrigger([1, 2, 2], ["xo", ".."], { max: 1, at: { row: 0, col: 0 } });
  assert.deepEqual([...triggerRgba(t, 255)], [255, 255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 0, 0]);
});
