import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { attr, f32, Graph, i64, type TensorData } from "../graph/ir.js";
import { UserError } from "../errors.js";
import type { Model } from "../model/model.js";
import { lowerModel } from "../model/lower.js";
import { readKerasModel } from "../io/keras-h5.js";
import { fixture } from "../test/fixtures.js";
import { Session } from "../runtime/session.js";
import { toOnnx } from "./export.js";
import { importOnnx, loadOnnxModel } from "./import.js";
import { ProtoWriter } from "./protobuf.js";

// The original files keep initializers among graph inputs etc.; onnxruntime's warnings about that are noise here.
ort.env.logLevel = "error";

// ---- helpers ------------------------------------------------------------------------------------------

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randn(n: number, seed: number, scale = 0.5): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => (r() * 2 - 1) * scale);
}

/** NCHW data → NHWC data. */
function toNhwc(x: Float32Array, [n, c, h, w]: number[]): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < n; b++)
    for (let k = 0; k < c; k++)
      for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) out[((b * h + i) * w + j) * c + k] = x[((b * c + k) * h + i) * w + j];
  return out;
}

function softmaxRows(t: TensorData): number[] {
  const [n, k] = t.shape;
  const d = t.data as Float32Array;
  const out: number[] = [];
  for (let r = 0; r < n; r++) {
    const row = Array.from(d.subarray(r * k, (r + 1) * k));
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    out.push(...e.map((v) => v / s));
  }
  return out;
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-5): void {
  assert.equal(actual.length, expected.length, "length");
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    assert.ok(Math.abs(a - e) <= tol * (1 + Math.abs(e)), `element ${i}: ${a} vs ${e}`);
  }
}

async function runGraph(g: Graph, feeds: Record<string, TensorData>, outputs?: string[]): Promise<Record<string, TensorData>> {
  const h = g.clone();
  if (outputs) h.setOutputs(outputs);
  const s = await Session.create(h, { threads: 1 });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

async function runBytes(bytes: Uint8Array, feeds: Record<string, TensorData>): Promise<Record<string, TensorData>> {
  const s = await Session.fromBytes(bytes, { threads: 1 });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

async function runModel(m: Model, x: TensorData, extra: string[] = []): Promise<Record<string, TensorData>> {
  return runGraph(m.graph, { [m.input]: x }, [m.logits, ...extra]);
}

function assertUserError(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof UserError, `expected UserError, got ${String(e)}`);
    for (const p of parts) {
      if (typeof p === "string") assert.ok(e.message.includes(p), `message "${e.message}" lacks "${p}"`);
      else assert.match(e.message, p);
    }
    assert.ok(!e.message.includes("\n"), "one-line message");
    return true;
  });
}

// ---- hand-written protobuf ----------------------------------------------------------------------------

type Build = (w: ProtoWriter) => void;

const floatTensor = (name: string, dims: number[], vals: number[], raw = false): Build => (w) => {
  for (const d of dims) w.varint(1, d); // unpacked dims
  w.varint(2, 1).string(8, name);
  if (raw) w.bytes(9, new Uint8Array(Float32Array.from(vals).buffer));
  else w.packedFloats(4, vals);
};
const int64Tensor = (name: string, vals: (number | bigint)[]): Build => (w) => {
  w.packedVarints(1, [vals.length]).varint(2, 7).string(8, name).packedVarints(7, vals);
};
const aInt = (name: string, v: number): Build => (w) => void w.string(1, name).varint(3, v).varint(20, 2);
const aFloat = (name: string, v: number): Build => (w) => void w.string(1, name).float(2, v).varint(20, 1);
const aString = (name: string, v: string): Build => (w) => void w.string(1, name).string(4, v).varint(20, 3);
const aInts = (name: string, vs: (number | bigint)[], packed = true): Build => (w) => {
  w.string(1, name);
  if (packed) w.packedVarints(8, vs);
  else for (const v of vs) w.varint(8, v);
  w.varint(20, 7);
};
const aTensor = (name: string, t: Build): Build => (w) => void w.string(1, name).message(5, t).varint(20, 4);
const aStrings = (name: string, vs: string[]): Build => (w) => {
  w.string(1, name);
  for (const v of vs) w.string(9, v);
  w.varint(20, 8);
};

