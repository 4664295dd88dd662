import { test } from "node:test";
import assert from "node:assert/strict";
import { memoryDataset } from "../io/dataset.js";
import { argmaxRows, NO_CLASS, predictLabels, predictLabelsEach } from "./forward.js";
import { lowerModel } from "./lower.js";

test("NaN logits never count as class 0: a row with a NaN has no class", () => {
  const rows = Float32Array.of(NaN, 1, 2, /**/ 0, NaN, -1, /**/ 3, 1, 2, /**/ NaN, NaN, NaN, /**/ -Infinity, -Infinity, 5);
  assert.deepEqual([...argmaxRows(rows, 3)], [NO_CLASS, NO_CLASS, 0, NO_CLASS, 2]);
  assert.ok(NO_CLASS < 0);
});

test("predictLabelsEach: each source's predictions as predictLabels gives them, progress over all sources as one run", async () => {
  // Two classes from the sign of (pixel 0 − pixel 1).
  const model = lowerModel({
    name: "sign",
    inputLayer: "in",
    outputLayer: "fc",
    inputShape: [1, 2, 1],
    source: "test",
    layers: [
      { name: "in", className: "InputLayer", config: { batch_input_shape: [null, 1, 2, 1] }, inbound: [], weights: [] },
      { name: "flat", className: "Flatten", config: {}, inbound: ["in"], weights: [] },
      { name: "fc", className: "Dense", config: { units: 2, activation: "linear" }, inbound: ["flat"], weights: [
        { name: "kernel:0", shape: [2, 2], data: Float32Array.of(1, -1, -1, 1) },
        { name: "bias:0", shape: [2], data: Float32Array.of(0, 0) },
      ] },
    ],
  });
  const a = memoryDataset("a", [1, 1, 2], Float32Array.of(1, 0, 0, 1, 2, 3), null);
  const b = memoryDataset("b", [1, 1, 2], Float32Array.of(5, 1, 0, 0.5, 7, 8, 9, 1), null);
  const seen: number[] = [];
  const [pa, pb] = await predictLabelsEach(model, [a, b], { batchSize: 2, onProgress: (d) => seen.push(d) });
  assert.deepEqual([...pa!], [0, 1, 1]);
  assert.deepEqual([...pb!], [0, 1, 1, 0]);
  assert.deepEqual([...pa!], [...(await predictLabels(model, a))]);
  assert.deepEqual([...pb!], [...(await predictLabels(model, b, { batchSize: 3 }))]);
  assert.deepEqual(seen, [2, 3, 5, 7]);
  assert.deepEqual(await predictLabelsEach(model, []), []);
});
