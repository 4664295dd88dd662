// Every op of the reference interpreter against onnxruntime (float32) on random inputs, plus the gradient checker.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Graph, GraphError, attr, f32, i64, tensor } from "../graph/ir.js";
import type { Attrs, TensorData } from "../graph/ir.js";
import { evaluate } from "./reference.js";
import { numericGradient, relError } from "./gradcheck.js";
import { Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";

const rng = mulberry32;
const rand = rng(1234);
const randn = (shape: number[], lo = -2, hi = 2): TensorData =>
  f32(shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => lo + (hi - lo) * rand()));
const bools = (shape: number[]): TensorData =>
  tensor("bool", shape, Uint8Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (rand() < 0.5 ? 1 : 0)));

const nums = (t: TensorData): number[] => Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));

/**
 * Builds a graph whose inputs are `feeds` (same names, dtypes, shapes), runs it in onnxruntime and in the
 * reference interpreter, and compares every output: floats to |a-b| <= tol * (1 + |b|), everything else exactly.
 */
async function check(feeds: Record<string, TensorData>, build: (g: Graph) => string | string[], tol = 1e-5): Promise<Map<string, TensorData>> {
  const g = new Graph("t");
  for (const [k, v] of Object.entries(feeds)) g.addInput(k, v.dtype, v.shape);
  const built = build(g);
  const outs = Array.isArray(built) ? built : [built];
  g.setOutputs(outs);
  const s = await Session.create(g, { threads: 1 });
  const want = await s.run(feeds);
  await s.release();
  const got = evaluate(g, feeds);
  for (const o of outs) {
    const w = want[o], r = got.get(o)!;
    assert.deepEqual(r.shape, w.shape, `${o}: shape`);
    const isFloat = w.dtype === "float32" || w.dtype === "float64";
    assert.equal(r.dtype, isFloat ? "float64" : w.dtype, `${o}: dtype`);
    const a = nums(r), b = nums(w);
    for (let i = 0; i < b.length; i++) {
      if (isFloat) {
        const ok = (Number.isNaN(a[i]) && Number.isNaN(b[i])) || a[i] === b[i] || Math.abs(a[i] - b[i]) <= tol * (1 + Math.abs(b[i]));
        assert.ok(ok, `${o}[${i}]: reference ${a[i]} vs onnxruntime ${b[i]}`);
      } else assert.equal(a[i], b[i], `${o}[${i}]`);
    }
  }
  return got;
}

const op1 = (op: string, attrs: Attrs = {}) => (g: Graph) => g.op(op, ["x"], attrs);

test("Conv: strides, asymmetric pads, dilations, bias, non-square", async () => {
  await check({ x: randn([2, 3, 7, 9]) }, (g) => {
    const w = g.constant(randn([4, 3, 3, 2]));
    const b = g.constant(randn([4]));
    return [
      g.op("Conv", ["x", w, b], { strides: attr.ints([2, 1]), pads: attr.ints([1, 0, 2, 1]), dilations: attr.ints([1, 2]) }),
      g.op("Conv", ["x", w]),
      g.op("Conv", ["x", g.constant(randn([2, 3, 1, 1]))], { strides: attr.ints([3, 2]) }),
    ];
  });
});

test("ConvTranspose: strides, pads, output_padding, dilations, output_shape", async () => {
  await check({ x: randn([2, 3, 5, 4]) }, (g) => {
    const w = g.constant(randn([3, 2, 3, 3]));
    const b = g.constant(randn([2]));
    return [
      g.op("ConvTranspose", ["x", w, b], { strides: attr.ints([2, 3]), pads: attr.ints([1, 0, 0, 2]), output_padding: attr.ints([1, 0]) }),
      g.op("ConvTranspose", ["x", w], { dilations: attr.ints([2, 1]) }),
      g.op("ConvTranspose", ["x", w, b], { strides: attr.ints([2, 2]), output_shape: attr.ints([10, 8]) }),
      g.op("ConvTranspose", ["x", w], { strides: attr.ints([2, 2]), output_shape: attr.ints([11, 9]) }),
    ];
  });
});

