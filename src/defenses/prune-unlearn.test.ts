import { before, test } from "node:test";
import assert from "node:assert/strict";
import { UserError } from "../errors.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { initWeights, zooCnn } from "../model/archs.js";
import { predictLabels } from "../model/forward.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { paramValues } from "../model/params.js";
import { H, SHAPE, synth, trainTinyBackdoor } from "../test/tiny-backdoor.js";
import { mlpArch } from "../test/tiny-patch-mlp.js";
import type { ReversedTrigger } from "./nc-mitigation.js";
import { checkPruneUnlearnOptions, lastConvLayer, pruneUnlearn } from "./prune-unlearn.js";

let model: Model;
let clean: Dataset;
let poisoned: Dataset;

/**
 * The tiny task's checkerboard (rows 0–2, columns 13–16) moved 3 columns right: like Neural Cleanse's reversed
 * triggers on the zoo, it sits beside the real patch and shares its feature, not its pixels.
 */
function besideTrigger(): ReversedTrigger {
  const mask = new Float32Array(H * H), pattern = new Float32Array(H * H);
  for (let a = 0; a < 3; a++) for (let b = 0; b < 4; b++) {
    mask[a * H + 16 + b] = 1;
    pattern[a * H + 16 + b] = (a + b) % 2;
  }
  return { label: 0, mask, pattern };
}

async function rate(m: Model, ds: Dataset): Promise<number> {
  const p = await predictLabels(m, ds);
  return p.filter((v, i) => v === ds.labels![i]).length / ds.size;
}

before(async () => {
  model = await trainTinyBackdoor();
  const c = synth(400, 21, "none");
  clean = memoryDataset("clean", SHAPE, c.x, c.y);
  const p = synth(100, 22, "all");
  poisoned = memoryDataset("poisoned", SHAPE, p.x, p.y);
});

test("the pruned layer defaults to the last conv layer; an MLP has none", () => {
  const cnn = lowerModel(zooCnn({ inputShape: [24, 24, 1], numClasses: 3, filters: [4, 6, 8], hidden: 10, seed: 4 }));
  assert.equal(lastConvLayer(cnn), "conv_3");
  assert.equal(lastConvLayer(lowerModel(initWeights(mlpArch(8), 1))), undefined);
});

test("prune-unlearn on tiny data: the real patch stops working, pruned channels stay zero through unlearning", async () => {
  const asr0 = await rate(model, poisoned);
  assert.ok(asr0 > 0.9, `the tiny model is backdoored (ASR ${asr0})`);
  const r = await pruneUnlearn(model, { clean, poisoned }, [besideTrigger()], { epochs: 3, seed: 1, rounds: 1 });
  assert.equal(r.site.layer, "conv_3");
  assert.ok(r.pruned.length > 0, "some channel was pruned");
  assert.equal(r.perLabel.length, 1);
  // The conv kernel's pruned output slices are still exactly zero after the unlearning epochs.
  const kernel = paramValues(r.model).get(r.site.zero[0].param)!;
  const per = kernel.data.length / r.site.units;
  for (const j of r.pruned) for (let i = 0; i < per; i++) assert.equal((kernel.data as Float32Array)[j * per + i], 0, `channel ${j}`);
  const asr1 = await rate(r.model, poisoned);
  assert.equal(r.after.asr, asr1);
  assert.ok(asr1 < asr0, `real ASR ${asr0} → ${asr1}`);
  // Channels pruned: the default unlearning matches features.
  assert.equal(r.unlearningUsed, r.pruned.length > 0 ? "feature" : "ce");
  // The accuracy budget bounds the pruning.
  assert.ok(r.pruneAccuracy.before - r.pruneAccuracy.after <= r.settings.maxDrop + 1e-9);
});

