import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { Graph } from "../graph/ir.js";
import { memoryDataset } from "../io/dataset.js";
import { decodeImage, toNchw } from "../io/images.js";
import { loadModel } from "../io/load-model.js";
import { fixture } from "../test/fixtures.js";
import { argmaxRows, batchTensor } from "../model/forward.js";
import { Session } from "../runtime/session.js";
import { backdooredModel, cleanSet, K, poisonedSet } from "../test/tiny-patch-mlp.js";
import { mulberry32 } from "../util/random.js";
import { calibrate, calibrateG, decide, gaussiansForG, gaussiansForLayers, GScorer, splitForCalibration } from "./g-calibrate.js";
import { cholesky, extractFeatureLayers, extractFeatures, fitClassGaussians, fitMahalanobis, ledoitWolf, mahalanobisGapJs, mahalanobisGapNodes, mahalanobisJs, mahalanobisNodes, type FeatureLayer } from "./g-mahalanobis.js";

const normal = (rand: () => number) => () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());

/** n draws of K classes in d dims: class means k·shift on axis k, covariance A Aᵀ (A lower-triangular, fixed). */
function gaussianData(n: number, d: number, k: number, seed: number, a: Float64Array): { x: Float32Array; y: Int32Array } {
  const z = normal(mulberry32(seed));
  const x = new Float32Array(n * d), y = new Int32Array(n);
  const e = new Float64Array(d);
  for (let r = 0; r < n; r++) {
    const c = r % k;
    y[r] = c;
    for (let i = 0; i < d; i++) e[i] = z();
    for (let i = 0; i < d; i++) {
      let v = i === c ? 4 : 0;
      for (let j = 0; j <= i; j++) v += a[i * d + j]! * e[j]!;
      x[r * d + i] = v;
    }
  }
  return { x, y };
}

function mixing(d: number, seed: number): Float64Array {
  const rand = mulberry32(seed);
  const a = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j <= i; j++) a[i * d + j] = i === j ? 0.5 + 2 * rand() : rand() - 0.5;
  return a;
}

test("the fitted distance matches the true Mahalanobis distance of known Gaussians", () => {
  const d = 6, k = 3;
  const a = mixing(d, 1);
  const fit = gaussianData(30000, d, k, 2, a);
  const gs = fitClassGaussians(fit.x, fit.y, k, "penultimate");
  assert.equal(gs.covariance, "shared");
  assert.ok(gs.shrinkage < 0.01, `shrinkage ${gs.shrinkage} with n >> d`);
  // True distance: ‖A⁻¹(x − μ)‖² by forward substitution.
  const fresh = gaussianData(500, d, k, 3, a);
  const got = mahalanobisJs(gs, fresh.x, fresh.y);
  let maxRel = 0, mean = 0;
  for (let r = 0; r < 500; r++) {
    const u = new Float64Array(d);
    for (let i = 0; i < d; i++) {
      let s = fresh.x[r * d + i]! - (i === fresh.y[r] ? 4 : 0);
      for (let j = 0; j < i; j++) s -= a[i * d + j]! * u[j]!;
      u[i] = s / a[i * d + i]!;
    }
    const truth = u.reduce((x, v) => x + v * v, 0);
    mean += truth / 500;
    maxRel = Math.max(maxRel, Math.abs(got[r]! - truth) / (truth + 1));
  }
  assert.ok(maxRel < 0.05, `largest relative error ${maxRel}`);
  // χ²_d has mean d: the statistic is on the right scale.
  assert.ok(Math.abs(mean - d) < 1, `mean distance ${mean}`);
});

