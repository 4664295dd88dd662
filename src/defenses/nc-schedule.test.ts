// Neural Cleanse's scheduling: the screening rungs, the budget factors of stopped labels, the per-run seeds
// and the reference labels.
import assert from "node:assert/strict";
import { test } from "node:test";
import { budgetAdjusted, isReferenceLabel, runSeed, screeningRungs } from "./neural-cleanse.js";

const O = { schedule: "halving" as const, eta: 4, screenSteps: 10, screenBatchSize: 4, steps: 300, batchSize: 32 };

test("halving rungs: budgets grow eta-fold, batches double, 1/eta of the labels go on, down to the shortlist", () => {
  assert.deepEqual(screeningRungs(1259, 13, O), [
    { steps: 10, batch: 4, keep: 315 },
    { steps: 40, batch: 8, keep: 79 },
    { steps: 160, batch: 16, keep: 20 },
  ]);
  assert.deepEqual(screeningRungs(10, 10, O), [], "every label fits in the shortlist: no screening");
  assert.deepEqual(screeningRungs(30, 10, O), [{ steps: 10, batch: 4, keep: 10 }]);
  assert.deepEqual(screeningRungs(1259, 13, { ...O, schedule: "two-phase", screenSteps: 60, screenBatchSize: 8 }), [{ steps: 60, batch: 8, keep: 13 }]);
  assert.deepEqual(screeningRungs(1259, 13, { ...O, screenSteps: 300 }), [], "a first rung at the full budget is no screening");
});

test("budget factors: the median shrink of the labels that went on, chained over later rungs", () => {
  // Labels 0-1 stopped after rung 0; 2-3 after rung 1; 4-5 ran the full budget.
  const normAt = [[100], [120], [80, 40], [90, 60], [50, 25], [70, 35]];
  const final = [100, 120, 40, 60, 10, 14];
  const full = [false, false, false, false, true, true];
  const { statNorms, shrinks } = budgetAdjusted(final, normAt, full);
  // Rung 0 → 1: ratios 40/80, 60/90, 25/50, 35/70 → median (0.5 + 0.5)/2 = 0.5. Rung 1 → end: 10/25, 14/35 → 0.4.
  assert.ok(Math.abs(shrinks[1] - 0.4) < 1e-12 && Math.abs(shrinks[0] - 0.2) < 1e-12, `shrinks ${shrinks}`);
  assert.deepEqual(statNorms.map((v) => +v.toFixed(9)), [20, 24, 16, 24, 10, 14]);
  // A rung after which norms grew counts as 1 (no label is made larger).
  assert.deepEqual(budgetAdjusted([50, 200], [[100], [100]], [false, true]).shrinks, [1]);
});

test("run seeds and reference labels depend on (seed, family, label, restart) only", () => {
  const seeds = new Set<number>();
  for (const f of ["mask", "blend"] as const) for (let l = 0; l < 50; l++) for (let r = 0; r < 3; r++) seeds.add(runSeed(7, f, l, r));
  assert.equal(seeds.size, 300, "distinct streams");
  assert.equal(runSeed(7, "mask", 3, 1), runSeed(7, "mask", 3, 1));
  assert.notEqual(runSeed(7, "mask", 3, 1), runSeed(8, "mask", 3, 1));
  const refs = Array.from({ length: 1283 }, (_, l) => isReferenceLabel(0, l, 24, 1283)).filter(Boolean).length;
  assert.ok(refs >= 12 && refs <= 40, `${refs} reference labels of 1,283 (about 24 expected)`);
  assert.ok(Array.from({ length: 10 }, (_, l) => isReferenceLabel(0, l, 24, 10)).every(Boolean), "24 of 10 classes: all of them");
});
