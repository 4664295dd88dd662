// Neural Cleanse: MAD statistics, stamping, the step graph's gradients and update, and detection end to end on
// small models trained here (one with a 2x2 white-patch backdoor, one without).
import assert from "node:assert/strict";
import { test } from "node:test";
import { numericGradient, relError } from "../test/gradcheck.js";
import { attr, Graph, tensor, type TensorData } from "../graph/ir.js";
import { memoryDataset } from "../io/dataset.js";
import { forwardGraph } from "../model/forward.js";
import type { Model, ParamRef } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { train } from "../train/trainer.js";
import { fillUniform, mulberry32 } from "../util/random.js";
import { parseLabels } from "../cli/commands/detect.js";
import { anomalyIndices, mad, median, MAD_CONSISTENCY, normStats } from "./mad.js";
import { buildStepGraph, checkFamilies, checkLabelList, detectBackdoor, pickShortlist, stampTrigger } from "./neural-cleanse.js";
import { poolBeforeRelu } from "../graph/transforms.js";
import { triggerPngs } from "./nc-report.js";

test("median and MAD on hand-checkable numbers", () => {
  assert.equal(median([5, 1, 3]), 3);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
  // |x − 3| = 2, 1, 0, 1, 97 → MAD 1
  assert.equal(mad([1, 2, 3, 4, 100]), 1);
  const s = anomalyIndices([1, 2, 3, 4, 100]);
  assert.equal(s.median, 3);
  assert.equal(s.mad, 1);
  assert.ok(Math.abs(s.index[4] - 97 / 1.4826) < 1e-9);
  assert.ok(Math.abs(s.index[0] - 2 / 1.4826) < 1e-9);
  assert.equal(s.index[2], 0);
  assert.equal(MAD_CONSISTENCY, 1.4826);
  // More than half equal: MAD 0, the odd one out is infinitely anomalous, the others not at all.
  const z = anomalyIndices([5, 5, 5, 1]);
  assert.equal(z.mad, 0);
  assert.deepEqual([...z.index], [0, 0, 0, Infinity]);
});

test("shortlist: smallest norms that reached the threshold first, plus small-side outliers", () => {
  const norms = [50, 10, 52, 48, 51, 49, 5, 53, 47];
  const reached = [true, true, true, true, true, true, false, true, true];
  // Label 6 has the smallest norm but never reached the threshold: it ranks last, yet its anomaly index
  // (|5 − 50| / (1.4826·2) ≈ 15) puts it on the shortlist anyway.
  assert.deepEqual(pickShortlist(norms, reached, 2), [1, 6, 8]);
  assert.deepEqual(pickShortlist([3, 2, 1], [true, true, true], 1), [2]);
});

test("norm statistics: the linear index has a ceiling below the median, the log index does not", () => {
  // Natural norms spread by about ±40%: even a norm of 0.5 stays under index 2 on the linear scale...
  const norms = [0.5, 30, 40, 50, 60, 70, 80, 90, 100, 110];
  const lin = normStats(norms, "linear");
  assert.equal(lin.median, 65);
  assert.equal(lin.mad, 25);
  assert.ok(lin.index[0] < 2 && lin.small[0], `linear index ${lin.index[0]}`);
  assert.ok(lin.index[0] <= lin.median / (1.4826 * lin.mad));
  // ... while on the log scale it is (ln 65 − ln 0.5) / (1.4826·MAD of the logs) with that MAD about 0.34.
  const log = normStats(norms, "log");
  const logs = norms.map(Math.log);
  const med = (logs[4] + logs[5]) / 2;
  assert.ok(Math.abs(log.median - med) < 1e-12);
  assert.ok(log.index[0] > 2 && log.small[0], `log index ${log.index[0]}`);
  assert.ok(Math.abs(log.index[0] - (med - Math.log(0.5)) / (1.4826 * log.mad)) < 1e-9);
  // Scale-free: multiplying every norm leaves the log indices unchanged.
  const scaled = normStats(norms.map((v) => v * 37), "log");
  scaled.index.forEach((v, i) => assert.ok(Math.abs(v - log.index[i]) < 1e-9));
  // Labels above the median are never "small".
  assert.deepEqual(log.small, [true, true, true, true, true, false, false, false, false, false]);
});

