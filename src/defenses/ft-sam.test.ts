import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { tensor, type TensorData } from "../graph/ir.js";
import { memoryDataset } from "../io/dataset.js";
import { zooCnn } from "../model/archs.js";
import { lowerModel } from "../model/lower.js";
import { paramValues } from "../model/params.js";
import { Session } from "../runtime/session.js";
import { backdooredModel, cleanImages, cleanSet, H, poisonedSet } from "../test/tiny-patch-mlp.js";
import { numericGradient, relError } from "../test/gradcheck.js";
import { oneHot } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { checkFtSamOptions, ftSam, lossGradGraph, samPerturbation } from "./ft-sam.js";

test("FT-SAM gradient graph: dCE/dθ matches float64 finite differences", async () => {
  const rand = mulberry32(21);
  const m = lowerModel(zooCnn({ inputShape: [16, 16, 1], numClasses: 3, filters: [2, 2, 2], hidden: 4, seed: 8 }));
  const gg = lossGradGraph(m);
  const feeds: Record<string, TensorData> = {
    [m.input]: tensor("float32", [3, 1, 16, 16], Float32Array.from({ length: 768 }, () => rand())),
    target: tensor("float32", [3, 3], oneHot(Int32Array.of(2, 0, 1), 3)),
  };
  for (const [k, t] of paramValues(m)) feeds[k] = t;
  const s = await Session.create(gg.graph);
  const out = await s.run(feeds);
  await s.release();
  const fwd = gg.graph.clone();
  fwd.setOutputs([gg.loss]);
  for (const p of [m.params[0].value, m.params[m.params.length - 2].value]) {
    const err = relError(out[gg.grads.get(p)!].data as Float32Array, numericGradient(fwd, feeds, gg.loss, p));
    assert.ok(err <= 1e-3, `dCE/d${p} relative error ${err.toExponential(2)}`);
  }
});

test("samPerturbation: ASAM's ε has norm ρ in |θ|-scaled units and points along T²g; SAM's along g", () => {
  const theta = [Float32Array.of(1, -2, 0), Float32Array.of(0.5)];
  const grad = [Float32Array.of(0.3, 0.1, -0.4), Float32Array.of(1)];
  const eps = samPerturbation(theta, grad, 2, 0.01, true);
  let n = 0;
  eps.forEach((e, k) => e.forEach((v, i) => (n += (v / (Math.abs(theta[k][i]) + 0.01)) ** 2)));
  assert.ok(Math.abs(Math.sqrt(n) - 2) < 1e-5, `scaled norm ${Math.sqrt(n)}`);
  // Larger weights move more for the same gradient: ε_i / g_i ∝ T_i².
  assert.ok(Math.abs(eps[0][0] / 0.3 / ((eps[0][1] / 0.1)) - (1.01 ** 2 / 2.01 ** 2)) < 1e-5);
  const plain = samPerturbation(theta, grad, 1, 0, false);
  const gn = Math.hypot(0.3, 0.1, -0.4, 1);
  assert.ok(Math.abs(plain[1][0] - 1 / gn) < 1e-6);
  assert.deepEqual(Array.from(samPerturbation(theta, [new Float32Array(3), new Float32Array(1)], 2, 0.01, true)[0]), [0, 0, 0]);
});

test("FT-SAM on the tiny patch backdoor: epochs recorded, kept epoch within the held-out budget", async () => {
  const model = await backdooredModel();
  const poisoned = poisonedSet(120, 73);
  const r = await ftSam(model, { clean: cleanSet(320, 72), test: cleanSet(200, 74), poisoned }, { epochs: 2, seed: 1 });
  assert.equal(r.history.length, 3);
  assert.ok(r.chosenEpoch >= 1);
  for (const e of r.history.slice(1)) assert.ok(Number.isFinite(e.loss) && e.loss >= 0);
  const kept = r.history[r.chosenEpoch];
  if (r.history.slice(1).some((e) => r.history[0].heldOutAccuracy - e.heldOutAccuracy <= r.settings.maxDrop)) {
    assert.ok(r.history[0].heldOutAccuracy - kept.heldOutAccuracy <= r.settings.maxDrop + 1e-12);
  }
  assert.equal(r.after.nPoisoned, poisoned.size);
  assert.equal(r.model.name, `${model.name}_ft_sam`);
});

test("FT-SAM: bad options and data are one-line UserErrors", async () => {
  assert.throws(() => checkFtSamOptions({ epochs: 0 }), UserError);
  assert.throws(() => checkFtSamOptions({ rho: 0 }), UserError);
  assert.throws(() => checkFtSamOptions({ eta: -1 }), UserError);
  assert.throws(() => checkFtSamOptions({ lr: 0 }), UserError);
  assert.throws(() => checkFtSamOptions({ holdout: 0 }), UserError);
  const model = await backdooredModel();
  await assert.rejects(ftSam(model, { clean: memoryDataset("nolabels", [1, H, H], cleanImages(8, 1).x, null) }), UserError);
  await assert.rejects(ftSam(model, { clean: cleanSet(1, 2) }), UserError);
});
