import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { argmaxRows, batchTensor, forEachBatch, forwardGraph } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { Dataset } from "../io/dataset.js";
import { Session, withSession } from "../runtime/session.js";
import { backdooredModel, cleanSet, H, K, PER, poisonedSet, W } from "../test/tiny-patch-mlp.js";
import { mulberry32 } from "../util/random.js";
import { binomialCdf, allowedAbove, calibrate, minCalibrationSize, ReferenceRank, reservedCalibrationSize, calibrateG, checkFpr, clopperPearson, decide, gOutcome, calibratedGForRepair, describeGAnswers, disagreementScore, GScorer, rateWithInterval, reportCalibratedG, splitForCalibration, type GParts } from "./g-calibrate.js";
import { pickOverlays } from "./strip.js";
import { prunedNeuronsModel, pruneSite } from "./nc-mitigation.js";

/** Standard normal by Box–Muller. */
const normal = (rand: () => number) => () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());

/** n clean draws of 3 correlated signals (a shared factor plus noise), one Float32Array per signal. */
function cleanScores(n: number, seed: number): Float32Array[] {
  const z = normal(mulberry32(seed));
  const out = [0, 1, 2].map(() => new Float32Array(n));
  for (let i = 0; i < n; i++) {
    const common = z();
    out[0]![i] = common + 0.5 * z();
    out[1]![i] = 0.8 * common + z();
    out[2]![i] = Math.exp(z()); // skewed: the combination must not assume a scale
  }
  return out;
}

test("Clopper–Pearson matches closed forms and published values", () => {
  // k = 0: the upper end solves (1 − p)^n = 0.025.
  for (const n of [10, 100, 1000]) {
    const [lo, hi] = clopperPearson(0, n);
    assert.equal(lo, 0);
    assert.ok(Math.abs(hi - (1 - 0.025 ** (1 / n))) < 1e-9, `n=${n}: ${hi}`);
    const [lo2, hi2] = clopperPearson(n, n);
    assert.equal(hi2, 1);
    assert.ok(Math.abs(lo2 - 0.025 ** (1 / n)) < 1e-9);
  }
  // Symmetry: the interval of k/n mirrors that of (n−k)/n.
  const [a, b] = clopperPearson(7, 60), [c, d] = clopperPearson(53, 60);
  assert.ok(Math.abs(a - (1 - d)) < 1e-9 && Math.abs(b - (1 - c)) < 1e-9);
  // At its ends the tails equal 2.5%.
  const [lo, hi] = clopperPearson(5, 100);
  assert.ok(Math.abs(1 - binomialCdf(4, 100, lo) - 0.025) < 1e-7);
  assert.ok(Math.abs(binomialCdf(5, 100, hi) - 0.025) < 1e-7);
  assert.ok(Math.abs(lo - 0.01643) < 5e-5 && Math.abs(hi - 0.11284) < 5e-5, `${lo} ${hi}`);
  const r = rateWithInterval(3, 300);
  assert.equal(r.rate, 0.01);
  assert.ok(r.ci95[0] < 0.01 && r.ci95[1] > 0.01);
});

