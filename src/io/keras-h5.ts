// Keras HDF5 model files → ModelSpec. Full models carry their architecture as JSON (root attribute
// `model_config`) and weights under `model_weights`; weights-only files (model.save_weights) carry only
// per-layer weight groups at the root and need a known architecture (--arch) to make sense of them.
import { basename, extname } from "node:path";
import h5wasm from "h5wasm/node";
import { fail } from "../errors.js";
import { ARCHS, type ArchLayer, type ArchSpec } from "../model/archs.js";
import type { LayerSpec, LayerWeight, ModelSpec } from "../model/spec.js";
import { checkFilters, openH5ForRead, readingHdf5 } from "./csaw-h5.js";

type H5Group = InstanceType<typeof h5wasm.Group>;
type Json = Record<string, unknown>;

/** Layer classes the lowering understands; anything else is rejected while reading, naming the layer. */
export const SUPPORTED_LAYERS: ReadonlySet<string> = new Set([
  "InputLayer",
  "Conv2D",
  "MaxPooling2D",
  "AveragePooling2D",
  "GlobalAveragePooling2D",
  "ZeroPadding2D",
  "Flatten",
  "Dense",
  "Add",
  "Concatenate",
  "Activation",
  "ReLU",
  "Dropout",
  "BatchNormalization",
  "Softmax",
]);

/** Classes that cannot work without weights: a full model missing them is reported here, not at lowering. */
const NEEDS_WEIGHTS = new Set(["Conv2D", "Dense", "BatchNormalization"]);

export async function readKerasModel(path: string, opts: { arch?: string } = {}): Promise<ModelSpec> {
  const file = await openH5ForRead(path, "Keras model");
  try {
    return readingHdf5(path, "Keras model", () => {
      const attrs = file.attrs;
      if ("model_config" in attrs) {
        const spec = readFullModel(file, path);
        if (opts.arch !== undefined) checkAgainstArch(spec, archTemplate(opts.arch), opts.arch, path);
        return spec;
      }
      if ("layer_names" in attrs || "layer_names0" in attrs) return readWeightsOnly(file, path, opts.arch);
      return fail(`${path}: not a Keras model file (HDF5 without a model_config or layer_names attribute)`);
    });
  } finally {
    file.close();
  }
}

// ---------------------------------------------------------------- attributes

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A string attribute (scalar, or a one-element array), or undefined when absent. */
function stringAttr(g: H5Group, name: string, path: string): string | undefined {
  const a = g.attrs[name];
  if (!a) return undefined;
  const v = a.value;
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.length === 1 && typeof v[0] === "string") return v[0];
  return fail(`${path}: attribute ${g.path === "/" ? "" : g.path}@${name} is not a string`);
}

/**
 * A list-of-strings attribute such as layer_names or weight_names. Keras splits long lists into
 * `name0`, `name1`, ... when they exceed the HDF5 object-header limit; an empty list is stored as an
 * empty float array.
 */
function stringListAttr(g: H5Group, name: string, path: string): string[] | undefined {
  const attrs = g.attrs;
  const parts: string[] = [];
  if (name in attrs) parts.push(name);
  else for (let i = 0; `${name}${i}` in attrs; i++) parts.push(`${name}${i}`);
  if (parts.length === 0) return undefined;
  const out: string[] = [];
  for (const p of parts) {
    const v = attrs[p].value;
    if (typeof v === "string") out.push(v);
    else if (Array.isArray(v) && v.every((x): x is string => typeof x === "string")) out.push(...v);
    else if (ArrayBuffer.isView(v) && (v as unknown as ArrayLike<number>).length === 0) continue;
    else fail(`${path}: attribute ${g.path}@${p} is not a list of strings`);
  }
  return out;
}

// ---------------------------------------------------------------- weights

function toFloat32(v: unknown, where: string, dtype: string): Float32Array {
  if (v instanceof Float32Array) return v;
  if (v instanceof Float64Array) return Float32Array.from(v);
  if (typeof v === "number") return Float32Array.of(v);
  return fail(`${where}: weights must be float32 or float64, found ${dtype}`);
}

