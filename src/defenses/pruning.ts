// The pruning defense (Liu, Dolan-Gavitt & Garg, "Fine-Pruning", RAID 2018; CSAW-HackML 2020 lab): channels
// of the last convolutional layer that stay dormant on clean inputs are where a backdoor tends to hide, so
// they are removed one at a time, most dormant first, while clean validation accuracy is tracked.
//
// Pruning channel c forces it to 0: in the saved network conv kernel[c] and bias[c] are zeroed (ReLU(0) = 0
// and max-pooling zeros gives zeros, so masking the pooled activation is the same thing). Activations are
// measured where the lab measures them: after the conv's ReLU and its following pooling (DeepID: pool_3),
// averaged over the clean validation images and spatial positions.
//
// Speed: the trunk (input → that pooled value) runs once per image and its output is kept in memory; each
// pruning step then runs only the head (everything downstream of the cached value, with the channel mask
// as a graph input), which for DeepID is a small fraction of the network.
//
// Saved networks: for each drop X (percentage points), B'_X is the FIRST network of the sweep whose clean
// validation accuracy is at least X points below the unpruned accuracy (the CSAW lab's "save the model when
// the accuracy drops by at least X%"). If even pruning every channel does not reach that, B'_X is the
// network with every channel pruned and the drop is reported with reached = false.
import { fail } from "../errors.js";
import { OptionError } from "./defense.js";
import { attr, tensor, type Graph, type Node, type TensorData } from "../graph/ir.js";
import { headGraph, maskChannels } from "../graph/transforms.js";
import type { Dataset } from "../io/dataset.js";
import { checkData, countCorrect, evalResult, evaluatePair, type SplitLabels, type SplitPredictions } from "../eval/evaluate.js";
import { batchTensor, DEFAULT_BATCH, forwardGraph, type BatchSource } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { convPrunePoint, prunableLayers, type PrunableLayer } from "../model/prunable.js";
import { paramValues, withParams } from "../model/params.js";
import type { ReportEvalResult, ReportG, ReportPruning, ReportPruningDrop, ReportPruningPoint } from "../report/types.js";
import { Session } from "../runtime/session.js";
import { gFromMaskedBranch } from "./g-model.js";
import { lapTimer } from "../util/timing.js";

export type PruneOrder = "increasing" | "decreasing";

/** Single-input activations a Keras Conv2D layer may end with (walked back to find the Conv node). */
const ACTIVATIONS = new Set(["Relu", "LeakyRelu", "Identity", "Tanh", "Sigmoid", "Elu", "Selu", "Softplus"]);

/** Where the pruning acts. */
export interface PruneTarget {
  /** The prunable layer's name, e.g. "conv_3" or "/avgpool/GlobalAveragePool" (see model/prunable.ts). */
  layer: string;
  /** "conv" (or absent): kernel[c] and bias[c] of a conv are zeroed; "feature": a residual/BN'd feature map's channel c is masked. */
  kind?: "conv" | "feature";
  /** The value held at zero while fine-tuning: the Conv node's output (before the activation), or `value` for "feature". */
  conv: string;
  /** IR parameter names of the conv's kernel [cout, cin, kh, kw] and bias [cout] ("conv" kind only). */
  kernel?: string;
  bias?: string;
  channels: number;
  /** Where activations are measured and channels masked: after the ReLU and the pooling (DeepID: pool_3). */
  value: string;
}

/** Names of the convolutional layers, in layer order (Keras Conv2D layers; Conv nodes for ONNX models). */
export function convLayers(model: Model): string[] {
  const cls = new Map(model.spec?.layers.map((l) => [l.name, l.className]) ?? []);
  return [...model.layerOutputs]
    .filter(([name, v]) => (cls.has(name) ? cls.get(name) === "Conv2D" : model.graph.producer(v)?.op === "Conv"))
    .map(([name]) => name);
}

/** Conv layers and residual sums, the default marked (the rule is in model/prunable.ts). */
export function prunable(model: Model): PrunableLayer[] {
  return prunableLayers(model, convLayers(model));
}

/**
 * The default layer to prune: the last feature map that all of the network's information flows through
 * (model/prunable.ts). For DeepID that is conv_3 (conv_4 sits on a side branch next to flatten_1); for a
 * plain CNN, its last conv; for a residual network, the feature map after its last residual sum.
 */
export function defaultPruneLayer(model: Model): string {
  const layers = prunable(model);
  const d = layers.find((l) => l.isDefault);
  if (d) return d.name;
  const convs = convLayers(model);
  if (convs.length === 0) fail(`model ${model.name} has no convolutional layer to prune`);
  return convs[convs.length - 1];
}