test("thresholds reproduce the split rule max_j rank_j(s_j) > τ and catch an input extreme in one signal", () => {
  const signals = ["disagreement", "strip", "trigger"] as const;
  for (const [fpr, guarantee] of [[0.01, "marginal"], [0.05, "marginal"], [0.01, { delta: 0.1 }]] as const) {
    const A = cleanScores(2000, 1);
    const cal = calibrate(A, fpr, [...signals], guarantee);
    assert.equal(cal.reference, 1000);
    // The thresholds are c(x) = max_j rank_j(s_j(x)) > τ, ranks against the even rows, as per-signal comparisons.
    const ranks = A.map((s) => new ReferenceRank(Float64Array.from({ length: 1000 }, (_, i) => s[2 * i]!).sort()));
    const fresh = cleanScores(20000, 3);
    const flags = decide(fresh, cal.thresholds);
    let near = 0;
    for (let i = 0; i < 2000; i++) {
      const c = Math.max(...fresh.map((s, j) => ranks[j]!.rank(s[i]!)));
      // float32 thresholds round up: an input within a hair of τ may go either way.
      if (Math.abs(c - cal.tau) < 1e-3) {
        near++;
        continue;
      }
      assert.equal(flags[i], c > cal.tau ? 1 : 0, `input ${i}`);
    }
    assert.ok(near < 5);
    // At most m of the calibration half (odd rows) lie above the thresholds.
    const odd = A.map((s) => Float32Array.from({ length: 1000 }, (_, i) => s[2 * i + 1]!));
    assert.ok(decide(odd, cal.thresholds).reduce((x, v) => x + v, 0) <= allowedAbove(1000, fpr, guarantee));
    // Not vacuous: it does flag clean data, and it catches inputs that are extreme in ONE signal.
    assert.ok(flags.reduce((x, v) => x + v, 0) > 0);
    const extreme = cleanScores(500, 4);
    for (let i = 0; i < 500; i++) extreme[i % 3]![i] = extreme[i % 3]![i]! + 50;
    assert.equal(decide(extreme, cal.thresholds).reduce((x, v) => x + v, 0), 500);
  }
});

test("an outside reference: every held-out row sets τ (at most m of all n above), ranks against the outside rows", () => {
  const signals: ("disagreement" | "strip" | "trigger")[] = ["disagreement", "strip", "trigger"];
  const held = cleanScores(1175, 11), outside = cleanScores(765, 12);
  const cal = calibrate(held, 0.01, signals, { delta: 0.1 }, outside);
  assert.equal(cal.n, 1175);
  assert.equal(cal.reference, 765);
  assert.equal(cal.referenceOutside, true);
  const m = allowedAbove(1175, 0.01, { delta: 0.1 });
  assert.equal(m, 7);
  // Exactly m of the held-out rows lie above the thresholds (continuous scores: no ties at τ).
  assert.equal(cal.heldOutFlagged, m);
  assert.equal(decide(held, cal.thresholds).reduce((x, v) => x + v, 0), m);
  // τ is a rank against the outside rows.
  const ranks = outside.map((s) => new ReferenceRank(Float64Array.from(s).sort()));
  const c = Float64Array.from({ length: 1175 }, (_, i) => Math.max(...held.map((s, j) => ranks[j]!.rank(s[i]!)))).sort();
  assert.equal(cal.tau, c[1175 - m - 1]);
  // Without the outside rows half the held-out data ranks and half sets τ: m = 2 of 587.
  const halves = calibrate(held, 0.01, signals, { delta: 0.1 });
  assert.equal(halves.referenceOutside, undefined);
  assert.ok(halves.heldOutFlagged < cal.heldOutFlagged);
  // Over many draws the rate stays under fpr about 1 − delta of the time. The rate of each draw's thresholds is
  // measured on one large fresh sample (shared by the draws, so its own error must be small: 0.03 points).
  const fresh = cleanScores(100000, 13);
  let over = 0;
  for (let s = 0; s < 30; s++) {
    const r = calibrate(cleanScores(1175, 200 + s), 0.01, signals, { delta: 0.1 }, cleanScores(765, 300 + s));
    if (decide(fresh, r.thresholds).reduce((x, v) => x + v, 0) / 100000 > 0.01) over++;
  }
  assert.ok(over <= 8, `above fpr in ${over}/30 draws`);
  assert.throws(() => calibrate(held, 0.01, signals, { delta: 0.1 }, outside.slice(0, 2)));
});

test("ReferenceRank: interpolated, increasing, extended above the maximum, and inverse() undoes rank()", () => {
  const r = new ReferenceRank(Float64Array.of(0, 1, 1, 3, 4));
  assert.equal(r.rank(-5), 0);
  assert.equal(r.rank(0.5), 0.5);
  assert.equal(r.rank(2), 2.5);
  assert.equal(r.rank(4), 4);
  // Top 5% of five scores is one gap: 4 − 3 = 1 per rank above the maximum.
  assert.equal(r.rank(6), 6);
  for (const t of [0.25, 2.5, 3.75, 4, 7.5]) assert.ok(Math.abs(r.rank(r.inverse(t)) - t) < 1e-12, `t=${t}`);
  // Equal neighbours: rank jumps over [1, 2), and the threshold of any rank there is their value.
  assert.equal(r.inverse(1.5), 1);
  assert.ok(r.rank(1 + 1e-9) > 2 && r.rank(1 - 1e-9) < 1);
  // All equal: a positive tail all the same.
  const flat = new ReferenceRank(Float64Array.of(2, 2, 2));
  assert.ok(flat.rank(2.001) > 2);
  // A signal constant on clean data ranks 0 at that value: it cannot decide the maximum for clean inputs.
  assert.equal(flat.rank(2), 0);
  assert.ok(flat.inverse(5) > 2);
});

