// Keras HDF5 model files → ModelSpec. Full models carry their architecture as JSON (root attribute
// `model_config`) and weights under `model_weights`; weights-only files (model.save_weights) carry only
// per-layer weight groups at the root and need a known architecture (--arch) to make sense of them.
import { basename, extname } from "node:path";
import h5wasm from "h5wasm/node";
import { fail } from "../errors.js";
import { ARCHS, type ArchLayer, type ArchSpec } from "../model/archs.js";
import type { LayerSpec, LayerWeight, ModelSpec } from "../model/spec.js";
import { checkFilters, openH5ForRead, readingHdf5 } from "./hdf5.js";

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
  "Cropping2D",
  "UpSampling2D",
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

/**
 * The weights of one layer group, in weight_names order; LayerWeight.name is the part after the last "/".
 * `inner` picks one layer's weights out of a nested model's group (weight names "inner/kernel:0").
 */
function readLayerWeights(container: H5Group, layer: string, path: string, inner?: string): LayerWeight[] | undefined {
  const g = container.get(layer);
  if (!(g instanceof h5wasm.Group)) return undefined;
  const all = stringListAttr(g, "weight_names", path);
  if (all === undefined) fail(`${path}: weight group ${g.path} has no weight_names attribute`);
  const names = inner === undefined ? all : all.filter((wn) => wn.split("/").at(-2) === inner);
  return names.map((wn) => {
    const where = `${path}: weight ${g.path}/${wn}`;
    const ds = g.get(wn);
    if (!(ds instanceof h5wasm.Dataset)) return fail(`${where} is listed in weight_names but missing`);
    checkFilters(ds, where);
    const shape = ds.shape ?? [];
    const data = toFloat32(ds.value, where, JSON.stringify(ds.dtype));
    const size = shape.reduce((a, b) => a * b, 1);
    if (data.length !== size) fail(`${where}: has ${data.length} values for shape [${shape.join(", ")}]`);
    const bad = data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) fail(`${where}: value ${bad} is ${data[bad]}; NaN or infinite weights make every output NaN`);
    return { name: wn.slice(wn.lastIndexOf("/") + 1), shape: [...shape], data };
  });
}

// ---------------------------------------------------------------- full models

interface RawLayer {
  name: string;
  className: string;
  config: Json;
  inbound: string[];
  /** Where the weights live: the top-level group under model_weights, and the layer's own name inside it. */
  weightsAt: { group: string; layer: string };
}

interface ParsedModel {
  name: string;
  layers: RawLayer[];
  input: string;
  output: string;
}

/** Model classes that may appear as a layer of another model; they are flattened into the outer graph. */
const MODEL_CLASSES = new Set(["Functional", "Model", "Sequential"]);

/**
 * Parsing state shared by a model and the models nested in it: layer classes that cannot be loaded are
 * collected (and all reported at once at the end) rather than stopping at the first.
 */
class ConfigReader {
  readonly unsupported: string[] = [];

  constructor(readonly path: string) {}

  model(cls: unknown, config: unknown, nest?: { prefix: string; group: string }): ParsedModel {
    if (cls === "Functional" || cls === "Model") return parseFunctional(config, this, nest);
    if (cls === "Sequential") return parseSequential(config, this, nest);
    return fail(`${this.path}: unsupported model class ${JSON.stringify(cls)} (expected Functional, Model or Sequential)`);
  }

  /** Notes a layer the lowering cannot run; reading goes on so every such layer is named. */
  check(name: string, className: string): void {
    if (className === "Lambda") this.unsupported.push(`"${name}" (class Lambda: it holds Python bytecode, which no loader outside Python can run; rebuild the model with standard layers)`);
    else if (!SUPPORTED_LAYERS.has(className)) this.unsupported.push(`"${name}" (class ${className})`);
  }

  done(): void {
    const u = this.unsupported;
    if (u.length === 1) fail(`${this.path}: unsupported layer ${u[0]}`);
    if (u.length > 1) fail(`${this.path}: ${u.length} unsupported layers: ${u.join(", ")}`);
  }
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
  const reader = new ConfigReader(path);
  const parsed = reader.model(cls, root.config);
  reader.done();

