// Neural Cleanse (Wang et al., IEEE S&P 2019): for every candidate target label t, reverse-engineer the smallest
// trigger — a mask m (H×W in [0,1]) and a pattern Δ (C×H×W in the model's input range) — that sends clean
// images x to t when stamped as x' = (1−m)·x + m·Δ, by minimizing CE(f(x'), t) + λ·|m|₁. A backdoor target
// needs a much smaller trigger than the other labels, so its norm is an outlier on the small side of the
// median (anomaly index > 2, MAD-based, see mad.ts).
//
// Speed: one compiled onnxruntime graph steps a group of labels at once. Labels sit in "slots" of a batch of
// size L·B (L label slots, B clean images each, drawn from the run's own seeded stream), forward + backward to
// the mask/pattern + the Adam update all happen inside the graph, and the model's weights are constants. A
// slot is refilled with the next label as soon as its label finishes, so the batch stays full. Labels are
// scheduled in the spirit of K-Arm (Shen et al., ICML 2021): by default (nc-schedule.ts) a seeded set of
// reference labels runs the full budget first and sets the median, the MAD and the flag threshold; every other
// label gets a first look, rungs keep at most a tenth and drop labels an elimination bound rules out, and the
// last candidates get the full budget (nc-evidence.ts decides the flags). The budget itself (steps × batch ×
// starts per label) comes from the model's cost (nc-budget.ts).
//
// Trigger families: the paper's per-pixel mask ("mask") cannot write a blended trigger (Chen et al. 2017: a
// whole-image pattern mixed in with a small weight α) compactly: as pixels it costs α·H·W, more than many a
// natural label's patch. So a second family ("blend") ties the mask to one α for the whole image; its norm is
// the same |m|₁ = α·H·W. Each family gets its own scan and its own MAD statistics; a label is flagged when
// it is an outlier in either.
//
// Restarts: the inversion is non-convex and a run sometimes settles on a large trigger where a small one
// exists (a backdoor target's true trigger is a narrow basin); every label of the full phase is optimized
// from `restarts` random starts and keeps its smallest successful trigger. Further starts go where a flag is at
// stake: on a scan without screening (every label in the shortlist: 10-class models), the labels whose best
// norm after those starts is below the reference labels' median get `moreStarts` more (default as many again),
// in the mask family only (MORE_STARTS_FAMILIES). More starts for every label found more targets on the
// Fashion-MNIST zoo but flagged a clean model: shrinking every natural label's norm shrinks the MAD as well.
// In the blend family further starts seldom found a smaller trigger for a target and mostly spread the natural
// labels' lower half, which raised the MAD and cost WaNet's target on a second zoo. On two zoos (110 scans,
// docs/neural-cleanse-measurements.md, 2026-12-04): every target flagged in 57 of 90 backdoored scans (55 with 2
// starts), 3 wrong flags (5), no clean scan flagged (1), for 1.25x the full phase on 10-class models.
import { createHash } from "node:crypto";
import { fail } from "../errors.js";
import { backward } from "../graph/autodiff.js";
import { attr, Graph, tensor,type TensorData } from "../graph/ir.js";
import { poolBeforeRelu } from "../graph/transforms.js";
import type { Dataset } from "../io/dataset.js";
import { checkLabels, checkShape, memoryDataset, pickRows } from "../io/dataset.js";
import { predictLabels } from "../model/forward.js";
import { countByLabel } from "../eval/evaluate.js";
import type { Model } from "../model/model.js";
import type { ReportNcLabel } from "../report/types.js";
import { Session, withSession } from "../runtime/session.js";
import { shuffled } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { embed } from "./g-model.js";
import { ANOMALY_THRESHOLD, median, normStats, type NormScale } from "./mad.js";
import { defaultBudget, forwardMacs, labelSlots } from "./nc-budget.js";
import { largestActivation } from "../runtime/cache-batch.js";
import { familyEvidence, FDR_LEVEL, MIN_HELD_OUT_SUCCESS, type EvidenceOptions, type LabelMeasure, type LoopRule, type NullDistribution } from "./nc-evidence.js";
import { boundRungs, flagThresholdNorm, furtherDecrease, pickBounded } from "./nc-schedule.js";
import { maskSpread } from "./nc-compact.js";
import { HEAD_SHIFT_FAMILIES, HEAD_SHIFT_MEASURED_FAMILIES, HEAD_SHIFT_VETO_FAMILIES, headShiftVeto, HEAD_SHIFT_MAX_IMAGES, HEAD_SHIFT_MIN_IMAGES, headShiftCandidates, headShiftedModel, headShiftVerdict, type HeadShiftMeasure } from "./head-shift-evidence.js";
import { SOURCE_SCALES, sourceCurves, transferCounts, type SourceCurve, type TriggerTransfer } from "./nc-sources.js";
import { gradientWork } from "../runtime/threads.js";

/** "mask": a per-pixel mask (the paper); "blend": one blend weight α for the whole image. */
export type TriggerFamily = "mask" | "blend";
export const TRIGGER_FAMILIES: readonly TriggerFamily[] = ["mask", "blend"];

/** The families whose labels below the reference median get further starts (see the head: not blend). */
export const MORE_STARTS_FAMILIES: readonly TriggerFamily[] = ["mask"];

export interface NeuralCleanseOptions {
  /** The model's input scale (pixels are divided by it): the pattern lives in [0, 255 / inputScale]. */
  inputScale: number;
  /** Labels to scan (default: all). */
  labels?: number[];
  /** Trigger families to scan (default both, mask first). */
  families?: TriggerFamily[];
  /** Random starts per label in the full phase; the smallest successful trigger is kept (default from the model's cost, nc-budget.ts: 2 on small models). */
  restarts?: number;
  /**
   * Further starts for each label whose best norm after `restarts` starts is below the reference labels'
   * median, on scans without screening, in MORE_STARTS_FAMILIES (default: `restarts` when it is 2 or more,
   * else 0; 0 turns it off).
   */
  moreStarts?: number;
  /** Scale of the norms the MAD statistics are computed on (default "log", see normStats in mad.ts). */
  scale?: NormScale;
  /** How screening budgets are spent (default "bound", see nc-schedule.ts; "halving" and "two-phase": screeningRungs). */
  schedule?: NcSchedule;
  /** Halving: the fraction 1/eta of the labels goes on after each rung, and the budget grows eta-fold (default 4). */
  eta?: number;
  /** False-discovery rate a flag must stay under (default 0.05, see nc-evidence.ts). */
  fdr?: number;
  /** Apply the natural-feature check and its second stage to the flags (default false, see nc-evidence.ts). */
  naturalCheck?: boolean;
  /**
   * Measure the natural-feature check's per-source curves (raw scores' `sources`) even with the check off, so
   * that saved scans can be rescored with it (default: naturalCheck). Off, the scan skips the stamping passes.
   */
  sourceCurves?: boolean;
  /** Return every label's reversed trigger in every family (`allTriggers`), for saving scans to analyse later (default false). */
  keepTriggers?: boolean;
  /** Record every full-phase start's norm and held-out success (`starts` of the raw scores), for rescoring saved scans with fewer starts (default false). */
  recordStarts?: boolean;
  /** Held-out attack success a flagged label's trigger needs (default 0.5; only with >= 5 held-out images). */
  minHeldOutSuccess?: number;
  /**
   * Measure the head-shift evidence (head-shift-evidence.ts: the mask-family triggers on B with its output
   * layer learned again by FST on the clean images but the held-out ones) and flag by it (default true; it needs
   * a linear output layer and at least HEAD_SHIFT_MIN_IMAGES held-out images, else it is skipped and the result
   * says why).
   */
  headShift?: boolean;
  /**
   * Reference labels: this many of the model's classes (a seeded choice, so every shard of a scan picks
   * the same) get the full budget whatever their screening norms, and set the median and MAD (default 16).
   * Without screening every label is a reference label.
   */
  reference?: number;
  /** Full optimization budget per label, in steps (default from the model's cost, nc-budget.ts: 300 on small models). */
  steps?: number;
  /** Screening budget per label, in steps: the first rung's (default 10). */
  screenSteps?: number;
  /** Clean images per step in the full phase (default from the model's cost, nc-budget.ts: 32 on small models; at most the optimization images). */
  batchSize?: number;
  /** Clean images per step in the first screening rung (default 4, at most the optimization images; doubling per rung). */
  screenBatchSize?: number;
  /** Labels optimized together in one graph run (default 32). */
  labelsPerRun?: number;
  /**
   * How many of the smallest screening norms get the full budget (default max(10, 1% of the labels)); labels
   * whose screening anomaly index is > 2 on the small side are added. When every label fits in the shortlist
   * the screening phase is skipped.
   */
  shortlist?: number;
  /**
   * Adam learning rate on the tanh parameters (default 0.2; betas 0.5 and 0.9 as in the paper's code). The paper
   * uses 0.1 and counts patience in epochs of many batches; here everything counts single steps, and a larger
   * step with a short patience brings the norms near their plateau within a screening budget.
   */
  lr?: number;
  /** Initial λ of the |m|₁ term (default 1e-3). */
  initLambda?: number;
  /** Attack success on the step's batch that counts as a working trigger (default 0.99, the paper's). */
  threshold?: number;
  /**
   * The same bar for mask-family triggers only (default: `threshold`). An experiment's knob (bench:detect
   * --mask-threshold): at 0.8 a patch target stands further apart, but so does a clean model's most natural
   * label, and the head shift, measured for 0.99 triggers, reads natural 0.8 triggers as backdoors
   * (docs/neural-cleanse-measurements.md).
   */
  maskThreshold?: number;
  /** Steps above/below the threshold before λ is raised (×1.5) or lowered (÷1.5^1.5) (default 3). */
  patience?: number;
  /**
   * Steps without a >0.1% smaller best norm before a label stops (default 20); the count starts once the
   * threshold was reached and λ has been both raised and lowered.
   */
  earlyStopPatience?: number;
  /** Fraction of the clean images held out to measure each trigger's attack success (default 0.2, at least 1). */
  holdout?: number;
  /** Most clean images read (a seeded random subset; default 2000). */
  maxImages?: number;
  /** Most held-out images used to measure attack success (default 100). */
  evalImages?: number;
  /** Seed of the image split, the batch order and the mask/pattern initialization (default 0). */
  seed?: number;
  /** Called when a label finishes a phase. */
  onProgress?: (p: NcProgress) => void;
}

export interface NcProgress {
  family: TriggerFamily;
  phase: NcPhase;
  /** Labels finished in this phase so far, and the phase's total. */
  done: number;
  total: number;
  label: number;
  l1Norm: number;
}

/** "screen": the label only got a screening budget; "full": it got the full budget. */
export type NcPhase = "screen" | "full";
/**
 * "bound": the reference labels first, then a first look and rungs that keep at most a tenth of the labels and
 * drop those an elimination bound rules out (nc-schedule.ts); "halving": successive screening rungs, each keeping
 * 1/eta of the labels; "two-phase": one screening budget, then the shortlist.
 */
export type NcSchedule = "bound" | "halving" | "two-phase";
export const NC_SCHEDULES: readonly NcSchedule[] = ["bound", "halving", "two-phase"];

