// i-BAU, implicit backdoor adversarial unlearning (Zeng et al., ICLR 2022): without knowing the trigger, solve
//   min_θ max_{‖δ‖₂ ≤ r} CE(f_θ(x + δ), y)
// on clean data, with δ one universal perturbation shared by all images: a backdoor is a small input change
// that moves many images at once, exactly what a universal adversarial perturbation finds. Each round first
// takes δ to (near) the inner maximum on the current network, then fine-tunes the network on clean images,
// a share of them carrying δ, with their true labels.
//
// The paper differentiates the outer problem through the inner solution with an implicit hypergradient
// (fixed-point iterations of Hessian-vector products). This implementation uses the Danskin gradient: at an
// exact inner maximum the implicit term ∂L/∂δ·dδ*/dθ vanishes (∂L/∂δ = 0 at an interior maximum), so the
// outer gradient is the loss gradient at δ*. Our engine has no second-order derivatives; the reported
// settings name the variant.
//
// Budget: i-BAU bounds ‖δ‖₂ (10 on normalized CIFAR). Here the radius is given as an RMS per input value in the
// model's input range, r = rms·range·√(C·H·W); the default 0.1 holds a full-contrast patch over 1% of the
// image, the size of the BadNets triggers in the literature (3×3 on 28×28 or 32×32).
import { backward } from "../graph/autodiff.js";
import { tensor, type Graph } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { type Dataset } from "../io/dataset.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { oneHot, shuffled, train, type EpochStats } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { checkRepairData } from "./anp.js";
import { finishRepair, heldOutSplit, RoundPicker } from "./held-out-repair.js";
import { pickOptions, resolveOptions, MAX_LOOPS, SEED_OPTION, BATCH_NORM_OPTION, type NumberOption, type OptionSpecs, type OptionValues } from "./defense.js";
import { type NcData, type NcEvaluation } from "./nc-mitigation.js";
import { gradientWork } from "../runtime/threads.js";

export interface IbauOptions {
  /** Outer rounds (default 5, the paper's n_rounds). */
  rounds?: number;
  /** Perturbation budget as an RMS per input value, as a share of the input range (default 0.1). */
  rms?: number;
  /** Gradient-ascent steps on δ per round, one batch each (default 20). */
  perturbSteps?: number;
  /** Share of each training batch that carries δ (default 0.5). */
  ratio?: number;
  /** Adam learning rate of the unlearning epochs (default 1e-3). */
  lr?: number;
  batchSize?: number;
  /** Share of the clean data held out to choose the round (default 0.2). */
  holdout?: number;
  /** Keep the last round whose held-out clean accuracy is within this of B's (default 0.02). */
  maxDrop?: number;
  /** The input range: pixels are in [0, 255 / inputScale] (default 255, i.e. [0, 1]). */
  inputScale?: number;
  seed?: number;
  evalBatchSize?: number;
  onRound?: (r: IbauRound) => void;
}

export type IbauSettings = OptionValues<typeof IBAU_OPTIONS> & { inputScale: number };

export interface IbauRound {
  round: number;
  /** Held-out clean accuracy after the round (round 0: B). */
  heldOutAccuracy: number;
  /** Held-out accuracy under this round's δ, before the round's unlearning (round 0: none, NaN). */
  adversarialAccuracy: number;
  deltaNorm: number;
  train?: EpochStats;
}

export interface IbauResult extends NcEvaluation {
  model: Model;
  gGraph: Graph;
  history: IbauRound[];
  chosenRound: number;
  /** The last round's universal perturbation [C·H·W]. */
  delta: Float32Array;
  settings: IbauSettings & { variant: "danskin" };
}

/** i-BAU's numeric options: one spec for the library's checks, the CLI's flags and --help. */
export const IBAU_OPTIONS = {
  rounds: { kind: "integer", description: "outer rounds (perturbation, then one unlearning epoch)", default: 5, min: 1, max: MAX_LOOPS },
  rms: { kind: "number", description: "perturbation budget: RMS per input value, as a share of the input range", default: 0.1, min: 0, max: 1, exclusiveMin: true },
  perturbSteps: { kind: "integer", description: "gradient-ascent steps on the perturbation per round", default: 20, min: 1, max: MAX_LOOPS },
  ratio: { kind: "number", description: "share of each batch carrying the perturbation (true labels kept)", default: 0.5, min: 0, max: 1, exclusiveMin: true },
  lr: { kind: "number", description: "Adam learning rate of the unlearning epochs", default: 1e-3, min: 0, exclusiveMin: true },
  batchSize: { kind: "integer", description: "training batch size", default: 64, min: 1, max: 65536 },
  maxDrop: { kind: "number", description: "keep the last round within this much held-out clean accuracy of B (fraction)", default: 0.02, min: 0, max: 1 },
  holdout: { kind: "number", description: "share of the clean data held out to choose the round", default: 0.2, min: 0, max: 1, exclusiveMin: true, exclusiveMax: true },
  batchNorm: BATCH_NORM_OPTION,
  seed: SEED_OPTION,
} as const satisfies OptionSpecs;

const INPUT_SCALE_OPTION = { kind: "number", description: "pixels are divided by this", default: 255, min: 0, exclusiveMin: true } as const satisfies NumberOption;

export function checkIbauOptions(o: IbauOptions): IbauSettings {
  const spec = { ...IBAU_OPTIONS, inputScale: INPUT_SCALE_OPTION };
  return resolveOptions(spec, pickOptions(spec, o));
}

export interface PerturbGraph {
  graph: Graph;
  delta: string;
  loss: string;
  grad: string;
}

