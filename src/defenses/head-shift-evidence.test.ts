import { test } from "node:test";
import assert from "node:assert/strict";
import { HEAD_SHIFT_MAX_SURVIVAL, HEAD_SHIFT_MIN_IMAGES, HEAD_SHIFT_MAX_EPOCHS, HEAD_SHIFT_MIN_STEPS, headNotRelearned, headShiftEpochs, headShiftCandidates, headShiftVerdict, headShiftVeto, otherFamilyStandsIn, shiftReadable, survivalShare } from "./head-shift-evidence.js";
import { ownRecognised } from "./neural-cleanse.js";
import { DEFAULT_SCORE_RULE, scoreScan, type NcRawScore } from "./neural-cleanse.js";
import { familyEvidence } from "./nc-evidence.js";

test("headShiftCandidates: every label of a small scan, smallest norm first", () => {
  assert.deepEqual(headShiftCandidates([50, 10, 40, 30, 20]), [1, 4, 3, 2, 0]);
  assert.deepEqual(headShiftCandidates([]), []);
});

test("headShiftCandidates: in a larger scan the norms below the median, smallest first, capped", () => {
  assert.deepEqual(headShiftCandidates([9, 1, 8, 2, 7, 3, 6], 2), [1, 3]);
  assert.deepEqual(headShiftCandidates([9, 1, 8, 2, 7, 3, 6, 5, 4], 3), [1, 3, 5]);
  assert.deepEqual(headShiftCandidates([5, 5, 5, 5, 5], 1), []);
});

test("headShiftEpochs: FST's 15 epochs on a large set, more on a smaller one for the minimum of steps, within the cap", () => {
  // 4,000 images at batch 64: 63 steps an epoch, 15 epochs = 945 steps; 1,000 steps need 16 epochs.
  assert.equal(headShiftEpochs(4000, 64, 500, 60), 15);
  assert.equal(headShiftEpochs(4000, 64, 1000, 60), 16);
  // A partial last batch is a step.
  assert.equal(headShiftEpochs(65, 64, 100, 60), 50);
  // The cap: a tiny set does not take thousands of passes.
  assert.equal(headShiftEpochs(1, 64, 30, 20), 20);
  assert.equal(headShiftEpochs(154, 64, 3000, 60), 60);
  // The cap never goes below FST's own default.
  assert.equal(headShiftEpochs(154, 64, 3000, 5), 15);
  for (const n of [100, 2660, 3425, 4600, 20000]) {
    const e = headShiftEpochs(n);
    const steps = e * Math.ceil(n / 64);
    assert.ok(e >= 15 && e <= HEAD_SHIFT_MAX_EPOCHS, `${n} images: ${e} epochs`);
    assert.ok(steps >= HEAD_SHIFT_MIN_STEPS || e === HEAD_SHIFT_MAX_EPOCHS, `${n} images: ${e} epochs, ${steps} steps`);
    assert.ok(e === 15 || e === HEAD_SHIFT_MAX_EPOCHS || (e - 1) * Math.ceil(n / 64) < HEAD_SHIFT_MIN_STEPS, `${n} images: ${e} epochs is one too many`);
  }
});

test("survivalShare: shifted over B's success, 0 where B had none", () => {
  assert.equal(survivalShare(0.8, 0.2), 0.25);
  assert.equal(survivalShare(0, 0.3), 0);
});

test("otherFamilyStandsIn: only a measured trigger that loses most of its success under the head shift", () => {
  assert.equal(otherFamilyStandsIn({ success: 0.96, shifted: 0.01 }), true);
  assert.equal(otherFamilyStandsIn({ success: 0.92, shifted: 0.57 }), false);
  // At the bar itself it is not less than the bar.
  assert.equal(otherFamilyStandsIn({ success: 0.8, shifted: 0.8 * HEAD_SHIFT_MAX_SURVIVAL }), false);
  // A trigger that never worked on B, or one not measured, says nothing.
  assert.equal(otherFamilyStandsIn({ success: 0, shifted: 0 }), false);
  assert.equal(otherFamilyStandsIn(undefined), false);
});

