import { test } from "node:test";
import assert from "node:assert/strict";
import { UserError } from "../errors.js";
import { triggerHits } from "../eval/evaluate.js";
import { tensor } from "../graph/ir.js";
import { maskChannels } from "../graph/transforms.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { initWeights, zooCnn } from "../model/archs.js";
import { batchTensor, forwardGraph, predictLabels } from "../model/forward.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";
import { decodeImageBuffer, encodePng } from "../io/images.js";
import { triggerPngRole, triggerPngs } from "./nc-report.js";
import { translatedSource } from "./shift-evidence.js";
import {
  checkNcPruneOptions, checkTrigger, checkUnlearnOptions, MOVED_STAMP_SEED, ncPrune, ncUnlearn, prunedNeuronsModel, pruneSite, stampedSource,
  shiftedTrigger, stampShare, triggerFromPngs, triggersFromReport, type ReversedTrigger,
} from "./nc-mitigation.js";
import { backdooredModel, cleanImages, cleanSet, H, K, mlpArch, PER, poisonedSet, TARGET, W } from "../test/tiny-patch-mlp.js";

/** The true trigger as a (mask, pattern) pair: what a perfect reverse-engineering would find. */
const TRUE_TRIGGER: ReversedTrigger = (() => {
  const mask = new Float32Array(PER);
  for (let r = H - 3; r < H; r++) for (let q = W - 3; q < W; q++) mask[r * W + q] = 1;
  return { label: TARGET, mask, pattern: Float32Array.from(mask) };
})();

async function asrOf(model: Model, poisoned: Dataset): Promise<number> {
  const pred = await predictLabels(model, poisoned);
  return pred.filter((p, i) => p === poisoned.labels![i]).length / poisoned.size;
}

async function accuracyOf(model: Model, clean: Dataset): Promise<number> {
  const pred = await predictLabels(model, clean);
  return pred.filter((p, i) => p === clean.labels![i]).length / clean.size;
}

test("stamping: x' = (1 − m)·x + m·Δ, success counts only inputs not already of the target", () => {
  const x = Float32Array.from({ length: 2 * PER }, (_, i) => (i % 7) / 10);
  const t: ReversedTrigger = { label: 1, mask: new Float32Array(PER).fill(0.25), pattern: new Float32Array(PER).fill(2) };
  const s = stampedSource(memoryDataset("x", [1, H, W], x, null), t).read(0, 2);
  for (let i = 0; i < s.length; i++) assert.ok(Math.abs(s[i] - (0.75 * x[i] + 0.5)) < 1e-6);
  assert.deepEqual(triggerHits(Int32Array.of(1, 1, 0, 1), Int32Array.of(0, 1, 2, 3), 1), { n: 3, hits: 2 });
  const model = lowerModel(initWeights(mlpArch(4), 1));
  assert.throws(() => checkTrigger(model, { ...t, label: K }), UserError);
  assert.throws(() => checkTrigger(model, { ...t, mask: new Float32Array(PER - 1) }), UserError);
  assert.throws(() => checkTrigger(model, { ...t, mask: new Float32Array(PER).fill(1.5) }), UserError);
  // Unlearning stamps exactly round(ratio·count) distinct images of a batch.
  const batch = new Float32Array(10 * PER);
  const chosen = stampShare(batch, 10, [1, H, W], [TRUE_TRIGGER], 0.2, mulberry32(3));
  assert.equal(new Set(chosen).size, 2);
  for (let i = 0; i < 10; i++) assert.equal(batch[i * PER + PER - 1], chosen.includes(i) ? 1 : 0);
});

