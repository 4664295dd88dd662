// Batched inference over a dataset: compile once, stream batches through onnxruntime.
import type { Graph, TensorData } from "../graph/ir.js";
import { withSession, type Session } from "../runtime/session.js";
import type { Model } from "./model.js";

export const DEFAULT_BATCH = 256;

/** A forward graph of the model with the given outputs (any layer values or "logits"). */
export function forwardGraph(model: Model, outputs: string[] = [model.logits]): Graph {
  const g = model.graph.clone();
  g.setOutputs(outputs);
  g.prune([model.input]);
  return g;
}

export interface BatchSource {
  readonly size: number;
  readonly shape: [number, number, number];
  read(start: number, count: number): Float32Array;
}

export function batchTensor(x: Float32Array, shape: [number, number, number]): TensorData {
  return { dtype: "float32", shape: [x.length / (shape[0] * shape[1] * shape[2]), ...shape], data: x };
}

/**
 * Runs `session` over all images of `data` in batches, calling `onBatch` with each batch's outputs.
 * `extra` feeds are passed unchanged to every run.
 */
export async function forEachBatch(
  session: Session,
  data: BatchSource,
  onBatch: (outputs: Record<string, TensorData>, start: number, count: number) => void,
  opts: { batchSize?: number; input?: string; extra?: Record<string, TensorData>; onProgress?: (done: number) => void } = {},
): Promise<void> {
  const bs = opts.batchSize ?? DEFAULT_BATCH;
  for (let start = 0; start < data.size; start += bs) {
    const count = Math.min(bs, data.size - start);
    const x = data.read(start, count);
    const out = await session.run({ ...opts.extra, [opts.input ?? "input"]: batchTensor(x, data.shape) });
    onBatch(out, start, count);
    opts.onProgress?.(start + count);
  }
}

/** Stands for "no class" in predictions: a row with a NaN logit matches no label. */
export const NO_CLASS = -1;

/**
 * Index of the largest value in each row of a [rows, cols] matrix; NO_CLASS for a row holding a NaN, which
 * would otherwise never beat the running maximum and so count as class 0.
 */
export function argmaxRows(data: ArrayLike<number>, cols: number): Int32Array {
  const rows = data.length / cols;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    let bv = -Infinity;
    for (let c = 0; c < cols; c++) {
      const v = data[r * cols + c]!;
      if (v > bv) {
        bv = v;
        best = c;
      } else if (Number.isNaN(v)) {
        best = NO_CLASS;
        break;
      }
    }
    out[r] = best;
  }
  return out;
}

/** Top-1 predictions of the model for every image of `data`. */
export async function predictLabels(model: Model, data: BatchSource, opts: { batchSize?: number; onProgress?: (done: number) => void } = {}): Promise<Int32Array> {
  return (await predictLabelsEach(model, [data], opts))[0]!;
}

/**
 * Top-1 predictions on each source in turn through one session: creating a large network's session costs
 * seconds (export, load, optimization), more than a forward pass over a few hundred images. Progress counts
 * the images of all sources as one run.
 */
export async function predictLabelsEach(model: Model, sources: readonly BatchSource[], opts: { batchSize?: number; onProgress?: (done: number) => void } = {}): Promise<Int32Array[]> {
  const outs = sources.map((s) => new Int32Array(s.size));
  if (sources.length === 0) return outs;
  await withSession(forwardGraph(model), async (session) => {
    let before = 0;
    for (const [i, data] of sources.entries()) {
      const base = before;
      const onProgress = opts.onProgress && ((done: number) => opts.onProgress!(base + done));
      await forEachBatch(session, data, (o, start) => outs[i]!.set(argmaxRows(o[model.logits].data as Float32Array, model.numClasses), start), { batchSize: opts.batchSize, onProgress });
      before += data.size;
    }
  });
  return outs;
}
