// Re-inversion evidence: where a fresh trigger's norm sits among B's natural labels.
import assert from "node:assert/strict";
import { test } from "node:test";
import { flagReference, freshIndex } from "./reinvert-evidence.js";
import { flagThresholdNorm } from "./nc-schedule.js";
import type { NcLabelResult } from "./neural-cleanse.js";

test("freshIndex: a norm's anomaly index among B's natural labels", () => {
  const ref = { logMedian: Math.log(50), logSigma: 0.5 };
  assert.equal(freshIndex(ref, 50), 0);
  assert.ok(Math.abs(freshIndex(ref, 50 / Math.E) - 2) < 1e-12);
  assert.ok(freshIndex(ref, 100) < 0, "larger than the median: negative");
  // No spread among the references: off the median is infinitely far, on it 0.
  assert.equal(freshIndex({ logMedian: Math.log(50), logSigma: 0 }, 10), Infinity);
  assert.equal(freshIndex({ logMedian: Math.log(50), logSigma: 0 }, 50), 0);
});

const label = (l: number, norm: number, reference = true) => ({ label: l, l1Norm: norm, reference, mask: { l1Norm: norm } }) as unknown as NcLabelResult;

test("flagReference: the bound is the scan's (flagged labels in); the index is read among the unflagged labels", () => {
  // multi_trigger, seed 0 inside repair: targets 1 and 5 at 3.6 and 16.7 among ten labels.
  const norms = [36.3, 3.6, 44.5, 76.6, 36.1, 16.7, 47.2, 120.6, 16.0, 81.3];
  const labels = norms.map((n, i) => label(i, n));
  const r = flagReference({ labels, flagged: [1, 5] });
  assert.equal(r.bound, flagThresholdNorm(norms));
  assert.ok(Math.abs(r.bound - 5.44) < 0.01, `${r.bound}`);
  const logs = norms.filter((_, i) => i !== 1 && i !== 5).map(Math.log).sort((a, b) => a - b);
  const med = (logs[3]! + logs[4]!) / 2;
  assert.ok(Math.abs(r.logMedian - med) < 1e-12);
  const dev = logs.map((v) => Math.abs(v - med)).sort((a, b) => a - b);
  assert.ok(Math.abs(r.logSigma - 1.4826 * (dev[3]! + dev[4]!) / 2) < 1e-12);
  // With the targets in, the spread would be 1.00 instead of 0.56.
  assert.ok(Math.abs(r.logSigma - 0.558) < 0.001, `${r.logSigma}`);
  // Labels not marked as references (screened only on a large scan) stay out of both while some are marked.
  const marked = flagReference({ labels: [...labels.slice(0, 4), label(10, 1000, false)], flagged: [1] });
  assert.ok(Math.abs(marked.logMedian - Math.log(44.5)) < 1e-12);
  assert.equal(marked.bound, flagThresholdNorm(norms.slice(0, 4)));
  // Every label flagged: nothing else to compare against, so they are their own reference.
  assert.ok(Number.isFinite(flagReference({ labels: labels.slice(0, 3), flagged: [0, 1, 2] }).logMedian));
});
