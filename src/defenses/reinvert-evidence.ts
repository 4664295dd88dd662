// Re-inversion evidence: does a backdoor survive a repair? Neural Cleanse's reversal is run again, from scratch,
// on the repaired network for the flagged labels only (mask family, two starts: reinvertEvidence),
// on the data the repair itself was given; the fresh trigger is then stamped on the held-out selection split.
//
// Why: the triggers reversed on B before the repair are what every trigger-based repair unlearns, so after any
// of them they fail (1–3%) while the real trigger may still work (multi_trigger →1: 40% after plain
// unlearning, 1–2% after prune-then-unlearn). A backdoor that survives is found again as a mask smaller than
// the label's natural ones; a removed one is not, and the reversal falls back to a natural label-to-label trigger.
//
// Each fresh mask is placed among B's natural labels (FlagReference: the unflagged reference labels): its anomaly
// index on the log norm, the scale detection flags on (positive: smaller than the typical label). It counts in
// the attack score when it is as small as one Neural Cleanse flags on B (the scan's own L1 `bound`, index 2 over
// its reference labels, flagged ones included); then its success on the selection split
// is the label's attack figure if higher than the stamped trigger's. Every fresh trigger reaches ~95% success
// at some size, so success alone says nothing, and scaling a large fresh mask down to a backdoor's size was
// measured to rank repairs the wrong way round (badnet_patch, seed 0: prune-then-unlearn's scaled fresh
// trigger 8.5% against unlearning's 4.7%, real ASR 2.8% against 50.7%; docs/repairs.md). The index also ranks
// the tied candidates (auto-select.ts, moreAnomalousFresh): a backdoor half removed (40% real ASR) comes back at
// index 1.7–2.4, under the flag bar but above the 0.92 or less of the zoo repairs that left under 3%.
//
// The schedule is detection's two starts without its further starts: with one start (150, 300 or 600 steps
// alike) the signal is lost (multi_trigger seed 0: unlearning's label 1 at index 0.41 against 2.09 with two
// starts); the further starts gave the same indices in 12 of 18 cases at 5–6× the time (the bundled example: 9 s
// against 0.6 s). docs/repairs.md "Re-inversion on detection's schedule".
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { Dataset } from "../io/dataset.js";
import { triggerHits } from "../eval/evaluate.js";
import { stampedSource } from "./nc-mitigation.js";
import { detectBackdoor, type NeuralCleanseResult } from "./neural-cleanse.js";
import { MAD_CONSISTENCY, mad, median } from "./mad.js";
import { flagThresholdNorm } from "./nc-schedule.js";

/** One flagged label's re-inversion on a repaired network. */
export interface ReinvertedLabel {
  label: number;
  /** L1 norm of the fresh mask. */
  l1Norm: number;
  /** B's flag threshold norm: the fresh trigger counts when l1Norm is at most this. */
  bound: number;
  /** Anomaly index of l1Norm among B's unflagged reference labels (log scale; positive: smaller than their median). */
  index: number;
  /** Success of the fresh trigger on the selection split (images not of the label). */
  success: number;
  /** Whether the fresh trigger counts in the attack score (l1Norm <= bound). */
  counts: boolean;
}

export interface ReinvertOptions {
  inputScale: number;
  /** Seed of the fresh reversal (its image split, batch order and initialisation). */
  seed: number;
  batchSize?: number;
}

/** What a fresh trigger's norm is read against: B's flag bound, and B's natural labels' norms. */
export interface FlagReference {
  /**
   * The largest L1 norm B's scan would flag: anomaly index 2 against the median and MAD of ln L1 over its
   * reference labels as the scan computed them (flagged ones included). A fresh trigger within it counts.
   */
  bound: number;
  /** Median of ln L1 over B's unflagged reference labels (the natural labels). */
  logMedian: number;
  /** 1.4826 · MAD of ln L1 over the same labels (a standard deviation's estimate). */
  logSigma: number;
}

