// Re-inversion evidence: does a backdoor survive a repair? Neural Cleanse's reversal is run again, from scratch,
// on the repaired network for the flagged labels only (short schedule: mask family, one start, 150 steps:
// reinvertTriggers), on the data the repair itself was given; the fresh trigger is then stamped on the held-out
// selection split.
//
// Why: the triggers reversed on B before the repair are what every trigger-based repair unlearns, so after any
// of them they fail (1–3%) while the real trigger may still work (multi_trigger →1: 64.5% after plain
// unlearning, 1–3% after prune-then-unlearn). A backdoor that survives may be found again by a fresh reversal,
// as a small mask; a removed one is not, and the reversal falls back to a natural label-to-label trigger.
//
// The fresh trigger counts only when its mask is as small as one Neural Cleanse flags on B (L1 at most B's flag
// threshold: median and MAD of B's reference labels, anomaly index 2); then its success on the selection split
// is the label's attack figure if higher than the stamped trigger's. Every fresh trigger reaches ~95% success
// at some size, so success alone says nothing, and scaling a large fresh mask down to a backdoor's size was
// measured to rank repairs the wrong way round (badnet_patch, seed 0: prune-then-unlearn's scaled fresh
// trigger 8.5% against unlearning's 4.7%, real ASR 2.8% against 50.7%; docs/repairs.md).
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { Dataset } from "../io/dataset.js";
import { triggerHits } from "../eval/evaluate.js";
import { reinvertTriggers, stampedSource } from "./nc-mitigation.js";
import type { NeuralCleanseResult } from "./neural-cleanse.js";
import { flagThresholdNorm } from "./nc-schedule.js";

/** One flagged label's re-inversion on a repaired network. */
export interface ReinvertedLabel {
  label: number;
  /** L1 norm of the fresh mask. */
  l1Norm: number;
  /** B's flag threshold norm: the fresh trigger counts when l1Norm is at most this. */
  bound: number;
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

/**
 * Re-inverts `labels` on `model` (a repaired network) from `fit` (the repair's own data) and scores each fresh
 * trigger on `selection`; it counts when its norm is at most `bound`.
 */
export async function reinvertEvidence(model: Model, fit: Dataset, selection: Dataset, labels: readonly number[], bound: number, o: ReinvertOptions): Promise<ReinvertedLabel[]> {
  if (labels.length === 0) return [];
  const fresh = await reinvertTriggers(model, fit, [...labels], o.inputScale, o.seed);
  const y = selection.labels!;
  const out: ReinvertedLabel[] = [];
  for (const t of fresh) {
    const h = triggerHits(await predictLabels(model, stampedSource(selection, t), { batchSize: o.batchSize }), y, t.label);
    out.push({ label: t.label, l1Norm: t.l1Norm, bound, success: h.n ? h.hits / h.n : 0, counts: t.l1Norm <= bound });
  }
  return out;
}

/**
 * B's flag threshold on the mask norm: the largest L1 norm the scan would flag (anomaly index 2 against the
 * median and MAD of the log norms of its reference labels, all scanned labels when none is marked).
 */
export function flagBound(det: Pick<NeuralCleanseResult, "labels">): number {
  const refs = det.labels.filter((l) => l.reference);
  return flagThresholdNorm((refs.length ? refs : det.labels).map((l) => l.mask?.l1Norm ?? l.l1Norm));
}
