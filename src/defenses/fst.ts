// Feature Shift Tuning (Min, Qin, Shen & Cheng, NeurIPS 2023). B's final linear layer (its head, weight W₀)
// is re-initialised and trained on the clean data with a penalty on its agreement with the original one:
//   L = CE + λ·⟨W, W₀⟩ / ‖W₀‖²,   with ‖W‖ held at ‖W₀‖ after every step,
// so λ·cos(W, W₀) is the penalty. A head pushed away from W₀ cannot use the feature directions W₀ maps to the
// target for triggered inputs, while the clean features, which many directions carry, still classify. The
// paper writes α⟨W, W₀⟩ with α tuned per dataset; dividing by ‖W₀‖² makes λ independent of the head's scale.
// SGD with momentum 0.9 and a cosine learning-rate schedule, as in the paper.
//
// What is trained (--tune): the paper tunes every parameter ("all"). On the Fashion-MNIST zoo the head alone
// ("head", the default) removed the same triggers at less clean accuracy (docs/repairs.md, "Feature Shift
// Tuning"), and it is cheap: the features B's trunk computes are stored once and only the head trains on them.
// The epoch kept is the latest within --max-drop of B's held-out clean accuracy (else the most accurate one).
import { fail } from "../errors.js";
import { attr, tensor, type Graph, type TensorData } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { argmaxRows, DEFAULT_BATCH, forEachBatch, forwardGraph } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { withParams } from "../model/params.js";
import { Session, withSession } from "../runtime/session.js";
import { gradientWork } from "../runtime/threads.js";
import { graphFrom } from "../train/tail.js";
import { buildStepGraph, oneHot, StepRunner } from "../train/trainer.js";
import { prepareBatchNorm } from "../train/batch-norm-training.js";
import type { BatchNormMode } from "../train/batch-norm-stats.js";
import { gather, shuffledBatches } from "../train/split.js";
import { memoryDataset } from "../io/dataset.js";
import { mulberry32 } from "../util/random.js";
import { checkRepairData } from "./anp.js";
import { pickOptions, resolveOptions, MAX_LOOPS, SEED_OPTION, BATCH_NORM_OPTION, type OptionSpecs, type OptionValues } from "./defense.js";
import { countCorrect } from "../eval/evaluate.js";
import { finishRepair, heldOutSplit, RoundPicker } from "./held-out-repair.js";
import { outputDense, type NcData, type NcEvaluation } from "./nc-mitigation.js";

export const FST_TUNE = ["head", "all"] as const;
/**
 * Default SGD learning rates. The paper's 0.01 for every parameter; the head alone on stored features had not
 * converged in 15 epochs at 0.01 (cos(W, W₀) still 0.15, wanet's ASR 24%) and at 0.1 reached the same head as
 * 40 epochs at 0.03 (docs/repairs.md, "Feature Shift Tuning").
 */
export const FST_LR = { head: 0.1, all: 0.01 } as const;

/**
 * Default weight of B's predictions in the targets where detection flagged labels (docs/repairs.md, "FST with
 * B's predictions"). Without flagged labels nothing says which of B's outputs carry the backdoor, and B's full
 * predictions taught WaNet's trigger back (ASR 0.4% → 10%), so plain labels are the default there.
 */
export const FST_DISTILL = 0.5;

export const FST_OPTIONS = {
  shift: { kind: "number", description: "λ, weight of the penalty λ·cos(W, W₀) that pushes the new head away from B's", default: 0.25, min: 0 },
  tune: { kind: "choice", choices: FST_TUNE, description: "what trains: the head on stored features (head) or every parameter, as in the paper (all)", default: "head" },
  epochs: { kind: "integer", description: "training epochs over the clean data", default: 15, min: 1, max: MAX_LOOPS },
  lr: { kind: "number", description: "SGD learning rate (momentum 0.9, cosine schedule)", defaultText: `${FST_LR.head} with --tune head, ${FST_LR.all} (the paper's) with --tune all`, min: 0, exclusiveMin: true },
  batchSize: { kind: "integer", description: "training batch size", default: 64, min: 1, max: 65536 },
  distill: { kind: "number", description: "weight β of B's own predictions in the training targets, (1−β)·label + β·softmax(B), B's probability of labels detection flagged left out", defaultText: `${FST_DISTILL} where detection flagged labels (repair), else 0`, min: 0, max: 1 },
  maxDrop: { kind: "number", description: "keep the last epoch within this much held-out clean accuracy of B (fraction)", default: 0.02, min: 0, max: 1 },
  holdout: { kind: "number", description: "share of the clean data held out to choose the epoch", default: 0.2, min: 0, max: 1, exclusiveMin: true, exclusiveMax: true },
  batchNorm: { ...BATCH_NORM_OPTION, description: `${BATCH_NORM_OPTION.description}; only with --tune all` },
  seed: SEED_OPTION,
} as const satisfies OptionSpecs;

