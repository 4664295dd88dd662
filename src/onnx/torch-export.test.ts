// Real PyTorch 1.13 exports (src/onnx/testdata/make_torch_tiny.py): depthwise and grouped convs, BatchNorm
// kept as a node, zero biases shared through Identity. Import, forward against PyTorch's own logits, parameter
// counts against PyTorch's, gradients against float64 finite differences, and a training step.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { backward } from "../graph/autodiff.js";
import { numericGradient, relError } from "../test/gradcheck.js";
import { attr, tensor, type TensorData } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { forwardGraph } from "../model/forward.js";
import { summarize } from "../model/summary.js";
import { pruneTarget, prunedModel } from "../defenses/pruning.js";
import { Session } from "../runtime/session.js";
import { ROOT } from "../test/fixtures.js";
import { train } from "../train/trainer.js";
import { loadOnnxModel } from "./import.js";

const DATA = join(ROOT, "src/onnx/testdata");
const ref = JSON.parse(readFileSync(join(DATA, "tiny_mobile.json"), "utf8")) as {
  input_shape: number[];
  input: number[];
  logits: number[];
  trainable_params: number;
};
const input = tensor("float32", ref.input_shape, Float32Array.from(ref.input));

for (const opset of [11, 17]) {
  const file = join(DATA, `tiny_mobile_opset${opset}.onnx`);

  test(`PyTorch export (opset ${opset}): logits match PyTorch, parameters counted per layer`, async () => {
    const m = await loadOnnxModel(file);
    const s = await Session.create(forwardGraph(m));
    let out: Record<string, TensorData>;
    try {
      out = await s.run({ input });
    } finally {
      await s.release();
    }
    const got = out[m.logits].data as Float32Array;
    assert.equal(got.length, ref.logits.length);
    for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i] - ref.logits[i]) <= 1e-4, `logit ${i}: ${got[i]} vs PyTorch ${ref.logits[i]}`);

    const sum = summarize(m);
    assert.equal(sum.totalParams, ref.trainable_params, "trainable parameters as PyTorch counts them");
    for (const l of sum.layers) if (l.className === "Conv" || l.className === "Gemm" || l.className === "BatchNormalization") assert.ok(l.params > 0, `${l.name} has parameters`);
    const values = m.params.map((p) => p.value);
    assert.equal(new Set(values).size, values.length, "each parameter belongs to one layer");
    assert.ok(!values.some((v) => v.includes("running")), "BatchNorm statistics are not trainable");
  });

  test(`PyTorch export (opset ${opset}): gradients through depthwise, grouped conv and BatchNorm match finite differences`, async () => {
    const m = await loadOnnxModel(file);
    const g = m.graph.clone();
    const r = g.constant(tensor("float32", [2, 5], Float32Array.from({ length: 10 }, (_, i) => Math.sin(i + 1))));
    const loss = g.op("ReduceSum", [g.op("Mul", [m.logits, r])], { keepdims: attr.int(0) });
    const fwd = g.clone();
    fwd.setOutputs([loss]);
    const bn = g.nodes.find((n) => n.op === "BatchNormalization")!;
    const dw = g.nodes.find((n) => n.op === "Conv" && n.attrs.group?.kind === "int" && n.attrs.group.value === 8)!;
    const wrt = [m.input, dw.inputs[1], bn.inputs[1], bn.inputs[2]];
    const grads = backward(g, loss, wrt);
    g.setOutputs(wrt.map((w) => grads.get(w)!));
    const s = await Session.create(g);
    let out: Record<string, TensorData>;
    try {
      out = await s.run({ input });
    } finally {
      await s.release();
    }
    for (const w of wrt) {
      const analytic = out[grads.get(w)!].data as Float32Array;
      const idx = Array.from({ length: Math.min(24, analytic.length) }, (_, k) => Math.floor((k * analytic.length) / 24));
      const numeric = numericGradient(fwd, { input }, loss, w, { indices: idx });
      const err = relError(idx.map((i) => analytic[i]), numeric);
      assert.ok(err <= 1e-3, `d/d${w}: relative error ${err.toExponential(2)}`);
    }
  });

  test(`PyTorch export (opset ${opset}): fine-tuning (batch or frozen BatchNorm statistics) and pruning run`, async () => {
    const m = await loadOnnxModel(file);
    const data = { x: input.data as Float32Array, y: Int32Array.of(1, 3), shape: [3, 12, 12] as [number, number, number] };
    const bn = m.graph.nodes.find((n) => n.op === "BatchNormalization")!;
    const runningMean = (x: typeof m) => Array.from(x.graph.initializers.get(bn.inputs[3])!.data as Float32Array);
    for (const batchNorm of ["batch", "frozen"] as const) {
      const { model, history } = await train(m, data, { epochs: 2, batchSize: 2, optimizer: { kind: "adam", lr: 1e-2 }, seed: 0, batchNorm });
      assert.ok(history.every((h) => Number.isFinite(h.loss)), batchNorm);
      assert.ok(history[1].loss < history[0].loss, `${batchNorm}: the loss falls`);
      if (batchNorm === "frozen") assert.deepEqual(runningMean(model), runningMean(m), "frozen: running mean unchanged");
      else {
        assert.notDeepEqual(runningMean(model), runningMean(m), "batch: running mean re-estimated");
        assert.ok(runningMean(model).every(Number.isFinite));
      }
    }

    // The last conv reads the bias PyTorch shared through Identity; pruning it leaves the other conv's copy alone.
    const t = pruneTarget(m, "/pw2/Conv");
    assert.ok(t.bias);
    const pw1 = m.graph.nodes.find((n) => n.name === "/pw1/Conv")!;
    assert.notEqual(pw1.inputs[2], t.bias);
    const p = prunedModel(m, t, [0, 1, 2]);
    assert.deepEqual(Array.from((p.graph.initializers.get(t.kernel!)!.data as Float32Array).subarray(0, 3 * 16)), new Array(3 * 16).fill(0));
    assert.deepEqual(p.graph.initializers.get(pw1.inputs[1])!.data, m.graph.initializers.get(pw1.inputs[1])!.data);
  });
}

test("softmax cross-entropy gradient through a PyTorch export reaches every trainable parameter", async () => {
  const m = await loadOnnxModel(join(DATA, "tiny_mobile_opset17.onnx"));
  const g = m.graph.clone();
  const target = g.addInput("target", "float32", ["N", 5]);
  const loss = softmaxCrossEntropy(g, m.logits, target);
  const grads = backward(g, loss, m.params.map((p) => p.value));
  assert.equal(grads.size, m.params.length);
});
