import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { tensor, type TensorData } from "../graph/ir.js";
import { memoryDataset } from "../io/dataset.js";
import { zooCnn } from "../model/archs.js";
import { lowerModel } from "../model/lower.js";
import { Session } from "../runtime/session.js";
import { backdooredModel, cleanImages, cleanSet, H, poisonedSet, stampPatch, W } from "../test/tiny-patch-mlp.js";
import { numericGradient, relError } from "../test/gradcheck.js";
import { buildStepGraph, oneHot } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { checkFeatureUnlearnOptions, FEATURE_TARGET_INPUT, featureUnlearn, featureUnlearnLoss } from "./feature-unlearn.js";
import { outputDense } from "./nc-mitigation.js";

test("feature-unlearning loss: gradients w.r.t. the parameters match float64 finite differences", async () => {
  const rand = mulberry32(13);
  const m = lowerModel(zooCnn({ inputShape: [16, 16, 1], numClasses: 3, filters: [2, 2, 2], hidden: 4, seed: 5 }));
  const feature = outputDense(m).x;
  const step = buildStepGraph(m, { optimizer: { kind: "sgd", lr: 1, momentum: 0 }, loss: featureUnlearnLoss(feature, 4, 1.7, 0.6), pooledRelus: false, update: "graph" });
  const feeds: Record<string, TensorData> = {
    input: tensor("float32", [3, 1, 16, 16], Float32Array.from({ length: 768 }, () => rand())),
    target: tensor("float32", [3, 3], oneHot(Int32Array.of(2, 0, 1), 3)),
    [FEATURE_TARGET_INPUT]: tensor("float32", [3, 4], Float32Array.from({ length: 12 }, () => rand())),
    lr: tensor("float32", [], Float32Array.of(1)),
  };
  for (const [p, t] of step.params) feeds[p] = t;
  const slots = step.optimizer!.slots;
  const s = await Session.create(step.graph);
  // The first conv kernel (below the matched feature) and the output kernel (only through the cross-entropy).
  for (const slot of [slots[0], slots[slots.length - 2]]) {
    const out = await s.run(feeds, [slot.next]);
    const p = feeds[slot.param].data as Float32Array;
    const got = Float32Array.from(out[slot.next].data as Float32Array, (v, i) => p[i] - v);
    const fwd = step.graph.clone();
    fwd.setOutputs([step.loss]);
    const err = relError(got, numericGradient(fwd, feeds, step.loss, slot.param));
    assert.ok(err <= 1e-3, `dL/d${slot.param} relative error ${err.toExponential(2)}`);
  }
  await s.release();
});

test("feature unlearning on the tiny patch backdoor: epochs recorded, the real trigger's success falls", async () => {
  const model = await backdooredModel();
  const poisoned = poisonedSet(120, 73);
  // The real trigger as the "reversed" one: the test checks the loop, not Neural Cleanse.
  const mask = new Float32Array(H * W);
  stampPatch(mask, 0);
  const pattern = Float32Array.from(mask);
  const r = await featureUnlearn(model, { clean: cleanSet(320, 72), test: cleanSet(200, 74), poisoned }, [{ label: 0, mask, pattern }], { epochs: 3, seed: 1 });
  assert.ok(r.history.length >= 2 && r.history[0].epoch === 0);
  for (const e of r.history.slice(1)) assert.ok(Number.isFinite(e.loss) && e.loss >= 0);
  assert.ok(r.after.asr! < r.before.asr!, `ASR ${r.before.asr} → ${r.after.asr}`);
  assert.equal(r.model.name, `${model.name}_feature_unlearned`);
});

test("feature unlearning: bad options and data are one-line UserErrors", async () => {
  assert.throws(() => checkFeatureUnlearnOptions({ weight: -1 }), UserError);
  assert.throws(() => checkFeatureUnlearnOptions({ epochs: 0 }), UserError);
  assert.throws(() => checkFeatureUnlearnOptions({ holdout: 0 }), UserError);
  assert.throws(() => checkFeatureUnlearnOptions({ ratio: 0 }), UserError);
  const model = await backdooredModel();
  const t = { label: 0, mask: new Float32Array(H * W), pattern: new Float32Array(H * W) };
  await assert.rejects(featureUnlearn(model, { clean: memoryDataset("nolabels", [1, H, H], cleanImages(8, 1).x, null) }, [t]), UserError);
  await assert.rejects(featureUnlearn(model, { clean: cleanSet(1, 2) }, [t]), UserError);
  await assert.rejects(featureUnlearn(model, { clean: cleanSet(20, 2) }, []), UserError);
});
