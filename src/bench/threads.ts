// One intra-op thread against every core, per graph and batch size: the forward pass, the training step and
// Neural Cleanse's step of the zoo's Fashion-MNIST net, the DeepID net and PreAct-ResNet18 (width 8, and full
// width when its fixtures are built), each pair of sessions run alternately so both see the same load, with the
// thread count runtime/threads.ts's rule gives each graph (the measurements behind that rule).
//   node dist/bench/threads.js [--rounds 4] [--only fmnist,deepid,preact8,preact64]
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { tensor, type TensorData } from "../graph/ir.js";
import { forwardGraph } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { withNormalization } from "../model/normalize.js";
import { loadOnnxModel } from "../onnx/import.js";
import { loadModel } from "../io/load-model.js";
import { Session, sessionSettings } from "../runtime/session.js";
import { graphMacs } from "../defenses/nc-budget.js";
import { buildStepGraph, oneHot, StepRunner } from "../train/trainer.js";
import { threadsForWork } from "../runtime/threads.js";
import { buildStepGraph as ncStepGraph } from "../defenses/neural-cleanse.js";
import { labelSlots } from "../defenses/nc-budget.js";
import { largestActivation } from "../runtime/cache-batch.js";
import { benchArgs } from "./args.js";
import { loadDeepId, randomImages } from "./common.js";

const { values } = benchArgs(import.meta.url, { options: { rounds: { type: "string" }, only: { type: "string" } } });
const rounds = Number(values.rounds ?? 4);
const only = values.only?.split(",");
const all = sessionSettings().threads;

async function preact(dir: string): Promise<Model | undefined> {
  if (!existsSync(join(dir, "manifest.json"))) return undefined;
  const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as { mean: number[]; std: number[] };
  return withNormalization(await loadOnnxModel(join(dir, "preact_resnet18_opset17.onnx")), { mean: m.mean, std: m.std });
}

const models: [string, () => Promise<Model | undefined>][] = [
  ["fmnist", async () => (existsSync("examples/badnet-fmnist/model.h5") ? loadModel("examples/badnet-fmnist/model.h5") : undefined)],
  ["deepid", () => loadDeepId()],
  ["preact8", () => preact("fixtures/pytorch")],
  ["preact64", () => preact(process.env.BADNET_PYTORCH_FULL ?? ".bench/pytorch-full")],
];

/** Milliseconds per call of each function, alternating (the order swapped every round) after one warm-up each. */
async function alternate(fns: (() => Promise<unknown>)[]): Promise<number[]> {
  for (const f of fns) await f();
  const spent = fns.map(() => 0);
  for (let r = 0; r < rounds; r++)
    for (let j = 0; j < fns.length; j++) {
      const i = r % 2 ? fns.length - 1 - j : j;
      const t = performance.now();
      await fns[i]!();
      spent[i]! += performance.now() - t;
    }
  return spent.map((ms) => ms / rounds);
}

const say = (s: string) => process.stdout.write(s + "\n");
say(`threads: 1 against ${all} (every core), ms per run, ${rounds} alternating rounds; ratio = 1 thread / ${all} threads`);
say("| model | graph | batch | nodes | forward MMAC per run | per node | 1 thread | all | ratio | the rule's threads |");
say("|---|---|---|---|---|---|---|---|---|---|");
/** The row's work columns: forward MACs of the run's images, per node, and the thread count the rule gives (forward graphs: every core). */
const work = (macsPerRun: number, nodes: number) =>
  `${(macsPerRun / 1e6).toFixed(0)} | ${(macsPerRun / nodes / 1e6).toFixed(2)}`;
