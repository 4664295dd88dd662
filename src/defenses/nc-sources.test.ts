// The natural-feature check's statistics on small hand-made curves.
import assert from "node:assert/strict";
import { test } from "node:test";
import { kappa50, NATURAL_SCALE, naturalRank, naturalReach, SOURCE_SCALES, sourceCurves, summarizeSources, switchRank, transferCounts, type SourceCurve } from "./nc-sources.js";

const k = (kappa: number) => SOURCE_SCALES.indexOf(kappa);

test("source curves count each clean class's images per scale, leaving out the label's own", () => {
  // Five images: clean classes 0, 0, 1, 2, 2; the label is 2 (its images are left out).
  const clean = [0, 0, 1, 2, 2];
  const stamped = [
    [2, 2, 2, 2, 2], // κ = 1: all reach the label
    [2, 0, 1, 2, 2], // κ = 0.7: one image of class 0
  ];
  const c = sourceCurves(2, clean, stamped);
  assert.deepEqual(c, [
    { source: 0, images: 2, hits: [2, 1] },
    { source: 1, images: 1, hits: [1, 0] },
  ]);
});

test("κ50: the smallest scale with at least half of the images, scanned from κ = 1 down", () => {
  const n = SOURCE_SCALES.length;
  const hits = (upTo: number) => Array.from({ length: n }, (_, i) => (i <= upTo ? 5 : 0));
  assert.equal(kappa50({ source: 0, images: 10, hits: hits(2) }), SOURCE_SCALES[2]);
  assert.equal(kappa50({ source: 0, images: 10, hits: hits(-1) }), Infinity);
  // A failure at a larger κ stops the scan even if a smaller κ works again.
  const gap = hits(n - 1);
  gap[1] = 0;
  assert.equal(kappa50({ source: 0, images: 10, hits: gap }), 1);
  const s = summarizeSources([
    { source: 0, images: 10, hits: hits(2) },
    { source: 1, images: 10, hits: hits(0) },
    { source: 3, images: 4, hits: hits(-1) },
  ])!;
  assert.equal(s.sources, 3);
  assert.equal(s.spread, Infinity, "a source not reached at κ = 1");
  assert.ok(Math.abs(s.reachedSources - 2 / 3) < 1e-12);
  assert.equal(s.minSuccess, 0);
  assert.equal(summarizeSources([]), null);
});

test("natural reach: the share of the full trigger's images that a third of it already moves", () => {
  const curve = (full: number, low: number): SourceCurve => {
    const hits = SOURCE_SCALES.map((x) => (x > NATURAL_SCALE ? full : x === NATURAL_SCALE ? low : 0));
    return { source: 0, images: full, hits };
  };
  // A switch: nothing moves at a third of the trigger.
  assert.equal(naturalReach([curve(10, 0), curve(8, 0)]), 0);
  // A natural feature: similar classes move early.
  assert.ok(Math.abs(naturalReach([curve(10, 6), curve(10, 0)])! - 0.3) < 1e-12);
  assert.equal(naturalReach([curve(0, 0)]), null, "the full trigger moves nothing");
  assert.equal(naturalReach([curve(10, 2)], SOURCE_SCALES, 0.33), null, "a κ not measured");
  assert.ok(k(NATURAL_SCALE) > 0);
});

test("natural rank: uniform over the reference labels, 1/(n+1) above all of them", () => {
  const refs = [0.1, 0.2, 0.3, 0.4];
  assert.equal(naturalRank(0.5, refs), 1 / 5);
  assert.equal(naturalRank(0.3, refs), 3 / 5, "ties count as reaching as far");
  assert.equal(naturalRank(0, refs), 1);
  assert.equal(naturalRank(0.5, []), 1);
});

test("switch rank: the other tail, 1/(n+1) below all of them", () => {
  const refs = [0.1, 0.2, 0.3, 0.4];
  assert.equal(switchRank(0, refs), 1 / 5);
  assert.equal(switchRank(0.1, refs), 2 / 5, "a tie is not below");
  assert.equal(switchRank(0.5, refs), 1);
  assert.equal(switchRank(0, []), 1);
});

test("transfer: where stamped images go besides the label and their clean class, most first, per scale", () => {
  // Six images: clean classes 0, 0, 1, 1, 2, 3; the label is 3 (its own image is left out).
  const clean = [0, 0, 1, 1, 2, 3];
  const stamped = [
    [3, 3, 3, 5, 3, 3], // κ = 1: one image of class 1 goes to 5
    [5, 0, 5, 1, 4, 3], // κ = 0.7: two go to 5, one to 4, the others stay
  ];
  const t = transferCounts(3, clean, stamped);
  assert.equal(t.images, 5);
  assert.deepEqual(t.to, [[[5, 1]], [[5, 2], [4, 1]]]);
  // At most `top` destinations per scale, ties by label.
  assert.deepEqual(transferCounts(3, clean, [[7, 6, 8, 9, 4, 3]], 2).to, [[[4, 1], [6, 1]]]);
});
