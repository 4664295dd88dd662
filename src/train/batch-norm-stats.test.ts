import assert from "node:assert/strict";
import { test } from "node:test";
import { attr, Graph, tensor } from "../graph/ir.js";
import type { Model } from "../model/model.js";
import { mulberry32 } from "../util/random.js";
import { batchNormStatistics, poolStatistics } from "./batch-norm-stats.js";
import { prepareBatchNorm } from "./batch-norm-training.js";
import { train } from "./trainer.js";

test("poolStatistics: batch means and variances pool to the whole set's", () => {
  const all = [1, 2, 3, 4, 10, 20];
  const part = (v: number[]) => {
    const m = v.reduce((a, b) => a + b, 0) / v.length;
    return { count: v.length, mean: [m], variance: [v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length] };
  };
  const p = poolStatistics([part(all.slice(0, 4)), part(all.slice(4))]);
  const whole = part(all);
  assert.ok(Math.abs(p.mean[0] - whole.mean[0]) < 1e-5);
  assert.ok(Math.abs(p.variance[0] - whole.variance[0]) < 1e-4, `variance ${p.variance[0]} vs ${whole.variance[0]}`);
  assert.throws(() => poolStatistics([]), /no batches/);
});

/** input [N,2,3,3] → BatchNorm → GlobalAveragePool → Flatten → Gemm: a 2-class network with one BatchNorm. */
function bnModel(): Model {
  const g = new Graph("bn_net");
  g.addInput("input", "float32", ["N", 2, 3, 3]);
  const s = g.addInitializer("s", tensor("float32", [2], Float32Array.from([1, 1])));
  const b = g.addInitializer("b", tensor("float32", [2], Float32Array.from([0, 0])));
  const m = g.addInitializer("m", tensor("float32", [2], Float32Array.from([0, 0])));
  const v = g.addInitializer("v", tensor("float32", [2], Float32Array.from([1, 1])));
  const w = g.addInitializer("w", tensor("float32", [2, 2], Float32Array.from([1, -1, -1, 1])));
  const bias = g.addInitializer("bias", tensor("float32", [2], new Float32Array(2)));
  const z = g.op("BatchNormalization", ["input", s, b, m, v], { epsilon: attr.float(1e-5) });
  const f = g.op("Flatten", [g.op("GlobalAveragePool", [z])], { axis: attr.int(1) });
  const logits = g.op("Gemm", [f, w, bias], { transB: attr.int(1) }, "logits");
  g.setOutputs([logits]);
  const layer = (value: string, weight: string) => ({ value, layer: "l", weight });
  return { name: "bn_net", graph: g, input: "input", logits, inputShape: [2, 3, 3], numClasses: 2, layerOutputs: new Map([["bn", z]]), params: [layer("s", "gamma"), layer("b", "beta"), layer("w", "kernel"), layer("bias", "bias")] };
}

function images(n: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  // Channel 0 around 3 (spread 2), channel 1 around −1 (spread 0.5): far from the stored 0 / 1.
  return Float32Array.from({ length: n * 18 }, (_, i) => (Math.floor(i / 9) % 2 === 0 ? 3 + (r() * 2 - 1) * 2 : -1 + (r() * 2 - 1) * 0.5));
}

test("batchNormStatistics: the statistics of a BatchNorm on the input are the images' own, whatever the batch size", async () => {
  const model = bnModel();
  const x = images(50, 3);
  const src = { size: 50, shape: [2, 3, 3] as [number, number, number], read: (s: number, c: number) => x.subarray(s * 18, (s + c) * 18) };
  const direct = [0, 1].map((ch) => {
    const v: number[] = [];
    for (let n = 0; n < 50; n++) for (let q = 0; q < 9; q++) v.push(x[(n * 2 + ch) * 9 + q]);
    const m = v.reduce((a, b) => a + b, 0) / v.length;
    return { m, v: v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length };
  });
  for (const bs of [7, 50]) {
    const st = await batchNormStatistics(model, src, { batchSize: bs });
    const mean = st.get("m")!.data as Float32Array, variance = st.get("v")!.data as Float32Array;
    for (const ch of [0, 1]) {
      assert.ok(Math.abs(mean[ch] - direct[ch].m) < 1e-4, `batch ${bs}, channel ${ch}: mean ${mean[ch]} vs ${direct[ch].m}`);
      assert.ok(Math.abs(variance[ch] - direct[ch].v) < 1e-4, `batch ${bs}, channel ${ch}: variance ${variance[ch]} vs ${direct[ch].v}`);
    }
  }
});

test("train: with BatchNorm it trains on batch statistics and hands back re-estimated running statistics; frozen keeps B's", async () => {
  const model = bnModel();
  const x = images(40, 5);
  const y = Int32Array.from({ length: 40 }, (_, i) => i % 2);
  const data = { x, y, shape: [2, 3, 3] as [number, number, number] };
  const src = { size: 40, shape: data.shape, read: (s: number, c: number) => x.subarray(s * 18, (s + c) * 18) };
  assert.equal((await prepareBatchNorm(model, src, { batchSize: 8 })).stepMode, "batch");
  assert.equal((await prepareBatchNorm(model, src, { batchSize: 8, mode: "frozen" })).stepMode, "frozen");
  const opts = { epochs: 2, batchSize: 8, optimizer: { kind: "adam" as const, lr: 1e-2 }, seed: 1 };
  const batch = (await train(model, data, opts)).model;
  const m = batch.graph.initializers.get("m")!.data as Float32Array;
  // A BatchNorm on the input: its statistics do not depend on the weights, so they are the images' (≈ 3, −1).
  assert.ok(Math.abs(m[0] - 3) < 0.3 && Math.abs(m[1] + 1) < 0.2, `running mean ${[...m]}`);
  const frozen = (await train(model, data, { ...opts, batchNorm: "frozen" })).model;
  assert.deepEqual([...(frozen.graph.initializers.get("m")!.data as Float32Array)], [0, 0]);
  assert.deepEqual([...(frozen.graph.initializers.get("v")!.data as Float32Array)], [1, 1]);
});
