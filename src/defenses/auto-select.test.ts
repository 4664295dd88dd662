// repair --defense auto: the selection rule, the selection split, and a tiny end-to-end choice that does not
// depend on the poisoned data.
import assert from "node:assert/strict";
import { test } from "node:test";
import { cleanSet, backdooredModel, poisonedSet } from "../test/tiny-patch-mlp.js";
import { autoPlan, chooseCandidate, countedHeldOut, countedLabels, effectiveTolerance, moreAnomalousFresh, pendingReinversion, splitForSelection, strongestLabel, targetedShare, type CandidateScore } from "./auto-select.js";
import { checkRepairRequest, repair, type RepairRequest } from "./pipeline.js";
import { OptionError } from "./defense.js";
import { UserError } from "../errors.js";
import { freshIndex, type FlagReference } from "./reinvert-evidence.js";

const score = (defense: string, cleanAccuracy: number, triggerSuccess: number | undefined, adversarialSuccess: number): CandidateScore => ({ defense, cleanAccuracy, triggerSuccess, adversarialSuccess, seconds: 0 });

test("chooseCandidate: lowest attack success among those within the tolerance of the best clean accuracy", () => {
  // b is the most robust but 3 points below the best: not eligible; c beats a on reversed-trigger success.
  const s = [score("a", 0.9, 0.3, 0.1), score("b", 0.87, 0, 0), score("c", 0.895, 0.05, 0.2)];
  assert.equal(chooseCandidate(s, 0.01).index, 2);
  assert.equal(chooseCandidate(s, 0.05).index, 1);
  assert.match(chooseCandidate(s, 0.01).reason, /^c: lowest attack success/);
  // Equal attack success: the higher clean accuracy wins; without a trigger score the adversarial one counts.
  assert.equal(chooseCandidate([score("a", 0.8, undefined, 0.2), score("b", 0.805, 0.2, 0.05)], 0.01).index, 1);
  assert.equal(chooseCandidate([score("a", 0.8, undefined, 0.1), score("b", 0.805, 0.2, 0.05)], 0.01).index, 0);
  assert.throws(() => chooseCandidate([]));
});

test("effectiveTolerance: 1 point, or 1.96 standard errors of the best accuracy when the split is small", () => {
  assert.equal(effectiveTolerance(0.01, 0.9), 0.01);
  assert.equal(effectiveTolerance(0.01, 0.9, 100000), 0.01);
  const se = 1.96 * Math.sqrt((0.9 * 0.1) / 1000);
  assert.ok(Math.abs(effectiveTolerance(0.01, 0.9, 1000) - se) < 1e-12 && se > 0.01);
  // On 1,000 images a candidate 1.5 points below the best is eligible; with the size unknown it is not.
  const s = [score("a", 0.9, 0.3, 0.1), score("b", 0.885, 0, 0)];
  assert.equal(chooseCandidate(s, 0.01, 1000).index, 1);
  assert.equal(chooseCandidate(s, 0.01).index, 0);
  assert.ok(Math.abs(chooseCandidate(s, 0.01, 1000).tolerance - se) < 1e-12);
});

test("chooseCandidate: attack scores within the noise of the lowest tie, and the higher clean accuracy wins", () => {
  // On 1,000 images 5.0% vs 5.5% attack success is noise: "none" (B, higher accuracy) wins; 5% vs 20% is not.
  const tied = [score("sau", 0.895, undefined, 0.05), score("none", 0.9, undefined, 0.055)];
  assert.equal(chooseCandidate(tied, 0.01, 1000).index, 1);
  assert.match(chooseCandidate(tied, 0.01, 1000).reason, /ties within/);
  assert.equal(chooseCandidate(tied, 0.01).index, 0);
  assert.equal(chooseCandidate([score("sau", 0.895, undefined, 0.05), score("none", 0.9, undefined, 0.2)], 0.01, 1000).index, 0);
});