function node(op: string, inputs: string[], outputs: string[], name: string, attrs: Build[] = [], domain = ""): Build {
  return (w) => {
    for (const i of inputs) w.string(1, i);
    for (const o of outputs) w.string(2, o);
    w.string(3, name).string(4, op);
    for (const a of attrs) w.message(5, a);
    if (domain) w.string(7, domain);
  };
}

function valueInfo(name: string, dims: (number | string | null)[], elem = 1): Build {
  return (w) => {
    w.string(1, name);
    w.message(2, (tp) =>
      tp.message(1, (tt) => {
        tt.varint(1, elem);
        tt.message(2, (sh) => {
          for (const d of dims) sh.message(1, (dm) => {
            if (typeof d === "number") dm.varint(1, d);
            else if (d !== null) dm.string(2, d);
          });
        });
      }),
    );
  };
}

interface HandGraph {
  nodes: Build[];
  initializers?: Build[];
  inputs: Build[];
  outputs: Build[];
}

function handModel(opset: number, g: HandGraph): Uint8Array {
  const w = new ProtoWriter();
  w.varint(1, opset >= 13 ? 7 : 6).string(2, "hand-written");
  w.message(7, (gw) => {
    for (const n of g.nodes) gw.message(1, n);
    gw.string(2, "hand");
    for (const t of g.initializers ?? []) gw.message(5, t);
    for (const i of g.inputs) gw.message(11, i);
    for (const o of g.outputs) gw.message(12, o);
  });
  w.message(8, (o) => o.string(1, "").varint(2, opset));
  return w.finish();
}

// ---- IR-built CNNs, exported with toOnnx and re-imported ----------------------------------------------

function smallCnn(): Graph {
  const g = new Graph("small_cnn");
  g.addInput("x", "float32", ["batch", 1, 8, 8]);
  g.addInitializer("conv1.weight", f32([4, 1, 3, 3], randn(36, 1)));
  g.addInitializer("conv1.bias", f32([4], randn(4, 2)));
  g.addInitializer("fc.weight", f32([5, 64], randn(320, 3, 0.2)));
  g.addInitializer("fc.bias", f32([5], randn(5, 4)));
  g.add("Conv", ["x", "conv1.weight", "conv1.bias"], { pads: attr.ints([1, 1, 1, 1]) }, { outputs: ["c1"], name: "conv1" });
  g.add("Relu", ["c1"], {}, { outputs: ["r1"], name: "relu1" });
  g.add("MaxPool", ["r1"], { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]) }, { outputs: ["p1"], name: "pool1" });
  g.add("Flatten", ["p1"], { axis: attr.int(1) }, { outputs: ["flat"], name: "flatten" });
  g.add("Gemm", ["flat", "fc.weight", "fc.bias"], { transB: attr.int(1) }, { outputs: ["fc_out"], name: "fc" });
  g.add("Softmax", ["fc_out"], { axis: attr.int(-1) }, { outputs: ["probs"], name: "softmax" });
  g.setOutputs(["probs"]);
  return g;
}

