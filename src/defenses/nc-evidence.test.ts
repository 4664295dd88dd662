// The evidence behind Neural Cleanse flags: normal tail, Benjamini–Hochberg, the flag's tests, the reference
// labels and the confirm-and-exclude loop for several targets.
import assert from "node:assert/strict";
import { test } from "node:test";
import { mulberry32 } from "../util/random.js";
import { NATURAL_SCALE, SOURCE_SCALES, type SourceCurve } from "./nc-sources.js";
import { bhQValues, erfc, familyEvidence, incompleteBeta, MAD_EFFICIENCY, madNullDf, MIN_HELD_OUT_IMAGES, normalTail, stouffer, studentTail, type LabelMeasure } from "./nc-evidence.js";

/** Standard normal draws (Box–Muller) from a seeded stream. */
function normals(n: number, seed: number): number[] {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()));
}

const measures = (norms: number[], extra: Partial<LabelMeasure> = {}): LabelMeasure[] =>
  norms.map((norm, label) => ({ label, norm, reached: true, heldOutSuccess: 1, ...extra }));

test("normal tail and erfc against known values", () => {
  assert.ok(Math.abs(erfc(0) - 1) < 1e-7);
  assert.ok(Math.abs(erfc(1) - 0.157299207) < 1e-7);
  assert.ok(Math.abs(erfc(-1) - 1.842700793) < 1e-7);
  assert.ok(Math.abs(normalTail(1.959964) - 0.025) < 1e-6);
  assert.ok(Math.abs(normalTail(2) - 0.0227501) < 1e-6);
  assert.ok(Math.abs(normalTail(-2) - 0.9772499) < 1e-6);
  assert.equal(normalTail(Infinity), 0);
});

test("Benjamini–Hochberg q-values by hand", () => {
  // sorted p 0.01, 0.02, 0.03, 0.5 over n = 4: p·n/rank = 0.04, 0.04, 0.04, 0.5, then the running minimum from the top
  const q = bhQValues([0.03, 0.5, 0.01, 0.02]);
  [0.04, 0.5, 0.04, 0.04].forEach((v, i) => assert.ok(Math.abs(q[i] - v) < 1e-12, `q[${i}] = ${q[i]}`));
  assert.deepEqual(bhQValues([1, 1]), [1, 1]);
});

test("a lone small norm is flagged with its reasons; the FDR test needs more as the labels grow", () => {
  const z = normals(1283, 3);
  // Natural log-norms: median ln 100, spread 0.3; one label 4.5 spreads below.
  const norms = z.map((v) => Math.exp(Math.log(100) + 0.3 * v));
  norms[7] = Math.exp(Math.log(100) - 0.3 * 4.5);
  const ev = familyEvidence(measures(norms), { scale: "log" });
  const flagged = ev.perLabel.flatMap((e, i) => (e.flagged ? [i] : []));
  assert.deepEqual(flagged, [7]);
  assert.ok(ev.perLabel[7].confidence > 0.95 && ev.perLabel[7].reasons.some((r) => r.includes("false-discovery")));
  // The plain index > 2 rule alone would flag about 2.3% of the natural labels.
  const byIndex = ev.perLabel.filter((e) => e.small && e.index > 2).length;
  assert.ok(byIndex > 10, `${byIndex} labels have a small-side index > 2`);
  // The same index needs a smaller false-discovery rate among more labels: q grows with the label count.
  const ten = [90, 95, 98, 100, 100, 102, 105, 110, 115, 40];
  const evTen = familyEvidence(measures(ten), { scale: "log" });
  const lone = ten[9];
  norms[7] = lone;
  const evAll = familyEvidence(measures(norms), { scale: "log" });
  assert.ok(evTen.perLabel[9].index > 3 && evAll.perLabel[7].index > 3, `indices ${evTen.perLabel[9].index}, ${evAll.perLabel[7].index}`);
  assert.ok(evTen.perLabel[9].flagged && evTen.perLabel[9].qValue < evAll.perLabel[7].qValue);
});

test("each test can stop a flag: threshold not reached, held-out success (only with enough images), large side", () => {
  const norms = [100, 110, 90, 105, 95, 102, 98, 5, 300];
  const ok = familyEvidence(measures(norms), { scale: "log" });
  assert.ok(ok.perLabel[7].flagged && !ok.perLabel[8].flagged, "small side only");
  const notReached = familyEvidence(measures(norms).map((m, i) => (i === 7 ? { ...m, reached: false } : m)), { scale: "log" });
  assert.ok(!notReached.perLabel[7].flagged && notReached.perLabel[7].confidence === 0);
  const weak = measures(norms).map((m, i) => (i === 7 ? { ...m, heldOutSuccess: 0.1 } : m));
  const weakEv = familyEvidence(weak, { scale: "log", heldOutImages: MIN_HELD_OUT_IMAGES });
  assert.ok(!weakEv.perLabel[7].flagged && weakEv.perLabel[7].reasons.some((r) => r.startsWith("held-out")));
  assert.ok(familyEvidence(weak, { scale: "log", heldOutImages: 1 }).perLabel[7].flagged, "one held-out image is no test");
});

