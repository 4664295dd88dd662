// The flag rule of scoreScan over two trigger families: the FDR level split over the families by default.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_SCORE_RULE, scoreScan, type NcRawScore } from "./neural-cleanse.js";

const raw = (norms: readonly number[]): NcRawScore[] =>
  norms.map((n) => ({ l1Norm: n, statNorm: n, reference: true, attackSuccess: 1, phase: "full", steps: 100, reached: true, lambda: 1e-3 }));

test("scoreScan: a label one family puts between q 0.025 and 0.05 is flagged per family, not with the level split over two", () => {
  // Nine natural log-norms and label 9 well below them in the mask family; the blend family has no outlier.
  const nat = [100, 110, 95, 105, 120, 90, 102, 98, 115];
  const logs = nat.map(Math.log);
  const m = Math.log(102);
  const dev = logs.map((x) => Math.abs(x - m)).sort((a, b) => a - b);
  const sd = 1.4826 * dev[4];
  // With label 9 among the references the median and MAD shift; solve for the norm whose q lands in (0.025, 0.05).
  const labels = [...nat.keys(), 9];
  let mask: NcRawScore[] = [];
  let q = 0;
  for (let z = 2.5; z < 4; z += 0.01) {
    mask = raw([...nat, Math.exp(m - z * sd)]);
    const each = scoreScan(labels, { mask, blend: raw([...nat, 100]) }, { scale: "log", fdr: 0.05, minHeldOutSuccess: 0.5, hw: 1, heldOutImages: 100, splitFamilies: false });
    q = each.labels[9].qValue;
    if (q > 0.025 && q < 0.05) break;
  }
  assert.ok(q > 0.025 && q < 0.05, `q ${q}`);
  const opts = { scale: "log" as const, fdr: 0.05, minHeldOutSuccess: 0.5, hw: 1, heldOutImages: 100 };
  const blend = raw([...nat, 100]);
  const each = scoreScan(labels, { mask, blend }, { ...opts, splitFamilies: false });
  const split = scoreScan(labels, { mask, blend }, opts);
  assert.equal(DEFAULT_SCORE_RULE.splitFamilies, true);
  assert.deepEqual(each.flagged, [9]);
  assert.deepEqual(split.flagged, []);
  assert.ok(split.labels[9].reasons.some((r) => r.includes("over 2 trigger families")), split.labels[9].reasons.join("; "));
  // With one family there is nothing to split: the same label is flagged.
  assert.deepEqual(scoreScan(labels, { mask }, opts).flagged, [9]);
});
