// Fine-Pruning (Liu, Dolan-Gavitt & Garg, RAID 2018): prune the last conv layer's most dormant channels
// until clean validation accuracy has dropped by `drop` points (default 4, the paper's stopping point), then
// fine-tune the pruned network on the clean validation data with the pruned channels held at zero. Pruning
// removes the neurons the backdoor hides in; fine-tuning recovers clean accuracy and weakens backdoor
// behaviour that pruning left in still-active neurons.
//
// The channels are held at zero by masking the conv's output during training (their gradients are then
// zero too); the repaired network is the fine-tuned one with those channels' kernel and bias zeroed again,
// so the saved weights say exactly what was pruned. G = gFromPair(B, repaired).
//
// With --stop recovered, fine-tuning stops when clean accuracy has recovered (the paper's rule): a share of the
// clean data (--holdout) is held out of fine-tuning, and after each epoch the network's accuracy on it is
// compared with B's on the same images (train/early-stop.ts). --epochs is the upper bound. The default
// (--stop epochs) runs every epoch on all the clean data.
import { OptionError } from "./defense.js";
import type { Graph } from "../graph/ir.js";
import type { OptimizerConfig } from "../graph/optimizers.js";
import { predictLabels, predictLabelsEach } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { ReportEvalResult, ReportG, ReportPruning } from "../report/types.js";
import { train, type EpochStats } from "../train/trainer.js";
import { prefixActivations, tailCut, tailModel } from "../train/tail.js";
import { withParams } from "../model/params.js";
import { runningStatistics, withStatistics, type BatchNormMode } from "../train/batch-norm-stats.js";
import { evalResult, evaluatePair, type SplitPredictions } from "../eval/evaluate.js";
import { gFromPair } from "./g-model.js";
import {
  cacheAll,
  cachedPredictions,
  channelMask,
  checkDrops,
  evalLabels,
  PruneEngine,
  prunedModel,
  pruneTarget,
  pruningSection,
  selectDrop,
  sweep,
  type PruneDefenseOptions,
  type PruneTarget,
  type SweepResult,
} from "./pruning.js";
import { lapTimer } from "../util/timing.js";
import { fail } from "../errors.js";
import { countCorrect } from "../eval/evaluate.js";
import { memoryDataset } from "../io/dataset.js";
import { RecoveryStop, type StopReason } from "../train/early-stop.js";
import { gather, holdoutSplit } from "../train/split.js";

export const DEFAULT_FINE_PRUNE_DROP = 4;
export const DEFAULT_FINE_TUNE = { epochs: 5, lr: 1e-4, optimizer: "adam" as const, batchSize: 64 };
/**
 * What fine-tuning trains: "all" parameters, or only the "tail" after the cut of train/tail.ts (the prefix
 * frozen, its activations computed once). The default is DEFAULT_TUNE; the README's PyTorch section has the
 * measurements it rests on.
 */
export const TUNE_CHOICES = ["all", "tail"] as const;
export type Tune = (typeof TUNE_CHOICES)[number];
export const DEFAULT_TUNE: Tune = "all";
/**
 * When fine-tuning ends: "epochs" (default) runs every epoch on all the clean data; "recovered" holds out a
 * share of it and stops once held-out clean accuracy is back at B's or has not improved for STOP_PATIENCE
 * epochs, at most --epochs. "recovered" ran 1.5–3.7× faster but left a higher ASR in every measured run (README,
 * PyTorch exports), so it is not the default.
 */
export const STOP_CHOICES = ["recovered", "epochs"] as const;
export type StopRule = (typeof STOP_CHOICES)[number];
export const DEFAULT_STOP: StopRule = "epochs";
export const DEFAULT_FINE_PRUNE_HOLDOUT = 0.2;
export const STOP_PATIENCE = 2;

/** What the stopping rule saw: B's held-out accuracy, the network's after each epoch, and why it stopped. */
export interface FineTuneStop {
  rule: StopRule;
  holdout?: number;
  heldOutImages?: number;
  /** B's accuracy on the held-out images: the level "recovered" means. */
  baseAccuracy?: number;
  heldOutAccuracy?: number[];
  epochsRun: number;
  reason: StopReason | "epochs";
}