test("the default (PAC) guarantee: over many held-out draws the rate exceeds fpr about delta of the time, not half", () => {
  const fresh = cleanScores(10000, 9);
  const signals: ("disagreement" | "strip" | "trigger")[] = ["disagreement", "strip", "trigger"];
  const over = { marginal: 0, pac: 0 };
  const draws = 30;
  const marginal: number[] = [];
  for (let s = 0; s < draws; s++) {
    const A = cleanScores(1200, 100 + s);
    const rate = (g: Parameters<typeof calibrate>[3]) => decide(fresh, calibrate(A, 0.02, signals, g).thresholds).reduce((x, v) => x + v, 0) / fresh[0]!.length;
    const m = rate("marginal");
    marginal.push(m);
    if (m > 0.02) over.marginal++;
    if (rate({ delta: 0.1 }) > 0.02) over.pac++;
  }
  // Binomial(30, 0.1) exceeds 8 with probability < 0.1%; the marginal rule exceeds fpr far more often.
  assert.ok(over.pac <= 8, `PAC rule above fpr in ${over.pac}/${draws} draws`);
  assert.ok(over.pac < over.marginal, `PAC ${over.pac} vs marginal ${over.marginal}`);
  // The marginal rule holds on average over draws: mean within two standard errors of at most fpr.
  const mean = marginal.reduce((a, v) => a + v, 0) / draws;
  const se = Math.sqrt(marginal.reduce((a, v) => a + (v - mean) ** 2, 0) / (draws - 1) / draws);
  assert.ok(mean <= 0.02 + 2 * se, `marginal mean ${mean} (se ${se})`);
});

test("calibration refuses an fpr its held-out data cannot support, and bad rates", () => {
  const few = cleanScores(50, 5);
  const need = minCalibrationSize(0.01, "marginal");
  assert.throws(() => calibrate(few, 0.01, ["disagreement", "strip", "trigger"], "marginal"), (e: unknown) => e instanceof UserError && new RegExp(`needs at least ${need} held-out`).test((e as Error).message));
  // At the minimum size calibration works and some threshold is finite; one image fewer is refused.
  for (const g of ["marginal", { delta: 0.1 }] as const) {
    const n = minCalibrationSize(0.01, g);
    assert.ok(calibrate(cleanScores(n, 7), 0.01, ["disagreement", "strip", "trigger"], g).thresholds.some(Number.isFinite));
    assert.throws(() => calibrate(cleanScores(n - 1, 7), 0.01, ["disagreement", "strip", "trigger"], g), UserError);
  }
  for (const bad of [0, 1, -0.1, Number.NaN]) assert.throws(() => checkFpr(bad), UserError);
  // A guarantee no held-out size can give is refused before the size search, not looped on.
  for (const delta of [0, 1, -0.5]) assert.throws(() => splitForCalibration(cleanSet(3000, 1), 0.01, { guarantee: { delta } }), UserError);
  assert.throws(() => calibrate(cleanScores(300, 5), 0.01, ["disagreement", "strip", "trigger"], { delta: 1 }), UserError);
});