/** The model reading input + δ (δ [1, C, H, W] broadcast over the batch); outputs CE and dCE/dδ. */
export function perturbGraph(model: Model): PerturbGraph {
  const g = model.graph.clone(`${model.name}_uap`);
  const [c, h, w] = model.inputShape;
  const delta = g.addInput("ibau/delta", "float32", [1, c, h, w]);
  const shifted = g.op("Add", [model.input, delta], {}, "ibau/shifted");
  const adder = g.producer(shifted)!;
  g.replaceUses(model.input, shifted, new Set([adder]));
  g.toposort();
  const target = g.addInput("target", "float32", ["N", model.numClasses]);
  const loss = softmaxCrossEntropy(g, model.logits, target);
  const grad = backward(g, loss, [delta]).get(delta)!;
  g.setOutputs([loss, grad]);
  g.prune([model.input, delta, target]);
  return { graph: g, delta, loss, grad };
}

/** Projects v onto the L2 ball of radius r (in place). */
export function projectL2(v: Float32Array, r: number): Float32Array {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.sqrt(n);
  if (n > r) for (let i = 0; i < v.length; i++) v[i] *= r / n;
  return v;
}

/**
 * A universal perturbation that raises the loss of `model` on (x, y): normalized gradient ascent from zero,
 * `steps` batches, step r/4, projected onto the ball of radius r.
 */
export async function universalPerturbation(model: Model, x: Float32Array, y: Int32Array, radius: number, steps: number, batchSize: number, rand: () => number): Promise<Float32Array> {
  const pg = perturbGraph(model);
  const session = await Session.create(pg.graph, gradientWork(model, Math.min(batchSize, y.length)));
  try {
    const [c, h, w] = model.inputShape;
    const per = c * h * w;
    const n = y.length;
    const bs = Math.min(batchSize, n);
    const delta = new Float32Array(per);
    for (let s = 0; s < steps; s++) {
      const order = shuffled(n, rand);
      const xb = new Float32Array(bs * per);
      const yb = new Int32Array(bs);
      for (let i = 0; i < bs; i++) {
        xb.set(x.subarray(order[i] * per, (order[i] + 1) * per), i * per);
        yb[i] = y[order[i]];
      }
      const out = await session.run({
        [model.input]: tensor("float32", [bs, c, h, w], xb),
        [pg.delta]: tensor("float32", [1, c, h, w], delta),
        target: tensor("float32", [bs, model.numClasses], oneHot(yb, model.numClasses)),
      });
      const g = out[pg.grad].data as Float32Array;
      let gn = 0;
      for (const v of g) gn += v * v;
      gn = Math.sqrt(gn);
      if (gn === 0) break;
      for (let i = 0; i < per; i++) delta[i] += (radius / 4) * (g[i] / gn);
      projectL2(delta, radius);
    }
    return delta;
  } finally {
    await session.release();
  }
}

/** A view of `data` with δ added to every image. */
export function perturbedDataset(data: Dataset, delta: Float32Array): Dataset {
  const per = delta.length;
  return {
    ...data,
    name: `${data.name} + δ`,
    read(start, count) {
      const x = data.read(start, count);
      for (let i = 0; i < count; i++) for (let k = 0; k < per; k++) x[i * per + k] += delta[k];
      return x;
    },
  };
}

export async function ibau(model: Model, data: NcData, opts: IbauOptions = {}): Promise<IbauResult> {
  const s = checkIbauOptions(opts);
  checkRepairData(model, data, "i-BAU");
  const { clean } = data;
  const shape = clean.shape;
  const per = shape[0] * shape[1] * shape[2];
  const radius = s.rms * (255 / s.inputScale) * Math.sqrt(per);
  const { train: tr, held, accuracy: accOf } = heldOutSplit(clean, s.holdout, s.seed, "i-BAU", opts.evalBatchSize);
  const rand = mulberry32(s.seed);

  const base = await accOf(model);
  const history: IbauRound[] = [{ round: 0, heldOutAccuracy: base, adversarialAccuracy: NaN, deltaNorm: 0 }];
  let current = model;
  const picker = new RoundPicker(model, base, s.maxDrop);
  let delta: Float32Array = new Float32Array(per);
  let batchNorm: string | undefined;
  for (let round = 1; round <= s.rounds; round++) {
    delta = await universalPerturbation(current, tr.x, tr.y, radius, s.perturbSteps, s.batchSize, rand);
    const adversarialAccuracy = await accOf(current, perturbedDataset(held, delta));
    const d = delta;
    const r = await train(current, { ...tr, shape }, {
      epochs: 1,
      batchSize: s.batchSize,
      optimizer: { kind: "adam", lr: s.lr },
      batchNorm: s.batchNorm,
      seed: s.seed * 1000 + round,
      // True labels: the network learns that the universal perturbation does not change the class.
      transformBatch: (x, y, rnd) => {
        for (let i = 0; i < y.length; i++) if (rnd() < s.ratio) for (let k = 0; k < per; k++) x[i * per + k] += d[k];
      },
    });
    current = r.model;
    batchNorm = r.batchNorm;
    const acc = await accOf(current);
    const entry: IbauRound = { round, heldOutAccuracy: acc, adversarialAccuracy, deltaNorm: Math.sqrt(delta.reduce((a, v) => a + v * v, 0)), train: r.history[0] };
    history.push(entry);
    opts.onRound?.(entry);
    picker.offer(current, round, acc);
  }
  const chosen = picker.pick();
  return { ...(await finishRepair(model, chosen.model, data, "ibau", opts.evalBatchSize)), history, chosenRound: chosen.round, delta, settings: { ...s, variant: "danskin" }, batchNorm };
}