export interface FinePruneOptions extends Omit<PruneDefenseOptions, "drops"> {
  /** Prune until clean validation accuracy has dropped by this many percentage points (default 4). */
  drop?: number;
  epochs?: number;
  lr?: number;
  optimizer?: "adam" | "sgd";
  seed?: number;
  trainBatchSize?: number;
  /** BatchNorm while fine-tuning (train/batch-norm-training.ts); default batch statistics. */
  batchNorm?: BatchNormMode;
  tune?: Tune;
  stop?: StopRule;
  /** Share of the clean data held out of fine-tuning for the stopping rule (stop "recovered"; default 0.2). */
  holdout?: number;
  onEpoch?: (s: EpochStats) => void;
  onBatch?: (done: number, total: number, loss: number) => void;
}

export interface FinePruneResult {
  target: PruneTarget;
  sweep: SweepResult;
  pruning: ReportPruning;
  drop: number;
  reached: boolean;
  /** Pruned channels, in pruning order. */
  channels: number[];
  /** B, the pruned network before fine-tuning, and the repaired network, on the evaluation data. */
  before: ReportEvalResult;
  pruned: ReportEvalResult;
  after: ReportEvalResult;
  evaluatedOn: "test" | "valid";
  history: EpochStats[];
  tune: Tune;
  /** The value fine-tuning started from: the model input for "all", the tail cut for "tail". */
  tunedFrom: string;
  tunedParams: number;
  totalParams: number;
  stop: FineTuneStop;
  repaired: Model;
  g: Graph;
  gRates: ReportG;
  timings: Record<string, number>;
  /** How BatchNorm was trained in fine-tuning, where the network has any (train/batch-norm-training.ts). */
  batchNorm?: string;
}

export function checkFineTune(epochs: number, lr: number): void {
  if (!Number.isInteger(epochs) || epochs < 0) throw new OptionError("epochs", `must be a non-negative integer, got ${epochs}`);
  if (!Number.isFinite(lr) || lr <= 0) throw new OptionError("lr", `must be a positive number, got ${lr}`);
}

