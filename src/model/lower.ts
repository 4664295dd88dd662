// ModelSpec (Keras layers, NHWC) → Model (graph IR, NCHW ONNX ops). Keras' row-major NHWC flatten is
// preserved by transposing to NHWC right before Flatten, so Dense weights are used unchanged.
import { attr, Graph, GraphError, tensor, type TensorData } from "../graph/ir.js";
import { fail } from "../errors.js";
import type { Model, ParamRef } from "./model.js";
import type { LayerSpec, LayerWeight, ModelSpec } from "./spec.js";

const RESERVED = new Set(["input", "logits"]);
const ACTIVATIONS = new Set(["relu", "softmax", "sigmoid", "tanh", "linear"]);

type Cfg = Record<string, unknown>;

function pair(v: unknown, layer: LayerSpec, key: string): [number, number] {
  if (typeof v === "number") return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === "number")) return [v[0], v[1]];
  return fail(`layer "${layer.name}" (${layer.className}): unsupported ${key}=${JSON.stringify(v)}`);
}

function unsupported(layer: LayerSpec, key: string, value: unknown): never {
  return fail(`layer "${layer.name}" (${layer.className}): unsupported attribute ${key}=${JSON.stringify(value)}`);
}

function requireDefault(layer: LayerSpec, key: string, ok: (v: unknown) => boolean): void {
  const v = layer.config[key];
  if (v !== undefined && v !== null && !ok(v)) unsupported(layer, key, v);
}

/** Keras' per-side amounts (ZeroPadding2D, Cropping2D): n, [h, w] or [[top, bottom], [left, right]] → [top, bottom, left, right]. */
function sides(p: unknown, layer: LayerSpec, key: string): [number, number, number, number] {
  const ok = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0;
  if (ok(p)) return [p, p, p, p];
  if (Array.isArray(p) && p.length === 2 && p.every(ok)) return [p[0], p[0], p[1], p[1]];
  if (Array.isArray(p) && p.length === 2 && p.every((v) => Array.isArray(v) && v.length === 2 && v.every(ok))) {
    const [[t, b], [l, r]] = p as number[][];
    return [t!, b!, l!, r!];
  }
  return unsupported(layer, key, p);
}

const isOnes = (v: unknown): boolean => (Array.isArray(v) ? v.every((x) => x === 1) : v === 1);

function weight(layer: LayerSpec, name: string, required = true): LayerWeight | undefined {
  const w = layer.weights.find((x) => x.name === name || x.name.startsWith(name.replace(":0", "")));
  if (!w && required) fail(`layer "${layer.name}" (${layer.className}) has no weight "${name}"`);
  return w;
}

/** Conv2D kernel [kh, kw, cin, cout] → ONNX [cout, cin, kh, kw]. */
export function kerasConvToOnnx(w: LayerWeight): TensorData {
  const [kh, kw, ci, co] = w.shape;
  const out = new Float32Array(w.data.length);
  for (let a = 0; a < kh; a++)
    for (let b = 0; b < kw; b++)
      for (let c = 0; c < ci; c++)
        for (let o = 0; o < co; o++) out[((o * ci + c) * kh + a) * kw + b] = w.data[((a * kw + b) * ci + c) * co + o];
  return tensor("float32", [co, ci, kh, kw], out);
}

/** ONNX conv weight [cout, cin, kh, kw] → Keras [kh, kw, cin, cout]. */
export function onnxConvToKeras(t: TensorData): { shape: number[]; data: Float32Array } {
  const [co, ci, kh, kw] = t.shape;
  const src = t.data as Float32Array;
  const out = new Float32Array(src.length);
  for (let a = 0; a < kh; a++)
    for (let b = 0; b < kw; b++)
      for (let c = 0; c < ci; c++)
        for (let o = 0; o < co; o++) out[((a * kw + b) * ci + c) * co + o] = src[((o * ci + c) * kh + a) * kw + b];
  return { shape: [kh, kw, ci, co], data: out };
}

