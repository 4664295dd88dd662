// Training throughput: one epoch of the zoo CNN on Fashion-MNIST (55,000 images) and one epoch of DeepID on
// 2,000 random 55x47x3 images, each next to the forward-only throughput of the same model, batch size and
// images in the same run (the baseline: a training step costs forward + backward + update, ~3x a forward).
// Run: node dist/bench/train-epoch.js [--zoo-images N] [--deepid-images N]
import { parseArgs } from "node:util";
import { tensor } from "../graph/ir.js";
import { loadFashionMnistRaw } from "../io/fashion-mnist.js";
import { ARCHS, initWeights } from "../model/archs.js";
import { forwardGraph } from "../model/forward.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { train, type TrainData } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { zooNet } from "../zoo/build.js";
import { randomImages, row } from "./common.js";

const { values } = parseArgs({ options: { "zoo-images": { type: "string" }, "deepid-images": { type: "string" } } });
const zooImages = Number(values["zoo-images"] ?? 55_000);
const deepidImages = Number(values["deepid-images"] ?? 2_000);

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

async function bench(label: string, model: Model, data: TrainData, bs: number): Promise<void> {
  const n = data.y.length;
  let epochSeconds = 0;
  const t0 = performance.now();
  await train(model, data, { epochs: 1, batchSize: bs, optimizer: { kind: "adam", lr: 1e-3 }, seed: 0, onEpoch: (s) => void (epochSeconds = s.seconds) });
  const total = (performance.now() - t0) / 1000;
  const fwd = await forwardSeconds(model, data, bs);
  row(`${label}: one training epoch`, `${epochSeconds.toFixed(1)} s`, `${(n / epochSeconds).toFixed(0)} img/s (incl. graph build: ${total.toFixed(1)} s)`);
  row(`${label}: forward only, same batches`, `${fwd.toFixed(1)} s`, `${(n / fwd).toFixed(0)} img/s; train/forward throughput ${(fwd / epochSeconds).toFixed(2)}`);
}

// Zoo CNN on Fashion-MNIST, batch 128 as in the zoo build.
const raw = loadFashionMnistRaw("train");
const n = Math.min(zooImages, raw.shape[0]);
const fm: TrainData = { x: new Float32Array(n * 784), y: raw.labels!.slice(0, n), shape: [1, 28, 28] };
for (let i = 0; i < fm.x.length; i++) fm.x[i] = raw.pixels[i]! / 255;
const zoo = lowerModel(zooNet({ inputShape: [28, 28, 1], numClasses: 10, seed: 1 }));
process.stdout.write(`zoo CNN (${zoo.params.length / 2} weighted layers), Fashion-MNIST ${n} images, batch 128\n`);
await bench("zoo CNN", zoo, fm, 128);

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