export async function finePrune(model: Model, opts: FinePruneOptions): Promise<FinePruneResult> {
  const [drop] = checkDrops([opts.drop ?? DEFAULT_FINE_PRUNE_DROP]);
  const epochs = opts.epochs ?? DEFAULT_FINE_TUNE.epochs;
  const lr = opts.lr ?? DEFAULT_FINE_TUNE.lr;
  checkFineTune(epochs, lr);
  // Checked before the sweep, which can take minutes.
  const tune = opts.tune ?? DEFAULT_TUNE;
  if (!TUNE_CHOICES.includes(tune)) throw new OptionError("tune", `must be one of ${TUNE_CHOICES.join(", ")}, got ${String(tune)}`);
  const rule = opts.stop ?? DEFAULT_STOP;
  if (!STOP_CHOICES.includes(rule)) throw new OptionError("stop", `must be one of ${STOP_CHOICES.join(", ")}, got ${String(rule)}`);
  const holdout = opts.holdout ?? DEFAULT_FINE_PRUNE_HOLDOUT;
  if (!(holdout > 0 && holdout < 1)) throw new OptionError("holdout", `must be in (0, 1), got ${holdout}`);
  // The held-out images (stop "recovered"): fine-tuning never sees them.
  const split = rule === "recovered" ? holdoutSplit(opts.valid.size, holdout, opts.seed ?? 0) : undefined;
  if (split && (split.held.length === 0 || split.train.length === 0)) fail(`fine-prune: --holdout ${holdout} leaves no images to fine-tune on or to hold out from ${opts.valid.size}; use --stop epochs or another --holdout`);
  const target = pruneTarget(model, opts.layer);
  const { timings, lap } = lapTimer();

  const engine = await PruneEngine.create(model, target, { batchSize: opts.batchSize });
  let s: SweepResult, sel: { channelsPruned: number; reached: boolean }, channels: number[];
  let b: SplitPredictions, pruned: ReportEvalResult;
  let validLabels: Int32Array;
  let bValid: Int32Array | undefined;
  try {
    const data = await cacheAll(engine, model, opts);
    lap("cache");
    validLabels = data.valid.labels;
    s = await sweep(engine, data.valid, data.poisoned, opts.order ?? "increasing", opts.onStep);
    sel = selectDrop(s.correct, s.nClean, drop);
    channels = s.ranking.slice(0, sel.channelsPruned);
    lap("sweep");
    b = await cachedPredictions(engine, data, channelMask(target.channels, []));
    pruned = evalResult(await cachedPredictions(engine, data, channelMask(target.channels, channels)), evalLabels(data));
    // B on the clean data from the cached activations: its held-out accuracy is the stopping rule's target.
    if (split) bValid = await engine.predict(data.valid, channelMask(target.channels, []));
  } finally {
    await engine.release();
  }

  const optimizer: OptimizerConfig = (opts.optimizer ?? DEFAULT_FINE_TUNE.optimizer) === "sgd" ? { kind: "sgd", lr } : { kind: "adam", lr };
  const start = prunedModel(model, target, channels, `${model.name}_pruned`);
  const x = opts.valid.read(0, opts.valid.size);
  // The pruned layer's channel mask (target.conv) must lie inside what is trained: the cut rule sees to it.
  const cut = tailCut(start, target.conv);
  const totalParams = cut.totalParams;
  const tail = tune === "tail" && cut.value !== start.input;
  const per = model.inputShape[0] * model.inputShape[1] * model.inputShape[2];
  let tuneData = { x, y: validLabels, shape: model.inputShape };
  let heldData = split && { ...gather(x, validLabels, per, split.held), shape: model.inputShape };
  if (split) tuneData = { ...gather(x, validLabels, per, split.train), shape: model.inputShape };
  if (tail) {
    tuneData = await prefixActivations(start, cut, tuneData, { batchSize: opts.batchSize });
    if (heldData) heldData = await prefixActivations(start, cut, heldData, { batchSize: opts.batchSize });
    lap("prefix");
  }
  const tuned = tail ? tailModel(start, cut) : start;
  const stop: FineTuneStop = { rule, epochsRun: 0, reason: "epochs" };
  let stopAfterEpoch: ((s: EpochStats, current: () => Promise<Model>) => Promise<boolean>) | undefined;
  if (split && heldData && bValid) {
    const held = memoryDataset(`${opts.valid.name} (held out)`, heldData.shape, heldData.x, heldData.y);
    const bHeld = Int32Array.from(split.held, (j) => bValid![j]);
    const base = countCorrect(bHeld, heldData.y) / heldData.y.length;
    const recovery = new RecoveryStop(base, STOP_PATIENCE);
    const accs: number[] = [];
    Object.assign(stop, { holdout, heldOutImages: heldData.y.length, baseAccuracy: base, heldOutAccuracy: accs });
    stopAfterEpoch = async (_s, current) => {
      const acc = countCorrect(await predictLabels(await current(), held, { batchSize: opts.batchSize }), heldData.y) / heldData.y.length;
      accs.push(acc);
      const d = recovery.after(acc);
      if (d.reason) stop.reason = d.reason;
      return d.stop;
    };
  }
  const trainedPart = await train(tuned, tuneData, {
    epochs,
    batchSize: opts.trainBatchSize ?? DEFAULT_FINE_TUNE.batchSize,
    optimizer,
    seed: opts.seed ?? 0,
    channelMasks: new Map([[target.conv, channelMask(target.channels, channels)]]),
    batchNorm: opts.batchNorm,
    onEpoch: opts.onEpoch,
    onBatch: opts.onBatch,
    stopAfterEpoch,
  });
  stop.epochsRun = trainedPart.history.length;
  // A tail trained with batch statistics carries re-estimated running statistics too.
  const fromTail = (t: Model) => withStatistics(withParams(start, new Map(cut.params.map((p) => [p, t.graph.initializers.get(p)!]))), runningStatistics(t.graph));
  const trained = { history: trainedPart.history, model: tail ? fromTail(trainedPart.model) : trainedPart.model };
  const repaired = prunedModel(trained.model, target, channels, `${model.name}_fine_pruned`);
  lap("fine-tune");

  const evalDs = opts.test ?? opts.valid;
  const labels = { clean: opts.test ? opts.test.labels! : validLabels, poisoned: opts.poisoned?.labels ?? undefined };
  const [rClean, rPoisoned] = await predictLabelsEach(repaired, opts.poisoned ? [evalDs, opts.poisoned] : [evalDs], { batchSize: opts.batchSize });
  const r: SplitPredictions = { clean: rClean!, poisoned: rPoisoned };
  const { before, after, g: rates } = evaluatePair(model.numClasses, b, r, labels);
  const g = gFromPair(model, repaired, `${model.name}_fine_pruned_G`);
  lap("evaluate");

  const pruning = pruningSection(s, [{ drop, channelsPruned: sel.channelsPruned }]);
  return {
    target,
    sweep: s,
    pruning,
    drop,
    reached: sel.reached,
    channels,
    before,
    pruned,
    after,
    evaluatedOn: opts.test ? "test" : "valid",
    history: trained.history,
    batchNorm: trainedPart.batchNorm,
    tune,
    tunedFrom: tail ? cut.value : start.input,
    tunedParams: tail ? cut.tunedParams : totalParams,
    totalParams,
    stop,
    repaired,
    g,
    gRates: rates,
    timings,
  };
}