/** Explicit [begin_h, begin_w, end_h, end_w] pads reproducing TF "same" padding (extra at the end). */
/** ONNX pads [top, left, bottom, right] for a Keras padding ("valid" or "same") over an NCHW input. */
function kerasPads(layer: LayerSpec, padding: unknown, nchw: readonly number[], k: [number, number], s: [number, number]): number[] {
  if (padding === "valid") return [0, 0, 0, 0];
  if (padding === "same") return samePads(nchw[2]!, nchw[3]!, k, s);
  return unsupported(layer, "padding", padding);
}

function samePads(inH: number, inW: number, k: [number, number], s: [number, number]): number[] {
  const total = (n: number, kk: number, ss: number) => Math.max((Math.ceil(n / ss) - 1) * ss + kk - n, 0);
  const th = total(inH, k[0], s[0]);
  const tw = total(inW, k[1], s[1]);
  return [Math.floor(th / 2), Math.floor(tw / 2), th - Math.floor(th / 2), tw - Math.floor(tw / 2)];
}

class Lowerer {
  readonly g: Graph;
  readonly params: ParamRef[] = [];
  readonly outputs = new Map<string, string>();
  /** Pre-softmax value of each layer whose activation is softmax (the model's logits if it is the output). */
  readonly preSoftmax = new Map<string, string>();

  constructor(private readonly spec: ModelSpec) {
    this.g = new Graph(spec.name);
  }

  private valueName(layer: LayerSpec): string {
    let n = RESERVED.has(layer.name) ? `${layer.name}_out` : layer.name;
    while (this.g.has(n)) n = `${n}_`;
    return n;
  }

  private param(layer: LayerSpec, w: LayerWeight, t: TensorData): string {
    const short = w.name.replace(/:\d+$/, "");
    const name = this.g.addInitializer(`${layer.name}/${short}`, t);
    this.params.push({ value: name, layer: layer.name, weight: w.name });
    return name;
  }

  private activation(layer: LayerSpec, x: string, act: unknown, out: string): string {
    const a = act ?? "linear";
    if (typeof a !== "string" || !ACTIVATIONS.has(a)) unsupported(layer, "activation", act);
    switch (a) {
      case "linear": return this.g.op("Identity", [x], {}, out);
      case "relu": return this.g.op("Relu", [x], {}, out);
      case "sigmoid": return this.g.op("Sigmoid", [x], {}, out);
      case "tanh": return this.g.op("Tanh", [x], {}, out);
      default: {
        if (this.g.shape(x).length !== 2) unsupported(layer, "activation", "softmax on a 4-D tensor");
        this.preSoftmax.set(layer.name, x);
        return this.g.op("Softmax", [x], { axis: attr.int(-1) }, out);
      }
    }
  }

  /**
   * Names the nodes lowered for one layer after it (the graph would give them "n_Relu_4"...), so that an ONNX
   * file written from the network names its layers as Keras did: the node producing the layer's output takes the
   * layer's name unless a node of the layer already has it (Conv, MatMul), the others "layer/op".
   */
  private nameNodes(layer: string, first: number, out: string): void {
    const nodes = this.g.nodes.slice(first);
    const auto = (name: string) => /^n_[A-Za-z]+_\d+$/.test(name);
    const taken = new Set(nodes.filter((n) => !auto(n.name)).map((n) => n.name));
    const byOutput = [...nodes.filter((n) => n.outputs.includes(out)), ...nodes.filter((n) => !n.outputs.includes(out))];
    for (const n of byOutput.filter((x) => auto(x.name))) {
      let name = taken.has(layer) ? `${layer}/${n.op.toLowerCase()}` : layer;
      for (let k = 2; taken.has(name); k++) name = `${layer}/${n.op.toLowerCase()}_${k}`;
      taken.add(name);
      n.name = name;
    }
  }

  private checkChannelsLast(layer: LayerSpec): void {
    requireDefault(layer, "data_format", (v) => v === "channels_last");
  }