test("IR CNN with a final Softmax: logits are the Softmax input and outputs agree", async () => {
  const g = smallCnn();
  const m = importOnnx(toOnnx(g), "small");
  assert.equal(m.name, "small");
  assert.equal(m.input, "input");
  assert.equal(m.logits, "logits");
  assert.deepEqual(m.inputShape, [1, 8, 8]);
  assert.equal(m.numClasses, 5);
  assert.deepEqual(m.graph.inputs.map((i) => [i.name, i.shape]), [["input", ["N", 1, 8, 8]]]);
  assert.deepEqual(m.graph.outputs.map((o) => o.name), ["logits"]);
  assert.equal(m.graph.producer("logits")!.inputs[0], "fc_out");
  assert.deepEqual([...m.layerOutputs], [
    ["conv1", "c1"], ["relu1", "r1"], ["pool1", "p1"], ["flatten", "flat"], ["fc", "fc_out"], ["softmax", "probs"],
  ]);
  assert.deepEqual(m.params, [
    { value: "conv1.weight", layer: "conv1", weight: "weight" },
    { value: "conv1.bias", layer: "conv1", weight: "bias" },
    { value: "fc.weight", layer: "fc", weight: "weight" },
    { value: "fc.bias", layer: "fc", weight: "bias" },
  ]);

  const x = f32([3, 1, 8, 8], randn(192, 9, 1));
  const ref = await runGraph(g, { x }, ["fc_out", "probs", "r1"]);
  const got = await runModel(m, x, ["probs", "r1"]);
  assert.deepEqual(got.logits.shape, [3, 5]);
  assertClose(got.logits.data as Float32Array, ref.fc_out.data as Float32Array);
  assertClose(got.probs.data as Float32Array, ref.probs.data as Float32Array);
  assertClose(softmaxRows(got.logits), ref.probs.data as Float32Array);
  assertClose(got.r1.data as Float32Array, ref.r1.data as Float32Array);
});

test("IR two-branch CNN using the reserved names input/logits, MatMul+Add, no Softmax", async () => {
  // DeepID-like: conv → pool → [flatten → MatMul] + [conv → flatten → MatMul] → Add → Relu → Gemm.
  const g = new Graph("two_branch");
  g.addInput("input", "float32", ["b", 3, 12, 10]);
  g.addInitializer("w1", f32([6, 3, 3, 3], randn(162, 11, 0.3)));
  g.addInitializer("w2", f32([8, 6, 2, 2], randn(192, 12, 0.3)));
  g.add("Conv", ["input", "w1"], {}, { outputs: ["a1"], name: "conv_1" }); // [N,6,10,8]
  g.add("Relu", ["a1"], {}, { outputs: ["a2"], name: "relu_1" });
  g.add("MaxPool", ["a2"], { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]) }, { outputs: ["a3"], name: "pool_1" }); // [N,6,5,4]
  g.add("Flatten", ["a3"], {}, { outputs: ["f1"], name: "flatten_1" }); // 120
  g.add("Conv", ["a3", "w2"], {}, { outputs: ["b1"], name: "conv_2" }); // [N,8,4,3]
  g.add("Flatten", ["b1"], {}, { outputs: ["f2"], name: "flatten_2" }); // 96
  g.addInitializer("m1", f32([120, 16], randn(1920, 13, 0.1)));
  g.addInitializer("m2", f32([96, 16], randn(1536, 14, 0.1)));
  g.addInitializer("bias", f32([16], randn(16, 15)));
  g.add("MatMul", ["f1", "m1"], {}, { outputs: ["d1"], name: "fc_1" });
  g.add("MatMul", ["f2", "m2"], {}, { outputs: ["d2"], name: "fc_2" });
  g.add("Add", ["d1", "d2"], {}, { outputs: ["s"], name: "add" });
  g.add("Add", ["s", "bias"], {}, { outputs: ["s2"], name: "bias_add" });
  g.add("Relu", ["s2"], {}, { outputs: ["h"], name: "relu_2" });
  g.addInitializer("out.w", f32([16, 7], randn(112, 16, 0.3)));
  g.add("Gemm", ["h", "out.w"], {}, { outputs: ["logits"], name: "output" });
  g.setOutputs(["logits"]);

  const m = importOnnx(toOnnx(g), "two_branch");
  assert.deepEqual(m.inputShape, [3, 12, 10]);
  assert.equal(m.numClasses, 7);
  assert.equal(m.input, "input");
  // The ONNX value "logits" was renamed out of the way and aliased.
  const pre = m.graph.producer("logits")!;
  assert.equal(pre.op, "Identity");
  assert.notEqual(pre.inputs[0], "logits");
  assert.equal(m.layerOutputs.get("output"), pre.inputs[0]);
  assert.deepEqual([...m.layerOutputs.keys()], ["conv_1", "relu_1", "pool_1", "flatten_1", "conv_2", "flatten_2", "fc_1", "fc_2", "add", "bias_add", "relu_2", "output"]);
  assert.deepEqual(m.params.map((p) => p.value), ["w1", "w2", "m1", "m2", "bias", "out.w"]);

  const x = f32([2, 3, 12, 10], randn(720, 17, 1));
  const ref = await runGraph(g, { input: x });
  const got = await runModel(m, x);
  assertClose(got.logits.data as Float32Array, ref.logits.data as Float32Array);
});