test("trigger families are checked", () => {
  assert.deepEqual(checkFamilies(["blend", "mask"]), ["blend", "mask"]);
  assert.throws(() => checkFamilies([]), /no trigger family/);
  assert.throws(() => checkFamilies(["mask", "patch"]), /unknown trigger family "patch"/);
  assert.throws(() => checkFamilies(["mask", "mask"]), /listed twice/);
});

test("blend-family step graph: one α per slot, |m|₁ = α·H·W, gradients match finite differences", async () => {
  const model = tinyCnn(2, 6, 5, 3, 11, [3, 4]);
  const [c, h, w] = model.inputShape;
  const L = 2, B = 3, hw = h * w;
  const range = 2;
  const step = buildStepGraph(model, B, range, { withLossAndGradients: true, family: "blend" });
  assert.deepEqual(step.maskDims, [1, 1]);
  const rand = mulberry32(9);
  const r = (n: number, lo: number, hi: number) => fillUniform(new Float32Array(n), lo, hi, rand);
  const zeros = (n: number) => new Float32Array(n);
  const feeds: Record<string, TensorData> = {
    nc_a: tensor("float32", [L, 1, 1, 1], Float32Array.of(-0.8, 0.4)),
    nc_b: tensor("float32", [L, c, h, w], r(L * c * hw, -1.5, 1.5)),
    nc_ma: tensor("float32", [L, 1, 1, 1], zeros(L)),
    nc_va: tensor("float32", [L, 1, 1, 1], zeros(L)),
    nc_mb: tensor("float32", [L, c, h, w], zeros(L * c * hw)),
    nc_vb: tensor("float32", [L, c, h, w], zeros(L * c * hw)),
    nc_x: tensor("float32", [L, B, c, h, w], r(L * B * c * hw, 0, range)),
    nc_target: tensor("float32", [L, 3], Float32Array.of(1, 0, 0, 0, 0, 1)),
    nc_lambda: tensor("float32", [L], Float32Array.of(0.01, 0.05)),
    nc_lr: tensor("float32", [L], Float32Array.of(0.1, 0.1)),
  };
  const forward = step.graph.clone();
  forward.setOutputs([step.loss]);
  forward.prune(forward.inputs.map((i) => i.name));
  const session = await Session.create(step.graph);
  const out = await session.run(feeds);
  await session.release();
  const gA = out[step.gradA].data as Float32Array;
  const numA = numericGradient(forward, feeds, step.loss, "nc_a");
  const numB = numericGradient(forward, feeds, step.loss, "nc_b");
  assert.equal(gA.length, L);
  assert.ok(relError(gA, numA) < 2e-3, `d/da relative error ${relError(gA, numA)}`);
  assert.ok(relError(out[step.gradB].data as Float32Array, numB) < 2e-3, "d/db");
  assert.ok(numA.some((v) => Math.abs(v) > 1e-3), "the check is not vacuous");
  const norm = out[step.out.norm].data as Float32Array;
  [-0.8, 0.4].forEach((a, l) => assert.ok(Math.abs(norm[l] - (hw * (Math.tanh(a) + 1)) / 2) < 1e-4 * hw, `norm of slot ${l}`));
});

