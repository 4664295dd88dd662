// FT-SAM (Zhu et al., ICCV 2023): fine-tune B on clean data with sharpness-aware minimisation. Backdoor
// neurons sit in sharp directions of the clean loss; SAM's worst-case weight perturbation pushes the large
// norms that carry the backdoor down, which plain fine-tuning leaves alone. The adaptive variant (ASAM,
// Kwon et al. 2021) scales the perturbation by the weights' own size: per batch
//   g = ∇L(θ),  T = |θ| + η,  ε = ρ·T²g / ‖T g‖,  then the optimizer step uses ∇L(θ + ε) at θ.
// The second gradient comes from the usual training step graph run at θ + ε; its update is additive, so
// subtracting ε afterwards is the step taken from θ.
import { fail } from "../errors.js";
import { backward } from "../graph/autodiff.js";
import { tensor, type Graph, type TensorData } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { stepLr } from "../graph/optimizers.js";
import { poolBeforeRelu } from "../graph/transforms.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { buildStepGraph, oneHot, StepRunner } from "../train/trainer.js";
import { prepareBatchNorm } from "../train/batch-norm-training.js";
import { memoryDataset } from "../io/dataset.js";
import { DEFAULT_BATCH_NORM, type BatchNormMode } from "../train/batch-norm-stats.js";
import { useBatchStatistics } from "../graph/batch-norm.js";
import { mulberry32 } from "../util/random.js";
import { checkRepairData } from "./anp.js";
import { finishRepair, heldOutSplit, RoundPicker } from "./held-out-repair.js";
import { pickOptions, resolveOptions, MAX_LOOPS, SEED_OPTION, BATCH_NORM_OPTION, type OptionSpecs, type OptionValues } from "./defense.js";
import type { NcData, NcEvaluation } from "./nc-mitigation.js";
import { gather, shuffledBatches } from "../train/split.js";
import { gradientWork } from "../runtime/threads.js";

export const FT_SAM_OPTIONS = {
  epochs: { kind: "integer", description: "fine-tuning epochs over the clean data", default: 5, min: 1, max: MAX_LOOPS },
  rho: { kind: "number", description: "radius of the weight perturbation (ASAM: in |θ|-scaled units)", default: 2, min: 0, exclusiveMin: true },
  eta: { kind: "number", description: "ASAM's offset in T = |θ| + η (weights near zero still move)", default: 0.01, min: 0 },
  adaptive: { kind: "boolean", description: "ASAM (scale the perturbation by |θ|); off: plain SAM", default: true },
  lr: { kind: "number", description: "Adam learning rate", default: 1e-3, min: 0, exclusiveMin: true },
  batchSize: { kind: "integer", description: "training batch size", default: 64, min: 1, max: 65536 },
  maxDrop: { kind: "number", description: "keep the last epoch within this much held-out clean accuracy of B (fraction)", default: 0.02, min: 0, max: 1 },
  holdout: { kind: "number", description: "share of the clean data held out to choose the epoch", default: 0.2, min: 0, max: 1, exclusiveMin: true, exclusiveMax: true },
  batchNorm: BATCH_NORM_OPTION,
  seed: SEED_OPTION,
} as const satisfies OptionSpecs;

export type FtSamSettings = OptionValues<typeof FT_SAM_OPTIONS>;

export interface FtSamOptions extends Partial<FtSamSettings> {
  evalBatchSize?: number;
  onEpoch?: (e: FtSamEpoch) => void;
}

export interface FtSamEpoch {
  epoch: number;
  /** Held-out clean accuracy after the epoch (epoch 0: B). */
  heldOutAccuracy: number;
  /** Mean training loss at the perturbed weights θ + ε (the sharpness-aware loss). */
  loss: number;
  seconds: number;
}

export interface FtSamResult extends NcEvaluation {
  model: Model;
  gGraph: Graph;
  history: FtSamEpoch[];
  chosenEpoch: number;
  settings: FtSamSettings;
}

export function checkFtSamOptions(o: FtSamOptions): FtSamSettings {
  return resolveOptions(FT_SAM_OPTIONS, pickOptions(FT_SAM_OPTIONS, o));
}

export interface GradGraph {
  graph: Graph;
  loss: string;
  /** Parameter (graph input) → its gradient's output. */
  grads: Map<string, string>;
}

/** Mean CE and its gradient w.r.t. every parameter, the parameters as inputs (fed at θ each batch). */
export function lossGradGraph(model: Model, batchNorm: BatchNormMode = DEFAULT_BATCH_NORM): GradGraph {
  const g = model.graph.clone(`${model.name}_grad`);
  poolBeforeRelu(g);
  const target = g.addInput("target", "float32", ["N", model.numClasses]);
  const loss = softmaxCrossEntropy(g, model.logits, target);
  const ps = model.params.map((p) => p.value);
  for (const p of ps) g.liftInitializer(p);
  // The same BatchNorm as the step graph (buildStepGraph's default): ε must come from the loss being minimised.
  if (batchNorm === "batch") useBatchStatistics(g);
  const grads = backward(g, loss, ps);
  g.setOutputs([loss, ...ps.map((p) => grads.get(p)!)]);
  return { graph: g, loss, grads };
}

