// One entry point for every model format: Keras HDF5 (full, or weights-only + --arch) and ONNX.
import { existsSync, statSync } from "node:fs";
import { basename, extname } from "node:path";
import { fail, UserError } from "../errors.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { loadOnnxModel } from "../onnx/import.js";
import { readKerasModel } from "./keras-h5.js";

export async function loadModel(path: string, opts: { arch?: string } = {}): Promise<Model> {
  if (!existsSync(path)) fail(`model ${path}: no such file`);
  if (statSync(path).isDirectory()) fail(`model ${path} is a directory, expected a .h5 or .onnx file`);
  const ext = extname(path).toLowerCase();
  if (ext === ".onnx") return checkFiniteParams(await loadOnnxModel(path), path);
  if (ext === ".h5" || ext === ".hdf5" || ext === ".keras") {
    const spec = await readKerasModel(path, opts);
    try {
      return lowerModel({ ...spec, name: spec.name || basename(path, ext) });
    } catch (e) {
      // Lowering names the layer; the user also needs to know which file holds it.
      if (e instanceof UserError) fail(`model ${path}: ${e.message}`);
      throw e;
    }
  }
  return fail(`model ${path}: unknown model format "${ext}" (expected .h5/.hdf5 Keras or .onnx)`);
}

/** A NaN or infinite weight makes every output NaN (which no prediction may count as a class): refused here. */
function checkFiniteParams(model: Model, path: string): Model {
  for (const p of model.params) {
    const t = model.graph.initializers.get(p.value);
    if (!t || t.dtype !== "float32") continue;
    const data = t.data as Float32Array;
    const bad = data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) fail(`model ${path}: weight ${p.value} value ${bad} is ${data[bad]}; NaN or infinite weights make every output NaN`);
  }
  return model;
}
