// Every gradient rule against central finite differences computed in float64 by the reference interpreter.
import assert from "node:assert/strict";
import { test } from "node:test";
import { backward, type ConvGradForms } from "./autodiff.js";
import { numericGradient, relError } from "../test/gradcheck.js";
import { attr, Graph, tensor, type Attrs, type TensorData } from "./ir.js";
import { softmaxCrossEntropy } from "./losses.js";
import { Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";

const rand = mulberry32(1234);
const randn = (n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
const numel = (s: number[]) => s.reduce((p, q) => p * q, 1);

interface Case {
  name: string;
  /** Graph inputs (differentiated) with shapes; values are random unless given. */
  inputs: Record<string, number[] | { shape: number[]; data: Float32Array }>;
  /** Builds the op(s); returns the output value. */
  build: (g: Graph, x: Record<string, string>) => string;
  /** Inputs not to differentiate (e.g. targets). */
  constantInputs?: string[];
}

/** loss = Σ y·R with fixed random R, so every output element carries a distinct weight. */
async function check(c: Case, convForms?: ConvGradForms): Promise<void> {
  const g = new Graph(c.name);
  const feeds: Record<string, TensorData> = {};
  const names: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.inputs)) {
    const shape = Array.isArray(v) ? v : v.shape;
    names[k] = g.addInput(k, "float32", shape);
    feeds[k] = tensor("float32", shape, Array.isArray(v) ? randn(numel(shape)) : v.data);
  }
  const y = c.build(g, names);
  const ys = g.staticShape(y);
  const r = g.constant(tensor("float32", ys, randn(numel(ys))));
  const loss = g.op("ReduceSum", [g.op("Mul", [y, r])], { keepdims: attr.int(0) });
  const wrt = Object.keys(names).filter((k) => !c.constantInputs?.includes(k));
  const fwd = g.clone();
  fwd.setOutputs([loss]);
  const grads = backward(g, loss, wrt, { convForms });
  g.setOutputs([...grads.values()]);
  const session = await Session.create(g);
  const out = await session.run(feeds);
  await session.release();
  for (const w of wrt) {
    const analytic = out[grads.get(w)!].data as Float32Array;
    const numeric = numericGradient(fwd, feeds, loss, w);
    const err = relError(analytic, numeric);
    assert.ok(err <= 1e-3, `${c.name}: d/d${w} relative error ${err.toExponential(2)}`);
  }
}

const conv = (attrs: Attrs) => (g: Graph, x: Record<string, string>) => g.op("Conv", [x.x, x.w, x.b], attrs);

