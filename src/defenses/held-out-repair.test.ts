import assert from "node:assert/strict";
import { test } from "node:test";
import type { Model } from "../model/model.js";
import { memoryDataset } from "../io/dataset.js";
import { heldOutSplit, RoundPicker } from "./held-out-repair.js";

// Stand-ins: RoundPicker only passes models through.
const m = (name: string) => ({ name }) as unknown as Model;

test("RoundPicker keeps the latest round within the accuracy budget", () => {
  const p = new RoundPicker(m("B"), 0.9, 0.01);
  p.offer(m("r1"), 1, 0.895);
  p.offer(m("r2"), 2, 0.85);
  p.offer(m("r3"), 3, 0.892);
  p.offer(m("r4"), 4, 0.88);
  assert.deepEqual(p.pick(), { model: m("r3"), round: 3 });
});

test("RoundPicker offers the best held-out round when every round broke the budget", () => {
  const p = new RoundPicker(m("B"), 0.9, 0.01);
  p.offer(m("r1"), 1, 0.80);
  p.offer(m("r2"), 2, 0.86);
  p.offer(m("r3"), 3, 0.84);
  assert.deepEqual(p.pick(), { model: m("r2"), round: 2 });
});

test("heldOutSplit partitions the images and names the defense when a part is empty", () => {
  const n = 20;
  const x = Float32Array.from({ length: n * 4 }, (_, i) => i);
  const y = Int32Array.from({ length: n }, (_, i) => i % 3);
  const clean = memoryDataset("c", [1, 2, 2], x, y);
  const s = heldOutSplit(clean, 0.25, 1, "X");
  assert.equal(s.train.y.length + s.heldOut.y.length, n);
  assert.ok(s.heldOut.y.length > 0 && s.train.y.length > 0);
  assert.equal(s.held.size, s.heldOut.y.length);
  // Every image lands in exactly one part: the first pixel of each is unique.
  const firsts = [...Array.from({ length: s.train.y.length }, (_, i) => s.train.x[i * 4]), ...Array.from({ length: s.heldOut.y.length }, (_, i) => s.heldOut.x[i * 4])];
  assert.equal(new Set(firsts).size, n);
  assert.throws(() => heldOutSplit(clean, 0.999, 1, "X"), /X: --holdout 0.999 leaves no images/);
});