/** Resolves the layer to prune (default: defaultPruneLayer) and where its channels are measured and masked. */
export function pruneTarget(model: Model, layer?: string): PruneTarget {
  const convs = convLayers(model);
  let name = layer ?? defaultPruneLayer(model);
  if (!convs.includes(name)) {
    const layers = prunable(model);
    // A layer is named by its node/layer name or by its readable name (with or without the role).
    const f = layers.find((l) => l.name === name || l.readable === name || l.readable.replace(/ \(.*\)$/, "") === name);
    if (f?.kind === "feature") return { layer: f.name, kind: "feature", conv: f.value, channels: f.channels, value: f.value };
    if (!f) {
      const names = layers.map((l) => (l.readable === l.name ? l.name : `${l.name} [${l.readable}]`));
      fail(`model ${model.name} has no prunable layer "${name}" (prunable layers: ${names.join(", ") || "none"})`);
    }
    name = f.name;
  }
  const g = model.graph;
  let node: Node | undefined = g.producer(model.layerOutputs.get(name)!);
  while (node && ACTIVATIONS.has(node.op)) node = g.producer(node.inputs[0]);
  if (!node || node.op !== "Conv") fail(`layer "${name}" is not produced by a Conv node`);
  const [, kernel, bias] = node.inputs;
  const params = new Set(model.params.map((p) => p.value));
  if (!params.has(kernel) || (bias && !params.has(bias))) fail(`layer "${name}": its Conv weights are not stored parameters, so it cannot be pruned`);
  const channels = g.staticShape(kernel)[0];
  // Follow the conv through its ReLU and pooling while nothing else reads the values on the way.
  return { layer: name, kind: "conv", conv: node.outputs[0], kernel, bias: bias || undefined, channels, value: convPrunePoint(g, node) };
}

/** A [C] mask: 1 everywhere except 0 at `pruned`. */
export function channelMask(channels: number, pruned: readonly number[]): Float32Array {
  const m = new Float32Array(channels).fill(1);
  for (const c of pruned) {
    if (!Number.isInteger(c) || c < 0 || c >= channels) throw new RangeError(`channel ${c} outside 0..${channels - 1}`);
    m[c] = 0;
  }
  return m;
}

/**
 * The model with `pruned` channels of the target zeroed: for a conv, kernel[c] and bias[c] (the Keras spec
 * follows); for a feature map, a constant channel mask multiplied in at the target value (set again, not
 * stacked, when the model already carries one). A Keras file cannot hold that mask, so such a model is saved
 * as ONNX only.
 */
export function prunedModel(model: Model, target: PruneTarget, pruned: readonly number[], name = `${model.name}_pruned`): Model {
  if (target.kind === "feature") {
    const graph = model.graph.clone(name);
    const maskName = `${target.value}/prune_mask`;
    const had = graph.initializers.has(maskName);
    graph.addInitializer(maskName, tensor("float32", [target.channels], channelMask(target.channels, pruned)));
    // Its own name: fine-tuning masks target.value again (as `${value}/masked`) on top of this one.
    if (!had) maskChannels(graph, target.value, maskName, `${target.value}/pruned`);
    return { ...model, name, graph, spec: undefined };
  }
  const values = paramValues(model);
  const k = values.get(target.kernel!)!;
  const per = k.data.length / target.channels;
  const kd = Float32Array.from(k.data as Float32Array);
  for (const c of pruned) kd.fill(0, c * per, (c + 1) * per);
  const upd = new Map([[target.kernel!, tensor("float32", [...k.shape], kd)]]);
  if (target.bias) {
    const b = values.get(target.bias)!;
    const bd = Float32Array.from(b.data as Float32Array);
    for (const c of pruned) bd[c] = 0;
    upd.set(target.bias, tensor("float32", [...b.shape], bd));
  }
  return withParams(model, upd, name);
}

/** A value's shape without the batch dim (which must be the only symbolic one). */
function perImageShape(g: Graph, v: string): number[] {
  const s = g.shape(v).slice(1);
  if (!s.every((d): d is number => typeof d === "number")) throw new Error(`value "${v}" has shape [${g.shape(v)}]: only the batch dim may be symbolic`);
  return s;
}

/** Images run through the trunk once: one array per head input, `per[i]` floats per image. */
export interface CachedData {
  n: number;
  labels: Int32Array;
  arrays: Float32Array[];
}

/** The trunk/head split of a model at the pruned value, compiled once. */
export class PruneEngine {
  /** Floats per image of each head input. */
  private readonly per: number[];

