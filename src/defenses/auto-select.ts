// `repair --defense auto`: run a few candidate repairs and keep the one the evidence favours. The evidence is
// only what a defender has: a selection split of the clean data that no candidate (and no detection) sees,
// Neural Cleanse's reversed triggers stamped on it, and a universal adversarial perturbation found on each
// repaired network (scored by the largest share of images it herds into one class: `targetedShare`). The poisoned test file is never an input here.
//
// Rule: candidates whose selection clean accuracy is within the tolerance of the best are eligible; the
// tolerance is max(1 point, 1.96 standard errors of the best accuracy on the selection split): on a small split
// a 1-point gap is noise, and a fixed 1 point would throw out a candidate for it. (The 1 point is the user's
// `accuracyWindow`, `--accuracy-window`; when the chosen candidate leaves the reversed trigger working and one
// outside the window removes it, `tradeoff` names it and its price.) Among the eligible the lowest
// attack score wins, attack = reversed-trigger success (adversarial success when there is no trigger); attack
// scores within 1.96 standard errors of the lowest count as equal, and then the higher clean accuracy wins, then
// the earlier candidate; between repairs, clean-accuracy gaps under 1 point (TIE_GAP, whatever the window) are ties too, and the
// earlier candidate of the list wins (the list is ordered by what the zoo measurements favour). "none" (B
// unchanged) is scored like the others; with no flagged label it is the only candidate (see autoCandidates).
// A repair that kept a round past its own --max-drop (no round within it on its own held-out part:
// DefenseOutcome.overBudget; i-BAU, SAU, FT-SAM, FST) is not eligible while another candidate in the window is:
// its cost has been measured on a second clean sample, and on a small selection split (53 images with the
// 500-image PyTorch fixtures: a window of ±11 points) the window alone let i-BAU in at 23 points below B.
//
// False flags. The reversed-trigger score is taken per flagged label, and the attack score is the worst over the
// labels that count: a label counts when some eligible repair (not "none") that was run on it brings its
// reversed trigger's success to at most half of B's (a repair of another label that lowers it on the side
// does not make it count: natural features of a class fall a little with any change of the network). A label no eligible repair can halve is either a natural feature of its class
// that Neural Cleanse flagged (on blend, seed 0, labels 2, 6 and 8 beside the real target 7: unlearning them
// costs ~3 points) or out of every repair's reach within the accuracy window: it cannot separate the candidates,
// and with the worst over all labels it hid every difference on the labels that can be repaired. If no label
// counts, all do (the rule without this step). With two or more labels flagged, prune-unlearn is also run
// on the most anomalous label alone (`autoPlan`), so that a repair that leaves the false flags alone can stay
// inside the accuracy window. All of this reads only the selection split and Neural Cleanse's own evidence.
//
// Re-inversion (reinvert-evidence.ts). The reversed triggers found on B fail after every trigger-based repair,
// whether or not the real trigger still works, so they tie those repairs. The candidates tied for the lowest
// attack score are therefore re-inverted: Neural Cleanse's reversal run afresh on the repaired network for the
// counted labels (mask family, two starts, on the candidates' own data, never the selection split).
// A fresh trigger whose L1 norm is within B's flag threshold (the backdoor is still there, as small as one
// Neural Cleanse flags) counts: the label's attack figure becomes the higher of the stamped trigger's success
// and the fresh trigger's on the selection split. A larger fresh trigger is a natural label-to-label one and
// does not count. The re-inverted figures only raise scores, so re-inverting the tied candidates until no
// tied one is left without it (`pendingReinversion`) gives the choice re-inverting every eligible one would.
// Among the tied, a candidate whose fresh trigger works and sits one anomaly index or more above the lowest tied
// one's (and at 1 or more among B's unflagged labels) leaves the tie (moreAnomalousFresh): the backdoor is found
// again on it.
//
// The other family (CandidateScore.heldOut). Neural Cleanse reverses a trigger of both families for every label,
// and unlearning stamps the flagging family's: on that trigger the trigger-based repairs are scored in-sample.
// Where some eligible repair halves B's success on the other family's trigger, a candidate that halves B's
// success on the flagging family's trigger is scored on the other family's alone for that label (with the
// re-inverted trigger), which no candidate trained on; one that does not halve it keeps the worse of both (its
// figure on the flagging family's trigger is out-of-sample: it trained on no trigger). Elsewhere (a natural
// feature of the class, random_pos) labels are scored on the flagging family's trigger.
//
// Position-free labels (shift-evidence.ts). Before the candidates are scored, B's response to each flagged
// label's reversed trigger rolled off itself to a random position per image is measured on the selection split;
// a label whose rolled trigger keeps at least a quarter of its success where found fires anywhere (random_pos),
// and its figure for every candidate is the worse of the trigger where found and rolled: a repair that removed
// the trigger at one position only is not scored clean. Masks spread over the whole image never qualify.
import { fail } from "../errors.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { ReportNeuralCleanse, ReportSelection } from "../report/types.js";
import { mulberry32, shuffled } from "../util/random.js";
import { pickRows } from "../io/dataset.js";
import { perturbedDataset, universalPerturbation } from "./ibau.js";
import { countCorrect, triggerHits } from "../eval/evaluate.js";
import { ncEvalSets, stampedSource, type ReversedTrigger } from "./nc-mitigation.js";
import { translatedSource } from "./shift-evidence.js";
import type { BatchSource } from "../model/forward.js";
import { evaluateModels } from "../eval/evaluate.js";
import { triggerEvalLine } from "../report/text.js";
import { defineDefense, repairArtifacts, repairOutcomeCore, type AnyDefense, type OverBudget } from "./defense.js";
import { gFromPair } from "./g-model.js";
import { MIN_HELD_OUT_SUCCESS } from "./nc-evidence.js";
import type { ReinvertedLabel } from "./reinvert-evidence.js";