test("fixed batch size 1 becomes symbolic when nothing bakes it in", async () => {
  const g = new Graph("fixed");
  g.addInput("x", "float32", [1, 1, 6, 6]);
  g.addInitializer("w", f32([2, 1, 3, 3], randn(18, 21)));
  g.add("Conv", ["x", "w"], {}, { outputs: ["c"], name: "conv" });
  g.add("Flatten", ["c"], {}, { outputs: ["f"], name: "flat" });
  g.addInitializer("fc", f32([3, 32], randn(96, 22)));
  g.add("Gemm", ["f", "fc"], { transB: attr.int(1) }, { outputs: ["y"], name: "fc" });
  g.setOutputs(["y"]);
  const m = importOnnx(toOnnx(g), "fixed");
  assert.deepEqual(m.graph.inputs[0].shape, ["N", 1, 6, 6]);
  const x = f32([4, 1, 6, 6], randn(144, 23, 1));
  const got = await runModel(m, x);
  assert.deepEqual(got.logits.shape, [4, 3]);
  // Row 2 of the batch equals that image run on its own through the original batch-1 graph.
  const one = f32([1, 1, 6, 6], (x.data as Float32Array).subarray(72, 108));
  const ref = await runGraph(g, { x: one });
  assertClose((got.logits.data as Float32Array).subarray(6, 9), ref.y.data as Float32Array);
});

test("a batch size baked into a Reshape is rejected", () => {
  const g = new Graph("baked");
  g.addInput("x", "float32", [1, 1, 6, 6]);
  g.addInitializer("w", f32([2, 1, 3, 3], randn(18, 21)));
  g.add("Conv", ["x", "w"], {}, { outputs: ["c"], name: "conv" });
  g.addInitializer("shape", i64([2], [1, -1]));
  g.add("Reshape", ["c", "shape"], {}, { outputs: ["f"], name: "reshape" });
  g.addInitializer("fc", f32([3, 32], randn(96, 22)));
  g.add("Gemm", ["f", "fc"], { transB: attr.int(1) }, { outputs: ["y"], name: "fc" });
  g.setOutputs(["y"]);
  assertUserError(() => importOnnx(toOnnx(g), "baked"), "baked", "batch");
});

test("the real CSAW DeepID network survives export and re-import unchanged", async () => {
  const keras = lowerModel(await readKerasModel(fixture("thirdparty/keras24_functional_deepid.h5")));
  const m = importOnnx(toOnnx(keras.graph), "deepid");
  assert.deepEqual(m.inputShape, [3, 55, 47]);
  assert.equal(m.numClasses, 1283);
  assert.deepEqual(new Set(m.params.map((p) => p.value)), new Set(keras.params.map((p) => p.value)));
  assert.equal([...m.layerOutputs.values()].filter((v) => m.graph.producer(v)?.op === "Conv").length, 4);
  const x = f32([2, 3, 55, 47], randn(2 * 3 * 55 * 47, 61, 0.5).map((v) => v + 0.5));
  const ref = await runGraph(keras.graph, { input: x }, [keras.logits]);
  const got = await runModel(m, x);
  assertClose(got.logits.data as Float32Array, ref[keras.logits].data as Float32Array, 1e-6);
});