test("Conv grouped and depthwise: strides, pads, dilations, bias", async () => {
  await check({ x: randn([2, 6, 7, 8]) }, (g) => [
    g.op("Conv", ["x", g.constant(randn([4, 3, 3, 2])), g.constant(randn([4]))], { group: attr.int(2), strides: attr.ints([2, 1]), pads: attr.ints([1, 0, 2, 1]) }),
    g.op("Conv", ["x", g.constant(randn([6, 1, 3, 3])), g.constant(randn([6]))], { group: attr.int(6), pads: attr.ints([1, 1, 1, 1]), dilations: attr.ints([2, 1]) }),
    g.op("Conv", ["x", g.constant(randn([12, 2, 1, 1]))], { group: attr.int(3) }),
  ]);
});

test("ConvTranspose grouped: strides, pads, output_padding", async () => {
  await check({ x: randn([2, 6, 4, 5]) }, (g) => [
    g.op("ConvTranspose", ["x", g.constant(randn([6, 2, 3, 3])), g.constant(randn([4]))], { group: attr.int(2), strides: attr.ints([2, 2]), pads: attr.ints([1, 0, 0, 1]), output_padding: attr.ints([1, 0]) }),
    g.op("ConvTranspose", ["x", g.constant(randn([6, 1, 3, 2]))], { group: attr.int(6), dilations: attr.ints([1, 2]) }),
  ]);
});

test("Conv: a group that does not divide the channels is an error", () => {
  const g = new Graph("bad-group");
  g.addInput("x", "float32", [1, 6, 5, 5]);
  assert.throws(() => g.op("Conv", ["x", g.constant(randn([4, 2, 3, 3]))], { group: attr.int(4) }), GraphError);
  assert.throws(() => g.op("Conv", ["x", g.constant(randn([4, 3, 3, 3]))], { group: attr.int(3) }), GraphError);
});

test("MaxPool: ceil_mode, pads, dilations, Indices output (both storage orders)", async () => {
  await check({ x: randn([2, 3, 7, 8]) }, (g) => {
    const outs: string[] = [];
    const cfgs: Attrs[] = [
      { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]) },
      { kernel_shape: attr.ints([3, 2]), strides: attr.ints([2, 2]), pads: attr.ints([1, 0, 1, 1]), ceil_mode: attr.int(1) },
      { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]), ceil_mode: attr.int(1) },
      { kernel_shape: attr.ints([2, 3]), dilations: attr.ints([2, 1]), pads: attr.ints([0, 1, 0, 1]) },
      { kernel_shape: attr.ints([3, 3]), strides: attr.ints([2, 3]), storage_order: attr.int(1) },
    ];
    for (const a of cfgs) outs.push(...g.add("MaxPool", ["x"], a, { outputs: 2 }));
    outs.push(g.op("MaxPool", ["x"], { kernel_shape: attr.ints([3, 3]), strides: attr.ints([1, 2]) }));
    return outs;
  });
  // ceil_mode where the last window would start inside the end padding (it is dropped).
  const cfg: Attrs = { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]), pads: attr.ints([1, 1, 1, 1]), ceil_mode: attr.int(1) };
  const got = await check({ x: randn([1, 2, 5, 6]) }, (g) => [
    ...g.add("MaxPool", ["x"], cfg, { outputs: 2 }),
    g.op("AveragePool", ["x"], { ...cfg, count_include_pad: attr.int(1) }),
    g.op("AveragePool", ["x"], cfg),
  ]);
  assert.deepEqual([...got.values()][0].shape, [1, 2, 3, 4]);
});

test("AveragePool: count_include_pad 0/1, ceil_mode, pads", async () => {
  await check({ x: randn([2, 2, 7, 6]) }, (g) => {
    const outs: string[] = [];
    for (const cip of [0, 1]) {
      outs.push(g.op("AveragePool", ["x"], { kernel_shape: attr.ints([3, 3]), strides: attr.ints([2, 2]), pads: attr.ints([1, 1, 1, 0]), count_include_pad: attr.int(cip) }));
      outs.push(g.op("AveragePool", ["x"], { kernel_shape: attr.ints([3, 2]), strides: attr.ints([2, 2]), pads: attr.ints([1, 0, 1, 1]), ceil_mode: attr.int(1), count_include_pad: attr.int(cip) }));
      outs.push(g.op("AveragePool", ["x"], { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]), ceil_mode: attr.int(1), count_include_pad: attr.int(cip) }));
    }
    outs.push(g.op("AveragePool", ["x"], { kernel_shape: attr.ints([2, 3]) }));
    return outs;
  });
});

