// Neural Cleanse's scheduling: the bounded schedule's pieces, the screening rungs, the budget factors of stopped labels, the per-run seeds
// and the reference labels.
import assert from "node:assert/strict";
import { test } from "node:test";
import { budgetAdjusted, isReferenceLabel, referenceLabels, runSeed, screeningRungs } from "./neural-cleanse.js";
import { boundRungs, eliminationBound, flagThresholdNorm, furtherDecrease, pickBounded } from "./nc-schedule.js";

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
  assert.equal(refs, 24, "exactly 24 reference labels of 1,283");
  assert.notDeepEqual([...referenceLabels(0, 16, 1283)], [...referenceLabels(1, 16, 1283)], "another seed, other labels");
  assert.ok(Array.from({ length: 10 }, (_, l) => isReferenceLabel(0, l, 24, 10)).every(Boolean), "24 of 10 classes: all of them");
});

test("bounded rungs: a first look of steps/16, then 4x steps and 2x images, each keeping at most a tenth", () => {
  assert.deepEqual(boundRungs(1267, 13, { steps: 56, batchSize: 8 }), [
    { steps: 4, batch: 2, keep: 127 },
    { steps: 16, batch: 4, keep: 13 },
  ]);
  assert.deepEqual(boundRungs(5, 13, { steps: 56, batchSize: 8 }), [], "no more labels than the shortlist: no rungs");
  for (const [n, k, steps, batch] of [[1267, 13, 300, 32], [100, 3, 30, 4], [40, 10, 300, 32]]) {
    const rs = boundRungs(n, k, { steps, batchSize: batch });
    let alive = n;
    for (const r of rs) {
      assert.ok(r.keep <= Math.max(k, Math.ceil(alive / 10)) && r.keep >= Math.min(k, alive), `keep ${r.keep} of ${alive}`);
      assert.ok(r.steps < steps && r.batch <= batch);
      alive = r.keep;
    }
  }
});

test("flag threshold: the norm at anomaly index 2 below the reference median on ln norm", () => {
  const refs = [10, 20, 40, 80, 160];
  // ln: median ln 40, MAD ln 2 -> threshold 40 / 2^(2·1.4826).
  assert.ok(Math.abs(flagThresholdNorm(refs) - 40 / 2 ** (2 * 1.4826)) < 1e-9);
  assert.equal(flagThresholdNorm([]), Infinity);
});

test("further decrease: the smallest final/checkpoint ratio of the reference labels, a stopped one counting its final norm", () => {
  // Reference 0 ran both checkpoints; reference 1 stopped before the second.
  const d = furtherDecrease([[100, 50], [80]], [25, 40], 2);
  assert.deepEqual(d, [Math.min(25 / 100, 40 / 80), Math.min(25 / 50, 40 / 40)]);
  assert.deepEqual(furtherDecrease([[10]], [20], 1), [1], "never more than 1 (no label is made larger)");
});

test("elimination bound and pickBounded: a label whose bound stays above the threshold stops; at most keep go on", () => {
  assert.equal(eliminationBound(200, 0.25, 0.5), 25);
  const norms = [200, 30, 90, 400, 60, 50];
  const reached = [true, true, false, true, true, true];
  // threshold 20, decrease 0.25, margin 0.5: bound = norm/8, eliminated when > 20: norms > 160 (labels 0, 3).
  assert.deepEqual(pickBounded(norms, reached, 10, 20, 0.25, 0.5), [1, 2, 4, 5]);
  // keep 2: reached first, then the smallest norms: 1 (30) and 5 (50).
  assert.deepEqual(pickBounded(norms, reached, 2, 20, 0.25, 0.5), [1, 5]);
  assert.deepEqual(pickBounded(norms, reached, 10, 1, 0.25, 0.5), [], "every bound above the threshold");
});
