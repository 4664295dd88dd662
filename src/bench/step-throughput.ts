// Throughput of the three graphs every defense is built from, at one batch size: the forward pass, forward +
// input gradient (trigger inversion, adversarial search) and a full training step (fine-tuning, unlearning),
// each with both Conv gradient forms ("fast" and "plain", see graph/autodiff.ts) so one run shows the gain.
import { backward, type ConvGradForms } from "../graph/autodiff.js";
import { tensor, type TensorData } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { buildStepGraph, oneHot, StepRunner } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";

export interface StepFigures {
  what: "forward" | "forward+input-grad" | "train step";
  forms: ConvGradForms | "—";
  imagesPerSecond: number;
}

/** Runs `step` once to warm up, then until `seconds` have passed (at least `minRuns` times); images/s. */
async function timeRuns(step: () => Promise<unknown>, batch: number, seconds: number, minRuns: number): Promise<number> {
  await step();
  const t0 = performance.now();
  let runs = 0;
  while (runs < minRuns || performance.now() - t0 < seconds * 1000) {
    await step();
    runs++;
  }
  return (batch * runs) / ((performance.now() - t0) / 1000);
}

function randomBatch(model: Model, batch: number): { x: TensorData; target: TensorData } {
  const rand = mulberry32(7);
  const [c, h, w] = model.inputShape;
  const x = Float32Array.from({ length: batch * c * h * w }, () => rand());
  const y = Int32Array.from({ length: batch }, () => Math.floor(rand() * model.numClasses));
  return { x: tensor("float32", [batch, c, h, w], x), target: tensor("float32", [batch, model.numClasses], oneHot(y, model.numClasses)) };
}

async function inputGradThroughput(model: Model, forms: ConvGradForms, x: TensorData, target: TensorData, seconds: number): Promise<number> {
  const g = model.graph.clone(`${model.name}_input_grad`);
  const t = g.addInput("target", "float32", ["N", model.numClasses]);
  const loss = softmaxCrossEntropy(g, model.logits, t);
  const dx = backward(g, loss, [model.input], { convForms: forms }).get(model.input)!;
  g.setOutputs([loss, dx]);
  const s = await Session.create(g);
  try {
    return await timeRuns(() => s.run({ [model.input]: x, [t]: target }), x.shape[0] as number, seconds, 3);
  } finally {
    await s.release();
  }
}

async function trainThroughput(model: Model, forms: ConvGradForms, x: TensorData, target: TensorData, seconds: number): Promise<number> {
  const runner = await StepRunner.create(buildStepGraph(model, { optimizer: { kind: "adam", lr: 1e-4 }, convForms: forms }));
  try {
    return await timeRuns(() => runner.run(x, target, 1e-4), x.shape[0] as number, seconds, 3);
  } finally {
    await runner.release();
  }
}

/** Forward, then forward+input-grad and a train step with the plain forms first and the fast ones after. */
export async function stepThroughput(model: Model, batch = 32, seconds = 5): Promise<StepFigures[]> {
  const { x, target } = randomBatch(model, batch);
  const out: StepFigures[] = [];
  const fwd = await Session.create(model.graph);
  try {
    out.push({ what: "forward", forms: "—", imagesPerSecond: await timeRuns(() => fwd.run({ [model.input]: x }), batch, seconds, 3) });
  } finally {
    await fwd.release();
  }
  for (const forms of ["plain", "fast"] as const) out.push({ what: "forward+input-grad", forms, imagesPerSecond: await inputGradThroughput(model, forms, x, target, seconds) });
  for (const forms of ["plain", "fast"] as const) out.push({ what: "train step", forms, imagesPerSecond: await trainThroughput(model, forms, x, target, seconds) });
  return out;
}
