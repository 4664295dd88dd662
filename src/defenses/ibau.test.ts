import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { numericGradient, relError } from "../test/gradcheck.js";
import { tensor, type TensorData } from "../graph/ir.js";
import { memoryDataset } from "../io/dataset.js";
import { zooCnn } from "../model/archs.js";
import { lowerModel } from "../model/lower.js";
import { Session } from "../runtime/session.js";
import { backdooredModel, cleanImages, cleanSet, H, poisonedSet } from "../test/tiny-patch-mlp.js";
import { oneHot } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { checkIbauOptions, ibau, perturbGraph, projectL2, universalPerturbation } from "./ibau.js";

test("the universal-perturbation graph: dCE/dδ matches float64 finite differences", async () => {
  const rand = mulberry32(17);
  const m = lowerModel(zooCnn({ inputShape: [16, 16, 1], numClasses: 3, filters: [2, 3, 2], hidden: 4, seed: 6 }));
  const pg = perturbGraph(m);
  const feeds: Record<string, TensorData> = {
    [m.input]: tensor("float32", [2, 1, 16, 16], Float32Array.from({ length: 512 }, () => rand())),
    [pg.delta]: tensor("float32", [1, 1, 16, 16], Float32Array.from({ length: 256 }, () => (rand() - 0.5) * 0.2)),
    target: tensor("float32", [2, 3], oneHot(Int32Array.of(0, 2), 3)),
  };
  const s = await Session.create(pg.graph);
  const got = (await s.run(feeds))[pg.grad].data as Float32Array;
  await s.release();
  const fwd = pg.graph.clone();
  fwd.setOutputs([pg.loss]);
  const err = relError(got, numericGradient(fwd, feeds, pg.loss, pg.delta));
  assert.ok(err <= 1e-3, `dCE/dδ relative error ${err.toExponential(2)}`);
});

test("L2 projection and the universal perturbation stay inside the ball and raise the loss", async () => {
  const v = Float32Array.of(3, 4);
  projectL2(v, 1);
  assert.ok(Math.abs(Math.hypot(v[0], v[1]) - 1) < 1e-6 && Math.abs(v[0] / v[1] - 0.75) < 1e-6);
  assert.deepEqual(Array.from(projectL2(Float32Array.of(0.1, 0.1), 1)), [Math.fround(0.1), Math.fround(0.1)]);
  const model = await backdooredModel();
  const d = cleanImages(128, 51);
  const delta = await universalPerturbation(model, d.x, d.y, 2, 10, 64, mulberry32(1));
  assert.ok(Math.hypot(...delta) <= 2 + 1e-4);
  // The perturbed images are classified correctly less often than the clean ones.
  const acc = async (x: Float32Array) => {
    const { predictLabels } = await import("../model/forward.js");
    const p = await predictLabels(model, memoryDataset("x", [1, H, H], x, d.y));
    return p.filter((q, i) => q === d.y[i]).length / d.y.length;
  };
  const shifted = Float32Array.from(d.x, (v2, i) => v2 + delta[i % delta.length]);
  assert.ok((await acc(shifted)) < (await acc(d.x)));
});

test("i-BAU on the tiny patch backdoor: rounds recorded, kept round within the held-out budget", async () => {
  const model = await backdooredModel();
  const poisoned = poisonedSet(120, 53);
  const r = await ibau(model, { clean: cleanSet(400, 52), test: cleanSet(200, 54), poisoned }, { rounds: 3, seed: 1 });
  assert.equal(r.history.length, 4);
  assert.equal(r.history[0].round, 0);
  const kept = r.history[r.chosenRound];
  assert.ok(r.chosenRound >= 1);
  if (r.history[0].heldOutAccuracy - Math.max(...r.history.slice(1).map((h) => h.heldOutAccuracy)) <= r.settings.maxDrop) {
    assert.ok(r.history[0].heldOutAccuracy - kept.heldOutAccuracy <= r.settings.maxDrop + 1e-12);
  }
  assert.equal(r.settings.variant, "danskin");
  for (const h of r.history.slice(1)) assert.ok(h.deltaNorm <= r.settings.rms * Math.sqrt(H * H) + 1e-4);
  // The evaluation covers the test set and the poisoned inputs as given. (This variant does not remove the
  // tiny backdoor: the untargeted universal perturbation finds a natural direction, not the patch.)
  assert.equal(r.after.nClean, 200);
  assert.equal(r.after.nPoisoned, poisoned.size);
});

test("i-BAU: bad options and data are one-line UserErrors", async () => {
  assert.throws(() => checkIbauOptions({ rounds: 0 }), UserError);
  assert.throws(() => checkIbauOptions({ rms: 0 }), UserError);
  assert.throws(() => checkIbauOptions({ rms: 2 }), UserError);
  assert.throws(() => checkIbauOptions({ perturbSteps: 0 }), UserError);
  assert.throws(() => checkIbauOptions({ ratio: 0 }), UserError);
  assert.throws(() => checkIbauOptions({ lr: -1 }), UserError);
  assert.throws(() => checkIbauOptions({ holdout: 1 }), UserError);
  assert.throws(() => checkIbauOptions({ inputScale: 0 }), UserError);
  const model = await backdooredModel();
  await assert.rejects(ibau(model, { clean: memoryDataset("nolabels", [1, H, H], cleanImages(8, 1).x, null) }), UserError);
  await assert.rejects(ibau(model, { clean: cleanSet(1, 2) }), UserError);
});