/** Anomaly index of a norm among B's natural labels (positive: smaller than their median; 0 spread: ±Infinity off it). */
export function freshIndex(ref: Pick<FlagReference, "logMedian" | "logSigma">, l1Norm: number): number {
  const d = ref.logMedian - Math.log(l1Norm);
  if (ref.logSigma > 0) return d / ref.logSigma;
  return d === 0 ? 0 : d > 0 ? Infinity : -Infinity;
}

/**
 * Re-inverts `labels` on `model` (a repaired network) from `fit` (the repair's own data) with Neural Cleanse
 * (mask family, two starts, no head shift) and scores each fresh trigger on `selection`; it is placed
 * among B's natural labels (index) and counts when its norm is within B's flag bound.
 */
export async function reinvertEvidence(model: Model, fit: Dataset, selection: Dataset, labels: readonly number[], ref: FlagReference, o: ReinvertOptions): Promise<ReinvertedLabel[]> {
  if (labels.length === 0) return [];
  // Two starts as detection makes, without its further starts (those cost 5–6× the time on multi_trigger and
  // moved 6 of 18 indices, none across the tie rule's floor: docs/repairs.md).
  const r = await detectBackdoor(model, fit, { inputScale: o.inputScale, labels: [...labels], families: ["mask"], seed: o.seed, headShift: false, restarts: 2, moreStarts: 0, keepTriggers: true });
  const bound = ref.bound;
  const y = selection.labels!;
  const out: ReinvertedLabel[] = [];
  for (const l of labels) {
    const t = r.allTriggers?.find((x) => x.label === l);
    const res = r.labels.find((x) => x.label === l);
    if (!t || !res) throw new Error(`reinvertEvidence: the scan returned no trigger for label ${l}`);
    const l1Norm = res.mask?.l1Norm ?? res.l1Norm;
    const h = triggerHits(await predictLabels(model, stampedSource(selection, t), { batchSize: o.batchSize }), y, l);
    out.push({ label: l, l1Norm, bound, index: freshIndex(ref, l1Norm), success: h.n ? h.hits / h.n : 0, counts: l1Norm <= bound });
  }
  return out;
}

/**
 * B's flag bound and natural labels as a FlagReference. The bound is the scan's own (its reference labels, every
 * scanned label when none is marked, flagged ones included): a fresh trigger counts where Neural Cleanse would
 * have flagged it on B. The index is read among the unflagged reference labels (every unflagged label when none
 * is marked; every label when all are flagged): the flagged labels are what is being measured. On multi_trigger
 * (seed 0, inside `repair`) its two targets at L1 3.6 and 16.7 among ten labels widen the spread of ln L1
 * (1.4826 MAD) from 0.56 to 1.00, which would shrink every fresh trigger's index by nearly half. The bound keeps
 * the scan's statistics: against the natural labels alone it rose from 5.4 to 15.0 there, and on seed 3 every
 * candidate's fresh trigger then counted (96% success each), which left clean accuracy alone to choose.
 */
export function flagReference(det: Pick<NeuralCleanseResult, "labels" | "flagged">): FlagReference {
  const normOf = (l: NeuralCleanseResult["labels"][number]) => l.mask?.l1Norm ?? l.l1Norm;
  const refs = det.labels.filter((l) => l.reference);
  const bound = flagThresholdNorm((refs.length ? refs : det.labels).map(normOf));
  const natural = det.labels.filter((l) => !det.flagged.includes(l.label));
  const naturalRefs = natural.filter((l) => l.reference);
  const pool = naturalRefs.length ? naturalRefs : natural.length ? natural : det.labels;
  const logs = pool.map(normOf).filter((v) => v > 0 && Number.isFinite(v)).map(Math.log);
  if (logs.length === 0) return { bound, logMedian: Infinity, logSigma: 0 };
  const m = median(logs);
  return { bound, logMedian: m, logSigma: MAD_CONSISTENCY * mad(logs, m) };
}