test("the median and MAD come from the reference labels", () => {
  // Non-reference labels (a shortlist, small by selection) would drag the median down.
  const norms = [70, 72, 74, 76, 100, 105, 95, 110, 90, 102];
  const ref = norms.map((_, i) => i >= 4);
  const ev = familyEvidence(measures(norms).map((m, i) => ({ ...m, reference: ref[i] })), { scale: "log" });
  // The reference labels' median on the log scale: the geometric mean of the middle two, 100 and 102.
  assert.ok(Math.abs(Math.exp(ev.median) - Math.sqrt(100 * 102)) < 1e-9, `median ${Math.exp(ev.median)}`);
  const all = familyEvidence(measures(norms), { scale: "log" });
  assert.ok(Math.exp(all.median) < 95, `all labels' median ${Math.exp(all.median)}`);
  assert.ok(ev.perLabel[0].index > all.perLabel[0].index);
});

test("nullNorm: the median and MAD read each label's nullNorm, its own index its norm", () => {
  const norms = [60, 64, 70, 76, 80, 90, 95, 100, 105, 110];
  const plain = familyEvidence(measures(norms), { scale: "log" });
  // Labels 3 and 4 searched harder: smaller norms, but the statistics keep their first norms.
  const harder = norms.map((n, i) => (i === 3 || i === 4 ? n / 2 : n));
  const ev = familyEvidence(measures(harder).map((m, i) => (i === 3 || i === 4 ? { ...m, nullNorm: norms[i] } : m)), { scale: "log" });
  assert.equal(ev.median, plain.median);
  assert.equal(ev.mad, plain.mad);
  const expected = (plain.median - Math.log(38)) / (1.4826 * plain.mad);
  assert.ok(Math.abs(ev.perLabel[3].index - expected) < 1e-9, `index ${ev.perLabel[3].index} against ${expected}`);
  // Without nullNorm the smaller norms move the statistics too.
  const moved = familyEvidence(measures(harder), { scale: "log" });
  assert.ok(moved.median < plain.median, `median ${moved.median} against ${plain.median}`);
});

test("loop 'all': a second target is found once the first is confirmed and leaves the statistics", () => {
  // Ten labels, two targets: with the very small one in the statistics the other is not flagged; once the
  // first is confirmed and excluded, it is (a third round then finds nothing new).
  const norms = [50, 52, 54, 56, 58, 60, 62, 64, 1, 42];
  const ev = familyEvidence(measures(norms), { scale: "log", loop: "all" });
  // One round (the default) finds the first only.
  assert.deepEqual(familyEvidence(measures(norms), { scale: "log" }).perLabel.flatMap((e, i) => (e.flagged ? [i] : [])), [8]);
  const flagged = ev.perLabel.flatMap((e, i) => (e.flagged ? [i] : []));
  assert.deepEqual(flagged, [8, 9]);
  assert.equal(ev.rounds, 3);
  assert.ok(ev.perLabel[9].reasons.some((r) => r.includes("without the 1 other confirmed")), ev.perLabel[9].reasons.join("; "));
  // No target: nothing flagged, one round.
  const clean = familyEvidence(measures([60, 64, 58, 66, 62, 59, 61, 63, 57, 65]), { scale: "log", loop: "all" });
  assert.ok(clean.perLabel.every((e) => !e.flagged) && clean.rounds === 1);
});

