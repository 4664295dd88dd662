// ModelSpec → Keras full-model HDF5 file that tf.keras 2.x `load_model` reads. The layout and attribute
// types copy what Keras 2.4 writes (see the thirdparty fixture): root attributes model_config (JSON),
// keras_version and backend; group model_weights with layer_names, and per layer a group with
// weight_names plus datasets at model_weights/<layer>/<layer>/<weight>.
import { randomBytes } from "node:crypto";
import { existsSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import h5wasm from "h5wasm/node";
import { fail } from "../errors.js";
import { writingHdf5 } from "./hdf5.js";
import type { LayerSpec, ModelSpec } from "../model/spec.js";

type H5Group = InstanceType<typeof h5wasm.Group>;

const KERAS_VERSION = "2.4.0";
const BACKEND = "tensorflow";

/** Layer and weight names go into HDF5 paths and ASCII attributes, as Keras/TensorFlow names do. */
const NAME_RE = /^[A-Za-z0-9_.][A-Za-z0-9_.\-:]*$/;

function checkSpec(spec: ModelSpec, path: string): void {
  const where = `cannot save ${path}`;
  if (spec.layers.length === 0) fail(`${where}: model has no layers`);
  if (spec.layers[0].className !== "InputLayer" || spec.layers[0].name !== spec.inputLayer)
    fail(`${where}: the first layer must be the InputLayer "${spec.inputLayer}"`);
  const seen = new Set<string>();
  for (const l of spec.layers) {
    if (!NAME_RE.test(l.name)) fail(`${where}: layer name ${JSON.stringify(l.name)} is not a valid Keras layer name`);
    if (seen.has(l.name)) fail(`${where}: two layers are named "${l.name}"`);
    for (const n of l.inbound)
      if (!seen.has(n)) fail(`${where}: layer "${l.name}" takes input from "${n}", which does not come before it`);
    seen.add(l.name);
    for (const w of l.weights) {
      if (!NAME_RE.test(w.name)) fail(`${where}: layer "${l.name}" has weight name ${JSON.stringify(w.name)}`);
      const size = w.shape.reduce((a, b) => a * b, 1);
      if (w.data.length !== size)
        fail(`${where}: layer "${l.name}" weight "${w.name}" has ${w.data.length} values for shape [${w.shape.join(", ")}]`);
    }
  }
  if (!seen.has(spec.outputLayer)) fail(`${where}: output layer "${spec.outputLayer}" is not among the layers`);
}

/** Keras 2 InputLayer config: Keras 3's `batch_shape` becomes `batch_input_shape`, which Keras 2 requires. */
function inputLayerConfig(l: LayerSpec, spec: ModelSpec): Record<string, unknown> {
  const { batch_shape: _dropped, ...rest } = l.config;
  return { ...rest, batch_input_shape: [null, ...spec.inputShape], dtype: "float32", sparse: false, ragged: false, name: l.name };
}

/** The model_config JSON object of a Keras 2.4 Functional model. */
export function kerasModelConfig(spec: ModelSpec): Record<string, unknown> {
  const layers = spec.layers.map((l) => ({
    class_name: l.className,
    config: l.className === "InputLayer" ? inputLayerConfig(l, spec) : { ...l.config, name: l.name },
    name: l.name,
    inbound_nodes: l.inbound.length === 0 ? [] : [l.inbound.map((n) => [n, 0, 0, {}])],
  }));
  return {
    class_name: "Functional",
    config: {
      name: spec.name.replace(/[^A-Za-z0-9_.-]/g, "_") || "model",
      layers,
      input_layers: [[spec.inputLayer, 0, 0]],
      output_layers: [[spec.outputLayer, 0, 0]],
    },
  };
}

/** JSON with non-ASCII characters escaped (as Python's json.dumps does), so it fits an ASCII attribute. */
function asciiJson(v: unknown): string {
  return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * A list of names as h5py stores numpy bytes arrays: fixed-length ASCII strings as long as the longest;
 * an empty list as an empty float64 array (what numpy makes of []).
 */
function writeNameList(g: H5Group, attr: string, names: string[]): void {
  if (names.length === 0) {
    g.create_attribute(attr, new Float64Array(0), [0], "<d");
    return;
  }
  const width = Math.max(1, ...names.map((n) => Buffer.byteLength(n)));
  g.create_attribute(attr, names, [names.length], `A${width}`);
}

function writeContents(f: H5Group, spec: ModelSpec): void {
  f.create_attribute("keras_version", KERAS_VERSION, null, "S");
  f.create_attribute("backend", BACKEND, null, "S");
  f.create_attribute("model_config", asciiJson(kerasModelConfig(spec)), null, "A");
  const mw = f.create_group("model_weights");
  writeNameList(
    mw,
    "layer_names",
    spec.layers.map((l) => l.name),
  );
  mw.create_attribute("backend", BACKEND, null, "A");
  mw.create_attribute("keras_version", KERAS_VERSION, null, "A");
  for (const l of spec.layers) {
    const g = mw.create_group(l.name);
    writeNameList(
      g,
      "weight_names",
      l.weights.map((w) => `${l.name}/${w.name}`),
    );
    if (l.weights.length === 0) continue;
    const inner = g.create_group(l.name);
    for (const w of l.weights) inner.create_dataset({ name: w.name, data: w.data, shape: w.shape, dtype: "<f4" });
  }
}

/** Writes `spec` as a Keras 2.4 full-model HDF5 file, atomically (temp file in the same folder, then rename). */
export async function writeKerasModel(path: string, spec: ModelSpec): Promise<void> {
  checkSpec(spec, path);
  const target = resolve(path);
  const dir = dirname(target);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) fail(`cannot save ${path}: folder ${dir} does not exist`);
  if (existsSync(target) && statSync(target).isDirectory()) fail(`cannot save ${path}: it is a folder`);
  await h5wasm.ready;
  const tmp = join(dir, `.${basename(target)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  try {
    writingHdf5(path, () => {
      const f = new h5wasm.File(tmp, "w");
      try {
        writeContents(f, spec);
      } finally {
        f.close();
      }
    });
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
