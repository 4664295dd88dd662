// The tail cut rule on every PyTorch fixture, the tail model's equivalence to the whole network, and tail
// training against whole-network training with the same parameters trainable.
import assert from "node:assert/strict";
import { test } from "node:test";
import { channelMask, prunedModel, pruneTarget } from "../defenses/pruning.js";
import { tensor } from "../graph/ir.js";
import { downstreamNodes } from "../graph/transforms.js";
import { loadModel } from "../io/load-model.js";
import { zooCnn } from "../model/archs.js";
import { forwardGraph } from "../model/forward.js";
import { lowerModel } from "../model/lower.js";
import { withNormalization } from "../model/normalize.js";
import { dominatesLogits } from "../model/prunable.js";
import { Session } from "../runtime/session.js";
import { missingPytorchFixtures, pytorchFile, pytorchManifest } from "../test/pytorch-fixtures.js";
import { relError } from "../test/gradcheck.js";
import { mulberry32 } from "../util/random.js";
import { prefixActivations, tailCut, tailModel } from "./tail.js";
import { train } from "./trainer.js";

const rand = mulberry32(11);
const numel = (s: readonly number[]) => s.reduce((p, q) => p * q, 1);

const manifest = pytorchManifest();
if (!manifest) test("tail cut on the PyTorch fixtures", { skip: missingPytorchFixtures }, () => {});
for (const [name, info] of Object.entries(manifest?.models ?? {})) {
  test(`tail cut on PyTorch ${name}: latest dominating point with half the parameters after it, pruned layer inside`, async () => {
    const model = withNormalization(await loadModel(pytorchFile(info.files.opset17)), { mean: manifest!.mean, std: manifest!.std });
    const target = pruneTarget(model);
    const start = prunedModel(model, target, [0, 1]);
    const cut = tailCut(start, target.conv);
    const g = start.graph;
    assert.ok(cut.value !== start.input, "a residual/BN network is cut after its input");
    assert.ok(dominatesLogits(start, cut.value), "every path goes through the cut");
    assert.ok(downstreamNodes(g, cut.value).some((n) => n.outputs.includes(target.conv)), "the pruned layer is in the tail");
    assert.ok(2 * cut.tunedParams >= cut.totalParams && cut.tunedParams < cut.totalParams, `${cut.tunedParams} of ${cut.totalParams} tuned`);
    // No later point qualifies: each later dominating 4-D value either leaves the pruned layer out or has
    // under half the parameters after it.
    const later = downstreamNodes(g, cut.value).map((n) => n.outputs[0]).filter((v) => g.shape(v).length === 4 && dominatesLogits(start, v));
    for (const v of later) {
      const inside = downstreamNodes(g, v).some((n) => n.outputs.includes(target.conv));
      if (!inside) continue;
      const ps = new Set(downstreamNodes(g, v).flatMap((n) => n.inputs));
      const after = start.params.filter((p) => ps.has(p.value)).reduce((s, p) => s + numel(g.staticShape(p.value)), 0);
      assert.ok(2 * after < cut.totalParams, `${v} is later and has ${after} of ${cut.totalParams} after it`);
    }

    // The tail on the prefix's activations gives the whole network's logits.
    const tail = tailModel(start, cut);
    const [c, h, w] = start.inputShape;
    const x = Float32Array.from({ length: 4 * c * h * w }, () => rand());
    const acts = await prefixActivations(start, cut, { x, y: new Int32Array(4), shape: start.inputShape });
    const run = async (m: typeof start, data: Float32Array, shape: readonly number[]) => {
      const s = await Session.create(forwardGraph(m));
      try {
        return (await s.run({ [m.input]: tensor("float32", [4, ...shape], data) }))[m.logits].data as Float32Array;
      } finally {
        await s.release();
      }
    };
    assert.ok(relError(await run(tail, acts.x, acts.shape), await run(start, x, start.inputShape)) < 1e-5);
    assert.equal(tail.params.length, cut.params.length);
  });
}

test("tail training on stored prefix activations equals training the whole network with only the tail trainable", async () => {
  const model = lowerModel(zooCnn({ inputShape: [16, 16, 1], numClasses: 3, seed: 5 }));
  const target = pruneTarget(model);
  const cut = tailCut(model, target.conv);
  assert.ok(cut.value !== model.input && cut.tunedParams < cut.totalParams, "the tiny CNN has a proper tail");
  const n = 12;
  const data = { x: Float32Array.from({ length: n * 256 }, () => rand()), y: Int32Array.from({ length: n }, (_, i) => i % 3), shape: [1, 16, 16] as [number, number, number] };
  const opts = { epochs: 2, batchSize: 4, optimizer: { kind: "adam" as const, lr: 1e-2 }, seed: 3, session: { threads: 1 }, channelMasks: new Map([[target.conv, channelMask(target.channels, [0])]]) };
  const tuned = new Set(cut.params);
  const whole = await train(model, data, { ...opts, trainable: (p) => tuned.has(p.value) });
  const tail = await train(tailModel(model, cut), await prefixActivations(model, cut, data), opts);
  for (const p of model.params) {
    const a = whole.model.graph.initializers.get(p.value)!.data as Float32Array;
    if (!tuned.has(p.value)) continue;
    const b = tail.model.graph.initializers.get(p.value)!.data as Float32Array;
    assert.ok(relError(b, a) < 1e-4, `${p.value}: relative difference ${relError(b, a)}`);
    assert.ok(relError(a, model.graph.initializers.get(p.value)!.data as Float32Array) > 1e-3, `${p.value} was trained`);
  }
});