  const layers = topoSort(parsed.layers, parsed.input, path);
  const inputLayer = layers[0]!;
  const weightsRoot = file.get("model_weights");
  if (!(weightsRoot instanceof h5wasm.Group)) fail(`${path}: has model_config but no model_weights group`);
  const specLayers: LayerSpec[] = layers.map((l) => {
    const { weightsAt, ...rest } = l;
    const weights = readLayerWeights(weightsRoot, weightsAt.group, path, weightsAt.group === l.name ? undefined : weightsAt.layer) ?? [];
    if (weights.length === 0 && NEEDS_WEIGHTS.has(l.className))
      fail(`${path}: layer "${l.name}" (class ${l.className}) has no weights under model_weights`);
    return { ...rest, weights };
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
  return { name, className: raw.class_name, config: { ...raw.config, name } };
}

/**
 * A nested model's layers, renamed `outer.inner` and wired into the outer graph: its InputLayer becomes the
 * layer feeding the nested model, and the nested model's name stands for its output layer (`alias`).
 */
function flattenNested(entry: { name: string; className: string; config: Json }, inbound: string[], reader: ConfigReader, nest: { prefix: string; group: string } | undefined): { layers: RawLayer[]; output: string } {
  const path = reader.path;
  if (inbound.length !== 1) fail(`${path}: nested model "${entry.name}" takes ${inbound.length} inputs; exactly one is supported`);
  const prefix = `${nest?.prefix ?? ""}${entry.name}.`;
  const inner = reader.model(entry.className, entry.config, { prefix, group: nest?.group ?? entry.name });
  const layers = inner.layers
    .filter((l) => l.name !== inner.input)
    .map((l) => ({ ...l, inbound: l.inbound.map((n) => (n === inner.input ? inbound[0]! : n)) }));
  return { layers, output: inner.output };
}

/** Renames references to nested models (their names) to the nested models' output layers. */
function resolveAliases(layers: RawLayer[], aliases: Map<string, string>): RawLayer[] {
  const resolve = (n: string): string => {
    for (let i = 0; aliases.has(n) && i < 100; i++) n = aliases.get(n)!;
    return n;
  };
  return layers.map((l) => ({ ...l, inbound: l.inbound.map(resolve) }));
}

/** [layer_name, node_index, tensor_index] references: Keras 2 nests them as [[name, 0, 0]], Keras 3 may not. */
function endpoints(v: unknown, key: string, path: string): string[] {
  const list = Array.isArray(v) && typeof v[0] === "string" ? [v] : v;
  if (!Array.isArray(list) || !list.every((r) => Array.isArray(r) && typeof r[0] === "string"))
    return fail(`${path}: model_config has no valid ${key}`);
  return list.map((r) => (r as unknown[])[0] as string);
}

function parseFunctional(config: unknown, reader: ConfigReader, nest?: { prefix: string; group: string }): ParsedModel {
  const path = reader.path;
  const prefix = nest?.prefix ?? "";
  if (!isObject(config) || !Array.isArray(config.layers)) return fail(`${path}: model_config has no layers list`);
  const layers: RawLayer[] = [];
  const aliases = new Map<string, string>();
  config.layers.forEach((raw, i) => {
    const entry = layerEntry(raw, i, path);
    const inbound = inboundOf(entry, (raw as Json).inbound_nodes, path).map((n) => prefix + n);
    if (MODEL_CLASSES.has(entry.className)) {
      const flat = flattenNested(entry, inbound, reader, nest);
      layers.push(...flat.layers);
      aliases.set(prefix + entry.name, flat.output);
      return;
    }
    reader.check(entry.name, entry.className);
    layers.push({ ...entry, name: prefix + entry.name, inbound, weightsAt: { group: nest?.group ?? entry.name, layer: entry.name } });
  });
  const inputs = endpoints(config.input_layers, "input_layers", path);
  const outputs = endpoints(config.output_layers, "output_layers", path);
  if (inputs.length !== 1) fail(`${path}: model has ${inputs.length} inputs (${inputs.join(", ")}); exactly one is supported`);
  if (outputs.length !== 1)
    fail(`${path}: model has ${outputs.length} outputs (${outputs.join(", ")}); exactly one is supported`);
  const name = typeof config.name === "string" ? config.name : "model";
  const output = aliases.get(prefix + outputs[0]!) ?? prefix + outputs[0]!;
  return { name, layers: resolveAliases(layers, aliases), input: prefix + inputs[0]!, output };
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
function parseSequential(config: unknown, reader: ConfigReader, nest?: { prefix: string; group: string }): ParsedModel {
  const path = reader.path;
  const prefix = nest?.prefix ?? "";
  const rawLayers = Array.isArray(config) ? config : isObject(config) ? config.layers : undefined;
  if (!Array.isArray(rawLayers) || rawLayers.length === 0) return fail(`${path}: Sequential model_config has no layers`);
  const entries = rawLayers.map((raw, i) => layerEntry(raw, i, path));
  if (entries[0]!.className !== "InputLayer") {
    const first = entries[0]!;
    const shape = first.config.batch_input_shape ?? first.config.batch_shape;
    if (!Array.isArray(shape) && nest === undefined)
      fail(`${path}: Sequential model's first layer "${first.name}" has no batch_input_shape; cannot tell the input shape`);
    const name = `${first.name}_input`;
    entries.unshift({
      name,
      className: "InputLayer",
      config: { batch_input_shape: shape ?? null, dtype: "float32", sparse: false, ragged: false, name },
    });
  }
  const layers: RawLayer[] = [];
  let prev: string | undefined;
  for (const e of entries) {
    const inbound = prev === undefined ? [] : [prev];
    if (MODEL_CLASSES.has(e.className)) {
      const flat = flattenNested(e, inbound, reader, nest);
      layers.push(...flat.layers);
      prev = flat.output;
      continue;
    }
    reader.check(e.name, e.className);
    layers.push({ ...e, name: prefix + e.name, inbound, weightsAt: { group: nest?.group ?? e.name, layer: e.name } });
    prev = prefix + e.name;
  }
  const name = isObject(config) && typeof config.name === "string" ? config.name : "sequential";
  return { name, layers, input: layers[0]!.name, output: prev! };
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
  const known = Object.keys(ARCHS).join(", ");
  if (arch === "zoo-cnn")
    fail(`--arch zoo-cnn is built to fit the training data (train --arch zoo-cnn, without --model); it cannot describe a model file. --arch with a model file names a fixed architecture (known: ${known})`);
  if (!make) return fail(`unknown architecture "${arch}" (known: ${known})`);
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

/**
 * A full model read together with --arch must be that architecture: same layers, wiring, classes and weight
 * shapes. Layers with weights are matched by name (the weights are found by it); weightless ones by their
 * place in the graph, because Keras numbers them per session (`flatten_4`, `add_2`) and the names carry nothing.
 */
function checkAgainstArch(spec: ModelSpec, arch: ArchSpec, archName: string, path: string): void {
  const byName = new Map(spec.layers.map((l) => [l.name, l]));
  const match = new Map<string, LayerSpec>(); // template name → file layer
  const used = new Set<string>();
  const take = (t: ArchLayer, l: LayerSpec) => {
    match.set(t.name, l);
    used.add(l.name);
  };
  take(arch.layers.find((t) => t.name === arch.inputLayer)!, byName.get(spec.inputLayer)!);
  for (const t of arch.layers) {
    if (t.weights.length === 0) continue;
    const l = byName.get(t.name);
    if (!l) fail(`${path}: has no layer "${t.name}" of architecture ${archName}`);
    if (l.className !== t.className) fail(`${path}: layer "${t.name}" is a ${l.className}, architecture ${archName} has a ${t.className}`);
    checkLayerWeights(l.weights, t, archName, path);
    take(t, l);
  }
  // Weightless layers: the unused file layer of the same class fed by the matched inputs, repeated until stable.
  const sameInputs = (l: LayerSpec, t: ArchLayer) => {
    const want = t.inbound.map((n) => match.get(n)?.name);
    return want.every((n) => n !== undefined) && [...l.inbound].sort().join("\0") === [...(want as string[])].sort().join("\0");
  };
  for (let changed = true; changed; ) {
    changed = false;
    for (const t of arch.layers) {
      if (match.has(t.name)) continue;
      const found = spec.layers.filter((l) => !used.has(l.name) && l.className === t.className && sameInputs(l, t));
      if (found.length === 1) {
        take(t, found[0]!);
        changed = true;
      }
    }
  }
  const missing = arch.layers.find((t) => !match.has(t.name));
  if (missing)
    fail(`${path}: has no ${missing.className} layer wired like "${missing.name}" of architecture ${archName} (fed by ${missing.inbound.map((n) => `"${n}"`).join(", ")})`);
  for (const t of arch.layers) {
    const l = match.get(t.name)!;
    if (!sameInputs(l, t)) fail(`${path}: layer "${l.name}" is not wired like "${t.name}" of architecture ${archName}`);
  }
  const unknown = spec.layers.find((l) => !used.has(l.name));
  if (unknown) fail(`${path}: layer "${unknown.name}" is not part of architecture ${archName}`);
  if (match.get(arch.outputLayer)!.name !== spec.outputLayer)
    fail(`${path}: the model's output is "${spec.outputLayer}", architecture ${archName} ends in "${arch.outputLayer}"`);
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