const CASES: Case[] = [
  { name: "Conv valid", inputs: { x: [2, 3, 7, 6], w: [4, 3, 3, 2], b: [4] }, build: conv({}) },
  {
    name: "Conv stride 2 pads",
    inputs: { x: [2, 2, 8, 7], w: [3, 2, 3, 3], b: [3] },
    build: conv({ strides: attr.ints([2, 2]), pads: attr.ints([1, 0, 1, 1]) }),
  },
  { name: "Conv dilation 2", inputs: { x: [1, 2, 7, 7], w: [2, 2, 2, 2], b: [2] }, build: conv({ dilations: attr.ints([2, 2]) }) },
  { name: "Conv grouped (2 groups)", inputs: { x: [2, 4, 6, 5], w: [6, 2, 3, 2], b: [6] }, build: conv({ group: attr.int(2), pads: attr.ints([1, 0, 1, 1]) }) },
  {
    name: "Conv depthwise stride 2",
    inputs: { x: [2, 3, 7, 6], w: [3, 1, 3, 3], b: [3] },
    build: conv({ group: attr.int(3), strides: attr.ints([2, 2]), pads: attr.ints([1, 1, 1, 1]) }),
  },
  {
    name: "Conv depthwise multiplier 2, dilation 2",
    inputs: { x: [1, 2, 7, 7], w: [4, 1, 2, 2], b: [4] },
    build: conv({ group: attr.int(2), dilations: attr.ints([2, 2]) }),
  },
  // Stride 1 takes the flipped-kernel Conv input gradient; ungrouped ones the per-tap Gemm weight gradient.
  { name: "Conv 3x3 stride 1 pad 1 (ResNet body)", inputs: { x: [2, 3, 6, 5], w: [4, 3, 3, 3], b: [4] }, build: conv({ pads: attr.ints([1, 1, 1, 1]) }) },
  { name: "Conv 1x1 stride 2 (ResNet shortcut)", inputs: { x: [2, 3, 7, 6], w: [5, 3, 1, 1], b: [5] }, build: conv({ strides: attr.ints([2, 2]) }) },
  { name: "Conv stride 1, asymmetric pads, dilation 2", inputs: { x: [1, 2, 7, 6], w: [3, 2, 3, 2], b: [3] }, build: conv({ dilations: attr.ints([2, 2]), pads: attr.ints([2, 0, 1, 1]) }) },
  // A pad wider than the kernel reaches would be a negative pad in the flipped form: the ConvTranspose path.
  { name: "Conv 1x1 with pad 1", inputs: { x: [2, 2, 4, 5], w: [3, 2, 1, 1], b: [3] }, build: conv({ pads: attr.ints([1, 1, 1, 1]) }) },
  { name: "Conv depthwise stride 1 pad 1", inputs: { x: [2, 3, 5, 5], w: [3, 1, 3, 3], b: [3] }, build: conv({ group: attr.int(3), pads: attr.ints([1, 1, 1, 1]) }) },
  {
    name: "MaxPool 2x2 floor",
    inputs: { x: [2, 3, 7, 5] },
    build: (g, x) => g.op("MaxPool", [x.x], { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]) }),
  },
  {
    name: "MaxPool 3x3 stride 2 overlapping, padded",
    inputs: { x: [1, 2, 7, 6] },
    build: (g, x) => g.op("MaxPool", [x.x], { kernel_shape: attr.ints([3, 3]), strides: attr.ints([2, 2]), pads: attr.ints([1, 1, 1, 1]) }),
  },
  {
    name: "AveragePool padded, count_include_pad 0",
    inputs: { x: [2, 2, 6, 5] },
    build: (g, x) => g.op("AveragePool", [x.x], { kernel_shape: attr.ints([3, 2]), strides: attr.ints([2, 2]), pads: attr.ints([1, 0, 1, 1]) }),
  },
  { name: "GlobalAveragePool", inputs: { x: [2, 3, 4, 5] }, build: (g, x) => g.op("GlobalAveragePool", [x.x]) },
  { name: "Relu", inputs: { x: [3, 7] }, build: (g, x) => g.op("Relu", [x.x]) },
  { name: "Sigmoid", inputs: { x: [3, 7] }, build: (g, x) => g.op("Sigmoid", [x.x]) },
  { name: "Tanh", inputs: { x: [3, 7] }, build: (g, x) => g.op("Tanh", [x.x]) },
  { name: "Exp Neg", inputs: { x: [3, 4] }, build: (g, x) => g.op("Neg", [g.op("Exp", [x.x])]) },
  { name: "Abs", inputs: { x: [4, 5] }, build: (g, x) => g.op("Abs", [x.x]) },
  {
    name: "Log Sqrt Reciprocal",
    inputs: { x: { shape: [3, 4], data: Float32Array.from({ length: 12 }, () => 0.5 + rand()) } },
    build: (g, x) => g.op("Add", [g.op("Log", [x.x]), g.op("Add", [g.op("Sqrt", [x.x]), g.op("Reciprocal", [x.x])])]),
  },
  {
    name: "Pow (constant exponent)",
    inputs: { x: { shape: [3, 4], data: Float32Array.from({ length: 12 }, () => 0.5 + rand()) } },
    build: (g, x) => g.op("Pow", [x.x, g.scalar(2.5)]),
  },
  { name: "MatMul", inputs: { x: [4, 6], w: [6, 3] }, build: (g, x) => g.op("MatMul", [x.x, x.w]) },
  {
    name: "Gemm transA transB alpha beta",
    inputs: { a: [5, 4], b: [3, 5], c: [3] },
    build: (g, x) => g.op("Gemm", [x.a, x.b, x.c], { transA: attr.int(1), transB: attr.int(1), alpha: attr.float(0.7), beta: attr.float(1.3) }),
  },
  { name: "Gemm plain", inputs: { a: [4, 5], b: [5, 3], c: [1, 3] }, build: (g, x) => g.op("Gemm", [x.a, x.b, x.c]) },
  { name: "Add broadcast [N,C,H,W]+[1,C,1,1]", inputs: { a: [2, 3, 4, 2], b: [1, 3, 1, 1] }, build: (g, x) => g.op("Add", [x.a, x.b]) },
  { name: "Sub broadcast rank", inputs: { a: [2, 3, 4], b: [4] }, build: (g, x) => g.op("Sub", [x.a, x.b]) },
  { name: "Mul broadcast", inputs: { a: [3, 1, 5], b: [1, 4, 5] }, build: (g, x) => g.op("Mul", [x.a, x.b]) },
  {
    name: "Div",
    inputs: { a: [3, 4], b: { shape: [3, 4], data: Float32Array.from({ length: 12 }, () => (rand() < 0.5 ? -1 : 1) * (0.5 + rand())) } },
    build: (g, x) => g.op("Div", [x.a, x.b]),
  },
  { name: "Concat axis 1", inputs: { a: [2, 3, 2, 2], b: [2, 1, 2, 2] }, build: (g, x) => g.op("Concat", [x.a, x.b], { axis: attr.int(1) }) },
  { name: "Flatten", inputs: { x: [2, 3, 2, 2] }, build: (g, x) => g.op("Flatten", [x.x], { axis: attr.int(1) }) },
  { name: "Reshape", inputs: { x: [2, 12] }, build: (g, x) => g.op("Reshape", [x.x, g.ints([2, 3, 4])]) },
  { name: "Transpose NHWC", inputs: { x: [2, 3, 4, 5] }, build: (g, x) => g.op("Transpose", [x.x], { perm: attr.ints([0, 2, 3, 1]) }) },
  { name: "Pad", inputs: { x: [1, 2, 3, 3] }, build: (g, x) => g.op("Pad", [x.x, g.ints([0, 0, 1, 2, 0, 0, 2, 0])], { mode: attr.string("constant") }) },
  { name: "Slice", inputs: { x: [2, 5, 6] }, build: (g, x) => g.op("Slice", [x.x, g.ints([1, 2]), g.ints([4, 5]), g.ints([1, 2])]) },
  {
    name: "BatchNormalization (inference) scale+bias+input",
    inputs: { x: [2, 3, 4, 4], s: [3], b: [3] },
    build: (g, x) => {
      const mean = g.constant(tensor("float32", [3], randn(3)));
      const v = g.constant(tensor("float32", [3], Float32Array.from([0.5, 1.5, 2.0])));
      return g.op("BatchNormalization", [x.x, x.s, x.b, mean, v], { epsilon: attr.float(1e-3) });
    },
  },
  {
    name: "BatchNormalization (inference) w.r.t. running mean and variance",
    inputs: { x: [2, 3, 4, 4], m: [3], v: { shape: [3], data: Float32Array.from([0.5, 1.5, 2.0]) } },
    build: (g, x) => {
      const s = g.constant(tensor("float32", [3], randn(3)));
      const b = g.constant(tensor("float32", [3], randn(3)));
      return g.op("BatchNormalization", [x.x, s, b, x.m, x.v], { epsilon: attr.float(1e-3) });
    },
  },
  {
    name: "BatchNormalization after a depthwise Conv (MobileNet block)",
    inputs: { x: [2, 3, 6, 6], w: [3, 1, 3, 3], s: [3], b: [3] },
    build: (g, x) => {
      const y = g.op("Conv", [x.x, x.w], { group: attr.int(3), pads: attr.ints([1, 1, 1, 1]) });
      const mean = g.constant(tensor("float32", [3], randn(3)));
      const v = g.constant(tensor("float32", [3], Float32Array.from([0.7, 1.2, 2.5])));
      return g.op("Clip", [g.op("BatchNormalization", [y, x.s, x.b, mean, v]), g.scalar(0), g.scalar(6)]);
    },
  },
  { name: "Dropout (eval)", inputs: { x: [3, 4] }, build: (g, x) => g.op("Dropout", [x.x]) },
  { name: "Softmax", inputs: { x: [3, 6] }, build: (g, x) => g.op("Softmax", [x.x], { axis: attr.int(-1) }) },
  { name: "LogSoftmax", inputs: { x: [3, 6] }, build: (g, x) => g.op("LogSoftmax", [x.x], { axis: attr.int(-1) }) },
  {
    name: "softmax cross-entropy",
    inputs: { z: [4, 5], t: { shape: [4, 5], data: Float32Array.from({ length: 20 }, (_, i) => (i % 5 === Math.floor(i / 5) ? 1 : 0)) } },
    constantInputs: ["t"],
    build: (g, x) => g.op("Unsqueeze", [softmaxCrossEntropy(g, x.z, x.t), g.ints([0])]),
  },
  { name: "ReduceSum axes keepdims 0", inputs: { x: [2, 3, 4] }, build: (g, x) => g.op("ReduceSum", [x.x, g.ints([0, 2])], { keepdims: attr.int(0) }) },
  { name: "ReduceMean", inputs: { x: [2, 3, 4] }, build: (g, x) => g.op("ReduceMean", [x.x], { axes: attr.ints([1]), keepdims: attr.int(1) }) },
  { name: "Unsqueeze Squeeze", inputs: { x: [3, 4] }, build: (g, x) => g.op("Squeeze", [g.op("Unsqueeze", [x.x, g.ints([1])]), g.ints([1])]) },
  {
    name: "Where",
    inputs: { a: [3, 4], b: [3, 4] },
    build: (g, x) => g.op("Where", [g.op("Greater", [x.a, g.scalar(0)]), x.a, x.b]),
  },
  {
    name: "Clip",
    inputs: { x: [4, 5] },
    build: (g, x) => g.op("Clip", [x.x, g.scalar(-0.5), g.scalar(0.5)]),
  },
  { name: "Clip with only a lower bound", inputs: { x: [4, 5] }, build: (g, x) => g.op("Clip", [x.x, g.scalar(-0.2)]) },
  {
    name: "tanh mask blend (Neural Cleanse stamp)",
    inputs: { a: [1, 1, 4, 4], p: [1, 2, 4, 4], img: [3, 2, 4, 4] },
    constantInputs: ["img"],
    build: (g, x) => {
      const m = g.op("Mul", [g.op("Add", [g.op("Tanh", [x.a]), g.scalar(1)]), g.scalar(0.5)]);
      const inv = g.op("Sub", [g.scalar(1), m]);
      return g.op("Add", [g.op("Mul", [inv, x.img]), g.op("Mul", [m, g.op("Sigmoid", [x.p])])]);
    },
  },
];