test("splitForCalibration: disjoint, covers the data, reserves what the fpr needs", () => {
  const need = reservedCalibrationSize(0.01);
  assert.equal(need, 1175, "six signals at 1% and 90% confidence: the size repairs have always reserved");
  assert.ok(minCalibrationSize(0.01) < need);
  const data = cleanSet(2 * need + 10, 31);
  const { fit, calibration } = splitForCalibration(data, 0.01, { fraction: 0.2 });
  assert.equal(fit.size + calibration.size, data.size);
  assert.equal(calibration.size, need);
  const key = (x: Float32Array) => Array.from(x.subarray(0, 8)).join(",");
  const seen = new Set(Array.from({ length: fit.size }, (_, i) => key(fit.read(i, 1))));
  for (let i = 0; i < calibration.size; i++) assert.ok(!seen.has(key(calibration.read(i, 1))));
  // The draw follows the seed (repair passes --seed): seed 0 is the default's, another seed another draw.
  const rowsOf = (d: { size: number; read: (s: number, k: number) => Float32Array }) => Array.from({ length: d.size }, (_, i) => key(d.read(i, 1))).join("|");
  assert.equal(rowsOf(splitForCalibration(data, 0.01, { fraction: 0.2, seed: 0 }).calibration), rowsOf(calibration));
  assert.notEqual(rowsOf(splitForCalibration(data, 0.01, { fraction: 0.2, seed: 1 }).calibration), rowsOf(calibration));
  // Too little data for the reserved size: the least the rule can calibrate on, while that is at most half.
  const min = minCalibrationSize(0.01);
  const small = splitForCalibration(cleanSet(2 * need - 2, 1), 0.01);
  assert.equal(small.calibration.size, Math.max(min, Math.round(0.2 * (2 * need - 2))));
  assert.equal(splitForCalibration(cleanSet(2 * min, 1), 0.01).calibration.size, min);
  assert.throws(() => splitForCalibration(cleanSet(2 * min - 1, 1), 0.01), (e: unknown) => e instanceof UserError && new RegExp(`needs ${min} held-out`).test((e as Error).message));
});

test("the ONNX G makes exactly the JS decision; the calibrated rate holds on held-out clean data; a known trigger is caught", async () => {
  const b = await backdooredModel();
  const fc = b.layerOutputs.get("fc_1")!;
  const mask = Float32Array.from({ length: 32 }, (_, i) => (i % 3 === 0 ? 0 : 1));
  // The true 3x3 patch as a "reversed trigger": mask on the patch, white pattern.
  const tMask = new Float32Array(PER), tPat = new Float32Array(PER);
  for (let r = H - 3; r < H; r++) for (let q = W - 3; q < W; q++) (tMask[r * W + q] = 1), (tPat[r * W + q] = 1);
  const parts: GParts = { b, repaired: { value: fc, mask }, overlays: pickOverlays(cleanSet(20, 41), 6, 0), strip: { blend: "mean" }, triggers: [{ mask: tMask, pattern: tPat }] };
  const fpr = 0.05;
  const { calibration: cal, graph, scorer } = await calibrateG(parts, cleanSet(400, 42), { fpr, guarantee: "marginal" });
  const session = await Session.create(graph);
  try {
    assert.deepEqual(cal.signals, ["disagreement", "strip", "trigger", "confidence"]);
    const test = cleanSet(600, 43);
    const poisoned = poisonedSet(200, 44);
    for (const data of [test, poisoned]) {
      const s = await scorer.score(data);
      const o = gOutcome(s, cal, data.labels);
      const out = (await session.run({ input: batchTensor(data.read(0, data.size), data.shape) })).logits;
      assert.deepEqual(out.shape, [data.size, K + 1]);
      const g = argmaxRows(out.data as Float32Array, K + 1);
      for (let i = 0; i < data.size; i++) assert.equal(g[i], o.flagged[i] ? K : s.pred[i], `${data.name} input ${i}`);
    }
    const s = await scorer.score(test);
    const o = gOutcome(s, cal, test.labels);
    const [lo] = clopperPearson(o.nFlagged, test.size);
    assert.ok(lo <= fpr, `${o.nFlagged}/${test.size} clean inputs flagged at fpr ${fpr}`);
    // Stamped inputs sit at distance 0 from the true trigger, every clean input further: all flagged.
    const p = gOutcome(await scorer.score(poisoned), cal, poisoned.labels);
    assert.equal(p.nFlagged, poisoned.size);
    const { section: rep, g } = await reportCalibratedG(scorer, cal, { test, poisoned }, K);
    assert.equal(rep.cleanTest!.count, o.nFlagged);
    assert.equal(rep.poisoned!.count, poisoned.size);
    assert.deepEqual(rep.signals, cal.signals);
    assert.equal(rep.guarantee, "marginal");
    assert.deepEqual(g, { numClasses: K, clean: { n: test.size, correct: o.hit, flagged: o.nFlagged }, poisoned: { n: poisoned.size, flagged: poisoned.size, attackSuccess: 0 } });
  } finally {
    await session.release();
    await scorer.release();
  }
});

