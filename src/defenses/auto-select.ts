// `repair --defense auto`: run a few candidate repairs and keep the one the evidence favours. The evidence is
// only what a defender has: a selection split of the clean data that no candidate (and no detection) sees,
// Neural Cleanse's reversed triggers stamped on it, and a universal adversarial perturbation found on each
// repaired network. The poisoned test file is never an input here.
//
// Rule: candidates whose selection clean accuracy is within `tolerance` (1 point) of the best are eligible;
// among them the lowest attack score wins, attack = max(reversed-trigger success, adversarial success);
// ties go to the higher clean accuracy, then to the earlier candidate.
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { ReportSelection } from "../report/types.js";
import { mulberry32, shuffled } from "../util/random.js";
import { pickRows } from "./g-calibrate.js";
import { perturbedDataset, universalPerturbation } from "./ibau.js";
import { countCorrect, triggerHits } from "../eval/evaluate.js";
import { stampedSource, type ReversedTrigger } from "./nc-mitigation.js";

/** The candidate set: unlearning only when a label is flagged (it needs the triggers). */
export const autoCandidates = (flagged: readonly number[]): string[] => (flagged.length ? ["unlearn", "fine-prune", "ibau"] : ["fine-prune", "ibau"]);

export interface CandidateScore {
  defense: string;
  /** Clean accuracy on the selection split. */
  cleanAccuracy: number;
  /** Worst reversed-trigger success over the triggers (stamped selection images not of the target); undefined without triggers. */
  triggerSuccess?: number;
  /** Share of the selection images the network gets right that one universal perturbation flips. */
  adversarialSuccess: number;
  seconds: number;
}

/** Splits clean data into what candidates may use (`fit`) and the held-out `selection` part (seeded). */
export function splitForSelection(data: Dataset, fraction: number, seed = 0): { fit: Dataset; selection: Dataset } {
  const n = data.size;
  const k = Math.round(fraction * n);
  if (k < 1 || k > n / 2) throw new Error(`selection split of ${fraction} leaves ${k} of ${n} images`);
  const order = shuffled(n, mulberry32(seed + 77291));
  const sel = Int32Array.from(order.slice(0, k)).sort();
  const fit = Int32Array.from(order.slice(k)).sort();
  return { fit: pickRows(data, fit, `${data.name} (candidates' part)`), selection: pickRows(data, sel, `${data.name} (selection part)`) };
}

export interface ScoreOptions {
  triggers: readonly ReversedTrigger[];
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
  for (const t of o.triggers) {
    const r = triggerHits(await predictLabels(m, stampedSource(selection, t), { batchSize: o.batchSize }), labels, t.label);
    triggerSuccess = Math.max(triggerSuccess ?? 0, r.n ? r.hits / r.n : 0);
  }
  const per = selection.shape[0] * selection.shape[1] * selection.shape[2];
  const radius = (o.rms ?? 0.1) * (255 / o.inputScale) * Math.sqrt(per);
  const x = selection.read(0, selection.size);
  const y = Int32Array.from(labels);
  const delta = await universalPerturbation(m, x, y, radius, o.steps ?? 20, o.batchSize ?? 64, mulberry32((o.seed ?? 0) + 1913));
  const adv = await predictLabels(m, perturbedDataset(memoryDataset(selection.name, selection.shape, x, y), delta), { batchSize: o.batchSize });
  let right = 0, flipped = 0;
  for (let i = 0; i < y.length; i++) {
    if (pred[i] !== y[i]) continue;
    right++;
    if (adv[i] !== y[i]) flipped++;
  }
  return { defense, cleanAccuracy, triggerSuccess, adversarialSuccess: right ? flipped / right : 0, seconds };
}

const attackOf = (s: CandidateScore): number => Math.max(s.triggerSuccess ?? 0, s.adversarialSuccess);

/** The documented rule (see the file's head): index of the chosen candidate and why. */
export function chooseCandidate(scores: readonly CandidateScore[], tolerance = 0.01): { index: number; reason: string } {
  if (scores.length === 0) throw new Error("no candidate to choose from");
  const best = Math.max(...scores.map((s) => s.cleanAccuracy));
  let index = -1;
  scores.forEach((s, i) => {
    if (s.cleanAccuracy < best - tolerance - 1e-12) return;
    if (index < 0) return void (index = i);
    const c = scores[index];
    const a = attackOf(s), b = attackOf(c);
    if (a < b || (a === b && s.cleanAccuracy > c.cleanAccuracy)) index = i;
  });
  const s = scores[index];
  const p = (v: number) => `${(100 * v).toFixed(1)}%`;
  const others = scores.length - 1;
  const reason =
    `${s.defense}: lowest attack success (max of reversed-trigger ${s.triggerSuccess === undefined ? "—" : p(s.triggerSuccess)} and adversarial ${p(s.adversarialSuccess)}) ` +
    `among the candidates within ${(100 * tolerance).toFixed(1)} points of the best selection clean accuracy (${p(best)}; its own ${p(s.cleanAccuracy)})` +
    (others ? `, over ${others} other candidate${others > 1 ? "s" : ""}` : "");
  return { index, reason };
}

/** The report's `selection` section. */
export function selectionSection(scores: readonly CandidateScore[], chosen: number, reason: string, selectionSize: number, tolerance: number, skipped: string[]): ReportSelection {
  return {
    rule: `eligible: selection clean accuracy within ${tolerance} of the best; chosen: lowest max(triggerSuccess, adversarialSuccess), then highest clean accuracy`,
    selectionSize,
    candidates: scores.map((s) => ({ defense: s.defense, cleanAccuracy: s.cleanAccuracy, ...(s.triggerSuccess === undefined ? {} : { triggerSuccess: s.triggerSuccess }), adversarialSuccess: s.adversarialSuccess, seconds: s.seconds })),
    chosen: scores[chosen].defense,
    reason,
    ...(skipped.length ? { skipped } : {}),
  };
}
