import { after, test } from "node:test";
import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";
import { forwardGraph } from "../model/forward.js";
import { toOnnx } from "../onnx/export.js";
import { ROOT } from "../test/fixtures.js";
import { tempDir } from "../test/make-bad-files.js";
import { writeKerasModel } from "./keras-save.js";
import { loadModel } from "./load-model.js";

const dir = tempDir("load-model");
after(() => rmSync(dir, { recursive: true, force: true }));

test("an ONNX model with a NaN or infinite weight is an error naming the file and the weight", async () => {
  const model = await loadModel(join(ROOT, "examples/badnet-fmnist/model.onnx"));
  for (const [i, bad] of [NaN, -Infinity].entries()) {
    const g = forwardGraph(model);
    const p = model.params[i]!.value;
    const data = Float32Array.from(g.initializers.get(p)!.data as Float32Array);
    data[3] = bad;
    g.addInitializer(p, { ...g.initializers.get(p)!, data });
    const path = join(dir, `bad-${i}.onnx`);
    writeFileSync(path, toOnnx(g));
    await assert.rejects(loadModel(path), (e: unknown) => e instanceof UserError && e.message === `model ${path}: weight ${p} value 3 is ${bad}; NaN or infinite weights make every output NaN`);
  }
});

test("a layer the lowering refuses is reported with the model file's path", async () => {
  const path = join(dir, "mismatch.h5");
  await writeKerasModel(path, {
    name: "mismatch",
    inputLayer: "in",
    outputLayer: "d",
    inputShape: [4, 4, 1],
    source: "test",
    layers: [
      { name: "in", className: "InputLayer", config: { batch_input_shape: [null, 4, 4, 1] }, inbound: [], weights: [] },
      { name: "f", className: "Flatten", config: {}, inbound: ["in"], weights: [] },
      { name: "d", className: "Dense", config: { units: 2 }, inbound: ["f"], weights: [{ name: "kernel:0", shape: [10, 2], data: new Float32Array(20) }, { name: "bias:0", shape: [2], data: new Float32Array(2) }] },
    ],
  });
  await assert.rejects(loadModel(path), (e: unknown) => e instanceof UserError && e.message === `model ${path}: layer "d" (Dense): input has 16 features, kernel expects 10`);
});