/** The weights of one layer group, in weight_names order; LayerWeight.name is the part after the last "/". */
function readLayerWeights(container: H5Group, layer: string, path: string): LayerWeight[] | undefined {
  const g = container.get(layer);
  if (!(g instanceof h5wasm.Group)) return undefined;
  const names = stringListAttr(g, "weight_names", path);
  if (names === undefined) fail(`${path}: weight group ${g.path} has no weight_names attribute`);
  return names.map((wn) => {
    const where = `${path}: weight ${g.path}/${wn}`;
    const ds = g.get(wn);
    if (!(ds instanceof h5wasm.Dataset)) return fail(`${where} is listed in weight_names but missing`);
    checkFilters(ds, where);
    const shape = ds.shape ?? [];
    const data = toFloat32(ds.value, where, JSON.stringify(ds.dtype));
    const size = shape.reduce((a, b) => a * b, 1);
    if (data.length !== size) fail(`${where}: has ${data.length} values for shape [${shape.join(", ")}]`);
    return { name: wn.slice(wn.lastIndexOf("/") + 1), shape: [...shape], data };
  });
}

// ---------------------------------------------------------------- full models

interface RawLayer {
  name: string;
  className: string;
  config: Json;
  inbound: string[];
}

function readFullModel(file: H5Group, path: string): ModelSpec {
  const text = stringAttr(file, "model_config", path) ?? "";
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    fail(`${path}: model_config is not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!isObject(root)) return fail(`${path}: model_config is not a JSON object`);
  const cls = root.class_name;
  let parsed: { name: string; layers: RawLayer[]; input: string; output: string };
  if (cls === "Functional" || cls === "Model") parsed = parseFunctional(root.config, path);
  else if (cls === "Sequential") parsed = parseSequential(root.config, path);
  else return fail(`${path}: unsupported model class ${JSON.stringify(cls)} (expected Functional, Model or Sequential)`);

  const layers = topoSort(parsed.layers, parsed.input, path);
  const inputLayer = layers[0];
  const weightsRoot = file.get("model_weights");
  if (!(weightsRoot instanceof h5wasm.Group)) fail(`${path}: has model_config but no model_weights group`);
  const specLayers: LayerSpec[] = layers.map((l) => {
    const weights = readLayerWeights(weightsRoot, l.name, path) ?? [];
    if (weights.length === 0 && NEEDS_WEIGHTS.has(l.className))
      fail(`${path}: layer "${l.name}" (class ${l.className}) has no weights under model_weights`);
    return { ...l, weights };
  });
  const version = stringAttr(file, "keras_version", path) ?? stringAttr(weightsRoot, "keras_version", path);
  return {
    name: parsed.name,
    layers: specLayers,
    inputLayer: inputLayer.name,
    outputLayer: parsed.output,
    inputShape: inputShapeOf(inputLayer, path),
    source: `keras ${version ?? "(unknown version)"} full model (${String(cls)})`,
  };
}

function layerEntry(raw: unknown, i: number, path: string): { name: string; className: string; config: Json } {
  if (!isObject(raw) || typeof raw.class_name !== "string" || !isObject(raw.config))
    return fail(`${path}: model_config layer #${i} has no class_name/config`);
  const name = typeof raw.name === "string" ? raw.name : raw.config.name;
  if (typeof name !== "string" || name === "") return fail(`${path}: model_config layer #${i} has no name`);
  if (!SUPPORTED_LAYERS.has(raw.class_name)) fail(`${path}: unsupported layer "${name}" (class ${raw.class_name})`);
  return { name, className: raw.class_name, config: { ...raw.config, name } };
}

/** [layer_name, node_index, tensor_index] references: Keras 2 nests them as [[name, 0, 0]], Keras 3 may not. */
function endpoints(v: unknown, key: string, path: string): string[] {
  const list = Array.isArray(v) && typeof v[0] === "string" ? [v] : v;
  if (!Array.isArray(list) || !list.every((r) => Array.isArray(r) && typeof r[0] === "string"))
    return fail(`${path}: model_config has no valid ${key}`);
  return list.map((r) => (r as unknown[])[0] as string);
}

function parseFunctional(config: unknown, path: string) {
  if (!isObject(config) || !Array.isArray(config.layers)) return fail(`${path}: model_config has no layers list`);
  const layers = config.layers.map((raw, i): RawLayer => {
    const entry = layerEntry(raw, i, path);
    return { ...entry, inbound: inboundOf(entry, (raw as Json).inbound_nodes, path) };
  });
  const inputs = endpoints(config.input_layers, "input_layers", path);
  const outputs = endpoints(config.output_layers, "output_layers", path);
  if (inputs.length !== 1) fail(`${path}: model has ${inputs.length} inputs (${inputs.join(", ")}); exactly one is supported`);
  if (outputs.length !== 1)
    fail(`${path}: model has ${outputs.length} outputs (${outputs.join(", ")}); exactly one is supported`);
  const name = typeof config.name === "string" ? config.name : "model";
  return { name, layers, input: inputs[0], output: outputs[0] };
}

/** The layers feeding one layer. Keras 2 nodes: [[name, node, tensor, kwargs], ...]; Keras 3: {args, kwargs}. */
function inboundOf(layer: { name: string; className: string }, nodes: unknown, path: string): string[] {
  const who = `layer "${layer.name}" (class ${layer.className})`;
  if (nodes === undefined || (Array.isArray(nodes) && nodes.length === 0)) return [];
  if (!Array.isArray(nodes)) return fail(`${path}: ${who} has malformed inbound_nodes`);
  if (nodes.length > 1)
    fail(`${path}: ${who} is shared (called ${nodes.length} times); shared layers are not supported`);
  const node = nodes[0];
  const refs: unknown[] = [];
  if (Array.isArray(node)) refs.push(...node);
  else if (isObject(node)) collectKeras3History(node.args, refs);
  if (refs.length === 0 || !refs.every((r): r is unknown[] => Array.isArray(r) && typeof r[0] === "string"))
    return fail(`${path}: ${who} has malformed inbound_nodes`);
  for (const r of refs)
    if ((r[1] ?? 0) !== 0 || (r[2] ?? 0) !== 0)
      fail(`${path}: ${who} takes output ${String(r[2])} of call ${String(r[1])} of "${String(r[0])}"; only single-output, single-call layers are supported`);
  return refs.map((r) => r[0] as string);
}

function collectKeras3History(v: unknown, out: unknown[]): void {
  if (Array.isArray(v)) for (const x of v) collectKeras3History(x, out);
  else if (isObject(v)) {
    const cfg = v.config;
    if (v.class_name === "__keras_tensor__" && isObject(cfg) && Array.isArray(cfg.keras_history)) out.push(cfg.keras_history);
  }
}

/** Sequential: each layer feeds the next; an InputLayer is synthesized (as Keras does) when the config has none. */
function parseSequential(config: unknown, path: string) {
  const rawLayers = Array.isArray(config) ? config : isObject(config) ? config.layers : undefined;
  if (!Array.isArray(rawLayers) || rawLayers.length === 0) return fail(`${path}: Sequential model_config has no layers`);
  const entries = rawLayers.map((raw, i) => layerEntry(raw, i, path));
  if (entries[0].className !== "InputLayer") {
    const first = entries[0];
    const shape = first.config.batch_input_shape ?? first.config.batch_shape;
    if (!Array.isArray(shape))
      fail(`${path}: Sequential model's first layer "${first.name}" has no batch_input_shape; cannot tell the input shape`);
    const name = `${first.name}_input`;
    entries.unshift({
      name,
      className: "InputLayer",
      config: { batch_input_shape: shape, dtype: "float32", sparse: false, ragged: false, name },
    });
  }
  const layers = entries.map((e, i): RawLayer => ({ ...e, inbound: i === 0 ? [] : [entries[i - 1].name] }));
  const name = isObject(config) && typeof config.name === "string" ? config.name : "sequential";
  return { name, layers, input: layers[0].name, output: layers[layers.length - 1].name };
}

/** Orders layers so every layer follows its inputs, keeping the file's order otherwise; the input comes first. */
function topoSort(layers: RawLayer[], input: string, path: string): RawLayer[] {
  const byName = new Map<string, RawLayer>();
  for (const l of layers) {
    if (byName.has(l.name)) fail(`${path}: two layers are named "${l.name}"`);
    byName.set(l.name, l);
  }
  const inputLayer = byName.get(input);
  if (!inputLayer) return fail(`${path}: input layer "${input}" is not among the model's layers`);
  if (inputLayer.className !== "InputLayer")
    fail(`${path}: input layer "${input}" is a ${inputLayer.className}, expected an InputLayer`);
  const out: RawLayer[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (l: RawLayer): void => {
    const s = state.get(l.name);
    if (s === "done") return;
    if (s === "visiting") fail(`${path}: layer "${l.name}" is part of a cycle`);
    state.set(l.name, "visiting");
    if (l.inbound.length === 0 && l !== inputLayer)
      fail(`${path}: layer "${l.name}" (class ${l.className}) has no inputs but is not the model input "${input}"`);
    for (const n of l.inbound) {
      const src = byName.get(n);
      if (!src) fail(`${path}: layer "${l.name}" takes input from unknown layer "${n}"`);
      visit(src);
    }
    state.set(l.name, "done");
    out.push(l);
  };
  visit(inputLayer);
  for (const l of layers) visit(l);
  return out;
}

function inputShapeOf(layer: RawLayer, path: string): [number, number, number] {
  const s = layer.config.batch_input_shape ?? layer.config.batch_shape;
  const dims = Array.isArray(s) ? s.slice(1) : [];
  if (!Array.isArray(s) || dims.length !== 3 || !dims.every((d) => Number.isInteger(d) && (d as number) > 0))
    fail(`${path}: input layer "${layer.name}" has shape ${JSON.stringify(s ?? null)}; expected [null, H, W, C]`);
  return dims as [number, number, number];
}

// ---------------------------------------------------------------- weights-only files + presets

function archTemplate(arch: string): ArchSpec {
  const make = ARCHS[arch];
  if (!make) return fail(`unknown architecture "${arch}" (known: ${Object.keys(ARCHS).join(", ")})`);
  return make();
}

const shapeStr = (s: number[]): string => `[${s.join(", ")}]`;
/** "kernel:0" and "kernel" (Keras 3) name the same weight. */
const baseName = (n: string): string => n.replace(/:\d+$/, "");

/** Checks one layer's weights against the preset: same names, same shapes, nothing extra. */
function checkLayerWeights(weights: LayerWeight[], t: ArchLayer, arch: string, path: string): void {
  for (const tw of t.weights) {
    const w = weights.find((x) => baseName(x.name) === baseName(tw.name));
    if (!w) fail(`${path}: layer "${t.name}" has no weight "${tw.name}" (architecture ${arch} expects ${shapeStr(tw.shape)})`);
    if (shapeStr(w.shape) !== shapeStr(tw.shape))
      fail(
        `${path}: layer "${t.name}" weight "${tw.name}" has shape ${shapeStr(w.shape)} in the file, architecture ${arch} expects ${shapeStr(tw.shape)}`,
      );
  }
  const extra = weights.find((w) => !t.weights.some((tw) => baseName(tw.name) === baseName(w.name)));
  if (extra) fail(`${path}: layer "${t.name}" has weight "${extra.name}", which architecture ${arch} does not have`);
}

/** A full model read together with --arch must be that architecture: same layers, classes and weight shapes. */
function checkAgainstArch(spec: ModelSpec, arch: ArchSpec, archName: string, path: string): void {
  for (const t of arch.layers) {
    const l = spec.layers.find((x) => x.name === t.name);
    if (!l) fail(`${path}: has no layer "${t.name}" of architecture ${archName}`);
    if (l.className !== t.className)
      fail(`${path}: layer "${t.name}" is a ${l.className}, architecture ${archName} has a ${t.className}`);
    checkLayerWeights(l.weights, t, archName, path);
  }
  const unknown = spec.layers.find((l) => !arch.layers.some((t) => t.name === l.name));
  if (unknown) fail(`${path}: layer "${unknown.name}" is not part of architecture ${archName}`);
}

function readWeightsOnly(file: H5Group, path: string, arch: string | undefined): ModelSpec {
  if (arch === undefined)
    fail(`weights-only Keras file ${path} has no model_config; pass --arch (known: ${Object.keys(ARCHS).join(", ")})`);
  const t = archTemplate(arch);
  const found = new Map<string, LayerWeight[]>();
  for (const name of stringListAttr(file, "layer_names", path) ?? []) {
    const w = readLayerWeights(file, name, path);
    if (w === undefined) fail(`${path}: layer "${name}" is listed in layer_names but has no group`);
    if (w.length > 0 && !t.layers.some((l) => l.name === name))
      fail(`${path}: has weights for layer "${name}", which architecture ${arch} does not have`);
    found.set(name, w);
  }
  const layers: LayerSpec[] = t.layers.map((l) => {
    const w = found.get(l.name) ?? [];
    checkLayerWeights(w, l, arch, path);
    // The preset's order and names, the file's values.
    const weights = l.weights.map((tw) => ({
      name: tw.name,
      shape: [...tw.shape],
      data: w.find((x) => baseName(x.name) === baseName(tw.name))!.data,
    }));
    return { ...l, weights };
  });
  return {
    ...t,
    name: basename(path, extname(path)).replace(/[^A-Za-z0-9_.-]/g, "_"),
    layers,
    source: `keras ${stringAttr(file, "keras_version", path) ?? "(unknown version)"} weights-only + ${arch} preset`,
  };
}
