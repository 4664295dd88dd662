// npm run bench: forward and forward+input-gradient throughput of the CSAW DeepID net, each with a
// baseline measured in the same run (naive float64 JS forward; forward-only throughput for the gradient).
import { backward } from "../graph/autodiff.js";
import { tensor } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { evaluate as referenceEvaluate } from "../test/reference.js";
import { forwardGraph } from "../model/forward.js";
import { Session } from "../runtime/session.js";
import { oneHot } from "../train/trainer.js";
import { loadDeepId, randomImages, row, timeIt } from "./common.js";
import { benchArgs } from "./args.js";

benchArgs(import.meta.url, {});

const model = await loadDeepId();
const [c, h, w] = model.inputShape;
process.stdout.write(`DeepID (CSAW-HackML sunglasses BadNet), input ${c}x${h}x${w}, ${model.numClasses} classes\n\n`);

// Forward, batch 256.
const fwd = await Session.create(forwardGraph(model));
const B = 256;
const x = tensor("float32", [B, c, h, w], randomImages(B, model.inputShape));
const tFwd = await timeIt(() => fwd.run({ input: x }));
const fwdRate = B / tFwd;

// Baseline: the project's naive float64 JS interpreter (same graph, no onnxruntime).
const nRef = 8;
const xRef = tensor("float32", [nRef, c, h, w], randomImages(nRef, model.inputShape, 2));
const g = forwardGraph(model);
const tRef = await timeIt(() => referenceEvaluate(g, { input: xRef }), { warmup: 1, minRuns: 1, minSeconds: 1 });
const refRate = nRef / tRef;
row("forward, batch 256 (onnxruntime)", `${fwdRate.toFixed(0)} img/s`, `target >= 4000`);
row("forward, naive JS float64 baseline", `${refRate.toFixed(1)} img/s`, `ratio ${(fwdRate / refRate).toFixed(0)}x`);

// Forward + input gradient, batch 64.
const gg = model.graph.clone();
const target = gg.addInput("target", "float32", ["N", model.numClasses]);
const loss = softmaxCrossEntropy(gg, model.logits, target);
const grads = backward(gg, loss, [model.input]);
gg.setOutputs([loss, grads.get(model.input)!]);
const gs = await Session.create(gg);
const Bg = 64;
const xg = tensor("float32", [Bg, c, h, w], randomImages(Bg, model.inputShape, 3));
const tg = tensor("float32", [Bg, model.numClasses], oneHot(Int32Array.from({ length: Bg }, (_, i) => i % model.numClasses), model.numClasses));
const tGrad = await timeIt(() => gs.run({ input: xg, target: tg }));
const gradRate = Bg / tGrad;
const tFwd64 = await timeIt(() => fwd.run({ input: tensor("float32", [Bg, c, h, w], xg.data) }));
row("forward + input gradient, batch 64", `${gradRate.toFixed(0)} img/s`, `target >= 1300`);
row("forward only, batch 64 (same run)", `${(Bg / tFwd64).toFixed(0)} img/s`, `gradient/forward ${(gradRate / (Bg / tFwd64)).toFixed(2)}`);