/**
 * The (A)SAM weight perturbation from the gradient at θ: ε = ρ·T²g/‖Tg‖ with T = |θ| + η (adaptive) or
 * T = 1 (plain SAM, ε = ρ·g/‖g‖). Zero when the gradient is zero.
 */
export function samPerturbation(theta: readonly Float32Array[], grad: readonly Float32Array[], rho: number, eta: number, adaptive: boolean): Float32Array[] {
  let norm = 0;
  for (let k = 0; k < theta.length; k++) {
    for (let i = 0; i < theta[k].length; i++) {
      const t = adaptive ? Math.abs(theta[k][i]) + eta : 1;
      norm += (t * grad[k][i]) ** 2;
    }
  }
  norm = Math.sqrt(norm);
  return theta.map((th, k) => {
    const e = new Float32Array(th.length);
    if (norm === 0) return e;
    for (let i = 0; i < th.length; i++) {
      const t = adaptive ? Math.abs(th[i]) + eta : 1;
      e[i] = (rho * t * t * grad[k][i]) / norm;
    }
    return e;
  });
}

export async function ftSam(model: Model, data: NcData, opts: FtSamOptions = {}): Promise<FtSamResult> {
  const s = checkFtSamOptions(opts);
  checkRepairData(model, data, "FT-SAM");
  const { clean } = data;
  const shape = clean.shape;
  const [c, h, w] = shape;
  const per = c * h * w;
  const k = model.numClasses;
  const { train: tr, accuracy: accOf } = heldOutSplit(clean, s.holdout, s.seed, "FT-SAM", opts.evalBatchSize);
  const plan = await prepareBatchNorm(model, memoryDataset("FT-SAM training images", shape, tr.x, null), { batchSize: s.batchSize, mode: s.batchNorm });
  const trainee = plan.trainee;

  const base = await accOf(model);
  const history: FtSamEpoch[] = [{ epoch: 0, heldOutAccuracy: base, loss: NaN, seconds: 0 }];
  const optimizer = { kind: "adam" as const, lr: s.lr };
  const runner = await StepRunner.create(buildStepGraph(trainee, { optimizer, batchNorm: plan.stepMode }), gradientWork(model, s.batchSize));
  const gg = lossGradGraph(trainee, plan.stepMode);
  const gradSession = await Session.create(gg.graph, gradientWork(model, s.batchSize));
  const names = trainee.params.map((p) => p.value);
  const picker = new RoundPicker(model, base, s.maxDrop);
  try {
    const rand = mulberry32(s.seed);
    const n = tr.y.length;
    let step = 0;
    for (let epoch = 1; epoch <= s.epochs; epoch++) {
      const t0 = performance.now();
      let lossSum = 0, batches = 0;
      for (const idx of shuffledBatches(n, s.batchSize, rand)) {
        const bs = idx.length;
        const b = gather(tr.x, tr.y, per, idx);
        const x = tensor("float32", [bs, c, h, w], b.x);
        const target = tensor("float32", [bs, k], oneHot(b.y, k));
        const live = runner.live();
        const feeds: Record<string, TensorData> = { [trainee.input]: x, target };
        for (const p of names) feeds[p] = live.get(p)!;
        const out = await gradSession.run(feeds, names.map((p) => gg.grads.get(p)!));
        const theta = names.map((p) => live.get(p)!.data as Float32Array);
        const eps = samPerturbation(theta, names.map((p) => out[gg.grads.get(p)!].data as Float32Array), s.rho, s.eta, s.adaptive);
        theta.forEach((t, j) => eps[j].forEach((e, i) => (t[i] += e)));
        step++;
        const r = await runner.run(x, target, stepLr(optimizer, step));
        if (!Number.isFinite(r.loss)) fail(`FT-SAM diverged in epoch ${epoch} (loss ${r.loss}); lower --lr or --rho`);
        // The update was taken at θ + ε: move back by ε.
        const after = runner.live();
        names.forEach((p, j) => {
          const t = after.get(p)!.data as Float32Array;
          eps[j].forEach((e, i) => (t[i] -= e));
        });
        lossSum += r.loss;
        batches++;
      }
      const current = await plan.finish(runner.params(), `${model.name}_ft_sam`);
      const acc = await accOf(current);
      const entry: FtSamEpoch = { epoch, heldOutAccuracy: acc, loss: lossSum / batches, seconds: (performance.now() - t0) / 1000 };
      history.push(entry);
      opts.onEpoch?.(entry);
      picker.offer(current, epoch, acc);
    }
  } finally {
    await runner.release();
    await gradSession.release();
  }
  const chosen = picker.pick();
  return { ...(await finishRepair(model, chosen.model, data, "ft_sam", opts.evalBatchSize)), history, chosenEpoch: chosen.round, settings: s, batchNorm: plan.summary };
}
