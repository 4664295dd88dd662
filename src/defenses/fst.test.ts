import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { backward } from "../graph/autodiff.js";
import { tensor, type TensorData } from "../graph/ir.js";
import { memoryDataset } from "../io/dataset.js";
import { zooCnn } from "../model/archs.js";
import { lowerModel } from "../model/lower.js";
import { paramValues } from "../model/params.js";
import { Session } from "../runtime/session.js";
import { numericGradient, relError } from "../test/gradcheck.js";
import { backdooredModel, cleanImages, cleanSet, H, poisonedSet, TARGET } from "../test/tiny-patch-mlp.js";
import { oneHot } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { checkFstOptions, cosine, cosineLr, fst, FST_DISTILL, fstLoss, linearHead, mixedTargets, projectNorm } from "./fst.js";

test("linearHead: the zoo CNN's output Dense layer, its bias and the width of the features it reads", () => {
  const m = lowerModel(zooCnn({ inputShape: [16, 16, 1], numClasses: 3, filters: [2, 2, 2], hidden: 4, seed: 8 }));
  const h = linearHead(m);
  assert.equal(m.graph.initializers.get(h.weight)!.data.length, 4 * 3);
  assert.equal(m.graph.initializers.get(h.bias!)!.data.length, 3);
  assert.equal(h.width, 4);
  assert.deepEqual(m.graph.shape(h.features).slice(1), [4]);
});

test("FST loss: d/dθ of CE + λ⟨W, W₀⟩/‖W₀‖² matches float64 finite differences (head and trunk)", async () => {
  const rand = mulberry32(5);
  const m = lowerModel(zooCnn({ inputShape: [16, 16, 1], numClasses: 3, filters: [2, 2, 2], hidden: 4, seed: 9 }));
  const head = linearHead(m);
  const w0 = tensor("float32", [4, 3], Float32Array.from({ length: 12 }, () => rand() - 0.5));
  const g = m.graph.clone();
  const target = g.addInput("target", "float32", ["N", 3]);
  const loss = fstLoss(head.weight, w0, 0.7)(g, m.logits, target);
  const ps = [head.weight, m.params[0].value];
  for (const p of ps) g.liftInitializer(p);
  const grads = backward(g, loss, ps);
  g.setOutputs([loss, ...ps.map((p) => grads.get(p)!)]);
  const feeds: Record<string, TensorData> = {
    [m.input]: tensor("float32", [3, 1, 16, 16], Float32Array.from({ length: 768 }, () => rand())),
    target: tensor("float32", [3, 3], oneHot(Int32Array.of(2, 0, 1), 3)),
  };
  const values = paramValues(m);
  for (const p of ps) feeds[p] = values.get(p)!;
  const s = await Session.create(g);
  const out = await s.run(feeds);
  await s.release();
  const fwd = g.clone();
  fwd.setOutputs([loss]);
  for (const p of ps) {
    const err = relError(out[grads.get(p)!].data as Float32Array, numericGradient(fwd, feeds, loss, p));
    assert.ok(err <= 1e-3, `d/d${p} relative error ${err.toExponential(2)}`);
  }
});

test("projectNorm, cosine and the cosine schedule", () => {
  const w = Float32Array.of(3, 4);
  projectNorm(w, 10);
  assert.deepEqual(Array.from(w), [6, 8]);
  const z = new Float32Array(2);
  projectNorm(z, 1);
  assert.deepEqual(Array.from(z), [0, 0]);
  assert.ok(Math.abs(cosine(Float32Array.of(1, 0), Float32Array.of(1, 1)) - Math.SQRT1_2) < 1e-7);
  assert.equal(cosine(Float32Array.of(1, 0), z), 0);
  assert.equal(cosineLr(0.1, 0, 4), 0.1);
  assert.ok(Math.abs(cosineLr(0.1, 2, 4) - 0.05) < 1e-12);
  assert.ok(cosineLr(0.1, 3, 4) > 0);
});

for (const tune of ["head", "all"] as const) {
  test(`FST (--tune ${tune}) on the tiny patch backdoor: the head moves away from B's, norm kept, backdoor weaker`, async () => {
    const model = await backdooredModel();
    const poisoned = poisonedSet(120, 73);
    const r = await fst(model, { clean: cleanSet(320, 72), test: cleanSet(200, 74), poisoned }, { shift: 1, tune, seed: 1 });
    assert.equal(r.history.length, r.settings.epochs + 1);
    const head = linearHead(model);
    const w0 = model.graph.initializers.get(head.weight)!.data as Float32Array;
    const w = r.model.graph.initializers.get(head.weight)!.data as Float32Array;
    const norm = (a: Float32Array) => Math.hypot(...a);
    assert.ok(Math.abs(norm(w) - norm(w0)) < 1e-3 * norm(w0), `‖W‖ ${norm(w)} vs ‖W₀‖ ${norm(w0)}`);
    assert.ok(r.history[r.chosenEpoch].cosine < 0.9, `cos ${r.history[r.chosenEpoch].cosine}`);
    if (tune === "head") {
      // The trunk is untouched: every parameter but the head's is B's.
      for (const p of model.params) {
        if (p.value === head.weight || p.value === head.bias) continue;
        assert.deepEqual(r.model.graph.initializers.get(p.value)!.data, model.graph.initializers.get(p.value)!.data, p.value);
      }
    }
    assert.ok(r.after.asr! < r.before.asr!, `ASR ${r.before.asr} → ${r.after.asr}`);
    assert.equal(r.model.name, `${model.name}_fst`);
  });
}