/** Eligibility window of clean accuracy by default: the goal's 1 point (see effectiveTolerance). */
export const DEFAULT_ACCURACY_WINDOW = 0.01;

/**
 * Between repairs tied on attack, a clean-accuracy gap under this is noise (about one standard error on 800
 * selection images) and the earlier candidate wins. It stays when the user widens the window: that choice is
 * about what accuracy to pay, not about how precisely the split measures it.
 */
export const TIE_GAP = 0.01;

/** The name of the "leave B unchanged" candidate. */
export const NO_CHANGE = "none";

/** The candidate set: unlearning only when a label is flagged (it needs the triggers); B unchanged last. */
// Nothing flagged: the selection split then holds no evidence of a backdoor. The universal perturbation cannot
// stand in for it: it herds 61–97% of the images into one class on clean and backdoored zoo models alike
// (docs/repairs.md), so a repair "winning" on it only costs clean accuracy. B stays unchanged (G is still
// calibrated on its input-level signals).
// Order matters for ties (chooseCandidate): FST first (on the zoo it took patch, blend, WaNet and low-frequency
// triggers under 1% where the reversed trigger showed no difference between it and the trigger-based repairs,
// docs/repairs.md "Feature Shift Tuning"), then prune-unlearn (the trigger-based repair reaching ~2% on patch
// triggers), SAU before unlearning (it took blend to 1.6% where unlearning left 4.3% at the same
// reversed-trigger score).
export const autoCandidates = (flagged: readonly number[]): string[] => (flagged.length ? ["fst", LABEL_RUN, "sau", "unlearn", "ft-sam", "ibau", "fine-prune", NO_CHANGE] : [NO_CHANGE]);

/** The candidate that also runs on the most anomalous flagged label alone (autoPlan): the first one using the triggers. */
export const LABEL_RUN = "prune-unlearn";

/** One auto candidate: a registered defense (or "none"), run on all flagged labels or on `labels` only. */
export interface AutoCandidate {
  /** Shown in the output and the report: the defense's name, with the labels when restricted ("prune-unlearn[7]"). */
  name: string;
  defense: string;
  labels?: number[];
}

/**
 * The flagged label with the largest anomaly index over the trigger families that flagged it (Neural Cleanse's
 * own evidence); undefined without the detection section or when the largest is shared.
 */
export function strongestLabel(nc: Pick<ReportNeuralCleanse, "labels"> | undefined, flagged: readonly number[]): number | undefined {
  if (!nc) return undefined;
  const strength = (l: number): number => {
    const r = nc.labels.find((x) => x.label === l);
    if (!r) return NaN;
    const by = r.flaggedBy ?? ["mask", "blend"];
    return Math.max(by.includes("mask") ? r.anomalyIndex : -Infinity, by.includes("blend") ? (r.blendAnomalyIndex ?? -Infinity) : -Infinity);
  };
  const ranked = flagged.map((l) => ({ l, a: strength(l) })).filter((x) => Number.isFinite(x.a)).sort((a, b) => b.a - a.a);
  if (ranked.length === 0 || (ranked.length > 1 && ranked[0].a === ranked[1].a)) return undefined;
  return ranked[0].l;
}

/**
 * autoCandidates as a plan; with two or more flagged labels LABEL_RUN also runs on the most anomalous label
 * alone, right after its run on all of them (see the file's head: false flags).
 */
export function autoPlan(flagged: readonly number[], nc?: Pick<ReportNeuralCleanse, "labels">): AutoCandidate[] {
  const plan: AutoCandidate[] = autoCandidates(flagged).map((d) => ({ name: d, defense: d }));
  const top = flagged.length > 1 ? strongestLabel(nc, flagged) : undefined;
  const at = plan.findIndex((c) => c.defense === LABEL_RUN);
  if (top !== undefined && at >= 0) plan.splice(at + 1, 0, { name: `${LABEL_RUN}[${top}]`, defense: LABEL_RUN, labels: [top] });
  return plan;
}

