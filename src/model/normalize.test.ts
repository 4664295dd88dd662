// Input normalisation: a unit check on a one-node model, and the PyTorch fixture set, whose exports expect
// transforms.Normalize'd input: with --mean/--std our logits must match PyTorch's own to 1e-4 at both opsets.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Graph, f32, tensor, type TensorData } from "../graph/ir.js";
import { openDataset } from "../io/dataset.js";
import { loadModel } from "../io/load-model.js";
import { Session } from "../runtime/session.js";
import { missingPytorchFixtures, pytorchFile, pytorchManifest, pytorchReference } from "../test/pytorch-fixtures.js";
import { forwardGraph } from "./forward.js";
import type { Model } from "./model.js";
import { parseChannelValues, withNormalization } from "./normalize.js";
import { UserError } from "../errors.js";

async function logitsOf(model: Model, x: TensorData): Promise<Float32Array> {
  const s = await Session.create(forwardGraph(model));
  try {
    return (await s.run({ [model.input]: x }))[model.logits].data as Float32Array;
  } finally {
    await s.release();
  }
}

/** logits = sum over pixels of the input, per channel weighted 1, 10, 100: shows each channel's own (x − m)/s. */
function channelSumModel(): Model {
  const g = new Graph("sum");
  g.addInput("input", "float32", ["N", 3, 2, 2]);
  const w = g.constant(f32([1, 3, 1, 1], [1, 10, 100]));
  const s = g.op("ReduceSum", [g.op("Mul", ["input", w]), g.ints([1, 2, 3])], { keepdims: { kind: "int", value: 0 } });
  const logits = g.op("Unsqueeze", [s, g.ints([1])], {}, "logits");
  g.setOutputs([logits]);
  return { name: "sum", graph: g, input: "input", logits, inputShape: [3, 2, 2], numClasses: 1, layerOutputs: new Map(), params: [] };
}

test("withNormalization computes (x − mean) / std per channel, in front of every reader of the input", async () => {
  const m = channelSumModel();
  const x = tensor("float32", [1, 3, 2, 2], Float32Array.from({ length: 12 }, (_, i) => i / 11));
  const mean = [0.5, 0.25, 0.125];
  const std = [0.5, 2, 4];
  const n = withNormalization(m, { mean, std });
  let want = 0;
  for (let c = 0; c < 3; c++) for (let j = 0; j < 4; j++) want += [1, 10, 100][c] * ((x.data[c * 4 + j] as number) - mean[c]) / std[c];
  const got = (await logitsOf(n, x))[0];
  assert.ok(Math.abs(got - want) < 1e-4 * Math.abs(want), `${got} vs ${want}`);
  assert.equal(n.graph.inputs.length, 1, "the input keeps its name and is the only input");
  assert.equal(n.graph.inputs[0].name, "input");
  assert.deepEqual(n.normalization, { mean, std });
  assert.equal(m.normalization, undefined, "the original model is left alone");
  assert.throws(() => withNormalization(n, { mean, std }), UserError, "normalising twice is refused");
});

test("bad --mean/--std values are one-line user errors", () => {
  assert.deepEqual(parseChannelValues("0.5", "mean", 3), [0.5, 0.5, 0.5]);
  assert.deepEqual(parseChannelValues("0.1, 0.2,0.3", "mean", 3), [0.1, 0.2, 0.3]);
  assert.throws(() => parseChannelValues("0.1,0.2", "mean", 3), /--mean has 2 values but the model's input has 3 channels/);
  assert.throws(() => parseChannelValues("0.1,x,0.3", "std", 3), /--std: "x" is not a number/);
  assert.throws(() => withNormalization(channelSumModel(), { mean: [0, 0, 0], std: [1, 0, 1] }), /--std values must be positive/);
});

const manifest = pytorchManifest();
if (!manifest) test("PyTorch exports with --mean/--std: logits match PyTorch's", { skip: missingPytorchFixtures }, () => {});
for (const [name, info] of Object.entries(manifest?.models ?? {})) {
  for (const [opset, file] of Object.entries(info.files)) {
    test(`PyTorch ${name} (${opset}) with --mean/--std: logits match PyTorch's to 1e-4`, async () => {
      const m = withNormalization(await loadModel(pytorchFile(file)), { mean: manifest!.mean, std: manifest!.std });
      const clean = await openDataset(pytorchFile("clean_test.h5"), { inputScale: manifest!.inputScale });
      const poisoned = await openDataset(pytorchFile("poisoned_test.h5"), { inputScale: manifest!.inputScale });
      const per = 3 * 32 * 32;
      const x = new Float32Array(8 * per);
      x.set(clean.read(0, 4), 0);
      x.set(poisoned.read(0, 4), 4 * per);
      clean.close();
      poisoned.close();
      const got = await logitsOf(m, tensor("float32", [8, 3, 32, 32], x));
      const ref = pytorchReference(name);
      let worst = 0;
      ref.forEach((row, i) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs(got[i * row.length + j] - v)))));
      assert.ok(worst <= 1e-4, `max |ours − PyTorch| = ${worst.toExponential(2)}`);
      // Without the normalisation the same export gives other logits: the flags are not a no-op.
      const raw = await logitsOf(await loadModel(pytorchFile(file)), tensor("float32", [8, 3, 32, 32], x));
      assert.ok(raw.some((v, i) => Math.abs(v - got[i]) > 1e-3), "the normalisation changes the logits");
    });
  }
}
