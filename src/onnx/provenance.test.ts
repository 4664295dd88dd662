import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { attr, f32, Graph } from "../graph/ir.js";
import { saveRepaired } from "../io/save-model.js";
import { foldedConvs } from "../train/batch-norm-training.js";
import { toOnnx } from "./export.js";
import { importOnnx } from "./import.js";
import { FOLDED_KEY, FOLDED_VALUE, mayHaveFoldedBatchNorm, ONNX_PRODUCER, provenanceMetadata } from "./provenance.js";

/** Conv(+bias) → Relu → GlobalAveragePool → Flatten → Gemm: one conv a framework could have folded a BatchNorm into. */
function convNet(): Graph {
  const g = new Graph("conv_net");
  g.addInput("x", "float32", ["batch", 1, 4, 4]);
  g.addInitializer("w", f32([3, 1, 3, 3], Float32Array.from({ length: 27 }, (_, i) => ((i % 7) - 3) / 5)));
  g.addInitializer("b", f32([3], Float32Array.of(0.1, -0.2, 0.3)));
  g.addInitializer("fw", f32([2, 3], Float32Array.of(1, -1, 0.5, -0.5, 2, 0.25)));
  g.addInitializer("fb", f32([2], Float32Array.of(0, 0.1)));
  g.add("Conv", ["x", "w", "b"], { pads: attr.ints([1, 1, 1, 1]) }, { outputs: ["c"], name: "conv" });
  g.add("Relu", ["c"], {}, { outputs: ["r"], name: "relu" });
  g.add("GlobalAveragePool", ["r"], {}, { outputs: ["p"], name: "gap" });
  g.add("Flatten", ["p"], { axis: attr.int(1) }, { outputs: ["f"], name: "flatten" });
  g.add("Gemm", ["f", "fw", "fb"], { transB: attr.int(1) }, { outputs: ["y"], name: "fc" });
  g.setOutputs(["y"]);
  return g;
}

test("mayHaveFoldedBatchNorm: another producer's file may; ours only with the mark", () => {
  const none = new Map<string, string>();
  assert.equal(mayHaveFoldedBatchNorm("pytorch", none), true);
  assert.equal(mayHaveFoldedBatchNorm("", none), true, "no producer name: unknown, so it may");
  assert.equal(mayHaveFoldedBatchNorm(ONNX_PRODUCER, none), false);
  assert.equal(mayHaveFoldedBatchNorm(ONNX_PRODUCER, new Map([[FOLDED_KEY, FOLDED_VALUE]])), true);
  assert.equal(mayHaveFoldedBatchNorm(ONNX_PRODUCER, new Map([[FOLDED_KEY, "something else"]])), false);
  assert.deepEqual(provenanceMetadata(undefined), {});
  assert.deepEqual(provenanceMetadata("onnx"), { [FOLDED_KEY]: FOLDED_VALUE });
});

test("import: a framework's export gets its BatchNorms put back in training, a file of ours from a network that never had any does not", () => {
  const foreign = importOnnx(toOnnx(convNet(), { producer: "pytorch" }), "foreign");
  assert.equal(foreign.origin, "onnx");
  assert.deepEqual(foldedConvs(foreign).map((c) => c.node), ["conv"]);
  const ours = importOnnx(toOnnx(convNet()), "ours");
  assert.equal(ours.origin, undefined);
  assert.deepEqual(foldedConvs(ours), []);
  const marked = importOnnx(toOnnx(convNet(), { metadata: provenanceMetadata("onnx") }), "marked");
  assert.equal(marked.origin, "onnx");
  assert.deepEqual(foldedConvs(marked).map((c) => c.node), ["conv"]);
});

test("saveRepaired: repaired.onnx keeps the mark of a network first read from a framework's export, and only then", async () => {
  const dir = await mkdtemp(join(tmpdir(), "provenance-"));
  try {
    for (const producer of ["pytorch", ONNX_PRODUCER]) {
      const b = importOnnx(toOnnx(convNet(), { producer }), `from_${producer}`);
      const [path] = await saveRepaired(dir, `repaired_${producer}`, b);
      const again = importOnnx(new Uint8Array(await readFile(path)), "again");
      assert.equal(again.origin, b.origin, `written from a ${producer} file`);
    }
  } finally {
    await rm(dir, { recursive: true });
  }
});
