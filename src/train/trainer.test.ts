// The step runner (parameters and Adam moments written by the runtime into swapped arrays) against the plain
// way of running the same step graph: feed everything, read every output back.
import assert from "node:assert/strict";
import { test } from "node:test";
import { tensor, type TensorData } from "../graph/ir.js";
import { stepLr } from "../graph/optimizers.js";
import { zooCnn } from "../model/archs.js";
import { lowerModel } from "../model/lower.js";
import { Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";
import { buildStepGraph, oneHot, StepRunner, train } from "./trainer.js";

const model = lowerModel(zooCnn({ inputShape: [16, 16, 1], numClasses: 3, seed: 2 }));
const rand = mulberry32(7);
const batches = Array.from({ length: 3 }, () => ({
  x: tensor("float32", [4, 1, 16, 16], Float32Array.from({ length: 4 * 256 }, () => rand())),
  t: tensor("float32", [4, 3], oneHot(Int32Array.from({ length: 4 }, () => Math.floor(rand() * 3)), 3)),
}));
const optimizer = { kind: "adam" as const, lr: 1e-2 };

test("the step runner's swapped arrays give the same parameters as feeding and reading back every step", async () => {
  const step = buildStepGraph(model, { optimizer, update: "graph" });
  const runner = await StepRunner.create(step, { threads: 1 });
  const plain = await Session.create(step.graph, { threads: 1 });
  try {
    const state = new Map<string, TensorData>(step.params);
    for (const s of step.optimizer!.slots) for (const st of s.state) state.set(st.input, st.init);
    for (const [i, b] of batches.entries()) {
      const lr = stepLr(optimizer, i + 1);
      const got = await runner.run(b.x, b.t, lr);
      const feeds: Record<string, TensorData> = { input: b.x, target: b.t, [step.optimizer!.lrInput]: tensor("float32", [], Float32Array.of(lr)) };
      for (const [k, v] of state) feeds[k] = v;
      const out = await plain.run(feeds);
      for (const s of step.optimizer!.slots) {
        state.set(s.param, out[s.next]);
        for (const st of s.state) state.set(st.input, out[st.output]);
      }
      assert.equal(got.loss, (out[step.loss].data as Float32Array)[0], `loss at step ${i + 1}`);
    }
    const params = runner.params();
    for (const [k, v] of params) assert.deepEqual(v.data, state.get(k)!.data, k);
    // params() hands out copies: a later step does not change them.
    await runner.run(batches[0].x, batches[0].t, 1e-3);
    for (const [k, v] of params) assert.deepEqual(v.data, state.get(k)!.data, `${k} after another step`);
  } finally {
    await runner.release();
    await plain.release();
  }
});

test("train leaves the model it started from untouched", async () => {
  const before = new Map(model.params.map((p) => [p.value, Float32Array.from(model.graph.initializers.get(p.value)!.data as Float32Array)]));
  const data = { x: Float32Array.from({ length: 8 * 256 }, () => rand()), y: Int32Array.from({ length: 8 }, (_, i) => i % 3), shape: [1, 16, 16] as [number, number, number] };
  const { model: trained } = await train(model, data, { epochs: 2, batchSize: 4, optimizer, seed: 0, session: { threads: 1 } });
  for (const [k, v] of before) {
    assert.deepEqual(model.graph.initializers.get(k)!.data, v, `${k} of the input model`);
    assert.notDeepEqual(trained.graph.initializers.get(k)!.data, v, `${k} was trained`);
  }
});

test("the step graph's MaxPool-before-Relu rewrite gives the same loss and updates", async () => {
  const run = async (pooledRelus: boolean) => {
    const r = await StepRunner.create(buildStepGraph(model, { optimizer, pooledRelus }), { threads: 1 });
    try {
      const losses: number[] = [];
      for (const [i, b] of batches.entries()) losses.push((await r.run(b.x, b.t, stepLr(optimizer, i + 1))).loss);
      return { losses, params: r.params() };
    } finally {
      await r.release();
    }
  };
  const plain = await run(false);
  const pooled = await run(true);
  const g = buildStepGraph(model, { optimizer }).graph;
  const pools = g.nodes.filter((n) => n.op === "MaxPool");
  assert.equal(pools.length, 3);
  for (const p of pools) assert.equal(g.producer(p.inputs[0])?.op, "Conv", "the pool reads the conv, the Relu follows it");
  pooled.losses.forEach((l, i) => assert.ok(Math.abs(l - plain.losses[i]) <= 1e-5 * Math.max(1, Math.abs(l)), `loss ${i}: ${l} vs ${plain.losses[i]}`));
  for (const [k, v] of plain.params) {
    const a = pooled.params.get(k)!.data as Float32Array;
    const b = v.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    assert.ok(worst <= 1e-5, `${k}: max difference ${worst}`);
  }
});

test("the host update (gradients out, optimizer in JS) follows the graph update: Adam, SGD with momentum, weight decay", async () => {
  const configs = [
    { kind: "adam" as const, lr: 1e-2 },
    { kind: "adam" as const, lr: 1e-2, weightDecay: 0.01 },
    { kind: "sgd" as const, lr: 0.05, momentum: 0.9, weightDecay: 5e-4 },
    { kind: "sgd" as const, lr: 0.05, momentum: 0 },
  ];
  for (const cfg of configs) {
    const run = async (update: "graph" | "host") => {
      const r = await StepRunner.create(buildStepGraph(model, { optimizer: cfg, update }), { threads: 1 });
      try {
        const losses: number[] = [];
        for (const [i, b] of batches.entries()) losses.push((await r.run(b.x, b.t, stepLr(cfg, i + 1))).loss);
        return { losses, params: r.params() };
      } finally {
        await r.release();
      }
    };
    const graph = await run("graph");
    const host = await run("host");
    host.losses.forEach((l, i) => assert.ok(Math.abs(l - graph.losses[i]) <= 1e-5 * Math.max(1, Math.abs(l)), `${JSON.stringify(cfg)} loss ${i}: ${l} vs ${graph.losses[i]}`));
    let moved = 0;
    for (const [k, v] of graph.params) {
      const a = host.params.get(k)!.data as Float32Array;
      const b = v.data as Float32Array;
      const start = model.graph.initializers.get(k)!.data as Float32Array;
      let worst = 0;
      for (let i = 0; i < b.length; i++) {
        worst = Math.max(worst, Math.abs(a[i] - b[i]));
        moved = Math.max(moved, Math.abs(b[i] - start[i]));
      }
      assert.ok(worst <= 1e-5, `${JSON.stringify(cfg)} ${k}: max difference ${worst}`);
    }
    assert.ok(moved > 1e-3, `${JSON.stringify(cfg)}: the parameters moved (${moved})`);
  }
});
