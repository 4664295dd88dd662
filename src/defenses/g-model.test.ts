import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { attr } from "../graph/ir.js";
import { loadModel } from "../io/load-model.js";
import { zooCnn } from "../model/archs.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { tempDir } from "../test/make-bad-files.js";
import { gFromMaskedBranch, gFromPair, isRejectingG, refuseG, writeOnnx } from "./g-model.js";

const small = (): Model => lowerModel(zooCnn({ inputShape: [30, 30, 1], numClasses: 3, filters: [2, 3, 4], hidden: 5, seed: 1, name: "small" }));

/** A graph as a model whose logits are its only output (how a loaded G looks to the defenses). */
const asModel = (b: Model, g: ReturnType<typeof gFromPair>): Model => ({ ...b, name: g.name, graph: g, input: "input", logits: g.outputs[0]!.name, numClasses: b.numClasses + 1 });

test("isRejectingG: a G built in memory or read back from ONNX is recognised, B is not", async () => {
  const b = small();
  assert.equal(isRejectingG(b), false);
  const pair = gFromPair(b, b);
  assert.equal(isRejectingG(asModel(b, pair)), true);
  const last = [...b.layerOutputs.values()].find((v) => b.graph.shape(v).length === 4)!;
  assert.equal(isRejectingG(asModel(b, gFromMaskedBranch(b, last, new Float32Array(b.graph.shape(last)[1] as number).fill(1)))), true);
  const dir = tempDir("g-model");
  try {
    const path = join(dir, "small_G.onnx");
    writeOnnx(path, pair);
    const loaded = await loadModel(path);
    assert.equal(loaded.numClasses, b.numClasses + 1);
    assert.equal(isRejectingG(loaded), true);
    assert.throws(() => refuseG(loaded), (e: unknown) => e instanceof UserError && /small_G is a G network \(4 classes/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("isRejectingG: a column built like the reject class but with other values is not a G", () => {
  const b = small();
  const g = b.graph.clone("not_g");
  const positive = g.op("Greater", [g.op("ReduceMax", [b.logits], { axes: attr.ints([1]), keepdims: attr.int(0) }), g.scalar(0)]);
  const col = g.op("Where", [g.op("Unsqueeze", [positive, g.ints([1])]), g.scalar(1), g.scalar(-1)]);
  const out = g.op("Concat", [b.logits, col], { axis: attr.int(1) }, "wider");
  g.setOutputs([out]);
  assert.equal(isRejectingG({ graph: g, logits: out }), false);
  assert.doesNotThrow(() => refuseG({ graph: g, logits: out, name: "wider", numClasses: 4 }));
});