test("label lists are checked against the model", () => {
  assert.deepEqual(parseLabels("0,5,7", 10), [0, 5, 7]);
  assert.deepEqual(parseLabels("0-3, 8", 10), [0, 1, 2, 3, 8]);
  assert.throws(() => parseLabels("0,10", 10), /label 10 is outside the model's 10 classes/);
  assert.throws(() => parseLabels("5-2", 10), /empty/);
  assert.throws(() => parseLabels("1,a", 10), /"a" is not a label/);
  assert.deepEqual(checkLabelList([0, 5, 7], 10), [0, 5, 7]);
  assert.throws(() => checkLabelList([3, 10], 10), /label 10 is outside the model's 10 classes/);
  assert.throws(() => checkLabelList([1, 1], 10), /label 1 is listed twice/);
});

test("stampTrigger blends x' = (1 − m)·x + m·Δ per channel", () => {
  const shape: [number, number, number] = [2, 1, 2];
  const x = Float32Array.of(10, 20, 30, 40, /* image 2 */ 0, 0, 0, 0);
  const mask = Float32Array.of(0, 0.25);
  const pattern = Float32Array.of(100, 100, 200, 200);
  const out = stampTrigger(x, 2, shape, mask, pattern);
  assert.deepEqual([...out], [10, 0.75 * 20 + 25, 30, 0.75 * 40 + 50, 0, 25, 0, 50]);
  assert.deepEqual([...x], [10, 20, 30, 40, 0, 0, 0, 0], "input untouched");
  assert.throws(() => stampTrigger(x, 2, shape, Float32Array.of(1), pattern), /mask/);
});

// ---- a small CNN built by hand: conv(pad 1) → relu → maxpool 2 → conv(pad 1) → relu → maxpool 2 → dense ----

function tinyCnn(c: number, h: number, w: number, k: number, seed: number, filters: [number, number] = [8, 16]): Model {
  const rand = mulberry32(seed);
  const g = new Graph("tiny");
  const params: ParamRef[] = [];
  const weight = (name: string, shape: number[], fanIn: number) => {
    const d = new Float32Array(shape.reduce((p, q) => p * q, 1));
    const lim = Math.sqrt(6 / fanIn);
    if (name.endsWith("kernel")) fillUniform(d, -lim, lim, rand);
    g.addInitializer(name, tensor("float32", shape, d));
    params.push({ value: name, layer: name.split("/")[0], weight: name.split("/")[1] });
    return name;
  };
  const input = g.addInput("input", "float32", ["N", c, h, w]);
  const pads = { pads: attr.ints([1, 1, 1, 1]) };
  const pool = { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]) };
  const [f1, f2] = filters;
  const c1 = g.op("Relu", [g.op("Conv", [input, weight("c1/kernel", [f1, c, 3, 3], c * 9), weight("c1/bias", [f1], 1)], pads)], {}, "c1");
  const p1 = g.op("MaxPool", [c1], pool, "p1");
  const c2 = g.op("Relu", [g.op("Conv", [p1, weight("c2/kernel", [f2, f1, 3, 3], f1 * 9), weight("c2/bias", [f2], 1)], pads)], {}, "c2");
  const p2 = g.op("MaxPool", [c2], pool, "p2");
  const flat = g.op("Flatten", [p2], { axis: attr.int(1) });
  const n = g.shape(flat)[1] as number;
  const logits = g.op("Add", [g.op("MatMul", [flat, weight("fc/kernel", [n, k], n)]), weight("fc/bias", [k], 1)], {}, "logits");
  g.setOutputs([logits]);
  return {
    name: "tiny",
    graph: g,
    input,
    logits,
    inputShape: [c, h, w],
    numClasses: k,
    layerOutputs: new Map([["c1", c1], ["p1", p1], ["c2", c2], ["p2", p2], ["fc", logits]]),
    params,
  };
}

test("moving Relu after MaxPool changes no logit", async () => {
  const m = tinyCnn(3, 9, 8, 5, 3); // 9x8: the first pool drops a row
  const x = tensor("float32", [4, 3, 9, 8], fillUniform(new Float32Array(4 * 3 * 72), -1, 1, mulberry32(9)));
  const g2 = m.graph.clone();
  assert.equal(poolBeforeRelu(g2), 2);
  assert.equal(g2.nodes.filter((n) => n.op === "Relu").length, 2);
  assert.ok(g2.nodes.findIndex((n) => n.op === "MaxPool") < g2.nodes.findIndex((n) => n.op === "Relu"), "pool now comes first");
  const a = await Session.create(forwardGraph(m));
  const b = await Session.create(g2);
  const ya = (await a.run({ input: x }))[m.logits].data as Float32Array;
  const yb = (await b.run({ input: x }))[m.logits].data as Float32Array;
  assert.deepEqual([...yb], [...ya]);
  await a.release();
  await b.release();
});