/** B itself as a candidate: "no change" hands back B, with G = B vs B (never rejects before calibration). */
export const noChangeDefinition: AnyDefense = defineDefense({
  name: NO_CHANGE,
  summary: "leave B unchanged (auto's baseline candidate)",
  kind: "repair",
  options: {},
  async run(model, data) {
    const ev = await evaluateModels(model, model, ncEvalSets(data, []));
    const r = { ...ev, model, gGraph: gFromPair(model, model, `${model.name}_unchanged_G`) };
    return {
      ...repairOutcomeCore(`no change — ${model.name}`, r),
      sections: {},
      extra: {},
      artifacts: repairArtifacts(model, r.gGraph, `G of ${model.name} left unchanged: class ${model.numClasses} never chosen before calibration`, []),
      lines: [`model       ${model.name}`, "no change   B is handed back unchanged", `after       ${triggerEvalLine(r.after)}`],
      note: "B unchanged",
      timings: {},
    };
  },
});

/**
 * Accuracy tolerance of the rule: max(minTolerance, 1.96·√(p(1−p)/n)) for the best selection accuracy p on n
 * images (the 95% half-width of p's normal interval); minTolerance alone when n is not known.
 */
export function effectiveTolerance(minTolerance: number, best: number, selectionSize?: number): number {
  if (!selectionSize) return minTolerance;
  return Math.max(minTolerance, 1.96 * Math.sqrt((best * (1 - best)) / selectionSize));
}

export interface CandidateScore {
  defense: string;
  /** Clean accuracy on the selection split. */
  cleanAccuracy: number;
  /** Worst reversed-trigger success over the triggers (stamped selection images not of the target); undefined without triggers. */
  triggerSuccess?: number;
  /** Per flagged label: its reversed trigger's success (the worst of its triggers; for a position-free label the worse of found and moved). */
  perLabel?: { label: number; success: number }[];
  /** Per position-free label: its reversed trigger's success at a random position per image. */
  moved?: { label: number; success: number }[];
  /**
   * Per flagged label: the success of its reversed trigger of the other family, which no repair trained on
   * (ScoreOptions.heldOut); in the attack score only where some eligible repair halves it (countedHeldOut).
   */
  heldOut?: { label: number; success: number }[];
  /** The flagged labels the candidate was run on (undefined: all of them, or it uses no trigger). */
  labels?: number[];
  /** Largest share of the selection images the network gets right (other classes) that one universal perturbation sends to one class. */
  adversarialSuccess: number;
  /**
   * Per counted label: the trigger reversed afresh on this network, its mask bounded to a backdoor's size, and
   * its success on the selection split (reinvert-evidence.ts); absent when not re-inverted.
   */
  reinverted?: ReinvertedLabel[];
  /** Seconds the re-inversion took. */
  reinvertSeconds?: number;
  /** Set when the repair found no round within its own --max-drop (DefenseOutcome.overBudget): not eligible while another candidate is. */
  overBudget?: OverBudget;
  seconds: number;
}

/** Splits clean data into what candidates may use (`fit`) and the held-out `selection` part (seeded). */
export function splitForSelection(data: Dataset, fraction: number, seed = 0): { fit: Dataset; selection: Dataset } {
  const n = data.size;
  const k = Math.round(fraction * n);
  // Too little data is the user's to fix (a few images given as --clean); a fraction above one half is ours.
  if (k < 1) {
    const need = Math.ceil(0.5 / fraction);
    fail(`data ${data.name}: --defense auto holds out ${Math.round(100 * fraction)}% of the clean data to score its candidates, and ${n} image${n === 1 ? "" : "s"} leave${n === 1 ? "s" : ""} none (give at least ${need}, or choose a --defense)`);
  }
  if (k > n / 2) throw new Error(`selection split of ${fraction} leaves ${k} of ${n} images`);
  const order = shuffled(n, mulberry32(seed + 77291));
  const sel = Int32Array.from(order.slice(0, k)).sort();
  const fit = Int32Array.from(order.slice(k)).sort();
  return { fit: pickRows(data, fit, `${data.name} (candidates' part)`), selection: pickRows(data, sel, `${data.name} (selection part)`) };
}

export interface ScoreOptions {
  triggers: readonly ReversedTrigger[];
  /** The flagged labels' triggers of the other family (TriggerInput.heldOut): scored apart, see CandidateScore.heldOut. */
  heldOut?: readonly ReversedTrigger[];
  /** Position-free labels (shift-evidence.ts): their triggers are scored at their found position and moved. */
  anywhere?: readonly number[];
  /** Pixels are in [0, 255 / inputScale]. */
  inputScale: number;
  /** Universal perturbation budget: RMS per input value as a share of the input range (i-BAU's default 0.1). */
  rms?: number;
  steps?: number;
  batchSize?: number;
  seed?: number;
}

