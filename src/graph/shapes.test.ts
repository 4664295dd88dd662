// Shape rules that refuse a model whose parameters do not fit its layers (a mutated or hand-edited export):
// onnxruntime would otherwise stop at run time with a multi-line internal error.
import assert from "node:assert/strict";
import { test } from "node:test";
import { attr, Graph, GraphError } from "./ir.js";

const refuses = (f: () => unknown, pattern: RegExp) => assert.throws(f, (e: unknown) => e instanceof GraphError && pattern.test(e.message));

test("Gemm: inner sizes and the bias must fit the product", () => {
  const g = new Graph("gemm");
  g.addInput("x", "float32", ["N", 4]);
  for (const [k, shape] of [["w", [3, 4]], ["wt", [4, 3]], ["b3", [3]], ["b1", [1]], ["bn3", [1, 3]], ["b10", [10]], ["b2d", [2, 3]], ["b3d", [1, 1, 3]]] as const) g.addInput(k, "float32", [...shape]);
  assert.deepEqual(g.shape(g.op("Gemm", ["x", "w", "b3"], { transB: attr.int(1) })), ["N", 3]);
  assert.deepEqual(g.shape(g.op("Gemm", ["x", "wt", "b1"])), ["N", 3]);
  assert.deepEqual(g.shape(g.op("Gemm", ["x", "wt", "bn3"])), ["N", 3]);
  assert.deepEqual(g.shape(g.op("Gemm", ["x", "wt"])), ["N", 3]);
  refuses(() => g.op("Gemm", ["x", "w"]), /Gemm: inner sizes differ/);
  refuses(() => g.op("Gemm", ["x", "wt", "b10"]), /Gemm: bias of shape \[10\] does not broadcast to the output \[N,3\]/);
  // Against a symbolic batch a [2, 3] bias cannot be checked here: it is left to run time.
  assert.deepEqual(g.shape(g.op("Gemm", ["x", "wt", "b2d"])), ["N", 3]);
  refuses(() => g.op("Gemm", ["x", "wt", "b3d"]), /Gemm: bias of shape \[1,1,3\]/);
  refuses(() => g.op("Gemm", ["b3d", "wt"]), /Gemm: inputs must be matrices/);
});

test("Conv, ConvTranspose and BatchNormalization: per-channel parameters are vectors of the channel count", () => {
  const g = new Graph("params");
  g.addInput("x", "float32", ["N", 2, 5, 5]);
  for (const [k, shape] of [["w", [3, 2, 3, 3]], ["wt", [2, 3, 3, 3]], ["v2", [2]], ["v3", [3]], ["v4", [4]], ["m3", [3, 1]]] as const) g.addInput(k, "float32", [...shape]);
  const c = g.op("Conv", ["x", "w", "v3"]);
  assert.deepEqual(g.shape(c), ["N", 3, 3, 3]);
  refuses(() => g.op("Conv", ["x", "w", "v4"]), /Conv: input 2 \("v4"\) has shape \[4\]; a vector of 3 values/);
  refuses(() => g.op("Conv", ["x", "w", "m3"]), /Conv: input 2 \("m3"\) has shape \[3,1\]/);
  assert.deepEqual(g.shape(g.op("ConvTranspose", ["x", "wt", "v3"])), ["N", 3, 7, 7]);
  refuses(() => g.op("ConvTranspose", ["x", "wt", "v2"]), /ConvTranspose: input 2 \("v2"\) has shape \[2\]; a vector of 3 values/);
  assert.deepEqual(g.shape(g.op("BatchNormalization", [c, "v3", "v3", "v3", "v3"])), ["N", 3, 3, 3]);
  for (const k of [1, 2, 3, 4]) {
    const inputs = [c, "v3", "v3", "v3", "v3"];
    inputs[k] = "v4";
    refuses(() => g.op("BatchNormalization", inputs), new RegExp(`BatchNormalization: input ${k} \\("v4"\\) has shape \\[4\\]`));
  }
});