/** One label's outcome in one trigger family. */
export interface NcFamilyScore {
  /** |m|₁ of the reversed trigger (for "blend": α·H·W). */
  l1Norm: number;
  /**
   * MAD anomaly index of statNorm against the reference labels' median and MAD, without any confirmed target
   * (nc-evidence.ts).
   */
  anomalyIndex: number;
  /** Held-out attack success of the reversed trigger. */
  attackSuccess: number;
  /** Outlier on the small side (anomaly index > 2) with a trigger that reached the threshold. */
  flagged: boolean;
  phase: NcPhase;
  /** Optimization steps this label ran (screening + full, summed over restarts). */
  steps: number;
  /** Whether some mask reached the attack-success threshold on its batch; if not, l1Norm is the last mask's. */
  reached: boolean;
  /** λ when the kept run stopped. */
  lambda: number;
  /** The norm the statistics compared (l1Norm, scaled for a label stopped while screening; see budgetAdjusted). */
  statNorm: number;
  /** One of the reference labels (a seeded sample run to the full budget) whose norms set the median and MAD. */
  reference: boolean;
  /** For a label stopped while screening: the last rung it ran (0-based). */
  rung?: number;
  /** Norms of the restarts that reached the threshold, when there were several. */
  restartNorms?: number[];
  /**
   * Every full-phase start of the label in start order (with `recordStarts`): its norm, whether it reached the
   * threshold and its trigger's held-out attack success, so that a saved scan can be rescored as if it had
   * run fewer starts (a start is seeded by the seed, family, label and its number, runSeed; see nc-starts.ts on float rounding).
   */
  starts?: NcStartScore[];
  /** The norm the label adds to the reference median and MAD when it differs from statNorm (nc-evidence.ts LabelMeasure.nullNorm). */
  nullNorm?: number;
  /**
   * The natural-feature check's measurements (labels of the full phase only): per source class, the clean
   * images sent to the label with the mask scaled by each κ of SOURCE_SCALES (nc-sources.ts).
   */
  sources?: SourceCurve[];
  /** Where the trigger sends the images it does not send to the label, per κ (measured with the source curves). */
  transfer?: TriggerTransfer;
  /**
   * The natural-feature check's statistic: the share of the images the full trigger moves that a third of it
   * already moves (naturalReach, nc-sources.ts); absent without source curves.
   */
  naturalReach?: number;
  /** Mask family: the mask's spread in pixels (radius of gyration, nc-compact.ts); absent for the blend family. */
  spread?: number;
  /**
   * The head-shift evidence (head-shift-evidence.ts), mask family, measured for the labels headShiftCandidates
   * picks: the trigger's attack success on every held-out image on B (`success`) and on B with its output
   * layer learned again from clean data by FST (`shifted`), and whether that network still answers the label on
   * its own held-out images (`own`, shiftReadable).
   */
  headShift?: HeadShiftMeasure;
  /** With spreads: the spread's signed index (positive = more compact) and the combined index the flag tests (nc-evidence.ts). */
  spreadIndex?: number;
  combinedIndex?: number;
  /** In [0, 1]: how strongly the evidence points to a backdoor target (see nc-evidence.ts). */
  confidence: number;
  /** Benjamini–Hochberg adjusted p-value of the anomaly index over the family's labels. */
  qValue: number;
  /** Why the label is flagged (every test passed) or not (the tests failed). */
  reasons: string[];
}

/** One start of a label's inversion (see NcFamilyScore.starts). */
export interface NcStartScore {
  restart: number;
  norm: number;
  reached: boolean;
  heldOutSuccess: number;
}

/** A family score before the statistics: what a scan (or a shard of it) measured for one label. */
export type NcRawScore = Omit<NcFamilyScore, "anomalyIndex" | "flagged" | "confidence" | "qValue" | "reasons" | "naturalReach" | "spreadIndex" | "combinedIndex">;

/**
 * The top-level ReportNcLabel fields and phase/steps/reached/lambda are those of the first family scanned
 * ("mask" by default), except `flagged`, which is true when any family flags the label.
 */
export interface NcLabelResult extends ReportNcLabel, Omit<NcFamilyScore, "flagged" | "confidence" | "reasons"> {
  /** Families whose statistics flag the label. */
  flaggedBy: TriggerFamily[];
  /** The largest confidence over the families. */
  confidence: number;
  /** The flagging families' reasons (or the most confident family's reasons against), each prefixed with its family. */
  reasons: string[];
  mask?: NcFamilyScore;
  /** With `alpha` = l1Norm / (H·W), the reversed blend weight. */
  blend?: NcFamilyScore & { alpha: number };
}

/** A reversed trigger: mask [H·W] in [0,1] and pattern [C·H·W] in the model's scaled input range. */
export interface ReversedTrigger {
  label: number;
  /** The family it was reversed in (absent: read back from an older result, "mask"). */
  family?: TriggerFamily;
  l1Norm: number;
  mask: Float32Array;
  pattern: Float32Array;
}

/** One family's statistics over the scanned labels. */
export interface NcFamilyStats {
  median: number;
  mad: number;
  /** Factor applied to the norms of labels stopped after the first screening rung (1 without screening). */
  budgetShrink: number;
  flagged: number[];
  /** Rounds of the confirm-and-exclude loop that looks for further targets. */
  rounds: number;
}

export interface NeuralCleanseResult {
  /** One entry per scanned label, in the order scanned. */
  labels: NcLabelResult[];
  /** Median of the first family's norms, and the raw MAD its anomaly indices use (of ln norm with scale "log"). */
  medianNorm: number;
  mad: number;
  /** Labels flagged by any family, ascending. */
  flagged: number[];
  /**
   * Per family: median norm (of the compared norms, see FamilyScan.budgetShrink), raw MAD on the statistics'
   * scale, the screened-only labels' norm factor, and the labels it flags.
   */
  families: Partial<Record<TriggerFamily, NcFamilyStats>>;
  seconds: number;
  /** Wall-clock seconds of the screening phases (0 when skipped), the full phases and the held-out checks, all families. */
  phaseSeconds: { screen: number; full: number; heldOut: number };
  /** Reversed triggers of the flagged labels (of each flagging family), then the first family's 5 smallest-norm labels. */
  triggers: ReversedTrigger[];
  /** With keepTriggers: every scanned label's trigger, family by family in scan order. */
  allTriggers?: ReversedTrigger[];
  /** [C, H, W] */
  shape: [number, number, number];
  inputScale: number;
  /** A held-out clean image [C·H·W] (scaled), for showing a stamped example. */
  example: Float32Array;
  /** `sha256`: of the images read (both parts), so that `detect --merge` can tell shards scanned on other data. */
  images: { optimize: number; heldOut: number; sha256?: string };
  /** Image passes (one forward + one backward of one image) of every optimization step, all families and phases. */
  imagePasses: number;
  settings: NcSettings & { shortlist: number; families: TriggerFamily[]; rungs: NcRung[] };
  /**
   * The head-shift evidence: how many triggers were measured on how many held-out images (all of them, not only
   * the evalImages the norm statistics' held-out test reads), or why it was skipped (absent: turned off).
   */
  headShift?: { measured: number; heldOut: number; seconds: number } | { skipped: string };
}

const DEFAULTS = {
  steps: 300,
  screenSteps: 10,
  batchSize: 32,
  screenBatchSize: 4,
  labelsPerRun: 32,
  lr: 0.2,
  initLambda: 1e-3,
  threshold: 0.99,
  maskThreshold: 0.99,
  patience: 3,
  earlyStopPatience: 20,
  holdout: 0.2,
  maxImages: 2000,
  evalImages: 100,
  seed: 0,
  restarts: 2,
  scale: "log" as NormScale,
  schedule: "bound" as NcSchedule,
  eta: 4,
  fdr: FDR_LEVEL,
  minHeldOutSuccess: MIN_HELD_OUT_SUCCESS,
  reference: 16,
};
const BETA1 = 0.5;
const BETA2 = 0.9;
const ADAM_EPS = 1e-8;
const LAMBDA_UP = 1.5;
const LAMBDA_DOWN = 1.5 ** 1.5;
const EARLY_STOP_REL = 1e-3;
const REPORTED_SMALLEST = 5;

// ---------------------------------------------------------------------------------------------------------
// Stamping

/** x' = (1−m)·x + m·Δ for n images x [n, C, H, W] with mask [H·W] and pattern [C·H·W]; returns a new array. */
export function stampTrigger(x: Float32Array, n: number, shape: readonly [number, number, number] | readonly number[], mask: Float32Array, pattern: Float32Array): Float32Array {
  const [c, h, w] = shape;
  const hw = h * w;
  if (x.length !== n * c * hw) throw new Error(`stampTrigger: ${x.length} values is not ${n} images of ${c}x${h}x${w}`);
  if (mask.length !== hw) throw new Error(`stampTrigger: mask has ${mask.length} values, expected ${h}x${w}`);
  if (pattern.length !== c * hw) throw new Error(`stampTrigger: pattern has ${pattern.length} values, expected ${c}x${h}x${w}`);
  const out = new Float32Array(x.length);
  for (let i = 0; i < n; i++)
    for (let ch = 0; ch < c; ch++) {
      const off = (i * c + ch) * hw;
      const poff = ch * hw;
      for (let p = 0; p < hw; p++) out[off + p] = (1 - mask[p]) * x[off + p] + mask[p] * pattern[poff + p];
    }
  return out;
}

/** Mask and pattern from the tanh parameters: m = (tanh a + 1)/2, Δ = range·(tanh b + 1)/2. */
export function decodeTrigger(a: Float32Array, b: Float32Array, range: number): { mask: Float32Array; pattern: Float32Array } {
  // Plain loops: Float32Array.from with a map function is several times slower, and a 1,283-label scan decodes
  // 2,566 triggers of 10,340 values.
  const mask = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) mask[i] = (Math.tanh(a[i]!) + 1) / 2;
  const pattern = new Float32Array(b.length);
  for (let i = 0; i < b.length; i++) pattern[i] = (range * (Math.tanh(b[i]!) + 1)) / 2;
  return { mask, pattern };
}

const l1Of = (mask: Float32Array): number => mask.reduce((s, v) => s + v, 0);

/**
 * Appends x' = x + m·(Δ − x) for every (label slot, image) pair: mask [L,1,H,W], pattern [L,C,H,W] and images
 * x [B,C,H,W] (shared) or [L,B,C,H,W] (per slot) give [L·B, C, H, W], slot-major (rows l·B .. l·B+B−1 belong to slot l).
 */
function stampNodes(g: Graph, mask: string, pattern: string, x: string, shape: [number, number, number]): string {
  const m5 = g.op("Unsqueeze", [mask, g.ints([1])]);
  const p5 = g.op("Unsqueeze", [pattern, g.ints([1])]);
  const stamped = g.op("Add", [x, g.op("Mul", [m5, g.op("Sub", [p5, x])])]);
  return g.op("Reshape", [stamped, g.ints([-1, ...shape])]);
}

// ---------------------------------------------------------------------------------------------------------
// The step graph

