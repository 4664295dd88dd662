// SAU, Shared Adversarial Unlearning (Wei et al., NeurIPS 2023). The backdoor risk of the repaired network θ is
// bounded by its risk on *shared* adversarial examples: perturbations that fool both θ and the backdoored B the
// same way (a trigger is one). Each batch:
//   1. maximisation: a per-image L∞ perturbation δ found by signed-gradient steps (PGD) on
//        β1·L_adv + β2·L_share,
//      L_adv = −(CE of θ on images θ does not yet get wrong + CE of B on images B does not yet move) / 2N,
//      L_share = Jensen–Shannon divergence between θ's and B's predictions on images not yet shared / N
//      (minimised: both networks are pushed to the same wrong class);
//   2. minimisation: one optimizer step on λ1·CE(θ(x), y) + λ3·L_sar, L_sar = −Σ log(1 − p_θ(k | x+δ)) / N over
//      the images B is moved on, k = B's class on x+δ: θ unlearns agreeing with B's adversarial class.
// The masks (which images count) are argmax comparisons inside the graphs; the Cast to float stops the
// gradient there, so one onnxruntime call gives the step's loss gradient with exact masks.
// Departure from the reference code: "θ is fooled" compares with the true label y (the reference code's
// maximisation compares with θ's own prediction on x, which costs one more forward pass per step).
import { fail } from "../errors.js";
import { backward } from "../graph/autodiff.js";
import { attr, Graph, tensor, type TensorData } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { poolBeforeRelu } from "../graph/transforms.js";
import { memoryDataset } from "../io/dataset.js";
import { argmaxRows, predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { buildStepGraph, oneHot, StepRunner } from "../train/trainer.js";
import { prepareBatchNorm } from "../train/batch-norm-training.js";
import { stepLr } from "../graph/optimizers.js";
import { mulberry32 } from "../util/random.js";
import { checkRepairData } from "./anp.js";
import { finishRepair, heldOutSplit, RoundPicker } from "./held-out-repair.js";
import { pickOptions, resolveOptions, MAX_LOOPS, SEED_OPTION, BATCH_NORM_OPTION, type OptionSpecs, type OptionValues } from "./defense.js";
import { argmax, embed } from "./g-model.js";
import type { NcData, NcEvaluation } from "./nc-mitigation.js";
import { gather, shuffledBatches } from "../train/split.js";
import { gradientWork } from "../runtime/threads.js";

/** SAU's options: one spec for the library's checks, the CLI's flags and --help. */
export const SAU_OPTIONS = {
  rounds: { kind: "integer", description: "unlearning rounds (one pass over the clean data each)", default: 3, min: 1, max: MAX_LOOPS },
  norm: { kind: "choice", choices: ["linf", "l2", "l1"] as const, description: "norm bounding each image's perturbation: linf (the paper's; ε per value), l2 (radius rms·range·√(C·H·W)) or l1 (radius l1Share·range·C·H·W, sparse steps: patch-like)", default: "linf" },
  l1Share: { kind: "number", description: "l1 norm: the radius as the share of input values at full contrast", default: 0.015, min: 0, max: 1, exclusiveMin: true },
  eps: { kind: "number", description: "L∞ bound of the shared perturbation, as a share of the input range", default: 0.2, min: 0, max: 1, exclusiveMin: true },
  rms: { kind: "number", description: "l2 norm: the radius as an RMS per input value, as a share of the input range", default: 0.1, min: 0, max: 1, exclusiveMin: true },
  pgdSteps: { kind: "integer", description: "signed-gradient steps of the maximisation per batch (the paper: 5; 3 measured as good on blend, 1.6× faster)", default: 3, min: 1, max: MAX_LOOPS },
  stepSize: { kind: "number", description: "maximisation step, as a share of the input range (l2: of the radius)", default: 0.2, min: 0, max: 1, exclusiveMin: true },
  beta1: { kind: "number", description: "weight of the adversarial loss in the maximisation", default: 0.01, min: 0 },
  beta2: { kind: "number", description: "weight of the sharing (JS divergence) loss in the maximisation", default: 1, min: 0 },
  lambdaClean: { kind: "number", description: "weight of the clean cross-entropy in the unlearning step", default: 3, min: 0 },
  lambdaShared: { kind: "number", description: "weight of the shared-adversarial unlearning loss", default: 1, min: 0 },
  lr: { kind: "number", description: "Adam learning rate of the unlearning steps", default: 5e-4, min: 0, exclusiveMin: true },
  batchSize: { kind: "integer", description: "training batch size", default: 128, min: 1, max: 65536 },
  maxDrop: { kind: "number", description: "keep the last round within this much held-out clean accuracy of B (fraction)", default: 0.02, min: 0, max: 1 },
  holdout: { kind: "number", description: "share of the clean data held out to choose the round", default: 0.2, min: 0, max: 1, exclusiveMin: true, exclusiveMax: true },
  batchNorm: BATCH_NORM_OPTION,
  seed: SEED_OPTION,
} as const satisfies OptionSpecs;

export type SauSettings = OptionValues<typeof SAU_OPTIONS> & { inputScale: number };

export interface SauOptions extends Partial<OptionValues<typeof SAU_OPTIONS>> {
  /** Pixels are in [0, 255 / inputScale] (default 255). */
  inputScale?: number;
  evalBatchSize?: number;
  onRound?: (r: SauRound) => void;
}

export interface SauRound {
  round: number;
  /** Held-out clean accuracy after the round (round 0: B). */
  heldOutAccuracy: number;
  /** Share of the round's training images whose final δ moved B off its own class (the unlearned ones). */
  potentialPoison: number;
  /** Share whose δ fooled both networks into the same class. */
  shared: number;
  /** Mean loss of the unlearning steps. */
  loss: number;
  seconds: number;
}

export interface SauResult extends NcEvaluation {
  model: Model;
  gGraph: Graph;
  history: SauRound[];
  chosenRound: number;
  settings: SauSettings;
}

export function checkSauOptions(o: SauOptions): SauSettings {
  const spec = { ...SAU_OPTIONS, inputScale: { kind: "number", description: "pixels are divided by this", default: 255, min: 0, exclusiveMin: true } } as const satisfies OptionSpecs;
  return resolveOptions(spec, pickOptions(spec, o));
}

// ---------------------------------------------------------------------------------------------------------
// Graph pieces

/** Per-row cross-entropy −Σ_k t_k log softmax(z)_k, [N]. */
function rowCe(g: Graph, logits: string, target: string): string {
  return g.op("Neg", [g.op("ReduceSum", [g.op("Mul", [g.op("LogSoftmax", [logits], { axis: attr.int(-1) }), target]), g.ints([1])], { keepdims: attr.int(0) })]);
}

/** 1.0 where the bool value is true, as float: also where the gradient stops (a Cast of a non-float). */
const asFloat = (g: Graph, b: string): string => g.op("Cast", [b], { to: attr.int(1) });

export interface SharedPgdGraph {
  graph: Graph;
  /** Inputs: images, δ (both [N, C, H, W]), one-hot true labels and one-hot B(x) ([N, K]). */
  x: string;
  delta: string;
  target: string;
  refClean: string;
  /** The current network's parameters, fed each batch: graph input name → IR parameter name. */
  params: Map<string, string>;
  loss: string;
  grad: string;
  /** Number of images whose δ is shared (both fooled, same class), float scalar. */
  sharedCount: string;
}

/** The maximisation's loss and dLoss/dδ over θ (parameters as inputs) and B (constants) in one graph. */
export function sharedPgdGraph(current: Model, ref: Model, beta1: number, beta2: number): SharedPgdGraph {
  const g = new Graph(`${current.name}_sau_pgd`);
  const [c, h, w] = current.inputShape;
  const k = current.numClasses;
  const x = g.addInput("x", "float32", ["N", c, h, w]);
  const delta = g.addInput("sau/delta", "float32", ["N", c, h, w]);
  const target = g.addInput("target", "float32", ["N", k]);
  const refClean = g.addInput("sau/ref_clean", "float32", ["N", k]);
  const pert = g.op("Add", [x, delta], {}, "sau/perturbed");
  const rc = embed(g, current.graph, "C/", { [current.input]: pert });
  const rr = embed(g, ref.graph, "R/", { [ref.input]: pert });
  const params = new Map<string, string>();
  for (const p of current.params) {
    g.liftInitializer(rc(p.value));
    params.set(rc(p.value), p.value);
  }
  const lc = rc(current.logits), lr = rr(ref.logits);
  const y = argmax(g, target);
  const predC = argmax(g, lc), predR = argmax(g, lr);
  const fooledC = g.op("Not", [g.op("Equal", [predC, y])]);
  const movedR = g.op("Not", [g.op("Equal", [predR, argmax(g, refClean)])]);
  const shared = g.op("And", [g.op("And", [fooledC, movedR]), g.op("Equal", [predC, predR])]);
  const count = g.op("ReduceSum", [target], { keepdims: attr.int(0) });
  // L_adv: raise the CE where a network is not fooled yet (minimised, hence the minus).
  const adv = g.op("Add", [
    g.op("ReduceSum", [g.op("Mul", [asFloat(g, g.op("Not", [fooledC])), rowCe(g, lc, target)])], { keepdims: attr.int(0) }),
    g.op("ReduceSum", [g.op("Mul", [asFloat(g, g.op("Not", [movedR])), rowCe(g, lr, target)])], { keepdims: attr.int(0) }),
  ]);
  const lossAdv = g.op("Neg", [g.op("Div", [adv, g.op("Mul", [count, g.scalar(2)])])]);
  // L_share: JS divergence of the two predictions where δ is not shared yet.
  const clampP = (z: string) => g.op("Clip", [g.op("Softmax", [z], { axis: attr.int(-1) }), g.scalar(1e-8), g.scalar(1)]);
  const pc = clampP(lc), pr = clampP(lr);
  const logM = g.op("Log", [g.op("Mul", [g.op("Add", [pc, pr]), g.scalar(0.5)])]);
  const klPart = (p: string) => g.op("Mul", [p, g.op("Sub", [g.op("Log", [p]), logM])]);
  const js = g.op("Mul", [g.op("ReduceSum", [g.op("Add", [klPart(pc), klPart(pr)]), g.ints([1])], { keepdims: attr.int(0) }), g.scalar(0.5)]);
  const lossShare = g.op("Div", [g.op("ReduceSum", [g.op("Mul", [asFloat(g, g.op("Not", [shared])), js])], { keepdims: attr.int(0) }), count]);
  const loss = g.op("Add", [g.op("Mul", [lossAdv, g.scalar(beta1)]), g.op("Mul", [lossShare, g.scalar(beta2)])], {}, "sau/pgd_loss");
  // Relu → MaxPool as MaxPool → Relu in both networks: same values, a cheaper backward (as in the train step).
  poolBeforeRelu(g);
  const grad = backward(g, loss, [delta]).get(delta)!;
  const sharedCount = g.op("ReduceSum", [asFloat(g, shared)], { keepdims: attr.int(0) });
  g.setOutputs([loss, grad, sharedCount]);
  g.prune([x, delta, target, refClean]);
  return { graph: g, x, delta, target, refClean, params, loss, grad, sharedCount };
}

/** Name of the extra input of the unlearning loss: one-hot of B's class on x+δ for the rows to unlearn. */
export const SAU_SHARED_INPUT = "sau/shared";

/**
 * The unlearning loss for a batch [x; x+δ] (2N rows): targets are y one-hot on the first N rows and zero on the
 * rest, so the CE term is the clean rows' mean; `sau/shared` is one-hot of B's class on the perturbed rows to
 * unlearn (zero elsewhere). L = λ1·CE + λ3·Σ −log(1 + 1e-6 − max(p_k, 0.001))·[row unlearned] / N.
 */
export function sauLoss(lambdaClean: number, lambdaShared: number): (g: Graph, logits: string, target: string) => string {
  return (g, logits, target) => {
    const sharedIn = g.addInput(SAU_SHARED_INPUT, "float32", ["N", g.shape(logits)[1]]);
    const ce = softmaxCrossEntropy(g, logits, target);
    const count = g.op("ReduceSum", [target], { keepdims: attr.int(0) });
    const p = g.op("Softmax", [logits], { axis: attr.int(-1) });
    const q = g.op("ReduceSum", [g.op("Mul", [p, sharedIn]), g.ints([1])], { keepdims: attr.int(0) });
    // Below 0.1% the row counts as unlearned: no gradient (the reference code's clamp).
    const qc = g.op("Clip", [q, g.scalar(0.001), g.scalar(1)]);
    const rowLoss = g.op("Neg", [g.op("Log", [g.op("Sub", [g.scalar(1 + 1e-6), qc])])]);
    const rowOn = g.op("ReduceSum", [sharedIn, g.ints([1])], { keepdims: attr.int(0) });
    const sar = g.op("Div", [g.op("ReduceSum", [g.op("Mul", [rowLoss, rowOn])], { keepdims: attr.int(0) }), count]);
    return g.op("Add", [g.op("Mul", [ce, g.scalar(lambdaClean)]), g.op("Mul", [sar, g.scalar(lambdaShared)])], {}, "sau/loss");
  };
}

// ---------------------------------------------------------------------------------------------------------
// The algorithm

/** Per image: δ ← Π_{‖δ‖₂ ≤ r}(δ − step·g/‖g‖), the L2 analogue of the signed step. */
function l2Step(delta: Float32Array, grad: Float32Array, n: number, step: number, radius: number): void {
  const per = delta.length / n;
  for (let i = 0; i < n; i++) {
    const o = i * per;
    let gn = 0;
    for (let j = 0; j < per; j++) gn += grad[o + j] ** 2;
    gn = Math.sqrt(gn);
    if (gn > 0) for (let j = 0; j < per; j++) delta[o + j] -= (step * grad[o + j]) / gn;
    let dn = 0;
    for (let j = 0; j < per; j++) dn += delta[o + j] ** 2;
    dn = Math.sqrt(dn);
    if (dn > radius) for (let j = 0; j < per; j++) delta[o + j] *= radius / dn;
  }
}

/**
 * Per image, a sparse step: the coordinates with the largest |g| (as many as the budget holds at full contrast)
 * move by the full range against the gradient; x + δ is kept in [0, range]; then δ is projected onto the L1 ball.
 */
function l1Step(delta: Float32Array, grad: Float32Array, x: Float32Array, n: number, range: number, radius: number): void {
  const per = delta.length / n;
  const k = Math.max(1, Math.ceil(radius / range));
  for (let i = 0; i < n; i++) {
    const o = i * per;
    const idx = Array.from({ length: per }, (_, j) => j).sort((a, b) => Math.abs(grad[o + b]) - Math.abs(grad[o + a]));
    for (const j of idx.slice(0, k)) if (grad[o + j] !== 0) delta[o + j] -= range * Math.sign(grad[o + j]);
    for (let j = 0; j < per; j++) delta[o + j] = Math.min(range - x[o + j], Math.max(-x[o + j], delta[o + j]));
    projectL1(delta.subarray(o, o + per), radius);
  }
}

/** Euclidean projection onto the L1 ball of radius r (Duchi et al. 2008), in place. */
export function projectL1(v: Float32Array, r: number): void {
  let total = 0;
  for (const a of v) total += Math.abs(a);
  if (total <= r) return;
  const u = Array.from(v, Math.abs).sort((a, b) => b - a);
  let cum = 0, theta = 0;
  for (let j = 0; j < u.length; j++) {
    cum += u[j];
    const t = (cum - r) / (j + 1);
    if (u[j] - t > 0) theta = t;
    else break;
  }
  for (let j = 0; j < v.length; j++) v[j] = Math.sign(v[j]) * Math.max(0, Math.abs(v[j]) - theta);
}

/** Finds each image's shared perturbation (in place in `delta`); returns B's predicted class on x+δ. */
async function sharedPerturbation(
  pgd: SharedPgdGraph,
  pgdSession: Session,
  refSession: Session,
  ref: Model,
  feeds: { x: TensorData; target: TensorData; refClean: TensorData; params: Record<string, TensorData> },
  delta: Float32Array,
  s: SauSettings,
): Promise<{ predRef: Int32Array; shared: number }> {
  const range = 255 / s.inputScale;
  const eps = s.eps * range, step = s.stepSize * range;
  const n = feeds.target.shape[0];
  const per = delta.length / n;
  const radius = s.rms * range * Math.sqrt(per);
  // The reference code's "max" start: every value at +ε (l2: the same direction, on the sphere; l1: zero).
  delta.fill(s.norm === "linf" ? eps : s.norm === "l2" ? radius / Math.sqrt(per) : 0);
  let shared = 0;
  for (let t = 0; t < s.pgdSteps; t++) {
    const out = await pgdSession.run({ ...feeds.params, [pgd.x]: feeds.x, [pgd.delta]: tensor("float32", [...feeds.x.shape], delta), [pgd.target]: feeds.target, [pgd.refClean]: feeds.refClean });
    shared = (out[pgd.sharedCount].data as Float32Array)[0];
    if (shared >= n) break; // every image's δ already shared: the reference code stops too
    const gr = out[pgd.grad].data as Float32Array;
    if (s.norm === "linf") for (let i = 0; i < delta.length; i++) delta[i] = Math.min(eps, Math.max(-eps, delta[i] - step * Math.sign(gr[i])));
    else if (s.norm === "l2") l2Step(delta, gr, n, s.stepSize * radius, radius);
    else l1Step(delta, gr, feeds.x.data as Float32Array, n, range, s.l1Share * range * per);
  }
  const xs = feeds.x.data as Float32Array;
  const pert = new Float32Array(xs.length);
  for (let i = 0; i < pert.length; i++) pert[i] = xs[i] + delta[i];
  const lr = (await refSession.run({ [ref.input]: tensor("float32", [...feeds.x.shape], pert) }, [ref.logits]))[ref.logits].data as Float32Array;
  return { predRef: argmaxRows(lr, ref.numClasses), shared };
}

export async function sau(model: Model, data: NcData, opts: SauOptions = {}): Promise<SauResult> {
  const s = checkSauOptions(opts);
  checkRepairData(model, data, "SAU");
  const { clean } = data;
  const shape = clean.shape;
  const [c, h, w] = shape;
  const per = c * h * w;
  const k = model.numClasses;
  const { train: tr, accuracy: accOf } = heldOutSplit(clean, s.holdout, s.seed, "SAU", opts.evalBatchSize);
  // B's own classes on the clean training images: fixed, computed once.
  const refTrain = await predictLabels(model, memoryDataset("train", shape, tr.x, tr.y), { batchSize: opts.evalBatchSize });

  const base = await accOf(model);
  const history: SauRound[] = [{ round: 0, heldOutAccuracy: base, potentialPoison: 0, shared: 0, loss: NaN, seconds: 0 }];
  const optimizer = { kind: "adam" as const, lr: s.lr };
  // The step trains on [x; x+δ], twice the batch.
  const plan = await prepareBatchNorm(model, memoryDataset("SAU training images", shape, tr.x, null), { batchSize: s.batchSize, mode: s.batchNorm });
  const runner = await StepRunner.create(buildStepGraph(plan.trainee, { optimizer, loss: sauLoss(s.lambdaClean, s.lambdaShared), batchNorm: plan.stepMode }), gradientWork(model, 2 * s.batchSize));
  const pgd = sharedPgdGraph(model, model, s.beta1, s.beta2);
  const pgdSession = await Session.create(pgd.graph, gradientWork(model, s.batchSize));
  const refSession = await Session.create(model.graph);
  const picker = new RoundPicker(model, base, s.maxDrop);
  try {
    const rand = mulberry32(s.seed);
    const n = tr.y.length;
    let step = 0;
    for (let round = 1; round <= s.rounds; round++) {
      const t0 = performance.now();
      let lossSum = 0, poison = 0, sharedSum = 0, batches = 0;
      for (const idx of shuffledBatches(n, s.batchSize, rand)) {
        const bs = idx.length;
        const b = gather(tr.x, tr.y, per, idx);
        const refB = Int32Array.from(idx, (j) => refTrain[j]);
        const live = runner.live();
        const params: Record<string, TensorData> = {};
        for (const [input, p] of pgd.params) params[input] = live.get(p)!;
        const xT = tensor("float32", [bs, c, h, w], b.x);
        const delta = new Float32Array(bs * per);
        const { predRef, shared } = await sharedPerturbation(pgd, pgdSession, refSession, model, { x: xT, target: tensor("float32", [bs, k], oneHot(b.y, k)), refClean: tensor("float32", [bs, k], oneHot(refB, k)), params }, delta, s);
        sharedSum += shared;
        // The unlearning step on [x; x+δ]: CE on the clean half, L_sar on the perturbed images B is moved on
        // (B's class differs from both the true label and its own class on x).
        const both = new Float32Array(2 * bs * per);
        both.set(b.x);
        for (let i = 0; i < bs * per; i++) both[bs * per + i] = b.x[i] + delta[i];
        const target = new Float32Array(2 * bs * k);
        target.set(oneHot(b.y, k));
        const sharedRows = new Float32Array(2 * bs * k);
        for (let i = 0; i < bs; i++) {
          if (predRef[i] === b.y[i] || predRef[i] === refB[i]) continue;
          sharedRows[(bs + i) * k + predRef[i]] = 1;
          poison++;
        }
        step++;
        const out = await runner.run(tensor("float32", [2 * bs, c, h, w], both), tensor("float32", [2 * bs, k], target), stepLr(optimizer, step), {
          [SAU_SHARED_INPUT]: tensor("float32", [2 * bs, k], sharedRows),
        });
        if (!Number.isFinite(out.loss)) fail(`SAU diverged in round ${round} (loss ${out.loss}); lower --lr`);
        lossSum += out.loss;
        batches++;
      }
      const current = await plan.finish(runner.params(), `${model.name}_sau`);
      const acc = await accOf(current);
      const entry: SauRound = { round, heldOutAccuracy: acc, potentialPoison: poison / n, shared: sharedSum / n, loss: lossSum / batches, seconds: (performance.now() - t0) / 1000 };
      history.push(entry);
      opts.onRound?.(entry);
      picker.offer(current, round, acc);
    }
  } finally {
    await runner.release();
    await pgdSession.release();
    await refSession.release();
  }
  const chosen = picker.pick();
  return { ...(await finishRepair(model, chosen.model, data, "sau", opts.evalBatchSize)), history, chosenRound: chosen.round, settings: s, batchNorm: plan.summary };
}
