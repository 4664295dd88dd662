import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parse } from "../cli/command.js";
import { defenseCommandNamed } from "../cli/commands/index.js";
import { UserError } from "../errors.js";
import { countCorrect } from "../eval/evaluate.js";
import { writeKerasModel } from "../io/keras-save.js";
import type { ReportData } from "../report/types.js";
import { tensor } from "../graph/ir.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { loadModel } from "../io/load-model.js";
import { saveRepaired } from "../io/save-model.js";
import { deepid, initWeights } from "../model/archs.js";
import { argmaxRows, forwardGraph, predictLabels } from "../model/forward.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";
import { writeOnnx } from "./g-model.js";
import {
  channelMask,
  checkDrops,
  convLayers,
  defaultPruneLayer,
  PruneEngine,
  pruneDefense,
  prunedModel,
  pruneTarget,
  selectDrop,
  sweep,
} from "./pruning.js";
import { SHAPE, tinyBackdoorData, trainTinyBackdoor } from "../test/tiny-backdoor.js";

const pruneCommand = defenseCommandNamed("prune");

// The tiny backdoored task of src/test/tiny-backdoor.ts (quadrant squares; a top-edge checkerboard → class 0).

let model: Model;
let valid: Dataset;
let poisoned: Dataset;
let dir: string;

before(async () => {
  model = await trainTinyBackdoor();
  dir = mkdtempSync(join(tmpdir(), "prune-test-"));
  ({ valid, poisoned } = await tinyBackdoorData(dir));
  await writeKerasModel(join(dir, "bd.h5"), model.spec!);
});

after(() => rmSync(dir, { recursive: true, force: true }));

test("default layer: the last conv all paths go through (zoo conv_3; DeepID conv_3, not the side-branch conv_4)", () => {
  assert.deepEqual(convLayers(model), ["conv_1", "conv_2", "conv_3"]);
  assert.equal(defaultPruneLayer(model), "conv_3");
  const t = pruneTarget(model);
  assert.equal(t.layer, "conv_3");
  assert.equal(t.value, model.layerOutputs.get("pool_3"));
  assert.equal(t.channels, 10);
  const dm = lowerModel(initWeights(deepid({ inputShape: [31, 31, 3], numClasses: 5 }), 1));
  assert.deepEqual(convLayers(dm), ["conv_1", "conv_2", "conv_3", "conv_4"]);
  assert.equal(defaultPruneLayer(dm), "conv_3");
  assert.equal(pruneTarget(dm).value, dm.layerOutputs.get("pool_3"));
  // conv_4 is followed by a Flatten: its own output is where it is measured.
  assert.equal(pruneTarget(dm, "conv_4").value, dm.layerOutputs.get("conv_4"));
});

test("bad options are UserErrors: unknown or non-conv layer, drops outside (0, 100]", async () => {
  assert.throws(() => pruneTarget(model, "conv_9"), (e: Error) => e instanceof UserError && /conv_9/.test(e.message) && /conv_1, conv_2, conv_3/.test(e.message));
  assert.throws(() => pruneTarget(model, "pool_3"), UserError);
  for (const d of [0, 150, -2, Number.NaN]) assert.throws(() => checkDrops([d]), UserError);
  assert.deepEqual(checkDrops([10, 2, 4, 2]), [2, 4, 10]);
  await assert.rejects(pruneDefense(model, { valid, drops: [0] }), UserError);
  await assert.rejects(pruneDefense(model, { valid, drops: [150] }), UserError);
  await assert.rejects(pruneDefense(model, { valid, drops: [4], layer: "nope" }), UserError);
});

test("drop selection: the first network at least X points below the unpruned accuracy", () => {
  const correct = [100, 99, 98, 99, 97, 90, 40];
  assert.deepEqual(selectDrop(correct, 100, 1), { channelsPruned: 1, reached: true });
  assert.deepEqual(selectDrop(correct, 100, 2), { channelsPruned: 2, reached: true }); // exactly 2 points counts
  assert.deepEqual(selectDrop(correct, 100, 2.5), { channelsPruned: 4, reached: true });
  assert.deepEqual(selectDrop(correct, 100, 60), { channelsPruned: 6, reached: true });
  assert.deepEqual(selectDrop(correct, 100, 61), { channelsPruned: 6, reached: false });
  // Fractions of an image: 1 point of 250 images is 2.5 images, so 3 are needed.
  assert.deepEqual(selectDrop([250, 248, 247], 250, 1), { channelsPruned: 2, reached: true });
});