export interface StepGraph {
  graph: Graph;
  /** Batch size B the graph was built for. */
  batch: number;
  /** Scalar loss Σ_l [CE_l + λ_l·|m_l|₁] (the labels are independent, so its gradient is each label's); an output only with withLossAndGradients. */
  loss: string;
  /** Gradients of the loss w.r.t. the inputs "nc_a" and "nc_b" (outputs only with withLossAndGradients, for checks). */
  gradA: string;
  gradB: string;
  /** Output names. */
  out: { a: string; b: string; ma: string; va: string; mb: string; vb: string; ce: string; success: string; norm: string };
  /** [height, width] of the mask parameter: the image's for "mask", [1, 1] for "blend". */
  maskDims: [number, number];
}

export interface StepGraphOptions {
  /** Also output the loss and the gradients w.r.t. a and b (for checks). */
  withLossAndGradients?: boolean;
  /** Model rewrite for a faster backward pass: Relu after MaxPool (default true). */
  fast?: boolean;
  /** Trigger family (default "mask"). */
  family?: TriggerFamily;
}

/**
 * One Neural Cleanse step for L label slots (L symbolic) and B images:
 * inputs nc_a [L,1,H,W] ([L,1,1,1] for the blend family, broadcast over the image), nc_b [L,C,H,W], their Adam moments nc_ma, nc_va, nc_mb, nc_vb,
 * nc_x [L,B,C,H,W] (each slot its own images, so a label's run does not depend on which labels share the batch),
 * nc_target [L,K] (one-hot), nc_lambda [L], nc_lr [L] (bias-corrected Adam step size per slot);
 * outputs the updated a, b and moments, and per slot the batch-mean CE, the number of images of the batch
 * classified as the target (before the update) and |m|₁ (before the update).
 */
export function buildStepGraph(model: Model, batch: number, range: number, opts: StepGraphOptions = {}): StepGraph {
  const fast = opts.fast ?? true;
  const [c, h, w] = model.inputShape;
  const k = model.numClasses;
  const blend = opts.family === "blend";
  const [mh, mw] = blend ? [1, 1] : [h, w];
  const g = new Graph(`${model.name}_nc_step`);
  const a = g.addInput("nc_a", "float32", ["L", 1, mh, mw]);
  const b = g.addInput("nc_b", "float32", ["L", c, h, w]);
  const ma = g.addInput("nc_ma", "float32", ["L", 1, mh, mw]);
  const va = g.addInput("nc_va", "float32", ["L", 1, mh, mw]);
  const mb = g.addInput("nc_mb", "float32", ["L", c, h, w]);
  const vb = g.addInput("nc_vb", "float32", ["L", c, h, w]);
  const x = g.addInput("nc_x", "float32", ["L", batch, c, h, w]);
  const target = g.addInput("nc_target", "float32", ["L", k]);
  const lambda = g.addInput("nc_lambda", "float32", ["L"]);
  const lr = g.addInput("nc_lr", "float32", ["L"]);

  const one = g.scalar(1);
  const mask = g.op("Mul", [g.op("Add", [g.op("Tanh", [a]), one]), g.scalar(0.5)]);
  const pattern = g.op("Mul", [g.op("Add", [g.op("Tanh", [b]), one]), g.scalar(range / 2)]);
  const flat = stampNodes(g, mask, pattern, x, model.inputShape);
  // MaxPool before Relu computes the same and differentiates the Relu on the pooled (smaller) tensor.
  const forward = model.graph.clone();
  if (fast) poolBeforeRelu(forward);
  const rename = embed(g, forward, "model/", { [model.input]: flat });
  const logits = g.op("Reshape", [rename(model.logits), g.ints([-1, batch, k])]); // [L, B, K]

  const t3 = g.op("Unsqueeze", [target, g.ints([1])]); // [L, 1, K]
  const logp = g.op("LogSoftmax", [logits], { axis: attr.int(-1) });
  const picked = g.op("ReduceSum", [g.op("Mul", [logp, t3]), g.ints([1, 2])], { keepdims: attr.int(0) });
  const ce = g.op("Div", [g.op("Neg", [picked]), g.scalar(batch)]); // [L]
  const maskSum = g.op("ReduceSum", [mask, g.ints([1, 2, 3])], { keepdims: attr.int(0) }); // [L]
  const norm = blend ? g.op("Mul", [maskSum, g.scalar(h * w)]) : maskSum; // the |m|₁ of the mask as applied
  const ceTotal = g.op("ReduceSum", [ce], { keepdims: attr.int(0) });
  const regTotal = g.op("ReduceSum", [g.op("Mul", [lambda, norm])], { keepdims: attr.int(0) });
  const loss = g.op("Add", [ceTotal, regTotal]);

  // Success: the target's logit is the largest (ties count; they do not happen with float logits in practice).
  const targetLogit = g.op("ReduceSum", [g.op("Mul", [logits, t3]), g.ints([2])], { keepdims: attr.int(0) });
  const maxLogit = g.op("ReduceMax", [logits], { axes: attr.ints([2]), keepdims: attr.int(0) });
  const hit = g.op("Cast", [g.op("GreaterOrEqual", [targetLogit, maxLogit])], { to: attr.int(1) });
  const success = g.op("ReduceSum", [hit, g.ints([1])], { keepdims: attr.int(0) }); // [L]

  // The CE part runs through the model (and its pools); the |m|₁ part only touches a.
  const ceGrads = backward(g, ceTotal, [a, b]);
  const gradA = g.op("Add", [ceGrads.get(a)!, backward(g, regTotal, [a]).get(a)!]);
  const gradB = ceGrads.get(b)!;
  const lr4 = g.op("Reshape", [lr, g.ints([-1, 1, 1, 1])]);
  const adam = (p: string, grad: string, m: string, v: string): [string, string, string] => {
    const mNext = g.op("Add", [g.op("Mul", [m, g.scalar(BETA1)]), g.op("Mul", [grad, g.scalar(1 - BETA1)])]);
    const vNext = g.op("Add", [g.op("Mul", [v, g.scalar(BETA2)]), g.op("Mul", [g.op("Mul", [grad, grad]), g.scalar(1 - BETA2)])]);
    const upd = g.op("Div", [mNext, g.op("Add", [g.op("Sqrt", [vNext]), g.scalar(ADAM_EPS)])]);
    return [g.op("Sub", [p, g.op("Mul", [upd, lr4])]), mNext, vNext];
  };
  const [aNext, maNext, vaNext] = adam(a, gradA, ma, va);
  const [bNext, mbNext, vbNext] = adam(b, gradB, mb, vb);
  const out = { a: aNext, b: bNext, ma: maNext, va: vaNext, mb: mbNext, vb: vbNext, ce, success, norm };
  g.setOutputs([...Object.values(out), ...(opts.withLossAndGradients ? [loss, gradA, gradB] : [])]);
  g.prune(g.inputs.map((i) => i.name));
  return { graph: g, batch, loss, gradA, gradB, out, maskDims: [mh, mw] };
}

/** Held-out check: inputs nc_mask [L,1,H,W], nc_pattern [L,C,H,W], nc_x [E,C,H,W]; output the top-1 class [L·E]. */
function buildStampGraph(model: Model): { graph: Graph; pred: string } {
  const [c, h, w] = model.inputShape;
  const g = new Graph(`${model.name}_nc_eval`);
  const mask = g.addInput("nc_mask", "float32", ["L", 1, h, w]);
  const pattern = g.addInput("nc_pattern", "float32", ["L", c, h, w]);
  const x = g.addInput("nc_x", "float32", ["E", c, h, w]);
  const flat = stampNodes(g, mask, pattern, x, model.inputShape);
  const rename = embed(g, model.graph, "model/", { [model.input]: flat });
  const pred = g.op("ArgMax", [rename(model.logits)], { axis: attr.int(1), keepdims: attr.int(0) });
  g.setOutputs([pred]);
  g.prune();
  return { graph: g, pred };
}

// ---------------------------------------------------------------------------------------------------------
// Per-label optimization state and the λ schedule

interface LabelRun {
  label: number;
  /** 0 for the first start; restarts count up. */
  restart: number;
  /** This run's own random stream (initialization and image order), seeded by (seed, family, label, restart). */
  rand: () => number;
  /** Its shuffle of the optimization images and the position in it. */
  order: Int32Array | null;
  pos: number;
  /** Norm (normOf) at the end of each screening rung it ran. */
  normAt: number[];
  a: Float32Array;
  b: Float32Array;
  /** Adam moments; null = zeros (fresh start). */
  moments: { ma: Float32Array; va: Float32Array; mb: Float32Array; vb: Float32Array } | null;
  adamT: number;
  steps: number;
  lambda: number;
  up: number;
  down: number;
  bestNorm: number;
  bestA: Float32Array | null;
  bestB: Float32Array | null;
  earlyBest: number;
  earlyCount: number;
  /** Whether λ has been raised / lowered at least once. */
  raised: boolean;
  lowered: boolean;
  lastNorm: number;
  stopped: boolean;
  phase: NcPhase;
}

interface Settings {
  lr: number;
  threshold: number;
  patience: number;
  earlyStopPatience: number;
}

/** A seed for one run's stream: a run depends on (seed, family, label, restart) only, never on the other labels. */
export function runSeed(seed: number, family: TriggerFamily, label: number, restart: number): number {
  let hsh = (seed ^ 0x5bd1e995) >>> 0;
  for (const v of [family === "blend" ? 2 : 1, label + 1, restart + 1]) {
    hsh = Math.imul(hsh ^ v, 0x9e3779b1) >>> 0;
    hsh = (hsh ^ (hsh >>> 15)) >>> 0;
  }
  return hsh;
}

/**
 * The reference labels: exactly min(reference, numClasses) of the model's classes, those with the smallest
 * seeded hashes; they depend on (seed, reference, numClasses) only, so every shard of a scan picks the same.
 */
export function referenceLabels(seed: number, reference: number, numClasses: number): Set<number> {
  const hash = Array.from({ length: numClasses }, (_, l) => runSeed(seed, "mask", l, 0x7fff));
  const order = hash.map((_, l) => l).sort((p, q) => hash[p] - hash[q] || p - q);
  return new Set(order.slice(0, Math.min(reference, numClasses)));
}

/** Whether a label is one of referenceLabels(seed, reference, numClasses). */
export function isReferenceLabel(seed: number, label: number, reference: number, numClasses: number): boolean {
  return referenceLabels(seed, reference, numClasses).has(label);
}

function initRun(label: number, restart: number, family: TriggerFamily, maskSize: number, patternSize: number, lambda: number, seed: number): LabelRun {
  const rand = mulberry32(runSeed(seed, family, label, restart));
  // Random start as in the paper (uniform mask and pattern), kept off tanh's flat tails.
  const atanhU = (n: number): Float32Array => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.atanh((2 * rand() - 1) * 0.9);
    return out;
  };
  return {
    label,
    restart,
    rand,
    order: null,
    pos: 0,
    normAt: [],
    a: atanhU(maskSize),
    b: atanhU(patternSize),
    moments: null,
    adamT: 0,
    steps: 0,
    lambda,
    up: 0,
    down: 0,
    bestNorm: Infinity,
    bestA: null,
    bestB: null,
    earlyBest: Infinity,
    earlyCount: 0,
    raised: false,
    lowered: false,
    lastNorm: NaN,
    stopped: false,
    phase: "screen",
  };
}

