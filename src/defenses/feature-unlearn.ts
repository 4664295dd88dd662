// Feature-space unlearning, after the unlearning step of BTI-DBF(U) (Xu et al., ICLR 2024), written from the
// paper's description: the repaired network B′ is trained so that its penultimate features of an image
// stamped with a reversed trigger match B's features of the same image without it, next to the usual
// cross-entropy on the true labels. Unlearning by cross-entropy alone only has to move the logits, and it
// does so through the weights reading the stamped positions (docs/repairs.md: the real patch a few pixels away
// keeps working); matching features asks the layers below to stop producing the trigger's feature at all.
//
// Loss per batch (a share `ratio` of it stamped, true labels kept):
//   CE(B′(x), y) + weight · Σ_rows ‖φ_B′(x) − φ_B(x_clean)‖² / Σ_rows ‖φ_B(x_clean)‖²
// φ = the input of the output layer. The target of every row is B's feature of the clean image (fixed, computed
// once), so clean rows are held at B's features too (a feature-level distillation that keeps clean accuracy)
// and stamped rows are pulled to where the image would be without the trigger. The normalisation by B's
// feature energy makes `weight` independent of the layer's scale. The epoch kept is chosen on a held-out split
// (clean accuracy − reversed-trigger success) by ncUnlearn's rule (EpochKeeper).
import { fail } from "../errors.js";
import { attr, tensor, type Graph } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { stepLr } from "../graph/optimizers.js";
import { evaluateModels } from "../eval/evaluate.js";
import { forEachBatch, forwardGraph } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { withSession } from "../runtime/session.js";
import { buildStepGraph, oneHot, StepRunner } from "../train/trainer.js";
import { prepareBatchNorm } from "../train/batch-norm-training.js";
import { memoryDataset } from "../io/dataset.js";
import { gather, shuffledBatches, splitClean } from "../train/split.js";
import { mulberry32 } from "../util/random.js";
import { pickOptions, resolveOptions, MAX_LOOPS, SEED_OPTION, BATCH_NORM_OPTION, type OptionSpecs, type OptionValues } from "./defense.js";
import { gFromPair } from "./g-model.js";
import { DEFAULT_KEEP_TOLERANCE, heldOutScore, KEEP_TOLERANCE_TEXT, ncEvalSets, outputDense, stampShare, type NcData, type NcEvaluation, type ReversedTrigger } from "./nc-mitigation.js";
import { EpochKeeper } from "../train/early-stop.js";
import { gradientWork } from "../runtime/threads.js";

export const FEATURE_UNLEARN_OPTIONS = {
  weight: { kind: "number", description: "weight of the feature-matching term against the cross-entropy", default: 1, min: 0 },
  epochs: { kind: "integer", description: "most epochs (the epoch kept is chosen on a held-out clean split)", default: 10, min: 1, max: MAX_LOOPS },
  patience: { kind: "integer", description: "epochs without a better held-out score before stopping", default: 2, min: 1 },
  keepTolerance: { kind: "number", description: KEEP_TOLERANCE_TEXT, default: DEFAULT_KEEP_TOLERANCE, min: 0, max: 1 },
  holdout: { kind: "number", description: "share of the clean data held out to choose the epoch", default: 0.2, min: 0, exclusiveMin: true, max: 1, exclusiveMax: true },
  ratio: { kind: "number", description: "share of each batch stamped with a reversed trigger (true labels kept)", default: 0.2, min: 0, exclusiveMin: true, max: 1 },
  lr: { kind: "number", description: "Adam learning rate", default: 1e-3, min: 0, exclusiveMin: true },
  batchSize: { kind: "integer", description: "batch size", default: 32, min: 1, max: 65536 },
  batchNorm: BATCH_NORM_OPTION,
  seed: SEED_OPTION,
} as const satisfies OptionSpecs;

export type FeatureUnlearnSettings = OptionValues<typeof FEATURE_UNLEARN_OPTIONS>;

