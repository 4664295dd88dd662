// Training loop: one compiled step graph (forward + backward + optimizer update) run batch by batch.
import { fail } from "../errors.js";
import { backward, type ConvGradForms } from "../graph/autodiff.js";
import { tensor, type Graph, type TensorData } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { addOptimizer, stepLr, type OptimizerConfig, type OptimizerGraph } from "../graph/optimizers.js";
import { maskChannels, poolBeforeRelu } from "../graph/transforms.js";
import { argmaxRows } from "../model/forward.js";
import { memoryDataset } from "../io/dataset.js";
import type { Model, ParamRef } from "../model/model.js";
import { Session, type SessionOptions } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";
import { gather, shuffledBatches } from "./split.js";
import { HostOptimizer } from "./host-optimizer.js";
import { DEFAULT_BATCH_NORM, type BatchNormMode } from "./batch-norm-stats.js";
import { prepareBatchNorm } from "./batch-norm-training.js";
import { useBatchStatistics } from "../graph/batch-norm.js";
import { gradientWork } from "../runtime/threads.js";

/** Labelled images in memory: x is NCHW float32 already scaled. */
export interface TrainData {
  x: Float32Array;
  y: Int32Array;
  shape: [number, number, number];
}

export interface EpochStats {
  epoch: number;
  loss: number;
  accuracy: number;
  seconds: number;
}

export interface TrainOptions {
  epochs: number;
  batchSize?: number;
  optimizer: OptimizerConfig;
  seed?: number;
  /** Which parameters learn (default: all). The others are frozen into the graph as constants. */
  trainable?: (p: ParamRef) => boolean;
  /** Layer value → per-channel 0/1 mask, held fixed during training (pruned channels stay at zero). */
  channelMasks?: Map<string, Float32Array>;
  /** Rewrites a batch in place before the step (poisoning, trigger stamping for unlearning). */
  transformBatch?: (x: Float32Array, y: Int32Array, rand: () => number) => void;
  /** Learning-rate multiplier per epoch (0-based), default 1. */
  lrSchedule?: (epoch: number) => number;
  /**
   * After each epoch; `current()` builds the model with the parameters reached so far (for validation), as it
   * would be handed back (BatchNorm statistics re-estimated: a forward pass, run only when asked for).
   */
  onEpoch?: (s: EpochStats, current: () => Promise<Model>) => void | Promise<void>;
  /** After onEpoch: true ends training before the epoch budget (early stopping, train/early-stop.ts). */
  stopAfterEpoch?: (s: EpochStats, current: () => Promise<Model>) => boolean | Promise<boolean>;
  onBatch?: (done: number, total: number, loss: number) => void;
  /** onnxruntime settings of the step session (threads, spinning). */
  session?: SessionOptions;
  /** Conv gradient forms and where the update runs (defaults: graph/autodiff.ts, DEFAULT_UPDATE); benchmarks compare them. */
  convForms?: ConvGradForms;
  update?: UpdatePlace;
  /** BatchNormalization during training (train/batch-norm-stats.ts): batch statistics (default) or frozen. */
  batchNorm?: BatchNormMode;
}

// Moved to util/random.ts; re-exported for existing importers.
export { shuffled } from "../util/random.js";

export function oneHot(y: Int32Array, k: number): Float32Array {
  const out = new Float32Array(y.length * k);
  y.forEach((v, i) => (out[i * k + v] = 1));
  return out;
}

/** A UserError naming the first NaN/Inf pixel: otherwise one bad pixel surfaces as "training diverged". */
export function checkFinite(data: TrainData): void {
  const per = data.shape[0] * data.shape[1] * data.shape[2];
  for (let i = 0; i < data.x.length; i++) {
    if (Number.isFinite(data.x[i])) continue;
    const [c, h, w] = data.shape;
    const q = i % per;
    const ch = Math.floor(q / (h * w)), y = Math.floor((q % (h * w)) / w), x = q % w;
    fail(`training data: image ${Math.floor(i / per)} has a non-finite pixel (${data.x[i]}) at channel ${ch}, row ${y}, column ${x} of ${c}x${h}x${w}; fix the data before training`);
  }
}

/**
 * Where the optimizer update runs:
 * - "graph" (default): as nodes of the step graph (graph/optimizers.ts); parameters and optimizer state go in
 *   as inputs and come out as outputs, written into a second set of arrays;
 * - "host": the graph ends at the gradients, which the runtime writes into fixed arrays, and
 *   train/host-optimizer.ts updates parameters and state in place. Same rules; one single-threaded JS pass per
 *   parameter instead of a dozen whole-tensor graph nodes on all cores. On full-width PreAct-ResNet18 it
 *   measured 0.82–0.89× the graph update's step rate in the same runs (docs/pytorch-speed.md), so it is not
 *   the default.
 */
export type UpdatePlace = "graph" | "host";
export const UPDATE_PLACES: readonly UpdatePlace[] = ["graph", "host"];
export const DEFAULT_UPDATE: UpdatePlace = "graph";