  private constructor(
    readonly model: Model,
    readonly target: PruneTarget,
    /** Head inputs: target.value first, then any other upstream value the head reads. */
    readonly inputs: string[],
    private readonly shapes: number[][],
    private readonly trunk: Session | null,
    private readonly head: Session,
    readonly batchSize: number,
    readonly headBatchSize: number,
    /** Names of the head's mask input and top-1 output. */
    private readonly io: { mask: string; pred: string },
  ) {
    this.per = shapes.map((sh) => sh.reduce((a, b) => a * b, 1));
  }

  /**
   * batchSize: images per trunk run; headBatchSize: images per head run (default max(batchSize, 2048):
   * the head is cheap per image, so per-call overhead would dominate small batches).
   */
  static async create(model: Model, target: PruneTarget, opts: { batchSize?: number; headBatchSize?: number } = {}): Promise<PruneEngine> {
    const { graph: head, inputs } = headGraph(model.graph, target.value, [model.logits], `${model.name}_prune_head`);
    const mask = head.addInput(head.fresh("channel_mask"), "float32", [target.channels]);
    maskChannels(head, target.value, mask);
    // Top-1 inside the graph: only [N] int64 comes back per step instead of [N, classes] floats.
    const pred = head.op("ArgMax", [model.logits], { axis: attr.int(1), keepdims: attr.int(0) }, head.fresh("pred"));
    head.setOutputs([pred]);
    head.prune([...inputs, mask]);
    const trunkOuts = inputs.filter((v) => v !== model.input);
    const trunk = trunkOuts.length ? await Session.create(forwardGraph(model, trunkOuts)) : null;
    const shapes = inputs.map((v) => perImageShape(model.graph, v));
    const bs = opts.batchSize ?? DEFAULT_BATCH;
    return new PruneEngine(model, target, inputs, shapes, trunk, await Session.create(head), bs, opts.headBatchSize ?? Math.max(bs, 2048), { mask, pred });
  }

  /** Runs the trunk over `data` once and keeps the head's inputs in memory. */
  async cache(data: BatchSource, labels: Int32Array, onProgress?: (done: number) => void): Promise<CachedData> {
    const arrays = this.per.map((p) => new Float32Array(data.size * p));
    const bs = this.batchSize;
    for (let start = 0; start < data.size; start += bs) {
      const count = Math.min(bs, data.size - start);
      const x = data.read(start, count);
      const out = this.trunk ? await this.trunk.run({ [this.model.input]: batchTensor(x, data.shape) }) : {};
      this.inputs.forEach((v, i) => arrays[i].set(v === this.model.input ? x : (out[v].data as Float32Array), start * this.per[i]));
      onProgress?.(start + count);
    }
    return { n: data.size, labels, arrays };
  }

  /** Top-1 predictions of the network with channels masked by `mask` ([C], 1 = keep) on cached data. */
  async predict(data: CachedData, mask: Float32Array): Promise<Int32Array> {
    const out = new Int32Array(data.n);
    const m = tensor("float32", [mask.length], mask);
    const bs = this.headBatchSize;
    for (let start = 0; start < data.n; start += bs) {
      const count = Math.min(bs, data.n - start);
      const feeds: Record<string, TensorData> = { [this.io.mask]: m };
      this.inputs.forEach((v, i) => {
        feeds[v] = tensor("float32", [count, ...this.shapes[i]], data.arrays[i].subarray(start * this.per[i], (start + count) * this.per[i]));
      });
      const r = await this.head.run(feeds);
      const p = r[this.io.pred].data as BigInt64Array;
      for (let i = 0; i < count; i++) out[start + i] = Number(p[i]);
    }
    return out;
  }

  /** Mean activation per channel of the cached target value over images and spatial positions. */
  channelMeans(data: CachedData): Float64Array {
    const c = this.target.channels;
    const per = this.per[0];
    const spatial = per / c;
    const sums = new Float64Array(c);
    const a = data.arrays[0];
    for (let i = 0; i < data.n; i++) {
      const base = i * per;
      for (let ch = 0; ch < c; ch++) {
        let s = 0;
        const o = base + ch * spatial;
        for (let j = 0; j < spatial; j++) s += a[o + j];
        sums[ch] += s;
      }
    }
    return sums.map((s) => (data.n ? s / (data.n * spatial) : 0));
  }

  async release(): Promise<void> {
    await this.trunk?.release();
    await this.head.release();
  }
}