for (const c of CASES) test(`gradient: ${c.name}`, () => check(c));
// Every Conv case also with the other forms of its gradients (the default, direct, is checked above).
for (const forms of ["plain", "fast", "flip"] as const)
  for (const c of CASES.filter((k) => k.name.startsWith("Conv"))) test(`gradient (${forms} forms): ${c.name}`, () => check(c, forms));

test("a value used twice accumulates both gradient paths", () =>
  check({ name: "fan-out", inputs: { x: [3, 4] }, build: (g, x) => g.op("Mul", [g.op("Relu", [x.x]), g.op("Tanh", [x.x])]) }));

test("the gradient of a value the loss does not reach is an error, or zero when the caller opts in", async () => {
  const build = () => {
    const g = new Graph("unrelated");
    const a = g.addInput("a", "float32", [2]);
    const b = g.addInput("b", "float32", [2]);
    // b reaches the loss only through a comparison, which has no gradient.
    const gate = g.op("Cast", [g.op("Greater", [b, g.scalar(0)])], { to: attr.int(1) });
    return { g, loss: g.op("ReduceSum", [g.op("Add", [a, g.op("Mul", [gate, g.scalar(0)])])], { keepdims: attr.int(0) }) };
  };
  const strict = build();
  assert.throws(() => backward(strict.g, strict.loss, ["a", "b"]), /does not depend on "b"/);
  const { g, loss } = build();
  const grads = backward(g, loss, ["a", "b"], { allowUnreached: true });
  g.setOutputs([...grads.values()]);
  const s = await Session.create(g);
  const out = await s.run({ a: tensor("float32", [2], Float32Array.of(1, 2)), b: tensor("float32", [2], Float32Array.of(3, 4)) });
  await s.release();
  assert.deepEqual([...(out[grads.get("a")!].data as Float32Array)], [1, 1]);
  assert.deepEqual([...(out[grads.get("b")!].data as Float32Array)], [0, 0]);
});

