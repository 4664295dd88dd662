// The prunable-layer rule on every PyTorch fixture: the default prune point is after the last residual sum
// (nothing bypasses it), and pruning every channel there cuts the input off from the logits entirely, which
// pruning a conv inside the last block does not (the skip path carries the signal).
import assert from "node:assert/strict";
import { test } from "node:test";
import { channelMask, PruneEngine, prunable, prunedModel, pruneTarget } from "../defenses/pruning.js";
import { downstreamNodes } from "../graph/transforms.js";
import { openDataset } from "../io/open-dataset.js";
import { loadModel } from "../io/load-model.js";
import { missingPytorchFixtures, pytorchFile, pytorchManifest } from "../test/pytorch-fixtures.js";
import { predictLabels } from "./forward.js";
import { withNormalization } from "./normalize.js";
import { dominatesLogits, readableName } from "./prunable.js";

test("readableName turns PyTorch export scopes into module paths", () => {
  assert.equal(readableName("/layer4/layer4.1/Add"), "layer4.1");
  assert.equal(readableName("/layer4/layer4.1/conv2/Conv"), "layer4.1.conv2");
  assert.equal(readableName("/features/features.18/conv/conv.7/Add"), "features.18.conv.7");
  assert.equal(readableName("/avgpool/GlobalAveragePool"), "avgpool");
  assert.equal(readableName("conv_3"), "conv_3");
});

const manifest = pytorchManifest();
if (!manifest) test("prunable-layer rule on the PyTorch fixtures", { skip: missingPytorchFixtures }, () => {});
for (const [name, info] of Object.entries(manifest?.models ?? {})) {
  test(`prunable-layer rule on PyTorch ${name}: default prune point cuts every path`, async () => {
    const model = withNormalization(await loadModel(pytorchFile(info.files.opset17)), { mean: manifest!.mean, std: manifest!.std });
    const layers = prunable(model);
    const defaults = layers.filter((l) => l.isDefault);
    assert.equal(defaults.length, 1, "exactly one default");
    const d = defaults[0];
    assert.ok(dominatesLogits(model, d.value), "no path from the input to the logits bypasses the default");
    const after = downstreamNodes(model.graph, d.value);
    assert.ok(!after.some((n) => n.op === "Add" || n.op === "Sum" || n.op === "Conv"), `no residual sum or conv after the default (${after.map((n) => n.op)})`);
    const sums = layers.filter((l) => l.role === "residual sum");
    if (name !== "vgg_bn") {
      assert.ok(sums.length > 0, "residual sums are listed");
      assert.ok(sums.every((l) => !dominatesLogits(model, l.value) || downstreamNodes(model.graph, l.value).some((n) => n.outputs.includes(d.value))), "every residual sum lies before the default");
    }
    assert.ok(layers.every((l) => l.readable.length > 0 && !l.readable.startsWith("/")), "readable names");

    const t = pruneTarget(model);
    assert.equal(t.value, d.value);
    assert.equal(pruneTarget(model, d.readable).value, d.value, "the readable name is accepted too");
    const clean = await openDataset(pytorchFile("clean_test.h5"), { inputScale: manifest!.inputScale });
    const sub = { size: 64, shape: clean.shape, read: (s: number, c: number) => clean.read(s, c) };
    const labels = Int32Array.from(clean.labels!.subarray(0, 64));
    const engine = await PruneEngine.create(model, t, { batchSize: 64 });
    try {
      const cached = await engine.cache(sub, labels);
      const half = Array.from({ length: t.channels >> 1 }, (_, i) => 2 * i);
      // The cached head with a mask equals the saved pruned network.
      const viaEngine = await engine.predict(cached, channelMask(t.channels, half));
      assert.deepEqual(Array.from(await predictLabels(prunedModel(model, t, half), sub)), Array.from(viaEngine));
      // Every channel pruned: one answer for every input.
      const all = Array.from({ length: t.channels }, (_, i) => i);
      const none = await predictLabels(prunedModel(model, t, all), sub);
      assert.equal(new Set(none).size, 1, "with every channel pruned the input no longer reaches the logits");
      if (t.kind === "feature") {
        // Pruning a masked model again sets its mask again instead of stacking a second one.
        const twice = prunedModel(prunedModel(model, t, all), t, half);
        assert.deepEqual(Array.from(await predictLabels(twice, sub)), Array.from(viaEngine));
      }
    } finally {
      await engine.release();
      clean.close();
    }
  });
}