export type FstSettings = Omit<OptionValues<typeof FST_OPTIONS>, "lr" | "distill"> & {
  lr: number;
  distill: number;
  /** Labels whose probability under B is left out of the targets (detection's flagged labels). */
  untrusted: number[];
};

export interface FstOptions extends Partial<FstSettings> {
  evalBatchSize?: number;
  onEpoch?: (e: FstEpoch) => void;
}

export interface FstEpoch {
  epoch: number;
  /** Held-out clean accuracy after the epoch (epoch 0: B). */
  heldOutAccuracy: number;
  /** cos(W, W₀) of the head after the epoch (epoch 0: 1). */
  cosine: number;
  loss: number;
  seconds: number;
}

/** What FST trained, before any evaluation: the epoch kept and how the training got there. */
export interface FstTrained {
  model: Model;
  head: LinearHead;
  history: FstEpoch[];
  chosenEpoch: number;
  settings: FstSettings;
  /** How BatchNorm trained (with --tune all). */
  batchNorm?: string;
}

export interface FstResult extends NcEvaluation, FstTrained {
  gGraph: Graph;
}

export function checkFstOptions(o: FstOptions): FstSettings {
  const s = resolveOptions(FST_OPTIONS, pickOptions(FST_OPTIONS, o));
  const untrusted = [...new Set(o.untrusted ?? [])].sort((a, b) => a - b);
  return { ...s, lr: s.lr ?? FST_LR[s.tune], distill: s.distill ?? (untrusted.length ? FST_DISTILL : 0), untrusted };
}

export interface LinearHead {
  /** The weight parameter (any layout: [F, K] for MatMul, [K, F] for Gemm with transB). */
  weight: string;
  /** The bias parameter, when the head has one. */
  bias?: string;
  /** The value the head reads, [N, F]. */
  features: string;
  /** F: every output unit's fan-in. */
  width: number;
}

/** The output Dense layer (nc-mitigation's outputDense) with its bias and the width of the features it reads. */
export function linearHead(model: Model): LinearHead {
  const g = model.graph;
  const { node, x } = outputDense(model);
  const shape = g.shape(x);
  const width = shape[1];
  if (shape.length !== 2 || typeof width !== "number") fail(`${model.name}: the output layer reads [${shape}], not [N, F] features`);
  const params = new Set(model.params.map((p) => p.value));
  let bias: string | undefined = node.op === "Gemm" && node.inputs[2] && params.has(node.inputs[2]) ? node.inputs[2] : undefined;
  if (!bias) {
    const reader = g.nodes.find((n) => n.op === "Add" && n.inputs.includes(node.outputs[0]));
    bias = reader?.inputs.find((i) => params.has(i));
  }
  return { weight: node.inputs[1], bias, features: x, width };
}

/** The FST loss: mean CE plus λ·⟨W, W₀⟩/‖W₀‖² on the head weight `weight` (a graph value) against B's W₀. */
export function fstLoss(weight: string, w0: TensorData, lambda: number): (g: Graph, logits: string, target: string) => string {
  const scale = lambda / sumSquares(w0.data as Float32Array);
  return (g, logits, target) => {
    const ce = softmaxCrossEntropy(g, logits, target);
    const agree = g.op("ReduceSum", [g.op("Mul", [weight, g.constant(w0, "fst_w0")])], { keepdims: attr.int(0) });
    return g.op("Add", [ce, g.op("Mul", [agree, g.scalar(scale)])], {}, "fst/loss");
  };
}