  lower(): Model {
    const spec = this.spec;
    const [h, w, c] = spec.inputShape;
    for (const layer of spec.layers) {
      const ins = layer.inbound.map((n) => {
        const v = this.outputs.get(n);
        if (!v) fail(`layer "${layer.name}" reads "${n}", which is not defined before it`);
        return v;
      });
      const out = layer.name === spec.inputLayer ? "input" : this.valueName(layer);
      const first = this.g.nodes.length;
      this.outputs.set(layer.name, this.layerOrFail(layer, ins, out, [c, h, w]));
      this.nameNodes(layer.name, first, out);
    }
    const outValue = this.outputs.get(spec.outputLayer);
    if (!outValue) fail(`output layer "${spec.outputLayer}" not found`);
    const pre = this.preSoftmax.get(spec.outputLayer);
    const logits = this.g.op("Identity", [pre ?? outValue], {}, "logits");
    const shape = this.g.shape(logits);
    if (shape.length !== 2 || typeof shape[1] !== "number") fail(`model output "${spec.outputLayer}" has shape [${shape}], expected [N, classes]`);
    this.g.setOutputs([logits]);
    return {
      name: spec.name,
      graph: this.g,
      input: "input",
      logits,
      inputShape: [c, h, w],
      numClasses: shape[1],
      layerOutputs: this.outputs,
      params: this.params,
      spec,
    };
  }

  /** layer(), with a shape rule's refusal (weights that do not fit the layer, e.g. a bias of the wrong length) said as the user's error. */
  private layerOrFail(layer: LayerSpec, ins: string[], out: string, chw: [number, number, number]): string {
    try {
      return this.layer(layer, ins, out, chw);
    } catch (e) {
      if (e instanceof GraphError) fail(`layer "${layer.name}" (${layer.className}): ${e.message}`);
      throw e;
    }
  }

