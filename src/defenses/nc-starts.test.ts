import { test } from "node:test";
import assert from "node:assert/strict";
import { scoreWithFirstStarts, scoreWithStartsAtStake } from "./nc-starts.js";
import type { NcRawScore } from "./neural-cleanse.js";

const base = (starts: NcRawScore["starts"]): NcRawScore => ({
  l1Norm: 5, statNorm: 5, reference: false, attackSuccess: 0.9, phase: "full", steps: 900, reached: true, lambda: 0.01,
  restartNorms: [20, 5, 9], starts,
});

test("the first k starts give the best of those starts: norm, reached and held-out success", () => {
  const s = base([
    { restart: 0, norm: 20, reached: true, heldOutSuccess: 0.7 },
    { restart: 1, norm: 30, reached: true, heldOutSuccess: 0.8 },
    { restart: 2, norm: 5, reached: true, heldOutSuccess: 0.9 },
  ]);
  const two = scoreWithFirstStarts(s, 2);
  assert.equal(two.l1Norm, 20);
  assert.equal(two.statNorm, 20);
  assert.equal(two.attackSuccess, 0.7);
  assert.deepEqual(two.restartNorms, [20, 30]);
  assert.equal(two.starts?.length, 2);
  const one = scoreWithFirstStarts(s, 1);
  assert.equal(one.l1Norm, 20);
  assert.equal(one.restartNorms, undefined);
  assert.equal(scoreWithFirstStarts(s, 3).l1Norm, 5);
});

test("a start that reached the threshold beats a smaller one that did not", () => {
  const s = base([
    { restart: 0, norm: 3, reached: false, heldOutSuccess: 0.2 },
    { restart: 1, norm: 12, reached: true, heldOutSuccess: 0.95 },
  ]);
  const r = scoreWithFirstStarts(s, 2);
  assert.equal(r.l1Norm, 12);
  assert.equal(r.reached, true);
  const only = scoreWithFirstStarts(s, 1);
  assert.equal(only.reached, false);
  assert.equal(only.attackSuccess, 0.2);
});

test("labels without recorded starts are kept; asking for more starts than recorded is an error", () => {
  const plain = base(undefined);
  assert.equal(scoreWithFirstStarts(plain, 2), plain);
  assert.throws(() => scoreWithFirstStarts(base([{ restart: 0, norm: 1, reached: true, heldOutSuccess: 1 }]), 2), /fewer than the 2/);
  assert.throws(() => scoreWithFirstStarts(plain, 0), /positive integer/);
});

test("a scan gives further starts to the mask family's labels below the reference median, and only to them", async () => {
  const { backdooredModel, cleanSet } = await import("../test/tiny-patch-mlp.js");
  const { detectBackdoor } = await import("./neural-cleanse.js");
  const { median } = await import("./mad.js");
  const model = await backdooredModel();
  const opts = { inputScale: 255, steps: 40, seed: 5, families: ["mask" as const], recordStarts: true };
  const r = await detectBackdoor(model, cleanSet(40, 7), opts);
  assert.equal(r.settings.moreStarts, 2, "default: as many again as the 2 starts");
  const scores = r.labels.map((l) => l.mask!);
  // The cut is the median of each label's best norm after its first 2 starts.
  const firstTwo = scores.map((s) => scoreWithFirstStarts(s, 2).l1Norm);
  const cut = median(firstTwo);
  scores.forEach((s, i) => {
    const below = firstTwo[i] < cut;
    assert.deepEqual(s.starts!.map((x) => x.restart), below ? [0, 1, 2, 3] : [0, 1], `label ${r.labels[i].label} (${firstTwo[i].toFixed(1)} vs ${cut.toFixed(1)})`);
  });
  assert.ok(scores.some((s) => s.starts!.length === 4), "some label is below the median");
  const off = await detectBackdoor(model, cleanSet(40, 7), { ...opts, moreStarts: 0 });
  off.labels.forEach((l) => assert.equal(l.mask!.starts!.length, 2));
  // The first two starts are the same runs with or without the further ones.
  off.labels.forEach((l, i) => assert.deepEqual(l.mask!.starts, scores[i].starts!.slice(0, 2)));
  // The blend family gets no further starts (MORE_STARTS_FAMILIES).
  const both = await detectBackdoor(model, cleanSet(40, 7), { ...opts, families: ["mask", "blend"] });
  both.labels.forEach((l) => assert.equal(l.blend!.starts!.length, 2, `blend label ${l.label}`));
  assert.ok(both.labels.some((l) => l.mask!.starts!.length === 4), "the mask family still gets them");
});

test("starts at stake: labels below the reference median get the further starts", () => {
  const lab = (first: number, later: number, reference = true): NcRawScore => ({
    ...base([
      { restart: 0, norm: first, reached: true, heldOutSuccess: 0.9 },
      { restart: 1, norm: first + 1, reached: true, heldOutSuccess: 0.9 },
      { restart: 2, norm: later, reached: true, heldOutSuccess: 0.9 },
    ]),
    reference,
  });
  // Reference medians of the first-start norms: [10, 20, 30] -> 20; the non-reference 5 is below it too.
  const r = scoreWithStartsAtStake([lab(10, 2), lab(20, 3), lab(30, 4), lab(5, 1, false)], 1, 2);
  assert.deepEqual(r.map((s) => s.l1Norm), [2, 20, 30, 1]);
  assert.deepEqual(scoreWithStartsAtStake([lab(10, 2), lab(20, 3)], 1, 0).map((s) => s.l1Norm), [10, 20]);
  assert.deepEqual(r.map((s) => s.nullNorm), [undefined, undefined, undefined, undefined]);
  // nullFromBase: a label the further starts improved keeps its first norm for the statistics.
  const kept = scoreWithStartsAtStake([lab(10, 2), lab(20, 3), lab(30, 4), lab(5, 1, false)], 1, 2, { nullFromBase: true });
  assert.deepEqual(kept.map((s) => [s.statNorm, s.nullNorm]), [[2, 10], [20, undefined], [30, undefined], [1, 5]]);
});