test("triggers read back from the PNGs Neural Cleanse draws (files and a detect result.json)", () => {
  const rand = mulberry32(4);
  const shape: [number, number, number] = [3, 5, 7];
  const hw = 35;
  const t = { label: 2, l1Norm: 0, mask: Float32Array.from({ length: hw }, () => rand()), pattern: Float32Array.from({ length: 3 * hw }, () => rand() * 255) };
  const png = triggerPngs(t, new Float32Array(3 * hw), shape, 1);
  const back = triggerFromPngs(png.mask, png.pattern, 2, shape, 1);
  assert.equal(back.label, 2);
  for (let i = 0; i < hw; i++) assert.ok(Math.abs(back.mask[i] - t.mask[i]) <= 0.5 / 255 + 1e-6);
  for (let i = 0; i < 3 * hw; i++) assert.ok(Math.abs(back.pattern[i] - t.pattern[i]) <= 0.5 + 1e-4);
  // The same through result.json's neuralCleanse section, with the input scale applied to the pattern.
  const report = { neuralCleanse: { flagged: [2], triggers: [{ label: 2, maskPng: png.mask.toString("base64"), patternPng: `data:image/png;base64,${png.pattern.toString("base64")}` }] } };
  const r = triggersFromReport(report, "result.json", shape, 255, 10);
  assert.deepEqual(r.flagged, [2]);
  assert.ok(Math.abs(r.triggers[0].pattern[5] - back.pattern[5] / 255) < 1e-6);
  assert.deepEqual(triggersFromReport({ neuralCleanse: { flagged: [], triggers: [] } }, "r", shape, 1, 10).flagged, []);
  assert.throws(() => triggersFromReport({ neuralCleanse: { flagged: [1], triggers: report.neuralCleanse.triggers } }, "r", shape, 1, 10), UserError);
  assert.throws(() => triggersFromReport({ strip: {} }, "r", shape, 1, 10), UserError);
  // A result of a model with more classes: the file and the label are named.
  assert.throws(() => triggersFromReport(report, "other/result.json", shape, 255, 2), (e: unknown) => e instanceof UserError && /^other\/result\.json: flagged label 2 is outside the model's 2 classes/.test(e.message));
  assert.throws(() => triggerFromPngs(png.mask, png.pattern, 2, [3, 7, 5], 1), UserError);
  assert.throws(() => triggerFromPngs(png.mask, png.pattern, 2, [1, 5, 7], 1), UserError);
});

test("trigger PNGs say which picture they are; a swapped mask and pattern is an error, chunk-less PNGs read as before", () => {
  const rand = mulberry32(5);
  const shape: [number, number, number] = [3, 5, 7];
  const t = { label: 3, l1Norm: 0, mask: Float32Array.from({ length: 35 }, () => rand()), pattern: Float32Array.from({ length: 105 }, () => rand() * 255) };
  const png = triggerPngs(t, new Float32Array(105), shape, 1);
  assert.deepEqual(triggerPngRole(png.mask), { role: "mask", file: "label_3_mask.png" });
  assert.deepEqual(triggerPngRole(png.pattern), { role: "pattern", file: "label_3_pattern.png" });
  assert.deepEqual(triggerPngRole(png.trigger), { role: "trigger", file: "label_3_trigger.png" });
  assert.deepEqual(triggerPngRole(png.clean), { role: "clean", file: "clean_example.png" });
  assert.deepEqual(triggerPngRole(triggerPngs({ ...t, family: "blend" }, new Float32Array(105), shape, 1).pattern), { role: "pattern", file: "label_3_blend_pattern.png" });
  const good = triggerFromPngs(png.mask, png.pattern, 3, shape, 1);

  const names = { mask: "m.png", pattern: "p.png", options: { mask: "--mask", pattern: "--pattern" } };
  const error = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof UserError, String(e));
      return e.message;
    }
    assert.fail("no error");
  };
  assert.equal(
    error(() => triggerFromPngs(png.pattern, png.mask, 3, shape, 1, names)),
    "--mask m.png is a reversed trigger's pattern (written by badnet detect as label_3_pattern.png), not a mask: are --mask and --pattern swapped?",
  );
  // Only the pattern wrong (a mask given twice): still the swap question, about the pattern.
  assert.equal(
    error(() => triggerFromPngs(png.mask, png.mask, 3, shape, 1, names)),
    "--pattern p.png is a reversed trigger's mask (written by badnet detect as label_3_mask.png), not a pattern: are --mask and --pattern swapped?",
  );
  // Another of detect's pictures is named for what it is; no swap question.
  assert.equal(
    error(() => triggerFromPngs(png.mask, png.trigger, 3, shape, 1, names)),
    "--pattern p.png is a reversed trigger's pattern·mask picture (written by badnet detect as label_3_trigger.png), not a pattern",
  );
  assert.match(error(() => triggerFromPngs(png.stamped, png.pattern, 3, shape, 1)), /^mask is a clean example stamped with a reversed trigger \(written by badnet detect as label_3_stamped\.png\), not a mask$/);
  // A swapped pair in a result.json (the base64 copies carry the chunks too).
  const report = { neuralCleanse: { flagged: [3], triggers: [{ label: 3, maskPng: png.pattern.toString("base64"), patternPng: png.mask.toString("base64") }] } };
  assert.equal(
    error(() => triggersFromReport(report, "d/result.json", shape, 1, 10)),
    "d/result.json label 3 mask is a reversed trigger's pattern (written by badnet detect as label_3_pattern.png), not a mask: are the mask and the pattern swapped?",
  );

  // A mask and a pattern of different triggers, or a trigger used for another label than it was drawn for.
  const png5 = triggerPngs({ ...t, label: 5 }, new Float32Array(105), shape, 1);
  const blend3 = triggerPngs({ ...t, family: "blend" }, new Float32Array(105), shape, 1);
  const targeted = { ...names, label: "--target 3" };
  assert.equal(
    error(() => triggerFromPngs(png.mask, png5.pattern, 3, shape, 1, targeted)),
    "--mask m.png is from label 3's trigger (label_3_mask.png) but --pattern p.png from label 5's trigger (label_5_pattern.png): give the mask and the pattern of one trigger",
  );
  assert.equal(
    error(() => triggerFromPngs(png.mask, blend3.pattern, 3, shape, 1, targeted)),
    "--mask m.png is from label 3's trigger (label_3_mask.png) but --pattern p.png from label 3's blend-family trigger (label_3_blend_pattern.png): give the mask and the pattern of one trigger",
  );
  assert.equal(
    error(() => triggerFromPngs(png5.mask, png5.pattern, 3, shape, 1, targeted)),
    "--mask m.png is from label 5's trigger (label_5_mask.png), not label 3 as --target 3 says",
  );
  assert.equal(triggerFromPngs(blend3.mask, blend3.pattern, 3, shape, 1, targeted).label, 3);
  const misfiled = { neuralCleanse: { flagged: [3], triggers: [{ label: 3, maskPng: png5.mask.toString("base64"), patternPng: png5.pattern.toString("base64") }] } };
  assert.equal(error(() => triggersFromReport(misfiled, "d/result.json", shape, 1, 10)), "d/result.json label 3 mask is from label 5's trigger (label_5_mask.png), not label 3 as the result says");
  // Only one image carries the chunk: it alone is checked against the label.
  assert.equal(triggerFromPngs(png.mask, encodePng(decodeImageBuffer(png5.pattern, "x").data, 7, 5, 3), 3, shape, 1).label, 3);

  // The same pixels without our chunk (another program's PNGs, or older ones): read as before, unchecked.
  const plain = (b: Buffer) => {
    const d = decodeImageBuffer(b, "x");
    return encodePng(d.data, d.width, d.height, d.channels);
  };
  assert.equal(triggerPngRole(plain(png.mask)), undefined);
  assert.deepEqual(triggerFromPngs(plain(png.mask), plain(png.pattern), 3, shape, 1), good);
  assert.equal(triggerFromPngs(plain(png.mask), png.pattern, 3, shape, 1).label, 3);
  // Unchecked means unchecked: a chunk-less swapped pair is caught only by its shape, as before.
  assert.throws(() => triggerFromPngs(plain(png.pattern), plain(png.mask), 3, shape, 1), /channel/);
});