test("Ledoit–Wolf: the closed form equals the definition; shrinks hard when n < d, barely when n >> d", () => {
  const n = 40, d = 7;
  const rand = normal(mulberry32(5));
  const x = Float64Array.from({ length: n * d }, () => rand());
  const { cov, shrinkage, mu } = ledoitWolf(x, n, d);
  // Definition: β̄ = (1/n²) Σ_k ‖x_k x_kᵀ − S‖²_F, δ = ‖S − μI‖²_F, ρ = min(β̄, δ)/δ.
  let beta = 0;
  for (let r = 0; r < n; r++) for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) beta += (x[r * d + i]! * x[r * d + j]! - cov[i * d + j]!) ** 2;
  beta /= n * n;
  let delta = 0;
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) delta += (cov[i * d + j]! - (i === j ? mu : 0)) ** 2;
  assert.ok(Math.abs(shrinkage - Math.min(beta, delta) / delta) < 1e-9, `${shrinkage} vs ${Math.min(beta, delta) / delta}`);
  // Identity truth and n < d: the estimate leans on the identity and stays invertible.
  const small = Float64Array.from({ length: 10 * 30 }, () => rand());
  assert.ok(ledoitWolf(small, 10, 30).shrinkage > 0.5);
  const d2 = 5, a = mixing(d2, 9);
  const big = gaussianData(20000, d2, 1, 4, a);
  const c = Float64Array.from(big.x, (v, i) => v - (i % d2 === 0 ? 4 : 0));
  assert.ok(ledoitWolf(c, 20000, d2).shrinkage < 0.01);
  assert.throws(() => cholesky(Float64Array.of(1, 2, 2, 1), 2), /not positive definite/);
});

test("small data: diagonal covariance below 2d images, an unseen class uses the pooled mean, and the result is finite", () => {
  const d = 20, k = 4;
  const few = gaussianData(30, d, 3, 6, mixing(d, 2)); // class 3 never appears
  const gs = fitClassGaussians(few.x, few.y, k, "penultimate");
  assert.equal(gs.covariance, "diagonal");
  assert.equal(gs.counts[3], 0);
  assert.equal(gs.sparseClasses, 1);
  const pooled = Array.from({ length: d }, (_, i) => few.x.filter((_, q) => q % d === i).reduce((s, v) => s + v, 0) / 30);
  for (let i = 0; i < d; i++) assert.ok(Math.abs(gs.means[3 * d + i]! - pooled[i]!) < 1e-4);
  const s = mahalanobisJs(gs, few.x, Int32Array.from({ length: 30 }, (_, r) => r % k));
  assert.ok(s.every(Number.isFinite));
  // A feature that never varies (a dead unit) keeps the covariance invertible.
  const dead = Float32Array.from(few.x, (v, i) => (i % d === 0 ? 0 : v));
  assert.ok(mahalanobisJs(fitClassGaussians(dead, few.y, k, "penultimate", { diagonal: false }), dead, few.y).every(Number.isFinite));
});

test("calibration split: in-sample distances are optimistic, so the fit part and the calibration part must differ", () => {
  const d = 30, k = 3, a = mixing(d, 3);
  const fit = gaussianData(150, d, k, 7, a);
  const fresh = gaussianData(3000, d, k, 8, a);
  const gs = fitClassGaussians(fit.x, fit.y, k, "penultimate");
  const mean = (v: Float64Array) => v.reduce((s, x) => s + x, 0) / v.length;
  const inSample = mean(mahalanobisJs(gs, fit.x, fit.y)), outSample = mean(mahalanobisJs(gs, fresh.x, fresh.y));
  assert.ok(inSample < 0.9 * outSample, `in-sample ${inSample} vs fresh ${outSample}`);
  // Calibrated on a separate clean part, the 5% rule holds on fresh data (exchangeable scores).
  const calData = gaussianData(1000, d, k, 9, a);
  const cal = calibrate([Float32Array.from(mahalanobisJs(gs, calData.x, calData.y))], 0.05, ["mahalanobis"], "marginal");
  const rate = decide([Float32Array.from(mahalanobisJs(gs, fresh.x, fresh.y))], cal.thresholds).reduce((s, v) => s + v, 0) / 3000;
  assert.ok(rate <= 0.05 + 2 * Math.sqrt(0.05 * 0.95 / 3000) + 0.01, `fresh rate ${rate}`);
  // Calibrated on the fit part itself the threshold is too low and flags well above the target.
  const bad = calibrate([Float32Array.from(mahalanobisJs(gs, fit.x, fit.y))], 0.05, ["mahalanobis"], "marginal");
  const badRate = decide([Float32Array.from(mahalanobisJs(gs, fresh.x, fresh.y))], bad.thresholds).reduce((s, v) => s + v, 0) / 3000;
  assert.ok(badRate > rate, `in-sample calibration ${badRate} vs split ${rate}`);
});

