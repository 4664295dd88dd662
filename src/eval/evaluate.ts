// Clean accuracy and attack success rate (ASR). CSAW convention: a poisoned file's stored label is the
// attacker's target, so ASR is the share of poisoned inputs classified as their stored label.
//
// One routine counts correct predictions (countCorrect); evalResult turns one network's predictions into the
// report's accuracy/ASR (and a reversed trigger's success), gRates gives G's counts, evaluatePair gives B, B′
// and G from both networks' predictions. Where predictions come from is the caller's business: predictLabels
// on a Dataset (predictSplit, evaluateModels), or the pruning engine's cached fast path.
import type { Dataset } from "../io/dataset.js";
import { checkLabels, checkShape, requireLabels } from "../io/dataset.js";
import { predictLabelsEach, type BatchSource } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { ReportEvalResult, ReportG } from "../report/types.js";

export interface Accuracy {
  n: number;
  correct: number;
  accuracy: number;
}

export interface Evaluation {
  clean: Accuracy;
  /** Poisoned inputs classified as the label stored with them; per target where they hold more than one. */
  poisoned?: { n: number; attackSuccess: number; asr: number; byTarget?: TargetSuccess[] };
  seconds: number;
  imagesPerSecond: number;
}

/** Number of predictions equal to their labels (for poisoned data: attack successes). */
export function countCorrect(pred: Int32Array, labels: Int32Array): number {
  let k = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === labels[i]) k++;
  return k;
}

export function accuracyOf(pred: Int32Array, labels: Int32Array): Accuracy {
  const correct = countCorrect(pred, labels);
  return { n: pred.length, correct, accuracy: pred.length ? correct / pred.length : 0 };
}

/** The attack's success on the poisoned inputs of one target. */
export interface TargetSuccess {
  target: number;
  n: number;
  attackSuccess: number;
  asr: number;
}

/** Per label of `labels` (ascending): how many rows carry it and how many of them `hit`. */
export function countByLabel(labels: Int32Array, hit: (row: number) => boolean): { label: number; n: number; hits: number }[] {
  const count = new Map<number, { label: number; n: number; hits: number }>();
  for (let i = 0; i < labels.length; i++) {
    const c = count.get(labels[i]!) ?? { label: labels[i]!, n: 0, hits: 0 };
    c.n++;
    if (hit(i)) c.hits++;
    count.set(labels[i]!, c);
  }
  return [...count.values()].sort((a, b) => a.label - b.label);
}

/**
 * Attack success per target where the poisoned inputs hold several (the sets of several triggers read as one);
 * undefined for a single target, whose rate is the overall one.
 */
export function successByTarget(pred: Int32Array, targets: Int32Array): TargetSuccess[] | undefined {
  const by = countByLabel(targets, (i) => pred[i] === targets[i]);
  return by.length < 2 ? undefined : by.map((c) => ({ target: c.label, n: c.n, attackSuccess: c.hits, asr: c.hits / c.n }));
}

/** Stamped inputs (whose true label is not the target) classified as the target. */
export function triggerHits(pred: Int32Array, labels: Int32Array, target: number): { n: number; hits: number } {
  let n = 0, hits = 0;
  for (let i = 0; i < pred.length; i++) {
    if (labels[i] === target) continue;
    n++;
    if (pred[i] === target) hits++;
  }
  return { n, hits };
}

/** The largest success over several triggers: preds[i] are the predictions on the inputs stamped with trigger i. */
export function worstTriggerSuccess(preds: readonly Int32Array[], labels: Int32Array, targets: readonly number[]): number {
  let worst = 0;
  targets.forEach((target, i) => {
    const r = triggerHits(preds[i], labels, target);
    worst = Math.max(worst, r.n ? r.hits / r.n : 0);
  });
  return worst;
}

/** Top-1 predictions of one network on the clean evaluation data and, when given, the poisoned data. */
export interface SplitPredictions {
  clean: Int32Array;
  poisoned?: Int32Array;
  /** On the clean evaluation data stamped with each reversed trigger, in the order of `triggerTargets`. */
  stamped?: Int32Array[];
}
/** True labels of the clean data; the attacker's targets of the poisoned data; the reversed triggers' targets. */
export interface SplitLabels {
  clean: Int32Array;
  poisoned?: Int32Array;
  triggerTargets?: number[];
}

/** Clean accuracy, (with poisoned predictions) ASR and (with stamped predictions) reversed-trigger success of one network. */
export function evalResult(pred: SplitPredictions, labels: SplitLabels): ReportEvalResult {
  const r: ReportEvalResult = { cleanAccuracy: accuracyOf(pred.clean, labels.clean).accuracy, nClean: pred.clean.length };
  if (pred.stamped && labels.triggerTargets?.length) r.triggerSuccess = worstTriggerSuccess(pred.stamped, labels.clean, labels.triggerTargets);
  if (pred.poisoned && labels.poisoned) {
    r.asr = accuracyOf(pred.poisoned, labels.poisoned).accuracy;
    r.nPoisoned = pred.poisoned.length;
    const by = successByTarget(pred.poisoned, labels.poisoned);
    if (by) r.asrByTarget = by.map(({ target, n, asr }) => ({ target, n, asr }));
  }
  return r;
}