test("prune site: default is the output Dense's input; zeroing weights equals masking the neurons", async () => {
  const model = lowerModel(initWeights(mlpArch(16), 2));
  const site = pruneSite(model);
  assert.equal(site.layer, "fc_1");
  assert.equal(site.units, 16);
  assert.throws(() => pruneSite(model, "nope"), UserError);
  assert.throws(() => pruneSite(model, "input"), UserError);

  // A small CNN: conv_3 is pruned through its own kernel/bias (ReLU and pooling keep zeros at zero).
  const cnn = lowerModel(zooCnn({ inputShape: [24, 24, 1], numClasses: 3, filters: [4, 6, 8], hidden: 10, seed: 4 }));
  for (const [m, layer] of [[model, undefined], [model, "flatten_1"], [cnn, "conv_3"], [cnn, "pool_3"], [cnn, undefined]] as const) {
    const s = pruneSite(m, layer);
    const neurons = [0, 2, 3];
    const pruned = prunedNeuronsModel(m, s, neurons);
    const g = forwardGraph(m);
    const mask = new Float32Array(s.units).fill(1);
    for (const j of neurons) mask[j] = 0;
    maskChannels(g, s.value, g.constant(tensor("float32", [s.units], mask)));
    const rand = mulberry32(9);
    const x = Float32Array.from({ length: 5 * m.inputShape.reduce((a, b) => a * b, 1) }, () => rand());
    const masked = await Session.create(g);
    const direct = await Session.create(forwardGraph(pruned));
    const a = (await masked.run({ input: batchTensor(x, m.inputShape) })).logits.data as Float32Array;
    const b = (await direct.run({ input: batchTensor(x, m.inputShape) })).logits.data as Float32Array;
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-4, `${m.name} ${layer ?? "(default)"}: ${a[i]} vs ${b[i]}`);
    await masked.release();
    await direct.release();
  }
});