test("the graph's statistic equals the JS one", async () => {
  const d = 5, k = 3;
  const data = gaussianData(300, d, k, 11, mixing(d, 4));
  const gs = fitClassGaussians(data.x, data.y, k, "penultimate");
  const g = new Graph("maha");
  g.addInput("f", "float32", ["N", d]);
  g.addInput("logits", "float32", ["N", k]);
  const out = mahalanobisNodes(g, gs, "f", "logits");
  const gap = mahalanobisGapNodes(g, gs, "f", "logits");
  g.setOutputs([out, gap]);
  // Logits: one-hot of a class that is not always the true one, so the class path is exercised.
  const pred = Int32Array.from(data.y, (c, r) => (r % 5 === 0 ? (c + 1) % k : c));
  const logits = new Float32Array(300 * k);
  pred.forEach((c, r) => (logits[r * k + c] = 1));
  const s = await Session.create(g);
  try {
    const res = await s.run({ f: { dtype: "float32", shape: [300, d], data: data.x }, logits: { dtype: "float32", shape: [300, k], data: logits } });
    const got = res[out]!.data as Float32Array, gotGap = res[gap]!.data as Float32Array;
    const js = mahalanobisJs(gs, data.x, pred), jsGap = mahalanobisGapJs(gs, data.x, pred);
    let positive = 0;
    for (let r = 0; r < 300; r++) {
      assert.ok(Math.abs(got[r]! - js[r]!) <= 1e-4 * (1 + js[r]!), `row ${r}: ${got[r]} vs ${js[r]}`);
      // The gap goes through ‖z‖² − 2z·m + ‖m‖²: float32 cancellation bounded by the size of the terms.
      assert.ok(Math.abs(gotGap[r]! - jsGap[r]!) <= 1e-3 * (1 + js[r]!), `gap row ${r}: ${gotGap[r]} vs ${jsGap[r]}`);
      assert.ok(jsGap[r]! >= 0 && jsGap[r]! <= js[r]! + 1e-9);
      if (jsGap[r]! > 1) positive++;
    }
    // The rows whose class was moved off the true one are exactly where the gap is large.
    assert.ok(positive >= 50 && positive <= 70, `${positive} rows with a clear gap (60 moved)`);
  } finally {
    await s.release();
  }
});

test("ONNX G with the Mahalanobis signal decides like the JS statistic and catches the tiny patch backdoor", async () => {
  const b = await backdooredModel();
  const { fit, calibration } = splitForCalibration(cleanSet(1400, 61), 0.05, { fraction: 0.4, signals: 1 });
  const gs = await fitMahalanobis(b, "penultimate", fit);
  const { calibration: cal, graph, scorer } = await calibrateG({ b, gaussians: gs, signals: ["mahalanobis"] }, calibration, { fpr: 0.05, guarantee: "marginal" });
  const session = await Session.create(graph);
  try {
    const t = cal.thresholds[0]!;
    for (const data of [cleanSet(400, 62), poisonedSet(200, 63)]) {
      const f = await extractFeatures(b, "penultimate", data);
      const js = mahalanobisJs(gs, f.features, f.pred);
      const out = argmaxRows((await session.run({ input: batchTensor(data.read(0, data.size), data.shape) })).logits.data as Float32Array, K + 1);
      let flagged = 0;
      for (let i = 0; i < data.size; i++) {
        // Float32 graph vs float64 JS: only a score within rounding of the threshold may differ.
        if (Math.abs(js[i]! - t) > 1e-4 * (1 + t)) assert.equal(out[i] === K, js[i]! > t, `${data.name} input ${i}`);
        if (out[i] === K) flagged++;
        else assert.equal(out[i], f.pred[i]);
      }
      if (data.name.startsWith("poison")) assert.ok(flagged / data.size > 0.9, `tiny patch detection ${flagged}/${data.size}`);
    }
    const scored = await scorer.score(calibration);
    assert.equal(decide(scored.scores, cal.thresholds).reduce((s, v) => s + v, 0), cal.heldOutFlagged);
  } finally {
    await session.release();
    await scorer.release();
  }
});