/** Scores one repaired network on the selection split (clean accuracy, reversed-trigger and adversarial success). */
export async function scoreCandidate(defense: string, m: Model, selection: Dataset, o: ScoreOptions, seconds = 0): Promise<CandidateScore> {
  const labels = selection.labels!;
  const pred = await predictLabels(m, selection, { batchSize: o.batchSize });
  const cleanAccuracy = countCorrect(pred, labels) / labels.length;
  let triggerSuccess: number | undefined;
  const byLabel = new Map<number, number>();
  const moved = new Map<number, number>();
  // One trigger's success; a position-free label (shift-evidence.ts) is also scored with its trigger at a random
  // position per image, and the worse counts.
  const success = async (t: ReversedTrigger, k: number, movedInto?: Map<number, number>): Promise<number> => {
    const rate = async (src: BatchSource) => {
      const r = triggerHits(await predictLabels(m, src, { batchSize: o.batchSize }), labels, t.label);
      return r.n ? r.hits / r.n : 0;
    };
    const v = await rate(stampedSource(selection, t));
    if (!o.anywhere?.includes(t.label)) return v;
    const w = await rate(translatedSource(selection, t, (o.seed ?? 0) + 31 * k));
    movedInto?.set(t.label, Math.max(movedInto.get(t.label) ?? 0, w));
    return Math.max(v, w);
  };
  for (const [k, t] of o.triggers.entries()) {
    const v = await success(t, k, moved);
    triggerSuccess = Math.max(triggerSuccess ?? 0, v);
    byLabel.set(t.label, Math.max(byLabel.get(t.label) ?? 0, v));
  }
  const held = new Map<number, number>();
  for (const [k, t] of (o.heldOut ?? []).entries()) held.set(t.label, Math.max(held.get(t.label) ?? 0, await success(t, o.triggers.length + k)));
  const perLabel = byLabel.size ? [...byLabel].map(([label, success]) => ({ label, success })) : undefined;
  const per = selection.shape[0] * selection.shape[1] * selection.shape[2];
  const radius = (o.rms ?? 0.1) * (255 / o.inputScale) * Math.sqrt(per);
  const x = selection.read(0, selection.size);
  const y = Int32Array.from(labels);
  const delta = await universalPerturbation(m, x, y, radius, o.steps ?? 20, o.batchSize ?? 64, mulberry32((o.seed ?? 0) + 1913));
  const adv = await predictLabels(m, perturbedDataset(memoryDataset(selection.name, selection.shape, x, y), delta), { batchSize: o.batchSize });
  return { defense, cleanAccuracy, triggerSuccess, ...(perLabel ? { perLabel } : {}), ...(moved.size ? { moved: [...moved].map(([label, success]) => ({ label, success })) } : {}), ...(held.size ? { heldOut: [...held].map(([label, success]) => ({ label, success })) } : {}), adversarialSuccess: targetedShare(y, pred, adv, m.numClasses), seconds };
}

/**
 * The largest share of correctly classified images (of other classes) that the perturbation sends to one single
 * class. A backdoor is all-to-one: the universal perturbation finds it and herds the images into the target; on
 * a network without one its flips scatter over many classes. (The share of all flips, the first measure, was
 * high for every candidate on Fashion-MNIST, 64–90%, backdoored or not, and so told little.)
 */
export function targetedShare(y: Int32Array, pred: Int32Array, adv: Int32Array, numClasses: number): number {
  const rightOf = new Float64Array(numClasses), sentTo = new Float64Array(numClasses);
  let right = 0;
  for (let i = 0; i < y.length; i++) {
    if (pred[i] !== y[i]) continue;
    right++;
    rightOf[y[i]]++;
    if (adv[i] !== y[i]) sentTo[adv[i]]++;
  }
  let best = 0;
  for (let c = 0; c < numClasses; c++) if (right - rightOf[c] > 0) best = Math.max(best, sentTo[c] / (right - rightOf[c]));
  return best;
}

// The reversed triggers are the evidence about the backdoor when there are any; the universal perturbation only
// when there are none (it does not tell backdoored from clean networks apart, see autoCandidates).
const attackOf = (s: CandidateScore): number => s.triggerSuccess ?? s.adversarialSuccess;

/**
 * The flagged labels that count in the attack score (see the file's head): those some eligible repair run on
 * them brings to at most half of B's reversed-trigger success ("none"'s score; 1 when B was not scored). All labels when none
 * qualifies, or when the scores have no per-label figures.
 */
export function countedLabels(scores: readonly CandidateScore[], eligible: readonly number[]): { counted: number[]; ignored: number[] } {
  const { labels, counted } = halvedLabels(scores, eligible, (s) => s.perLabel);
  if (counted.length === 0) return { counted: labels, ignored: [] };
  return { counted, ignored: labels.filter((l) => !counted.includes(l)) };
}

