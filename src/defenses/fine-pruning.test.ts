import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parse } from "../cli/command.js";
import { defenseCommandNamed } from "../cli/commands/index.js";
import { UserError } from "../errors.js";
import { tensor } from "../graph/ir.js";
import type { Dataset } from "../io/dataset.js";
import { writeKerasModel } from "../io/keras-save.js";
import { loadModel } from "../io/load-model.js";
import { argmaxRows, forwardGraph, predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { ReportData } from "../report/types.js";
import { parseResult } from "../report/schema.js";
import { downstreamNodes } from "../graph/transforms.js";
import { Session } from "../runtime/session.js";
import { train } from "../train/trainer.js";
import { finePrune } from "./fine-pruning.js";
import { channelMask, prunedModel, pruneTarget } from "./pruning.js";
import { holdoutSplit } from "../train/split.js";
import { SHAPE, tinyBackdoorData, trainTinyBackdoor } from "../test/tiny-backdoor.js";

const finePruneCommand = defenseCommandNamed("fine-prune");

// The tiny backdoored task of src/test/tiny-backdoor.ts (quadrant squares; a top-edge checkerboard → class 0).

let model: Model;
let valid: Dataset;
let poisoned: Dataset;
let dir: string;
let modelPath: string;

before(async () => {
  model = await trainTinyBackdoor();
  dir = mkdtempSync(join(tmpdir(), "fine-prune-test-"));
  ({ valid, poisoned } = await tinyBackdoorData(dir));
  modelPath = join(dir, "bd.h5");
  await writeKerasModel(modelPath, model.spec!);
});

after(() => rmSync(dir, { recursive: true, force: true }));

test("training with the channel mask keeps pruned channels' weights exactly zero", async () => {
  const target = pruneTarget(model);
  const channels = [1, 4, 7];
  const start = prunedModel(model, target, channels);
  const { model: tuned } = await train(start, { x: valid.read(0, valid.size), y: valid.labels!, shape: SHAPE }, {
    epochs: 2,
    optimizer: { kind: "adam", lr: 1e-2 },
    channelMasks: new Map([[target.conv, channelMask(target.channels, channels)]]),
  });
  const k = tuned.graph.initializers.get(target.kernel!)!.data as Float32Array;
  const b = tuned.graph.initializers.get(target.bias!)!.data as Float32Array;
  const per = k.length / target.channels;
  for (let c = 0; c < target.channels; c++) {
    const zero = k.subarray(c * per, (c + 1) * per).every((v) => v === 0) && b[c] === 0;
    assert.equal(zero, channels.includes(c), `channel ${c}`);
  }
  // The unpruned weights did learn.
  const k0 = start.graph.initializers.get(target.kernel!)!.data as Float32Array;
  assert.ok(k.some((v, i) => v !== k0[i]));
});

test("fine-prune: prunes to the drop, fine-tuning keeps the channels at zero and does not lose training accuracy", async () => {
  const r = await finePrune(model, { valid, poisoned, drop: 2, epochs: 3, lr: 1e-3, seed: 1, stop: "epochs" });
  assert.deepEqual(r.stop, { rule: "epochs", epochsRun: 3, reason: "epochs" });
  const target = r.target;
  assert.equal(target.layer, "conv_3");
  assert.ok(r.reached);
  assert.deepEqual(r.channels, r.sweep.ranking.slice(0, r.channels.length));
  assert.ok(100 * (r.sweep.correct[0] - r.sweep.correct[r.channels.length]) >= 2 * valid.size);
  assert.deepEqual(r.pruning.drops.map((d) => [d.drop, d.channelsPruned]), [[0.02, r.channels.length]]);
  assert.equal(r.history.length, 3);
  assert.equal(r.evaluatedOn, "valid");
  assert.equal(r.before.cleanAccuracy, r.sweep.curve[0].cleanAccuracy);
  assert.equal(r.pruned.cleanAccuracy, r.sweep.curve[r.channels.length].cleanAccuracy);
  // The training data is the validation data: fine-tuning must not make it worse than pruning alone.
  assert.ok(r.after.cleanAccuracy >= r.pruned.cleanAccuracy, `${r.after.cleanAccuracy} < ${r.pruned.cleanAccuracy}`);

  // Pruned channels are zero in the weights and in the activations.
  const k = r.repaired.graph.initializers.get(target.kernel!)!.data as Float32Array;
  const per = k.length / target.channels;
  for (const c of r.channels) assert.ok(k.subarray(c * per, (c + 1) * per).every((v) => v === 0));
  const sess = await Session.create(forwardGraph(r.repaired, [target.value]));
  const act = (await sess.run({ input: tensor("float32", [valid.size, ...SHAPE], valid.read(0, valid.size)) }))[target.value];
  await sess.release();
  const [, c, h, w] = act.shape;
  for (let i = 0; i < valid.size; i++)
    for (const ch of r.channels) assert.ok((act.data as Float32Array).subarray((i * c + ch) * h * w, (i * c + ch + 1) * h * w).every((v) => v === 0));

  // Reported numbers match direct evaluation.
  const rPred = await predictLabels(r.repaired, valid);
  assert.equal(r.after.cleanAccuracy, rPred.filter((p, i) => p === valid.labels![i]).length / valid.size);
  const rPois = await predictLabels(r.repaired, poisoned);
  assert.equal(r.after.asr, rPois.filter((p, i) => p === poisoned.labels![i]).length / poisoned.size);

  // G: B's class where B and the repaired network agree, class N elsewhere.
  const bPred = await predictLabels(model, valid);
  const g = await Session.create(r.g);
  const out = (await g.run({ input: tensor("float32", [valid.size, ...SHAPE], valid.read(0, valid.size)) }))[g.outputNames[0]];
  await g.release();
  const gPred = argmaxRows(out.data as Float32Array, 5);
  let flagged = 0;
  for (let i = 0; i < valid.size; i++) {
    assert.equal(gPred[i], bPred[i] === rPred[i] ? bPred[i] : 4);
    if (gPred[i] === 4) flagged++;
  }
  assert.equal(r.gRates.clean.flagged, flagged);
  assert.equal(r.gRates.poisoned!.n, poisoned.size);
});

test("fine-prune --tune tail: only the tail's parameters change, the pruned channels stay zero", async () => {
  const r = await finePrune(model, { valid, poisoned, drop: 2, epochs: 2, lr: 1e-3, seed: 1, tune: "tail" });
  assert.equal(r.tune, "tail");
  assert.ok(r.tunedFrom !== model.input && r.tunedParams < r.totalParams && 2 * r.tunedParams >= r.totalParams, `${r.tunedParams}/${r.totalParams} from ${r.tunedFrom}`);
  const start = prunedModel(model, r.target, r.channels);
  const tail = new Set(downstreamNodes(start.graph, r.tunedFrom).flatMap((n) => n.inputs));
  let changed = 0;
  for (const p of model.params) {
    const a = start.graph.initializers.get(p.value)!.data as Float32Array;
    const b = r.repaired.graph.initializers.get(p.value)!.data as Float32Array;
    const same = a.every((v, i) => v === b[i]);
    if (!tail.has(p.value)) assert.ok(same, `${p.value} lies before the cut and must be frozen`);
    else if (!same) changed++;
  }
  assert.ok(changed > 0, "the tail was trained");
  const k = r.repaired.graph.initializers.get(r.target.kernel!)!.data as Float32Array;
  const per = k.length / r.target.channels;
  for (const c of r.channels) assert.ok(k.subarray(c * per, (c + 1) * per).every((v) => v === 0));
  const all = await finePrune(model, { valid, drop: 2, epochs: 0, seed: 1 });
  assert.deepEqual([all.tune, all.tunedFrom, all.tunedParams], ["all", model.input, all.totalParams]);
  assert.deepEqual(all.stop, { rule: "epochs", epochsRun: 0, reason: "epochs" }, "the default runs every epoch on all the clean data");
});

test("fine-prune --stop recovered: B's accuracy on the held-out images is the target, and training stops by the rule", async () => {
  const seed = 3;
  const r = await finePrune(model, { valid, poisoned, drop: 2, epochs: 6, lr: 1e-3, seed, stop: "recovered" });
  const s = r.stop;
  assert.equal(s.rule, "recovered");
  const { held } = holdoutSplit(valid.size, 0.2, seed);
  assert.equal(s.heldOutImages, held.length);
  // The target is B's own accuracy on exactly those images.
  const bPred = await predictLabels(model, valid);
  assert.equal(s.baseAccuracy, held.filter((j) => bPred[j] === valid.labels![j]).length / held.length);
  const accs = s.heldOutAccuracy!;
  assert.equal(accs.length, r.history.length);
  assert.equal(s.epochsRun, r.history.length);
  // Why it stopped agrees with what it saw.
  if (s.reason === "recovered") {
    assert.ok(accs[accs.length - 1] >= s.baseAccuracy!);
    assert.ok(accs.slice(0, -1).every((a) => a < s.baseAccuracy!));
  } else if (s.reason === "no-improvement") {
    assert.ok(accs.length > 2 && Math.max(...accs.slice(-2)) <= Math.max(...accs.slice(0, -2)));
  } else assert.equal(r.history.length, 6);
  await assert.rejects(finePrune(model, { valid, stop: "recovered", holdout: 1 }), (e: Error) => e instanceof UserError && /holdout/.test(e.message));
  await assert.rejects(finePrune(model, { valid, stop: "never" as "epochs" }), (e: Error) => e instanceof UserError && /stop/.test(e.message));
});

test("fine-prune: bad options are UserErrors", async () => {
  await assert.rejects(finePrune(model, { valid, drop: 0 }), UserError);
  await assert.rejects(finePrune(model, { valid, drop: 150 }), UserError);
  await assert.rejects(finePrune(model, { valid, epochs: -1 }), UserError);
  await assert.rejects(finePrune(model, { valid, lr: 0 }), UserError);
  await assert.rejects(finePrune(model, { valid, tune: "head" as "tail" }), (e: Error) => e instanceof UserError && /tune/.test(e.message));
  await assert.rejects(finePrune(model, { valid, layer: "fc_1" }), (e: Error) => e instanceof UserError && /conv_3/.test(e.message));
});

test("badnet fine-prune writes repaired.h5, repaired.onnx, G.onnx and result.json", async () => {
  const out = join(dir, "out");
  const argv = ["--model", modelPath, "--input-scale", "255", "--clean", join(dir, "valid.h5"), "--poisoned", join(dir, "poisoned.h5"), "--drop", "2", "--epochs", "1", "--lr", "0.001", "--out", out, "--quiet"];
  const { json, text } = await finePruneCommand.run(parse(finePruneCommand, argv));
  for (const f of ["repaired.h5", "repaired.onnx", "G.onnx", "result.json"]) assert.ok(existsSync(join(out, f)), f);
  const report = JSON.parse(readFileSync(join(out, "result.json"), "utf8")) as ReportData;
  assert.deepEqual(report, JSON.parse(JSON.stringify(json)));
  assert.equal(report.pruning!.layer, "conv_3");
  assert.equal(report.pruning!.curve.length, 11);
  assert.equal(report.g!.numClasses, 4);
  assert.ok(report.evaluation!.after!.asr !== undefined);
  assert.match(text, /fine-pruned/);
  assert.equal(parseResult(report).ok, true);
  assert.deepEqual([report.finePruning!.tune, report.finePruning!.tunedParams], ["all", report.finePruning!.totalParams]);
  const tailOut = join(dir, "out-tail");
  const { json: tailJson } = await finePruneCommand.run(parse(finePruneCommand, [...argv.slice(0, -3), "--tune", "tail", "--out", tailOut, "--quiet"]));
  const tailReport = JSON.parse(JSON.stringify(tailJson)) as ReportData;
  assert.equal(parseResult(tailReport).ok, true);
  assert.equal(tailReport.finePruning!.tune, "tail");
  assert.ok(tailReport.finePruning!.tunedParams! < tailReport.finePruning!.totalParams!);
  const repaired = await loadModel(join(out, "repaired.h5"));
  assert.equal(repaired.numClasses, 4);
  // --drop 150 in place of --drop 2 (an option given twice is an error of its own).
  const drop150 = argv.map((a, i) => (argv[i - 1] === "--drop" ? "150" : a));
  await assert.rejects(finePruneCommand.run(parse(finePruneCommand, drop150)), UserError);
});