function sumSquares(a: Float32Array): number {
  let s = 0;
  for (const v of a) s += v * v;
  return s;
}

/** Rescales `w` in place to Euclidean norm `norm` (the paper's constraint ‖W‖ = ‖W₀‖). */
export function projectNorm(w: Float32Array, norm: number): void {
  const n = Math.sqrt(sumSquares(w));
  if (n === 0) return;
  const f = norm / n;
  for (let i = 0; i < w.length; i++) w[i] *= f;
}

/** cos(a, b) of two same-length vectors (0 when either is zero). */
export function cosine(a: Float32Array, b: Float32Array): number {
  let ab = 0;
  for (let i = 0; i < a.length; i++) ab += a[i] * b[i];
  const d = Math.sqrt(sumSquares(a) * sumSquares(b));
  return d === 0 ? 0 : ab / d;
}

/** The paper's cosine schedule: lr·½(1 + cos(π·e/E)) in epoch e (0-based) of E. */
export function cosineLr(lr: number, epoch: number, epochs: number): number {
  return lr * 0.5 * (1 + Math.cos((Math.PI * epoch) / epochs));
}

/** PyTorch's Linear initialisation: U(−1/√F, 1/√F) for weight and bias. */
function freshHead(model: Model, head: LinearHead, rand: () => number): Map<string, TensorData> {
  const bound = 1 / Math.sqrt(head.width);
  const out = new Map<string, TensorData>();
  for (const p of [head.weight, head.bias]) {
    if (!p) continue;
    const t = model.graph.initializers.get(p)!;
    out.set(p, tensor("float32", [...t.shape], Float32Array.from({ length: t.data.length }, () => (2 * rand() - 1) * bound)));
  }
  return out;
}

/** Values `names` ([N, width] each) of B for images x (NCHW), computed in one pass. */
async function storedValues(model: Model, names: string[], x: Float32Array, evalBatchSize?: number): Promise<Float32Array[]> {
  const [c, h, w] = model.inputShape;
  const per = c * h * w;
  const n = x.length / per;
  const widths = names.map((v) => model.graph.shape(v)[1] as number);
  const out = widths.map((wd) => new Float32Array(n * wd));
  const source = { size: n, shape: model.inputShape, read: (s: number, k: number) => x.subarray(s * per, (s + k) * per) };
  await withSession(forwardGraph(model, names), (s) =>
    forEachBatch(s, source, (o, start) => names.forEach((v, i) => out[i].set(o[v].data as Float32Array, start * widths[i])), { batchSize: evalBatchSize ?? DEFAULT_BATCH, input: model.input }),
  );
  return out;
}

/**
 * Training targets, [N, K]: the one-hot labels mixed with B's softmax, (1−β)·y + β·p_B. B's predictions on clean
 * images carry its clean decision boundary, more per image than a label, while the penalty still pushes the head
 * away from W₀. The untrusted labels' probability is left out of p_B (renormalised) on images of other labels:
 * a flagged target's share on clean images is where B's backdoor shows, and teaching it would teach the trigger.
 * β = 0 is the paper's plain labels.
 */
export function mixedTargets(y: Int32Array, logits: Float32Array | undefined, k: number, beta: number, untrusted: readonly number[] = []): Float32Array {
  const out = oneHot(y, k);
  if (beta === 0) return out;
  if (!logits || logits.length !== y.length * k) throw new Error(`mixedTargets: ${y.length} labels need ${y.length * k} logits`);
  if (notALabel(untrusted, k) !== undefined) throw new Error(`mixedTargets: untrusted labels [${untrusted}] outside 0..${k - 1}`);
  const e = new Float64Array(k);
  for (let i = 0; i < y.length; i++) {
    const row = logits.subarray(i * k, (i + 1) * k);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    for (let j = 0; j < k; j++) e[j] = Math.exp(row[j] - max);
    for (const u of untrusted) if (u !== y[i]) e[u] = 0;
    let sum = 0;
    for (const v of e) sum += v;
    // Every trusted probability underflowed: the label alone.
    if (!(sum > 0)) continue;
    for (let j = 0; j < k; j++) out[i * k + j] = (1 - beta) * out[i * k + j] + (beta * e[j]) / sum;
  }
  return out;
}