test("Student's t tail against known values, and the t null making a large index less surprising with few labels", () => {
  assert.ok(Math.abs(studentTail(1, 1) - 0.25) < 1e-12, "Cauchy: P(T >= 1) = 1/4");
  assert.ok(Math.abs(studentTail(2.262157, 9) - 0.025) < 1e-6, "t(9) 97.5% quantile");
  assert.ok(Math.abs(studentTail(2.13145, 15) - 0.025) < 1e-6, "t(15) 97.5% quantile");
  assert.ok(Math.abs(studentTail(1.959964, 1e7) - normalTail(1.959964)) < 1e-6, "large df: the normal");
  assert.ok(Math.abs(studentTail(-0.7, 4) + studentTail(0.7, 4) - 1) < 1e-12, "symmetric");
  assert.ok(Math.abs(incompleteBeta(0.3, 2, 3) - 0.3483) < 1e-4, "I_0.3(2, 3) = 0.3483");
  // Nine reference labels set the median and MAD; a tenth label 3.2 robust SDs below: flagged under the normal
  // null (p 7e-4, q 0.007), not under t(8) (p about 0.006, q about 0.06).
  const norms = [100, 110, 95, 105, 120, 90, 102, 98, 115];
  const logs = norms.map(Math.log);
  const med = Math.log(102);
  const dev = logs.map((x) => Math.abs(x - med)).sort((a, b) => a - b);
  const sd = 1.4826 * dev[4];
  const ms: LabelMeasure[] = [...norms, Math.exp(med - 3.2 * sd)].map((n, i) => ({ label: i, norm: n, reached: true, heldOutSuccess: 1, reference: i < 9 }));
  const normal = familyEvidence(ms, { scale: "log" });
  const t = familyEvidence(ms, { scale: "log", nullDistribution: "t" });
  assert.ok(Math.abs(normal.perLabel[9].index - 3.2) < 1e-9, `index ${normal.perLabel[9].index}`);
  assert.ok(Math.abs(normal.perLabel[9].pValue - normalTail(3.2)) < 1e-12);
  assert.ok(Math.abs(t.perLabel[9].pValue - studentTail(3.2, 8)) < 1e-12);
  assert.equal(normal.perLabel[9].flagged, true);
  assert.equal(t.perLabel[9].flagged, false, `t: q ${t.perLabel[9].qValue}`);
});

test("natural-feature check: a small norm whose trigger moves more at a third of its strength than every reference label's is not flagged", () => {
  // Curves with `full` images moved by the whole trigger and `low` by a third of it.
  const curves = (full: number, low: number): SourceCurve[] => [{ source: 0, images: full, hits: SOURCE_SCALES.map((x) => (x > NATURAL_SCALE ? full : x === NATURAL_SCALE ? low : 0)) }];
  const norms = [50, 52, 54, 56, 58, 60, 62, 64, 10, 12];
  const lows = [2, 4, 1, 3, 5, 2, 6, 0, 0, 20]; // label 8: a switch; label 9: reaches further than all
  const ms = measures(norms).map((m, i) => ({ ...m, sources: curves(100, lows[i]) }));
  const ev = familyEvidence(ms, { scale: "log", naturalCheck: true });
  assert.equal(ev.perLabel[8].flagged, true);
  assert.equal(ev.perLabel[9].flagged, false);
  assert.equal(ev.perLabel[9].confidence, 0);
  assert.ok(ev.perLabel[9].reasons.some((r) => r.startsWith("explained as a natural feature")), ev.perLabel[9].reasons.join("; "));
  assert.ok(Math.abs(ev.perLabel[9].reach! - 0.2) < 1e-12);
  // Without the check (the default) or without curves both are flagged.
  const off = familyEvidence(ms, { scale: "log" });
  assert.ok(off.perLabel[8].flagged && off.perLabel[9].flagged);
  assert.ok(off.perLabel[9].reasons.some((r) => r.endsWith("(not a test)")), off.perLabel[9].reasons.join("; "));
  assert.ok(familyEvidence(measures(norms), { scale: "log", naturalCheck: true }).perLabel[9].flagged);
  // Fewer than MIN_NATURAL_REFERENCES reference labels with curves: no test.
  const few = ms.map((m, i) => (i < 6 ? { ...m, sources: undefined } : m));
  assert.ok(familyEvidence(few, { scale: "log", naturalCheck: true }).perLabel[9].flagged);
});