export interface FeatureUnlearnOptions extends Partial<FeatureUnlearnSettings> {
  evalBatchSize?: number;
  /** The network whose clean features are the targets (default: the one being repaired; prune-unlearn passes B unpruned). */
  reference?: Model;
  /** Layer value → per-channel 0/1 mask held during training (pruned channels stay at zero). */
  channelMasks?: Map<string, Float32Array>;
  onEpoch?: (e: FeatureUnlearnEpoch) => void;
}

export interface FeatureUnlearnEpoch {
  epoch: number;
  loss: number;
  heldOutAccuracy: number;
  heldOutTriggerSuccess: number;
  seconds: number;
}

export interface FeatureUnlearnResult extends NcEvaluation {
  model: Model;
  gGraph: Graph;
  /** The matched feature (a value of B's graph: the output layer's input). */
  feature: string;
  history: FeatureUnlearnEpoch[];
  chosenEpoch: number;
  settings: FeatureUnlearnSettings;
}

/** Name of the loss's extra input: B's features of the clean images of the batch, [N, F]. */
export const FEATURE_TARGET_INPUT = "feature_target";

export function checkFeatureUnlearnOptions(o: Partial<FeatureUnlearnSettings>): FeatureUnlearnSettings {
  return resolveOptions(FEATURE_UNLEARN_OPTIONS, pickOptions(FEATURE_UNLEARN_OPTIONS, o));
}

/**
 * The loss builder: CE + weight · Σ‖φ − target‖² · scale, where `scale` is 1 / Σ_rows ‖φ_B‖² per row on
 * average (a constant fed in by the caller through the target: see featureUnlearn), so that the term is a
 * relative squared error.
 */
export function featureUnlearnLoss(feature: string, width: number, weight: number, scale: number): (g: Graph, logits: string, target: string) => string {
  return (g, logits, target) => {
    const want = g.addInput(FEATURE_TARGET_INPUT, "float32", ["N", width]);
    const ce = softmaxCrossEntropy(g, logits, target);
    const d = g.op("Sub", [feature, want]);
    const rows = g.op("ReduceSum", [target], { keepdims: attr.int(0) });
    const sq = g.op("ReduceSum", [g.op("Mul", [d, d])], { keepdims: attr.int(0) });
    const match = g.op("Div", [sq, rows]);
    return g.op("Add", [ce, g.op("Mul", [match, g.scalar(weight * scale)])], {}, "feature_unlearn/loss");
  };
}

/** B's value `feature` ([N, F]) on every row of an in-memory NCHW set. */
export async function featuresOf(model: Model, feature: string, x: Float32Array, shape: readonly [number, number, number], batchSize = 256): Promise<{ data: Float32Array; width: number }> {
  const [c, h, w] = shape;
  const n = x.length / (c * h * w);
  const width = model.graph.shape(feature)[1];
  if (typeof width !== "number") fail(`feature ${feature} has no fixed width`);
  const out = new Float32Array(n * width);
  const source = { size: n, shape: [c, h, w] as [number, number, number], read: (s: number, k: number) => x.subarray(s * c * h * w, (s + k) * c * h * w) };
  await withSession(forwardGraph(model, [feature]), (s) => forEachBatch(s, source, (o, start) => out.set(o[feature].data as Float32Array, start * width), { batchSize, input: model.input }));
  return { data: out, width };
}