test("asking for a gradient no rule provides (a Clip bound, an integer input) is an error", () => {
  const g = new Graph("clip-bound");
  const x = g.addInput("x", "float32", [3]);
  const lo = g.addInput("lo", "float32", []);
  const loss = g.op("ReduceSum", [g.op("Clip", [x, lo])], { keepdims: attr.int(0) });
  assert.throws(() => backward(g, loss, ["lo"]), /Clip: gradient with respect to input 1/);
  const h = new Graph("int");
  h.addInput("k", "int64", [3]);
  const l2 = h.op("ReduceSum", [h.op("Cast", ["k"], { to: attr.int(1) })], { keepdims: attr.int(0) });
  assert.throws(() => backward(h, l2, ["k"]), /not a float/);
});

test("tiling MaxPool splits the gradient evenly between exact ties", async () => {
  const g = new Graph("ties");
  const x = g.addInput("x", "float32", [1, 1, 2, 4]);
  const y = g.op("MaxPool", [x], { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]) });
  const loss = g.op("ReduceSum", [g.op("Mul", [y, g.constant(tensor("float32", [1, 1, 1, 2], Float32Array.of(1, 3)))])], { keepdims: attr.int(0) });
  const grads = backward(g, loss, ["x"]);
  g.setOutputs([grads.get("x")!]);
  const s = await Session.create(g);
  // Window 1: all four equal (each gets 1/4); window 2: a single max (gets all of 3).
  const out = await s.run({ x: tensor("float32", [1, 1, 2, 4], Float32Array.of(5, 5, 1, 2, 5, 5, 0, 9)) });
  assert.deepEqual([...(out[grads.get("x")!].data as Float32Array)], [0.25, 0.25, 0, 0, 0.25, 0.25, 0, 3]);
});