const at = { median: 50, minHeldOutSuccess: 0.5, heldOutImages: 100 };
const label = (shifted: number, o: Partial<{ statNorm: number; attackSuccess: number; reached: boolean }> = {}) => ({
  statNorm: 20,
  attackSuccess: 0.95,
  reached: true,
  headShift: { success: 0.96, shifted },
  ...o,
});

test("headShiftVerdict: a small trigger that loses most of its success is flagged, with its reason", () => {
  const v = headShiftVerdict(label(0.12), at);
  assert.equal(v.flagged, true);
  assert.match(v.reason!, /keeps 13% of its held-out success \(96% → 12%\)/);
});

test("headShiftVerdict: every condition is needed", () => {
  const edge = 0.96 * HEAD_SHIFT_MAX_SURVIVAL;
  assert.equal(headShiftVerdict(label(edge), at).flagged, false, "a quarter kept is not less than a quarter");
  assert.equal(headShiftVerdict(label(0.1, { statNorm: 50 }), at).flagged, false, "norm at the median");
  assert.equal(headShiftVerdict(label(0.1, { statNorm: 80 }), at).reason!.includes("not below the median"), true);
  assert.equal(headShiftVerdict(label(0.1, { attackSuccess: 0.4 }), at).flagged, false, "trigger does not work on B");
  assert.equal(headShiftVerdict(label(0.1, { reached: false }), at).flagged, false, "inversion never reached the threshold");
});

test("headShiftVerdict: no evidence without a measurement or with too few held-out images", () => {
  assert.deepEqual(headShiftVerdict({ statNorm: 1, attackSuccess: 1, reached: true }, at), { flagged: false, reason: null });
  assert.deepEqual(headShiftVerdict(label(0), { ...at, heldOutImages: HEAD_SHIFT_MIN_IMAGES - 1 }), { flagged: false, reason: null });
});

// Ten labels whose norms are alike (no outlier), label 3 a little small and its trigger lost under the head shift.
function rawScores(shifted3: number): NcRawScore[] {
  const norms = [46, 49, 54, 31, 51, 59, 45, 85, 36, 62];
  return norms.map((n, i) => ({
    l1Norm: n,
    statNorm: n,
    reference: true,
    attackSuccess: 0.95,
    phase: "full",
    steps: 300,
    reached: true,
    lambda: 0.01,
    ...(n < 50 ? { headShift: { success: 0.95, shifted: i === 3 ? shifted3 : 0.85 } } : {}),
  }));
}
const scoring = { scale: "log" as const, fdr: 0.05, minHeldOutSuccess: 0.5, hw: 784, heldOutImages: 100 };

test("scoreScan flags by the head shift where the norm statistics do not, and the rule can be turned off", () => {
  const labels = Array.from({ length: 10 }, (_, i) => i);
  const on = scoreScan(labels, { mask: rawScores(0.1) }, scoring);
  assert.deepEqual(on.flagged, [3]);
  assert.deepEqual(on.families.mask!.flagged, [3]);
  assert.match(on.labels[3].reasons.join(" "), /mask: head shift: the trigger keeps 11%/);
  assert.deepEqual(scoreScan(labels, { mask: rawScores(0.1) }, { ...scoring, headShift: false }).flagged, []);
  assert.deepEqual(scoreScan(labels, { mask: rawScores(0.8) }, scoring).flagged, [], "a trigger that keeps its success is no evidence");
});

test("scoreScan: a label the norm statistics flag keeps its flagging family; the head shift only adds a reason", () => {
  const labels = Array.from({ length: 10 }, (_, i) => i);
  // The blend family flags label 3 on its own (a norm far below the others).
  const blend = rawScores(0.85).map((r, i) => {
    const { headShift: _h, ...rest } = r;
    const n = i === 3 ? 20 : 180 + 5 * i;
    return { ...rest, l1Norm: n, statNorm: n };
  });
  const r = scoreScan(labels, { mask: rawScores(0.1), blend }, scoring);
  assert.deepEqual(r.flagged, [3]);
  assert.deepEqual(r.labels[3].flaggedBy, ["blend"]);
  assert.equal(r.labels[3].mask!.flagged, false);
  assert.deepEqual(r.families.mask!.flagged, []);
  assert.match(r.labels[3].mask!.reasons.join(" "), /head shift: the trigger keeps 11%/);
});

