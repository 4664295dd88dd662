// Clean accuracy and attack success rate (ASR). CSAW convention: a poisoned file's stored label is the
// attacker's target, so ASR is the share of poisoned inputs classified as their stored label.
//
// One routine counts correct predictions (countCorrect); evalResult turns one network's predictions into the
// report's accuracy/ASR, evaluatePair gives B, B′ and G from both networks' predictions. Where predictions come
// from is the caller's business: predictLabels on a Dataset, or the pruning engine's cached fast path.
import { gRates } from "../defenses/g-model.js";
import type { Dataset } from "../io/dataset.js";
import { checkLabels, checkShape, requireLabels } from "../io/dataset.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { ReportEvalResult, ReportG } from "../report/types.js";

export interface Accuracy {
  n: number;
  correct: number;
  accuracy: number;
}

export interface Evaluation {
  clean: Accuracy;
  /** Poisoned inputs classified as the label stored with them. */
  poisoned?: { n: number; attackSuccess: number; asr: number };
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

/** Top-1 predictions of one network on the clean evaluation data and, when given, the poisoned data. */
export interface SplitPredictions {
  clean: Int32Array;
  poisoned?: Int32Array;
}
/** True labels of the clean data; the attacker's targets of the poisoned data. */
export type SplitLabels = SplitPredictions;

/** Clean accuracy and (with poisoned predictions) ASR of one network. */
export function evalResult(pred: SplitPredictions, labels: SplitLabels): ReportEvalResult {
  const r: ReportEvalResult = { cleanAccuracy: accuracyOf(pred.clean, labels.clean).accuracy, nClean: pred.clean.length };
  if (pred.poisoned && labels.poisoned) {
    r.asr = accuracyOf(pred.poisoned, labels.poisoned).accuracy;
    r.nPoisoned = pred.poisoned.length;
  }
  return r;
}

/** B, the repaired B′ and G (B where both agree on the top-1 class, else class N) on the same data. */
export function evaluatePair(numClasses: number, b: SplitPredictions, repaired: SplitPredictions, labels: SplitLabels): { before: ReportEvalResult; after: ReportEvalResult; g: ReportG } {
  const poisoned = b.poisoned && repaired.poisoned && labels.poisoned ? { pred: b.poisoned, repaired: repaired.poisoned, labels: labels.poisoned } : undefined;
  return {
    before: evalResult(b, labels),
    after: evalResult(repaired, labels),
    g: gRates(numClasses, { pred: b.clean, repaired: repaired.clean, labels: labels.clean }, poisoned),
  };
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
  const cleanPred = await predictLabels(model, clean, opts);
  const result: Evaluation = { clean: accuracyOf(cleanPred, cleanLabels), seconds: 0, imagesPerSecond: 0 };
  if (poisoned && poisonLabels) {
    const onProgress = opts.onProgress && ((done: number) => opts.onProgress!(clean.size + done));
    const a = accuracyOf(await predictLabels(model, poisoned, { ...opts, onProgress }), poisonLabels);
    result.poisoned = { n: a.n, attackSuccess: a.correct, asr: a.accuracy };
  }
  result.seconds = (performance.now() - t0) / 1000;
  result.imagesPerSecond = (clean.size + (poisoned?.size ?? 0)) / result.seconds;
  return result;
}
