import { strict as assert } from "node:assert";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { memoryDataset } from "../io/dataset.js";
import { mulberry32, shuffled } from "../util/random.js";
import { gather, holdoutSplit, shuffledBatches, splitClean } from "./split.js";

test("holdoutSplit partitions 0..n−1 into sorted parts, the held-out one of round(share·n), the same for the same seed", () => {
  const s = holdoutSplit(103, 0.2, 7);
  assert.equal(s.held.length, 21);
  assert.deepEqual([...s.held, ...s.train].sort((a, b) => a - b), Array.from({ length: 103 }, (_, i) => i));
  assert.deepEqual([...s.held], [...s.held].sort((a, b) => a - b));
  assert.deepEqual(holdoutSplit(103, 0.2, 7), s);
  assert.notDeepEqual(holdoutSplit(103, 0.2, 8).held, s.held);
});

test("gather copies the rows and labels at the indices", () => {
  const x = Float32Array.from({ length: 8 }, (_, i) => i);
  const g = gather(x, Int32Array.from([5, 6, 7, 8]), 2, Int32Array.from([3, 0]));
  assert.deepEqual([...g.x], [6, 7, 0, 1]);
  assert.deepEqual([...g.y], [8, 5]);
});

test("splitClean returns both parts as images and Datasets, and names the repair when a part is empty", () => {
  const n = 10;
  const x = Float32Array.from({ length: n * 4 }, (_, i) => i);
  const y = Int32Array.from({ length: n }, (_, i) => i % 3);
  const clean = memoryDataset("c", [1, 2, 2], x, y);
  const s = splitClean(clean, 0.3, 1, "R");
  const idx = holdoutSplit(n, 0.3, 1);
  assert.deepEqual(s.held, gather(x, y, 4, idx.held));
  assert.deepEqual(s.train, gather(x, y, 4, idx.train));
  assert.equal(s.heldSet.size, 3);
  assert.equal(s.trainSet.size, 7);
  assert.deepEqual([...s.heldSet.read(0, 3)], [...s.held.x]);
  assert.throws(() => splitClean(clean, 0.01, 1, "R"), (e: unknown) => e instanceof UserError && /^R: --holdout 0.01 leaves no images/.test(e.message));
  assert.throws(() => splitClean(memoryDataset("u", [1, 2, 2], x, null), 0.3, 1, "R"), /R needs labelled clean data/);
});

test("shuffledBatches cuts one shuffle (the same draws as shuffled) into batches, the last one short", () => {
  const batches = shuffledBatches(10, 4, mulberry32(3));
  assert.deepEqual(batches.map((b) => b.length), [4, 4, 2]);
  assert.deepEqual(batches.flatMap((b) => [...b]), [...shuffled(10, mulberry32(3))]);
  assert.deepEqual(shuffledBatches(0, 4, mulberry32(3)), []);
});
