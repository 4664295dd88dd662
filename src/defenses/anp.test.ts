import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { backward } from "../graph/autodiff.js";
import { numericGradient, relError } from "../test/gradcheck.js";
import { attr, tensor, type TensorData } from "../graph/ir.js";
import { memoryDataset } from "../io/dataset.js";
import { zooCnn } from "../model/archs.js";
import { forwardGraph, predictLabels } from "../model/forward.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { paramValues, withParams } from "../model/params.js";
import { Session } from "../runtime/session.js";
import { backdooredModel, cleanImages, cleanSet, H, poisonedSet } from "../test/tiny-patch-mlp.js";
import { mulberry32 } from "../util/random.js";
import { anp, anpPrunedModel, anpSites, checkAnpOptions, insertAnpPerturbation, learnAnpMasks } from "./anp.js";

const rand = mulberry32(99);
const randn = (n: number, s = 1) => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * s);

/** A tiny zoo CNN (3 convs, a hidden dense layer) with non-zero biases, so every noise term matters. */
function tinyCnn(): Model {
  const m = lowerModel(zooCnn({ inputShape: [16, 16, 1], numClasses: 3, filters: [2, 3, 2], hidden: 4, seed: 5 }));
  const upd = new Map<string, TensorData>();
  for (const [k, t] of paramValues(m)) if (t.shape.length === 1) upd.set(k, tensor("float32", t.shape, randn(t.data.length, 0.3)));
  return withParams(m, upd);
}

test("ANP sites: every conv and the hidden dense layer, not the output layer; unknown layers are UserErrors", () => {
  const m = tinyCnn();
  const sites = anpSites(m);
  assert.deepEqual(sites.map((s) => `${s.layer}:${s.kind}:${s.units}`), ["conv_1:conv:2", "conv_2:conv:3", "conv_3:conv:2", "fc_1:dense:4"]);
  assert.deepEqual(anpSites(m, ["conv_2"]).map((s) => s.layer), ["conv_2"]);
  assert.throws(() => anpSites(m, ["output"]), UserError);
  assert.throws(() => anpSites(m, ["nope"]), UserError);
});

test("the ANP perturbation: identity at m = 1, δ = ξ = 0, and gradients match float64 finite differences", async () => {
  const m = tinyCnn();
  const sites = anpSites(m);
  const g = m.graph.clone("anp_check");
  const inputs = insertAnpPerturbation(g, sites);
  const x = randn(2 * 256, 1).map((v) => Math.abs(v));
  const feeds: Record<string, TensorData> = { [m.input]: tensor("float32", [2, 1, 16, 16], x) };
  const identity: Record<string, TensorData> = { ...feeds };
  inputs.forEach((inp, k) => {
    const u = sites[k].units;
    feeds[inp.mask] = tensor("float32", [u], Float32Array.from({ length: u }, () => 0.3 + 0.7 * rand()));
    feeds[inp.neuronNoise] = tensor("float32", [u], randn(u, 0.4));
    feeds[inp.biasNoise] = tensor("float32", [u], randn(u, 0.4));
    identity[inp.mask] = tensor("float32", [u], new Float32Array(u).fill(1));
    identity[inp.neuronNoise] = tensor("float32", [u], new Float32Array(u));
    identity[inp.biasNoise] = tensor("float32", [u], new Float32Array(u));
  });

  // Identity: the rewritten graph computes B's logits.
  const plain = await Session.create(forwardGraph(m));
  const want = (await plain.run(feeds))[m.logits].data as Float32Array;
  await plain.release();
  const idg = g.clone();
  idg.setOutputs([m.logits]);
  const s0 = await Session.create(idg);
  const got = (await s0.run(identity))[m.logits].data as Float32Array;
  await s0.release();
  assert.ok(relError(got, want) < 1e-5);

  // loss = Σ logits·R; gradients w.r.t. every mask and noise against central differences in float64.
  const r = g.constant(tensor("float32", [2, 3], randn(6)));
  const loss = g.op("ReduceSum", [g.op("Mul", [m.logits, r])], { keepdims: attr.int(0) });
  const fwd = g.clone();
  fwd.setOutputs([loss]);
  const wrt = inputs.flatMap((i) => [i.mask, i.neuronNoise, i.biasNoise]);
  const grads = backward(g, loss, wrt);
  g.setOutputs(wrt.map((w) => grads.get(w)!));
  const session = await Session.create(g);
  const out = await session.run(feeds);
  await session.release();
  for (const w of wrt) {
    const err = relError(out[grads.get(w)!].data as Float32Array, numericGradient(fwd, feeds, loss, w));
    assert.ok(err <= 1e-3, `d/d${w}: relative error ${err.toExponential(2)}`);
  }
});