/** The training step as one graph: forward, loss, backward and (update "graph") the optimizer update. */
export interface StepGraph {
  graph: Graph;
  loss: string;
  logits: string;
  update: UpdatePlace;
  optimizerConfig: OptimizerConfig;
  /** The update nodes (update "graph" only). */
  optimizer?: OptimizerGraph;
  /** Trainable parameter → its gradient, a graph output (update "host" only). */
  grads: Map<string, string>;
  /** Trainable parameters (graph inputs now) with their starting values. */
  params: Map<string, TensorData>;
}

/** What a step graph needs of a model: a head trained on stored features (defenses/fst.ts) is one too. */
export type StepModel = Pick<Model, "name" | "graph" | "logits" | "numClasses" | "params">;

export function buildStepGraph(
  model: StepModel,
  opts: Pick<TrainOptions, "optimizer" | "trainable" | "channelMasks" | "batchNorm"> & {
    pooledRelus?: boolean;
    convForms?: ConvGradForms;
    update?: UpdatePlace;
    /** A loss other than mean softmax CE (it may add graph inputs of its own, fed through run's `extra`). */
    loss?: (g: Graph, logits: string, target: string) => string;
  },
): StepGraph {
  const g = model.graph.clone(`${model.name}_train`);
  for (const [value, mask] of opts.channelMasks ?? []) maskChannels(g, value, g.constant(tensor("float32", [mask.length], mask), "channel_mask"));
  if ((opts.batchNorm ?? DEFAULT_BATCH_NORM) === "batch") useBatchStatistics(g);
  // Same values, a cheaper backward pass (default on; off only to compare).
  if (opts.pooledRelus ?? true) poolBeforeRelu(g);
  const target = g.addInput("target", "float32", ["N", model.numClasses]);
  const loss = (opts.loss ?? softmaxCrossEntropy)(g, model.logits, target);
  const trainable = model.params.filter(opts.trainable ?? (() => true)).map((p) => p.value);
  const params = new Map<string, TensorData>();
  for (const p of trainable) params.set(p, g.liftInitializer(p));
  const grads = backward(g, loss, trainable, { convForms: opts.convForms });
  const update = opts.update ?? DEFAULT_UPDATE;
  if (update === "host") {
    g.setOutputs([loss, model.logits, ...new Set(grads.values())]);
    return { graph: g, loss, logits: model.logits, update, optimizerConfig: opts.optimizer, grads, params };
  }
  const optimizer = addOptimizer(g, grads, opts.optimizer);
  g.setOutputs([loss, model.logits, ...optimizer.slots.flatMap((s) => [s.next, ...s.state.map((st) => st.output)])]);
  return { graph: g, loss, logits: model.logits, update, optimizerConfig: opts.optimizer, optimizer, grads: new Map(), params };
}

const fresh = (t: TensorData): TensorData => tensor("float32", [...t.shape], new Float32Array(t.data.length));
const copyOf = (t: TensorData): TensorData => tensor("float32", [...t.shape], Float32Array.from(t.data as Float32Array));

/**
 * Runs a compiled step graph batch after batch without allocating or copying parameters per step.
 * Update "graph": parameters and optimizer state live in two sets of arrays that swap roles every step: one is
 * fed, the runtime writes the updated values straight into the other. Update "host": one set of parameter
 * arrays is fed, the runtime writes the gradients into fixed arrays, and the host optimizer updates the
 * parameters in place. Only the loss and the logits are allocated per step.
 */
export class StepRunner {
  private cur = new Map<string, TensorData>();
  private next = new Map<string, TensorData>();
  /** Graph output → the state input it replaces (update "graph"). */
  private readonly feedsOf = new Map<string, string>();
  /** Gradient output → the array the runtime writes it into (update "host"). */
  private readonly gradInto = new Map<string, TensorData>();
  private readonly host?: HostOptimizer;
  private readonly hostParams: Float32Array[] = [];
  private readonly hostGrads: Float32Array[] = [];

  private constructor(private readonly step: StepGraph, private readonly session: Session) {
    if (step.optimizer) {
      for (const s of step.optimizer.slots) {
        this.feedsOf.set(s.next, s.param);
        for (const st of s.state) this.feedsOf.set(st.output, st.input);
        this.cur.set(s.param, copyOf(step.params.get(s.param)!));
        for (const st of s.state) this.cur.set(st.input, copyOf(st.init));
      }
      for (const [k, t] of this.cur) this.next.set(k, fresh(t));
      return;
    }
    for (const [p, t] of step.params) {
      const cur = copyOf(t);
      this.cur.set(p, cur);
      const gname = step.grads.get(p)!;
      // Two parameters with one gradient value (not seen in practice) would share its array.
      const into = this.gradInto.get(gname) ?? fresh(t);
      this.gradInto.set(gname, into);
      this.hostParams.push(cur.data as Float32Array);
      this.hostGrads.push(into.data as Float32Array);
    }
    this.host = new HostOptimizer(step.optimizerConfig, this.hostParams.map((a) => a.length));
  }