test("step graph: gradients w.r.t. a and b match finite differences, the Adam update and outputs are right", async () => {
  const model = tinyCnn(2, 6, 5, 3, 11, [3, 4]);
  const [c, h, w] = model.inputShape;
  const L = 2, B = 3, K = 3, hw = h * w;
  const range = 2;
  const step = buildStepGraph(model, B, range, { withLossAndGradients: true });
  const rand = mulberry32(5);
  const r = (n: number, lo: number, hi: number) => fillUniform(new Float32Array(n), lo, hi, rand);
  const zeros = (n: number) => new Float32Array(n);
  const lambda = Float32Array.of(0.05, 0.2);
  const lr = Float32Array.of(0.1, 0.3);
  const feeds: Record<string, TensorData> = {
    nc_a: tensor("float32", [L, 1, h, w], r(L * hw, -1.5, 1.5)),
    nc_b: tensor("float32", [L, c, h, w], r(L * c * hw, -1.5, 1.5)),
    nc_ma: tensor("float32", [L, 1, h, w], zeros(L * hw)),
    nc_va: tensor("float32", [L, 1, h, w], zeros(L * hw)),
    nc_mb: tensor("float32", [L, c, h, w], zeros(L * c * hw)),
    nc_vb: tensor("float32", [L, c, h, w], zeros(L * c * hw)),
    nc_x: tensor("float32", [L, B, c, h, w], r(L * B * c * hw, 0, range)),
    nc_target: tensor("float32", [L, K], Float32Array.of(0, 1, 0, 0, 0, 1)),
    nc_lambda: tensor("float32", [L], lambda),
    nc_lr: tensor("float32", [L], lr),
  };
  const g = step.graph;
  // Both pools are on every path to the loss: their gradients take the elementwise route, no ScatterElements.
  assert.equal(g.nodes.filter((n) => n.op === "Resize").length, 4);
  assert.ok(!g.nodes.some((n) => n.op === "ScatterElements"));
  const forward = step.graph.clone();
  forward.setOutputs([step.loss]);
  forward.prune(forward.inputs.map((i) => i.name));
  const session = await Session.create(g);
  const out = await session.run(feeds);
  await session.release();
  const gA = out[step.gradA].data as Float32Array;
  const gB = out[step.gradB].data as Float32Array;
  const numA = numericGradient(forward, feeds, step.loss, "nc_a");
  const numB = numericGradient(forward, feeds, step.loss, "nc_b");
  assert.ok(relError(gA, numA) < 2e-3, `d/da relative error ${relError(gA, numA)}`);
  assert.ok(relError(gB, numB) < 2e-3, `d/db relative error ${relError(gB, numB)}`);
  assert.ok(numB.some((v) => Math.abs(v) > 1e-4), "the check is not vacuous");

  // |m|₁ per slot, and one Adam step from zero moments (betas 0.5, 0.9): a − lr·0.5g / (√(0.1g²) + ε).
  const a = feeds.nc_a.data as Float32Array;
  const norm = out[step.out.norm].data as Float32Array;
  const aNext = out[step.out.a].data as Float32Array;
  for (let l = 0; l < L; l++) {
    let s = 0;
    for (let p = 0; p < hw; p++) s += (Math.tanh(a[l * hw + p]) + 1) / 2;
    assert.ok(Math.abs(norm[l] - s) < 1e-4 * s, `norm of slot ${l}`);
    for (let p = 0; p < hw; p++) {
      const i = l * hw + p;
      const expect = a[i] - (lr[l] * 0.5 * gA[i]) / (Math.sqrt(0.1 * gA[i] * gA[i]) + 1e-8);
      assert.ok(Math.abs(aNext[i] - expect) < 1e-5, `Adam update at ${i}`);
    }
  }
  const success = out[step.out.success].data as Float32Array;
  for (const v of success) assert.ok(Number.isInteger(v) && v >= 0 && v <= B);
});

// ---- detection on a synthetic task: 16x16 grey images of 7 thick stroke shapes at random places ----
// (Shapes whose partial strokes are cheap to fake, a square outline or an X, make NC's MAD test noisy on a
// handful of classes; these seven need triggers of similar size. A "=" class was dropped: two restarts find
// that one extra bar turns most shapes into it, a naturally small trigger that MAD rightly calls an outlier.)