/** The first of `labels` that is not a class of a k-class model. */
const notALabel = (labels: readonly number[], k: number): number | undefined => labels.find((u) => !(Number.isInteger(u) && u >= 0 && u < k));

/** Rows idx of an [N, k] matrix. */
function rows(m: Float32Array, k: number, idx: Int32Array): Float32Array {
  const out = new Float32Array(idx.length * k);
  idx.forEach((j, i) => out.set(m.subarray(j * k, (j + 1) * k), i * k));
  return out;
}

/** What one epoch needs: the step data, how a batch becomes the step's input, and the held-out accuracy now. */
interface Trainee {
  x: Float32Array;
  /** B's logits on the training images, when --distill needs them. */
  teacher?: Float32Array;
  /** Floats per example of x. */
  per: number;
  inputShape: number[];
  runner: StepRunner;
  /** The network reached and its held-out accuracy. */
  reached: () => Promise<{ model: Model; accuracy: number }>;
  /** How BatchNorm trains (every parameter only; the head has none). */
  batchNorm?: string;
  release: () => Promise<void>;
}

/** FST as a repair: the network trained, evaluated against B on the data's test sets, with its G. */
export async function fst(model: Model, data: NcData, opts: FstOptions = {}): Promise<FstResult> {
  const { model: chosen, ...trained } = await fstTrain(model, data, opts);
  return { ...(await finishRepair(model, chosen, data, "fst", opts.evalBatchSize)), ...trained };
}

/** FST's training alone (the head-shift evidence needs the network, not its evaluation on every image). */
export async function fstTrain(model: Model, data: NcData, opts: FstOptions = {}): Promise<FstTrained> {
  const s = checkFstOptions(opts);
  checkRepairData(model, data, "FST");
  const head = linearHead(model);
  const w0 = model.graph.initializers.get(head.weight)!;
  const w0Data = w0.data as Float32Array;
  const norm0 = Math.sqrt(sumSquares(w0Data));
  if (norm0 === 0) fail(`${model.name}: the output layer's weight is all zero; FST has no head to shift away from`);
  const k = model.numClasses;
  const out = notALabel(s.untrusted, k);
  if (out !== undefined) fail(`FST: label ${out} to leave out of B's predictions is not one of ${model.name}'s ${k} labels (0-${k - 1})`);
  const { train: tr, heldOut: held, accuracy: accOf } = heldOutSplit(data.clean, s.holdout, s.seed, "FST", opts.evalBatchSize);
  const rand = mulberry32(s.seed);
  const start = withParams(model, freshHead(model, head, rand));
  const optimizer = { kind: "sgd" as const, lr: s.lr, momentum: 0.9 };
  const loss = fstLoss(head.weight, w0, s.shift);
  const base = await accOf(model);
  const t = s.tune === "head" ? await headTrainee(model, start, head, tr.x, held, loss, optimizer, s.batchSize, s.distill > 0, opts.evalBatchSize) : await fullTrainee(model, start, tr.x, accOf, loss, optimizer, s.batchSize, s.batchNorm, s.distill > 0, opts.evalBatchSize);
  const history: FstEpoch[] = [{ epoch: 0, heldOutAccuracy: base, cosine: 1, loss: NaN, seconds: 0 }];
  const picker = new RoundPicker(model, base, s.maxDrop);
  try {
    const n = tr.y.length;
    const targets = mixedTargets(tr.y, t.teacher, k, s.distill, s.untrusted);
    for (let epoch = 1; epoch <= s.epochs; epoch++) {
      const t0 = performance.now();
      const lr = cosineLr(s.lr, epoch - 1, s.epochs);
      let lossSum = 0, batches = 0;
      for (const idx of shuffledBatches(n, s.batchSize, rand)) {
        const b = gather(t.x, tr.y, t.per, idx);
        const r = await t.runner.run(tensor("float32", [idx.length, ...t.inputShape], b.x), tensor("float32", [idx.length, k], rows(targets, k, idx)), lr);
        if (!Number.isFinite(r.loss)) fail(`FST diverged in epoch ${epoch} (loss ${r.loss}); lower --lr`);
        projectNorm(t.runner.live().get(head.weight)!.data as Float32Array, norm0);
        lossSum += r.loss;
        batches++;
      }
      const { model: current, accuracy: acc } = await t.reached();
      const entry: FstEpoch = { epoch, heldOutAccuracy: acc, cosine: cosine(t.runner.live().get(head.weight)!.data as Float32Array, w0Data), loss: lossSum / batches, seconds: (performance.now() - t0) / 1000 };
      history.push(entry);
      opts.onEpoch?.(entry);
      picker.offer(current, epoch, acc);
    }
  } finally {
    await t.release();
  }
  const chosen = picker.pick();
  return { model: chosen.model, head, history, chosenEpoch: chosen.round, settings: s, batchNorm: t.batchNorm };
}