test("GlobalAveragePool / GlobalMaxPool", async () => {
  await check({ x: randn([2, 3, 5, 7]) }, (g) => [g.op("GlobalAveragePool", ["x"]), g.op("GlobalMaxPool", ["x"])]);
});

test("unary ops", async () => {
  const x = randn([3, 4, 5], -3, 3);
  for (const op of ["Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs", "Sign", "Identity", "Floor", "Ceil", "Erf"]) {
    await check({ x }, op1(op));
  }
  const pos = randn([3, 4, 5], 0.1, 4);
  for (const op of ["Log", "Sqrt", "Reciprocal"]) await check({ x: pos }, op1(op));
  // Round is half-to-even; include exact halves.
  await check({ x: f32([8], [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, -3.7]) }, op1("Round"));
  await check({ x: f32([4], [-60, -20, 20, 60]) }, op1("Sigmoid"));
});

test("erf matches known values to double precision", () => {
  const g = new Graph("erf");
  g.addInput("x", "float64", [4]);
  g.setOutputs([g.op("Erf", ["x"])]);
  const got = nums(evaluate(g, { x: tensor("float64", [4], Float64Array.of(0.5, 1, -2, 3)) }).get(g.outputs[0].name)!);
  const want = [0.5204998778130465, 0.8427007929497149, -0.9953222650189527, 0.9999779095030014];
  got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-14, `erf: ${v} vs ${want[i]}`));
});

test("Dropout (inference) and its mask", async () => {
  await check({ x: randn([2, 5]) }, (g) => g.add("Dropout", ["x"], {}, { outputs: 2 }));
});

test("Softmax / LogSoftmax on several axes", async () => {
  await check({ x: randn([2, 3, 4], -5, 5) }, (g) => [
    g.op("Softmax", ["x"]),
    g.op("Softmax", ["x"], { axis: attr.int(1) }),
    g.op("LogSoftmax", ["x"]),
    g.op("LogSoftmax", ["x"], { axis: attr.int(0) }),
  ]);
});

test("Clip with min/max inputs, only max, none", async () => {
  await check({ x: randn([3, 5]) }, (g) => [
    g.op("Clip", ["x", g.scalar(-0.5), g.scalar(0.7)]),
    g.op("Clip", ["x", "", g.scalar(0.3)]),
    g.op("Clip", ["x", g.scalar(0.1)]),
    g.op("Clip", ["x"]),
  ]);
});

test("broadcast arithmetic, variadic Sum/Max/Min", async () => {
  const feeds = { a: randn([2, 3, 4, 5]), c: randn([1, 3, 1, 1]), r: randn([4, 5]), p: randn([2, 3, 4, 5], 0.2, 2), s: randn([5]) };
  await check(feeds, (g) => [
    g.op("Add", ["a", "c"]),
    g.op("Sub", ["r", "a"]),
    g.op("Mul", ["c", "r"]),
    g.op("Div", ["a", "p"]),
    g.op("Pow", ["p", "c"]),
    g.op("Pow", ["p", g.scalar(2)]),
    g.op("Max", ["a", "c", "s"]),
    g.op("Min", ["a", "r"]),
    g.op("Sum", ["a", "c", "r"]),
    g.op("Sum", ["s"]),
  ]);
});

test("comparisons, logic, Where", async () => {
  const q = (v: number) => Math.round(v * 2) / 2; // coarse values so Equal hits
  const a = f32([3, 4], nums(randn([3, 4])).map(q));
  const b = f32([4], nums(randn([4])).map(q));
  await check({ a, b, m: bools([3, 4]), n: bools([4]) }, (g) => [
    g.op("Equal", ["a", "b"]),
    g.op("Greater", ["a", "b"]),
    g.op("Less", ["a", "b"]),
    g.op("GreaterOrEqual", ["a", "b"]),
    g.op("LessOrEqual", ["a", "b"]),
    g.op("And", ["m", "n"]),
    g.op("Or", ["m", "n"]),
    g.op("Not", ["m"]),
    g.op("Where", ["n", "a", "b"]),
  ]);
});

test("Cast between float, int64 and bool", async () => {
  const x = f32([6], [-2.7, -0.2, 0, 0.6, 3.5, 7.99]);
  await check({ x }, (g) => {
    const i = g.op("Cast", ["x"], { to: attr.int(7) });
    const b = g.op("Cast", ["x"], { to: attr.int(9) });
    return [i, b, g.op("Cast", [i], { to: attr.int(1) }), g.op("Cast", [b], { to: attr.int(1) }), g.op("Cast", ["x"], { to: attr.int(11) })];
  });
});

