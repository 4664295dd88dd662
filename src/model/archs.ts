// Known architectures as Keras layer lists: the DeepID network of the CSAW-HackML weights-only files (which
// carry no model_config) and the small zoo CNN the project trains on Fashion-MNIST. Configs mirror what
// Keras 2.4 writes, because they are saved back into HDF5 files that Keras must load.
import { fail } from "../errors.js";
import { fillUniform, mulberry32 } from "../util/random.js";
import type { LayerSpec, LayerWeight, ModelSpec } from "./spec.js";

/** A weight's name and Keras shape, without values. */
export interface WeightTemplate {
  name: string;
  shape: number[];
}

export type ArchLayer = Omit<LayerSpec, "weights"> & { weights: WeightTemplate[] };

/** A ModelSpec without weight values: what an architecture preset describes. */
export type ArchSpec = Omit<ModelSpec, "layers"> & { layers: ArchLayer[] };

export interface ArchOptions {
  /** [H, W, C] */
  inputShape?: [number, number, number];
  numClasses?: number;
}

type Cfg = Record<string, unknown>;

// Keras 2.2 files re-saved by Keras 2.4 spell Glorot-uniform like this (see the thirdparty fixture).
const varianceScalingFanAvg = (): Cfg => ({
  class_name: "VarianceScaling",
  config: { scale: 1, mode: "fan_avg", distribution: "uniform", seed: null },
});
const glorotUniform = (): Cfg => ({ class_name: "GlorotUniform", config: { seed: null } });

/** Builds a Keras layer list while tracking each layer's output shape (NHWC, no batch) to size weights. */
class ArchBuilder {
  private readonly layers: ArchLayer[] = [];
  private readonly shapes = new Map<string, number[]>();

  constructor(
    private readonly arch: string,
    private readonly inputShape: [number, number, number],
    private readonly kernelInit: () => Cfg,
  ) {
    if (!inputShape.every((d) => Number.isInteger(d) && d > 0))
      fail(`architecture ${arch}: invalid input shape [${inputShape.join(", ")}]`);
  }

  private shapeOf(name: string): number[] {
    const s = this.shapes.get(name);
    if (!s) throw new Error(`architecture ${this.arch}: layer "${name}" used before it is defined`);
    return s;
  }

  private push(layer: ArchLayer, shape: number[]): string {
    if (!shape.every((d) => d >= 1))
      fail(
        `architecture ${this.arch}: input ${this.inputShape.join("x")} is too small, layer "${layer.name}" would output [${shape.join(", ")}]`,
      );
    this.layers.push(layer);
    this.shapes.set(layer.name, shape);
    return layer.name;
  }

  private base(name: string): Cfg {
    return { name, trainable: true, dtype: "float32" };
  }

  private weighted(): Cfg {
    return {
      use_bias: true,
      kernel_initializer: this.kernelInit(),
      bias_initializer: { class_name: "Zeros", config: {} },
      kernel_regularizer: null,
      bias_regularizer: null,
      activity_regularizer: null,
      kernel_constraint: null,
      bias_constraint: null,
    };
  }

  input(name: string): string {
    const config = { batch_input_shape: [null, ...this.inputShape], dtype: "float32", sparse: false, ragged: false, name };
    return this.push({ name, className: "InputLayer", config, inbound: [], weights: [] }, [...this.inputShape]);
  }

  conv(name: string, from: string, filters: number, k: number, activation: string): string {
    const [h, w, c] = this.shapeOf(from);
    const config = {
      ...this.base(name),
      filters,
      kernel_size: [k, k],
      strides: [1, 1],
      padding: "valid",
      data_format: "channels_last",
      dilation_rate: [1, 1],
      groups: 1,
      activation,
      ...this.weighted(),
    };
    const weights = [
      { name: "kernel:0", shape: [k, k, c, filters] },
      { name: "bias:0", shape: [filters] },
    ];
    return this.push({ name, className: "Conv2D", config, inbound: [from], weights }, [h - k + 1, w - k + 1, filters]);
  }