/** Channels in pruning order: by mean activation (ties by channel index). */
export function pruneOrder(means: ArrayLike<number>, order: PruneOrder): number[] {
  const idx = Array.from({ length: means.length }, (_, i) => i);
  const sign = order === "increasing" ? 1 : -1;
  return idx.sort((a, b) => sign * (means[a] - means[b]) || a - b);
}

export interface SweepResult {
  target: PruneTarget;
  order: PruneOrder;
  /** Channels in the order they are pruned. */
  ranking: number[];
  /** Mean activation per channel on the clean validation data. */
  meanActivation: number[];
  nClean: number;
  /** Clean correct count after k channels are pruned, k = 0..channels. */
  correct: number[];
  nPoisoned?: number;
  /** Poisoned inputs sent to their target after k channels are pruned. */
  attack?: number[];
  curve: ReportPruningPoint[];
}

/** Prunes every channel one at a time, recording clean accuracy (and ASR) after each step on cached data. */
export async function sweep(
  engine: PruneEngine,
  clean: CachedData,
  poisoned: CachedData | undefined,
  order: PruneOrder,
  onStep?: (done: number, total: number, point: ReportPruningPoint) => void,
): Promise<SweepResult> {
  const C = engine.target.channels;
  const means = engine.channelMeans(clean);
  const ranking = pruneOrder(means, order);
  const correct: number[] = [];
  const attack: number[] = [];
  const curve: ReportPruningPoint[] = [];
  const mask = new Float32Array(C).fill(1);
  for (let k = 0; k <= C; k++) {
    if (k > 0) mask[ranking[k - 1]] = 0;
    correct.push(countCorrect(await engine.predict(clean, mask), clean.labels));
    const point: ReportPruningPoint = { fractionPruned: k / C, channelsPruned: k, cleanAccuracy: clean.n ? correct[k] / clean.n : 0 };
    if (poisoned) {
      attack.push(countCorrect(await engine.predict(poisoned, mask), poisoned.labels));
      point.asr = poisoned.n ? attack[k] / poisoned.n : 0;
    }
    curve.push(point);
    onStep?.(k, C, point);
  }
  return {
    target: engine.target,
    order,
    ranking,
    meanActivation: Array.from(means),
    nClean: clean.n,
    correct,
    nPoisoned: poisoned?.n,
    attack: poisoned ? attack : undefined,
    curve,
  };
}

/** UserError unless every drop (percentage points) is in (0, 100]; returns them sorted, without repeats. */
export function checkDrops(drops: readonly number[]): number[] {
  if (drops.length === 0) throw new OptionError("drops", "needs at least one value");
  for (const d of drops) if (!Number.isFinite(d) || d <= 0 || d > 100) throw new OptionError("drops", `${d}: an accuracy drop must be in (0, 100] percentage points`);
  return [...new Set(drops)].sort((a, b) => a - b);
}

/**
 * The saved network for a drop of `drop` percentage points: the fewest channels pruned at which clean
 * accuracy is at least `drop` points below the unpruned accuracy (counts compared exactly: 100·(c0 − ck) ≥
 * drop·n). Not reached → every channel pruned, reached = false.
 */
export function selectDrop(correct: readonly number[], n: number, drop: number): { channelsPruned: number; reached: boolean } {
  const need = (drop * n) / 100;
  for (let k = 0; k < correct.length; k++) if (correct[0] - correct[k] >= need - 1e-9 * Math.max(1, n)) return { channelsPruned: k, reached: true };
  return { channelsPruned: correct.length - 1, reached: false };
}

export function pruningSection(s: SweepResult, drops: { drop: number; channelsPruned: number }[]): ReportPruning {
  return {
    layer: s.target.layer,
    order: `${s.order} mean activation (${s.order === "increasing" ? "most dormant first" : "most active first"}), measured at ${s.target.value}`,
    curve: s.curve,
    drops: drops.map((d): ReportPruningDrop => ({
      drop: d.drop / 100,
      channelsPruned: d.channelsPruned,
      cleanAccuracy: s.curve[d.channelsPruned].cleanAccuracy,
      ...(s.curve[d.channelsPruned].asr !== undefined ? { asr: s.curve[d.channelsPruned].asr } : {}),
    })),
  };
}

export interface PruneRepair {
  /** Percentage points. */
  drop: number;
  reached: boolean;
  channelsPruned: number;
  /** Channel indices pruned, in pruning order. */
  channels: number[];
  /** B'_X: the network with those channels' weights zeroed. */
  model: Model;
  /** G_X: B(x) where B and B'_X agree on the top-1 class, else class N; one graph, shared trunk. */
  g: Graph;
  /** B'_X on the evaluation data (TEST, else the validation data) and the poisoned data. */
  evaluation: ReportEvalResult;
  gRates: ReportG;
}