test("MatMul and Gemm (alpha, beta, transA, transB, broadcast C)", async () => {
  await check({ x: randn([2, 3, 4, 5]), a: randn([3, 5]), at: randn([5, 3]) }, (g) => {
    const w = g.constant(randn([5, 6]));
    const bt = g.constant(randn([6, 5]));
    return [
      g.op("MatMul", ["x", w]),
      g.op("MatMul", ["a", w]),
      g.op("Gemm", ["a", w, g.constant(randn([6]))]),
      g.op("Gemm", ["at", bt, g.constant(randn([3, 1]))], { alpha: attr.float(0.5), beta: attr.float(-2), transA: attr.int(1), transB: attr.int(1) }),
      g.op("Gemm", ["a", bt], { transB: attr.int(1) }),
    ];
  });
});

test("Flatten, Reshape (0 and -1), Transpose", async () => {
  await check({ x: randn([2, 3, 4, 5]) }, (g) => [
    g.op("Flatten", ["x"]),
    g.op("Flatten", ["x"], { axis: attr.int(0) }),
    g.op("Flatten", ["x"], { axis: attr.int(-1) }),
    g.op("Reshape", ["x", g.ints([0, -1, 5])]),
    g.op("Reshape", ["x", g.ints([4, 0, 10])]),
    g.op("Reshape", ["x", g.ints([0, 0, -1])]),
    g.op("Transpose", ["x"], { perm: attr.ints([0, 2, 3, 1]) }),
    g.op("Transpose", ["x"]),
  ]);
});

test("Concat on several axes", async () => {
  await check({ a: randn([2, 3, 4]), b: randn([2, 1, 4]), c: randn([2, 2, 4]), d: randn([2, 3, 2]) }, (g) => [
    g.op("Concat", ["a", "b", "c"], { axis: attr.int(1) }),
    g.op("Concat", ["a", "d"], { axis: attr.int(-1) }),
    g.op("Concat", ["a", "a"], { axis: attr.int(0) }),
  ]);
});

test("Pad: constant (with/without value, negative pads), reflect, edge", async () => {
  await check({ x: randn([2, 3, 4, 5]) }, (g) => [
    g.op("Pad", ["x", g.ints([0, 0, 1, 2, 0, 0, 2, 1])]),
    g.op("Pad", ["x", g.ints([0, 1, 0, 1, 1, 0, 3, 0]), g.scalar(-1.5)]),
    g.op("Pad", ["x", g.ints([0, 0, -1, 2, 0, 0, 1, -2])]),
    g.op("Pad", ["x", g.ints([0, 0, 2, 3, 0, 0, 3, 1])], { mode: attr.string("reflect") }),
    g.op("Pad", ["x", g.ints([0, 0, 2, 3, 0, 0, 3, 1])], { mode: attr.string("edge") }),
  ]);
});

test("BatchNormalization (inference)", async () => {
  await check({ x: randn([2, 3, 4, 5]) }, (g) => {
    const p = (lo: number, hi: number) => g.constant(randn([3], lo, hi));
    return [g.op("BatchNormalization", ["x", p(0.5, 2), p(-1, 1), p(-1, 1), p(0.1, 2)], { epsilon: attr.float(1e-3) })];
  });
});

test("reductions: ReduceSum (axes input, noop) and attr-axes reductions", async () => {
  await check({ x: randn([2, 3, 4, 5]) }, (g) => [
    g.op("ReduceSum", ["x", g.ints([1, -1])]),
    g.op("ReduceSum", ["x", g.ints([2])], { keepdims: attr.int(0) }),
    g.op("ReduceSum", ["x"]),
    g.op("ReduceSum", ["x"], { keepdims: attr.int(0) }),
    g.op("ReduceMean", ["x"], { axes: attr.ints([2, 3]) }),
    g.op("ReduceMax", ["x"], { axes: attr.ints([1]), keepdims: attr.int(0) }),
    g.op("ReduceMin", ["x"], { axes: attr.ints([0, 2]) }),
    g.op("ReduceL1", ["x"], { axes: attr.ints([-1]) }),
    g.op("ReduceLogSumExp", ["x"], { axes: attr.ints([1]) }),
    g.op("ReduceMean", ["x"]),
  ]);
  // noop_with_empty_axes: Identity; shape inference cannot see that, so compare directly.
  const g = new Graph("noop");
  g.addInput("x", "float32", [2, 3]);
  const y = g.op("ReduceSum", ["x"], { noop_with_empty_axes: attr.int(1) });
  const x = randn([2, 3]);
  const got = evaluate(g, { x }, [y]).get(y)!;
  assert.deepEqual(got.shape, [2, 3]);
  assert.deepEqual(nums(got), nums(x));
});

