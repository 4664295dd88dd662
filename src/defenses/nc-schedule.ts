// The bounded schedule of a Neural Cleanse scan over many labels (after K-Arm, Shen et al. ICML 2021: spend
// optimization steps on the labels that can still be outliers). About 16 seeded reference labels run the full
// budget first: their final norms fix the median and MAD (so the flag threshold), and their trajectories show
// how much a norm still falls between a checkpoint and the end. Every other label then gets a short first
// look; after each rung at most a tenth of the labels go on, and a label stops at once when its elimination
// bound says it cannot end below the flag threshold even if it fell further than any reference label did.
import { ANOMALY_THRESHOLD, MAD_CONSISTENCY, median } from "./mad.js";

/** Share of the labels a rung keeps at most. */
export const KEEP_FRACTION = 1 / 10;
/**
 * Safety factor on the largest further decrease the reference labels showed: a label is eliminated only when
 * it would stay above the threshold after falling this much more again (a backdoor target can fall faster).
 */
export const DECREASE_MARGIN = 0.5;

/** A rung of the bounded schedule: labels still running go on to `steps` steps in total on batches of `batch`, then at most `keep` go on. */
export interface BoundRung {
  steps: number;
  batch: number;
  keep: number;
}

/**
 * The rungs for n screened labels with a full budget of steps × batch: a first look of steps/16 (at least 4)
 * on a quarter of the batch (at least 2), then rungs of 4× the steps and 2× the batch while below the full
 * budget; each keeps at most ⌈KEEP_FRACTION·alive⌉ (at least `minKeep`). The labels left after the last rung
 * get the full budget. None when n ≤ minKeep.
 */
export function boundRungs(n: number, minKeep: number, full: { steps: number; batchSize: number }): BoundRung[] {
  if (n <= minKeep) return [];
  const rungs: BoundRung[] = [];
  let steps = Math.max(4, Math.round(full.steps / 16));
  let batch = Math.max(2, Math.floor(full.batchSize / 4));
  let alive = n;
  while (steps < full.steps && alive > minKeep) {
    const keep = Math.max(minKeep, Math.ceil(alive * KEEP_FRACTION));
    rungs.push({ steps, batch: Math.min(batch, full.batchSize), keep: Math.min(keep, alive) });
    alive = Math.min(keep, alive);
    steps *= 4;
    batch *= 2;
  }
  return rungs;
}

/** The norm below which a label is a small-side outlier (anomaly index > 2) against the reference norms, on ln norm. */
export function flagThresholdNorm(referenceNorms: readonly number[]): number {
  const logs = referenceNorms.filter((v) => v > 0 && Number.isFinite(v)).map(Math.log);
  if (logs.length === 0) return Infinity;
  const med = median(logs);
  const m = median(logs.map((x) => Math.abs(x - med)));
  return Math.exp(med - ANOMALY_THRESHOLD * MAD_CONSISTENCY * m);
}

/**
 * The largest relative further decrease the reference labels showed from each checkpoint to their final norm:
 * per checkpoint j, min over references of final / normAt[j] (at most 1). A reference stopped before a
 * checkpoint counts its final norm there.
 */
export function furtherDecrease(normAt: readonly (readonly number[])[], finals: readonly number[], checkpoints: number): number[] {
  const out: number[] = [];
  for (let j = 0; j < checkpoints; j++) {
    let lowest = 1;
    normAt.forEach((v, i) => {
      const at = j < v.length ? v[j] : finals[i];
      if (at > 0 && Number.isFinite(at) && Number.isFinite(finals[i])) lowest = Math.min(lowest, finals[i] / at);
    });
    out.push(lowest);
  }
  return out;
}

/**
 * Elimination bound: the smallest final norm a label at `norm` can still reach, allowing the reference labels'
 * largest further decrease `decrease` and the safety factor DECREASE_MARGIN. It is eliminated when that stays
 * above the flag threshold.
 */
export function eliminationBound(norm: number, decrease: number, margin = DECREASE_MARGIN): number {
  return norm * decrease * margin;
}

/**
 * The labels that go on after a rung: not eliminated (eliminationBound ≤ threshold), reached ones first, then
 * by norm, at most `keep` of them. Returns indices into `norms`, ascending.
 */
export function pickBounded(norms: readonly number[], reached: readonly boolean[], keep: number, threshold: number, decrease: number, margin = DECREASE_MARGIN): number[] {
  const idx = norms.map((_, i) => i).filter((i) => !(eliminationBound(norms[i], decrease, margin) > threshold));
  idx.sort((p, q) => Number(reached[q]) - Number(reached[p]) || norms[p] - norms[q]);
  return idx.slice(0, keep).sort((p, q) => p - q);
}
