// Training throughput: one epoch of the zoo CNN on Fashion-MNIST (55,000 images) and one epoch of DeepID on
// 2,000 random 55x47x3 images, each next to the forward-only throughput of the same model, batch size and
// images in the same run (the baseline: a training step costs forward + backward + update, ~3x a forward).
// DeepID is also trained by PyTorch (scripts/bench/torch-train-deepid.py, Debian's python3-torch), interleaved
// with our epochs (with onnxruntime's intra-op spinning off, the default, and on): best epoch of each, ratio. The
// same rounds also train with the former default step (flip Conv gradient forms, optimizer update in the graph).
// The zoo CNN's epoch is also run with the training step's convs left plain (SessionOptions.blockedConvs false,
// graph/nchwc.ts), and, where the full-width PyTorch fixtures are built (.bench/pytorch-full, or
// $BADNET_PYTORCH_FULL; scripts/pytorch/build_fixtures.py --full), fine-prune's training step of PreAct-ResNet18
// (BatchNorms put back as fine-prune does, batch 64) is timed blocked, plain and in PyTorch
// (scripts/bench/torch-step-preact.py), interleaved, best step of each.
// Run: node dist/bench/train-epoch.js [--zoo-images N] [--deepid-images N] [--rounds R] [--threads T] [--preact-steps S]
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { tensor } from "../graph/ir.js";
import { loadFashionMnistRaw } from "../io/fashion-mnist.js";
import { ARCHS, initWeights } from "../model/archs.js";
import { forwardGraph } from "../model/forward.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { Session, sessionSettings, type SessionOptions } from "../runtime/session.js";
import { buildStepGraph, oneHot, StepRunner, train, type TrainData, type TrainOptions } from "../train/trainer.js";
import { prepareBatchNorm } from "../train/batch-norm-training.js";
import { memoryDataset } from "../io/dataset.js";
import { loadOnnxModel } from "../onnx/import.js";
import { withNormalization } from "../model/normalize.js";
import { gradientWork } from "../runtime/threads.js";
import { mulberry32 } from "../util/random.js";
import { zooNet } from "../zoo/build.js";
import { randomImages, row } from "./common.js";
import { benchArgs } from "./args.js";

const { values } = benchArgs(import.meta.url, {
  options: { "zoo-images": { type: "string" }, "deepid-images": { type: "string" }, rounds: { type: "string" }, threads: { type: "string" }, "preact-steps": { type: "string" } },
});
const zooImages = Number(values["zoo-images"] ?? 55_000);
const deepidImages = Number(values["deepid-images"] ?? 2_000);
const rounds = Number(values.rounds ?? 2);
const preactSteps = Number(values["preact-steps"] ?? 4);
const threads = sessionSettings(values.threads ? { threads: Number(values.threads) } : {}).threads;

/** Seconds for one pass of forward-only inference over all images at the given batch size. */
async function forwardSeconds(model: Model, data: TrainData, bs: number): Promise<number> {
  const s = await Session.create(forwardGraph(model));
  const [c, h, w] = data.shape;
  const per = c * h * w;
  const n = data.y.length;
  await s.run({ input: tensor("float32", [Math.min(bs, n), c, h, w], data.x.slice(0, Math.min(bs, n) * per)) }); // warm-up
  const t0 = performance.now();
  for (let start = 0; start < n; start += bs) {
    const count = Math.min(bs, n - start);
    await s.run({ input: tensor("float32", [count, c, h, w], data.x.slice(start * per, (start + count) * per)) });
  }
  const sec = (performance.now() - t0) / 1000;
  await s.release();
  return sec;
}

/** One training epoch; returns its seconds (graph build and session creation excluded). */
async function epochSeconds(model: Model, data: TrainData, bs: number, session: SessionOptions = {}, step: Pick<TrainOptions, "convForms" | "update"> = {}): Promise<number> {
  let sec = 0;
  await train(model, data, { epochs: 1, batchSize: bs, optimizer: { kind: "adam", lr: 1e-3 }, seed: 0, session, ...step, onEpoch: (s) => void (sec = s.seconds) });
  return sec;
}

async function bench(label: string, model: Model, data: TrainData, bs: number, plainToo = false): Promise<void> {
  const n = data.y.length;
  const t0 = performance.now();
  const sec = await epochSeconds(model, data, bs, { threads });
  const total = (performance.now() - t0) / 1000;
  const fwd = await forwardSeconds(model, data, bs);
  row(`${label}: one training epoch`, `${sec.toFixed(1)} s`, `${(n / sec).toFixed(0)} img/s (incl. graph build: ${total.toFixed(1)} s)`);
  row(`${label}: forward only, same batches`, `${fwd.toFixed(1)} s`, `${(n / fwd).toFixed(0)} img/s; train/forward throughput ${(fwd / sec).toFixed(2)}`);
  if (plainToo) {
    const plain = await epochSeconds(model, data, bs, { threads, blockedConvs: false });
    row(`${label}: one epoch, convs left plain`, `${plain.toFixed(1)} s`, `blocked (NCHWc) convs ${(plain / sec).toFixed(2)}× as fast`);
  }
}