test("chooseCandidate: between tied repairs, accuracy gaps under the tolerance go to the earlier candidate", () => {
  // prune-unlearn is 0.3 points below unlearn at the same reversed-trigger score: the earlier one wins.
  const near = [score("prune-unlearn", 0.886, 0.013, 0.8), score("unlearn", 0.889, 0.011, 0.3), score("none", 0.896, 0.96, 0.8)];
  assert.equal(chooseCandidate(near, 0.01, 800).index, 0);
  assert.match(chooseCandidate(near, 0.01, 800).reason, /earlier candidate/);
  // 1.4 points below: a real accuracy gap, the more accurate repair wins.
  const far = [score("prune-unlearn", 0.875, 0.013, 0.8), score("unlearn", 0.889, 0.011, 0.3), score("none", 0.896, 0.96, 0.8)];
  assert.equal(chooseCandidate(far, 0.01, 800).index, 1);
  // B unchanged keeps a tie it leads on accuracy.
  assert.equal(chooseCandidate([score("sau", 0.895, 0.05, 0.05), score("none", 0.9, 0.055, 0.05)], 0.01, 1000).index, 1);
});

const perLabel = (defense: string, cleanAccuracy: number, per: Record<number, number>): CandidateScore => ({
  ...score(defense, cleanAccuracy, Math.max(...Object.values(per)), 0.5),
  perLabel: Object.entries(per).map(([l, v]) => ({ label: Number(l), success: v })),
});

test("chooseCandidate: a flagged label no eligible repair can halve does not dominate the attack score", () => {
  // Label 7 is a backdoor every repair removes; labels 2 and 8 are natural features: the repair of all labels
  // removes them only at 3 points, outside the window; the repair of label 7 alone stays in it.
  const s = [
    perLabel("pu", 0.873, { 2: 0.12, 7: 0.006, 8: 0.09 }),
    { ...perLabel("pu[7]", 0.892, { 2: 0.4, 7: 0.004, 8: 0.85 }), labels: [7] },
    perLabel("ft-sam", 0.895, { 2: 0.9, 7: 0.92, 8: 0.9 }),
    perLabel("none", 0.901, { 2: 0.935, 7: 0.903, 8: 0.939 }),
  ];
  const eligible = [1, 2, 3];
  assert.deepEqual(countedLabels(s, eligible), { counted: [7], ignored: [2, 8] });
  const c = chooseCandidate(s, 0.01, 765);
  assert.equal(s[c.index].defense, "pu[7]");
  assert.deepEqual(c.ignored, [2, 8]);
  assert.match(c.reason, /labels 2, 8 not counted/);
  // When the all-label repair is eligible too, the false flags count again (it halves them) and it wins.
  const wide = chooseCandidate(s, 0.04, 765);
  assert.equal(s[wide.index].defense, "pu");
  assert.deepEqual(wide.ignored, []);
  // Label 2 halved on the side by the repair of label 7 alone does not count.
  assert.deepEqual(countedLabels(s, eligible).counted, [7]);
  // No label halved by any eligible repair: every label counts (the rule without the per-label step).
  const none = [perLabel("a", 0.9, { 1: 0.8, 2: 0.7 }), perLabel("none", 0.9, { 1: 0.9, 2: 0.9 })];
  assert.deepEqual(countedLabels(none, [0, 1]), { counted: [1, 2], ignored: [] });
});

test("chooseCandidate: the other family's trigger counts only where an eligible repair halves it", () => {
  const held = (defense: string, acc: number, own: number, other: number): CandidateScore => ({ ...perLabel(defense, acc, { 2: own }), heldOut: [{ label: 2, success: other }] });
  // WaNet-like: the repair trained on the flagging family's trigger looks best on it (2%) but the other family's
  // trigger still works on it (10%); the repair that used no trigger is low on both and wins.
  const s = [held("fst", 0.878, 0.05, 0.05), held("pu", 0.885, 0.02, 0.1), held("none", 0.888, 0.95, 0.96)];
  assert.deepEqual(countedHeldOut(s, [0, 1, 2]), [2]);
  assert.equal(s[chooseCandidate(s, 0.01, 690).index].defense, "fst");
  // Without the other family's figures the in-sample trigger decides.
  const plain = s.map(({ heldOut: _h, ...x }) => x);
  assert.equal(plain[chooseCandidate(plain, 0.01, 690).index].defense, "pu");
  // random_pos-like: no eligible repair halves the other family's trigger (a natural feature of the class): it
  // does not count, and the choice is the in-sample one.
  const natural = [held("sau", 0.878, 0.25, 0.5), held("unlearn", 0.894, 0.026, 0.65), held("none", 0.884, 0.95, 0.96)];
  assert.deepEqual(countedHeldOut(natural, [0, 1, 2]), []);
  assert.equal(natural[chooseCandidate(natural, 0.01, 690).index].defense, "unlearn");
});