for (const group of [1, 2]) test(`Conv gradients (group ${group}) with a symbolic batch equal those with a static one`, async () => {
  const x = tensor("float32", [3, 4, 6, 5], randn(3 * 4 * 6 * 5));
  const w = tensor("float32", [4, 4 / group, 3, 3], randn((4 * 4 * 3 * 3) / group));
  const grads = async (batch: number | string) => {
    const g = new Graph("sym");
    g.addInput("x", "float32", [batch, 4, 6, 5]);
    g.addInput("w", "float32", [4, 4 / group, 3, 3]);
    const y = g.op("Conv", ["x", "w"], { group: attr.int(group), pads: attr.ints([1, 1, 1, 1]) });
    const loss = g.op("ReduceSum", [g.op("Mul", [y, y])], { keepdims: attr.int(0) });
    const gr = backward(g, loss, ["x", "w"]);
    g.setOutputs([gr.get("x")!, gr.get("w")!]);
    const s = await Session.create(g);
    try {
      const out = await s.run({ x, w });
      return [out[gr.get("x")!].data as Float32Array, out[gr.get("w")!].data as Float32Array];
    } finally {
      await s.release();
    }
  };
  const [sx, sw] = await grads(3);
  const [nx, nw] = await grads("N");
  assert.ok(relError(nx, sx) < 1e-6 && relError(nw, sw) < 1e-6);
});

