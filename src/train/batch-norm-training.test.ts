import assert from "node:assert/strict";
import { test } from "node:test";
import { attr, Graph, tensor } from "../graph/ir.js";
import { memoryDataset } from "../io/dataset.js";
import { forEachBatch, forwardGraph, type BatchSource } from "../model/forward.js";
import { withSession } from "../runtime/session.js";
import type { Model } from "../model/model.js";
import { mulberry32 } from "../util/random.js";
import { foldBack, foldedConvs, prepareBatchNorm } from "./batch-norm-training.js";
import { train } from "./trainer.js";

const rand = mulberry32(11);
const randn = (n: number, scale = 1, offset = 0) => Float32Array.from({ length: n }, () => offset + (rand() * 2 - 1) * scale);

/** An exported-looking net with no BatchNorm left: Conv(+bias) → Relu → Conv(+bias) → GAP → Gemm, 3 classes. */
function foldedNet(): Model {
  const g = new Graph("folded");
  g.addInput("input", "float32", ["N", 2, 6, 6]);
  const p = (name: string, shape: number[], data: Float32Array) => g.addInitializer(name, tensor("float32", shape, data));
  const w1 = p("w1", [4, 2, 3, 3], randn(72, 0.8)), b1 = p("b1", [4], randn(4, 2, 1));
  const w2 = p("w2", [5, 4, 3, 3], randn(180, 0.4)), b2 = p("b2", [5], randn(5, 3));
  const wf = p("wf", [3, 5], randn(15)), bf = p("bf", [3], randn(3, 0.1));
  const c1 = g.op("Conv", ["input", w1, b1], { pads: attr.ints([1, 1, 1, 1]) }, "c1");
  const c2 = g.op("Conv", [g.op("Relu", [c1]), w2, b2], { pads: attr.ints([1, 1, 1, 1]) }, "c2");
  const f = g.op("Flatten", [g.op("GlobalAveragePool", [g.op("Relu", [c2])])], { axis: attr.int(1) });
  const logits = g.op("Gemm", [f, wf, bf], { transB: attr.int(1) }, "logits");
  g.setOutputs([logits]);
  const params = ["w1", "b1", "w2", "b2", "wf", "bf"].map((value) => ({ value, layer: "", weight: "" }));
  return { name: "folded", graph: g, input: "input", logits, inputShape: [2, 6, 6], numClasses: 3, layerOutputs: new Map([["c1", c1], ["c2", c2]]), params, origin: "onnx" };
}

async function predictLogits(m: Model, data: BatchSource): Promise<Float32Array> {
  const out = new Float32Array(data.size * m.numClasses);
  await withSession(forwardGraph(m), (s) => forEachBatch(s, data, (o, start) => out.set(o[m.logits].data as Float32Array, start * m.numClasses), { input: m.input }));
  return out;
}

const images = (n: number) => memoryDataset("images", [2, 6, 6], randn(n * 72, 1, 0.5), Int32Array.from({ length: n }, (_, i) => i % 3));

test("foldBack: conv then BatchNorm equals the folded conv", () => {
  // One output channel, 2 weights: y = s·(w·x + b − μ)/√(σ²+ε) + t.
  const f = foldBack(Float32Array.of(2, -1), Float32Array.of(0.5), Float32Array.of(3), Float32Array.of(0.25), Float32Array.of(1), Float32Array.of(4), 0);
  const x = [0.3, -0.7];
  const direct = (3 * (2 * x[0] - 1 * x[1] + 0.5 - 1)) / 2 + 0.25;
  assert.ok(Math.abs(f.weight[0] * x[0] + f.weight[1] * x[1] + f.bias[0] - direct) < 1e-6);
});

test("prepareBatchNorm: a BatchNorm goes after each folded conv, the trainee computes B's logits, and finishing untrained gives B back", async () => {
  const b = foldedNet();
  assert.deepEqual(foldedConvs(b).map((c) => c.output), ["c1", "c2"]);
  assert.deepEqual(foldedConvs({ ...b, origin: undefined }), [], "only ONNX exports get BatchNorms back");
  const data = images(24);
  const plan = await prepareBatchNorm(b, data, { batchSize: 8 });
  assert.equal(plan.inserted, 2);
  assert.equal(plan.trainee.graph.nodes.filter((n) => n.op === "BatchNormalization").length, 2);
  assert.equal(plan.trainee.params.length, b.params.length + 4);
  const [lb, lt] = [await predictLogits(b, data), await predictLogits(plan.trainee, data)];
  lb.forEach((v, i) => assert.ok(Math.abs(v - lt[i]) < 1e-3 * Math.max(1, Math.abs(v)), `logit ${i}: ${lt[i]} vs B's ${v}`));
  const back = await plan.finish(new Map([...plan.trainee.params].map((p) => [p.value, plan.trainee.graph.initializers.get(p.value)!])));
  assert.deepEqual(back.graph.nodes.map((n) => n.op), b.graph.nodes.map((n) => n.op), "B's graph");
  // The first conv's statistics are exact; the second's see the first normalised by batch statistics.
  const lr = await predictLogits(back, data);
  lb.forEach((v, i) => assert.ok(Math.abs(v - lr[i]) < 0.05 * Math.max(1, Math.abs(v)), `logit ${i}: ${lr[i]} vs B's ${v}`));
  const frozen = await prepareBatchNorm(b, data, { batchSize: 8, mode: "frozen" });
  assert.equal(frozen.trainee, b);
  assert.equal(frozen.inserted, 0);
});

test("train on a folded net: batch statistics through re-inserted BatchNorms, B's graph and parameter names handed back", async () => {
  const b = foldedNet();
  const d = images(30);
  const data = { x: d.read(0, 30), y: d.labels!, shape: [2, 6, 6] as [number, number, number] };
  const { model, history } = await train(b, data, { epochs: 3, batchSize: 10, optimizer: { kind: "adam", lr: 1e-2 }, seed: 0 });
  assert.ok(history.every((h) => Number.isFinite(h.loss)));
  assert.deepEqual(model.graph.nodes.map((n) => n.op), b.graph.nodes.map((n) => n.op));
  assert.deepEqual([...model.graph.initializers.keys()].sort(), [...b.graph.initializers.keys()].sort());
  assert.notDeepEqual(model.graph.initializers.get("w1")!.data, b.graph.initializers.get("w1")!.data, "trained");
});
