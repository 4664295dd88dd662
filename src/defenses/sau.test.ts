import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { tensor, type TensorData } from "../graph/ir.js";
import { memoryDataset } from "../io/dataset.js";
import { zooCnn } from "../model/archs.js";
import { lowerModel } from "../model/lower.js";
import { paramValues, withParams } from "../model/params.js";
import { Session } from "../runtime/session.js";
import { backdooredModel, cleanImages, cleanSet, H, poisonedSet } from "../test/tiny-patch-mlp.js";
import { numericGradient, relError } from "../test/gradcheck.js";
import { buildStepGraph, oneHot } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { checkSauOptions, SAU_SHARED_INPUT, sau, sauLoss, sharedPgdGraph } from "./sau.js";

const rnd = (n: number, rand: () => number, scale = 1) => Float32Array.from({ length: n }, () => (rand() - 0.5) * scale);

test("SAU maximisation graph: dLoss/dδ matches float64 finite differences (masks fixed by argmax)", async () => {
  const rand = mulberry32(5);
  const ref = lowerModel(zooCnn({ inputShape: [16, 16, 1], numClasses: 3, filters: [2, 2, 2], hidden: 4, seed: 3 }));
  // θ differs from B so that the two networks disagree on some images.
  const cur = withParams(ref, new Map([...paramValues(ref)].map(([k, t]) => [k, tensor("float32", [...t.shape], Float32Array.from(t.data as Float32Array, (v) => v + (rand() - 0.5) * 0.3))])));
  const pg = sharedPgdGraph(cur, ref, 0.5, 1);
  const n = 4;
  const feeds: Record<string, TensorData> = {
    [pg.x]: tensor("float32", [n, 1, 16, 16], Float32Array.from({ length: n * 256 }, () => rand())),
    [pg.delta]: tensor("float32", [n, 1, 16, 16], rnd(n * 256, rand, 0.4)),
    [pg.target]: tensor("float32", [n, 3], oneHot(Int32Array.of(0, 1, 2, 1), 3)),
    [pg.refClean]: tensor("float32", [n, 3], oneHot(Int32Array.of(0, 2, 2, 0), 3)),
  };
  const pv = paramValues(cur);
  for (const [input, p] of pg.params) feeds[input] = pv.get(p)!;
  const s = await Session.create(pg.graph);
  const got = (await s.run(feeds))[pg.grad].data as Float32Array;
  await s.release();
  const fwd = pg.graph.clone();
  fwd.setOutputs([pg.loss]);
  const want = numericGradient(fwd, feeds, pg.loss, pg.delta);
  assert.ok(want.some((v) => v !== 0), "the loss depends on δ");
  const err = relError(got, want);
  assert.ok(err <= 1e-3, `dLoss/dδ relative error ${err.toExponential(2)}`);
});

test("SAU unlearning loss: gradients w.r.t. the parameters match finite differences", async () => {
  const rand = mulberry32(9);
  const m = lowerModel(zooCnn({ inputShape: [16, 16, 1], numClasses: 3, filters: [2, 2, 2], hidden: 4, seed: 4 }));
  const step = buildStepGraph(m, { optimizer: { kind: "sgd", lr: 1, momentum: 0 }, loss: sauLoss(1.5, 2), pooledRelus: false, update: "graph" });
  const g = step.graph;
  // Rows 0–1 clean (targets), rows 2–3 perturbed, row 2 unlearned away from class 1, row 3 not.
  const shared = new Float32Array(12);
  shared[2 * 3 + 1] = 1;
  const target = new Float32Array(12);
  target.set(oneHot(Int32Array.of(2, 0), 3));
  const feeds: Record<string, TensorData> = {
    input: tensor("float32", [4, 1, 16, 16], Float32Array.from({ length: 1024 }, () => rand())),
    target: tensor("float32", [4, 3], target),
    [SAU_SHARED_INPUT]: tensor("float32", [4, 3], shared),
    lr: tensor("float32", [], Float32Array.of(1)),
  };
  for (const [p, t] of step.params) feeds[p] = t;
  const slot = step.optimizer!.slots[step.optimizer!.slots.length - 2];
  const s = await Session.create(g);
  const out = await s.run(feeds, [slot.next]);
  await s.release();
  // SGD without momentum at lr 1: next = p − grad, so grad = p − next.
  const p = feeds[slot.param].data as Float32Array;
  const got = Float32Array.from(out[slot.next].data as Float32Array, (v, i) => p[i] - v);
  const fwd = g.clone();
  fwd.setOutputs([step.loss]);
  const err = relError(got, numericGradient(fwd, feeds, step.loss, slot.param));
  assert.ok(err <= 1e-3, `dL/d${slot.param} relative error ${err.toExponential(2)}`);
});

test("SAU on the tiny patch backdoor: rounds recorded, shared adversarial examples unlearned, kept round within budget", async () => {
  const model = await backdooredModel();
  const poisoned = poisonedSet(120, 63);
  const r = await sau(model, { clean: cleanSet(320, 62), test: cleanSet(200, 64), poisoned }, { rounds: 3, seed: 1, batchSize: 64, lr: 2e-3 });
  assert.equal(r.history.length, 4);
  // What SAU minimises: the share of images whose perturbation fools θ and B alike falls round by round.
  assert.ok(r.history[1].shared > 0, JSON.stringify(r.history));
  assert.ok(r.history[3].shared < r.history[1].shared, JSON.stringify(r.history));
  assert.ok(r.chosenRound >= 1);
  for (const h of r.history.slice(1)) {
    assert.ok(h.potentialPoison >= 0 && h.potentialPoison <= 1);
    assert.ok(Number.isFinite(h.loss));
  }
  if (r.history[0].heldOutAccuracy - r.history[r.chosenRound].heldOutAccuracy > r.settings.maxDrop) {
    assert.ok(r.history.slice(1).every((h) => r.history[0].heldOutAccuracy - h.heldOutAccuracy > r.settings.maxDrop));
  }
  // The evaluation covers the poisoned inputs as given. (Like i-BAU, the L∞ search on this MLP finds natural
  // directions rather than the tiny white patch, so the tiny backdoor itself is not a target here.)
  assert.equal(r.after.nPoisoned, poisoned.size);
});

test("SAU: bad options and data are one-line UserErrors", async () => {
  assert.throws(() => checkSauOptions({ rounds: 0 }), UserError);
  assert.throws(() => checkSauOptions({ eps: 0 }), UserError);
  assert.throws(() => checkSauOptions({ eps: 1.5 }), UserError);
  assert.throws(() => checkSauOptions({ pgdSteps: 0 }), UserError);
  assert.throws(() => checkSauOptions({ lr: 0 }), UserError);
  assert.throws(() => checkSauOptions({ beta1: -1 }), UserError);
  assert.throws(() => checkSauOptions({ holdout: 1 }), UserError);
  assert.throws(() => checkSauOptions({ inputScale: -1 }), UserError);
  const model = await backdooredModel();
  await assert.rejects(sau(model, { clean: memoryDataset("nolabels", [1, H, H], cleanImages(8, 1).x, null) }), UserError);
  await assert.rejects(sau(model, { clean: cleanSet(1, 2) }), UserError);
});
