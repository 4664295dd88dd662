// Neural Cleanse's default budget from the model's cost: the MAC count, the budget's shape, and that explicit
// settings win.
import assert from "node:assert/strict";
import { test } from "node:test";
import { loadDeepId } from "../bench/common.js";
import { Graph, tensor } from "../graph/ir.js";
import { defaultBudget, effectiveLabels, forwardMacs, FULL_BUDGET, graphMacs, labelSlots, SCAN_MACS } from "./nc-budget.js";
import { resolveOptions } from "./neural-cleanse.js";

test("forwardMacs: Conv and Gemm from the graph's shapes, by hand", () => {
  const g = new Graph("tiny");
  const x = g.addInput("x", "float32", ["N", 2, 8, 8]);
  const w1 = g.constant(tensor("float32", [4, 2, 3, 3], new Float32Array(72)));
  const c1 = g.op("Conv", [x, w1]); // [N, 4, 6, 6]: 4·36 outputs × 2·3·3 = 2,592
  const w2 = g.constant(tensor("float32", [4, 1, 3, 3], new Float32Array(36)));
  const c2 = g.op("Conv", [c1, w2], { group: { kind: "int", value: 4 } }); // depthwise [N, 4, 4, 4]: 64 × 9 = 576
  const f = g.op("Flatten", [c2]); // [N, 64]
  const w3 = g.constant(tensor("float32", [10, 64], new Float32Array(640)));
  g.op("Gemm", [f, w3], { transB: { kind: "int", value: 1 } }); // 10 × 64 = 640
  assert.equal(graphMacs(g), 2592 + 576 + 640);
});

test("forwardMacs of the CSAW DeepID net equals the layer-by-layer count of its architecture", async () => {
  const m = await loadDeepId();
  // conv_1 20 4x4 on 55x47x3 -> 52x44; conv_2 40 3x3 on 26x22x20 -> 24x20; conv_3 60 3x3 on 12x10x40 -> 10x8;
  // conv_4 80 2x2 on 5x4x60 -> 4x3; fc_1 1200 -> 160; fc_2 960 -> 160; output 160 -> 1283.
  const byHand = 20 * 52 * 44 * 48 + 40 * 24 * 20 * 180 + 60 * 10 * 8 * 360 + 80 * 4 * 3 * 240 + 1200 * 160 + 960 * 160 + 160 * 1283;
  assert.equal(forwardMacs(m), byHand);
});

test("defaultBudget: the full budget on small models, a smaller one that fits SCAN_MACS on large ones", () => {
  const ctx = { labels: 10, families: 2 };
  assert.deepEqual({ ...defaultBudget(1e6, ctx), reason: "" }, { ...FULL_BUDGET, passesPerLabel: 19200, reason: "" });
  let last = Infinity;
  for (let macs = 1e6; macs <= 4e9; macs *= 1.7) {
    for (const c of [ctx, { labels: 1283, families: 2 }, { labels: 1283, families: 1 }]) {
      const b = defaultBudget(macs, c);
      assert.equal(b.passesPerLabel, b.steps * b.batchSize * b.restarts);
      assert.ok(Number.isInteger(Math.log2(b.batchSize)) && b.batchSize >= 2 && b.batchSize <= 32, `batch ${b.batchSize}`);
      assert.ok(b.steps >= 20 && b.steps <= 300 && (b.restarts === 1 || b.restarts === 2));
      // Fits the scan's MACs (up to the rounding of steps and batch), unless a floor was hit.
      const cost = b.passesPerLabel * effectiveLabels(c.labels) * c.families * macs;
      if (b.steps > 20 && b.batchSize > 2) assert.ok(cost <= 1.5 * SCAN_MACS, `${macs} MACs: cost ${cost.toExponential(2)}`);
      assert.match(b.reason, /MACs per image/);
    }
    const b = defaultBudget(macs, ctx);
    assert.ok(b.passesPerLabel <= last * 1.05, `passes grow with the MACs at ${macs}`);
    last = b.passesPerLabel;
  }
  // A large model: one start; more labels or families: a smaller budget.
  assert.equal(defaultBudget(5.6e8, ctx).restarts, 1);
  assert.ok(defaultBudget(8e6, { labels: 1283, families: 2 }).passesPerLabel < defaultBudget(8e6, { labels: 1283, families: 1 }).passesPerLabel);
  assert.throws(() => defaultBudget(0, ctx), /MACs must be positive/);
});

test("explicit steps, batch size and restarts win over the model-cost budget; the source says so", () => {
  const cost = { macs: 5.6e8, labels: 10, families: 2 };
  const auto = resolveOptions({ inputScale: 255 }, cost);
  const b = defaultBudget(cost.macs, cost);
  assert.deepEqual([auto.steps, auto.batchSize, auto.restarts], [b.steps, b.batchSize, b.restarts]);
  assert.equal(auto.budget?.source, "model cost");
  const some = resolveOptions({ inputScale: 255, steps: 77 }, cost);
  assert.deepEqual([some.steps, some.batchSize, some.restarts, some.budget?.source], [77, b.batchSize, b.restarts, "mixed"]);
  assert.match(some.budget!.reason, /given: steps 77/);
  const all = resolveOptions({ inputScale: 255, steps: 9, batchSize: 3, restarts: 4 }, cost);
  assert.deepEqual([all.steps, all.batchSize, all.restarts, all.budget?.source], [9, 3, 4, "given"]);
});

test("labelSlots: fewer labels per step for wider activations or larger batches, never more than the cap", () => {
  const fmnist = 16 * 26 * 26, deepid = 20 * 52 * 44;
  assert.ok(labelSlots(fmnist, 32, 32) < 32 && labelSlots(fmnist, 32, 32) >= 1);
  assert.ok(labelSlots(deepid, 4, 32) <= labelSlots(fmnist, 4, 32));
  assert.ok(labelSlots(deepid, 12, 32) <= labelSlots(deepid, 4, 32));
  assert.equal(labelSlots(1, 1, 7), 7);
  assert.equal(labelSlots(1e8, 32, 32), 1);
});