/**
 * The flagged labels whose other-family trigger counts in the attack score: as for countedLabels, those some
 * eligible repair run on them brings to at most half of B's success on it. Unlike the flagging family's trigger,
 * none counts when none qualifies: a trigger no repair can halve is a natural feature of its class (random_pos:
 * the blend family's trigger of label 4 kept 50–95% on every repair) and would only hide the differences.
 */
export function countedHeldOut(scores: readonly CandidateScore[], eligible: readonly number[]): number[] {
  return halvedLabels(scores, eligible, (s) => s.heldOut).counted;
}

/**
 * The labels in `figures` (per candidate), and those some eligible repair (not "none") run on them brings to at
 * most half of B's figure ("none"'s; 1 when B was not scored).
 */
function halvedLabels(scores: readonly CandidateScore[], eligible: readonly number[], figures: (s: CandidateScore) => readonly { label: number; success: number }[] | undefined): { labels: number[]; counted: number[] } {
  const of = (s: CandidateScore, l: number): number | undefined => figures(s)?.find((p) => p.label === l)?.success;
  const labels = [...new Set(scores.flatMap((s) => (figures(s) ?? []).map((p) => p.label)))].sort((a, b) => a - b);
  const baseOf = bFigure(scores, figures);
  const counted = labels.filter((l) => {
    const base = baseOf(l);
    return eligible.some((i) => scores[i].defense !== NO_CHANGE && (scores[i].labels?.includes(l) ?? true) && (of(scores[i], l) ?? Infinity) <= base / 2 + 1e-12);
  });
  return { labels, counted };
}

/** B's ("none"'s) figure per label, 1 where B was not scored. */
function bFigure(scores: readonly CandidateScore[], figures: (s: CandidateScore) => readonly { label: number; success: number }[] | undefined): (label: number) => number {
  const b = scores.find((s) => s.defense === NO_CHANGE);
  return (l) => (b && figures(b)?.find((p) => p.label === l)?.success) ?? 1;
}

/** `figure` for a label, or the re-inverted trigger's success when it counts and is higher. */
function withReinverted(s: CandidateScore, label: number, figure: number | undefined): number | undefined {
  const r = s.reinverted?.find((p) => p.label === label);
  const fresh = r?.counts ? r.success : undefined;
  if (figure === undefined) return fresh;
  return fresh === undefined ? figure : Math.max(figure, fresh);
}

/** A label's attack figure: its stamped reversed trigger's success (or the re-inverted trigger's, see withReinverted). */
const labelAttack = (s: CandidateScore, label: number): number | undefined => withReinverted(s, label, s.perLabel?.find((p) => p.label === label)?.success);

/** A label's figure when its other-family trigger counts: that trigger's success (or the re-inverted trigger's). */
const heldOutAttack = (s: CandidateScore, label: number): number | undefined => withReinverted(s, label, s.heldOut?.find((p) => p.label === label)?.success);

/**
 * Attack score over the counted labels (the worst of them); attackOf when the score has no per-label figures.
 * A label whose other-family trigger counts is scored on that trigger alone for a candidate that halves B's
 * success on the flagging family's trigger: that trigger is the one unlearning trained on, so the trigger-based
 * repairs' figures on it are in-sample and cannot be set against the others' (wanet, seed 1: prune-then-unlearn
 * 2.9% on it against FST's 6.9%; on the other family's 4.9% against 2.4%), while no candidate trained on the
 * other family's. A candidate that leaves the flagging family's trigger above half of B's success keeps the
 * worse of both (low_rate_patch, seed 0: i-BAU 65% on it, and lower on the other family's).
 */
function attackOver(s: CandidateScore, counted: readonly number[], countedHeld: readonly number[] = [], stampedBase: (label: number) => number = () => 1): number {
  const halves = (l: number): boolean => (s.perLabel?.find((p) => p.label === l)?.success ?? Infinity) <= stampedBase(l) / 2 + 1e-12;
  const held = countedHeld.map((l) => (halves(l) ? heldOutAttack(s, l) : maxOf(heldOutAttack(s, l), labelAttack(s, l)))).filter((x): x is number => x !== undefined);
  if (!s.perLabel || counted.length === 0) return Math.max(attackOf(s), ...held);
  const v = counted.filter((l) => !countedHeld.includes(l)).map((l) => labelAttack(s, l)).filter((x): x is number => x !== undefined);
  if (v.length === 0 && held.length) return Math.max(...held);
  return Math.max(v.length ? Math.max(...v) : attackOf(s), ...held);
}

/** The larger of two optional figures (undefined when both are). */
const maxOf = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined ? b : b === undefined ? a : Math.max(a, b));