export async function featureUnlearn(model: Model, data: NcData, triggers: ReversedTrigger[], opts: FeatureUnlearnOptions = {}): Promise<FeatureUnlearnResult> {
  const s = checkFeatureUnlearnOptions(opts);
  if (triggers.length === 0) fail("no reversed trigger given: nothing to unlearn");
  const { clean } = data;
  if (!clean.labels) fail(`feature unlearning needs labelled clean data; ${clean.name} has no labels`);
  const shape = clean.shape;
  const [c, h, w] = shape;
  const per = c * h * w;
  const k = model.numClasses;
  const feature = outputDense(model).x;
  const graphShape = model.graph.shape(feature);
  if (graphShape.length !== 2) fail(`feature unlearning matches the output layer's input; ${feature} has shape [${graphShape}], not [N, F]`);
  const { train: tr, heldSet: heldDs } = splitClean(clean, s.holdout, s.seed, "feature unlearning");
  // B's clean features: the target of every row, fixed.
  const ref = opts.reference ?? model;
  if (!ref.graph.has(feature)) fail(`the reference network has no value ${feature}`);
  const { data: featB, width } = await featuresOf(ref, feature, tr.x, shape, opts.evalBatchSize);
  let energy = 0;
  for (const v of featB) energy += v * v;
  const n = tr.y.length;
  const scale = energy > 0 ? n / energy : 1;

  const optimizer = { kind: "adam" as const, lr: s.lr };
  const plan = await prepareBatchNorm(model, memoryDataset("feature unlearning training images", shape, tr.x, null), { batchSize: s.batchSize, channelMasks: opts.channelMasks, mode: s.batchNorm });
  const runner = await StepRunner.create(buildStepGraph(plan.trainee, { optimizer, channelMasks: opts.channelMasks, loss: featureUnlearnLoss(feature, width, s.weight, scale), batchNorm: plan.stepMode }), gradientWork(model, s.batchSize));
  const score = (r: { accuracy: number; triggerSuccess: number }) => r.accuracy - r.triggerSuccess;
  const r0 = await heldOutScore(model, heldDs, triggers, opts.evalBatchSize);
  const history: FeatureUnlearnEpoch[] = [{ epoch: 0, loss: NaN, heldOutAccuracy: r0.accuracy, heldOutTriggerSuccess: r0.triggerSuccess, seconds: 0 }];
  const keeper = new EpochKeeper<Model>(model, s.keepTolerance, s.patience);
  try {
    const rand = mulberry32(s.seed + 4099);
    let step = 0;
    for (let epoch = 1; epoch <= s.epochs; epoch++) {
      const t0 = performance.now();
      let lossSum = 0, batches = 0;
      for (const idx of shuffledBatches(n, s.batchSize, rand)) {
        const bs = idx.length;
        const b = gather(tr.x, tr.y, per, idx);
        stampShare(b.x, bs, shape, triggers, s.ratio, rand);
        const want = new Float32Array(bs * width);
        idx.forEach((j, i) => want.set(featB.subarray(j * width, (j + 1) * width), i * width));
        step++;
        const out = await runner.run(tensor("float32", [bs, c, h, w], b.x), tensor("float32", [bs, k], oneHot(b.y, k)), stepLr(optimizer, step), {
          [FEATURE_TARGET_INPUT]: tensor("float32", [bs, width], want),
        });
        if (!Number.isFinite(out.loss)) fail(`feature unlearning diverged in epoch ${epoch} (loss ${out.loss}); lower --lr`);
        lossSum += out.loss;
        batches++;
      }
      const current = await plan.finish(runner.params(), `${model.name}_feature_unlearned`);
      const r = await heldOutScore(current, heldDs, triggers, opts.evalBatchSize);
      const e = { epoch, loss: lossSum / batches, heldOutAccuracy: r.accuracy, heldOutTriggerSuccess: r.triggerSuccess, seconds: (performance.now() - t0) / 1000 };
      history.push(e);
      opts.onEpoch?.(e);
      if (keeper.after(epoch, current, score(r))) break;
    }
  } finally {
    await runner.release();
  }
  const best = keeper.kept;
  const repaired = { ...best.value, name: `${model.name}_feature_unlearned` };
  const ev = await evaluateModels(model, repaired, ncEvalSets(data, triggers), opts.evalBatchSize);
  return { ...ev, model: repaired, gGraph: gFromPair(model, repaired, `${model.name}_feature_unlearn_G`), feature, history, chosenEpoch: best.epoch, settings: s, batchNorm: plan.summary };
}
