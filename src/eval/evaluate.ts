// Clean accuracy and attack success rate (ASR). CSAW convention: a poisoned file's stored label is the
// attacker's target, so ASR is the share of poisoned inputs classified as their stored label.
import type { Dataset } from "../io/dataset.js";
import { checkLabels, checkShape, requireLabels } from "../io/dataset.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";

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

export function accuracyOf(pred: Int32Array, labels: Int32Array): Accuracy {
  let correct = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === labels[i]) correct++;
  return { n: pred.length, correct, accuracy: pred.length ? correct / pred.length : 0 };
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