test("nc-prune drives the trigger's success below the threshold; pruned rows are zero in the Keras spec", async () => {
  const model = await backdooredModel();
  const clean = cleanSet(200, 61);
  const testSet = cleanSet(120, 62);
  const poisoned = poisonedSet(120, 63);
  assert.ok((await asrOf(model, poisoned)) > 0.9, "the test model must carry the backdoor");
  const r = await ncPrune(model, { clean, test: testSet, poisoned }, [TRUE_TRIGGER], { threshold: 0.05, maxDrop: 0.3, step: 0.05 });
  assert.equal(r.stop, "threshold");
  assert.equal(r.site.layer, "fc_1");
  const last = r.curve[r.curve.length - 1];
  assert.ok(last.triggerSuccess! < 0.05);
  assert.equal(last.channelsPruned, r.pruned.length);
  assert.ok(r.curve[0].triggerSuccess! > 0.9 && r.curve[0].channelsPruned === 0);
  assert.ok(r.pruned.length > 0 && r.pruned.length < 32);
  for (let i = 1; i < r.curve.length; i++) assert.ok(r.curve[i].channelsPruned > r.curve[i - 1].channelsPruned);
  // Neurons ranked by activation increase under the trigger, largest first.
  for (let i = 1; i < r.ranking.length; i++) assert.ok(r.gap[r.ranking[i - 1]] >= r.gap[r.ranking[i]]);
  assert.deepEqual(r.pruned, r.ranking.slice(0, r.pruned.length));

  // The repaired network: the output kernel's rows of pruned neurons are zero in the Keras spec, others intact.
  const out = r.model.spec!.layers.find((l) => l.name === "output")!.weights.find((w) => w.name === "kernel:0")!;
  const orig = model.spec!.layers.find((l) => l.name === "output")!.weights.find((w) => w.name === "kernel:0")!;
  for (let j = 0; j < 32; j++)
    for (let c = 0; c < K; c++) assert.equal(out.data[j * K + c], r.pruned.includes(j) ? 0 : orig.data[j * K + c]);

  // Before/after on the test data and the real poisoned inputs.
  assert.ok(r.before.triggerSuccess! > 0.9 && r.after.triggerSuccess! < 0.2);
  assert.ok(r.after.asr! < r.before.asr! - 0.5);
  assert.ok(Math.abs(r.after.asr! - (await asrOf(r.model, poisoned))) < 1e-9);
  assert.ok(r.before.cleanAccuracy - r.after.cleanAccuracy <= 0.3);
  assert.equal(r.g.clean.n, testSet.size);
  assert.equal(r.g.poisoned!.n, poisoned.size);
  assert.ok(r.g.poisoned!.flagged + r.g.poisoned!.attackSuccess <= poisoned.size);
});