export interface PruneDefenseOptions {
  /** Clean validation data: activations and the accuracy curve. */
  valid: Dataset;
  /** Clean test data for the final numbers (default: the validation data). */
  test?: Dataset;
  /** Poisoned inputs labelled with the attacker's target: ASR along the curve and in the final numbers. */
  poisoned?: Dataset;
  /** Accuracy drops in percentage points (each in (0, 100]). */
  drops: number[];
  order?: PruneOrder;
  layer?: string;
  batchSize?: number;
  onCache?: (done: number, total: number) => void;
  onStep?: (done: number, total: number, point: ReportPruningPoint) => void;
}

export interface PruneDefenseResult {
  sweep: SweepResult;
  pruning: ReportPruning;
  /** B on the evaluation data. */
  before: ReportEvalResult;
  /** Which clean data the final numbers are on. */
  evaluatedOn: "test" | "valid";
  repairs: PruneRepair[];
  timings: Record<string, number>;
}

/** Cached-trunk caches of the three data sets, with one running progress count over all images. */
export async function cacheAll(engine: PruneEngine, model: Model, opts: Pick<PruneDefenseOptions, "valid" | "test" | "poisoned" | "onCache">): Promise<{ valid: CachedData; test?: CachedData; poisoned?: CachedData }> {
  const sets = [opts.valid, opts.test, opts.poisoned];
  const total = sets.reduce((s, d) => s + (d?.size ?? 0), 0);
  let offset = 0;
  const one = async (ds: Dataset | undefined, what: string): Promise<CachedData | undefined> => {
    if (!ds) return undefined;
    const labels = checkData(model, ds, what);
    const c = await engine.cache(ds, labels, (done) => opts.onCache?.(offset + done, total));
    offset += ds.size;
    return c;
  };
  const valid = (await one(opts.valid, "the pruning defense's clean validation accuracy"))!;
  const test = await one(opts.test, "clean test accuracy");
  const poisoned = await one(opts.poisoned, "attack success rate");
  return { valid, test, poisoned };
}

type CachedSets = { valid: CachedData; test?: CachedData; poisoned?: CachedData };

/** Labels of the evaluation data (test, else valid) and the poisoned data. */
export function evalLabels(data: CachedSets): SplitLabels {
  return { clean: (data.test ?? data.valid).labels, poisoned: data.poisoned?.labels };
}

/** The fast path: predictions with `mask` on the cached evaluation and poisoned data (only the head runs). */
export async function cachedPredictions(engine: PruneEngine, data: CachedSets, mask: Float32Array): Promise<SplitPredictions> {
  return { clean: await engine.predict(data.test ?? data.valid, mask), poisoned: data.poisoned && (await engine.predict(data.poisoned, mask)) };
}

/** The pruning defense: sweep, the saved network B'_X and G_X for every drop, and their final numbers. */
export async function pruneDefense(model: Model, opts: PruneDefenseOptions): Promise<PruneDefenseResult> {
  const drops = checkDrops(opts.drops);
  const target = pruneTarget(model, opts.layer);
  const { timings, lap } = lapTimer();
  const engine = await PruneEngine.create(model, target, { batchSize: opts.batchSize });
  try {
    const data = await cacheAll(engine, model, opts);
    lap("cache");
    const s = await sweep(engine, data.valid, data.poisoned, opts.order ?? "increasing", opts.onStep);
    lap("sweep");
    const chosen = drops.map((drop) => ({ drop, ...selectDrop(s.correct, s.nClean, drop) }));
    const labels = evalLabels(data);
    const b = await cachedPredictions(engine, data, channelMask(target.channels, []));
    const before = evalResult(b, labels);
    const repairs: PruneRepair[] = [];
    for (const c of chosen) {
      const channels = s.ranking.slice(0, c.channelsPruned);
      const mask = channelMask(target.channels, channels);
      const ev = evaluatePair(model.numClasses, b, await cachedPredictions(engine, data, mask), labels);
      repairs.push({
        ...c,
        channels,
        model: prunedModel(model, target, channels, `${model.name}_pruned_${c.drop}`),
        g: gFromMaskedBranch(model, target.value, mask, `${model.name}_G_${c.drop}`),
        evaluation: ev.after,
        gRates: ev.g,
      });
    }
    lap("repair");
    return { sweep: s, pruning: pruningSection(s, chosen), before, evaluatedOn: data.test ? "test" : "valid", repairs, timings };
  } finally {
    await engine.release();
  }
}