test("mixedTargets: (1−β)·label + β·softmax(B), the untrusted labels' share left out except on their own images", () => {
  const y = Int32Array.of(0, 2);
  const logits = Float32Array.of(0, Math.log(3), 0, /* row 2 */ 0, 0, Math.log(2));
  assert.deepEqual(Array.from(mixedTargets(y, logits, 3, 0)), [1, 0, 0, 0, 0, 1]);
  const close = (a: Float32Array, b: number[]) => a.every((v, i) => Math.abs(v - b[i]) < 1e-6);
  // β 0.5: row 1 softmax [0.2, 0.6, 0.2], row 2 [0.25, 0.25, 0.5].
  assert.ok(close(mixedTargets(y, logits, 3, 0.5), [0.6, 0.3, 0.1, 0.125, 0.125, 0.75]));
  // Label 1 untrusted: row 1 (label 0) renormalises [0.2, 0, 0.2]; row 2 (label 2) too: [1/3, 0, 2/3].
  assert.ok(close(mixedTargets(y, logits, 3, 1, [1]), [0.5, 0, 0.5, 1 / 3, 0, 2 / 3]));
  // On its own images an untrusted label keeps B's share.
  assert.ok(close(mixedTargets(Int32Array.of(1), Float32Array.of(0, Math.log(3), 0), 3, 1, [1]), [0.2, 0.6, 0.2]));
  // Each row still sums to 1.
  const t = mixedTargets(y, logits, 3, 0.3, [2]);
  for (let i = 0; i < 2; i++) assert.ok(Math.abs(t[3 * i] + t[3 * i + 1] + t[3 * i + 2] - 1) < 1e-6);
  assert.throws(() => mixedTargets(y, logits, 3, 0.5, [3]));
  assert.throws(() => mixedTargets(y, undefined, 3, 0.5));
});

test("FST: B's predictions in the targets by default only where labels are flagged", async () => {
  assert.equal(checkFstOptions({}).distill, 0);
  assert.equal(checkFstOptions({ untrusted: [2, 0, 2] }).distill, FST_DISTILL);
  assert.deepEqual(checkFstOptions({ untrusted: [2, 0, 2] }).untrusted, [0, 2]);
  assert.equal(checkFstOptions({ untrusted: [1], distill: 0 }).distill, 0);
  assert.throws(() => checkFstOptions({ distill: 1.5 }), UserError);
  const model = await backdooredModel();
  await assert.rejects(fst(model, { clean: cleanSet(40, 2) }, { untrusted: [7] }), UserError);
  // With the flagged label left out, the backdoor still weakens, whatever trains.
  for (const tune of ["head", "all"] as const) {
    const r = await fst(model, { clean: cleanSet(320, 72), test: cleanSet(200, 74), poisoned: poisonedSet(120, 73) }, { shift: 1, seed: 1, tune, untrusted: [TARGET] });
    assert.equal(r.settings.distill, FST_DISTILL);
    assert.ok(r.after.asr! < r.before.asr!, `--tune ${tune}: ASR ${r.before.asr} → ${r.after.asr}`);
  }
});

test("FST: the learning rate by what trains; bad options and data are one-line UserErrors", async () => {
  assert.equal(checkFstOptions({}).lr, 0.1);
  assert.equal(checkFstOptions({ tune: "all" }).lr, 0.01);
  assert.equal(checkFstOptions({ tune: "all", lr: 0.2 }).lr, 0.2);
  assert.throws(() => checkFstOptions({ epochs: 0 }), UserError);
  assert.throws(() => checkFstOptions({ shift: -1 }), UserError);
  assert.throws(() => checkFstOptions({ lr: 0 }), UserError);
  assert.throws(() => checkFstOptions({ holdout: 1 }), UserError);
  assert.throws(() => checkFstOptions({ tune: "trunk" as "head" }), UserError);
  const model = await backdooredModel();
  await assert.rejects(fst(model, { clean: memoryDataset("nolabels", [1, H, H], cleanImages(8, 1).x, null) }), UserError);
  await assert.rejects(fst(model, { clean: cleanSet(1, 2) }), UserError);
});
