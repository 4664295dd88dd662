// Keras layers beyond the DeepID family, against models written by scripts/keras-fixtures/make_keras_fixtures.py
// (h5py, Keras' file layout) whose expected logits were computed independently with PyTorch.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { lowerModel } from "../model/lower.js";
import { batchTensor, forwardGraph } from "../model/forward.js";
import { Session } from "../runtime/session.js";
import { ROOT } from "../test/fixtures.js";
import { readKerasModel } from "./keras-h5.js";
import { UserError } from "../errors.js";

const DIR = join(ROOT, "fixtures/keras");
interface Expected {
  input_nhwc: [number, number, number, number];
  input: number[];
  logits: number[][];
}
const EXPECTED = JSON.parse(readFileSync(join(DIR, "expected.json"), "utf8")) as Record<string, Expected>;

function toNchw(e: Expected): Float32Array {
  const [n, h, w, c] = e.input_nhwc;
  const out = new Float32Array(n * c * h * w);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let ch = 0; ch < c; ch++) out[((i * c + ch) * h + y) * w + x] = e.input[((i * h + y) * w + x) * c + ch]!;
  return out;
}

async function logitsOf(file: string): Promise<{ got: Float32Array; want: number[][] }> {
  const e = EXPECTED[file]!;
  const model = lowerModel(await readKerasModel(join(DIR, file)));
  const session = await Session.create(forwardGraph(model));
  try {
    const out = await session.run({ input: batchTensor(toNchw(e), model.inputShape) });
    return { got: out[model.logits]!.data as Float32Array, want: e.logits };
  } finally {
    await session.release();
  }
}

function assertClose(got: Float32Array, want: number[][]): void {
  const flat = want.flat();
  assert.equal(got.length, flat.length);
  for (let i = 0; i < flat.length; i++) assert.ok(Math.abs(got[i]! - flat[i]!) <= 1e-4 * (1 + Math.abs(flat[i]!)), `logit ${i}: ${got[i]} vs ${flat[i]}`);
}

test("'same' padding (strided Conv2D, MaxPooling2D, AveragePooling2D on odd sizes), UpSampling2D and Cropping2D match an independent forward", async () => {
  const spec = await readKerasModel(join(DIR, "same_upsample_crop.h5"));
  assert.deepEqual(spec.layers.map((l) => l.className).filter((c) => c === "UpSampling2D" || c === "Cropping2D"), ["UpSampling2D", "Cropping2D"]);
  const { got, want } = await logitsOf("same_upsample_crop.h5");
  assertClose(got, want);
});

test("nested Functional and Sequential models are flattened into the graph (a G built from B and B2)", async () => {
  const spec = await readKerasModel(join(DIR, "nested_g.h5"));
  assert.deepEqual(
    spec.layers.map((l) => l.name),
    ["input", "B.conv", "B.flat", "B.fc", "B2.conv", "B2.flat", "B2.fc", "add", "act"],
  );
  assert.deepEqual(spec.layers.find((l) => l.name === "add")!.inbound, ["B.fc", "B2.fc"]);
  assert.deepEqual(spec.layers.find((l) => l.name === "B2.conv")!.inbound, ["input"]);
  // The two nested models share layer names but not weights.
  const k = (n: string) => spec.layers.find((l) => l.name === n)!.weights[0]!.data;
  assert.notDeepEqual(k("B.conv"), k("B2.conv"));
  const { got, want } = await logitsOf("nested_g.h5");
  assertClose(got, want);
});

test("weights that do not fit their layer (a bias one too long) are the user's error naming the layer, not an internal one", async () => {
  const spec = await readKerasModel(join(DIR, "same_upsample_crop.h5"));
  for (const className of ["Conv2D", "Dense"]) {
    const layer = spec.layers.find((l) => l.className === className && l.weights.some((w) => w.name.startsWith("bias")));
    assert.ok(layer, `the fixture has a ${className} layer with a bias`);
    const layers = spec.layers.map((l) =>
      l !== layer ? l : { ...l, weights: l.weights.map((w) => (w.name.startsWith("bias") ? { ...w, shape: [w.shape[0]! + 1], data: new Float32Array(w.shape[0]! + 1) } : w)) },
    );
    assert.throws(() => lowerModel({ ...spec, layers }), (e: unknown) => e instanceof UserError && e.message.includes(`layer "${layer.name}" (${className})`) && !e.message.includes("\n"));
  }
});