// ---- hand-written files: other opsets and encodings ---------------------------------------------------

test("hand-written opset-11 NHWC model: float_data, Constant node, ReduceSum/Unsqueeze axes attributes, SAME padding", async () => {
  const W = randn(4 * 3 * 3 * 3, 31);
  const B = randn(4, 32);
  const W2 = randn(12 * 5, 33);
  const B2 = randn(5, 34);
  const bytes = handModel(11, {
    nodes: [
      node("Transpose", ["image"], ["nchw"], "to_nchw", [aInts("perm", [0, 3, 1, 2])]),
      node("Conv", ["nchw", "W", "B"], ["conv"], "conv2d", [aString("auto_pad", "SAME_UPPER"), aInts("strides", [2, 2]), aInts("kernel_shape", [3, 3], false)]),
      node("Relu", ["conv"], ["act"], "relu"),
      node("ReduceSum", ["act"], ["rsum"], "rsum", [aInts("axes", [3], false), aInt("keepdims", 0)]),
      node("Unsqueeze", ["rsum"], ["unsq"], "unsq", [aInts("axes", [1], false)]),
      node("Flatten", ["unsq"], ["flat"], "flatten"),
      node("Constant", [], ["W2"], "w2_const", [aTensor("value", floatTensor("", [12, 5], W2))]),
      node("MatMul", ["flat", "W2"], ["mm"], "dense"),
      node("Add", ["mm", "B2"], ["z"], "dense_bias"),
      node("Softmax", ["z"], ["prob"], "softmax"),
      node("Identity", ["prob"], ["out"], "identity"),
    ],
    // Old-style files also list initializers among the graph inputs.
    initializers: [floatTensor("W", [4, 3, 3, 3], W), floatTensor("B", [4], B), floatTensor("B2", [5], B2, true)],
    inputs: [valueInfo("image", ["unk__12", 6, 6, 3]), valueInfo("W", [4, 3, 3, 3]), valueInfo("B", [4])],
    outputs: [valueInfo("out", ["unk__12", 5])],
  });
  const m = importOnnx(bytes, "keras_like");
  assert.deepEqual(m.inputShape, [3, 6, 6]);
  assert.deepEqual(m.graph.inputs.map((i) => [i.name, i.shape]), [["input", ["N", 3, 6, 6]]]);
  assert.equal(m.numClasses, 5);
  assert.equal(m.graph.producer("logits")!.inputs[0], "z");
  assert.deepEqual(m.graph.shape("conv"), ["N", 4, 3, 3]);
  assert.deepEqual(m.params.map((p) => p.value), ["W", "B", "W2", "B2"]);
  assert.deepEqual([...m.layerOutputs.keys()], ["conv2d", "relu", "flatten", "dense", "dense_bias", "softmax"]);
  // The old axes attributes became opset-17 inputs.
  assert.equal(m.graph.nodes.find((n) => n.op === "ReduceSum")!.inputs.length, 2);
  assert.equal(m.graph.nodes.find((n) => n.op === "Unsqueeze")!.inputs.length, 2);

  // onnxruntime runs the original opset-11 file on NHWC data; the import on the same images in NCHW.
  const shape = [2, 3, 6, 6];
  const x = f32(shape, randn(216, 35, 1));
  const ref = await runBytes(bytes, { image: { dtype: "float32", shape: [2, 6, 6, 3], data: toNhwc(x.data as Float32Array, shape) } });
  const got = await runModel(m, x, ["act"]);
  assertClose(softmaxRows(got.logits), ref.out.data as Float32Array);
  assert.deepEqual(got.act.shape, [2, 4, 3, 3]);
});

