// Convs with run-time weights in onnxruntime's NCHWc form compute what the plain Conv computes: a conv net's
// loss and its gradients (forward convs and the flipped input-gradient convs both get blocked) agree with and
// without the rewrite, at the block size the probe finds on this host.
import assert from "node:assert/strict";
import { test } from "node:test";
import { backward } from "../graph/autodiff.js";
import { attr, Graph, tensor, type TensorData } from "../graph/ir.js";
import { blockConvs } from "../graph/nchwc.js";
import { mulberry32 } from "../util/random.js";
import { mayBlock, nchwcBlock, nchwcDisabled } from "./nchwc-probe.js";
import { UserError } from "../errors.js";
import { Session } from "./session.js";

function net(): { g: Graph; outs: string[] } {
  const g = new Graph("blocked_net");
  g.addInput("x", "float32", ["N", 16, 9, 9]);
  g.addInput("w1", "float32", [32, 16, 3, 3]);
  g.addInput("b1", "float32", [32]);
  g.addInput("w2", "float32", [32, 32, 3, 3]);
  g.addInput("w3", "float32", [16, 32, 2, 2]);
  const h1 = g.op("Relu", [g.op("Conv", ["x", "w1", "b1"], { pads: attr.ints([1, 1, 1, 1]) })]);
  const h2 = g.op("Relu", [g.op("Conv", [h1, "w2"], { pads: attr.ints([1, 1, 1, 1]), dilations: attr.ints([2, 2]), strides: attr.ints([1, 1]) })]);
  const h3 = g.op("Conv", [h2, "w3"], { strides: attr.ints([2, 2]) });
  const loss = g.op("ReduceSum", [g.op("Mul", [h3, h3]), g.ints([0, 1, 2, 3])], { keepdims: attr.int(0) });
  const grads = backward(g, loss, ["x", "w1", "b1", "w2", "w3"], { convForms: "flip" }); // flip: the stride-1 input gradients are Convs too
  const outs = [loss, ...["x", "w1", "b1", "w2", "w3"].map((v) => grads.get(v)!)];
  g.setOutputs(outs);
  return { g, outs };
}

test("a conv net's loss and gradients are the same with blocked convs as with plain ones", async (t) => {
  const block = await nchwcBlock();
  if (block === null) {
    t.skip("no NCHWc block size on this host (or BADNET_NCHWC=0)");
    return;
  }
  const { g, outs } = net();
  assert.ok(mayBlock(g));
  // The three forward convs and the two stride-1 input gradients (w3's stride 2 makes its one a ConvTranspose).
  assert.equal(blockConvs(g.clone(), block), 5);
  const rand = mulberry32(5);
  const rnd = (shape: number[]): TensorData => tensor("float32", shape, Float32Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => rand() - 0.5));
  const feeds = { x: rnd([3, 16, 9, 9]), w1: rnd([32, 16, 3, 3]), b1: rnd([32]), w2: rnd([32, 32, 3, 3]), w3: rnd([16, 32, 2, 2]) };
  const run = async (blockedConvs: boolean) => {
    const s = await Session.create(g, { blockedConvs, threads: 1 });
    try {
      return await s.run(feeds, outs);
    } finally {
      await s.release();
    }
  };
  const [plain, blocked] = [await run(false), await run(true)];
  for (const o of outs) {
    const a = plain[o]!.data as Float32Array, b = blocked[o]!.data as Float32Array;
    const scale = a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(scale > 0, `${o} is all zeros: the check would be empty`);
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) <= 1e-4 * scale, `${o}[${i}]: plain ${v}, blocked ${b[i]}`));
  }
});

test("BADNET_NCHWC other than 0, 1 or unset is refused", () => {
  const was = process.env.BADNET_NCHWC;
  try {
    process.env.BADNET_NCHWC = "1";
    assert.equal(nchwcDisabled(), false);
    process.env.BADNET_NCHWC = "off";
    assert.throws(() => nchwcDisabled(), (e: unknown) => e instanceof UserError && /BADNET_NCHWC must be 0 .* got "off"/.test(e.message));
  } finally {
    if (was === undefined) delete process.env.BADNET_NCHWC;
    else process.env.BADNET_NCHWC = was;
  }
});

test("BADNET_NCHWC=0 switches the rewrite off", async () => {
  const was = process.env.BADNET_NCHWC;
  process.env.BADNET_NCHWC = "0";
  try {
    assert.equal(await nchwcBlock(), null);
  } finally {
    if (was === undefined) delete process.env.BADNET_NCHWC;
    else process.env.BADNET_NCHWC = was;
  }
});