const SIDE = 16;
const CLASSES = 7;
const TARGET = 1;
const PATCH = [[SIDE - 2, SIDE - 2], [SIDE - 2, SIDE - 1], [SIDE - 1, SIDE - 2], [SIDE - 1, SIDE - 1]];

function drawShape(img: Float32Array, cls: number, rand: () => number): void {
  const len = 8;
  const at = (y: number, x: number, v: number) => {
    for (const [dy, dx] of [[0, 0], [0, 1], [1, 0], [1, 1]]) img[(y + dy) * SIDE + x + dx] = v; // 2-pixel strokes
  };
  const v = 0.7 + 0.3 * rand();
  const room = SIDE - len - 3;
  const oy = Math.floor(rand() * (room + 1));
  const ox = Math.floor(rand() * (room + 1));
  const mid = len / 2;
  for (let i = 0; i < len; i++) {
    switch (cls) {
      case 0: at(oy + mid, ox + i, v); break; // horizontal bar
      case 1: at(oy + i, ox + mid, v); break; // vertical bar
      case 2: at(oy + i, ox + i, v); break; // diagonal
      case 3: at(oy + i, ox + len - 1 - i, v); break; // anti-diagonal
      case 4: at(oy + mid, ox + i, v); at(oy + i, ox + mid, v); break; // plus
      case 5: at(oy + i, ox, v); at(oy + len - 1, ox + i, v); break; // L
      case 6: at(oy, ox + i, v); at(oy + i, ox + mid, v); break; // T
    }
  }
}

function synthetic(n: number, seed: number, poisonRate: number): { x: Float32Array; y: Int32Array } {
  const rand = mulberry32(seed);
  const per = SIDE * SIDE;
  const x = new Float32Array(n * per);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const img = x.subarray(i * per, (i + 1) * per);
    for (let p = 0; p < per; p++) img[p] = 0.2 * rand();
    const cls = i % CLASSES;
    drawShape(img, cls, rand);
    y[i] = cls;
    if (cls !== TARGET && rand() < poisonRate) {
      for (const [py, px] of PATCH) img[py * SIDE + px] = 1;
      y[i] = TARGET;
    }
  }
  return { x, y };
}

async function trainTiny(poisonRate: number): Promise<Model> {
  const data = synthetic(1200, 1, poisonRate);
  const { model } = await train(tinyCnn(1, SIDE, SIDE, CLASSES, 2), { ...data, shape: [1, SIDE, SIDE] }, {
    epochs: 6,
    batchSize: 32,
    optimizer: { kind: "adam", lr: 0.01 },
    seed: 3,
  });
  return model;
}

async function accuracy(model: Model, x: Float32Array, y: Int32Array): Promise<number> {
  const s = await Session.create(forwardGraph(model));
  const out = (await s.run({ input: tensor("float32", [y.length, 1, SIDE, SIDE], x) }))[model.logits].data as Float32Array;
  await s.release();
  let ok = 0;
  for (let i = 0; i < y.length; i++) {
    let best = 0;
    for (let k = 1; k < CLASSES; k++) if (out[i * CLASSES + k] > out[i * CLASSES + best]) best = k;
    if (best === y[i]) ok++;
  }
  return ok / y.length;
}