test("cached-head predictions equal the full model with the same conv weights zeroed", async () => {
  const target = pruneTarget(model);
  // Small batches, so cached arrays are read at offsets.
  const engine = await PruneEngine.create(model, target, { batchSize: 64, headBatchSize: 48 });
  const cached = await engine.cache(valid, valid.labels!);
  const s = await sweep(engine, cached, undefined, "increasing");
  for (const k of [0, 1, 4, 7, 10]) {
    const channels = s.ranking.slice(0, k);
    const head = await engine.predict(cached, channelMask(target.channels, channels));
    const full = await predictLabels(prunedModel(model, target, channels), valid);
    assert.deepEqual(head, full, `k=${k}`);
    assert.equal(s.correct[k], countCorrect(full, valid.labels!));
  }
  await engine.release();
});

test("the same on a two-branch DeepID (head includes conv_4 and the Add), and pruning conv_4 itself", async () => {
  const dm = lowerModel(initWeights(deepid({ inputShape: [31, 31, 3], numClasses: 5 }), 7));
  const rand = mulberry32(5);
  const n = 40;
  const data = memoryDataset("rand", [3, 31, 31], Float32Array.from({ length: n * 3 * 31 * 31 }, () => rand()), Int32Array.from({ length: n }, (_, i) => i % 5));
  for (const layer of ["conv_3", "conv_4"]) {
    const target = pruneTarget(dm, layer);
    const engine = await PruneEngine.create(dm, target, { batchSize: 16, headBatchSize: 12 });
    if (layer === "conv_4") assert.ok(engine.inputs.length > 1, "conv_4's head also reads the fc_1 branch");
    const cached = await engine.cache(data, data.labels!);
    const channels = Array.from({ length: Math.floor(target.channels / 2) }, (_, i) => 2 * i);
    const head = await engine.predict(cached, channelMask(target.channels, channels));
    assert.deepEqual(head, await predictLabels(prunedModel(dm, target, channels), data), layer);
    await engine.release();
  }
});

test("sweep: curve starts at the unpruned accuracy, channels ordered by mean pooled activation", async () => {
  const target = pruneTarget(model);
  const engine = await PruneEngine.create(model, target);
  const cached = await engine.cache(valid, valid.labels!);
  const pc = await engine.cache(poisoned, poisoned.labels!);
  const s = await sweep(engine, cached, pc, "increasing");
  await engine.release();
  const unpruned = countCorrect(await predictLabels(model, valid), valid.labels!) / valid.size;
  assert.equal(s.curve.length, target.channels + 1);
  assert.equal(s.curve[0].cleanAccuracy, unpruned);
  assert.equal(s.curve[0].channelsPruned, 0);
  assert.equal(s.curve[target.channels].fractionPruned, 1);
  assert.equal(s.curve[0].asr, countCorrect(await predictLabels(model, poisoned), poisoned.labels!) / poisoned.size);
  // Mean activation of pool_3 computed independently.
  const sess = await Session.create(forwardGraph(model, [target.value]));
  const out = (await sess.run({ input: tensor("float32", [valid.size, ...SHAPE], valid.read(0, valid.size)) }))[target.value];
  await sess.release();
  const [, c, h, w] = out.shape;
  const d = out.data as Float32Array;
  for (let ch = 0; ch < c; ch++) {
    let sum = 0;
    for (let i = 0; i < valid.size; i++) for (let j = 0; j < h * w; j++) sum += d[(i * c + ch) * h * w + j];
    assert.ok(Math.abs(sum / (valid.size * h * w) - s.meanActivation[ch]) < 1e-5);
  }
  for (let i = 1; i < s.ranking.length; i++) assert.ok(s.meanActivation[s.ranking[i - 1]] <= s.meanActivation[s.ranking[i]]);
  const engine2 = await PruneEngine.create(model, target);
  const dec = await sweep(engine2, await engine2.cache(valid, valid.labels!), undefined, "decreasing");
  await engine2.release();
  for (let i = 1; i < dec.ranking.length; i++) assert.ok(dec.meanActivation[dec.ranking[i - 1]] >= dec.meanActivation[dec.ranking[i]]);
});