test("two-stage flag: an index > 2 that misses the FDR bar is confirmed by a trigger more switch-like than every reference's", () => {
  const curves = (full: number, low: number): SourceCurve[] => [{ source: 0, images: full, hits: SOURCE_SCALES.map((x) => (x > NATURAL_SCALE ? full : x === NATURAL_SCALE ? low : 0)) }];
  // Label 9 sits about 2.3 robust SDs below the median of the other nine: index > 2, but q > 0.05 at N = 10.
  const norms = [100, 110, 95, 105, 120, 90, 102, 98, 115];
  const logs = norms.map(Math.log);
  const med = Math.log(102);
  const sd = 1.4826 * logs.map((x) => Math.abs(x - med)).sort((a, b) => a - b)[4];
  const all = [...norms, Math.exp(med - 2.3 * sd)];
  const lows = [3, 5, 2, 4, 6, 2, 3, 5, 4, 0];
  const ms = measures(all).map((m, i) => ({ ...m, sources: curves(100, lows[i]) }));
  const ev = familyEvidence(ms, { scale: "log", naturalCheck: true });
  assert.ok(ev.perLabel[9].index > 2 && ev.perLabel[9].qValue > 0.05, `index ${ev.perLabel[9].index}, q ${ev.perLabel[9].qValue}`);
  assert.equal(ev.perLabel[9].flagged, true);
  assert.ok(ev.perLabel[9].reasons.some((r) => r.includes("confirmed as a switch")), ev.perLabel[9].reasons.join("; "));
  // A tie with one reference label is no confirmation; nor is the check without curves.
  const tie = ms.map((m, i) => (i === 9 ? { ...m, sources: curves(100, 2) } : m));
  assert.equal(familyEvidence(tie, { scale: "log", naturalCheck: true }).perLabel[9].flagged, false);
  assert.equal(familyEvidence(measures(all), { scale: "log", naturalCheck: true }).perLabel[9].flagged, false);
  assert.equal(familyEvidence(ms, { scale: "log" }).perLabel[9].flagged, false, "off by default");
});