test("calibratedGForRepair: a detector-only G (STRIP + trigger, no B′) and its report; G.onnx agrees with the report", async () => {
  const b = await backdooredModel();
  const tMask = new Float32Array(PER), tPat = new Float32Array(PER);
  for (let r = H - 3; r < H; r++) for (let q = W - 3; q < W; q++) (tMask[r * W + q] = 1), (tPat[r * W + q] = 1);
  const test = cleanSet(300, 52), poisoned = poisonedSet(100, 53);
  const r = await calibratedGForRepair({ b, fit: cleanSet(40, 50), calibration: cleanSet(300, 51), test, poisoned, triggers: [{ mask: tMask, pattern: tPat }], fpr: 0.05, overlays: 8, mahalanobis: false, gap: false });
  assert.deepEqual(r.section.signals, ["strip", "trigger"]);
  assert.deepEqual(r.section.guarantee, { confidence: 0.9 });
  const session = await Session.create(r.graph);
  try {
    const g = argmaxRows((await session.run({ input: batchTensor(test.read(0, test.size), test.shape) })).logits.data as Float32Array, K + 1);
    assert.equal(g.filter((c) => c === K).length, r.section.cleanTest!.count);
    assert.equal(r.g!.clean.flagged, r.section.cleanTest!.count);
    assert.equal(r.section.poisoned!.count, poisoned.size);
  } finally {
    await session.release();
  }
});

test("calibratedGForRepair by default adds both feature-space signals, fitted on the repair part, and reports their fit", async () => {
  const b = await backdooredModel();
  const tMask = new Float32Array(PER), tPat = new Float32Array(PER);
  for (let r = H - 3; r < H; r++) for (let q = W - 3; q < W; q++) (tMask[r * W + q] = 1), (tPat[r * W + q] = 1);
  const fit = cleanSet(400, 70), test = cleanSet(300, 72), poisoned = poisonedSet(100, 73);
  const r = await calibratedGForRepair({ b, fit, calibration: cleanSet(300, 71), test, poisoned, triggers: [{ mask: tMask, pattern: tPat, label: 0 }], fpr: 0.05, overlays: 8 });
  assert.deepEqual(r.section.signals, ["strip", "trigger", "mahalanobis", "mahalanobis-gap"]);
  assert.equal(r.section.mahalanobis!.fitImages, fit.size);
  assert.equal(r.section.mahalanobis!.layer, "penultimate");
  assert.equal(r.section.mahalanobisGap!.layer, "penultimate-preact");
  assert.equal(r.section.signalSelection, undefined);
  const session = await Session.create(r.graph);
  try {
    const g = argmaxRows((await session.run({ input: batchTensor(test.read(0, test.size), test.shape) })).logits.data as Float32Array, K + 1);
    assert.equal(g.filter((c) => c === K).length, r.section.cleanTest!.count);
  } finally {
    await session.release();
  }
  // Opt-in selection on reversed-trigger proxies: records what it tried, never keeps the trigger signal.
  const s = await calibratedGForRepair({ b, fit, calibration: cleanSet(300, 71), test, triggers: [{ mask: tMask, pattern: tPat, label: 0 }], fpr: 0.05, overlays: 8, selectSignals: true });
  assert.ok(s.section.signalSelection && s.section.signalSelection.proxies >= 20);
  assert.ok(!s.section.signals.includes("trigger"));
  assert.ok(s.section.notes!.some((n) => /reversed-trigger proxies/.test(n)));
});