test("ArgMax: axis, keepdims, select_last_index", async () => {
  const x = f32([2, 3, 4], nums(randn([2, 3, 4])).map((v) => Math.round(v))); // ties
  await check({ x }, (g) => [
    g.op("ArgMax", ["x"], { axis: attr.int(1) }),
    g.op("ArgMax", ["x"], { axis: attr.int(-1), keepdims: attr.int(0) }),
    g.op("ArgMax", ["x"], { axis: attr.int(1), select_last_index: attr.int(1) }),
  ]);
});

test("Shape, ConstantOfShape, Expand, Tile", async () => {
  await check({ x: randn([3, 1]) }, (g) => [
    g.op("Shape", ["x"]),
    g.op("ConstantOfShape", [g.ints([2, 3])], { value: attr.tensor(f32([1], [1.5])) }),
    g.op("ConstantOfShape", [g.ints([4])]),
    g.op("Expand", ["x", g.ints([2, 3, 4])]),
    g.op("Expand", ["x", g.ints([1])]),
    g.op("Tile", ["x", g.ints([2, 3])]),
  ]);
});

test("Unsqueeze, Squeeze", async () => {
  await check({ x: randn([3, 1, 4, 1]) }, (g) => [
    g.op("Unsqueeze", ["x", g.ints([0, -1])]),
    g.op("Squeeze", ["x", g.ints([1])]),
    g.op("Squeeze", ["x"]),
  ]);
});

test("Slice: negative starts/ends, axes, clamping, negative steps (symbolic dim)", async () => {
  await check({ x: randn([4, 5, 6]) }, (g) => [
    g.op("Slice", ["x", g.ints([1, -4]), g.ints([3, 100])]),
    g.op("Slice", ["x", g.ints([-3, 0]), g.ints([-1, 2])], {}),
    g.op("Slice", ["x", g.ints([2]), g.ints([5]), g.ints([-1])]),
    g.op("Slice", ["x", g.ints([0, 1]), g.ints([9, 4]), g.ints([2, 0])]),
  ]);
  // Steps other than 1 only pass IR shape inference on symbolic dims.
  const x = randn([7, 3]);
  const g = new Graph("slice");
  g.addInput("x", "float32", ["N", 3]);
  const outs = [
    g.op("Slice", ["x", g.ints([-1]), g.ints([-100]), g.ints([0]), g.ints([-2])]),
    g.op("Slice", ["x", g.ints([1]), g.ints([6]), g.ints([0]), g.ints([3])]),
    g.op("Slice", ["x", g.ints([5]), g.ints([1]), g.ints([0]), g.ints([-1])]),
  ];
  g.setOutputs(outs);
  const s = await Session.create(g, { threads: 1 });
  const want = await s.run({ x });
  await s.release();
  const got = evaluate(g, { x });
  for (const o of outs) {
    assert.deepEqual(got.get(o)!.shape, want[o].shape);
    assert.deepEqual(nums(got.get(o)!), nums(want[o]));
  }
});

test("ScatterElements (none/add, negative indices) and GatherElements", async () => {
  await check({ d: randn([3, 4]), u: randn([2, 4]), v: randn([3, 2]) }, (g) => {
    const rows = g.constant(i64([2, 4], [0, 2, -1, 1, 1, 0, 0, -3])); // row per (i, j); no repeats per column
    const cols = g.constant(i64([3, 2], [3, 3, 0, -1, 1, 2])); // repeats in row 0 (add)
    return [
      g.op("ScatterElements", ["d", rows, "u"], { axis: attr.int(0) }),
      g.op("ScatterElements", ["d", cols, "v"], { axis: attr.int(1), reduction: attr.string("add") }),
      g.op("GatherElements", ["d", rows], { axis: attr.int(0) }),
      g.op("GatherElements", ["d", cols], { axis: attr.int(-1) }),
    ];
  });
});