/** The rule's intermediate figures: who is eligible, which labels count, and the candidates tied on attack. */
function ruleState(scores: readonly CandidateScore[], minTolerance: number, selectionSize?: number) {
  const best = Math.max(...scores.map((s) => s.cleanAccuracy));
  const tolerance = effectiveTolerance(minTolerance, best, selectionSize);
  const inWindow = scores.map((s, i) => i).filter((i) => scores[i].cleanAccuracy >= best - tolerance - 1e-12);
  // A repair whose own held-out part (a second clean sample, beside the selection split) put every round past
  // its --max-drop has measured its cost twice; on a small selection split the window alone is wide enough
  // to let it in (e.g. 53 images: ±11 points). It stays out unless every candidate in the window is out.
  const withinBudget = inWindow.filter((i) => !scores[i].overBudget);
  const eligible = withinBudget.length ? withinBudget : inWindow;
  const overBudget = inWindow.filter((i) => !eligible.includes(i));
  // Which labels count is decided on the stamped triggers alone (see the file's head: false flags).
  const { counted, ignored } = countedLabels(scores, eligible);
  const countedHeld = countedHeldOut(scores, eligible);
  const stampedBase = bFigure(scores, (s) => s.perLabel);
  const attack = (s: CandidateScore): number => attackOver(s, counted, countedHeld, stampedBase);
  const lowest = Math.min(...eligible.map((i) => attack(scores[i])));
  // Attack scores within the noise of the lowest are ties (only when the split's size is known).
  const band = selectionSize ? 1.96 * Math.sqrt(Math.max(lowest * (1 - lowest), 1 / selectionSize) / selectionSize) : 0;
  const onScore = eligible.filter((i) => attack(scores[i]) <= lowest + band + 1e-12);
  // With several counted labels each tied candidate can be beaten on one of them (the PyTorch ResNet18 fixture,
  // labels 0 and 8: one repair re-inverted 0 smallest, another 8): evidence that contradicts itself decides
  // nothing, and the tie stands as the stamped triggers left it.
  const out = moreAnomalousFresh(scores, onScore, counted);
  const freshContradicts = out.length > 0 && out.length === onScore.length;
  const freshOut = freshContradicts ? [] : out;
  const tied = onScore.filter((i) => !freshOut.includes(i));
  return { best, tolerance, eligible, overBudget, counted, countedHeld, ignored, attack, lowest, band, tied, freshOut, freshContradicts };
}

/**
 * A tied candidate whose fresh trigger of a counted label sits at least this much higher (anomaly index among
 * B's unflagged reference labels) than the lowest tied candidate's leaves the tie: one typical label-to-label spread.
 */
export const FRESH_INDEX_GAP = 1;

/** ...and at least this high itself: the label is still on the small side of B's labels, as a backdoor's is. */
export const FRESH_INDEX_FLOOR = 1;

/**
 * Among candidates tied on attack, those whose re-inverted trigger for a counted label works
 * (MIN_HELD_OUT_SUCCESS on the selection split), sits at anomaly index FRESH_INDEX_FLOOR or more among B's
 * unflagged reference labels and FRESH_INDEX_GAP or more above the lowest tied candidate's fresh trigger of that label:
 * the backdoor is found again smaller on them than on another tied repair. Success alone cannot separate them
 * (every fresh trigger reaches ~95% at some size); Neural Cleanse's own measure, the norm, can.
 * Measured (detection's schedule, all of valid.h5, docs/repairs.md "Re-inversion on detection's schedule"):
 * multi_trigger's label 1 comes back at index 1.7–2.4 after unlearning (real ASR 39–43%), 2.9–4.2 after FST
 * (71–92%), 0.0–0.2 after prune-then-unlearn (0.2–2.2%). PyTorch VGG-BN fixture: fine-tuning and B at L1 5.7 and
 * 3.4 (real ASR 99.6%), unlearning at 41.8 against a bound of 42.9 (index 2 there; real ASR 3.2%). Candidates
 * not yet re-inverted are never dropped (pendingReinversion asks for them first).
 */
export function moreAnomalousFresh(scores: readonly CandidateScore[], tied: readonly number[], counted: readonly number[]): number[] {
  const fresh = (i: number, l: number) => scores[i].reinverted?.find((r) => r.label === l);
  const lowest = new Map(counted.map((l) => [l, Math.min(...tied.map((j) => fresh(j, l)?.index ?? Infinity))]));
  return tied.filter((i) =>
    counted.some((l) => {
      const r = fresh(i, l);
      // A small fresh mask that does not work on the selection split is no backdoor found again.
      return r !== undefined && r.success >= MIN_HELD_OUT_SUCCESS && r.index >= FRESH_INDEX_FLOOR && r.index >= lowest.get(l)! + FRESH_INDEX_GAP;
    }),
  );
}

/**
 * Candidates to re-invert before the rule can choose: those tied for the lowest attack score that have not been
 * re-inverted yet, and the labels that count. Re-inversion only raises a score, so once every tied candidate
 * has been re-inverted the choice is the one re-inverting every eligible candidate would give; the caller
 * re-inverts these, then asks again until none is left (usually one or two rounds; never a candidate outside
 * the accuracy window, and never one whose stamped triggers already lose).
 */
