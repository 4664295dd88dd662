// The NCHWc rewrite as a graph transform (no runtime): which convs it takes, and what it leaves.
import assert from "node:assert/strict";
import { test } from "node:test";
import { toOnnx } from "../onnx/export.js";
import { attr, Graph, GraphError, tensor } from "./ir.js";
import { blockConvs, NCHWC_DOMAIN } from "./nchwc.js";

function graph(): Graph {
  const g = new Graph("t");
  g.addInput("x", "float32", ["N", 16, 8, 8]);
  g.addInput("w", "float32", [32, 16, 3, 3]);
  g.addInput("b", "float32", [32]);
  g.addInput("wd", "float32", [16, 4, 3, 3]);
  const y = g.op("Conv", ["x", "w", "b"], { pads: attr.ints([1, 1, 1, 1]), strides: attr.ints([2, 2]) }, "y");
  // Constant weight: onnxruntime's own optimizer blocks it.
  const wc = g.constant(tensor("float32", [16, 32, 1, 1], new Float32Array(16 * 32)));
  const z = g.op("Conv", [y, wc], {}, "z");
  // Grouped: left alone.
  const u = g.op("Conv", [z, "wd"], { group: attr.int(4), pads: attr.ints([1, 1, 1, 1]) }, "u");
  // Run-time weight, but 12 output channels: not a multiple of the block.
  const w12 = g.op("Slice", ["w", g.ints([0]), g.ints([12]), g.ints([0])]);
  const v = g.op("Conv", ["x", w12], {}, "v");
  g.setOutputs([u, v]);
  return g;
}

test("blockConvs takes only group-1 convs with run-time weights and channels in whole blocks, keeping their output names", () => {
  const g = graph();
  const before = g.info("y");
  assert.equal(blockConvs(g, 16), 1);
  const producer = g.nodes.find((n) => n.outputs.includes("y"))!;
  assert.equal(producer.op, "ReorderOutput");
  assert.equal(producer.domain, NCHWC_DOMAIN);
  assert.deepEqual(g.info("y"), before);
  const conv = g.nodes.find((n) => n.op === "Conv" && n.domain === NCHWC_DOMAIN)!;
  assert.deepEqual(conv.attrs.strides, attr.ints([2, 2]));
  assert.deepEqual(conv.attrs.kernel_shape, attr.ints([3, 3]));
  assert.equal(conv.inputs[2], "b");
  // The constant-weight, grouped and 12-channel convs are still plain ONNX Convs.
  for (const out of ["z", "u", "v"]) {
    const n = g.nodes.find((m) => m.outputs.includes(out))!;
    assert.equal(n.op, "Conv");
    assert.equal(n.domain, undefined);
  }
  // Topological order: every input is defined before it is read.
  const seen = new Set([...g.inputs.map((i) => i.name), ...g.initializers.keys(), ""]);
  for (const n of g.nodes) {
    for (const i of n.inputs) assert.ok(seen.has(i), `${n.op} reads ${i} before it is defined`);
    n.outputs.forEach((o) => seen.add(o));
  }
  // At block 8 the 12-channel conv still does not divide; the 16/32-channel one does.
  assert.equal(blockConvs(graph(), 8), 1);
});

test("the exported model declares the NCHWc operator set only when it uses it", () => {
  const has = (bytes: Uint8Array) => Buffer.from(bytes).includes(Buffer.from(NCHWC_DOMAIN));
  const g = graph();
  assert.equal(has(toOnnx(g)), false);
  blockConvs(g, 16);
  assert.equal(has(toOnnx(g)), true);
});

test("blockConvs refuses a block size that cannot be one", () => {
  assert.throws(() => blockConvs(graph(), 1), GraphError);
  assert.throws(() => blockConvs(graph(), 2.5), GraphError);
});