test("hand-written opset-8 model: Pad/Clip/Slice/Squeeze attributes, Dropout ratio, BatchNormalization spatial", async () => {
  const INT64_MAX = 2n ** 63n - 1n;
  const bytes = handModel(8, {
    nodes: [
      node("Pad", ["x"], ["padded"], "pad", [aInts("pads", [0, 0, 1, 1, 0, 0, 1, 1]), aFloat("value", 0.5)]),
      node("Conv", ["padded", "cw"], ["c"], "conv"),
      node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], "bn", [aFloat("epsilon", 1e-3), aInt("spatial", 1)]),
      node("Clip", ["bn"], ["clip"], "relu6", [aFloat("min", 0), aFloat("max", 0.6)]),
      node("Dropout", ["clip"], ["drop", "mask"], "dropout", [aFloat("ratio", 0.3)]),
      node("MaxPool", ["drop"], ["pool"], "pool", [aInts("kernel_shape", [2, 2]), aInts("strides", [2, 2])]),
      node("Slice", ["pool"], ["sl"], "slice", [aInts("starts", [1]), aInts("ends", [INT64_MAX]), aInts("axes", [2])]),
      node("ReduceMean", ["sl"], ["rm"], "mean", [aInts("axes", [3])]),
      node("Squeeze", ["rm"], ["sq"], "squeeze", [aInts("axes", [3])]),
      node("Flatten", ["sq"], ["flat"], "flatten"),
      node("Gemm", ["flat", "gw", "gb"], ["y"], "fc", [aInt("transB", 1)]),
    ],
    initializers: [
      floatTensor("cw", [3, 1, 3, 3], randn(27, 41)),
      floatTensor("scale", [3], [1.5, 0.5, 2]),
      floatTensor("bias", [3], [0.1, -0.2, 0.3]),
      floatTensor("mean", [3], [0.05, -0.1, 0]),
      floatTensor("var", [3], [0.9, 1.1, 2]),
      floatTensor("gw", [4, 9], randn(36, 42)),
      floatTensor("gb", [4], randn(4, 43)),
    ],
    inputs: [valueInfo("x", [null, 1, 8, 8])],
    outputs: [valueInfo("y", [null, 4])],
  });
  const m = importOnnx(bytes, "opset8");
  assert.equal(m.numClasses, 4);
  assert.deepEqual(m.graph.shape("sl"), ["N", 3, 3, 4]);
  assert.ok(!m.graph.nodes.some((n) => n.op === "Dropout"), "Dropout became Identity");
  assert.ok(!m.graph.nodes.find((n) => n.op === "BatchNormalization")!.attrs.spatial, "spatial dropped");
  // The running statistics are not trainable.
  assert.deepEqual(m.params.map((p) => p.value), ["cw", "scale", "bias", "gw", "gb"]);
  const x = f32([3, 1, 8, 8], randn(192, 44, 1));
  const ref = await runBytes(bytes, { x });
  const got = await runModel(m, x);
  assertClose(got.logits.data as Float32Array, ref.y.data as Float32Array);
});

test("hand-written opset-18 model: ReduceMean and Pad with axes inputs", async () => {
  const bytes = handModel(18, {
    nodes: [
      node("Pad", ["x", "pads", "", "pad_axes"], ["padded"], "pad"),
      node("Conv", ["padded", "cw"], ["c"], "conv"),
      node("ReduceMean", ["c", "axes"], ["y"], "gap", [aInt("keepdims", 0)]),
    ],
    initializers: [int64Tensor("pads", [1, 2, 1, 0]), int64Tensor("pad_axes", [2, -1]), int64Tensor("axes", [2, 3]), floatTensor("cw", [6, 1, 3, 3], randn(54, 51))],
    inputs: [valueInfo("x", ["batch", 1, 7, 7])],
    outputs: [valueInfo("y", ["batch", 6])],
  });
  const m = importOnnx(bytes, "opset18");
  assert.equal(m.numClasses, 6);
  assert.deepEqual(m.graph.shape("padded"), ["N", 1, 9, 9]);
  assert.deepEqual(m.graph.nodes.find((n) => n.op === "ReduceMean")!.attrs.axes, attr.ints([2, 3]));
  // The axes inputs were folded into attributes/pads; the originals are gone.
  assert.ok(!m.graph.initializers.has("axes") && !m.graph.initializers.has("pad_axes"));
  const x = f32([2, 1, 7, 7], randn(98, 52, 1));
  const ref = await runBytes(bytes, { x });
  const got = await runModel(m, x);
  assertClose(got.logits.data as Float32Array, ref.y.data as Float32Array);
});

