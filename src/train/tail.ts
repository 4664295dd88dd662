// Fine-tuning only the tail of a network. The cut rule: the LATEST value that every input-to-logits path goes
// through (so the part before it is a plain function of the input), such that at least half of the parameters
// lie after it and the value that must stay trainable (the pruned layer) is computed after it. The prefix is
// frozen, so its output on the training data is computed once, and each epoch trains only the tail on those
// stored activations: the same updates as training the whole network with the prefix frozen, for a fraction of
// the work (the prefix's forward and backward passes are gone).
//
// The model input itself always qualifies (the tail is then the whole network), so a cut always exists.
import { GraphError, type Dim, type Graph } from "../graph/ir.js";
import { downstreamNodes } from "../graph/transforms.js";
import { DEFAULT_BATCH, forEachBatch, forwardGraph } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { dominatesLogits } from "../model/prunable.js";
import { withSession } from "../runtime/session.js";
import type { TrainData } from "./trainer.js";

export interface TailCut {
  /** The value the tail starts from (the model input when the whole network is the tail). */
  value: string;
  /** Parameters (IR names) after the cut: the ones fine-tuning changes. */
  params: string[];
  tunedParams: number;
  totalParams: number;
}

const size = (g: Graph, v: string): number => g.staticShape(v).reduce((p, q) => p * q, 1);

/** [C, H, W] of a 4-D value whose batch dim may be symbolic. */
function featureShape(g: Graph, v: string): [number, number, number] {
  const s = g.shape(v).slice(1);
  if (s.length !== 3 || s.some((d) => typeof d !== "number")) throw new GraphError(`tail cut: "${v}" has shape [${g.shape(v)}], not [N, C, H, W]`);
  return s as [number, number, number];
}

/** Parameters read by nodes that depend on `value` (all parameters when it is the input). */
function paramsAfter(model: Model, value: string): string[] {
  const all = new Set(model.params.map((p) => p.value));
  const used = new Set<string>();
  for (const n of downstreamNodes(model.graph, value)) for (const i of n.inputs) if (all.has(i)) used.add(i);
  return model.params.map((p) => p.value).filter((p) => used.has(p));
}

/**
 * The tail cut for a model whose value `keep` must be computed inside the tail (the pruned layer's masked
 * value): the latest 4-D value that dominates the logits, has `keep` strictly after it and at least half the
 * parameters (by count) after it; the model input when nothing later qualifies.
 */
export function tailCut(model: Model, keep: string): TailCut {
  const g = model.graph;
  if (!g.has(keep)) throw new GraphError(`tail cut: the model has no value "${keep}"`);
  const totalParams = model.params.reduce((s, p) => s + size(g, p.value), 0);
  const candidates = [model.input];
  for (const n of g.nodes) {
    const v = n.outputs[0];
    if (!v || g.info(v).dtype !== "float32") continue;
    const s = g.shape(v);
    if (s.length !== 4 || s.slice(1).some((d) => typeof d !== "number")) continue;
    candidates.push(v);
  }
  for (let i = candidates.length - 1; i >= 0; i--) {
    const v = candidates[i];
    if (v !== model.input) {
      if (v === keep || !downstreamNodes(g, v).some((n) => n.outputs.includes(keep))) continue;
      if (!dominatesLogits(model, v)) continue;
    }
    const params = paramsAfter(model, v);
    const tunedParams = params.reduce((s, p) => s + size(g, p), 0);
    if (v === model.input || 2 * tunedParams >= totalParams) return { value: v, params, tunedParams, totalParams };
  }
  throw new GraphError("tail cut: unreachable (the model input always qualifies)");
}

/**
 * The network after the cut as a model of its own: its input (named like the model's) is the cut value, its
 * parameters are the tail's. The cut must dominate the logits (tailCut guarantees it).
 */
export function tailModel(model: Model, cut: TailCut): Model {
  if (cut.value === model.input) return model;
  const shape = featureShape(model.graph, cut.value);
  const g = graphFrom(model, cut.value, ["N", ...shape], `${model.name}_tail`);
  const keep = new Set(cut.params);
  return {
    ...model,
    name: g.name,
    graph: g,
    inputShape: shape,
    layerOutputs: new Map([...model.layerOutputs].filter(([, v]) => g.has(v) && v !== model.input)),
    params: model.params.filter((p) => keep.has(p.value)),
    normalization: undefined,
    spec: undefined,
  };
}

/**
 * The part of the model's graph after `value`, as a graph whose input (named like the model's, of `shape`) is
 * that value. `value` must dominate the logits: a tail that still reads the model input is an error.
 */
export function graphFrom(model: Model, value: string, shape: Dim[], name: string): Graph {
  const g = model.graph.clone(name);
  // Rename the old input out of the way, then let the cut value's readers read a new input of the old name.
  const old = g.fresh("prefix_input");
  const inputInfo = g.info(model.input);
  g.inputs = g.inputs.map((v) => (v.name === model.input ? { ...v, name: old } : v));
  g.values.delete(model.input);
  g.values.set(old, { ...inputInfo, name: old });
  g.replaceUses(model.input, old);
  g.addInput(model.input, "float32", shape);
  g.replaceUses(value, model.input);
  g.prune();
  if (g.inputs.some((v) => v.name === old)) throw new GraphError(`tail cut at "${value}": the tail still reads the model input`);
  return g;
}

/** The frozen prefix's output (the tail's input) on every image of `data`, computed once. */
export async function prefixActivations(
  model: Model,
  cut: TailCut,
  data: TrainData,
  opts: { batchSize?: number; onProgress?: (done: number) => void } = {},
): Promise<TrainData> {
  if (cut.value === model.input) return data;
  const shape = featureShape(model.graph, cut.value);
  const per = shape[0] * shape[1] * shape[2];
  const [c, h, w] = data.shape;
  const n = data.y.length;
  const out = new Float32Array(n * per);
  const source = { size: n, shape: data.shape, read: (s: number, k: number) => data.x.subarray(s * c * h * w, (s + k) * c * h * w) };
  await withSession(forwardGraph(model, [cut.value]), (s) =>
    forEachBatch(s, source, (o, start) => out.set(o[cut.value].data as Float32Array, start * per), { batchSize: opts.batchSize ?? DEFAULT_BATCH, input: model.input, onProgress: opts.onProgress }),
  );
  return { x: out, y: data.y, shape };
}