test("pruneDefense: drops, G from one graph (class N exactly where B and B' disagree), saved files", async () => {
  const r = await pruneDefense(model, { valid, poisoned, drops: [2, 10, 30] });
  assert.equal(r.pruning.layer, "conv_3");
  assert.deepEqual(r.pruning.drops.map((d) => d.drop), [0.02, 0.1, 0.3]);
  const c0 = r.sweep.correct[0];
  for (const rep of r.repairs) {
    const k = rep.channelsPruned;
    if (rep.reached) {
      assert.ok(100 * (c0 - r.sweep.correct[k]) >= rep.drop * valid.size);
      for (let j = 0; j < k; j++) assert.ok(100 * (c0 - r.sweep.correct[j]) < rep.drop * valid.size, "first such network");
    } else assert.equal(k, 10);
    assert.deepEqual(rep.channels, r.sweep.ranking.slice(0, k));
  }
  assert.equal(r.evaluatedOn, "valid");
  assert.equal(r.before.cleanAccuracy, r.sweep.curve[0].cleanAccuracy);

  // Pick the repair whose B' disagrees with B most, so both outcomes occur.
  const bClean = await predictLabels(model, valid);
  const rep = r.repairs[r.repairs.length - 1];
  const rPred = await predictLabels(rep.model, valid);
  const disagree = bClean.filter((v, i) => v !== rPred[i]).length;
  assert.ok(disagree > 0 && disagree < valid.size, `need both agreement and disagreement, got ${disagree}/${valid.size}`);
  assert.equal(rep.gRates.clean.flagged, disagree);
  assert.equal(rep.evaluation.cleanAccuracy, countCorrect(rPred, valid.labels!) / valid.size);

  const gPath = join(dir, "G.onnx");
  writeOnnx(gPath, rep.g);
  const sess = await Session.fromBytes(readFileSync(gPath));
  assert.deepEqual(sess.inputNames, ["input"]);
  assert.deepEqual(rep.g.inputs.map((i) => [i.name, i.shape]), [["input", ["N", ...model.inputShape]]]);
  const out = (await sess.run({ input: tensor("float32", [valid.size, ...SHAPE], valid.read(0, valid.size)) }))[sess.outputNames[0]];
  await sess.release();
  assert.deepEqual(out.shape, [valid.size, model.numClasses + 1]);
  const g = argmaxRows(out.data as Float32Array, model.numClasses + 1);
  for (let i = 0; i < valid.size; i++) assert.equal(g[i], bClean[i] === rPred[i] ? bClean[i] : model.numClasses, `image ${i}`);

  // repaired_X.h5 (Keras) and .onnx reload to the same predictions; the pruned channels are zero.
  const files = await saveRepaired(dir, "repaired_30", rep.model);
  assert.deepEqual(files, [join(dir, "repaired_30.h5"), join(dir, "repaired_30.onnx")]);
  for (const f of files) assert.deepEqual(await predictLabels(await loadModel(f), valid), rPred, f);
  const onnx = await Session.fromBytes(readFileSync(files[1]));
  assert.deepEqual(onnx.inputNames, ["input"]);
  const logits = (await onnx.run({ input: tensor("float32", [valid.size, ...SHAPE], valid.read(0, valid.size)) })).logits;
  await onnx.release();
  assert.deepEqual(argmaxRows(logits.data as Float32Array, model.numClasses), rPred);
  const k = (await loadModel(files[0])).graph.initializers.get(r.sweep.target.kernel!)!;
  const per = k.data.length / 10;
  for (const c of rep.channels) assert.ok((k.data as Float32Array).subarray(c * per, (c + 1) * per).every((v) => v === 0));
});

test("badnet prune writes repaired_X.{h5,onnx}, G_X.onnx per drop and result.json", async () => {
  const out = join(dir, "out");
  const base = ["--model", join(dir, "bd.h5"), "--input-scale", "255", "--clean", join(dir, "valid.h5"), "--out", out, "--quiet"];
  const argv = [...base, "--poisoned", join(dir, "poisoned.h5"), "--drop", "2,30"];
  const { json, text } = await pruneCommand.run(parse(pruneCommand, argv));
  for (const f of ["repaired_2.h5", "repaired_2.onnx", "G_2.onnx", "repaired_30.h5", "repaired_30.onnx", "G_30.onnx", "result.json"])
    assert.ok(existsSync(join(out, f)), f);
  const report = JSON.parse(readFileSync(join(out, "result.json"), "utf8")) as ReportData & { repairs: { drop: number }[] };
  assert.deepEqual(report, JSON.parse(JSON.stringify(json)));
  assert.equal(report.pruning!.curve.length, 11);
  assert.deepEqual(report.pruning!.drops.map((d) => d.drop), [0.02, 0.3]);
  assert.deepEqual(report.repairs.map((r) => r.drop), [2, 30]);
  assert.equal(report.model!.name, model.spec!.name);
  assert.ok(report.evaluation!.before.asr !== undefined && report.g!.poisoned !== undefined);
  assert.match(text, /conv_3/);
  for (const bad of [["--drop", "0"], ["--drop", "2,150"], ["--layer", "conv_7"], ["--order", "random"]])
    await assert.rejects(pruneCommand.run(parse(pruneCommand, [...base, ...bad])), UserError, bad.join(" "));
});