test("a label whose pruning leaves its trigger above `accept` keeps its channels", async () => {
  // A false flag: class 0's own feature (the bright square of quadrant 0) as label 0's "trigger". Only pruning
  // the features of class 0 could stop it, which costs accuracy: no channel is kept.
  const mask = new Float32Array(H * H), pattern = new Float32Array(H * H);
  for (let a = 0; a < 7; a++) for (let b = 0; b < 7; b++) [mask[(4 + a) * H + 4 + b], pattern[(4 + a) * H + 4 + b]] = [1, 0.9];
  const r = await pruneUnlearn(model, { clean }, [{ label: 0, mask, pattern }], { maxDrop: 0.02, epochs: 1, seed: 1, rounds: 1 });
  const p = r.perLabel[0];
  assert.ok(p.triggerSuccess >= 1e-6, `trigger success after pruning ${p.triggerSuccess}`);
  assert.equal(p.added, 0);
  assert.match(p.stop, /not kept/);
  assert.deepEqual(r.pruned, []);
  assert.equal(r.pruneAccuracy.after, r.pruneAccuracy.before);
  // Nothing pruned: the default unlearning is cross-entropy.
  assert.equal(r.unlearningUsed, "ce");
});

test("bad prune-unlearn options and inputs are one-line UserErrors", async () => {
  for (const bad of [{ threshold: 0 }, { threshold: 1.5 }, { maxDrop: -0.1 }, { epochs: 0 }, { holdout: 1 }, { lr: 0 }, { accept: 0 }, { unlearning: "both" as "ce" }, { featureWeight: -1 }, { rounds: 0 }, { rounds: 1.5 }, { rounds: 11 }, { bound: 0 }, { roundDrop: -0.1 }, { roundDrop: 2 }]) {
    assert.throws(() => checkPruneUnlearnOptions(bad), (e: unknown) => e instanceof UserError && !e.message.includes("\n"), JSON.stringify(bad));
  }
  await assert.rejects(pruneUnlearn(model, { clean }, []), UserError);
  await assert.rejects(pruneUnlearn(model, { clean }, [besideTrigger()], { layer: "nope", rounds: 1 }), UserError);
  await assert.rejects(pruneUnlearn(model, { clean }, [{ ...besideTrigger(), label: 9 }], { rounds: 1 }), UserError);
  await assert.rejects(pruneUnlearn(model, { clean }, [besideTrigger()], { rounds: 2, holdout: 0, inputScale: 1 }), (e: unknown) => e instanceof UserError && /holdout/.test(e.message));
});

test("prune-unlearn --rounds on tiny data: later rounds re-invert, and each is kept, undone or stops as recorded", async () => {
  const r = await pruneUnlearn(model, { clean, poisoned }, [besideTrigger()], { epochs: 1, seed: 1, rounds: 2, inputScale: 1 });
  assert.equal(r.rounds.length, 1);
  const q = r.rounds[0];
  assert.equal(q.round, 2);
  assert.deepEqual(q.fresh.map((f) => f.label), [0]);
  const f = q.fresh[0];
  assert.ok(f.l1Norm > 0 && f.success >= 0 && f.success <= 1);
  // The bound is --bound (3) times the first trigger's L1 norm (12 mask pixels).
  assert.equal(f.bound, 36);
  const still = f.l1Norm <= f.bound && f.success > r.settings.accept;
  assert.equal(q.outcome === "removed", !still);
  if (q.outcome === "kept") assert.equal(r.triggersUsed, 2);
  else assert.equal(r.triggersUsed, 1);
  if (q.outcome !== "removed") assert.ok(Number.isFinite(q.heldOutAccuracy));
  // rounds = 1: no re-inversion; the default (3) needs the input scale to re-invert.
  assert.deepEqual((await pruneUnlearn(model, { clean }, [besideTrigger()], { epochs: 1, seed: 1, rounds: 1 })).rounds, []);
  await assert.rejects(pruneUnlearn(model, { clean }, [besideTrigger()], { epochs: 1 }), /needs inputScale/);
});