/** Applies one step's outcome to a label: best mask, λ schedule, early stop. `a`/`b` are the values fed. */
function observe(r: LabelRun, success: number, norm: number, s: Settings): void {
  r.steps++;
  r.lastNorm = norm;
  const ok = success >= s.threshold;
  if (ok && norm < r.bestNorm) {
    r.bestNorm = norm;
    r.bestA = r.a;
    r.bestB = r.b;
  }
  if (ok) {
    r.up++;
    r.down = 0;
  } else {
    r.down++;
    r.up = 0;
  }
  if (r.up >= s.patience) {
    r.lambda *= LAMBDA_UP;
    r.up = 0;
    r.raised = true;
  } else if (r.down >= s.patience) {
    r.lambda /= LAMBDA_DOWN;
    r.down = 0;
    r.lowered = true;
  }
  // As in the paper, the early-stop clock only runs once λ has moved both ways: the schedule has bracketed
  // the threshold, so a stalled best norm means convergence, not a λ still far off.
  if (r.bestA && r.raised && r.lowered) {
    if (r.bestNorm < r.earlyBest * (1 - EARLY_STOP_REL)) {
      r.earlyBest = r.bestNorm;
      r.earlyCount = 0;
    } else if (++r.earlyCount >= s.earlyStopPatience) r.stopped = true;
  }
}

/** The images a run steps on: B at a time, cycling through its own seeded shuffles of the pool (all of them, in pool order, when B is the pool). */
interface ImagePool {
  x: Float32Array;
  n: number;
  per: number;
}

function nextBatch(r: LabelRun, pool: ImagePool, batch: number, out: Float32Array, offset: number): void {
  const { x, n, per } = pool;
  if (batch === n) {
    out.set(x.subarray(0, n * per), offset);
    return;
  }
  for (let i = 0; i < batch; i++) {
    if (r.order === null || r.pos >= n) {
      r.order = shuffled(n, r.rand);
      r.pos = 0;
    }
    const j = r.order[r.pos++];
    out.set(x.subarray(j * per, (j + 1) * per), offset + i * per);
  }
}

function concat(parts: Float32Array[], size: number): Float32Array {
  const out = new Float32Array(parts.length * size);
  parts.forEach((p, i) => out.set(p, i * size));
  return out;
}

/**
 * Runs labels through the step graph until each has `budget` steps in total or stops early; slots are
 * refilled from the queue as labels finish. Labels already at their budget finish at once.
 */
