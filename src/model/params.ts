// Swapping parameter values in a model (after training, pruning or unlearning).
import type { TensorData } from "../graph/ir.js";
import { specWithWeights } from "./lower.js";
import type { Model } from "./model.js";

/** The current value of every parameter, keyed by IR name. */
export function paramValues(model: Model): Map<string, TensorData> {
  const m = new Map<string, TensorData>();
  for (const p of model.params) m.set(p.value, model.graph.initializers.get(p.value)!);
  return m;
}

/** A new model whose parameters (IR names) take the given values; the Keras spec follows when present. */
export function withParams(model: Model, values: Map<string, TensorData>, name = model.name): Model {
  const graph = model.graph.clone(name);
  for (const [k, t] of values) {
    const old = graph.initializers.get(k);
    if (!old) throw new Error(`model has no parameter "${k}"`);
    if (old.shape.join() !== t.shape.join()) throw new Error(`parameter "${k}": shape [${t.shape}] does not match [${old.shape}]`);
    graph.addInitializer(k, t);
  }
  return { ...model, name, graph, spec: model.spec ? specWithWeights(model, values) : undefined };
}