  maxPool(name: string, from: string, size = 2): string {
    const [h, w, c] = this.shapeOf(from);
    const config = {
      ...this.base(name),
      pool_size: [size, size],
      padding: "valid",
      strides: [size, size],
      data_format: "channels_last",
    };
    const out = [Math.floor((h - size) / size) + 1, Math.floor((w - size) / size) + 1, c];
    return this.push({ name, className: "MaxPooling2D", config, inbound: [from], weights: [] }, out);
  }

  flatten(name: string, from: string): string {
    const n = this.shapeOf(from).reduce((a, b) => a * b, 1);
    const config = { ...this.base(name), data_format: "channels_last" };
    return this.push({ name, className: "Flatten", config, inbound: [from], weights: [] }, [n]);
  }

  dense(name: string, from: string, units: number, activation: string): string {
    const s = this.shapeOf(from);
    if (s.length !== 1) throw new Error(`architecture ${this.arch}: Dense "${name}" needs a flat input`);
    const config = { ...this.base(name), units, activation, ...this.weighted() };
    const weights = [
      { name: "kernel:0", shape: [s[0], units] },
      { name: "bias:0", shape: [units] },
    ];
    return this.push({ name, className: "Dense", config, inbound: [from], weights }, [units]);
  }

  add(name: string, from: string[]): string {
    const s = this.shapeOf(from[0]);
    return this.push({ name, className: "Add", config: this.base(name), inbound: [...from], weights: [] }, [...s]);
  }

  activation(name: string, from: string, activation: string): string {
    const config = { ...this.base(name), activation };
    return this.push({ name, className: "Activation", config, inbound: [from], weights: [] }, [...this.shapeOf(from)]);
  }

  build(modelName: string, output: string, source: string): ArchSpec {
    return {
      name: modelName,
      layers: this.layers,
      inputLayer: this.layers[0].name,
      outputLayer: output,
      inputShape: [...this.inputShape],
      source,
    };
  }
}

/** The CSAW-HackML 2020 "DeepID" network (YouTube Aligned Face, 55x47x3, 1283 identities). */
export function deepid(opts: ArchOptions = {}): ArchSpec {
  const b = new ArchBuilder("deepid", opts.inputShape ?? [55, 47, 3], varianceScalingFanAvg);
  const numClasses = opts.numClasses ?? 1283;
  b.input("input");
  b.conv("conv_1", "input", 20, 4, "relu");
  b.maxPool("pool_1", "conv_1");
  b.conv("conv_2", "pool_1", 40, 3, "relu");
  b.maxPool("pool_2", "conv_2");
  b.conv("conv_3", "pool_2", 60, 3, "relu");
  b.maxPool("pool_3", "conv_3");
  b.conv("conv_4", "pool_3", 80, 2, "relu");
  b.flatten("flatten_1", "pool_3");
  b.flatten("flatten_2", "conv_4");
  b.dense("fc_1", "flatten_1", 160, "linear");
  b.dense("fc_2", "flatten_2", 160, "linear");
  b.add("add_1", ["fc_1", "fc_2"]);
  b.activation("activation_1", "add_1", "relu");
  b.dense("output", "activation_1", numClasses, "softmax");
  return b.build("deepid", "output", "deepid preset");
}

/** Architectures that weights-only Keras files can be paired with (--arch). */
export const ARCHS: Record<string, (opts?: ArchOptions) => ArchSpec> = { deepid };

export interface ZooCnnOptions {
  /** [H, W, C], e.g. [28, 28, 1] for Fashion-MNIST. */
  inputShape: [number, number, number];
  numClasses: number;
  /** Seed of the weight initialization (default 1). */
  seed?: number;
  /** Filters of conv_1, conv_2, conv_3 (default 16, 32, 64). */
  filters?: [number, number, number];
  /** Units of fc_1 (default 128). */
  hidden?: number;
  name?: string;
}

