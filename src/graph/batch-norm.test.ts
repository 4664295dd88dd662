import assert from "node:assert/strict";
import { test } from "node:test";
import { backward } from "./autodiff.js";
import { useBatchStatistics } from "./batch-norm.js";
import { attr, Graph, tensor, type TensorData } from "./ir.js";
import { numericGradient, relError } from "../test/gradcheck.js";
import { evaluateValues } from "../test/reference.js";
import { Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";

const rand = mulberry32(77);
const randn = (n: number, scale = 1, offset = 0): Float32Array => Float32Array.from({ length: n }, () => offset + (rand() * 2 - 1) * scale);

/** Conv → BatchNormalization (running statistics far from the batch's) → Relu, batch axis symbolic. */
function convBn(): { g: Graph; y: string; feeds: Record<string, TensorData> } {
  const g = new Graph("conv_bn");
  g.addInput("x", "float32", ["N", 2, 5, 5]);
  for (const [k, shape] of [["w", [3, 2, 3, 3]], ["s", [3]], ["b", [3]]] as const) g.addInput(k, "float32", [...shape]);
  const mean = g.addInitializer("running_mean", tensor("float32", [3], Float32Array.from([5, -5, 0])));
  const variance = g.addInitializer("running_var", tensor("float32", [3], Float32Array.from([9, 0.1, 4])));
  const c = g.op("Conv", ["x", "w"], { pads: attr.ints([1, 1, 1, 1]) });
  const y = g.op("Relu", [g.op("BatchNormalization", [c, "s", "b", mean, variance], { epsilon: attr.float(1e-3) })]);
  const feeds = {
    x: tensor("float32", [4, 2, 5, 5], randn(200)),
    w: tensor("float32", [3, 2, 3, 3], randn(54, 0.5)),
    s: tensor("float32", [3], randn(3, 0.5, 1)),
    b: tensor("float32", [3], randn(3, 0.3)),
  };
  return { g, y, feeds };
}

test("batch statistics: every gradient (input, conv weight, scale, bias) matches finite differences with a symbolic batch", async () => {
  const { g, y, feeds } = convBn();
  const stats = useBatchStatistics(g);
  assert.deepEqual(stats.map((s) => [s.mean, s.variance]), [["running_mean", "running_var"]]);
  const r = g.constant(tensor("float32", [4, 3, 5, 5], randn(300)));
  const loss = g.op("ReduceSum", [g.op("Mul", [y, r])], { keepdims: attr.int(0) });
  const fwd = g.clone();
  fwd.setOutputs([loss]);
  const wrt = ["x", "w", "s", "b"];
  const grads = backward(g, loss, wrt);
  g.setOutputs(wrt.map((w) => grads.get(w)!));
  const s = await Session.create(g);
  try {
    const out = await s.run(feeds);
    for (const w of wrt) {
      const err = relError(out[grads.get(w)!].data as Float32Array, numericGradient(fwd, feeds, loss, w));
      assert.ok(err <= 1e-3, `d/d${w}: relative error ${err.toExponential(2)}`);
    }
  } finally {
    await s.release();
  }
});

test("batch statistics: each channel leaves the BatchNorm with the batch's mean removed and unit variance (before scale and bias)", async () => {
  const { g, feeds } = convBn();
  const bn = g.nodes.find((n) => n.op === "BatchNormalization")!;
  const stats = useBatchStatistics(g);
  g.setOutputs([bn.outputs[0], stats[0].batchMean, stats[0].batchVariance]);
  const s = await Session.create(g);
  try {
    const out = await s.run(feeds);
    const z = out[bn.outputs[0]].data as Float32Array;
    const scale = feeds.s.data as Float32Array, bias = feeds.b.data as Float32Array;
    for (let ch = 0; ch < 3; ch++) {
      const v: number[] = [];
      for (let n = 0; n < 4; n++) for (let q = 0; q < 25; q++) v.push((z[(n * 3 + ch) * 25 + q] - bias[ch]) / scale[ch]);
      const m = v.reduce((a, b) => a + b, 0) / v.length;
      const varr = v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length;
      assert.ok(Math.abs(m) < 1e-4, `channel ${ch}: mean ${m}`);
      // epsilon 1e-3 keeps it just under 1.
      const bv = (out[stats[0].batchVariance].data as Float32Array)[ch];
      assert.ok(Math.abs(varr - bv / (bv + 1e-3)) < 1e-4, `channel ${ch}: variance ${varr}`);
    }
  } finally {
    await s.release();
  }
});

test("batch statistics: a graph without BatchNormalization is left alone; one already in training mode is refused", () => {
  const g = new Graph("plain");
  g.addInput("x", "float32", ["N", 3]);
  g.setOutputs([g.op("Relu", ["x"])]);
  assert.deepEqual(useBatchStatistics(g), []);
  const { g: t } = convBn();
  t.nodes.find((n) => n.op === "BatchNormalization")!.attrs.training_mode = attr.int(1);
  assert.throws(() => useBatchStatistics(t), /already in training mode/);
});

test("batch statistics: onnxruntime's training-mode node and the float64 reference agree on y and the running statistics (biased variance, momentum)", async () => {
  const { g, y, feeds } = convBn();
  const bn = g.nodes.find((n) => n.op === "BatchNormalization")!;
  const [stat] = useBatchStatistics(g);
  // The rewrite's momentum 0 makes the outputs the batch's statistics; 0.9 checks the update rule itself.
  for (const momentum of [0, 0.9]) {
    bn.attrs.momentum = attr.float(momentum);
    g.setOutputs([y, stat.batchMean, stat.batchVariance]);
    const ref = evaluateValues(g, feeds, [y, stat.batchMean, stat.batchVariance]);
    const s = await Session.create(g);
    try {
      const out = await s.run(feeds);
      for (const v of [y, stat.batchMean, stat.batchVariance]) {
        const err = relError(out[v].data as Float32Array, ref.get(v)!.data);
        assert.ok(err < 1e-5, `momentum ${momentum}, ${v}: relative error ${err.toExponential(2)}`);
      }
    } finally {
      await s.release();
    }
  }
});

test("batch statistics: a loss that reads the batch statistics outputs is refused (no rule for them), as is a training-mode node with momentum", () => {
  const { g, y } = convBn();
  const bn = g.nodes.find((n) => n.op === "BatchNormalization")!;
  const [stat] = useBatchStatistics(g);
  const viaStats = g.op("Add", [g.op("ReduceSum", [y], { keepdims: attr.int(0) }), g.op("ReduceSum", [stat.batchMean], { keepdims: attr.int(0) })]);
  assert.throws(() => backward(g.clone(), viaStats, ["x"]), /output 1 .* of BatchNormalization .*only its first output is differentiable/);
  const loss = g.op("ReduceSum", [y], { keepdims: attr.int(0) });
  bn.attrs.momentum = attr.float(0.9);
  assert.throws(() => backward(g, loss, ["x"]), /need momentum 0/);
});