export function pendingReinversion(scores: readonly CandidateScore[], minTolerance = 0.01, selectionSize?: number): { indices: number[]; labels: number[] } {
  if (scores.length === 0) return { indices: [], labels: [] };
  const st = ruleState(scores, minTolerance, selectionSize);
  return { indices: st.tied.filter((i) => scores[i].perLabel && !scores[i].reinverted), labels: st.counted };
}

/** The documented rule (see the file's head): index of the chosen candidate, why, and the tolerance used. */
export function chooseCandidate(scores: readonly CandidateScore[], minTolerance = 0.01, selectionSize?: number): { index: number; reason: string; tolerance: number; ignored: number[]; tradeoff?: SelectionTradeoff } {
  if (scores.length === 0) throw new Error("no candidate to choose from");
  const { best, tolerance, eligible, overBudget, countedHeld, ignored, attack, band, tied, freshOut, freshContradicts } = ruleState(scores, minTolerance, selectionSize);
  let index = -1;
  for (const i of tied) if (index < 0 || scores[i].cleanAccuracy > scores[index].cleanAccuracy) index = i;
  // Between tied repairs, accuracy gaps under TIE_GAP are below what the split can resolve (1 point is
  // about one standard error on 800 images): the earlier candidate in the list wins. The list is ordered by
  // the residual ASR measured on the zoo (docs/repairs.md). B unchanged keeps a tie it leads on accuracy.
  let prior = false;
  if (selectionSize && scores[index].defense !== NO_CHANGE) {
    const first = tied.find((i) => scores[i].defense !== NO_CHANGE && scores[i].cleanAccuracy >= scores[index].cleanAccuracy - TIE_GAP - 1e-12);
    if (first !== undefined && first !== index) {
      index = first;
      prior = true;
    }
  }
  const s = scores[index];
  const p = (v: number) => `${(100 * v).toFixed(1)}%`;
  const others = scores.length - 1;
  // How many eligible candidates the re-inverted triggers moved out of the tie (their fresh trigger still works).
  const stampedOnly = scores.some((x) => x.reinverted) ? ruleState(scores.map((x) => ({ ...x, reinverted: undefined })), minTolerance, selectionSize).tied : tied;
  const raised = stampedOnly.filter((i) => !tied.includes(i) && !freshOut.includes(i)).length;
  const reason =
    `${s.defense}: lowest attack success (${s.triggerSuccess === undefined ? `adversarial ${p(s.adversarialSuccess)}, no reversed trigger` : `${s.reinverted ? "reversed or re-inverted trigger" : "reversed-trigger"} ${p(attack(s))}`}) ` +
    (ignored.length ? `(label${ignored.length > 1 ? "s" : ""} ${ignored.join(", ")} not counted: no eligible repair halves ${ignored.length > 1 ? "their" : "its"} reversed trigger) ` : "") +
    (countedHeld.length ? `(label${countedHeld.length > 1 ? "s" : ""} ${countedHeld.join(", ")} scored on the other family's reversed trigger, which no candidate trained on, where a candidate halves the flagging family's) ` : "") +
    (raised ? `(${raised} candidate${raised > 1 ? "s" : ""} tied on the reversed triggers lost on the re-inverted one) ` : "") +
    (freshOut.length ? `(${freshOut.map((i) => scores[i].defense).join(", ")} left the tie: ${freshOut.length > 1 ? "their" : "its"} re-inverted trigger sits ${FRESH_INDEX_GAP} or more anomaly index above the lowest tied one's, at ${FRESH_INDEX_FLOOR} or more among B's labels) ` : "") +
    (freshContradicts ? "(the re-inverted triggers decide nothing: each tied candidate's is found again smaller on another for some label) " : "") +
    `${band > 0 ? `(ties within ${(100 * band).toFixed(1)} points go to clean accuracy${prior ? `, gaps under ${(100 * TIE_GAP).toFixed(1)} points between repairs to the earlier candidate` : ""}) ` : ""}` +
    `among the candidates within ${(100 * tolerance).toFixed(1)} points of the best selection clean accuracy (${p(best)}; its own ${p(s.cleanAccuracy)})` +
    (overBudget.length ? ` (${overBudget.map((i) => scores[i].defense).join(", ")} not eligible: no round within ${overBudget.length > 1 ? "their" : "its"} --max-drop on ${overBudget.length > 1 ? "their" : "its"} own held-out part)` : "") +
    (others ? `, over ${others} other candidate${others > 1 ? "s" : ""}` : "");
  const tradeoff = tradeoffBeyondWindow(scores, index, eligible, attack, best);
  const trade = tradeoff
    ? `; its reversed trigger still works on ${p(attack(s))} of the selection images, and ${tradeoff.defense} takes it to ${p(tradeoff.triggerSuccess)} at ${p(tradeoff.cleanAccuracy)} clean accuracy (${(100 * (best - tradeoff.cleanAccuracy)).toFixed(1)} points below the best, outside the window): --defense ${tradeoff.defense.replace(/\[.*$/, "")} takes that trade, --accuracy-window ${windowFor(best - tradeoff.cleanAccuracy)} lets auto weigh it`
    : "";
  return { index, reason: reason + trade, tolerance, ignored, ...(tradeoff ? { tradeoff } : {}) };
}

