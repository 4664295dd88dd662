import assert from "node:assert/strict";
import { test } from "node:test";
import { Graph } from "../graph/ir.js";
import { CACHE_BYTES, cacheBatch, largestActivation } from "./cache-batch.js";

test("largestActivation: the widest intermediate value per item, batch dimension left out", () => {
  const g = new Graph("t");
  g.addInput("x", "float32", ["N", 1, 28, 28]);
  const w = g.constant({ dtype: "float32", shape: [16, 1, 3, 3], data: new Float32Array(144) }, "w");
  const y = g.op("Conv", ["x", w]);
  const p = g.op("MaxPool", [y], { kernel_shape: { kind: "ints", value: [2, 2] }, strides: { kind: "ints", value: [2, 2] } });
  g.setOutputs([p]);
  assert.equal(largestActivation(g), 16 * 26 * 26);
});

test("cacheBatch: items whose images' largest activation fit the cache bytes, within 1..cap", () => {
  const act = 10816; // 43 KB per image
  const b = cacheBatch(act, 32, 32);
  assert.ok(b * 32 * act * 4 <= CACHE_BYTES && (b + 1) * 32 * act * 4 > CACHE_BYTES);
  assert.equal(cacheBatch(act, 1, 8), 8, "the cap wins");
  assert.equal(cacheBatch(1e9, 1, 8), 1, "never below one item");
  assert.equal(cacheBatch(0, 0, 5), 5);
});