/** Median of a list (test helper). */
const med = (a: readonly number[]): number => {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

test("MAD null: a normal label's index against n normal references exceeds the t(madNullDf) quantile about as often as the t says", () => {
  // The t quantile with tail 1% (bisection on studentTail).
  const quantile = (p: number, df: number): number => {
    let lo = 0, hi = 100;
    for (let k = 0; k < 80; k++) {
      const mid = (lo + hi) / 2;
      if (studentTail(mid, df) > p) lo = mid;
      else hi = mid;
    }
    return (lo + hi) / 2;
  };
  const n = 10, draws = 20000, p = 0.01;
  const z = normals(draws * (n + 1), 11);
  const zq = quantile(p, madNullDf(n));
  let over = 0;
  for (let r = 0; r < draws; r++) {
    const ref = z.slice(r * (n + 1), r * (n + 1) + n);
    const m = med(ref);
    const s = 1.4826 * med(ref.map((x) => Math.abs(x - m)));
    if ((m - z[r * (n + 1) + n]) / s >= zq) over++;
  }
  const rate = over / draws;
  // 200 expected at p = 1%; the normal null and t(n − 1) put far less mass beyond the same index.
  assert.ok(rate > 0.6 * p && rate < 1.6 * p, `simulated tail ${rate} at t(${madNullDf(n).toFixed(2)})'s 1% quantile ${zq.toFixed(2)}`);
  assert.ok(normalTail(zq) < p / 20 && studentTail(zq, n - 1) < p / 4, `normal ${normalTail(zq)}, t(${n - 1}) ${studentTail(zq, n - 1)}`);
  assert.ok(Math.abs(madNullDf(10) - MAD_EFFICIENCY * 9) < 1e-12 && madNullDf(1) === 1);
});

test("FDR split over trigger families: a label that passes at 0.05 but not at 0.025 is flagged with one family, not with two", () => {
  const norms = [100, 110, 95, 105, 120, 90, 102, 98, 115];
  const logs = norms.map(Math.log);
  const m = Math.log(102);
  const sd = 1.4826 * med(logs.map((x) => Math.abs(x - m)));
  // Index 2.8: p = normalTail(2.8) = 2.6e-3, q = 10 · p = 0.026 (the only small label), between 0.025 and 0.05.
  const ms: LabelMeasure[] = [...norms, Math.exp(m - 2.8 * sd)].map((x, i) => ({ label: i, norm: x, reached: true, heldOutSuccess: 1, reference: i < 9 }));
  const one = familyEvidence(ms, { scale: "log" });
  const two = familyEvidence(ms, { scale: "log", families: 2 });
  assert.ok(one.perLabel[9].qValue > 0.025 && one.perLabel[9].qValue < 0.05, `q ${one.perLabel[9].qValue}`);
  assert.equal(one.perLabel[9].flagged, true);
  assert.equal(two.perLabel[9].flagged, false);
  assert.ok(two.perLabel[9].reasons.some((r) => r.includes("over 2 trigger families")), two.perLabel[9].reasons.join("; "));
});

test("compactness: the combined index (Stouffer) flags a compact trigger of ordinary norm; off (the default), the norm alone decides", () => {
  // Ten labels: label 9's norm is a little small (index about 1.6), its mask much more compact (spread 3 px
  // against 8-12); the combination passes, the norm alone does not. Without a spread on every label: norms only.
  const norms = [100, 110, 95, 105, 120, 90, 102, 98, 115, 85];
  const spreads = [9, 10, 11, 9.5, 10.5, 8, 12, 10, 9.8, 3];
  const ms = measures(norms).map((m, i) => ({ ...m, spread: spreads[i] }));
  const on = familyEvidence(ms, { scale: "log", compactness: true });
  const off = familyEvidence(ms, { scale: "log" });
  assert.ok(on.perLabel[9].flagged && !off.perLabel[9].flagged);
  const e = on.perLabel[9];
  assert.ok(Math.abs(e.combined! - stouffer(1.5, e.spreadIndex!) ) > 0 && e.spreadIndex! > 2, `${e.spreadIndex}`);
  assert.ok(e.reasons.some((r) => r.startsWith("combined index")), e.reasons.join("; "));
  const partial = ms.map((m, i) => (i === 0 ? { ...m, spread: undefined } : m));
  assert.equal(familyEvidence(partial, { scale: "log", compactness: true }).perLabel[9].combined, undefined);
  assert.equal(stouffer(3, 1), 4 / Math.SQRT2);
  assert.equal(stouffer(Infinity, 1), Infinity);
  assert.equal(stouffer(Infinity, -Infinity), 0);
});

test("loop rules: a label no anomaly in the first round is confirmed by 'all' after the truncation, not by 'candidates' or 'off'", () => {
  // One target (label 9) and a natural group of three smaller labels (6, 7, 8): with 9 excluded, the six larger
  // labels' MAD shrinks and the group becomes 'outliers'; in the first round their index is below 2.
  const norms = [200, 205, 210, 215, 220, 225, 160, 162, 165, 20];
  const first = familyEvidence(measures(norms), { scale: "log", loop: "off" });
  assert.deepEqual(first.perLabel.flatMap((e, i) => (e.flagged ? [i] : [])), [9]);
  assert.ok(first.perLabel[6].index < 2, `${first.perLabel[6].index}`);
  const all = familyEvidence(measures(norms), { scale: "log", loop: "all" });
  assert.ok(all.perLabel[6].flagged, "the truncated rest makes the group outliers");
  const cand = familyEvidence(measures(norms), { scale: "log", loop: "candidates" });
  assert.deepEqual(cand.perLabel.flatMap((e, i) => (e.flagged ? [i] : [])), [9]);
  assert.ok(cand.perLabel[6].reasons.some((r) => r.includes("with every label in the statistics")), cand.perLabel[6].reasons.join("; "));
  // The cost: the masked second target of the test above has a first-round index below 2, so "candidates"
  // loses it (as it loses multi_trigger's second target on some seeds, README).
  const masked = familyEvidence(measures([50, 52, 54, 56, 58, 60, 62, 64, 1, 42]), { scale: "log", loop: "candidates" });
  assert.deepEqual(masked.perLabel.flatMap((e, i) => (e.flagged ? [i] : [])), [8]);
});

test("leaveOut: each label's index is taken against the other labels only; the median and MAD reported are all labels'", () => {
  // The multi_trigger scan inside `repair --seed 2` (mask norms): two targets (1: 9.2, 5: 15.1) and the bag (8: 18.8).
  const norms = [53.4, 9.17, 52.7, 63.6, 41.4, 15.1, 39.4, 112.1, 18.8, 108.4];
  const logs = norms.map(Math.log);
  const robust = (x: number, rest: number[]): number => {
    const s = [...rest].sort((a, b) => a - b);
    const mid = (a: number[]): number => (a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2);
    const med = mid(s);
    const mad = mid(rest.map((v) => Math.abs(v - med)).sort((a, b) => a - b));
    return (med - x) / (1.4826 * mad);
  };
  const inSample = familyEvidence(measures(norms), { scale: "log" });
  const loo = familyEvidence(measures(norms), { scale: "log", leaveOut: true });
  logs.forEach((x, i) => {
    assert.ok(Math.abs(inSample.perLabel[i].index - Math.abs(robust(x, logs))) < 1e-3, `in-sample index of ${i}`);
    assert.ok(Math.abs(loo.perLabel[i].index - Math.abs(robust(x, logs.filter((_, j) => j !== i)))) < 1e-3, `leave-out index of ${i}`);
  });
  // Its own small norm no longer widens its MAD: label 1 goes from about 1.9 to about 4.
  assert.ok(inSample.perLabel[1].index < 2 && loo.perLabel[1].index > 3.9);
  assert.equal(loo.median, inSample.median);
  assert.equal(loo.mad, inSample.mad);
});