async function runPhase(
  step: StepGraph,
  session: Session,
  queue: LabelRun[],
  budget: number,
  pool: ImagePool,
  model: Model,
  slots: number,
  s: Settings,
  onDone: (r: LabelRun) => void,
  checkpoints?: ReadonlySet<number>,
): Promise<number> {
  const [c, h, w] = model.inputShape;
  const [mh, mw] = step.maskDims;
  const hw = h * w;
  const ms = mh * mw;
  const k = model.numClasses;
  const pending = [...queue];
  let active: LabelRun[] = [];
  const per = c * hw;
  // Feed and output arrays for `slots` labels, allocated once per phase; a step with n labels uses views of
  // their first n rows. A 1,283-label scan runs ~2,000 steps, and fresh arrays for each (their memory lives
  // outside the JS heap, and its growth triggers full collections) cost ~6% of the scan in garbage collection.
  const buf = (size: number) => new Float32Array(slots * size);
  const feed = { a: buf(ms), b: buf(per), ma: buf(ms), va: buf(ms), mb: buf(per), vb: buf(per), x: buf(step.batch * per), target: buf(k), lambda: buf(1), lr: buf(1) };
  const next = { a: buf(ms), b: buf(per), ma: buf(ms), va: buf(ms), mb: buf(per), vb: buf(per) };
  let passes = 0;
  for (;;) {
    while (active.length < slots && pending.length) {
      const r = pending.shift()!;
      if (r.stopped || r.steps >= budget) onDone(r);
      else active.push(r);
    }
    if (active.length === 0) return passes;
    const n = active.length;
    passes += n * step.batch;
    const rows = (d: Float32Array, size: number) => d.subarray(0, n * size);
    feed.target.fill(0, 0, n * k);
    active.forEach((r, i) => {
      feed.target[i * k + r.label] = 1;
      const t = r.adamT + 1;
      feed.lr[i] = (s.lr * Math.sqrt(1 - BETA2 ** t)) / (1 - BETA1 ** t);
      feed.lambda[i] = r.lambda;
      nextBatch(r, pool, step.batch, feed.x, i * step.batch * per);
      feed.a.set(r.a, i * ms);
      feed.b.set(r.b, i * per);
      // A fresh start's Adam moments are zeros.
      if (r.moments) {
        feed.ma.set(r.moments.ma, i * ms);
        feed.va.set(r.moments.va, i * ms);
        feed.mb.set(r.moments.mb, i * per);
        feed.vb.set(r.moments.vb, i * per);
      } else {
        feed.ma.fill(0, i * ms, (i + 1) * ms);
        feed.va.fill(0, i * ms, (i + 1) * ms);
        feed.mb.fill(0, i * per, (i + 1) * per);
        feed.vb.fill(0, i * per, (i + 1) * per);
      }
    });
    const feeds: Record<string, TensorData> = {
      nc_a: tensor("float32", [n, 1, mh, mw], rows(feed.a, ms)),
      nc_b: tensor("float32", [n, c, h, w], rows(feed.b, per)),
      nc_ma: tensor("float32", [n, 1, mh, mw], rows(feed.ma, ms)),
      nc_va: tensor("float32", [n, 1, mh, mw], rows(feed.va, ms)),
      nc_mb: tensor("float32", [n, c, h, w], rows(feed.mb, per)),
      nc_vb: tensor("float32", [n, c, h, w], rows(feed.vb, per)),
      nc_x: tensor("float32", [n, step.batch, c, h, w], rows(feed.x, step.batch * per)),
      nc_target: tensor("float32", [n, k], rows(feed.target, k)),
      nc_lambda: tensor("float32", [n], rows(feed.lambda, 1)),
      nc_lr: tensor("float32", [n], rows(feed.lr, 1)),
    };
    const [aN, bN, maN, vaN, mbN, vbN] = [rows(next.a, ms), rows(next.b, per), rows(next.ma, ms), rows(next.va, ms), rows(next.mb, per), rows(next.vb, per)];
    const into: Record<string, TensorData> = {
      [step.out.a]: tensor("float32", [n, 1, mh, mw], aN),
      [step.out.b]: tensor("float32", [n, c, h, w], bN),
      [step.out.ma]: tensor("float32", [n, 1, mh, mw], maN),
      [step.out.va]: tensor("float32", [n, 1, mh, mw], vaN),
      [step.out.mb]: tensor("float32", [n, c, h, w], mbN),
      [step.out.vb]: tensor("float32", [n, c, h, w], vbN),
    };
    const out = await session.runInto(feeds, into, [step.out.ce, step.out.success, step.out.norm]);
    const get = (key: "ce" | "success" | "norm") => out[step.out[key]].data as Float32Array;
    const success = get("success");
    const norm = get("norm");
    const ce = get("ce");
    const still: LabelRun[] = [];
    active.forEach((r, i) => {
      if (!Number.isFinite(norm[i]) || !Number.isFinite(ce[i])) throw new Error(`Neural Cleanse diverged on label ${r.label} (loss ${ce[i]})`);
      observe(r, success[i] / step.batch, norm[i], s);
      if (checkpoints?.has(r.steps)) r.normAt.push(normOf(r));
      const row = (d: Float32Array, size: number) => d.subarray(i * size, (i + 1) * size);
      // The run's a and b are overwritten in place, unless they are its best trigger (observe keeps the arrays
      // fed), which then keeps them and the run gets new ones; the moments are referenced nowhere else.
      if (r.a === r.bestA) r.a = row(aN, ms).slice();
      else r.a.set(row(aN, ms));
      if (r.b === r.bestB) r.b = row(bN, per).slice();
      else r.b.set(row(bN, per));
      const m = r.moments ?? { ma: new Float32Array(ms), va: new Float32Array(ms), mb: new Float32Array(per), vb: new Float32Array(per) };
      m.ma.set(row(maN, ms));
      m.va.set(row(vaN, ms));
      m.mb.set(row(mbN, per));
      m.vb.set(row(vbN, per));
      r.moments = m;
      r.adamT++;
      if (r.stopped || r.steps >= budget) onDone(r);
      else still.push(r);
    });
    active = still;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Detection

/** How the steps, batch and starts were chosen: from the model's cost (nc-budget.ts) or given. */
export interface NcBudgetInfo {
  /** Forward multiply-accumulates of one image. */
  macs: number;
  /** "model cost": every one of steps/batch size/restarts from defaultBudget; "given": all given; "mixed": some. */
  source: "model cost" | "given" | "mixed";
  reason: string;
}

/** Every setting of a scan, defaults filled in (the shortlist size is resolved once the label count is known). */
export type NcSettings = typeof DEFAULTS & { inputScale: number; shortlist?: number; moreStarts: number; budget?: NcBudgetInfo };

/** The options with defaults; steps, batch size and restarts not given come from the model's cost when `cost` is given. */
export function resolveOptions(opts: NeuralCleanseOptions, cost?: { macs: number; labels: number; families: number }): NcSettings {
  const o: NcSettings = { ...DEFAULTS, inputScale: opts.inputScale, shortlist: opts.shortlist, moreStarts: 0 };
  if (cost) {
    const b = defaultBudget(cost.macs, cost);
    o.steps = b.steps;
    o.batchSize = b.batchSize;
    o.restarts = b.restarts;
    const given = (["steps", "batchSize", "restarts"] as const).filter((k) => opts[k] !== undefined);
    const source = given.length === 0 ? "model cost" : given.length === 3 ? "given" : "mixed";
    const chosen = `default ${b.steps} steps x ${b.batchSize} images x ${b.restarts} starts`;
    o.budget = { macs: cost.macs, source, reason: `${chosen} (${b.reason})${given.length ? `; given: ${given.map((k) => `${k} ${opts[k]}`).join(", ")}` : ""}` };
  }
  for (const key of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) {
    const v = opts[key];
    if (v !== undefined) (o as Record<string, unknown>)[key] = v;
  }
  const posInt = (name: string, v: number) => {
    if (!Number.isInteger(v) || v < 1) fail(`Neural Cleanse: ${name} must be a positive integer, got ${v}`);
  };
  posInt("steps", o.steps);
  posInt("screen steps", o.screenSteps);
  posInt("batch size", o.batchSize);
  posInt("screen batch size", o.screenBatchSize);
  posInt("labels per run", o.labelsPerRun);
  posInt("patience", o.patience);
  posInt("early-stop patience", o.earlyStopPatience);
  posInt("max images", o.maxImages);
  posInt("eval images", o.evalImages);
  posInt("restarts", o.restarts);
  o.moreStarts = opts.moreStarts ?? (o.restarts >= 2 ? o.restarts : 0);
  if (!Number.isInteger(o.moreStarts) || o.moreStarts < 0) fail(`Neural Cleanse: further starts must be an integer >= 0, got ${o.moreStarts}`);
  posInt("reference labels", o.reference);
  if (o.shortlist !== undefined) posInt("shortlist", o.shortlist);
  if (!Number.isInteger(o.seed) || o.seed < 0) fail(`Neural Cleanse: seed must be an integer >= 0, got ${o.seed}`);
  if (!(o.lr > 0)) fail(`Neural Cleanse: learning rate must be positive, got ${o.lr}`);
  if (!(o.initLambda >= 0)) fail(`Neural Cleanse: initial lambda must be >= 0, got ${o.initLambda}`);
  if (!(o.threshold > 0 && o.threshold <= 1)) fail(`Neural Cleanse: threshold must be in (0, 1], got ${o.threshold}`);
  if (opts.maskThreshold === undefined) o.maskThreshold = o.threshold;
  if (!(o.maskThreshold > 0 && o.maskThreshold <= 1)) fail(`Neural Cleanse: mask threshold must be in (0, 1], got ${o.maskThreshold}`);
  if (!(o.holdout > 0 && o.holdout < 1)) fail(`Neural Cleanse: holdout fraction must be in (0, 1), got ${o.holdout}`);
  if (!(o.inputScale > 0)) fail(`Neural Cleanse: input scale must be positive, got ${o.inputScale}`);
  if (o.scale !== "log" && o.scale !== "linear") fail(`Neural Cleanse: scale must be log or linear, got ${String(o.scale)}`);
  if (!NC_SCHEDULES.includes(o.schedule)) fail(`Neural Cleanse: schedule must be ${NC_SCHEDULES.join(", ")}, got ${String(o.schedule)}`);
  if (!(o.eta >= 2)) fail(`Neural Cleanse: eta must be >= 2, got ${o.eta}`);
  if (!(o.fdr > 0 && o.fdr <= 1)) fail(`Neural Cleanse: false-discovery rate must be in (0, 1], got ${o.fdr}`);
  if (!(o.minHeldOutSuccess >= 0 && o.minHeldOutSuccess <= 1)) fail(`Neural Cleanse: held-out success must be in [0, 1], got ${o.minHeldOutSuccess}`);
  if (o.screenSteps > o.steps) o.screenSteps = o.steps;
  return o;
}

/** Validates a label list against the model: integers in [0, numClasses), no duplicates. */
export function checkLabelList(labels: readonly number[], numClasses: number): number[] {
  if (labels.length === 0) fail("Neural Cleanse: no labels to scan");
  const seen = new Set<number>();
  for (const l of labels) {
    if (!Number.isInteger(l) || l < 0) fail(`label ${l} is not a class index (expected an integer 0..${numClasses - 1})`);
    if (l >= numClasses) fail(`label ${l} is outside the model's ${numClasses} classes (0..${numClasses - 1})`);
    if (seen.has(l)) fail(`label ${l} is listed twice`);
    seen.add(l);
  }
  return [...labels];
}

/** Reads a seeded random subset of at most `max` images (all of them when the dataset is small enough), and the shuffled order it took them in. */
function readSubset(clean: Dataset, max: number, rand: () => number): { x: Float32Array; y: Int32Array | null; n: number; order: Int32Array } {
  const per = clean.shape[0] * clean.shape[1] * clean.shape[2];
  const order = shuffled(clean.size, rand);
  const n = Math.min(max, clean.size);
  const x = new Float32Array(n * per);
  const y = clean.labels ? new Int32Array(n) : null;
  if (n === clean.size) {
    const all = clean.read(0, n);
    for (let i = 0; i < n; i++) {
      x.set(all.subarray(order[i] * per, (order[i] + 1) * per), i * per);
      if (y) y[i] = clean.labels![order[i]];
    }
  } else {
    for (let i = 0; i < n; i++) {
      x.set(clean.read(order[i], 1), i * per);
      if (y) y[i] = clean.labels![order[i]];
    }
  }
  return { x, y, n, order };
}

/** The shortlist: the `count` smallest screening norms (reached ones first), plus small-side outliers. */
export function pickShortlist(norms: readonly number[], reached: readonly boolean[], count: number, scale: NormScale = "log"): number[] {
  const idx = norms.map((_, i) => i);
  idx.sort((p, q) => Number(reached[q]) - Number(reached[p]) || norms[p] - norms[q]);
  const picked = new Set(idx.slice(0, count));
  const stats = normStats(norms, scale);
  norms.forEach((_, i) => {
    if (stats.small[i] && stats.index[i] > ANOMALY_THRESHOLD) picked.add(i);
  });
  return [...picked].sort((p, q) => p - q);
}

/** What one family's scan leaves per label: the kept run and its decoded trigger. */
interface FamilyScan {
  family: TriggerFamily;
  runs: LabelRun[];
  triggers: ReversedTrigger[];
  /** Steps per label, summed over its restarts. */
  steps: number[];
  /** The norms the statistics compare: see budgetShrink. */
  statNorms: number[];
  /**
   * How much the norms of labels that went on shrank from the first screening rung to the end (budgetAdjusted;
   * 1 without screening). It describes the schedule; the statistics compare the norms as measured.
   */
  budgetShrink: number;
  /** Per label: the norms of its restarts that reached the threshold (full phase only). */
  restartNorms: number[][];
  /** With recordStarts: per label, every full-phase start in start order, with its trigger. */
  starts?: { restart: number; reached: boolean; trigger: ReversedTrigger }[][];
}

/** A screening rung: every label still running goes on to `steps` steps in total on batches of `batch`; then the `keep` smallest (plus small-side outliers) go on. */
export interface NcRung {
  steps: number;
  batch: number;
  keep: number;
}

/**
 * The screening rungs for n labels. "two-phase": one rung of screenSteps, then the shortlist. "halving"
 * (successive halving, after K-Arm's scheduling): rungs of screenSteps·eta^k steps on batches that double
 * from screenBatchSize, each keeping 1/eta of the labels (at least the shortlist), until the shortlist is
 * left. None when every label fits in the shortlist.
 */
export function screeningRungs(n: number, shortlist: number, o: Pick<NcSettings, "schedule" | "eta" | "screenSteps" | "screenBatchSize" | "steps" | "batchSize">): NcRung[] {
  if (n <= shortlist) return [];
  if (o.schedule === "bound") return boundRungs(n, shortlist, o);
  if (o.schedule === "two-phase") return [{ steps: o.screenSteps, batch: o.screenBatchSize, keep: shortlist }];
  const out: NcRung[] = [];
  let alive = n;
  let steps = o.screenSteps;
  let batch = o.screenBatchSize;
  while (alive > shortlist && steps < o.steps) {
    const keep = Math.max(shortlist, Math.ceil(alive / o.eta));
    out.push({ steps, batch, keep });
    alive = keep;
    steps *= o.eta;
    batch = Math.min(o.batchSize, batch * 2);
  }
  return out;
}

/**
 * Norms compared at the full budget. A label stopped after rung k has only that rung's budget behind it; left
 * as it is, every label that went on would look small next to it for its budget alone. So its norm is scaled
 * by the median shrink of the labels that went on: ρ_j = median over the labels that ran rung j+1 of
 * (norm after rung j+1, or final) / (norm after rung j), at most 1, chained over the later rungs.
 * `normAt[i]` holds label i's norms after each rung it ran, `full[i]` whether it went on to the full budget;
 * returns the compared norms and, per rung, the factor applied to labels stopped there.
 */
export function budgetAdjusted(final: readonly number[], normAt: readonly (readonly number[])[], full: readonly boolean[]): { statNorms: number[]; shrinks: number[] } {
  const rungs = Math.max(0, ...normAt.map((v) => v.length));
  const ratio: number[] = [];
  for (let j = 0; j < rungs; j++) {
    const rs: number[] = [];
    normAt.forEach((v, i) => {
      if (v.length <= j || !(v[j] > 0) || !Number.isFinite(v[j])) return;
      const next = v.length > j + 1 ? v[j + 1] : full[i] ? final[i] : NaN;
      if (Number.isFinite(next)) rs.push(next / v[j]);
    });
    ratio.push(rs.length ? Math.min(1, median(rs)) : 1);
  }
  const shrinks = ratio.map((_, j) => ratio.slice(j).reduce((p, q) => p * q, 1));
  const statNorms = final.map((n, i) => (full[i] || normAt[i].length === 0 ? n : n * shrinks[normAt[i].length - 1]));
  return { statNorms, shrinks };
}

/** Norm of a run's best trigger (or of its last iterate when none reached the threshold). */
function normOf(r: LabelRun): number {
  return r.bestA ? r.bestNorm : r.lastNorm;
}

/** The better of two runs of a label: one that reached the threshold beats one that did not, then the smaller norm. */
function better(p: LabelRun, q: LabelRun): LabelRun {
  const pr = p.bestA !== null;
  const qr = q.bestA !== null;
  if (pr !== qr) return pr ? p : q;
  return normOf(q) < normOf(p) ? q : p;
}

/**
 * Neural Cleanse over the model's labels (or opts.labels) with clean images `clean`. A seeded random part of
 * the images (opts.holdout) is held out to measure each reversed trigger's attack success; the rest is what
 * the triggers are optimized on.
 */
export async function detectBackdoor(model: Model, clean: Dataset, opts: NeuralCleanseOptions): Promise<NeuralCleanseResult> {
  const t0 = performance.now();
  const families = checkFamilies(opts.families ?? [...TRIGGER_FAMILIES]);
  checkShape(clean, model.inputShape, `model ${model.name}`);
  checkLabels(clean, model.numClasses);
  const labels = checkLabelList(opts.labels ?? Array.from({ length: model.numClasses }, (_, i) => i), model.numClasses);
  const o = resolveOptions(opts, { macs: forwardMacs(model), labels: labels.length, families: families.length });
  if (clean.size < 2) fail(`data ${clean.name}: Neural Cleanse needs at least 2 clean images (to optimize on and to hold out), got ${clean.size}`);

  const [c, h, w] = model.inputShape;
  const hw = h * w;
  const per = c * hw;
  const range = 255 / o.inputScale;
  const rand = mulberry32(o.seed);
  const data = readSubset(clean, o.maxImages, rand);
  const nHeld = Math.min(Math.max(1, Math.round(o.holdout * data.n)), data.n - 1);
  const nOpt = data.n - nHeld;
  const optPool = data.x.subarray(0, nOpt * per);
  const heldX = data.x.subarray(nOpt * per);
  const heldY = data.y?.subarray(nOpt) ?? null;
  const s: Settings = { lr: o.lr, threshold: o.threshold, patience: o.patience, earlyStopPatience: o.earlyStopPatience };
  const shortCount = o.shortlist ?? Math.max(10, Math.ceil(0.01 * labels.length));
  const refSet = referenceLabels(o.seed, o.reference, model.numClasses);
  const refLabels = labels.filter((l) => refSet.has(l));
  const slots = o.labelsPerRun;
  const activation = largestActivation(model.graph);

  const phaseSeconds = { screen: 0, full: 0, heldOut: 0 };
  let tPhase = performance.now();
  const lap = () => {
    const t = performance.now();
    const dt = (t - tPhase) / 1000;
    tPhase = t;
    return dt;
  };

  const index = new Map(labels.map((l, i) => [l, i]));
  const pool: ImagePool = { x: optPool, n: nOpt, per };
  // Without screening every label gets the full budget and is a reference label.
  const rungs = screeningRungs(labels.length - refLabels.length, shortCount, o);
  const isRef = new Set(rungs.length ? refLabels : labels);

  let imagePasses = 0;
  // One compiled step per family and batch size, shared by the phases that use it (the reference labels, the
  // full budget and the further starts): building and loading a step graph costs time on larger networks.
  const compiled = new Map<string, { step: StepGraph; session: Session }>();
  const compiledStep = async (family: TriggerFamily, B: number): Promise<{ step: StepGraph; session: Session }> => {
    const key = `${family}/${B}`;
    let c = compiled.get(key);
    if (!c) {
      const step = buildStepGraph(model, B, range, { family });
      // The images of one run: B per label slot, as many slots as the phases' runs use at most.
      const work = gradientWork(model, B * (opts.labelsPerRun ?? labelSlots(activation, B, slots)));
      compiled.set(key, (c = { step, session: await Session.create(step.graph, work) }));
    }
    return c;
  };
  const scanFamily = async (family: TriggerFamily): Promise<FamilyScan> => {
    const maskSize = family === "blend" ? 1 : hw;
    const fs: Settings = { ...s, threshold: family === "mask" ? o.maskThreshold : o.threshold };
    const fresh = (l: number, restart: number) => initRun(l, restart, family, maskSize, per, o.initLambda, o.seed);
    // One phase: `queue` to `budget` steps on batches of `batchSize`; a finished run keeps its resume point and
    // best trigger but not its Adam moments.
    const phase = async (name: NcPhase, queue: LabelRun[], budget: number, batchSize: number, checkpoints?: ReadonlySet<number>) => {
      if (queue.length === 0) return;
      const B = Math.min(batchSize, nOpt);
      const { step, session } = await compiledStep(family, B);
      // Labels per call: given, else as many as keep the step's activations near a core's cache (nc-budget.ts).
      // Never more slots than runs queued: the feed arrays are sized by it (a huge --labels-per-run allocated
      // them for labels that do not exist).
      const L = Math.min(opts.labelsPerRun ?? labelSlots(activation, B, slots), queue.length);
      let done = 0;
      imagePasses += await runPhase(step, session, queue, budget, pool, model, L, fs, (r) => {
        r.moments = null;
        r.adamT = 0;
        opts.onProgress?.({ family, phase: name, done: ++done, total: queue.length, label: r.label, l1Norm: normOf(r) });
      }, checkpoints);
    };
    const runs = labels.map((l) => fresh(l, 0));
    const refRuns = runs.filter((r) => isRef.has(r.label));
    let alive: LabelRun[] = runs.filter((r) => !isRef.has(r.label));
    // Reference runs already done (the bounded schedule runs them first, from one start), and the norm a
    // label's first start must end below for a second start (the bounded schedule's threshold; else no test).
    let refsDone = false;
    let secondStartBelow = Infinity;
    if (o.schedule === "bound" && rungs.length) {
      // The reference labels first: their final norms set the flag threshold, their norms at the rungs'
      // checkpoints how much further a norm can still fall; with those, every rung drops hopeless labels.
      for (const r of refRuns) r.phase = "full";
      await phase("full", refRuns, o.steps, o.batchSize, new Set(rungs.map((g) => g.steps)));
      const finals = refRuns.map(normOf);
      const threshold = flagThresholdNorm(finals.filter((_, i) => refRuns[i].bestA !== null));
      const decrease = furtherDecrease(refRuns.map((r) => r.normAt), finals, rungs.length);
      phaseSeconds.full += lap();
      for (const [k, rung] of rungs.entries()) {
        await phase("screen", alive, rung.steps, rung.batch);
        for (const r of alive) r.normAt.push(normOf(r));
        const chosen = pickBounded(alive.map(normOf), alive.map((r) => r.bestA !== null), rung.keep, threshold, decrease[k]);
        alive = chosen.map((i) => alive[i]);
      }
      refsDone = true;
      secondStartBelow = threshold;
    } else {
      // Successive screening rungs (K-Arm's idea): every label that can still be an outlier gets more steps, the
      // others stop where they are. Reference labels skip them: they get the full budget.
      for (const rung of rungs) {
        await phase("screen", alive, rung.steps, rung.batch);
        for (const r of alive) r.normAt.push(normOf(r));
        const chosen = pickShortlist(alive.map(normOf), alive.map((r) => r.bestA !== null), rung.keep, o.scale);
        alive = chosen.map((i) => alive[i]);
      }
    }
    if (rungs.length) phaseSeconds.screen += lap();
    const full = refsDone ? alive : [...refRuns, ...alive];
    const restartsOf = (runs: LabelRun[]) => runs.flatMap((r) => Array.from({ length: o.restarts - 1 }, (_, k) => fresh(r.label, k + 1)));
    let extra: LabelRun[];
    if (refsDone) {
      // Bounded: the candidates' first start to the full budget, then further starts only for those whose norm
      // is below the flag threshold: the labels a flag is at stake for, where a further start either agrees or
      // finds a smaller trigger (on a 1,283-label scan the 13 candidates all sit below the reference median, so
      // a looser rule restarts every one of them).
      for (const r of full) {
        r.phase = "full";
        r.stopped = false;
      }
      await phase("full", full, o.steps, o.batchSize);
      extra = restartsOf(full.filter((r) => normOf(r) < secondStartBelow));
      for (const r of extra) r.phase = "full";
      await phase("full", extra, o.steps, o.batchSize);
    } else {
      // The screened run continues; the other restarts of a shortlisted label start afresh.
      extra = restartsOf(full);
      // Further starts need the reference labels' median: the reference labels this scan does not cover (a
      // shard) run their first starts too, unreported, so that every shard takes the single scan's median.
      const atStake = o.moreStarts > 0 && rungs.length === 0 && MORE_STARTS_FAMILIES.includes(family);
      const outside = atStake ? [...refSet].filter((l) => !index.has(l)).sort((p, q) => p - q).flatMap((l) => Array.from({ length: o.restarts }, (_, k) => fresh(l, k))) : [];
      const queue = [...full, ...extra, ...outside];
      for (const r of queue) {
        r.phase = "full";
        r.stopped = false; // the early stop of screening (rare) does not carry over to the full budget
      }
      await phase("full", queue, o.steps, o.batchSize);
      if (atStake) {
        const bestOf = new Map<number, LabelRun>();
        for (const r of queue) bestOf.set(r.label, bestOf.has(r.label) ? better(bestOf.get(r.label)!, r) : r);
        const cut = median([...refSet].map((l) => normOf(bestOf.get(l)!)));
        const more = full.filter((r) => normOf(bestOf.get(r.label)!) < cut).flatMap((r) => Array.from({ length: o.moreStarts }, (_, k) => fresh(r.label, o.restarts + k)));
        for (const r of more) r.phase = "full";
        await phase("full", more, o.steps, o.batchSize);
        extra.push(...more);
      }
    }
    phaseSeconds.full += lap();
    const kept = [...runs];
    const steps = runs.map((r) => r.steps);
    const restartNorms: number[][] = runs.map((r) => (r.phase === "full" && r.bestA ? [r.bestNorm] : []));
    const startRuns: LabelRun[][] = runs.map((r) => (r.phase === "full" ? [r] : []));
    for (const r of extra) {
      const i = index.get(r.label)!;
      kept[i] = better(kept[i], r);
      steps[i] += r.steps;
      if (r.bestA) restartNorms[i].push(r.bestNorm);
      startRuns[i].push(r);
    }
    // Triggers (best if one reached the threshold, else the last iterate) and their norms.
    const triggerOf = (r: LabelRun): ReversedTrigger => {
      const a = r.bestA ?? r.a;
      const t = decodeTrigger(a.length === hw ? a : new Float32Array(hw).fill(a[0]), r.bestB ?? r.b, range);
      return { label: r.label, family, l1Norm: l1Of(t.mask), mask: t.mask, pattern: t.pattern };
    };
    const triggers = kept.map(triggerOf);
    const starts = opts.recordStarts ? startRuns.map((rs) => rs.map((r) => ({ restart: r.restart, reached: r.bestA !== null, trigger: triggerOf(r) }))) : undefined;
    // The median and MAD come from the reference labels, so every norm is compared as measured; the shrink
    // factors only describe the schedule.
    const statNorms = triggers.map((t) => t.l1Norm);
    const { shrinks } = budgetAdjusted(statNorms, runs.map((r) => r.normAt), runs.map((r) => r.phase === "full"));
    return { family, runs: kept, triggers, steps, statNorms, budgetShrink: shrinks[0] ?? 1, restartNorms, starts };
  };

  const scans: FamilyScan[] = [];
  const release = async () => {
    const open = [...compiled.values()];
    compiled.clear();
    for (const c of open) await c.session.release();
  };
  try {
    // A family's compiled steps are released before the next family's (no step is shared across families).
    for (const family of families) {
      scans.push(await scanFamily(family));
      await release();
    }
  } finally {
    await release();
  }

  // The held-out images the held-out test reads (scoreScan's heldOutImages).
  const nTested = Math.min(nHeld, o.evalImages);
  const heldEval = heldX.subarray(0, nTested * per);
  // The natural-feature check's images: the held-out ones, topped up with optimization images to evalImages
  // (with a handful of clean images, as the 5 CSAW faces, one held-out image would make no source curve).
  const nSrcOpt = Math.max(0, Math.min(nOpt, o.evalImages - heldEval.length / per));
  const srcX = new Float32Array(heldEval.length + nSrcOpt * per);
  srcX.set(heldEval);
  srcX.set(optPool.subarray(0, nSrcOpt * per), heldEval.length);
  const raw: Partial<Record<TriggerFamily, NcRawScore[]>> = {};
  for (const scan of scans) {
    const success = await heldOutSuccess(model, scan.triggers, heldEval, heldY, slots);
    const startScores = scan.starts ? await scoreStarts(model, scan.starts, heldEval, heldY, slots) : undefined;
    const full = scan.runs.map((r, i) => (r.phase === "full" ? i : -1)).filter((i) => i >= 0);
    const curves = (opts.sourceCurves ?? opts.naturalCheck) === true ? await sourceTest(model, full.map((i) => scan.triggers[i]), srcX, slots) : [];
    const curveOf = new Map(full.map((i, k) => [i, curves[k]]));
    raw[scan.family] = scan.runs.map((r, i): NcRawScore => ({
      l1Norm: scan.triggers[i].l1Norm,
      statNorm: scan.statNorms[i],
      reference: isRef.has(r.label),
      attackSuccess: success[i],
      phase: r.phase,
      ...(r.phase === "screen" ? { rung: r.normAt.length - 1 } : {}),
      steps: scan.steps[i],
      reached: r.bestA !== null,
      lambda: r.lambda,
      ...(scan.restartNorms[i].length > 1 ? { restartNorms: scan.restartNorms[i] } : {}),
      ...(startScores && startScores[i].length ? { starts: startScores[i] } : {}),
      ...(curveOf.get(i) ? { sources: curveOf.get(i)!.curves, transfer: curveOf.get(i)!.transfer } : {}),
      ...(scan.family === "mask" ? { spread: maskSpread(scan.triggers[i].mask, h, w) } : {}),
    }));
  }
  phaseSeconds.heldOut = lap();
  let headShift: NeuralCleanseResult["headShift"];
  if (opts.headShift ?? true) {
    // FST learns on every clean image but the held-out ones (the optimization images and those past maxImages).
    const fstRows = [...data.order.subarray(0, nOpt), ...data.order.subarray(data.n)].slice(0, HEAD_SHIFT_MAX_IMAGES).sort((p, q) => p - q);
    // The verdict reads the shares only with as many images in the held-out test: below that, FST and the
    // passes would be spent on evidence nothing reads.
    headShift = nTested < HEAD_SHIFT_MIN_IMAGES
      ? { skipped: `${nTested} held-out image(s) in the held-out test, fewer than the ${HEAD_SHIFT_MIN_IMAGES} the head-shift shares need` }
      : await measureHeadShift(model, scans, raw, clean, fstRows, heldX, heldY, slots, o.seed);
  }
  const scored = scoreScan(labels, raw, { scale: o.scale, fdr: o.fdr, minHeldOutSuccess: o.minHeldOutSuccess, hw, heldOutImages: nTested, naturalCheck: opts.naturalCheck });
  const results = scored.labels;
  const flagged = scored.flagged;
  const scanOf = (f: TriggerFamily) => scans.find((x) => x.family === f)!;

  // Triggers shown: each flag's own trigger, then the first family's smallest norms.
  const shown: ReversedTrigger[] = [];
  const seen = new Set<string>();
  const show = (t: ReversedTrigger) => {
    const key = `${t.family ?? "mask"}:${t.label}`;
    if (seen.has(key)) return;
    seen.add(key);
    shown.push(t);
  };
  for (const f of families) results.forEach((l, i) => l[f]?.flagged && show(scanOf(f).triggers[i]));
  const first = scans[0].triggers;
  first.map((_, i) => i).sort((p, q) => first[p].l1Norm - first[q].l1Norm).slice(0, REPORTED_SMALLEST).forEach((i) => show(first[i]));

  const familyStats: NeuralCleanseResult["families"] = {};
  for (const f of families) familyStats[f] = { ...scored.families[f]!, budgetShrink: scanOf(f).budgetShrink };
  return {
    labels: results,
    medianNorm: familyStats[families[0]]!.median,
    mad: familyStats[families[0]]!.mad,
    flagged,
    families: familyStats,
    seconds: (performance.now() - t0) / 1000,
    phaseSeconds,
    triggers: shown,
    ...(opts.keepTriggers ? { allTriggers: scans.flatMap((x) => x.triggers) } : {}),
    shape: [c, h, w],
    inputScale: o.inputScale,
    example: heldX.slice(0, per),
    images: { optimize: nOpt, heldOut: nTested, sha256: createHash("sha256").update(new Uint8Array(data.x.buffer, data.x.byteOffset, data.x.byteLength)).digest("hex") },
    imagePasses,
    settings: { ...o, shortlist: shortCount, families, rungs },
    ...(headShift ? { headShift } : {}),
  };
}

/**
 * The head-shift evidence (head-shift-evidence.ts): B's output layer learned again by FST on the clean rows
 * `fstRows` (never the held-out images), then the triggers headShiftCandidates picks in HEAD_SHIFT_MEASURED_FAMILIES
 * measured on B and on it with every held-out image; the measurements go into the raw scores, where scoreScan
 * reads them.
 */
async function measureHeadShift(
  model: Model,
  scans: readonly { family: TriggerFamily; triggers: ReversedTrigger[] }[],
  raw: Partial<Record<TriggerFamily, NcRawScore[]>>,
  clean: Dataset,
  fstRows: readonly number[],
  heldX: Float32Array,
  heldY: Int32Array | null,
  slots: number,
  seed: number,
): Promise<NonNullable<NeuralCleanseResult["headShift"]>> {
  const t0 = performance.now();
  const per = model.inputShape[0] * model.inputShape[1] * model.inputShape[2];
  const nHeld = heldX.length / per;
  if (!clean.labels) return { skipped: "the clean data has no labels to learn an output layer from" };
  const shifted = await headShiftedModel(model, pickRows(clean, fstRows, `${clean.name} (all but Neural Cleanse's held-out images)`), seed);
  if ("skipped" in shifted) return { skipped: `FST: ${shifted.skipped}` };
  let measured = 0;
  // The shifted network's answers on the held-out images, so a label it no longer answers is not read (shiftReadable).
  const own = heldY ? ownRecognised(await predictLabels(shifted.model, memoryDataset("held-out images", model.inputShape, heldX, heldY)), heldY) : undefined;
  for (const scan of scans.filter((x) => HEAD_SHIFT_MEASURED_FAMILIES.includes(x.family))) {
    const rs = raw[scan.family]!;
    const idx = headShiftCandidates(rs.map((r) => r.statNorm));
    const picked = idx.map((i) => scan.triggers[i]);
    const before = await heldOutSuccess(model, picked, heldX, heldY, slots);
    const after = await heldOutSuccess(shifted.model, picked, heldX, heldY, slots);
    idx.forEach((i, k) => (rs[i].headShift = { success: before[k], shifted: after[k], ...(own ? { own: own(picked[k].label) } : {}) }));
    measured += idx.length;
  }
  return { measured, heldOut: nHeld, seconds: (performance.now() - t0) / 1000 };
}

/** Per label: its held-out images and how many of them `pred` answers with it. */
export function ownRecognised(pred: Int32Array, y: Int32Array): (label: number) => { images: number; recognised: number } {
  const by = new Map(countByLabel(y, (i) => pred[i] === y[i]).map((c) => [c.label, c]));
  return (label) => ({ images: by.get(label)?.n ?? 0, recognised: by.get(label)?.hits ?? 0 });
}

/** Choices of the flag rule that only the statistics read (bench:detect --rescore compares them on saved scans). */
export interface ScoreRule {
  /** The anomaly index's null (default "normal"; see EvidenceOptions.nullDistribution). */
  nullDistribution?: NullDistribution;
  /**
   * Split the FDR level over the trigger families (default true): a label is flagged when any family flags it,
   * so with two families at 0.05 each its error rate could reach 0.1; at 0.05 / families each it stays at 0.05
   * (Bonferroni over the families).
   */
  splitFamilies?: boolean;
  /** Combine the mask family's norm index with its spread's (default false, measured in docs/neural-cleanse-measurements.md; see nc-evidence.ts and nc-compact.ts). */
  compactness?: boolean;
  /** The confirm-and-exclude loop for further targets (default "off", one round; see LoopRule in nc-evidence.ts). */
  loop?: LoopRule;
  /** Flag by the head-shift evidence where it was measured (default true; head-shift-evidence.ts). */
  headShift?: boolean;
  /** Score the norms once more without the labels the head shift flagged (default true; headShiftExcludedFlags). */
  headShiftExclude?: boolean;
  /** Withdraw a blend-family flag whose trigger keeps its success under the head shift (default true; headShiftVeto). */
  headShiftVeto?: boolean;
  /** Each label's anomaly index against the other labels only (default false; EvidenceOptions.leaveOut). */
  leaveOut?: boolean;
}

/** The flag rule's defaults (docs/neural-cleanse-measurements.md compares the others on the same scans). */
export const DEFAULT_SCORE_RULE: Required<ScoreRule> = { nullDistribution: "normal", splitFamilies: true, compactness: false, loop: "off", headShift: true, headShiftExclude: true, headShiftVeto: true, leaveOut: false };

/** One family's raw scores as the measurements nc-evidence.ts reads. */
function labelMeasures(labels: readonly number[], rs: readonly NcRawScore[], notReference: ReadonlySet<number> = new Set()): LabelMeasure[] {
  return rs.map((r, i) => ({ label: labels[i], norm: r.statNorm, reached: r.reached, heldOutSuccess: r.attackSuccess, restartNorms: r.restartNorms, reference: (r.reference ?? true) && !notReference.has(i), nullNorm: r.nullNorm, sources: r.sources, spread: r.spread }));
}

/**
 * Labels the norm statistics flag once the labels the head shift confirmed (`byShift`) leave the reference
 * labels, restricted to those already anomalous with every label in the statistics (small-side index > 2, the
 * paper's rule) that only the FDR bar held back. A confirmed target with a small norm widens the MAD of the
 * labels it stays among, and so hides a second target (multi_trigger: its first target, index 2.4 and q 0.08
 * with its second target among the references, q 0.009 without). The candidate restriction is what keeps
 * natural labels out: without it a truncated sample's MAD made Fashion-MNIST's bag an outlier
 * (docs/neural-cleanse-measurements.md, "Head-shift evidence"). Returns [index, reason] pairs.
 */
export function headShiftExcludedFlags(labels: readonly number[], rs: readonly NcRawScore[], first: readonly NcFamilyScore[], firstMedian: number, byShift: readonly number[], opts: EvidenceOptions): [number, string][] {
  const out = new Set(byShift);
  const ev = familyEvidence(labelMeasures(labels, rs, out), opts);
  const names = byShift.map((i) => labels[i]).join(", ");
  const added: [number, string][] = [];
  ev.perLabel.forEach((e, i) => {
    if (out.has(i) || first[i].flagged || !e.flagged) return;
    if (!(first[i].anomalyIndex > ANOMALY_THRESHOLD && rs[i].statNorm < firstMedian && e.small)) return;
    added.push([i, `anomaly index ${first[i].anomalyIndex.toFixed(2)} > ${ANOMALY_THRESHOLD} with every label in the statistics; without the head shift's target(s) ${names} among the reference labels: ${e.reasons.join("; ")}`]);
  });
  return added;
}

/**
 * The statistics of a scan from its per-label measurements (the whole scan, or every shard of one merged):
 * per family the plain anomaly index over all labels and the evidence of nc-evidence.ts; a label is flagged
 * when any family flags it.
 */
export function scoreScan(
  labels: readonly number[],
  raw: Partial<Record<TriggerFamily, readonly NcRawScore[]>>,
  o: { scale: NormScale; fdr: number; minHeldOutSuccess: number; hw: number; heldOutImages: number; naturalCheck?: boolean; naturalScale?: number } & ScoreRule,
): { labels: NcLabelResult[]; flagged: number[]; families: Partial<Record<TriggerFamily, Omit<NcFamilyStats, "budgetShrink">>> } {
  const fams = TRIGGER_FAMILIES.filter((f) => raw[f] !== undefined);
  if (fams.length === 0) throw new Error("scoreScan: no family measured");
  const scores: Partial<Record<TriggerFamily, NcFamilyScore[]>> = {};
  const families: Partial<Record<TriggerFamily, Omit<NcFamilyStats, "budgetShrink">>> = {};
  // The first family in raw's order leads (detectBackdoor passes them in scan order).
  const order = (Object.keys(raw) as TriggerFamily[]).filter((f) => fams.includes(f));
  const evidenceOptions: EvidenceOptions = { compactness: o.compactness ?? DEFAULT_SCORE_RULE.compactness, loop: o.loop ?? DEFAULT_SCORE_RULE.loop, leaveOut: o.leaveOut ?? DEFAULT_SCORE_RULE.leaveOut, scale: o.scale, fdr: o.fdr, minHeldOutSuccess: o.minHeldOutSuccess, heldOutImages: o.heldOutImages, naturalCheck: o.naturalCheck, naturalScale: o.naturalScale, nullDistribution: o.nullDistribution ?? DEFAULT_SCORE_RULE.nullDistribution, families: (o.splitFamilies ?? DEFAULT_SCORE_RULE.splitFamilies) ? fams.length : 1 };
  for (const f of order) {
    const rs = raw[f]!;
    if (rs.length !== labels.length) throw new Error(`scoreScan: ${rs.length} ${f} scores for ${labels.length} labels`);
    const ev = familyEvidence(labelMeasures(labels, rs), evidenceOptions);
    scores[f] = rs.map((r, i) => ({
      ...r,
      anomalyIndex: ev.perLabel[i].index,
      ...(ev.perLabel[i].combined !== undefined ? { spreadIndex: ev.perLabel[i].spreadIndex, combinedIndex: ev.perLabel[i].combined } : {}),
      flagged: ev.perLabel[i].flagged,
      confidence: ev.perLabel[i].confidence,
      qValue: ev.perLabel[i].qValue,
      ...(ev.perLabel[i].reach !== undefined ? { naturalReach: ev.perLabel[i].reach } : {}),
      reasons: ev.perLabel[i].reasons,
    }));
    const med = o.scale === "log" ? Math.exp(ev.median) : ev.median;
    families[f] = { median: med, mad: ev.mad, flagged: labels.filter((_, i) => ev.perLabel[i].flagged), rounds: ev.rounds };
  }
  // In the blend family a flag of the norm statistics must also pass the head shift (headShiftVeto): a trigger
  // that keeps its success once B's output layer is learned again draws the label's natural features.
  if (o.headShiftVeto ?? DEFAULT_SCORE_RULE.headShiftVeto)
    for (const f of order.filter((x) => HEAD_SHIFT_VETO_FAMILIES.includes(x))) {
      const st = families[f]!;
      raw[f]!.forEach((r, i) => {
        const sc = scores[f]![i];
        const why = sc.flagged ? headShiftVeto(r.headShift, o.heldOutImages) : null;
        if (why === null) return;
        scores[f]![i] = { ...sc, flagged: false, reasons: [...sc.reasons, why] };
        st.flagged = st.flagged.filter((l) => l !== labels[i]);
      });
    }
  // The head-shift evidence (head-shift-evidence.ts) adds labels the norm statistics flagged in no family; for
  // a label they flagged it is a further reason only, so the trigger that represents it (flaggedTriggers: the
  // flagging family's) stays the one they chose.
  if (o.headShift ?? DEFAULT_SCORE_RULE.headShift)
    for (const f of order.filter((x) => HEAD_SHIFT_FAMILIES.includes(x))) {
      const st = families[f]!;
      const byShift: number[] = [];
      raw[f]!.forEach((r, i) => {
        const v = headShiftVerdict({ statNorm: r.statNorm, attackSuccess: r.attackSuccess, reached: r.reached, headShift: r.headShift }, { median: st.median, minHeldOutSuccess: o.minHeldOutSuccess, heldOutImages: o.heldOutImages });
        if (v.reason === null) return;
        const sc = scores[f]![i];
        if (v.flagged && !order.some((g) => scores[g]![i].flagged)) {
          scores[f]![i] = { ...sc, flagged: true, reasons: [v.reason] };
          st.flagged = [...st.flagged, labels[i]].sort((p, q) => p - q);
          byShift.push(i);
        } else sc.reasons.push(v.reason);
      });
      if (byShift.length > 0 && (o.headShiftExclude ?? DEFAULT_SCORE_RULE.headShiftExclude)) {
        const added = headShiftExcludedFlags(labels, raw[f]!, scores[f]!, st.median, byShift, { ...evidenceOptions, loop: "off" });
        for (const [i, reason] of added) {
          if (order.some((g) => scores[g]![i].flagged)) continue;
          scores[f]![i] = { ...scores[f]![i], flagged: true, reasons: [reason] };
          st.flagged = [...st.flagged, labels[i]].sort((p, q) => p - q);
        }
      }
    }
  const results = labels.map((label, i): NcLabelResult => {
    const primary = scores[order[0]]![i];
    const r: NcLabelResult = { label, ...primary, flagged: false, flaggedBy: [], confidence: 0, reasons: [] };
    let best: TriggerFamily = order[0];
    for (const f of order) {
      const score = scores[f]![i];
      if (score.flagged) r.flaggedBy.push(f);
      if (f === "blend") r.blend = { ...score, alpha: score.l1Norm / o.hw };
      else r.mask = score;
      if (score.confidence > scores[best]![i].confidence) best = f;
    }
    r.flagged = r.flaggedBy.length > 0;
    r.confidence = Math.max(...order.map((f) => scores[f]![i].confidence));
    r.reasons = (r.flagged ? r.flaggedBy : [best]).flatMap((f) => scores[f]![i].reasons.map((x) => `${f}: ${x}`));
    return r;
  });
  const flagged = results.filter((r) => r.flagged).map((r) => r.label).sort((p, q) => p - q);
  return { labels: results, flagged, families };
}

/** One reversed trigger per flagged label: that of the family that flagged it (the mask's when both did). */
export function flaggedTriggers(r: Pick<NeuralCleanseResult, "flagged" | "triggers">): ReversedTrigger[] {
  return r.flagged.map((label) => {
    const t = r.triggers.find((x) => x.label === label);
    if (!t) throw new Error(`Neural Cleanse result: flagged label ${label} has no trigger`);
    return t;
  });
}

/** Validates a family list: known names, no duplicates, at least one. */
export function checkFamilies(families: readonly string[]): TriggerFamily[] {
  if (families.length === 0) fail("Neural Cleanse: no trigger family to scan (expected mask, blend or both)");
  const seen = new Set<string>();
  for (const f of families) {
    if (!(TRIGGER_FAMILIES as readonly string[]).includes(f)) fail(`unknown trigger family "${f}" (expected ${TRIGGER_FAMILIES.join(" or ")})`);
    if (seen.has(f)) fail(`trigger family ${f} is listed twice`);
    seen.add(f);
  }
  return families as TriggerFamily[];
}

/** Every recorded start's norm, whether it reached the threshold and its trigger's held-out success, per label. */
async function scoreStarts(model: Model, starts: { restart: number; reached: boolean; trigger: ReversedTrigger }[][], x: Float32Array, y: Int32Array | null, slots: number): Promise<NcStartScore[][]> {
  const success = await heldOutSuccess(model, starts.flat().map((s) => s.trigger), x, y, slots);
  let k = 0;
  return starts.map((rs) => rs.map((s) => ({ restart: s.restart, norm: s.trigger.l1Norm, reached: s.reached, heldOutSuccess: success[k++] })));
}

/**
 * Fraction of held-out images sent to each trigger's label when stamped. Images whose true label is the
 * trigger's label are left out (they would count as successes without any trigger), unless no other remain.
 */
async function heldOutSuccess(model: Model, triggers: ReversedTrigger[], x: Float32Array, y: Int32Array | null, slots: number): Promise<number[]> {
  const [c, h, w] = model.inputShape;
  const per = c * h * w;
  const e = x.length / per;
  const { graph, pred } = buildStampGraph(model);
  const out: number[] = [];
  const chunk = Math.max(1, Math.min(slots, Math.floor(1024 / e)));
  const xt = tensor("float32", [e, c, h, w], x);
  await withSession(graph, async (session) => {
    for (let start = 0; start < triggers.length; start += chunk) {
      const part = triggers.slice(start, start + chunk);
      const res = await session.run({
        nc_mask: tensor("float32", [part.length, 1, h, w], concat(part.map((t) => t.mask), h * w)),
        nc_pattern: tensor("float32", [part.length, c, h, w], concat(part.map((t) => t.pattern), per)),
        nc_x: xt,
      });
      const p = res[pred].data as BigInt64Array;
      part.forEach((t, i) => {
        let hits = 0, count = 0, hitsAll = 0;
        for (let j = 0; j < e; j++) {
          const hit = Number(p[i * e + j]) === t.label;
          if (hit) hitsAll++;
          if (y && y[j] === t.label) continue;
          count++;
          if (hit) hits++;
        }
        out.push(count > 0 ? hits / count : hitsAll / e);
      });
    }
  });
  return out;
}

/**
 * The natural-feature check (nc-sources.ts): each trigger stamped on images x with its mask scaled by every κ
 * of SOURCE_SCALES; per trigger, the images that reach its label per source class (the clean prediction).
 */
async function sourceTest(model: Model, triggers: ReversedTrigger[], x: Float32Array, slots: number): Promise<{ curves: SourceCurve[]; transfer: TriggerTransfer }[]> {
  const [c, h, w] = model.inputShape;
  const per = c * h * w;
  const e = x.length / per;
  if (triggers.length === 0 || e === 0) return triggers.map(() => ({ curves: [], transfer: { images: 0, to: [] } }));
  const { graph, pred } = buildStampGraph(model);
  const xt = tensor("float32", [e, c, h, w], x);
  const jobs = triggers.flatMap((t) => SOURCE_SCALES.map((k) => ({ mask: Float32Array.from(t.mask, (v) => v * k), pattern: t.pattern })));
  const preds: Int32Array[] = [];
  let clean: ArrayLike<number> = [];
  const chunk = Math.max(1, Math.min(slots, Math.floor(1024 / e)));
  await withSession(graph, async (session) => {
    const run = async (part: { mask: Float32Array; pattern: Float32Array }[]): Promise<Int32Array[]> => {
      const res = await session.run({
        nc_mask: tensor("float32", [part.length, 1, h, w], concat(part.map((t) => t.mask), h * w)),
        nc_pattern: tensor("float32", [part.length, c, h, w], concat(part.map((t) => t.pattern), per)),
        nc_x: xt,
      });
      const p = res[pred].data as BigInt64Array;
      return part.map((_, i) => Int32Array.from({ length: e }, (_, j) => Number(p[i * e + j])));
    };
    // A zero mask leaves the images as they are: their clean classes.
    [clean] = await run([{ mask: new Float32Array(h * w), pattern: new Float32Array(per) }]);
    for (let start = 0; start < jobs.length; start += chunk) preds.push(...(await run(jobs.slice(start, start + chunk))));
  });
  const n = SOURCE_SCALES.length;
  return triggers.map((t, i) => {
    const p = preds.slice(i * n, (i + 1) * n);
    return { curves: sourceCurves(t.label, clean, p), transfer: transferCounts(t.label, clean, p) };
  });
}
