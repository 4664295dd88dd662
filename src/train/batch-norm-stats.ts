// Running statistics for a network fine-tuned with batch statistics (graph/batch-norm.ts). The trained
// weights are only half of such a network: its BatchNormalization nodes still read the running mean and
// variance B came with, which no longer describe the features the new weights produce. Rather than an
// exponential average of the training batches (PyTorch's momentum, taken while the weights moved), the
// statistics are re-estimated once with the final weights, in one forward pass over the clean training images
// at the training batch size ("precise BatchNorm", Wu & Johnson 2021): per channel, the mean of the batch means
// and the mean of (batch variance + batch mean²) minus the squared mean, each batch weighted by its size.
import { useBatchStatistics } from "../graph/batch-norm.js";
import { tensor, type Graph, type TensorData } from "../graph/ir.js";
import { maskChannels } from "../graph/transforms.js";
import { forEachBatch, type BatchSource } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { withSession } from "../runtime/session.js";
import { gradientWork } from "../runtime/threads.js";

/** How a training loop treats BatchNormalization: normalise with each batch's statistics, or keep B's frozen. */
export type BatchNormMode = "batch" | "frozen";
export const BATCH_NORM_MODES: readonly BatchNormMode[] = ["batch", "frozen"];
export const DEFAULT_BATCH_NORM: BatchNormMode = "batch";

/** Combines per-batch means and biased variances (weights: batch sizes) into the population's. */
export function poolStatistics(batches: readonly { count: number; mean: ArrayLike<number>; variance: ArrayLike<number> }[]): { mean: Float32Array; variance: Float32Array } {
  if (batches.length === 0) throw new Error("poolStatistics: no batches");
  const c = batches[0].mean.length;
  const m = new Float64Array(c), sq = new Float64Array(c);
  let n = 0;
  for (const b of batches) {
    n += b.count;
    for (let i = 0; i < c; i++) {
      m[i] += b.count * b.mean[i]!;
      sq[i] += b.count * (b.variance[i]! + b.mean[i]! * b.mean[i]!);
    }
  }
  const mean = new Float32Array(c), variance = new Float32Array(c);
  for (let i = 0; i < c; i++) {
    mean[i] = m[i] / n;
    variance[i] = Math.max(0, sq[i] / n - (m[i] / n) ** 2);
  }
  return { mean, variance };
}

/**
 * The running statistics of every BatchNormalization of `model` re-estimated on `images` (see the file
 * comment), keyed by initializer name. `channelMasks` are the masks the training graph held fixed (pruning).
 */
export async function batchNormStatistics(
  model: Model,
  images: BatchSource,
  opts: { batchSize: number; channelMasks?: Map<string, Float32Array> },
): Promise<Map<string, TensorData>> {
  if (images.size === 0) throw new Error("batchNormStatistics: no images");
  const g = model.graph.clone(`${model.name}_bn_statistics`);
  for (const [value, mask] of opts.channelMasks ?? []) maskChannels(g, value, g.constant(tensor("float32", [mask.length], mask), "channel_mask"));
  const stats = useBatchStatistics(g);
  const out = new Map<string, TensorData>();
  if (stats.length === 0) return out;
  g.setOutputs(stats.flatMap((s) => [s.batchMean, s.batchVariance]));
  g.prune([model.input]);
  const perBatch = stats.map(() => [] as { count: number; mean: Float32Array; variance: Float32Array }[]);
  await withSession(g, (session) => forEachBatch(session, images, (res, _start, count) => {
    stats.forEach((s, i) => perBatch[i].push({ count, mean: Float32Array.from(res[s.batchMean].data as Float32Array), variance: Float32Array.from(res[s.batchVariance].data as Float32Array) }));
  }, { batchSize: opts.batchSize, input: model.input }), gradientWork(model, opts.batchSize));
  stats.forEach((s, i) => {
    const p = poolStatistics(perBatch[i]);
    out.set(s.mean, tensor("float32", [p.mean.length], p.mean));
    out.set(s.variance, tensor("float32", [p.variance.length], p.variance));
  });
  return out;
}

/** `model` with the given running statistics (initializer name → value); a Keras spec follows. */
export function withStatistics(model: Model, stats: Map<string, TensorData>): Model {
  if (stats.size === 0) return model;
  const graph = model.graph.clone(model.name);
  for (const [k, t] of stats) {
    const old = graph.initializers.get(k);
    if (!old || old.shape.join() !== t.shape.join()) throw new Error(`withStatistics: "${k}" is not a running statistic of shape [${t.shape}]`);
    graph.addInitializer(k, t);
  }
  const spec = model.spec && {
    ...model.spec,
    // Keras layers store them as weights moving_mean:0 / moving_variance:0 (model/lower.ts names them).
    layers: model.spec.layers.map((l) => ({
      ...l,
      weights: l.weights.map((w) => {
        const t = stats.get(`${l.name}/${w.name.replace(/:0$/, "")}`);
        return t ? { name: w.name, shape: [...t.shape], data: Float32Array.from(t.data as Float32Array) } : w;
      }),
    })),
  };
  return { ...model, graph, spec };
}

/** The running statistics every BatchNormalization of `g` reads (initializer name → value). */
export function runningStatistics(g: Graph): Map<string, TensorData> {
  const out = new Map<string, TensorData>();
  for (const n of g.nodes) {
    if (n.op !== "BatchNormalization") continue;
    for (const k of n.inputs.slice(3, 5)) {
      const t = g.initializers.get(k);
      if (t) out.set(k, t);
    }
  }
  return out;
}