test("nc-prune: a position-free trigger is stamped at a random position per image, ranked and stopped on that", async () => {
  const model = await backdooredModel();
  const clean = cleanSet(200, 81);
  const rolls: [number, number][] = [[-3, -3], [-3, 0], [0, -3]];
  const moved = { ...TRUE_TRIGGER, rolls };
  const hits = triggerHits(await predictLabels(model, translatedSource(clean, moved, MOVED_STAMP_SEED, rolls)), clean.labels!, TARGET);
  const r = await ncPrune(model, { clean }, [moved], { threshold: 1e-9, maxDrop: 0.02, step: 0.05 });
  // The curve's first point is B on the moved stamps (the tiny model's backdoor answers at the corner only).
  assert.equal(r.curve[0].triggerSuccess, hits.hits / hits.n);
  const found = await ncPrune(model, { clean }, [TRUE_TRIGGER], { threshold: 1e-9, maxDrop: 0.02, step: 0.05 });
  assert.ok(found.curve[0].triggerSuccess! > 0.9 && r.curve[0].triggerSuccess! < found.curve[0].triggerSuccess!);
});

test("nc-prune stops at --max-drop and keeps the last network within it", async () => {
  const model = await backdooredModel();
  const clean = cleanSet(200, 71);
  // A threshold that cannot be met without wrecking accuracy: stop on the drop limit instead.
  const r = await ncPrune(model, { clean }, [TRUE_TRIGGER], { threshold: 1e-9, maxDrop: 0.02, step: 0.05 });
  assert.equal(r.stop, "max-drop");
  const acc0 = r.curve[0].cleanAccuracy;
  const kept = r.curve.find((p) => p.channelsPruned === r.pruned.length)!;
  assert.ok(acc0 - kept.cleanAccuracy <= 0.02 + 1e-12);
  assert.ok(acc0 - r.curve[r.curve.length - 1].cleanAccuracy > 0.02);
});

test("unlearning removes the backdoor and keeps clean accuracy within a few points", async () => {
  const model = await backdooredModel();
  // One epoch of 50 batches of 32 at the default learning rate.
  const clean = cleanSet(1600, 81);
  const poisoned = poisonedSet(120, 82);
  const before = await asrOf(model, poisoned);
  assert.ok(before > 0.9);
  const r = await ncUnlearn(model, { clean, poisoned }, [TRUE_TRIGGER], { epochs: 1, ratio: 0.2, seed: 1, holdout: 0 });
  assert.equal(r.history.length, 1);
  assert.equal(r.chosenEpoch, 1);
  assert.ok(Math.abs(r.before.asr! - before) < 1e-9);
  assert.ok(r.after.asr! < 0.2, `ASR after unlearning ${r.after.asr}`);
  assert.ok(r.after.triggerSuccess! < 0.2);
  const acc0 = await accuracyOf(model, clean);
  const acc1 = await accuracyOf(r.model, clean);
  assert.ok(acc0 - acc1 <= 0.03, `clean accuracy ${acc0} → ${acc1}`);
  assert.equal(r.after.cleanAccuracy, acc1);
  // The fine-tuned network keeps the Keras architecture (spec follows the new weights).
  assert.ok(r.model.spec);
  assert.ok(r.g.poisoned && r.g.poisoned.flagged > 0);
});

test("unlearning with a held-out split keeps the best-scoring epoch and stops after `patience` epochs without gain", async () => {
  const model = await backdooredModel();
  const clean = cleanSet(400, 83);
  const r = await ncUnlearn(model, { clean }, [TRUE_TRIGGER], { epochs: 6, patience: 1, holdout: 0.25, seed: 2 });
  // Epoch 0 is B on the held-out images; the kept epoch has the best score of those run.
  assert.equal(r.history[0].epoch, 0);
  assert.ok(r.history[0].heldOutTriggerSuccess > 0.9);
  const run = r.history.slice(1);
  const best = Math.max(...run.map((h) => h.score));
  assert.equal(r.history[r.chosenEpoch].score, best);
  for (const h of run) assert.ok(Math.abs(h.score - (h.heldOutAccuracy - h.heldOutTriggerSuccess)) < 1e-12);
  // Stopped early only after one epoch without improvement.
  if (run.length < 6) assert.equal(run.length, r.chosenEpoch + 1);
  assert.ok(r.after.triggerSuccess! < 0.2);
});