test("one pass for several feature layers: the same features, predictions and Gaussians as one pass per layer", async () => {
  const b = await backdooredModel();
  const data = cleanSet(300, 64);
  const layers: FeatureLayer[] = ["penultimate", "penultimate-preact", "conv-pooled"];
  const okLayers = layers.filter((l) => l !== "conv-pooled"); // the tiny MLP has no 4-D layer
  const one = await extractFeatureLayers(b, okLayers, data);
  for (const [i, l] of okLayers.entries()) {
    const alone = await extractFeatures(b, l, data);
    assert.equal(one.features[i]!.dim, alone.dim);
    assert.deepEqual(one.features[i]!.features, alone.features, l);
    assert.deepEqual(one.pred, alone.pred);
  }
  const both = await gaussiansForLayers(b, data, [...layers, false]);
  for (const [i, l] of layers.entries()) {
    const alone = await gaussiansForG(b, data, l);
    assert.deepEqual(both[i], alone, l);
  }
  assert.ok(both[2]!.note && !both[2]!.gaussians, "a layer the network lacks is a note, the others still fit");
  assert.match(both[2]!.note!, /^Mahalanobis signal left out: /);
  assert.deepEqual(both[3], {});
  // The note names the signal the layer feeds.
  const named = await gaussiansForLayers(b, data, [layers[2]!], ["class-gap"]);
  assert.match(named[0]!.note!, /^class-gap signal left out: /);
});

test("bad input to the fit: one-line user errors", async () => {
  const x = Float32Array.of(1, 2, 3, 4);
  assert.throws(() => fitClassGaussians(x.subarray(0, 2), Int32Array.of(0), 2, "penultimate"), (e: unknown) => e instanceof UserError && /at least 2 clean images/.test((e as Error).message));
  assert.throws(() => fitClassGaussians(x, Int32Array.of(0, 1), 2, "penultimate", { meanPrior: -1 }), UserError);
  assert.throws(() => fitClassGaussians(Float32Array.of(1, Number.NaN, 3, 4), Int32Array.of(0, 1), 2, "penultimate"), (e: unknown) => e instanceof UserError && !(e as Error).message.includes("\n"));
  const b = await backdooredModel();
  await assert.rejects(() => GScorer.create({ b, signals: ["mahalanobis"] }), (e: unknown) => e instanceof UserError && /not available/.test((e as Error).message));
  await assert.rejects(() => gaussiansForG(b, cleanSet(20, 1), "fc9" as FeatureLayer), (e: unknown) => e instanceof UserError && /unknown G feature layer "fc9"/.test((e as Error).message));
});

test("DeepID (1,283 classes, a handful of faces): diagonal covariance, classes without images on the pooled mean; graph = JS", async () => {
  const model = await loadModel(fixture("csaw2020/models/sunglasses_bd_weights.h5"), { arch: "deepid" });
  const files = ["clean_0_label43", "clean_1_label328", "clean_2_label196", "clean_3_label1268", "clean_4_label748"];
  const faces = files.map((f) => toNchw(decodeImage(fixture(`csaw2020/images/${f}.png`)), 255));
  // 8 seeded-noise copies of each face: 40 images, far fewer than the 2 × 160 a full covariance needs.
  const rand = mulberry32(5);
  const per = faces[0]!.length;
  const x = new Float32Array(40 * per);
  for (let i = 0; i < 40; i++) for (let q = 0; q < per; q++) x[i * per + q] = Math.min(1, Math.max(0, faces[i % 5]![q]! + (rand() - 0.5) * 4 / 255));
  const data = memoryDataset("faces", model.inputShape, x, null);
  const gs = await fitMahalanobis(model, "penultimate", data);
  assert.equal(gs.covariance, "diagonal");
  assert.equal(gs.numClasses, 1283);
  assert.ok(gs.sparseClasses >= 1283 - 5, `${gs.sparseClasses} sparse classes`);
  const f = await extractFeatures(model, "penultimate", data);
  const js = mahalanobisJs(gs, f.features, f.pred), jsGap = mahalanobisGapJs(gs, f.features, f.pred);
  const scorer = await GScorer.create({ b: model, gaussians: gs, gapGaussians: gs, signals: ["mahalanobis", "mahalanobis-gap"] });
  try {
    const s = await scorer.score(data);
    for (let i = 0; i < 40; i++) {
      assert.ok(Number.isFinite(js[i]!) && Math.abs(s.scores[0]![i]! - js[i]!) <= 1e-3 * (1 + js[i]!), `face ${i}: ${s.scores[0]![i]} vs ${js[i]}`);
      assert.ok(Math.abs(s.scores[1]![i]! - jsGap[i]!) <= 1e-3 * (1 + js[i]!), `face ${i} gap: ${s.scores[1]![i]} vs ${jsGap[i]}`);
    }
  } finally {
    await scorer.release();
  }
});
