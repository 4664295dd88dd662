// Input normalisation: a unit check on a one-node model, and the PyTorch fixture set, whose exports expect
// transforms.Normalize'd input: with --mean/--std our logits must match PyTorch's own to 1e-4 at both opsets.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Graph, f32, tensor, type TensorData } from "../graph/ir.js";
import { openDataset } from "../io/open-dataset.js";
import { loadModel } from "../io/load-model.js";
import { Session } from "../runtime/session.js";
import { CLI } from "../test/fixtures.js";
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

// Through the CLI, as a user runs it: eval gives PyTorch's own accuracy and ASR; prune records the
// normalisation in result.json and bakes it into G, which takes the same raw input as the command.
test("CLI --mean/--std: eval matches PyTorch's accuracy; result.json records it; G takes the raw input", { skip: manifest ? false : missingPytorchFixtures }, async () => {
  const name = "resnet18";
  const info = manifest!.models[name];
  const norm = ["--input-scale", String(manifest!.inputScale), "--mean", manifest!.mean.join(","), "--std", manifest!.std.join(",")];
  const model = pytorchFile(info.files.opset11);
  const ev = JSON.parse(execFileSync("node", [CLI, "eval", "--model", model, ...norm, "--clean", pytorchFile("clean_test.h5"), "--poisoned", pytorchFile("poisoned_test.h5"), "--json"], { encoding: "utf8" })) as { cleanAccuracy: number; asr: number; nClean: number };
  // Logits agree to 1e-4, so at most a near-tie or two may flip.
  assert.ok(Math.abs(ev.cleanAccuracy - info.cleanAccuracy) <= 2 / ev.nClean, `clean accuracy ${ev.cleanAccuracy} vs PyTorch ${info.cleanAccuracy}`);
  assert.ok(Math.abs(ev.asr - info.asr) <= 2 / ev.nClean, `ASR ${ev.asr} vs PyTorch ${info.asr}`);

  const dir = mkdtempSync(join(tmpdir(), "norm-cli-"));
  try {
    const out = join(dir, "out");
    const r = JSON.parse(execFileSync("node", [CLI, "prune", "--model", model, ...norm, "--clean", pytorchFile("valid.h5"), "--drop", "4", "--out", out, "--json", "--quiet"], { encoding: "utf8" })) as { model: { normalization: unknown } };
    assert.deepEqual(r.model.normalization, { mean: manifest!.mean, std: manifest!.std });
    const saved = JSON.parse(readFileSync(join(out, "result.json"), "utf8")) as { model: { normalization: unknown } };
    assert.deepEqual(saved.model.normalization, r.model.normalization);
    // G on raw pixels/255: its first K columns are B's logits with the normalisation applied.
    const g = await loadModel(join(out, "G_4.onnx"));
    const b = withNormalization(await loadModel(model), { mean: manifest!.mean, std: manifest!.std });
    const clean = await openDataset(pytorchFile("clean_test.h5"), { inputScale: manifest!.inputScale });
    const x = tensor("float32", [8, 3, 32, 32], clean.read(0, 8));
    clean.close();
    const gl = await logitsOf(g, x);
    const bl = await logitsOf(b, x);
    const k = b.numClasses;
    for (let i = 0; i < 8; i++) for (let j = 0; j < k; j++) assert.ok(Math.abs(gl[i * (k + 1) + j] - bl[i * k + j]) <= 1e-4, `G row ${i} column ${j}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
