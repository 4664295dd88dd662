// A Keras-summary()-like view of a model: layers, output shapes, parameter counts.
import type { Model } from "./model.js";

export interface LayerSummary {
  name: string;
  className: string;
  /** Output shape without the batch dim, in Keras order (H, W, C for images). */
  outputShape: (number | string)[];
  params: number;
}

export interface ModelSummary {
  name: string;
  source: string;
  inputShape: [number, number, number];
  numClasses: number;
  layers: LayerSummary[];
  totalParams: number;
}

export function summarize(model: Model): ModelSummary {
  const paramsOf = new Map<string, number>();
  for (const p of model.params) {
    const n = model.graph.initializers.get(p.value)!.data.length;
    paramsOf.set(p.layer || p.value, (paramsOf.get(p.layer || p.value) ?? 0) + n);
  }
  const classOf = new Map(model.spec?.layers.map((l) => [l.name, l.className]) ?? []);
  const layers: LayerSummary[] = [...model.layerOutputs].map(([name, value]) => {
    const s = model.graph.shape(value).slice(1);
    // NCHW → Keras' HWC order for 4-D activations.
    const outputShape = s.length === 3 ? [s[1], s[2], s[0]] : s;
    const producer = model.graph.producer(value);
    return { name, className: classOf.get(name) ?? producer?.op ?? "Input", outputShape, params: paramsOf.get(name) ?? 0 };
  });
  const total = model.params.reduce((s, p) => s + model.graph.initializers.get(p.value)!.data.length, 0);
  return {
    name: model.name,
    source: model.spec?.source ?? "onnx",
    inputShape: model.inputShape,
    numClasses: model.numClasses,
    layers,
    totalParams: total,
  };
}