/** The --accuracy-window (points, one decimal, rounded up) that takes in a candidate `gap` below the best. */
const windowFor = (gap: number): string => (Math.ceil(1000 * gap - 1e-6) / 10).toFixed(1);

/** A repair outside the accuracy window that removes what the chosen candidate leaves working. */
export interface SelectionTradeoff {
  defense: string;
  cleanAccuracy: number;
  triggerSuccess: number;
}

/**
 * When the chosen candidate leaves the reversed trigger working (success ≥ MIN_HELD_OUT_SUCCESS, what detection
 * calls a working trigger) and a repair outside the accuracy window brings it under that, the best such repair
 * (lowest attack, then higher accuracy): the window kept auto from it, and the user is told the price. Its
 * figure is the stamped trigger's: candidates outside the window are never re-inverted.
 */
function tradeoffBeyondWindow(scores: readonly CandidateScore[], chosen: number, eligible: readonly number[], attack: (s: CandidateScore) => number, best: number): SelectionTradeoff | undefined {
  if (scores[chosen].triggerSuccess === undefined || attack(scores[chosen]) < MIN_HELD_OUT_SUCCESS) return undefined;
  let pick: number | undefined;
  // A wider window does not let in a repair past its own --max-drop while others are within theirs (ruleState).
  const budgetBinds = eligible.some((j) => !scores[j].overBudget);
  for (const [i, sc] of scores.entries()) {
    if (eligible.includes(i) || (budgetBinds && sc.overBudget) || sc.defense === NO_CHANGE || sc.triggerSuccess === undefined || attack(sc) >= MIN_HELD_OUT_SUCCESS || sc.cleanAccuracy >= best) continue;
    if (pick === undefined || attack(sc) < attack(scores[pick]) || (attack(sc) === attack(scores[pick]) && sc.cleanAccuracy > scores[pick].cleanAccuracy)) pick = i;
  }
  return pick === undefined ? undefined : { defense: scores[pick].defense, cleanAccuracy: scores[pick].cleanAccuracy, triggerSuccess: attack(scores[pick]) };
}

/** The report's `selection` section. */
export function selectionSection(
  scores: readonly CandidateScore[],
  chosen: number,
  reason: string,
  selectionSize: number,
  o: { tolerance: number; window: number; skipped: string[]; tradeoff?: SelectionTradeoff },
): ReportSelection {
  const { tolerance, window, skipped, tradeoff } = o;
  return {
    rule: `eligible: selection clean accuracy within ${tolerance.toFixed(4)} (max of ${window} and 1.96 standard errors) of the best, and no round past the repair's own --max-drop (overBudget) unless every candidate in that window has one; chosen: lowest triggerSuccess (adversarialSuccess without triggers; per flagged label, over the labels some eligible repair halves; per label the higher of the stamped reversed trigger and the trigger re-inverted on the candidate when its L1 norm is within B's flag threshold, for the candidates tied on the lowest score), scores within 1.96 standard errors of it tied (less any tied candidate whose re-inverted trigger works on at least ${MIN_HELD_OUT_SUCCESS} of the images and sits at anomaly index ${FRESH_INDEX_FLOOR} or more among B's unflagged reference labels and ${FRESH_INDEX_GAP} or more above the lowest tied candidate's), then highest clean accuracy (repairs within ${TIE_GAP} of it: the earlier candidate); a position-free label (shiftEvidence: its reversed trigger rolled to random positions keeps at least a quarter of its success on B) is scored by the worse of the trigger where found and rolled; where some eligible repair halves B's success on a flagged label's trigger of the other family (heldOut, which no repair trained on), a candidate that halves B's success on the flagging family's trigger is scored on the other family's (or the re-inverted one) alone for that label, as the repairs that unlearned the flagging family's trigger are scored in-sample on it; a candidate that does not halve it keeps the worse of both`,
    selectionSize,
    candidates: scores.map((s) => ({ defense: s.defense, cleanAccuracy: s.cleanAccuracy, ...(s.triggerSuccess === undefined ? {} : { triggerSuccess: s.triggerSuccess }), adversarialSuccess: s.adversarialSuccess, seconds: s.seconds, ...(s.reinverted ? { reinverted: s.reinverted, reinvertSeconds: s.reinvertSeconds } : {}), ...(s.moved ? { moved: s.moved } : {}), ...(s.heldOut ? { heldOut: s.heldOut } : {}), ...(s.overBudget ? { overBudget: s.overBudget } : {}) })),
    chosen: scores[chosen].defense,
    reason,
    ...(skipped.length ? { skipped } : {}),
    ...(tradeoff ? { tradeoff } : {}),
  };
}