test("the gradient of a strided Slice is refused, not silently wrong", () => {
  const g = new Graph("strided");
  const x = g.addInput("x", "float32", [2, 6]);
  const y = g.op("Slice", [x, g.ints([0]), g.ints([6]), g.ints([1]), g.ints([2])]);
  assert.deepEqual(g.shape(y), [2, 3]);
  const loss = g.op("ReduceSum", [y], { keepdims: attr.int(0) });
  assert.throws(() => backward(g, loss, ["x"]), /Slice gradient: only step 1/);
});

test("the four Conv gradient forms give the same values; flip avoids ConvTranspose at stride 1, direct transposes dy once", async () => {
  const x = tensor("float32", [2, 3, 6, 6], randn(2 * 3 * 6 * 6));
  const w = tensor("float32", [4, 3, 3, 3], randn(4 * 3 * 3 * 3));
  const grads = async (convForms: ConvGradForms) => {
    const g = new Graph("forms");
    g.addInput("x", "float32", ["N", 3, 6, 6]);
    g.addInput("w", "float32", [4, 3, 3, 3]);
    const y = g.op("Conv", ["x", "w"], { pads: attr.ints([1, 1, 1, 1]) });
    const loss = g.op("ReduceSum", [g.op("Mul", [y, y])], { keepdims: attr.int(0) });
    const before = g.nodes.length;
    const gr = backward(g, loss, ["x", "w"], { convForms });
    const ops = new Set(g.nodes.slice(before).map((n) => n.op));
    const gemms = g.nodes.slice(before).filter((n) => n.op === "Gemm").length;
    // Whether any weight-gradient Gemm transposes its first operand (dy).
    const transA = g.nodes.slice(before).some((n) => n.op === "Gemm" && n.attrs.transA?.kind === "int" && n.attrs.transA.value === 1);
    g.setOutputs([gr.get("x")!, gr.get("w")!]);
    const s = await Session.create(g);
    try {
      const out = await s.run({ x, w });
      return { ops, gemms, transA, dx: out[gr.get("x")!].data as Float32Array, dw: out[gr.get("w")!].data as Float32Array };
    } finally {
      await s.release();
    }
  };
  const fast = await grads("fast");
  const plain = await grads("plain");
  const flip = await grads("flip");
  const direct = await grads("direct");
  assert.ok(fast.ops.has("ConvTranspose") && fast.ops.has("Gemm"));
  // 3 input channels: below the flipped Conv's minimum, direct's input gradient is ConvTranspose.
  assert.ok(direct.ops.has("ConvTranspose") && direct.gemms === 9 && !direct.transA && flip.transA);
  assert.ok(plain.ops.has("ConvTranspose") && !plain.ops.has("Gemm"));
  assert.ok(!flip.ops.has("ConvTranspose") && flip.ops.has("Gemm"));
  for (const other of [fast, flip, direct]) assert.ok(relError(other.dx, plain.dx) < 1e-5 && relError(other.dw, plain.dw) < 1e-5);
});

test("direct forms: the flipped-kernel input gradient from 64 input channels per group, ConvTranspose below", () => {
  const inputGradOps = (channels: number, group: number) => {
    const g = new Graph("channels");
    g.addInput("x", "float32", ["N", channels, 5, 5]);
    g.addInput("w", "float32", [2 * group, channels / group, 3, 3]);
    const y = g.op("Conv", ["x", "w"], { pads: attr.ints([1, 1, 1, 1]), group: attr.int(group) });
    const loss = g.op("ReduceSum", [y], { keepdims: attr.int(0) });
    const before = g.nodes.length;
    backward(g, loss, ["x"], { convForms: "direct" });
    return new Set(g.nodes.slice(before).map((n) => n.op));
  };
  assert.ok(!inputGradOps(64, 1).has("ConvTranspose"));
  assert.ok(inputGradOps(63, 1).has("ConvTranspose"));
  assert.ok(inputGradOps(128, 2).has("ConvTranspose") === false);
  assert.ok(inputGradOps(128, 4).has("ConvTranspose"));
});