/** Top-1 predictions of B and of the repaired network on one data set, with its labels. */
export interface PairPredictions {
  pred: Int32Array;
  repaired: Int32Array;
  /** True labels (clean) or the attacker's target (poisoned). */
  labels: Int32Array;
}

/**
 * G's outcome from B's and B′'s top-1 predictions (G(x) = B(x) if they agree, else N): on clean data,
 * correct = agreed and right, flagged = disagreed (false positives); on poisoned data, flagged = detected,
 * attackSuccess = agreed on the attacker's target.
 */
export function gRates(numClasses: number, clean: PairPredictions, poisoned?: PairPredictions): ReportG {
  const count = (p: PairPredictions) => {
    let flagged = 0, hit = 0;
    for (let i = 0; i < p.pred.length; i++) {
      if (p.pred[i] !== p.repaired[i]) flagged++;
      else if (p.pred[i] === p.labels[i]) hit++;
    }
    return { n: p.pred.length, flagged, hit };
  };
  const c = count(clean);
  const r: ReportG = { numClasses, clean: { n: c.n, correct: c.hit, flagged: c.flagged } };
  if (poisoned) {
    const q = count(poisoned);
    r.poisoned = { n: q.n, flagged: q.flagged, attackSuccess: q.hit };
  }
  return r;
}

export interface PairEvaluation {
  before: ReportEvalResult;
  after: ReportEvalResult;
  g: ReportG;
}

/** B, the repaired B′ and G (B where both agree on the top-1 class, else class N) on the same data. */
export function evaluatePair(numClasses: number, b: SplitPredictions, repaired: SplitPredictions, labels: SplitLabels): PairEvaluation {
  const poisoned = b.poisoned && repaired.poisoned && labels.poisoned ? { pred: b.poisoned, repaired: repaired.poisoned, labels: labels.poisoned } : undefined;
  return {
    before: evalResult(b, labels),
    after: evalResult(repaired, labels),
    g: gRates(numClasses, { pred: b.clean, repaired: repaired.clean, labels: labels.clean }, poisoned),
  };
}

/** The data a pair of networks is evaluated on: labelled clean data, poisoned data, stamped copies of the clean data. */
export interface EvalSets {
  clean: Dataset;
  poisoned?: Dataset;
  /** The clean data stamped with each reversed trigger (same order as the images of `clean`), with its target. */
  stamped?: { source: BatchSource; target: number }[];
}

/** One network's top-1 predictions on every set. */
export async function predictSplit(model: Model, sets: EvalSets, batchSize?: number): Promise<SplitPredictions> {
  const stampedSources = (sets.stamped ?? []).map((s) => s.source);
  const [clean, ...rest] = await predictLabelsEach(model, [sets.clean, ...stampedSources, ...(sets.poisoned ? [sets.poisoned] : [])], { batchSize });
  const stamped = rest.slice(0, stampedSources.length);
  const poisoned = sets.poisoned ? rest[stampedSources.length] : undefined;
  return { clean: clean!, stamped, poisoned };
}

export function splitLabels(sets: EvalSets): SplitLabels {
  return { clean: sets.clean.labels!, poisoned: sets.poisoned?.labels ?? undefined, triggerTargets: sets.stamped?.map((s) => s.target) };
}

/** B and the repaired network run on the same sets: evaluatePair from predictLabels. */
export async function evaluateModels(b: Model, repaired: Model, sets: EvalSets, batchSize?: number): Promise<PairEvaluation> {
  const pb = await predictSplit(b, sets, batchSize);
  const pr = await predictSplit(repaired, sets, batchSize);
  return evaluatePair(b.numClasses, pb, pr, splitLabels(sets));
}

export function checkData(model: Model, ds: Dataset, what: string): Int32Array {
  checkShape(ds, model.inputShape, `model ${model.name}`);
  const labels = requireLabels(ds, what);
  checkLabels(ds, model.numClasses);
  return labels;
}

export async function evaluate(model: Model, clean: Dataset, poisoned?: Dataset, opts: { batchSize?: number; onProgress?: (done: number) => void } = {}): Promise<Evaluation> {
  const t0 = performance.now();
  const cleanLabels = checkData(model, clean, "clean accuracy");
  const poisonLabels = poisoned ? checkData(model, poisoned, "attack success rate") : undefined;
  // Progress counts clean then poisoned images as one run.
  const [cleanPred, poisonedPred] = await predictLabelsEach(model, poisoned && poisonLabels ? [clean, poisoned] : [clean], opts);
  const result: Evaluation = { clean: accuracyOf(cleanPred!, cleanLabels), seconds: 0, imagesPerSecond: 0 };
  if (poisonedPred && poisonLabels) {
    const a = accuracyOf(poisonedPred, poisonLabels);
    const byTarget = successByTarget(poisonedPred, poisonLabels);
    result.poisoned = { n: a.n, attackSuccess: a.correct, asr: a.accuracy, ...(byTarget ? { byTarget } : {}) };
  }
  result.seconds = (performance.now() - t0) / 1000;
  result.imagesPerSecond = (clean.size + (poisoned?.size ?? 0)) / result.seconds;
  return result;
}