  static async create(step: StepGraph, opts: SessionOptions = {}): Promise<StepRunner> {
    return new StepRunner(step, await Session.create(step.graph, opts));
  }

  /**
   * One step on a batch (x NCHW, one-hot targets) at learning rate lr; returns the loss and the logits.
   * `extra` feeds the inputs a custom loss added.
   */
  async run(x: TensorData, target: TensorData, lr: number, extra: Readonly<Record<string, TensorData>> = {}): Promise<{ loss: number; logits: Float32Array }> {
    const feeds: Record<string, TensorData> = { ...extra, input: x, target };
    for (const [k, v] of this.cur) feeds[k] = v;
    const fetches = [this.step.loss, this.step.logits];
    if (this.host) {
      const res = await this.session.runInto(feeds, Object.fromEntries(this.gradInto), fetches);
      this.host.step(this.hostParams, this.hostGrads, lr);
      return { loss: (res[this.step.loss].data as Float32Array)[0], logits: res[this.step.logits].data as Float32Array };
    }
    feeds[this.step.optimizer!.lrInput] = tensor("float32", [], Float32Array.of(lr));
    const into: Record<string, TensorData> = {};
    for (const [out, inp] of this.feedsOf) into[out] = this.next.get(inp)!;
    const res = await this.session.runInto(feeds, into, fetches);
    [this.cur, this.next] = [this.next, this.cur];
    return { loss: (res[this.step.loss].data as Float32Array)[0], logits: res[this.step.logits].data as Float32Array };
  }

  /** The parameters reached so far (copies: the runner keeps writing into its own arrays). */
  params(): Map<string, TensorData> {
    const m = new Map<string, TensorData>();
    for (const p of this.step.params.keys()) m.set(p, copyOf(this.cur.get(p)!));
    return m;
  }

  /** The arrays the next step reads its parameters from (no copies: a caller may shift them in place, as SAM does). */
  live(): Map<string, TensorData> {
    return new Map([...this.step.params.keys()].map((p) => [p, this.cur.get(p)!]));
  }

  /** Writes the profile of a session created with `profilePrefix`. */
  endProfiling(): void {
    this.session.endProfiling();
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export async function train(model: Model, data: TrainData, opts: TrainOptions): Promise<{ model: Model; history: EpochStats[]; batchNorm?: string }> {
  checkFinite(data);
  const bs = opts.batchSize ?? 64;
  const plan = await prepareBatchNorm(model, memoryDataset("training images", data.shape, data.x, null), { batchSize: bs, mode: opts.batchNorm, channelMasks: opts.channelMasks });
  const runner = await StepRunner.create(buildStepGraph(plan.trainee, { ...opts, batchNorm: plan.stepMode }), { ...gradientWork(model, Math.min(bs, data.y.length)), ...opts.session });
  try {
    const rand = mulberry32(opts.seed ?? 0);
    const [c, h, w] = data.shape;
    const per = c * h * w;
    const n = data.y.length;
    const history: EpochStats[] = [];
    let step = 0;
    for (let epoch = 0; epoch < opts.epochs; epoch++) {
      const t0 = performance.now();
      let lossSum = 0, correct = 0, seen = 0;
      for (const idx of shuffledBatches(n, bs, rand)) {
        const count = idx.length;
        const { x, y } = gather(data.x, data.y, per, idx);
        opts.transformBatch?.(x, y, rand);
        step++;
        const lr = stepLr(opts.optimizer, step, opts.optimizer.lr * (opts.lrSchedule?.(epoch) ?? 1));
        const out = await runner.run(
          tensor("float32", [count, c, h, w], x),
          tensor("float32", [count, model.numClasses], oneHot(y, model.numClasses)),
          lr,
        );
        const l = out.loss;
        // A learning rate the caller chose (--lr): their input, so a one-line error rather than an internal one.
        if (!Number.isFinite(l)) fail(`training diverged at epoch ${epoch + 1} (loss ${l}); lower the learning rate (--lr)`);
        lossSum += l * count;
        const pred = argmaxRows(out.logits, model.numClasses);
        pred.forEach((p, i) => (correct += p === y[i] ? 1 : 0));
        seen += count;
        opts.onBatch?.(seen, n, l);
      }
      const s = { epoch: epoch + 1, loss: lossSum / n, accuracy: correct / n, seconds: (performance.now() - t0) / 1000 };
      history.push(s);
      // The network as it will be handed back (BatchNorm statistics re-estimated, re-inserted ones folded),
      // built once per epoch and only when asked for.
      let reached: Promise<Model> | undefined;
      const current = () => (reached ??= plan.finish(runner.params()));
      await opts.onEpoch?.(s, current);
      if (await opts.stopAfterEpoch?.(s, current)) break;
    }
    return { model: await plan.finish(runner.params()), history, batchNorm: plan.summary };
  } finally {
    await runner.release();
  }
}