const here = dirname(fileURLToPath(import.meta.url));
const TORCH_SCRIPT = resolve(here, "../../scripts/bench/torch-train-deepid.py");
const PYTHON = "/usr/bin/python3";

/** Why PyTorch cannot be run here, or null when it can. */
function torchMissing(): string | null {
  if (!existsSync(PYTHON)) return `${PYTHON} not found`;
  if (!existsSync(TORCH_SCRIPT)) return `${TORCH_SCRIPT} not found`;
  const r = spawnSync(PYTHON, ["-c", "import torch"], { encoding: "utf8" });
  return r.status === 0 ? null : "python3-torch is not installed (apt-get install python3-torch)";
}

/**
 * Images per second of one PyTorch training epoch of DeepID (same images count, batch, threads). `passive`
 * sets OMP_WAIT_POLICY=PASSIVE, OpenMP's counterpart of our spinning off.
 */
function torchEpoch(images: number, bs: number, passive: boolean): number {
  const env = { ...process.env, ...(passive ? { OMP_WAIT_POLICY: "PASSIVE" } : {}) };
  return torchJson<{ imagesPerSecond: number }>(TORCH_SCRIPT, [images, bs, threads], env).imagesPerSecond;
}

/** Runs one of the PyTorch yardstick scripts and returns the JSON line it prints last. */
function torchJson<T>(script: string, args: number[], env: NodeJS.ProcessEnv = process.env): T {
  const r = spawnSync(PYTHON, [script, ...args.map(String)], { encoding: "utf8", env });
  if (r.status !== 0) throw new Error(`PyTorch bench failed: ${r.stderr.trim().split("\n").at(-1)}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as T;
}

/** DeepID epochs, ours (spinning off and on) and PyTorch's, interleaved `rounds` times; best of each. */
async function versusTorch(model: Model, data: TrainData, bs: number): Promise<void> {
  const n = data.y.length;
  const missing = torchMissing();
  if (missing) process.stdout.write(`PyTorch comparison skipped: ${missing}\n`);
  const best = { off: 0, on: 0, torch: 0, torchPassive: 0, former: 0 };
  for (let r = 0; r < rounds; r++) {
    best.off = Math.max(best.off, n / (await epochSeconds(model, data, bs, { threads, spinning: false })));
    best.former = Math.max(best.former, n / (await epochSeconds(model, data, bs, { threads, spinning: false }, { convForms: "flip", update: "graph" })));
    if (!missing) best.torch = Math.max(best.torch, torchEpoch(n, bs, false));
    best.on = Math.max(best.on, n / (await epochSeconds(model, data, bs, { threads, spinning: true })));
    if (!missing) best.torchPassive = Math.max(best.torchPassive, torchEpoch(n, bs, true));
  }
  const note = `best of ${rounds} interleaved epochs, ${threads} threads`;
  row("DeepID: ours, intra-op spinning off", `${best.off.toFixed(0)} img/s`, note);
  row("DeepID: ours, former default step", `${best.former.toFixed(0)} img/s`, `flip forms, update in the graph; the default is ${(best.off / best.former).toFixed(2)}× it`);
  row("DeepID: ours, intra-op spinning on", `${best.on.toFixed(0)} img/s`, `spinning off/on ${(best.off / best.on).toFixed(2)}`);
  if (!missing) {
    row("DeepID: PyTorch (CPU, same batches)", `${best.torch.toFixed(0)} img/s`, note);
    row("DeepID: PyTorch, OMP_WAIT_POLICY=PASSIVE", `${best.torchPassive.toFixed(0)} img/s`, note);
    row("DeepID: ours / PyTorch, best of each", `${(Math.max(best.off, best.on) / Math.max(best.torch, best.torchPassive)).toFixed(2)}`, "> 1: we train faster");
  }
}

// Zoo CNN on Fashion-MNIST, batch 128 as in the zoo build (--zoo-images 0 skips it).
if (zooImages > 0) {
  const raw = loadFashionMnistRaw("train");
  const n = Math.min(zooImages, raw.shape[0]);
  const fm: TrainData = { x: new Float32Array(n * 784), y: raw.labels!.slice(0, n), shape: [1, 28, 28] };
  for (let i = 0; i < fm.x.length; i++) fm.x[i] = raw.pixels[i]! / 255;
  const zoo = lowerModel(zooNet({ inputShape: [28, 28, 1], numClasses: 10, seed: 1 }));
  process.stdout.write(`zoo CNN (${zoo.params.length / 2} weighted layers), Fashion-MNIST ${n} images, batch 128\n\n`);
  await bench("zoo CNN", zoo, fm, 128, true);
}

// DeepID (1283 classes) on random images, batch 64.
const deepid = lowerModel(initWeights(ARCHS.deepid!(), 1));
const rand = mulberry32(5);
const dd: TrainData = {
  x: randomImages(deepidImages, [3, 55, 47], 3),
  y: Int32Array.from({ length: deepidImages }, () => Math.floor(rand() * 1283)),
  shape: [3, 55, 47],
};
process.stdout.write(`\nDeepID (1283 classes), ${deepidImages} random 55x47x3 images, batch 64\n`);
await bench("DeepID", deepid, dd, 64);
await versusTorch(deepid, dd, 64);

const TORCH_PREACT = resolve(here, "../../scripts/bench/torch-step-preact.py");

/** Fine-prune's training step of full-width PreAct-ResNet18: blocked convs, plain convs and PyTorch, interleaved. */
async function preactStepComparison(dir: string): Promise<void> {
  const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as { mean: number[]; std: number[] };
  const model = withNormalization(await loadOnnxModel(join(dir, "preact_resnet18_opset17.onnx")), { mean: manifest.mean, std: manifest.std });
  const bs = 64;
  const [c, h, w] = model.inputShape;
  const xs = randomImages(2 * bs, [c, h, w], 7);
  const plan = await prepareBatchNorm(model, memoryDataset("random images", [c, h, w], xs, null), { batchSize: bs });
  const x = tensor("float32", [bs, c, h, w], xs.slice(0, bs * c * h * w));
  const rand = mulberry32(9);
  const target = tensor("float32", [bs, model.numClasses], oneHot(Int32Array.from({ length: bs }, () => Math.floor(rand() * model.numClasses)), model.numClasses));
  const step = buildStepGraph(plan.trainee, { optimizer: { kind: "adam", lr: 1e-4 }, batchNorm: plan.stepMode });
  const bestStep = async (blockedConvs: boolean): Promise<number> => {
    const runner = await StepRunner.create(step, { ...gradientWork(model, bs), blockedConvs, ...(values.threads ? { threads } : {}) });
    try {
      await runner.run(x, target, 1e-4);
      let best = Infinity;
      for (let i = 0; i < preactSteps; i++) {
        const t0 = performance.now();
        await runner.run(x, target, 1e-4);
        best = Math.min(best, (performance.now() - t0) / 1000);
      }
      return best;
    } finally {
      await runner.release();
    }
  };
  const missing = torchMissing();
  const best = { blocked: Infinity, plain: Infinity, torch: Infinity };
  for (let r = 0; r < rounds; r++) {
    best.blocked = Math.min(best.blocked, await bestStep(true));
    best.plain = Math.min(best.plain, await bestStep(false));
    if (!missing) best.torch = Math.min(best.torch, torchJson<{ secondsPerStep: number }>(TORCH_PREACT, [bs, preactSteps, threads]).secondsPerStep);
  }
  const note = `best of ${rounds} × ${preactSteps} steps, interleaved, batch ${bs}`;
  process.stdout.write(`\nPreAct-ResNet18 (full width, ${dir}), fine-prune's training step (BatchNorms put back, batch statistics)\n`);
  row("PreAct-ResNet18: step, blocked (NCHWc) convs", `${(best.blocked * 1000).toFixed(0)} ms`, note);
  row("PreAct-ResNet18: step, convs left plain", `${(best.plain * 1000).toFixed(0)} ms`, `blocked ${(best.plain / best.blocked).toFixed(2)}× as fast`);
  if (missing) process.stdout.write(`PyTorch comparison skipped: ${missing}\n`);
  else {
    row("PreAct-ResNet18: step, PyTorch (CPU)", `${(best.torch * 1000).toFixed(0)} ms`, note);
    row("PreAct-ResNet18: ours / PyTorch", (best.torch / best.blocked).toFixed(2), "> 1: we train faster");
  }
}

const preactDir = process.env.BADNET_PYTORCH_FULL ?? ".bench/pytorch-full";
if (existsSync(join(preactDir, "manifest.json"))) await preactStepComparison(preactDir);
else process.stdout.write(`\nPreAct-ResNet18 step skipped: no full-width fixtures in ${preactDir} (python3 scripts/pytorch/build_fixtures.py --full ${preactDir} --full-only)\n`);