test("unlearning rounds re-reverse the flagged label's trigger on the repaired network and unlearn it too", async () => {
  const model = await backdooredModel();
  const clean = cleanSet(300, 84);
  const r = await ncUnlearn(model, { clean }, [TRUE_TRIGGER], { rounds: 2, epochs: 2, patience: 1, inputScale: 255, seed: 3 });
  assert.equal(r.triggersUsed, 2);
  assert.deepEqual([...new Set(r.history.map((h) => h.round))], [0, 1, 2]);
  assert.ok(r.chosenEpoch >= 1);
  await assert.rejects(ncUnlearn(model, { clean }, [TRUE_TRIGGER], { rounds: 2 }), /inputScale/);
});

test("a shifted trigger moves mask and pattern together; uncovered pixels get mask 0", () => {
  const t: ReversedTrigger = { label: 0, mask: new Float32Array(PER), pattern: new Float32Array(PER) };
  t.mask[2 * W + 3] = 0.8;
  t.pattern[2 * W + 3] = 0.5;
  const s = shiftedTrigger(t, [1, H, W], 1, -2, 0.5);
  assert.ok(Math.abs(s.mask[3 * W + 1] - 0.4) < 1e-7);
  assert.equal(s.pattern[3 * W + 1], 0.5);
  assert.equal(s.mask.reduce((a, b) => a + b, 0), s.mask[3 * W + 1]);
  const out = shiftedTrigger(t, [1, H, W], H, 0);
  assert.equal(out.mask.reduce((a, b) => a + b, 0), 0);
  // With augmentation every stamped image still gets exactly one (moved) copy of the trigger's mass or less.
  const batch = new Float32Array(10 * PER);
  const chosen = stampShare(batch, 10, [1, H, W], [TRUE_TRIGGER], 0.5, mulberry32(5), { jitter: 2, minStrength: 1 });
  for (let i = 0; i < 10; i++) {
    const sum = batch.subarray(i * PER, (i + 1) * PER).reduce((a, b) => a + b, 0);
    if (chosen.includes(i)) assert.ok(sum >= 1 && sum <= 9);
    else assert.equal(sum, 0);
  }
});

test("option and input errors are UserErrors", async () => {
  assert.throws(() => checkUnlearnOptions({ patience: 0 }), UserError);
  assert.throws(() => checkUnlearnOptions({ rounds: 0 }), UserError);
  assert.throws(() => checkUnlearnOptions({ holdout: 1 }), UserError);
  assert.throws(() => checkUnlearnOptions({ jitter: -1 }), UserError);
  assert.throws(() => checkUnlearnOptions({ jitter: 12 }, [1, 12, 12]), UserError);
  assert.throws(() => checkUnlearnOptions({ minStrength: 0 }), UserError);
  assert.throws(() => checkUnlearnOptions({ ratio: -1 }), UserError);
  assert.throws(() => checkUnlearnOptions({ ratio: 0 }), UserError);
  assert.throws(() => checkUnlearnOptions({ epochs: 0 }), UserError);
  assert.throws(() => checkUnlearnOptions({ lr: 0 }), UserError);
  assert.throws(() => checkNcPruneOptions({ threshold: 0 }), UserError);
  assert.throws(() => checkNcPruneOptions({ threshold: 2 }), UserError);
  assert.throws(() => checkNcPruneOptions({ maxDrop: -0.1 }), UserError);
  assert.throws(() => checkNcPruneOptions({ step: 0 }), UserError);
  const model = lowerModel(initWeights(mlpArch(8), 1));
  const clean = cleanSet(8, 91);
  await assert.rejects(ncPrune(model, { clean }, [TRUE_TRIGGER], { layer: "conv_9" }), UserError);
  await assert.rejects(ncPrune(model, { clean }, []), UserError);
  await assert.rejects(ncUnlearn(model, { clean }, [TRUE_TRIGGER], { ratio: -1 }), UserError);
  await assert.rejects(ncUnlearn(model, { clean: memoryDataset("nolabels", [1, H, W], cleanImages(4, 1).x, null) }, [TRUE_TRIGGER]), UserError);
});