test("headShiftVeto: a measured trigger that keeps a quarter or more of its success; unmeasured or too few images: none", () => {
  assert.match(headShiftVeto({ success: 0.9, shifted: 0.8 }, 100) ?? "", /^flag withdrawn: head shift: the trigger keeps 89% of its held-out success \(90% → 80%\)/);
  assert.equal(headShiftVeto({ success: 0.9, shifted: 0.02 }, 100), null);
  assert.equal(headShiftVeto({ success: 0.8, shifted: 0.8 * HEAD_SHIFT_MAX_SURVIVAL }, 100) === null, false, "at the bar: withdrawn");
  assert.equal(headShiftVeto(undefined, 100), null);
  assert.equal(headShiftVeto({ success: 0.9, shifted: 0.8 }, HEAD_SHIFT_MIN_IMAGES - 1), null);
  assert.equal(headShiftVeto({ success: 0, shifted: 0 }, 100), null);
});

test("scoreScan: a blend-family flag whose trigger keeps its success under the head shift is withdrawn; a mask flag is not", () => {
  const labels = Array.from({ length: 10 }, (_, i) => i);
  // Label 3's norm is far below the others in both families; its blend trigger keeps `kept` of its success.
  const fam = (kept: number, base: number) =>
    rawScores(0.85).map((r, i) => {
      const n = i === 3 ? base / 9 : base + 5 * i;
      return { ...r, l1Norm: n, statNorm: n, headShift: { success: 0.9, shifted: 0.9 * kept } };
    });
  const natural = scoreScan(labels, { blend: fam(0.95, 180) }, scoring);
  assert.deepEqual(natural.flagged, []);
  assert.deepEqual(natural.families.blend!.flagged, []);
  assert.match(natural.labels[3].blend!.reasons.join(" "), /flag withdrawn: head shift: the trigger keeps 95%/);
  assert.deepEqual(scoreScan(labels, { blend: fam(0.95, 180) }, { ...scoring, headShiftVeto: false }).flagged, [3]);
  assert.deepEqual(scoreScan(labels, { blend: fam(0.02, 180) }, scoring).flagged, [3], "a backdoor's blend trigger loses its success: the flag stands");
  // The mask family keeps its flag whatever the share (partly reversed patches keep theirs).
  assert.deepEqual(scoreScan(labels, { mask: fam(0.95, 60) }, scoring).flagged, [3]);
});

// Mask norms and head-shift shares given per label: `lost` lose their trigger on the shifted head, the rest keep it.
function shiftScan(norms: readonly number[], lost: readonly number[]): NcRawScore[] {
  return norms.map((n, i) => ({ l1Norm: n, statNorm: n, reference: true, attackSuccess: 0.95, phase: "full", steps: 300, reached: true, lambda: 0.01, headShift: { success: 0.95, shifted: lost.includes(i) ? 0.05 : 0.85 } }));
}

