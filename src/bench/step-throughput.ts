// Throughput of the three graphs every defense is built from, at one batch size: the forward pass, forward +
// input gradient (trigger inversion, adversarial search) and a full training step (fine-tuning, unlearning).
// The input-gradient graph runs with the plain, fast and flip Conv gradient forms (graph/autodiff.ts; direct
// differs from flip only in weight gradients); the train step in the variants of STEP_VARIANTS (forms, and
// where the optimizer update runs: train/trainer.ts, UpdatePlace). The variants of one graph run alternately, so one run shows the gains under
// the same load.
import { backward, type ConvGradForms } from "../graph/autodiff.js";
import { tensor, type TensorData } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { buildStepGraph, oneHot, StepRunner, type UpdatePlace } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { timeIt } from "./common.js";

export interface StepFigures {
  what: "forward" | "forward+input-grad" | "train step";
  forms: ConvGradForms | "—";
  /** Where the train step's optimizer update runs ("—" for the other graphs). */
  update: UpdatePlace | "—";
  imagesPerSecond: number;
}

/**
 * Steps timed alternately (one run of each per round, after a warm-up of each) until each has run for
 * `seconds`: on a shared machine the load drifts, and interleaving (the order rotating) gives all the same conditions. Images/s each.
 */
async function timeAlternately(steps: (() => Promise<unknown>)[], batch: number, seconds: number, minRuns: number): Promise<number[]> {
  for (const f of steps) await f();
  const spent = steps.map(() => 0);
  let runs = 0;
  while (runs < minRuns || Math.min(...spent) < seconds * 1000) {
    // Each round starts with a different step: the first of a round measured slower (threads waking up).
    for (let k = 0; k < steps.length; k++) {
      const i = (k + runs) % steps.length;
      const t = performance.now();
      await steps[i]();
      spent[i] += performance.now() - t;
    }
    runs++;
  }
  return spent.map((ms) => (batch * runs) / (ms / 1000));
}

function randomBatch(model: Model, batch: number): { x: TensorData; target: TensorData } {
  const rand = mulberry32(7);
  const [c, h, w] = model.inputShape;
  const x = Float32Array.from({ length: batch * c * h * w }, () => rand());
  const y = Int32Array.from({ length: batch }, () => Math.floor(rand() * model.numClasses));
  return { x: tensor("float32", [batch, c, h, w], x), target: tensor("float32", [batch, model.numClasses], oneHot(y, model.numClasses)) };
}

async function inputGradSession(model: Model, forms: ConvGradForms): Promise<{ session: Session; target: string }> {
  const g = model.graph.clone(`${model.name}_input_grad`);
  const target = g.addInput("target", "float32", ["N", model.numClasses]);
  const loss = softmaxCrossEntropy(g, model.logits, target);
  const dx = backward(g, loss, [model.input], { convForms: forms }).get(model.input)!;
  g.setOutputs([loss, dx]);
  return { session: await Session.create(g), target };
}

const FORMS: ConvGradForms[] = ["plain", "fast", "flip"];
/** The train-step variants: plain, flip (the former default) and direct forms with the update in the graph, and the default (direct, host update). */
export const STEP_VARIANTS: { forms: ConvGradForms; update: UpdatePlace }[] = [
  { forms: "plain", update: "graph" },
  { forms: "flip", update: "graph" },
  { forms: "direct", update: "graph" },
  { forms: "direct", update: "host" },
];

/** Forward, then forward+input-grad with each Conv gradient form and a train step in each variant, interleaved. */
export async function stepThroughput(model: Model, batch = 32, seconds = 5): Promise<StepFigures[]> {
  const { x, target } = randomBatch(model, batch);
  const out: StepFigures[] = [];
  const fwd = await Session.create(model.graph);
  try {
    out.push({ what: "forward", forms: "—", update: "—", imagesPerSecond: batch / (await timeIt(() => fwd.run({ [model.input]: x }), { warmup: 1, minSeconds: seconds, minRuns: 3 })) });
  } finally {
    await fwd.release();
  }
  const ig = await Promise.all(FORMS.map((f) => inputGradSession(model, f)));
  try {
    const rates = await timeAlternately(ig.map((s) => () => s.session.run({ [model.input]: x, [s.target]: target })), batch, seconds, 3);
    FORMS.forEach((forms, i) => out.push({ what: "forward+input-grad", forms, update: "—", imagesPerSecond: rates[i] }));
  } finally {
    for (const s of ig) await s.session.release();
  }
  const optimizer = { kind: "adam" as const, lr: 1e-4 };
  const runners = await Promise.all(STEP_VARIANTS.map((v) => StepRunner.create(buildStepGraph(model, { optimizer, convForms: v.forms, update: v.update }))));
  try {
    const rates = await timeAlternately(runners.map((r) => () => r.run(x, target, 1e-4)), batch, seconds, 3);
    STEP_VARIANTS.forEach((v, i) => out.push({ what: "train step", ...v, imagesPerSecond: rates[i] }));
  } finally {
    for (const r of runners) await r.release();
  }
  return out;
}