test("the disagreement signal in the graph is p_B(ŷ) − p_B′(ŷ) of disagreementScore, bounded by 1", async () => {
  const b = await backdooredModel();
  const site = pruneSite(b);
  const r = prunedNeuronsModel(b, site, [0, 2, 5, 7, 11]);
  const data = poisonedSet(40, 61);
  const scorer = await GScorer.create({ b, repaired: r, signals: ["disagreement"] });
  try {
    const s = await scorer.score(data);
    const [lb, lr] = [await logitsOf(b, data), await logitsOf(r, data)];
    let moved = 0;
    for (let i = 0; i < data.size; i++) {
      const want = disagreementScore(lb.subarray(i * K, (i + 1) * K), lr.subarray(i * K, (i + 1) * K));
      assert.ok(Math.abs(s.scores[0]![i]! - want) < 1e-5, `input ${i}: graph ${s.scores[0]![i]} vs ${want}`);
      assert.ok(want <= 1 && want >= -1);
      if (Math.abs(want) > 1e-3) moved++;
    }
    assert.ok(moved > 0, "the pruned network must move some probabilities, or the check is empty");
  } finally {
    await scorer.release();
  }
  // By hand: B sure of class 0 (p ≈ 0.98), B′ not (p = 0.25 on four classes).
  assert.ok(Math.abs(disagreementScore([4, 0, 0, 0], [0, 0, 0, 0]) - (Math.exp(4) / (Math.exp(4) + 3) - 0.25)) < 1e-12);
});

test("G answers with the repaired network's class where it does not reject (B's only when there is no B′)", async () => {
  const b = await backdooredModel();
  const site = pruneSite(b);
  // All but one neuron of the site pruned: a B′ that answers differently from B on many clean inputs.
  const r = prunedNeuronsModel(b, site, Array.from({ length: site.units - 1 }, (_, i) => i));
  const data = cleanSet(60, 62);
  const top = async (m: Model) => argmaxRows(await logitsOf(m, data), K);
  const [pb, pr] = [await top(b), await top(r)];
  assert.ok(pb.some((c, i) => c !== pr[i]), "B and B′ must differ on some input, or the check is empty");
  // Thresholds no score reaches: every input is accepted, so every answer is G's class for an accepted input.
  const scorer = await GScorer.create({ b, repaired: r, signals: ["disagreement"] });
  const noB = await GScorer.create({ b, overlays: pickOverlays(cleanSet(20, 41), 6, 0), signals: ["strip"] });
  try {
    assert.deepEqual(Array.from((await scorer.score(data)).pred), Array.from(pr));
    assert.deepEqual(Array.from((await noB.score(data)).pred), Array.from(pb));
    const accepted = gOutcome(await scorer.score(data), { fpr: 0.01, guarantee: "marginal", signals: ["disagreement"], thresholds: [Infinity], n: 0, reference: 0, tau: 0, heldOutFlagged: 0 }, data.labels);
    assert.equal(accepted.nFlagged, 0);
    assert.equal(accepted.hit, pr.reduce((a, c, i) => a + (c === data.labels![i] ? 1 : 0), 0));
  } finally {
    await scorer.release();
    await noB.release();
  }
});

test("describeGAnswers: G's clean accuracy and the attack's success through G, when there is poisoned data", () => {
  assert.deepEqual(describeGAnswers(undefined), []);
  assert.deepEqual(describeGAnswers({ numClasses: 10, clean: { n: 10000, correct: 8862, flagged: 22 } }), ["G answers correctly on 88.62% of the clean test data (rejections count as wrong)"]);
  assert.equal(
    describeGAnswers({ numClasses: 10, clean: { n: 10000, correct: 8862, flagged: 22 }, poisoned: { n: 9000, flagged: 5319, attackSuccess: 238 } })[1],
    "G answers the attacker's target on 2.64% of the poisoned data (238/9000; the rest rejected or answered otherwise)",
  );
});

async function logitsOf(m: Model, data: Dataset): Promise<Float32Array> {
  const out = new Float32Array(data.size * m.numClasses);
  await withSession(forwardGraph(m), (s) => forEachBatch(s, data, (o, start) => out.set(o[m.logits]!.data as Float32Array, start * m.numClasses)));
  return out;
}