test("scoreScan: a target the head shift confirms leaves the statistics, and a second target it hid is flagged", () => {
  // multi_trigger seed 0 inside repair: label 1 (a 3x3 patch, norm 3.6) has index 2.4 but q 0.08 > 0.025 with
  // label 5 (norm 16.7, confirmed by the head shift) among the references; without it q is about 0.01.
  const labels = Array.from({ length: 10 }, (_, i) => i);
  const mask = shiftScan([36.3, 3.64, 44.5, 76.6, 36.1, 16.7, 47.2, 120.6, 15.95, 81.3], [5]);
  assert.equal(DEFAULT_SCORE_RULE.headShiftExclude, true);
  const on = scoreScan(labels, { mask }, scoring);
  assert.deepEqual(on.flagged, [1, 5]);
  assert.deepEqual(on.families.mask!.flagged, [1, 5]);
  assert.ok(on.labels[1].mask!.anomalyIndex > 2 && on.labels[1].mask!.qValue > 0.025, "label 1 fails only the FDR bar in the first round");
  assert.match(on.labels[1].reasons.join(" "), /without the head shift's target\(s\) 5 among the reference labels/);
  assert.deepEqual(scoreScan(labels, { mask }, { ...scoring, headShiftExclude: false }).flagged, [5]);
  assert.deepEqual(scoreScan(labels, { mask }, { ...scoring, headShift: false }).flagged, [], "no head shift, nothing to exclude");
});

test("scoreScan: after the head shift's targets leave, only labels already anomalous (index > 2) can be flagged", () => {
  // Three small targets confirmed by the head shift; label 8 (norm 40) has index 1.3 with them in the
  // statistics. Without them the rest's MAD is that of a truncated sample, and label 8 looks like an outlier.
  const labels = Array.from({ length: 10 }, (_, i) => i);
  const norms = [100, 120, 80, 90, 110, 8, 8.8, 9.6, 40, 130];
  const lost = [5, 6, 7];
  const r = scoreScan(labels, { mask: shiftScan(norms, lost) }, scoring);
  assert.deepEqual(r.flagged, lost);
  assert.ok(r.labels[8].mask!.anomalyIndex < 2, `first-round index ${r.labels[8].mask!.anomalyIndex}`);
  const second = familyEvidence(norms.map((n, i) => ({ label: i, norm: n, reached: true, heldOutSuccess: 0.95, reference: !lost.includes(i) })), { scale: "log", fdr: 0.05, minHeldOutSuccess: 0.5, heldOutImages: 100, families: 1 });
  assert.equal(second.perLabel[8].flagged, true, "the truncated statistics alone would flag the natural label");
});

test("headNotRelearned: a new head within FST's max drop or two standard errors of B's accuracy counts, one further below does not", () => {
  assert.equal(headNotRelearned(0.92, 0.91, 0.02, 1000), null);
  assert.equal(headNotRelearned(0.92, 0.9, 0.02, 1000), null, "exactly the max drop");
  assert.equal(headNotRelearned(0.838, 0.813, 0.02, 80), null, "2.5 points on 80 images is within two standard errors (8.2 points)");
  assert.match(headNotRelearned(0.92, 0.6, 0.02, 1000)!, /reached 60\.0% held-out accuracy against B's 92\.0% on 1000 images/);
});

test("shiftReadable: a share is read unless the shifted network answers the label on none of its own held-out images", () => {
  assert.equal(shiftReadable({ success: 0.9, shifted: 0 }), true, "not counted: read as before");
  assert.equal(shiftReadable({ success: 0.9, shifted: 0, own: { images: 4, recognised: 1 } }), true);
  assert.equal(shiftReadable({ success: 0.9, shifted: 0, own: { images: 0, recognised: 0 } }), true, "no image of the label: cannot be checked");
  const lost = { success: 0.86, shifted: 0, own: { images: 4, recognised: 0 } };
  assert.equal(shiftReadable(lost), false);
  // Then it neither flags, nor withdraws a blend flag, nor lets an other-family trigger stand in.
  const v = headShiftVerdict({ statNorm: 10, attackSuccess: 0.9, reached: true, headShift: lost }, at);
  assert.equal(v.flagged, false);
  assert.match(v.reason ?? "", /head shift not read: .* answers this label on none of its 4 held-out image\(s\)/);
  assert.equal(headShiftVeto({ success: 0.9, shifted: 0.9, own: { images: 4, recognised: 0 } }, 100), null);
  assert.equal(otherFamilyStandsIn(lost), false);
  assert.equal(otherFamilyStandsIn({ ...lost, own: { images: 4, recognised: 3 } }), true);
});

test("ownRecognised: each label's held-out images and how many the network answers with it", () => {
  const f = ownRecognised(Int32Array.from([0, 1, 1, 2, 4]), Int32Array.from([0, 1, 4, 4, 4]));
  assert.deepEqual(f(4), { images: 3, recognised: 1 });
  assert.deepEqual(f(1), { images: 1, recognised: 1 });
  assert.deepEqual(f(7), { images: 0, recognised: 0 });
});