  private layer(layer: LayerSpec, ins: string[], out: string, chw: [number, number, number]): string {
    const g = this.g;
    const cfg: Cfg = layer.config;
    const one = () => {
      if (ins.length !== 1) fail(`layer "${layer.name}" (${layer.className}) expects one input, got ${ins.length}`);
      return ins[0];
    };
    const rank4 = (x: string) => {
      if (g.shape(x).length !== 4) fail(`layer "${layer.name}" (${layer.className}) needs a 4-D input, got [${g.shape(x)}]`);
      return x;
    };
    switch (layer.className) {
      case "InputLayer":
        return g.addInput("input", "float32", ["N", ...chw]);
      case "Conv2D": {
        const x = rank4(one());
        this.checkChannelsLast(layer);
        requireDefault(layer, "dilation_rate", isOnes);
        requireDefault(layer, "groups", (v) => v === 1);
        const k = pair(cfg.kernel_size, layer, "kernel_size");
        const s = pair(cfg.strides ?? 1, layer, "strides");
        const pads = kerasPads(layer, cfg.padding ?? "valid", g.shape(x) as number[], k, s);
        const kernel = this.param(layer, weight(layer, "kernel:0")!, kerasConvToOnnx(weight(layer, "kernel:0")!));
        const inputs = [x, kernel];
        if (cfg.use_bias !== false) {
          const b = weight(layer, "bias:0")!;
          inputs.push(this.param(layer, b, tensor("float32", b.shape, b.data)));
        }
        const wShape = g.staticShape(kernel);
        if (g.shape(x)[1] !== wShape[1]) fail(`layer "${layer.name}": input has ${g.shape(x)[1]} channels, kernel expects ${wShape[1]}`);
        // The conv is the layer's node (nameNodes names the rest).
        const [conv] = g.add("Conv", inputs, { kernel_shape: attr.ints(k), strides: attr.ints(s), pads: attr.ints(pads) }, { outputs: [`${out}/conv`], name: layer.name });
        return this.activation(layer, conv, cfg.activation, out);
      }
      case "MaxPooling2D": case "AveragePooling2D": {
        const x = rank4(one());
        this.checkChannelsLast(layer);
        const k = pair(cfg.pool_size ?? 2, layer, "pool_size");
        const s = pair(cfg.strides ?? k, layer, "strides");
        const pads = kerasPads(layer, cfg.padding ?? "valid", g.shape(x) as number[], k, s);
        const op = layer.className === "MaxPooling2D" ? "MaxPool" : "AveragePool";
        return g.op(op, [x], { kernel_shape: attr.ints(k), strides: attr.ints(s), pads: attr.ints(pads) }, out);
      }
      case "GlobalAveragePooling2D": {
        const x = rank4(one());
        this.checkChannelsLast(layer);
        if (cfg.keepdims === true) unsupported(layer, "keepdims", true);
        const p = g.op("GlobalAveragePool", [x], {}, `${out}/pool`);
        return g.op("Flatten", [p], { axis: attr.int(1) }, out);
      }
      case "ZeroPadding2D": {
        const x = rank4(one());
        this.checkChannelsLast(layer);
        const [top, bottom, left, right] = sides(cfg.padding ?? 1, layer, "padding");
        return g.op("Pad", [x, g.ints([0, 0, top, left, 0, 0, bottom, right])], { mode: attr.string("constant") }, out);
      }
      case "UpSampling2D": {
        const x = rank4(one());
        this.checkChannelsLast(layer);
        requireDefault(layer, "interpolation", (v) => v === "nearest");
        const [sh, sw] = pair(cfg.size ?? 2, layer, "size");
        if (!(sh >= 1 && sw >= 1 && Number.isInteger(sh) && Number.isInteger(sw))) unsupported(layer, "size", cfg.size);
        const [, ch, ih, iw] = g.shape(x) as number[];
        // Nearest neighbour: each pixel repeated sh x sw times, by broadcasting over two unit axes.
        const six = g.op("Reshape", [x, g.ints([0, ch!, ih!, 1, iw!, 1])], {}, `${out}/split`);
        const big = g.op("Expand", [six, g.ints([1, 1, 1, sh, 1, sw])], {}, `${out}/repeat`);
        return g.op("Reshape", [big, g.ints([0, ch!, ih! * sh, iw! * sw])], {}, out);
      }
      case "Cropping2D": {
        const x = rank4(one());
        this.checkChannelsLast(layer);
        const [top, bottom, left, right] = sides(cfg.cropping ?? 0, layer, "cropping");
        const [, , ih, iw] = g.shape(x) as number[];
        if (top + bottom >= ih! || left + right >= iw!)
          fail(`layer "${layer.name}" (Cropping2D): cropping ${JSON.stringify(cfg.cropping)} leaves nothing of its ${ih}x${iw} input`);
        return g.op("Slice", [x, g.ints([top, left]), g.ints([ih! - bottom, iw! - right]), g.ints([2, 3])], {}, out);
      }
      case "Flatten": {
        const x = one();
        requireDefault(layer, "data_format", (v) => v === "channels_last");
        if (g.shape(x).length === 2) return g.op("Identity", [x], {}, out);
        const t = g.op("Transpose", [x], { perm: attr.ints([0, 2, 3, 1]) }, `${out}/nhwc`);
        return g.op("Flatten", [t], { axis: attr.int(1) }, out);
      }
      case "Dense": {
        const x = one();
        if (g.shape(x).length !== 2) fail(`layer "${layer.name}" (Dense) needs a 2-D input, got [${g.shape(x)}]; add a Flatten`);
        const kw = weight(layer, "kernel:0")!;
        if (g.shape(x)[1] !== kw.shape[0]) fail(`layer "${layer.name}" (Dense): input has ${g.shape(x)[1]} features, kernel expects ${kw.shape[0]}`);
        const kernel = this.param(layer, kw, tensor("float32", kw.shape, kw.data));
        let y = g.add("MatMul", [x, kernel], {}, { outputs: [`${out}/matmul`], name: layer.name })[0];
        if (cfg.use_bias !== false) {
          const b = weight(layer, "bias:0")!;
          y = g.op("Add", [y, this.param(layer, b, tensor("float32", b.shape, b.data))], {}, `${out}/preact`);
        }
        return this.activation(layer, y, cfg.activation, out);
      }
      case "Add": {
        if (ins.length < 2) fail(`layer "${layer.name}" (Add) needs at least two inputs`);
        let y = ins[0];
        for (let i = 1; i < ins.length; i++) y = g.op("Add", [y, ins[i]], {}, i === ins.length - 1 ? out : undefined);
        return y;
      }
      case "Concatenate": {
        const rank = g.shape(ins[0]).length;
        let axis = typeof cfg.axis === "number" ? cfg.axis : -1;
        if (axis < 0) axis += rank;
        // Keras axes are NHWC; ours are NCHW.
        const onnxAxis = rank === 4 ? [0, 2, 3, 1][axis] : axis;
        return g.op("Concat", ins, { axis: attr.int(onnxAxis) }, out);
      }
      case "Activation":
        return this.activation(layer, one(), cfg.activation, out);
      case "Softmax":
        requireDefault(layer, "axis", (v) => v === -1);
        return this.activation(layer, one(), "softmax", out);
      case "ReLU":
        requireDefault(layer, "max_value", () => false);
        requireDefault(layer, "negative_slope", (v) => v === 0);
        requireDefault(layer, "threshold", (v) => v === 0);
        return g.op("Relu", [one()], {}, out);
      case "Dropout":
        return g.op("Identity", [one()], {}, out);
      case "BatchNormalization": {
        const x = one();
        const rank = g.shape(x).length;
        const axis = Array.isArray(cfg.axis) ? cfg.axis : [cfg.axis ?? -1];
        if (axis.length !== 1 || !(axis[0] === -1 || axis[0] === rank - 1)) unsupported(layer, "axis", cfg.axis);
        const ch = g.shape(x)[1] as number;
        const eps = typeof cfg.epsilon === "number" ? cfg.epsilon : 1e-3;
        const ones = tensor("float32", [ch], new Float32Array(ch).fill(1));
        const zeros = tensor("float32", [ch], new Float32Array(ch));
        const gamma = cfg.scale === false ? g.constant(ones) : this.param(layer, weight(layer, "gamma:0")!, vec(weight(layer, "gamma:0")!));
        const beta = cfg.center === false ? g.constant(zeros) : this.param(layer, weight(layer, "beta:0")!, vec(weight(layer, "beta:0")!));
        const mean = g.addInitializer(`${layer.name}/moving_mean`, vec(weight(layer, "moving_mean:0")!));
        const variance = g.addInitializer(`${layer.name}/moving_variance`, vec(weight(layer, "moving_variance:0")!));
        return g.op("BatchNormalization", [x, gamma, beta, mean, variance], { epsilon: attr.float(eps) }, out);
      }
      default:
        return fail(`unsupported layer "${layer.name}" (class ${layer.className})`);
    }
  }
}

