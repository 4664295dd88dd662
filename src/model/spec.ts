// A Keras-level description of a model: layers with their Keras config and weights in Keras layout.
// Loaders produce it, the lowering turns it into the graph IR, the Keras writer saves it back.

export interface LayerWeight {
  /** Keras weight name inside the layer, e.g. "kernel:0", "bias:0", "gamma:0", "moving_mean:0". */
  name: string;
  shape: number[];
  data: Float32Array;
}

export interface LayerSpec {
  name: string;
  /** Keras class name: Conv2D, Dense, MaxPooling2D, ... */
  className: string;
  /** The layer's Keras config object (as in model_config), e.g. {filters, kernel_size, activation, ...}. */
  config: Record<string, unknown>;
  /** Names of the layers feeding this one (one inbound node; order matters for Add/Concatenate). */
  inbound: string[];
  /** Weights in Keras order and layout (Conv2D kernel is [kh, kw, cin, cout], Dense kernel [in, out]). */
  weights: LayerWeight[];
}

export interface ModelSpec {
  name: string;
  /** Layers in topological order; the first is the InputLayer. */
  layers: LayerSpec[];
  inputLayer: string;
  outputLayer: string;
  /** Keras input shape without batch: [H, W, C]. */
  inputShape: [number, number, number];
  /** Where it came from, e.g. "keras 2.4.0 full model" or "weights-only + deepid preset". */
  source: string;
}

export function findLayer(spec: ModelSpec, name: string): LayerSpec {
  const l = spec.layers.find((x) => x.name === name);
  if (!l) throw new Error(`model has no layer named "${name}" (layers: ${spec.layers.map((x) => x.name).join(", ")})`);
  return l;
}