/**
 * Conv kernel sizes for the zoo CNN such that every 2×2 max-pool tiles its input exactly. With 3×3 kernels
 * everywhere a 28×28 input goes 26→13→11→5→3→1 and the floor pooling drops conv_2's and conv_3's last
 * row/column: the bottom 6 rows and right 6 columns of the image never reach the logits, so a bottom-right
 * trigger would be invisible. Each layer takes the first of 3, 2, 5, 4 that leaves an even size in both
 * dimensions (3 if none does); 28×28 gets [3, 2, 3]: 28→26→13→12→6→4→2.
 */
export function coveringKernels(h: number, w: number): [number, number, number] {
  const ks: number[] = [];
  for (let layer = 0; layer < 3; layer++) {
    const k = [3, 2, 5, 4].find((k) => h - k + 1 >= 2 && w - k + 1 >= 2 && (h - k + 1) % 2 === 0 && (w - k + 1) % 2 === 0) ?? 3;
    ks.push(k);
    h = Math.floor((h - k + 1) / 2);
    w = Math.floor((w - k + 1) / 2);
  }
  return ks as [number, number, number];
}

/** The zoo CNN's layers without weights (conv_3 is the last conv layer, the one pruning defenses act on). */
export function zooCnnArch(opts: ZooCnnOptions): ArchSpec {
  const [f1, f2, f3] = opts.filters ?? [16, 32, 64];
  if (!Number.isInteger(opts.numClasses) || opts.numClasses < 2)
    fail(`architecture zoo-cnn: numClasses must be an integer >= 2, got ${opts.numClasses}`);
  const [k1, k2, k3] = coveringKernels(opts.inputShape[0], opts.inputShape[1]);
  const b = new ArchBuilder("zoo-cnn", opts.inputShape, glorotUniform);
  b.input("input");
  b.conv("conv_1", "input", f1, k1, "relu");
  b.maxPool("pool_1", "conv_1");
  b.conv("conv_2", "pool_1", f2, k2, "relu");
  b.maxPool("pool_2", "conv_2");
  b.conv("conv_3", "pool_2", f3, k3, "relu");
  b.maxPool("pool_3", "conv_3");
  b.flatten("flatten_1", "pool_3");
  b.dense("fc_1", "flatten_1", opts.hidden ?? 128, "relu");
  b.dense("output", "fc_1", opts.numClasses, "softmax");
  return b.build(opts.name ?? "zoo_cnn", "output", "zoo-cnn preset");
}

/** A freshly initialized zoo CNN: Glorot-uniform kernels from a seeded PRNG, zero biases. */
export function zooCnn(opts: ZooCnnOptions): ModelSpec {
  return initWeights(zooCnnArch(opts), opts.seed ?? 1);
}

/** Fan-in and fan-out of a Keras kernel as Glorot defines them (receptive field times channels for convs). */
function fans(shape: number[]): [number, number] {
  if (shape.length === 2) return [shape[0], shape[1]];
  const field = shape.slice(0, -2).reduce((a, b) => a * b, 1);
  return [field * shape[shape.length - 2], field * shape[shape.length - 1]];
}

/** Fills an architecture's weights: kernels Glorot-uniform (layer by layer, in order), everything else zero. */
export function initWeights(arch: ArchSpec, seed: number): ModelSpec {
  const rand = mulberry32(seed);
  const layers: LayerSpec[] = arch.layers.map((l) => ({
    ...l,
    weights: l.weights.map((w): LayerWeight => {
      const data = new Float32Array(w.shape.reduce((a, b) => a * b, 1));
      if (w.name.startsWith("kernel")) {
        const [fanIn, fanOut] = fans(w.shape);
        const limit = Math.sqrt(6 / (fanIn + fanOut));
        fillUniform(data, -limit, limit, rand);
      }
      return { name: w.name, shape: [...w.shape], data };
    }),
  }));
  return { ...arch, layers, source: `${arch.source}, Glorot-uniform init (seed ${seed})` };
}