const vec = (w: LayerWeight): TensorData => tensor("float32", w.shape, w.data);

export function lowerModel(spec: ModelSpec): Model {
  return new Lowerer(spec).lower();
}

/**
 * A copy of the model's spec with weights taken from IR tensors (e.g. after training or pruning).
 * `values` maps IR parameter names (ParamRef.value) to new tensors; others keep their weights.
 */
export function specWithWeights(model: Model, values: Map<string, TensorData>): ModelSpec {
  const spec = model.spec;
  if (!spec) fail(`model "${model.name}" was not loaded from Keras; it can only be saved as ONNX`);
  const byLayer = new Map<string, Map<string, TensorData>>();
  for (const p of model.params) {
    const t = values.get(p.value);
    if (!t) continue;
    (byLayer.get(p.layer) ?? byLayer.set(p.layer, new Map()).get(p.layer)!).set(p.weight, t);
  }
  return {
    ...spec,
    layers: spec.layers.map((l) => {
      const upd = byLayer.get(l.name);
      if (!upd) return l;
      return {
        ...l,
        weights: l.weights.map((w) => {
          const t = upd.get(w.name);
          if (!t) return w;
          if (l.className === "Conv2D" && w.name.startsWith("kernel")) return { name: w.name, ...onnxConvToKeras(t) };
          return { name: w.name, shape: [...t.shape], data: Float32Array.from(t.data as Float32Array) };
        }),
      };
    }),
  };
}