test("OneHot: negative indices, axis -1 and 0", async () => {
  await check({ i: i64([2, 3], [0, 3, -1, 2, -4, 1]) }, (g) => {
    const depth = g.constant(i64([], [4]));
    const values = g.constant(f32([2], [-0.5, 2]));
    return [g.op("OneHot", ["i", depth, values]), g.op("OneHot", ["i", depth, values], { axis: attr.int(0) })];
  });
});

test("Constant", async () => {
  await check({ x: randn([2, 2]) }, (g) => [g.op("Add", ["x", g.op("Constant", [], { value: attr.tensor(f32([2], [1, -3])) })])]);
});

test("symbolic batch: shapes come from the feeds", () => {
  const g = new Graph("sym");
  g.addInput("x", "float32", ["N", 2, 3, 3]);
  const y = g.op("Flatten", [g.op("GlobalAveragePool", ["x"])]);
  g.setOutputs([y]);
  for (const n of [1, 4]) {
    const x = randn([n, 2, 3, 3]);
    const out = evaluate(g, { x }).get(y)!;
    assert.deepEqual(out.shape, [n, 2]);
    const xs = nums(x);
    for (let k = 0; k < n * 2; k++) {
      const mean = xs.slice(k * 9, k * 9 + 9).reduce((a, b) => a + b, 0) / 9;
      assert.ok(Math.abs(out.data[k] as number - mean) < 1e-12);
    }
  }
  assert.throws(() => evaluate(g, { x: randn([2, 3, 3, 3]) }), /shape \[2,3,3,3\].*\[N,2,3,3\]/);
  assert.throws(() => evaluate(g, {}), /missing feed for input "x"/);
});

test("an unsupported op throws naming it", () => {
  const g = new Graph("bad");
  g.addInput("x", "float32", [2]);
  g.nodes.push({ op: "Hardmax", name: "h", inputs: ["x"], outputs: ["y"], attrs: {} });
  assert.throws(() => evaluate(g, { x: f32([2], [1, 2]) }, ["y"]), (e: unknown) => e instanceof GraphError && /Hardmax/.test(e.message));
});

test("numericGradient: ReduceSum(Mul(x, x)) gives 2x; initializer with indices; relError", () => {
  const g = new Graph("sq");
  g.addInput("x", "float32", [3, 4]);
  const loss = g.op("ReduceSum", [g.op("Mul", ["x", "x"])], { keepdims: attr.int(0) });
  const x = randn([3, 4], -3, 3);
  const grad = numericGradient(g, { x }, loss, "x");
  const want = nums(x).map((v) => 2 * v);
  assert.ok(relError(grad, want) < 1e-8, `relError ${relError(grad, want)}`);

  // loss = sum(sigmoid(x W)) : dL/dW[k,j] = sum_i x[i,k] s'(z[i,j]); summed (non-scalar) loss output.
  const h = new Graph("lin");
  h.addInput("x", "float32", [3, 4]);
  const wT = randn([4, 2]);
  const w = h.addInitializer("W", wT);
  const z = h.op("Sigmoid", [h.op("MatMul", ["x", w])]);
  const xs = nums(x), ws = nums(wT);
  const indices = [7, 0, 5];
  const g2 = numericGradient(h, { x }, z, "W", { indices });
  const analytic = indices.map((p) => {
    const k = Math.floor(p / 2), j = p % 2;
    let s = 0;
    for (let i = 0; i < 3; i++) {
      let zz = 0;
      for (let q = 0; q < 4; q++) zz += xs[i * 4 + q] * ws[q * 2 + j];
      const sg = 1 / (1 + Math.exp(-zz));
      s += xs[i * 4 + k] * sg * (1 - sg);
    }
    return s;
  });
  assert.equal(g2.length, 3);
  assert.ok(relError(g2, analytic) < 1e-8, `relError ${relError(g2, analytic)}`);
  // A value the loss does not depend on has zero gradient; out-of-range indices are rejected.
  h.addInput("unused", "float32", [2]);
  assert.deepEqual(Array.from(numericGradient(h, { x, unused: f32([2], [1, 2]) }, z, "unused")), [0, 0]);
  assert.throws(() => numericGradient(h, { x }, z, "W", { indices: [8] }), /out of range/);

  assert.ok(Math.abs(relError([1, 2.1], [1, 2]) - 0.05) < 1e-15);
  assert.equal(relError([0, 0], [0, 0]), 0);
  assert.equal(relError([NaN], [1]), Infinity);
});