test("opset-11 Softmax over several axes is rejected rather than misread", () => {
  const bytes = handModel(11, {
    nodes: [node("Conv", ["x", "w"], ["c"], "conv"), node("Softmax", ["c"], ["y"], "sm")],
    initializers: [floatTensor("w", [4, 1, 3, 3], randn(36, 1))],
    inputs: [valueInfo("x", ["N", 1, 6, 6])],
    outputs: [valueInfo("y", ["N", 4, 4, 4])],
  });
  assertUserError(() => importOnnx(bytes, "sm"), '"sm"', "Softmax", "opset-11");
});

// ---- errors -------------------------------------------------------------------------------------------

test("garbage bytes, empty bytes and a graph without nodes give a UserError", () => {
  assertUserError(() => importOnnx(new TextEncoder().encode("this is not an ONNX model\n"), "text"), "text", "not an ONNX model");
  assertUserError(() => importOnnx(new Uint8Array(0), "empty"), "empty", "no graph");
  for (let seed = 1; seed <= 30; seed++) {
    const r = rng(seed);
    const b = Uint8Array.from({ length: 64 + seed * 7 }, () => Math.floor(r() * 256));
    assert.throws(() => importOnnx(b, `random${seed}`), UserError);
  }
  // A truncated real model.
  const good = toOnnx(smallCnn());
  assert.throws(() => importOnnx(good.subarray(0, good.length - 100), "cut"), UserError);
  const noNodes = handModel(17, { nodes: [], inputs: [valueInfo("x", ["N", 1, 6, 6])], outputs: [valueInfo("x", ["N", 1, 6, 6])] });
  assertUserError(() => importOnnx(noNodes, "hollow"), "no nodes");
});

test("unsupported ops, foreign domains and unsupported opsets are named", () => {
  const lstm = handModel(17, {
    nodes: [
      node("Flatten", ["x"], ["f"], "flat"),
      node("LSTM", ["f", "W", "R"], ["y"], "lstm_1", [aInt("hidden_size", 4), aStrings("activations", ["Sigmoid", "Tanh", "Tanh"])]),
    ],
    initializers: [floatTensor("W", [1, 16, 36], randn(576, 1)), floatTensor("R", [1, 16, 4], randn(64, 2))],
    inputs: [valueInfo("x", ["N", 1, 6, 6])],
    outputs: [valueInfo("y", ["N", 4])],
  });
  assertUserError(() => importOnnx(lstm, "rnn"), "lstm_1", "LSTM");

  const foreign = handModel(17, {
    nodes: [node("FusedConv", ["x", "w"], ["y"], "fused", [], "com.microsoft")],
    initializers: [floatTensor("w", [4, 1, 6, 6], randn(144, 1))],
    inputs: [valueInfo("x", ["N", 1, 6, 6])],
    outputs: [valueInfo("y", ["N", 4, 1, 1])],
  });
  assertUserError(() => importOnnx(foreign, "ms"), "fused", "FusedConv", "com.microsoft");

  const conv = (opset: number) => handModel(opset, {
    nodes: [node("Conv", ["x", "w"], ["y"], "conv")],
    initializers: [floatTensor("w", [4, 1, 6, 6], randn(144, 1))],
    inputs: [valueInfo("x", ["N", 1, 6, 6])],
    outputs: [valueInfo("y", ["N", 4, 1, 1])],
  });
  assertUserError(() => importOnnx(conv(6), "old"), "opset 6");
  assertUserError(() => importOnnx(conv(99), "future"), "opset 99");
  // The same graph at a supported opset imports; [N,4,1,1] is flattened to logits [N,4].
  const m = importOnnx(conv(13), "ok");
  assert.equal(m.numClasses, 4);
  assert.deepEqual(m.graph.shape("logits").slice(1), [4]);
});