test("chooseCandidate: where the other family's trigger counts, a label is scored on it alone (the flagging family's is in-sample for unlearning)", () => {
  const held = (defense: string, acc: number, own: number, other: number): CandidateScore => ({ ...perLabel(defense, acc, { 2: own }), heldOut: [{ label: 2, success: other }] });
  // wanet, seed 1 (selection split of 765 images): FST 6.9% on the flagging family's trigger, 2.4% on the other;
  // prune-then-unlearn, trained on the first, 2.9% and 4.9%. Scored on the worse of both, prune-then-unlearn won.
  const s = [held("fst", 0.8719, 0.0686, 0.0243), held("pu", 0.8797, 0.0286, 0.0486), held("fine-prune", 0.881, 0.514, 0.853), held("none", 0.8771, 0.877, 0.949)];
  assert.deepEqual(countedHeldOut(s, [0, 1, 2, 3]), [2]);
  const c = chooseCandidate(s, 0.01, 765);
  assert.equal(s[c.index].defense, "fst");
  assert.match(c.reason, /reversed-trigger 2\.4%/);
  assert.match(c.reason, /label 2 scored on the other family's reversed trigger/);
  // A re-inverted trigger that counts (still within B's flag bound) still raises the label's figure.
  const fresh = s.map((x) => (x.defense === "fst" ? { ...x, reinverted: [{ label: 2, l1Norm: 20, bound: 28, index: 2.4, success: 0.3, counts: true }] } : x));
  assert.equal(fresh[chooseCandidate(fresh, 0.01, 765).index].defense, "pu");
  // Two flagged labels, only one with a counted other-family trigger: the other keeps its stamped figure.
  const two = (defense: string, acc: number, a: number, aOther: number, b: number, bOther: number): CandidateScore => ({ ...perLabel(defense, acc, { 2: a, 5: b }), heldOut: [{ label: 2, success: aOther }, { label: 5, success: bOther }] });
  const s2 = [two("fst", 0.88, 0.07, 0.02, 0.6, 0.7), two("pu", 0.88, 0.03, 0.05, 0.03, 0.75), two("none", 0.88, 0.9, 0.95, 0.9, 0.9)];
  assert.deepEqual(countedHeldOut(s2, [0, 1, 2]), [2]);
  assert.equal(s2[chooseCandidate(s2, 0.01, 765).index].defense, "pu");
  // low_rate_patch, seed 0: i-BAU halves the other family's trigger (so it counts) but leaves the flagging
  // family's at 65% of images (B: 96%); it keeps the worse of both and prune-then-unlearn stays chosen.
  const low = [held("fst", 0.875, 0.592, 0.8), held("pu", 0.88, 0.029, 0.609), held("ibau", 0.861, 0.652, 0.2), held("none", 0.882, 0.962, 0.962)];
  assert.deepEqual(countedHeldOut(low, [0, 1, 2, 3]), [2]);
  assert.equal(low[chooseCandidate(low, 0.01, 765).index].defense, "pu");
});

test("chooseCandidate: a chosen candidate that leaves the reversed trigger working names the repair outside the window that removes it", () => {
  // The selection figures of blend, seed 1: the repairs that remove label 7's trigger fall 3.1 points below B.
  const s = [
    perLabel("prune-unlearn", 0.889, { 7: 0.007 }),
    perLabel("sau", 0.885, { 7: 0.001 }),
    perLabel("unlearn", 0.889, { 7: 0.007 }),
    perLabel("ft-sam", 0.908, { 7: 0.686 }),
    perLabel("ibau", 0.864, { 7: 0.829 }),
    perLabel("fine-prune", 0.901, { 7: 0.685 }),
    perLabel("none", 0.92, { 7: 0.901 }),
  ];
  const c = chooseCandidate(s, 0.01, 765);
  assert.equal(s[c.index].defense, "ft-sam");
  // Lowest attack outside the window wins the hint (SAU, 0.1%), not the order.
  assert.deepEqual(c.tradeoff, { defense: "sau", cleanAccuracy: 0.885, triggerSuccess: 0.001 });
  assert.match(c.reason, /still works on 68\.6% .* sau takes it to 0\.1% at 88\.5% clean accuracy \(3\.5 points below the best, outside the window\): --defense sau takes that trade, --accuracy-window 3\.5 lets auto weigh it$/);
  // With that window SAU is eligible, and its lower attack wins (0.1% against 0.7% is outside the noise of 765
  // images; in the real run SAU's re-inverted trigger raised its score and prune-unlearn was kept).
  const wide = chooseCandidate(s, 0.035, 765);
  assert.equal(s[wide.index].defense, "sau");
  assert.equal(wide.tradeoff, undefined);
  // Between tied repairs, a 1.5-point gap is not a tie however wide the window: the more accurate one wins.
  const gap = [perLabel("prune-unlearn", 0.89, { 7: 0.01 }), perLabel("sau", 0.905, { 7: 0.012 }), perLabel("none", 0.92, { 7: 0.9 })];
  assert.equal(gap[chooseCandidate(gap, 0.04, 765).index].defense, "sau");
  // A restricted candidate's hint names the defense alone.
  const r = chooseCandidate([{ ...s[1], defense: "prune-unlearn[7]", labels: [7] }, s[3], s[6]], 0.01, 765);
  assert.match(r.reason, /--defense prune-unlearn takes that trade, --accuracy-window 3\.5 lets auto weigh it$/);
  // No hint when the chosen candidate removed the trigger, or when nothing outside the window does better.
  const ok = chooseCandidate([perLabel("unlearn", 0.915, { 7: 0.01 }), s[6]], 0.01, 765);
  assert.equal(ok.tradeoff, undefined);
  assert.doesNotMatch(ok.reason, /takes that trade/);
  assert.equal(chooseCandidate([s[3], s[4], s[6]], 0.01, 765).tradeoff, undefined);
});

test("checkRepairRequest: an accuracy window is a share in (0, 1], and only for auto", () => {
  assert.equal(checkRepairRequest({ accuracyWindow: 0.035 }), undefined);
  for (const w of [0, -0.01, 1.5, Number.NaN]) assert.throws(() => checkRepairRequest({ accuracyWindow: w }), (e: unknown) => e instanceof OptionError && e.option === "accuracyWindow");
  assert.throws(() => checkRepairRequest({ defense: "unlearn", accuracyWindow: 0.02 }), (e: unknown) => e instanceof UserError && /only applies to --defense auto/.test(e.message));
});

test("re-inversion: only candidates tied for the lowest score are re-inverted; a counted fresh trigger can move the choice", () => {
  // prune-unlearn and unlearn tie on the stamped trigger (1.0% vs 1.2% on 765 images); ft-sam does not.
  const s = [perLabel("prune-unlearn", 0.886, { 1: 0.01 }), perLabel("unlearn", 0.889, { 1: 0.012 }), perLabel("ft-sam", 0.89, { 1: 0.6 }), perLabel("none", 0.9, { 1: 0.95 })];
  assert.deepEqual(pendingReinversion(s, 0.01, 765), { indices: [0, 1], labels: [1] });
  assert.equal(chooseCandidate(s, 0.01, 765).index, 0);
  // B's flag bound 13.6; its natural labels: median L1 40, spread 0.6.
  const ref: FlagReference = { bound: 13.6, logMedian: Math.log(40), logSigma: 0.6 };
  const fresh = (success: number, l1Norm: number) => [{ label: 1, l1Norm, bound: ref.bound, index: freshIndex(ref, l1Norm), success, counts: l1Norm <= ref.bound }];
  // The fresh trigger on prune-unlearn is a natural one (L1 61 > 13.6): not counted. On unlearn it is small and
  // still works: unlearn's attack score becomes 94%, and prune-unlearn wins outright, not by the order.
  const after = [{ ...s[0], reinverted: fresh(0.97, 61) }, { ...s[1], reinverted: fresh(0.94, 9.5) }, s[2], s[3]];
  assert.deepEqual(pendingReinversion(after, 0.01, 765).indices, []);
  const c = chooseCandidate(after, 0.01, 765);
  assert.equal(c.index, 0);
  assert.match(c.reason, /1 candidate tied on the reversed triggers lost on the re-inverted one/);
  assert.doesNotMatch(c.reason, /earlier candidate/);
  // The other way round: unlearn wins although the order favours prune-unlearn.
  const other = [{ ...s[0], reinverted: fresh(0.9, 12) }, { ...s[1], reinverted: fresh(0.9, 70) }, s[2], s[3]];
  assert.equal(chooseCandidate(other, 0.01, 765).index, 1);
  // Never one outside the accuracy window: with B at 99% only B is eligible, and only B is asked for.
  const both = [{ ...s[0], reinverted: fresh(0.9, 12) }, { ...s[1], reinverted: fresh(0.95, 10) }, s[2], { ...s[3], cleanAccuracy: 0.99 }];
  assert.deepEqual(pendingReinversion(both, 0.01, 765).indices, [3]);
  // When both tied ones lose, the next one is asked for (ft-sam).
  const s4 = [{ ...s[0], reinverted: fresh(0.9, 12) }, { ...s[1], reinverted: fresh(0.95, 10) }, s[2], s[3]];
  assert.deepEqual(pendingReinversion(s4, 0.01, 765).indices, [2]);
  // A candidate without per-label triggers (no flagged label) is never asked for.
  assert.deepEqual(pendingReinversion([score("none", 0.9, undefined, 0.5)], 0.01, 765).indices, []);
});

test("re-inversion: a tied candidate whose fresh trigger sits one anomaly index or more above the lowest tied one's, and at 1 or more, leaves the tie", () => {
  // The PyTorch VGG-BN fixture's selection (53 images, label 0 flagged, B's flag bound 42.9; natural labels taken
  // here at median 86.4, spread 0.35): every candidate's fresh trigger works (94–100%), so all tie and accuracy chose
  // fine-tuning; but fine-tuning and B re-invert the backdoor at L1 5.7 and 3.4, FST at 7.1, the unlearning
  // repairs only at 41.8.
  const ref: FlagReference = { bound: 42.9, logMedian: Math.log(42.9) + 0.7, logSigma: 0.35 };
  const fresh = (success: number, l1Norm: number) => [{ label: 0, l1Norm, bound: ref.bound, index: freshIndex(ref, l1Norm), success, counts: l1Norm <= ref.bound }];
  const s = [
    { ...perLabel("fst", 0.774, { 0: 0.792 }), reinverted: fresh(0.958, 7.1) },
    { ...perLabel("prune-unlearn", 0.755, { 0: 0.083 }), reinverted: fresh(0.938, 41.8) },
    { ...perLabel("unlearn", 0.755, { 0: 0.083 }), reinverted: fresh(0.938, 41.8) },
    { ...perLabel("fine-prune", 0.792, { 0: 0.958 }), reinverted: fresh(0.979, 5.7) },
    { ...perLabel("none", 0.792, { 0: 1 }), reinverted: fresh(0.958, 3.4) },
  ];
  assert.deepEqual(moreAnomalousFresh(s, [0, 1, 2, 3, 4], [0]), [0, 3, 4]);
  assert.deepEqual(pendingReinversion(s, 0.01, 53).indices, []);
  const c = chooseCandidate(s, 0.01, 53);
  assert.equal(s[c.index].defense, "prune-unlearn");
  assert.match(c.reason, /fst, fine-prune, none left the tie: their re-inverted trigger sits 1 or more anomaly index above the lowest tied one's, at 1 or more among B's labels/);
  // Without a gap (every fresh trigger about as small) the tie stands and accuracy decides, as before.
  const close = s.map((x) => ({ ...x, reinverted: fresh(x.reinverted[0].success, 30 + x.cleanAccuracy) }));
  assert.deepEqual(moreAnomalousFresh(close, [0, 1, 2, 3, 4], [0]), []);
  assert.equal(close[chooseCandidate(close, 0.01, 53).index].defense, "fine-prune");
  // Uncounted fresh triggers (over B's bound) still rank: multi_trigger seed 1 (label 1, B's natural labels:
  // median 53.0, spread 0.385): unlearning's at L1 27.2 (index 1.73, real ASR 41%) leaves the tie with
  // prune-then-unlearn's at 49.4 (index 0.18, real ASR 2%), though neither is within B's bound (6.7).
  const mt: FlagReference = { bound: 6.7, logMedian: Math.log(53.0), logSigma: 0.385 };
  const f1 = (l1Norm: number) => [{ label: 1, l1Norm, bound: mt.bound, index: freshIndex(mt, l1Norm), success: 0.95, counts: l1Norm <= mt.bound }];
  const mts = [{ ...perLabel("prune-unlearn", 0.882, { 1: 0.001 }), reinverted: f1(49.4) }, { ...perLabel("unlearn", 0.894, { 1: 0.004 }), reinverted: f1(27.2) }, perLabel("none", 0.895, { 1: 0.97 })];
  assert.ok(!f1(27.2)[0]!.counts);
  assert.deepEqual(moreAnomalousFresh(mts, [0, 1], [1]), [1]);
  assert.equal(mts[chooseCandidate(mts, 0.01, 765).index].defense, "prune-unlearn");
  // A gap of one index between two fresh triggers that both sit near B's median is noise, not a backdoor: the
  // higher must be at index 1 or more (70 against 120 here: index 0.6 against -0.9).
  const natural = [{ ...s[1], reinverted: fresh(0.97, 120) }, { ...s[3], reinverted: fresh(0.979, 70) }];
  assert.ok(natural[1].reinverted[0]!.index < 1 && natural[1].reinverted[0]!.index - natural[0].reinverted[0]!.index >= 1);
  assert.deepEqual(moreAnomalousFresh(natural, [0, 1], [0]), []);
  // Under one index apart: both stay.
  assert.deepEqual(moreAnomalousFresh([{ ...s[1], reinverted: fresh(0.97, 30) }, { ...s[3], reinverted: fresh(0.979, 22) }], [0, 1], [0]), []);
  // A small fresh mask that does not work (under half the selection images) is no backdoor found again.
  assert.deepEqual(moreAnomalousFresh([s[1], { ...s[3], reinverted: fresh(0.3, 5.7) }], [0, 1], [0]), []);
  // A candidate not re-inverted yet is never dropped; a label that does not count is not compared.
  assert.deepEqual(moreAnomalousFresh([perLabel("sau", 0.8, { 0: 0.1 }), s[3]], [0, 1], [0]), []);
  assert.deepEqual(moreAnomalousFresh(s, [0, 1, 2, 3, 4], [5]), []);
});

test("re-inversion: when every tied candidate is beaten on some counted label, the evidence decides nothing and the tie stands", () => {
  // The PyTorch ResNet18 fixture's selection (labels 0 and 8 counted): one repair re-inverts label 0 at index
  // 0.6 and label 8 at 4.5, another label 0 at 11.8 and label 8 at -0.1. Each would leave the tie on one label;
  // both leaving emptied it and `repair` stopped with an internal error.
  const two = (i0: number, i8: number) => [0, 8].map((label, k) => ({ label, l1Norm: 20, bound: 35, index: k ? i8 : i0, success: 0.95, counts: true }));
  const s = [
    { ...perLabel("prune-unlearn", 0.79, { 0: 0.9, 8: 0.91 }), reinverted: two(0.6, 4.5) },
    { ...perLabel("ibau", 0.82, { 0: 0.9, 8: 0.9 }), reinverted: two(11.8, -0.1) },
  ];
  assert.deepEqual(moreAnomalousFresh(s, [0, 1], [0, 8]), [0, 1]);
  const c = chooseCandidate(s, 0.01, 48);
  assert.equal(s[c.index].defense, "ibau"); // the tie on the stamped triggers, won on clean accuracy
  assert.match(c.reason, /the re-inverted triggers decide nothing/);
  assert.doesNotMatch(c.reason, /left the tie/);
  // One candidate beaten on one label only: it leaves, as before.
  const one = [s[0], { ...s[1], reinverted: two(11.8, 4.5) }];
  assert.equal(one[chooseCandidate(one, 0.01, 48).index].defense, "prune-unlearn");
});

test("autoPlan: prune-unlearn also runs on the most anomalous flagged label alone when several are flagged", () => {
  const nc = {
    labels: [
      { label: 2, l1Norm: 50, anomalyIndex: 0.1, attackSuccess: 0.9, flagged: true, flaggedBy: ["blend"], blendAnomalyIndex: 4.8 },
      { label: 7, l1Norm: 43, anomalyIndex: 1.0, attackSuccess: 0.9, flagged: true, flaggedBy: ["blend"], blendAnomalyIndex: 21.5 },
      { label: 8, l1Norm: 20, anomalyIndex: 2.5, attackSuccess: 0.9, flagged: true, flaggedBy: ["mask"], blendAnomalyIndex: 1.4 },
    ],
  };
  assert.equal(strongestLabel(nc, [2, 7, 8]), 7);
  // The family that did not flag a label does not speak for it: label 8's blend index is ignored.
  assert.equal(strongestLabel(nc, [2, 8]), 2);
  assert.equal(strongestLabel(undefined, [2, 8]), undefined);
  const plan = autoPlan([2, 7, 8], nc);
  assert.deepEqual(plan.slice(0, 3), [{ name: "fst", defense: "fst" }, { name: "prune-unlearn", defense: "prune-unlearn" }, { name: "prune-unlearn[7]", defense: "prune-unlearn", labels: [7] }]);
  assert.equal(plan.at(-1)?.name, "none");
  assert.equal(autoPlan([7], nc).length, autoPlan([2, 7, 8]).length);
  assert.deepEqual(autoPlan([]), [{ name: "none", defense: "none" }]);
});

test("targetedShare: the largest share of correct images of other classes sent to one class", () => {
  const y = Int32Array.of(0, 0, 1, 1, 2, 2);
  const pred = Int32Array.of(0, 0, 1, 1, 2, 0); // the last image is wrong already: not counted
  // All-to-one: the four correct images not of class 2 all land on 2 → 4/4.
  assert.equal(targetedShare(y, pred, Int32Array.of(2, 2, 2, 2, 2, 0), 3), 1);
  // Scattered flips: 0→1, 1→0, 2→1; class 1 receives 2 of the 3 correct images not of class 1.
  assert.equal(targetedShare(y, pred, Int32Array.of(1, 0, 0, 1, 1, 0), 3), 2 / 3);
  assert.equal(targetedShare(y, pred, pred, 3), 0);
});

test("splitForSelection: disjoint, covers the data, seeded", () => {
  const d = cleanSet(50, 3);
  const a = splitForSelection(d, 0.2, 1);
  const b = splitForSelection(d, 0.2, 1);
  assert.equal(a.selection.size, 10);
  assert.equal(a.fit.size + a.selection.size, d.size);
  assert.deepEqual(a.selection.read(0, 10), b.selection.read(0, 10));
  const rows = new Set<string>();
  for (const part of [a.fit, a.selection]) for (let i = 0; i < part.size; i++) rows.add(part.read(i, 1).join(","));
  assert.equal(rows.size, d.size);
  assert.throws(() => splitForSelection(d, 0.9));
});

test("repair auto scores every candidate on held-out data and chooses the same with or without --poisoned", async () => {
  const model = await backdooredModel();
  const clean = cleanSet(240, 21);
  const test_ = cleanSet(120, 22);
  const req: RepairRequest = { inputScale: 255, detect: { labels: [0, 1, 2, 3], steps: 60 }, common: { seed: 0 } };
  const withP = await repair(model, { clean, test: test_, poisoned: poisonedSet(80, 23) }, req);
  const without = await repair(model, { clean, test: test_ }, req);
  const sel = withP.outcome.sections.selection!;
  assert.ok(sel, "selection section");
  assert.equal(sel.selectionSize, 48);
  // fine-prune needs a conv layer the tiny MLP lacks: skipped with its reason, the others scored.
  assert.ok(sel.candidates.length >= 2, JSON.stringify(sel));
  assert.ok(sel.skipped?.some((s) => s.startsWith("fine-prune (")), JSON.stringify(sel.skipped));
  assert.equal(sel.chosen, withP.defense.name);
  // Everything but the wall times is the same: the poisoned data played no part in the choice.
  const noTimes = (x: typeof sel) => ({ ...x, candidates: x.candidates.map(({ seconds: _s, reinvertSeconds: _r, ...c }) => c) });
  assert.deepEqual(noTimes(without.outcome.sections.selection!), noTimes(sel));
  assert.equal(without.defense.name, withP.defense.name);
  assert.ok(withP.outcome.lines.some((l) => l.startsWith("chose ")));
  // The chosen candidate is the rule's pick over the reported scores.
  const scores = sel.candidates.map((c) => ({ ...c }));
  assert.equal(scores[chooseCandidate(scores, 0.01, sel.selectionSize).index].defense, sel.chosen);
  assert.ok(sel.candidates.some((c) => c.defense === "none"), "B unchanged is scored too");
  // The candidates tied for the lowest score were re-inverted on the flagged labels; the output says so.
  assert.ok(sel.candidates.some((c) => c.reinverted?.length), JSON.stringify(sel.candidates));
  assert.ok(withP.outcome.lines.some((l) => l.includes("re-inverted")));
  assert.match(sel.rule, /re-inverted/);
});

test("repair auto: a spent time budget runs only the first candidate and names the others", async () => {
  const model = await backdooredModel();
  const r = await repair(model, { clean: cleanSet(160, 31) }, { inputScale: 255, detect: { labels: [0, 1, 2, 3], steps: 60 }, budgetSeconds: 0, candidates: ["ibau", "unlearn"] });
  const sel = r.outcome.sections.selection!;
  assert.deepEqual(sel.candidates.map((c) => c.defense), ["ibau"]);
  assert.deepEqual(sel.skipped, ["unlearn"]);
  assert.equal(r.defense.name, "ibau");
});

test("chooseCandidate: a repair past its own --max-drop is not eligible while another candidate is", () => {
  // The selection figures of the VGG-BN PyTorch fixture (53 selection images: a window of ±10.9 points):
  // i-BAU's reversed trigger is the lowest, but every one of its rounds was 11.6 points below B on its own
  // held-out part.
  const over = { maxDrop: 0.02, drop: 0.116 };
  const s = [
    perLabel("fst", 0.774, { 0: 0.792 }),
    perLabel("prune-unlearn", 0.698, { 0: 0.063 }),
    { ...perLabel("sau", 0.774, { 0: 0.896 }), overBudget: { maxDrop: 0.02, drop: 0.03 } },
    perLabel("unlearn", 0.698, { 0: 0.063 }),
    { ...perLabel("ibau", 0.698, { 0: 0.021 }), overBudget: over },
    perLabel("fine-prune", 0.792, { 0: 0.938 }),
    perLabel("none", 0.792, { 0: 1 }),
  ];
  const c = chooseCandidate(s, 0.01, 53);
  assert.equal(s[c.index].defense, "prune-unlearn");
  assert.match(c.reason, /\(sau, ibau not eligible: no round within their --max-drop on their own held-out part\)/);
  // Without the budget flags the rule takes i-BAU's lower trigger score.
  assert.equal(s[chooseCandidate(s.map(({ overBudget: _o, ...x }) => x), 0.01, 53).index].defense, "ibau");
  // When every candidate in the window broke its budget, the rule runs as before among them.
  const all = [{ ...perLabel("ibau", 0.7, { 0: 0.02 }), overBudget: over }, { ...perLabel("sau", 0.71, { 0: 0.5 }), overBudget: over }];
  assert.equal(all[chooseCandidate(all, 0.01, 53).index].defense, "ibau");
  assert.doesNotMatch(chooseCandidate(all, 0.01, 53).reason, /not eligible/);
  // An over-budget repair outside the window is not offered as the trade a wider window would weigh.
  const t = chooseCandidate([perLabel("fine-prune", 0.9, { 0: 0.9 }), { ...perLabel("ibau", 0.6, { 0: 0.01 }), overBudget: over }, perLabel("none", 0.9, { 0: 1 })], 0.01, 765);
  assert.equal(t.tradeoff, undefined);
});
