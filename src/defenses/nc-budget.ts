// Neural Cleanse's default budget from the model's cost. A fixed 300 steps × 32 images × 2 starts per label is
// cheap on a Fashion-MNIST CNN (about 1 M multiply-accumulates per image) and takes hours on a full-width
// PreAct-ResNet18 (about 560 M): the work of a scan is image passes × forward MACs, so the default steps ×
// batch × starts shrink with the MACs until the scan's full-budget work fits SCAN_MACS. Explicit
// --steps/--batch-size/--restarts always win.
import { cacheBatch } from "../runtime/cache-batch.js";

/** The budget of a small model: 300 steps on 32 images from 2 starts per label (the paper's scale). */
export const FULL_BUDGET = { steps: 300, batchSize: 32, restarts: 2 } as const;
/**
 * Forward multiply-accumulates a scan may spend on full-budget work, summed over labels, families and starts
 * (one image pass = one forward + one backward, counted as its forward MACs). 1.4e12 keeps the Fashion zoo
 * CNN at FULL_BUDGET and brings a 10-label full-width PreAct-ResNet18 scan to about a minute on 2 cores.
 */
export const SCAN_MACS = 1.4e12;
/** Labels whose full budget the scan pays in full: the reference labels of the bounded schedule. */
export const FULL_LABELS = 16;
/**
 * What every further label costs, as a fraction of a full budget: its first look and its share of the rungs
 * (the bounded schedule keeps at most a tenth of the labels per rung, and stops hopeless ones early).
 */
export const OTHER_LABEL_SHARE = 1 / 16;
/** Steps per image of a step's batch at the full budget (300 / 32): budgets keep this shape as they shrink. */
const STEPS_PER_BATCH = FULL_BUDGET.steps / FULL_BUDGET.batchSize;
/** Fewest passes per start for a second start to be worth it (a single short run beats two shorter ones). */
const MIN_PASSES_PER_START = 240;
const MIN_STEPS = 20;
const MIN_BATCH = 2;

// Moved to graph/macs.ts (training and the runtime use it too); re-exported for existing importers.
export { forwardMacs, graphMacs } from "../graph/macs.js";

/**
 * Labels one Neural Cleanse step runs together: as many as keep L × batch images' largest activation near a
 * core's cache (src/runtime/cache-batch.ts), 1 to `cap`. Each label's run is independent of the others in its
 * call, so this only changes speed.
 */
export function labelSlots(activation: number, batch: number, cap: number): number {
  return cacheBatch(activation, batch, cap);
}

export interface NcBudget {
  steps: number;
  batchSize: number;
  restarts: number;
  /** Image passes per label and family at the full budget (steps × batch × starts). */
  passesPerLabel: number;
  /** Why: the figures it came from, for the output and result.json. */
  reason: string;
}

export interface BudgetContext {
  /** Labels scanned. */
  labels: number;
  /** Trigger families scanned (each is a scan of its own). */
  families: number;
}

/** The labels a scan pays a full budget for: all of a small scan; the reference labels plus a share of the rest. */
export function effectiveLabels(labels: number): number {
  return labels <= FULL_LABELS ? labels : FULL_LABELS + (labels - FULL_LABELS) * OTHER_LABEL_SHARE;
}

/**
 * The default steps × batch × starts for a model of `macs` forward MACs: FULL_BUDGET when it fits SCAN_MACS,
 * else the largest budget that does, with steps ≈ 9.4 × batch (FULL_BUDGET's shape), a batch that is a power
 * of 2, and one start when two would leave fewer than MIN_PASSES_PER_START passes each.
 */
export function defaultBudget(macs: number, ctx: BudgetContext): NcBudget {
  if (!(macs > 0)) throw new Error(`defaultBudget: MACs must be positive, got ${macs}`);
  const full = FULL_BUDGET.steps * FULL_BUDGET.batchSize * FULL_BUDGET.restarts;
  const nEff = effectiveLabels(ctx.labels) * Math.max(1, ctx.families);
  const fits = SCAN_MACS / (macs * nEff);
  const why = `${fmtMacs(macs)} MACs per image, ${ctx.labels} labels x ${ctx.families} families (${nEff.toFixed(0)} full budgets)`;
  if (fits >= full) return { ...FULL_BUDGET, passesPerLabel: full, reason: `${why}: the full budget fits ${fmtMacs(SCAN_MACS)} MACs` };
  const restarts = fits >= 2 * MIN_PASSES_PER_START ? 2 : 1;
  const perStart = fits / restarts;
  const batch = Math.min(FULL_BUDGET.batchSize, Math.max(MIN_BATCH, 2 ** Math.round(Math.log2(Math.sqrt(perStart / STEPS_PER_BATCH)))));
  const steps = Math.min(FULL_BUDGET.steps, Math.max(MIN_STEPS, Math.round(perStart / batch)));
  return {
    steps,
    batchSize: batch,
    restarts,
    passesPerLabel: steps * batch * restarts,
    reason: `${why}: ${Math.round(fits)} passes per label fit ${fmtMacs(SCAN_MACS)} MACs`,
  };
}

/** 1.2e9 → "1.2G". */
export function fmtMacs(x: number): string {
  const units: [number, string][] = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [v, u] of units) if (x >= v) return `${(x / v).toFixed(x / v < 10 ? 1 : 0)}${u}`;
  return x.toFixed(0);
}
