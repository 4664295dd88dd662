// Writes a repaired network in both formats the project hands back: Keras HDF5 (when the model came from
// Keras, so the spec with the new weights can be written) and ONNX (always: the forward graph → logits).
import { join } from "node:path";
import { existsSync, statSync } from "node:fs";
import { fail } from "../errors.js";
import { writeOnnx } from "../defenses/g-model.js";
import { specWithWeights } from "../model/lower.js";
import { forwardGraph } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { paramValues } from "../model/params.js";
import { writeKerasModel } from "./keras-save.js";
import { provenanceMetadata } from "../onnx/provenance.js";

/** Writes `<dir>/<baseName>.h5` (only when model.spec exists) and `<dir>/<baseName>.onnx`; returns the paths written. */
export async function saveRepaired(dir: string, baseName: string, model: Model): Promise<string[]> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) fail(`cannot save ${baseName}: folder ${dir} does not exist`);
  const paths: string[] = [];
  if (model.spec) {
    const h5 = join(dir, `${baseName}.h5`);
    await writeKerasModel(h5, { ...specWithWeights(model, paramValues(model)), name: model.spec.name });
    paths.push(h5);
  }
  const onnx = join(dir, `${baseName}.onnx`);
  const g = forwardGraph(model);
  g.name = model.name;
  writeOnnx(onnx, g, `${model.name}: input "input" [N,${model.inputShape.join(",")}] float32 (scaled pixels), output "logits" [N,${model.numClasses}]`, provenanceMetadata(model.origin));
  paths.push(onnx);
  return paths;
}