const rule = (macsPerRun: number, nodes: number, gradient: boolean) => (gradient ? String(threadsForWork({ macsPerRun }, nodes, all)) : `${all} (forward)`);
for (const [name, load] of models) {
  if (only && !only.includes(name)) continue;
  const model = await load();
  if (!model) {
    say(`| ${name} | (fixtures not built: skipped) | | | | | | | | |`);
    continue;
  }
  const macs = graphMacs(model.graph);
  const [c, h, w] = model.inputShape;
  for (const batch of [64, 256, 1024]) {
    const x: TensorData = tensor("float32", [batch, c, h, w], randomImages(batch, model.inputShape));
    const g = forwardGraph(model);
    const s = [await Session.create(g, { threads: 1 }), await Session.create(g, { threads: all })];
    try {
      const [one, many] = await alternate(s.map((sess) => () => sess.run({ [model.input]: x })));
      say(`| ${name} | forward | ${batch} | ${g.nodes.length} | ${work(macs * batch, g.nodes.length)} | ${one!.toFixed(1)} | ${many!.toFixed(1)} | ${(one! / many!).toFixed(2)} | ${rule(macs * batch, g.nodes.length, false)} |`);
    } finally {
      for (const sess of s) await sess.release();
    }
  }
  for (const batch of name === "preact64" ? [32, 64] : [32, 64, 256]) {
    const x: TensorData = tensor("float32", [batch, c, h, w], randomImages(batch, model.inputShape));
    const y = Int32Array.from({ length: batch }, (_, i) => i % model.numClasses);
    const target = tensor("float32", [batch, model.numClasses], oneHot(y, model.numClasses));
    const step = buildStepGraph(model, { optimizer: { kind: "adam", lr: 1e-5 } });
    const r = [await StepRunner.create(step, { threads: 1 }), await StepRunner.create(step, { threads: all })];
    try {
      const [one, many] = await alternate(r.map((run) => () => run.run(x, target, 1e-5)));
      say(`| ${name} | train step | ${batch} | ${step.graph.nodes.length} | ${work(macs * batch, step.graph.nodes.length)} | ${one!.toFixed(1)} | ${many!.toFixed(1)} | ${(one! / many!).toFixed(2)} | ${rule(macs * batch, step.graph.nodes.length, true)} |`);
    } finally {
      for (const run of r) await run.release();
    }
  }
  // Neural Cleanse's step (mask family): L label slots of B images each, L as the scanner picks it.
  for (const batch of [8, 32]) {
    const slots = labelSlots(largestActivation(model.graph), batch, 32);
    const step = ncStepGraph(model, batch, 1, { family: "mask" });
    const L = slots;
    const z = (shape: number[]) => tensor("float32", shape, new Float32Array(shape.reduce((p, q) => p * q, 1)));
    const feeds: Record<string, TensorData> = {
      nc_a: z([L, 1, h, w]), nc_b: z([L, c, h, w]), nc_ma: z([L, 1, h, w]), nc_va: z([L, 1, h, w]), nc_mb: z([L, c, h, w]), nc_vb: z([L, c, h, w]),
      nc_x: tensor("float32", [L, batch, c, h, w], randomImages(L * batch, model.inputShape)),
      nc_target: tensor("float32", [L, model.numClasses], oneHot(Int32Array.from({ length: L }, (_, i) => i % model.numClasses), model.numClasses)),
      nc_lambda: tensor("float32", [L], new Float32Array(L).fill(1e-3)), nc_lr: tensor("float32", [L], new Float32Array(L).fill(0.1)),
    };
    const s = [await Session.create(step.graph, { threads: 1 }), await Session.create(step.graph, { threads: all })];
    try {
      const [one, many] = await alternate(s.map((sess) => () => sess.run(feeds)));
      say(`| ${name} | NC step (${L} labels) | ${batch} | ${step.graph.nodes.length} | ${work(macs * batch * L, step.graph.nodes.length)} | ${one!.toFixed(1)} | ${many!.toFixed(1)} | ${(one! / many!).toFixed(2)} | ${rule(macs * batch * L, step.graph.nodes.length, true)} |`);
    } finally {
      for (const sess of s) await sess.release();
    }
  }
}