type Loss = (g: Graph, logits: string, target: string) => string;
type Sgd = { kind: "sgd"; lr: number; momentum: number };

/** The head alone on stored features: the step graph is the head's graph, the trunk runs once per image. */
async function headTrainee(b: Model, start: Model, head: LinearHead, trainX: Float32Array, held: { x: Float32Array; y: Int32Array }, loss: Loss, optimizer: Sgd, batchSize: number, withTeacher: boolean, evalBatchSize?: number): Promise<Trainee> {
  const f = head.width;
  // From B: the trunk is start's, and B's logits are the teacher's.
  const [x, teacher] = await storedValues(b, withTeacher ? [head.features, b.logits] : [head.features], trainX, evalBatchSize);
  const [heldF] = await storedValues(b, [head.features], held.x, evalBatchSize);
  const g = graphFrom(start, head.features, ["N", f], `${start.name}_head`);
  const headParams = start.params.filter((p) => p.value === head.weight || p.value === head.bias);
  const headModel = { name: g.name, graph: g, logits: start.logits, numClasses: start.numClasses, params: headParams };
  const runner = await StepRunner.create(buildStepGraph(headModel, { optimizer, loss }), { work: { macsPerRun: f * start.numClasses * batchSize } });
  // Held-out accuracy of the head as it is now: the head graph with its parameters fed.
  const ev = g.clone(`${g.name}_eval`);
  for (const p of headParams) ev.liftInitializer(p.value);
  const evSession = await Session.create(ev);
  const current = () => withParams(start, runner.params());
  const accuracy = async () => {
    const live = runner.live();
    const feeds: Record<string, TensorData> = Object.fromEntries(headParams.map((p) => [p.value, live.get(p.value)!]));
    const n = held.y.length;
    const out = await evSession.run({ ...feeds, [start.input]: tensor("float32", [n, f], heldF) }, [start.logits]);
    return countCorrect(argmaxRows(out[start.logits].data as Float32Array, start.numClasses), held.y) / n;
  };
  return {
    x,
    teacher,
    per: f,
    inputShape: [f],
    runner,
    reached: async () => ({ model: current(), accuracy: await accuracy() }),
    release: async () => {
      await runner.release();
      await evSession.release();
    },
  };
}

/** Every parameter, as in the paper: the usual training step with the FST loss. */
async function fullTrainee(b: Model, start: Model, trainX: Float32Array, accuracyOf: (m: Model) => Promise<number>, loss: Loss, optimizer: Sgd, batchSize: number, batchNorm: BatchNormMode, withTeacher: boolean, evalBatchSize?: number): Promise<Trainee> {
  const [c, h, w] = start.inputShape;
  const teacher = withTeacher ? (await storedValues(b, [b.logits], trainX, evalBatchSize))[0] : undefined;
  const plan = await prepareBatchNorm(start, memoryDataset("FST training images", [c, h, w], trainX, null), { batchSize, mode: batchNorm });
  const runner = await StepRunner.create(buildStepGraph(plan.trainee, { optimizer, loss, batchNorm: plan.stepMode }), gradientWork(start, batchSize));
  const reached = async () => {
    const model = await plan.finish(runner.params());
    return { model, accuracy: await accuracyOf(model) };
  };
  return { x: trainX, teacher, per: c * h * w, inputShape: [c, h, w], runner, reached, batchNorm: plan.summary, release: () => runner.release() };
}
