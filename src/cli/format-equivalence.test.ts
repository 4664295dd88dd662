// One network, two files: the bundled example as Keras HDF5 and as the ONNX file written from it must give the
// same results, training included. (Every ONNX file once counted as a framework export whose BatchNorms were
// folded, so fine-tuning from the .onnx trained a network with BatchNorms put back and came out different.)
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { ROOT } from "../test/fixtures.js";
import { runCli, tempDir } from "../test/make-bad-files.js";

const EX = join(ROOT, "examples/badnet-fmnist");
const dir = tempDir("format-equivalence");
after(() => rmSync(dir, { recursive: true, force: true }));

test("fine-prune from the example's model.h5 and model.onnx: same layer, same channels, same accuracy and ASR after fine-tuning", async () => {
  const results = [];
  for (const file of ["model.h5", "model.onnx"]) {
    const out = join(dir, file);
    const r = await runCli(["fine-prune", "--model", join(EX, file), "--input-scale", "255", "--clean", join(EX, "valid.h5"), "--test", join(EX, "clean_test.h5"), "--poisoned", join(EX, "poisoned_test.h5"), "--epochs", "1", "--quiet", "--out", out], 120_000);
    assert.equal(r.code, 0, r.stderr);
    results.push(JSON.parse(readFileSync(join(out, "result.json"), "utf8")));
  }
  const [h5, onnx] = results;
  assert.equal(onnx.pruning.layer, h5.pruning.layer, "the pruned layer's name");
  assert.deepEqual(onnx.finePruning.channels, h5.finePruning.channels, "the pruned channels");
  assert.equal(onnx.finePruning.batchNorm, h5.finePruning.batchNorm, "BatchNorm handling");
  assert.deepEqual(onnx.evaluation.after, h5.evaluation.after);
});
