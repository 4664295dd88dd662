// Fine-Pruning (Liu, Dolan-Gavitt & Garg, RAID 2018): prune the last conv layer's most dormant channels
// until clean validation accuracy has dropped by `drop` points (default 4, the paper's stopping point), then
// fine-tune the pruned network on the clean validation data with the pruned channels held at zero. Pruning
// removes the neurons the backdoor hides in; fine-tuning recovers clean accuracy and weakens backdoor
// behaviour that pruning left in still-active neurons.
//
// The channels are held at zero by masking the conv's output during training (their gradients are then
// zero too); the repaired network is the fine-tuned one with those channels' kernel and bias zeroed again,
// so the saved weights say exactly what was pruned. G = gFromPair(B, repaired).
import { fail } from "../errors.js";
import type { Graph } from "../graph/ir.js";
import type { OptimizerConfig } from "../graph/optimizers.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { ReportEvalResult, ReportG, ReportPruning } from "../report/types.js";
import { train, type EpochStats } from "../train/trainer.js";
import { gFromPair, gRates } from "./g-model.js";
import {
  cacheAll,
  channelMask,
  checkDrops,
  countEqual,
  evalResult,
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

export const DEFAULT_FINE_PRUNE_DROP = 4;
export const DEFAULT_FINE_TUNE = { epochs: 5, lr: 1e-4, optimizer: "adam" as const, batchSize: 64 };

export interface FinePruneOptions extends Omit<PruneDefenseOptions, "drops"> {
  /** Prune until clean validation accuracy has dropped by this many percentage points (default 4). */
  drop?: number;
  epochs?: number;
  lr?: number;
  optimizer?: "adam" | "sgd";
  seed?: number;
  trainBatchSize?: number;
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
  repaired: Model;
  g: Graph;
  gRates: ReportG;
  timings: Record<string, number>;
}

export function checkFineTune(epochs: number, lr: number): void {
  if (!Number.isInteger(epochs) || epochs < 0) fail(`--epochs must be a non-negative integer, got ${epochs}`);
  if (!Number.isFinite(lr) || lr <= 0) fail(`--lr must be a positive number, got ${lr}`);
}

export async function finePrune(model: Model, opts: FinePruneOptions): Promise<FinePruneResult> {
  const [drop] = checkDrops([opts.drop ?? DEFAULT_FINE_PRUNE_DROP]);
  const epochs = opts.epochs ?? DEFAULT_FINE_TUNE.epochs;
  const lr = opts.lr ?? DEFAULT_FINE_TUNE.lr;
  checkFineTune(epochs, lr);
  const target = pruneTarget(model, opts.layer);
  const { timings, lap } = lapTimer();

  const engine = await PruneEngine.create(model, target, { batchSize: opts.batchSize });
  let s: SweepResult, sel: { channelsPruned: number; reached: boolean }, channels: number[];
  let before: ReportEvalResult, pruned: ReportEvalResult;
  let bClean: Int32Array, bPoison: Int32Array | undefined;
  let validLabels: Int32Array;
  try {
    const data = await cacheAll(engine, model, opts);
    lap("cache");
    validLabels = data.valid.labels;
    s = await sweep(engine, data.valid, data.poisoned, opts.order ?? "increasing", opts.onStep);
    sel = selectDrop(s.correct, s.nClean, drop);
    channels = s.ranking.slice(0, sel.channelsPruned);
    lap("sweep");
    const evalSet = data.test ?? data.valid;
    const ones = channelMask(target.channels, []);
    const mask = channelMask(target.channels, channels);
    bClean = await engine.predict(evalSet, ones);
    bPoison = data.poisoned && (await engine.predict(data.poisoned, ones));
    before = evalResult(countEqual(bClean, evalSet.labels), evalSet.n, bPoison && countEqual(bPoison, data.poisoned!.labels), data.poisoned?.n);
    const pClean = await engine.predict(evalSet, mask);
    const pPoison = data.poisoned && (await engine.predict(data.poisoned, mask));
    pruned = evalResult(countEqual(pClean, evalSet.labels), evalSet.n, pPoison && countEqual(pPoison, data.poisoned!.labels), data.poisoned?.n);
  } finally {
    await engine.release();
  }

  const optimizer: OptimizerConfig = (opts.optimizer ?? DEFAULT_FINE_TUNE.optimizer) === "sgd" ? { kind: "sgd", lr } : { kind: "adam", lr };
  const start = prunedModel(model, target, channels, `${model.name}_pruned`);
  const x = opts.valid.read(0, opts.valid.size);
  const trained = await train(start, { x, y: validLabels, shape: model.inputShape }, {
    epochs,
    batchSize: opts.trainBatchSize ?? DEFAULT_FINE_TUNE.batchSize,
    optimizer,
    seed: opts.seed ?? 0,
    channelMasks: new Map([[target.conv, channelMask(target.channels, channels)]]),
    onEpoch: opts.onEpoch,
    onBatch: opts.onBatch,
  });
  const repaired = prunedModel(trained.model, target, channels, `${model.name}_fine_pruned`);
  lap("fine-tune");

  const evalDs = opts.test ?? opts.valid;
  const evalLabels = opts.test ? opts.test.labels! : validLabels;
  const rClean = await predictLabels(repaired, evalDs, { batchSize: opts.batchSize });
  const rPoison = opts.poisoned && (await predictLabels(repaired, opts.poisoned, { batchSize: opts.batchSize }));
  const pLabels = opts.poisoned?.labels ?? undefined;
  const after = evalResult(countEqual(rClean, evalLabels), evalDs.size, rPoison && countEqual(rPoison, pLabels!), opts.poisoned?.size);
  const g = gFromPair(model, repaired, `${model.name}_fine_pruned_G`);
  const rates = gRates(model.numClasses, { pred: bClean, repaired: rClean, labels: evalLabels }, rPoison && { pred: bPoison!, repaired: rPoison, labels: pLabels! });
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
    repaired,
    g,
    gRates: rates,
    timings,
  };
}