test("ANP on the tiny patch backdoor: masks in [0, 1], pruned neurons silent, within the clean-accuracy budget", async () => {
  const model = await backdooredModel();
  const clean = cleanSet(400, 31);
  const test_ = cleanSet(200, 32);
  const poisoned = poisonedSet(120, 33);
  // The tiny MLP fits its task with large margins: the paper's ε = 0.4 cannot raise its loss, so a stronger
  // adversary is used to make some masks fall. (ANP does not remove this backdoor: it is spread over every
  // hidden unit. The bench measures ANP on the zoo.)
  const r = await anp(model, { clean, test: test_, poisoned }, { iterations: 60, batchSize: 64, eps: 0.9, seed: 2 });
  for (const mk of r.masks) for (const v of mk) assert.ok(v >= 0 && v <= 1);
  assert.equal(r.masks.length, r.sites.length);
  assert.ok(r.pruned.length > 0 && r.pruned.length <= r.belowThreshold);
  for (const p of r.pruned) assert.ok(p.mask < r.settings.threshold);
  assert.ok(r.heldOut.before - r.heldOut.after <= r.settings.maxDrop + 1e-12);
  // Pruned neurons: their kernel slice and bias are zero, so the hidden unit's output is 0 on every input.
  const values = paramValues(r.model);
  const g = forwardGraph(r.model, ["fc_1"]);
  const s = await Session.create(g);
  const act = (await s.run({ [r.model.input]: tensor("float32", [test_.size, 1, H, H], test_.read(0, test_.size)) }))["fc_1"].data as Float32Array;
  await s.release();
  for (const p of r.pruned) {
    const site = r.sites[p.site];
    assert.equal(values.get(site.bias)!.data[p.unit], 0);
    for (let i = 0; i < test_.size; i++) assert.equal(act[i * site.units + p.unit], 0);
  }
  // The evaluation is over the test set and the poisoned inputs as given.
  assert.equal(r.after.nClean, test_.size);
  const pred = await predictLabels(r.model, poisoned);
  const asr = pred.filter((q, i) => q === poisoned.labels![i]).length / poisoned.size;
  assert.ok(Math.abs(asr - r.after.asr!) < 1e-9);
});

test("learnAnpMasks with ε = 0 only fits the clean loss: masks stay near 1 on a network that already fits", async () => {
  const model = await backdooredModel();
  const d = cleanImages(128, 41);
  const sites = anpSites(model);
  const s = checkAnpOptions({ eps: 0, iterations: 10, batchSize: 64 });
  const { masks } = await learnAnpMasks(model, d.x, d.y, sites, s);
  const low = masks.flatMap((m) => Array.from(m)).filter((v) => v < s.threshold);
  assert.ok(low.length <= 2, `${low.length} masks fell below the threshold without an adversary`);
});

test("ANP: bad options and data are one-line UserErrors; pruning nothing returns B's weights", async () => {
  assert.throws(() => checkAnpOptions({ eps: -0.1 }), UserError);
  assert.throws(() => checkAnpOptions({ eps: 2 }), UserError);
  assert.throws(() => checkAnpOptions({ alpha: 1.5 }), UserError);
  assert.throws(() => checkAnpOptions({ lr: 0 }), UserError);
  assert.throws(() => checkAnpOptions({ iterations: 0 }), UserError);
  assert.throws(() => checkAnpOptions({ iterations: 1.5 }), UserError);
  assert.throws(() => checkAnpOptions({ threshold: 1 }), UserError);
  assert.throws(() => checkAnpOptions({ maxDrop: -1 }), UserError);
  assert.throws(() => checkAnpOptions({ holdout: 0 }), UserError);
  const model = await backdooredModel();
  await assert.rejects(anp(model, { clean: memoryDataset("nolabels", [1, H, H], cleanImages(8, 1).x, null) }), UserError);
  await assert.rejects(anp(model, { clean: cleanSet(1, 2) }), UserError);
  await assert.rejects(anp(model, { clean: cleanSet(20, 2) }, { layers: ["output"] }), UserError);
  const same = anpPrunedModel(model, anpSites(model), []);
  assert.deepEqual(paramValues(same).get(model.params[0].value)!.data, paramValues(model).get(model.params[0].value)!.data);
});