test("the input/output contract is checked", () => {
  const two = handModel(17, {
    nodes: [node("Add", ["a", "b"], ["y"], "add")],
    inputs: [valueInfo("a", ["N", 1, 6, 6]), valueInfo("b", ["N", 1, 6, 6])],
    outputs: [valueInfo("y", ["N", 1, 6, 6])],
  });
  assertUserError(() => importOnnx(two, "two"), "exactly one input", '"a"', '"b"');
  const ints = handModel(17, {
    nodes: [node("Cast", ["x"], ["y"], "cast", [aInt("to", 1)])],
    inputs: [valueInfo("x", ["N", 1, 6, 6], 7)],
    outputs: [valueInfo("y", ["N", 1, 6, 6])],
  });
  assertUserError(() => importOnnx(ints, "ints"), '"x"', "INT64");
  const spatial = handModel(17, {
    nodes: [node("Relu", ["x"], ["y"], "relu")],
    inputs: [valueInfo("x", ["N", 1, 6, 6])],
    outputs: [valueInfo("y", ["N", 1, 6, 6])],
  });
  assertUserError(() => importOnnx(spatial, "img2img"), '"y"', "[N, classes]");
  const flat = handModel(17, {
    nodes: [node("Relu", ["x"], ["y"], "relu")],
    inputs: [valueInfo("x", ["N", 784])],
    outputs: [valueInfo("y", ["N", 784])],
  });
  assertUserError(() => importOnnx(flat, "mlp"), '"x"', "[N, C, H, W]");
  const empty = handModel(17, {
    nodes: [node("Relu", ["x"], ["y"], "relu")],
    inputs: [valueInfo("x", ["N", 1, 0, 6])],
    outputs: [valueInfo("y", ["N", 6])],
  });
  assertUserError(() => importOnnx(empty, "empty"), '"x"', "[N,1,0,6]", "positive sizes");
  const symbolic = handModel(17, {
    nodes: [node("Relu", ["x"], ["y"], "relu")],
    inputs: [valueInfo("x", ["N", 1, "H", 6])],
    outputs: [valueInfo("y", ["N", 6])],
  });
  assertUserError(() => importOnnx(symbolic, "symbolic"), '"x"', "only the batch dim may be symbolic");
  // A Gemm whose bias does not fit its output: refused at import, not by onnxruntime at run time.
  const gemm = handModel(17, {
    nodes: [node("Flatten", ["x"], ["f"], "flat"), node("Gemm", ["f", "w", "b"], ["y"], "fc", [aInt("transB", 1)])],
    inputs: [valueInfo("x", ["N", 1, 2, 2])],
    outputs: [valueInfo("y", ["N", 3])],
    initializers: [floatTensor("w", [3, 4], randn(12, 1)), floatTensor("b", [4], randn(4, 2))],
  });
  assertUserError(() => importOnnx(gemm, "gemm"), '"fc"', "bias of shape [4] does not broadcast to the output [N,3]");
});

test("loadOnnxModel reads a file and reports a missing one", async () => {
  const dir = await mkdtemp(join(tmpdir(), "onnx-import-"));
  try {
    const path = join(dir, "tiny_cnn.onnx");
    await writeFile(path, toOnnx(smallCnn()));
    const m = await loadOnnxModel(path);
    assert.equal(m.name, "tiny_cnn");
    assert.equal(m.numClasses, 5);
    const missing = join(dir, "nope.onnx");
    await assert.rejects(loadOnnxModel(missing), (e: unknown) => e instanceof UserError && e.message.includes(missing));
    const junk = join(dir, "junk.onnx");
    await writeFile(junk, "junk junk junk");
    await assert.rejects(loadOnnxModel(junk), (e: unknown) => e instanceof UserError && e.message.includes(junk));
  } finally {
    await rm(dir, { recursive: true });
  }
});