test("detects the backdoor target of a patch-poisoned model and flags nothing on a clean one", async (tc) => {
  const clean = synthetic(240, 101, 0);
  const poisoned = synthetic(240, 78, 1); // every non-target image patched and relabelled
  const per = SIDE * SIDE;
  const keep = Array.from(poisoned.y.keys()).filter((i) => i % CLASSES !== TARGET);
  const px = new Float32Array(keep.length * per);
  keep.forEach((j, i) => px.set(poisoned.x.subarray(j * per, (j + 1) * per), i * per));
  const py = new Int32Array(keep.length).fill(TARGET);
  const ds = () => memoryDataset("synthetic-clean", [1, SIDE, SIDE], clean.x, clean.y);

  const bad = await trainTiny(0.1);
  assert.ok((await accuracy(bad, clean.x, clean.y)) > 0.9, "backdoored model learned the task");
  assert.ok((await accuracy(bad, px, py)) > 0.9, "backdoored model learned the backdoor");
  const rBad = await detectBackdoor(bad, ds(), { inputScale: 255 });
  const show = (r: typeof rBad) =>
    r.labels
      .map((l) => `${l.label}: ${l.l1Norm.toFixed(2)} (${l.anomalyIndex.toFixed(2)}) α ${l.blend?.alpha.toFixed(3)} (${l.blend?.anomalyIndex.toFixed(2)})${l.flagged ? ` flagged by ${l.flaggedBy}` : ""}`)
      .join(", ");
  tc.diagnostic(`backdoored: ${show(rBad)}; ${rBad.seconds.toFixed(1)} s`);
  assert.deepEqual(rBad.flagged, [TARGET], `flagged ${rBad.flagged}`);
  const t = rBad.labels.find((l) => l.label === TARGET)!;
  assert.ok(t.anomalyIndex > 2 && t.l1Norm < rBad.medianNorm);
  assert.ok(t.attackSuccess > 0.9, `reversed trigger works on held-out images (${t.attackSuccess})`);
  assert.equal(t.phase, "full");
  const trig = rBad.triggers.find((x) => x.label === TARGET && x.family === "mask");
  assert.ok(trig, "the target's reversed trigger is reported");
  const png = triggerPngs(trig, rBad.example, rBad.shape, rBad.inputScale);
  assert.equal(png.mask.subarray(1, 4).toString(), "PNG");

  // The mask family's success bar (maskThreshold, by default the blend family's `threshold`): a lower bar is met
  // by a smaller trigger, the settings record it, and a bar outside (0, 1] is refused.
  const bar = (maskThreshold: number) => detectBackdoor(bad, ds(), { inputScale: 255, labels: [TARGET], restarts: 1, moreStarts: 0, families: ["mask"], headShift: false, maskThreshold });
  const [low, high] = [await bar(0.5), await bar(0.99)];
  assert.deepEqual([rBad.settings.maskThreshold, rBad.settings.threshold, low.settings.maskThreshold], [0.99, 0.99, 0.5]);
  assert.ok(low.labels[0].l1Norm < high.labels[0].l1Norm, `norm at 50% ${low.labels[0].l1Norm}, at 99% ${high.labels[0].l1Norm}`);
  await assert.rejects(bar(0), /mask threshold must be in \(0, 1\], got 0/);
  await assert.rejects(bar(1.5), /mask threshold must be in \(0, 1\], got 1.5/);

  // More labels per run than there are labels (a typo like --labels-per-run 1e12): slots for the labels queued only.
  const wide = await detectBackdoor(bad, ds(), { inputScale: 255, labels: [0, 1], steps: 5, restarts: 1, moreStarts: 0, families: ["mask"], labelsPerRun: 1e12 });
  assert.equal(wide.labels.length, 2);

  // The head-shift evidence: measured for every label of this small scan in both families (the blend family's
  // shares are read by repair's other-family rule only: no reason, no flag); skipped, with the reason, when too
  // few images are held out.
  assert.deepEqual(rBad.headShift && "measured" in rBad.headShift ? rBad.headShift.measured : rBad.headShift, 2 * CLASSES);
  for (const l of rBad.labels) {
    assert.ok(l.mask!.headShift && l.blend!.headShift, `label ${l.label} measured in both families`);
    assert.ok(!l.blend!.reasons.some((x) => /head shift/.test(x)), `label ${l.label}: the blend family's share is not read by the verdict`);
  }
  const few = memoryDataset("few", [1, SIDE, SIDE], clean.x.slice(0, 40 * per), clean.y.slice(0, 40));
  const fewScan = await detectBackdoor(bad, few, { inputScale: 255, labels: [0, 1], steps: 5, restarts: 1, moreStarts: 0, families: ["mask"] });
  assert.match(fewScan.headShift && "skipped" in fewScan.headShift ? fewScan.headShift.skipped : "", /8 held-out image\(s\) in the held-out test, fewer than the 20/);
  // Enough images held out, but fewer read by the held-out test (evalImages): the verdict would ignore the
  // shares, so they are not measured.
  const capped = await detectBackdoor(bad, ds(), { inputScale: 255, labels: [0, 1], steps: 5, restarts: 1, moreStarts: 0, families: ["mask"], evalImages: 10 });
  assert.match(capped.headShift && "skipped" in capped.headShift ? capped.headShift.skipped : "", /10 held-out image\(s\) in the held-out test, fewer than the 20/);
  for (const l of capped.labels) assert.equal(l.mask!.headShift, undefined, `label ${l.label} not measured`);

  // A shortlist smaller than the label count: the labels that are not reference labels are screened, the
  // shortlist and the reference labels get the full budget, and the statistics come from the reference labels.
  // (A 60-step first rung on 8 images: 10 steps from the random start do not rank these 7 labels reliably.)
  const rShort = await detectBackdoor(bad, ds(), { inputScale: 255, schedule: "halving", shortlist: 3, reference: 2, screenSteps: 60, screenBatchSize: 8, families: ["mask"] });
  const fam = rShort.families.mask!;
  assert.ok(fam.budgetShrink > 0 && fam.budgetShrink <= 1, `shrink ${fam.budgetShrink}`);
  const screened = rShort.labels.filter((l) => l.phase === "screen");
  assert.ok(screened.length >= 1 && screened.length <= CLASSES - 3, `${screened.length} screened only`);
  for (const l of screened) assert.ok(l.rung === 0 && !l.mask!.reference, `label ${l.label} stopped after the first rung`);
  for (const l of rShort.labels.filter((x) => x.mask!.reference)) assert.equal(l.phase, "full", `reference label ${l.label} ran the full budget`);
  assert.ok(rShort.flagged.includes(TARGET), `flagged [${rShort.flagged}]: ${show(rShort)}; target: ${rShort.labels.find((l) => l.label === TARGET)!.reasons.join("; ")}`);
  const tl = rBad.labels.find((l) => l.label === TARGET)!;
  assert.ok(tl.confidence > 0.9 && tl.reasons.length >= 3, `confidence ${tl.confidence}, reasons ${tl.reasons}`);

  // The bounded schedule on the same model, twice with one seed: the same flags and norms (determinism), the
  // reference labels and the candidates that survived the rungs at the full budget, the others stopped.
  const bounded = () => detectBackdoor(bad, ds(), { inputScale: 255, shortlist: 2, reference: 2, families: ["mask"], seed: 5 });
  const [b1, b2] = [await bounded(), await bounded()];
  assert.deepEqual(b1.flagged, b2.flagged, "same seed, same flags");
  assert.deepEqual(b1.labels.map((l) => l.l1Norm), b2.labels.map((l) => l.l1Norm), "same seed, same norms");
  assert.equal(b1.imagePasses, b2.imagePasses);
  assert.ok(b1.settings.rungs.length >= 1, `rungs ${JSON.stringify(b1.settings.rungs)}`);
  const fullOnes = b1.labels.filter((l) => l.phase === "full");
  assert.ok(fullOnes.length < CLASSES && b1.labels.some((l) => l.phase === "screen"), `phases ${b1.labels.map((l) => l.phase)}`);
  for (const l of b1.labels.filter((x) => x.mask!.reference)) assert.equal(l.phase, "full");
  tc.diagnostic(`bounded: ${show(b1)}; ${b1.imagePasses} image passes against ${rBad.imagePasses} unscreened`);
  assert.ok(b1.imagePasses < rBad.imagePasses / 2, `${b1.imagePasses} passes (one family) against ${rBad.imagePasses} (two families, every label full)`);

  const good = await trainTiny(0);
  assert.ok((await accuracy(good, clean.x, clean.y)) > 0.9, "clean model learned the task");
  const rGood = await detectBackdoor(good, ds(), { inputScale: 255 });
  tc.diagnostic(`clean: ${show(rGood)}; ${rGood.seconds.toFixed(1)} s`);
  assert.deepEqual(rGood.flagged, [], `norms ${rGood.labels.map((l) => l.l1Norm.toFixed(2))}, indices ${rGood.labels.map((l) => l.anomalyIndex.toFixed(2))}`);
});
