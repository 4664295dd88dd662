// The input gradient of the real CSAW DeepID network (onnxruntime, float32, our autodiff) against central
// finite differences of the float64 JS reference interpreter: two independent computations.
import assert from "node:assert/strict";
import { test } from "node:test";
import { backward } from "../graph/autodiff.js";
import { numericGradient } from "../test/gradcheck.js";
import { tensor } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { decodeImage, toNchw } from "../io/images.js";
import { loadModel } from "../io/load-model.js";
import { Session } from "../runtime/session.js";
import { fixture } from "../test/fixtures.js";
import { oneHot } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";

test("DeepID input gradient matches float64 finite differences", async () => {
  const model = await loadModel(fixture("csaw2020/models/sunglasses_bd_weights.h5"), { arch: "deepid" });
  const x = toNchw(decodeImage(fixture("csaw2020/images/clean_0_label43.png")), 255);
  const [c, h, w] = model.inputShape;
  const feeds = {
    input: tensor("float32", [1, c, h, w], x),
    target: tensor("float32", [1, model.numClasses], oneHot(Int32Array.of(0), model.numClasses)),
  };
  const g = model.graph.clone();
  g.addInput("target", "float32", ["N", model.numClasses]);
  const loss = softmaxCrossEntropy(g, model.logits, "target");
  const fwd = g.clone();
  fwd.setOutputs([loss]);
  const grads = backward(g, loss, ["input"]);
  g.setOutputs([grads.get("input")!]);
  const s = await Session.create(g);
  const analytic = (await s.run(feeds))[grads.get("input")!].data as Float32Array;
  await s.release();

  // Target label 0 (the backdoor target) on a clean face: a large loss with a well-scaled gradient.
  // The 8 largest-magnitude entries plus 8 random ones.
  const byMag = Array.from(analytic.keys()).sort((a, b) => Math.abs(analytic[b]) - Math.abs(analytic[a])).slice(0, 8);
  const rand = mulberry32(7);
  const picks = [...byMag, ...Array.from({ length: 8 }, () => Math.floor(rand() * analytic.length))];
  const numeric = numericGradient(fwd, feeds, loss, "input", { indices: picks });
  const scale = Math.max(...byMag.map((i) => Math.abs(analytic[i])));
  picks.forEach((idx, k) => {
    const err = Math.abs(analytic[idx] - numeric[k]) / scale;
    assert.ok(err <= 1e-3, `input[${idx}]: autodiff ${analytic[idx]}, finite differences ${numeric[k]}`);
  });
  assert.ok(scale > 0, "gradient is not identically zero");
});
