// The cost of G's two feature-space signals (src/defenses/g-mahalanobis.ts), against B's plain forward pass in
// the same run:
//   node dist/bench/g-mahalanobis.js [--model zoo/badnet_patch] [--images 10000] [--reps 3]
// - fitting both Gaussian models on a zoo model's 3,000 repair-part images (feature pass + float64 fit), and a
//   DeepID-sized fit (1,283 classes, 160 features, 9,000 synthetic feature rows);
// - scoring: B's forward alone vs B with both signals in one graph, over the clean test images.
import { join } from "node:path";
import { GScorer, splitForCalibration } from "../defenses/g-calibrate.js";
import { fitClassGaussians, fitMahalanobis } from "../defenses/g-mahalanobis.js";
import { openDataset } from "../io/open-dataset.js";
import { loadModel } from "../io/load-model.js";
import { forEachBatch, forwardGraph } from "../model/forward.js";
import { Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";
import { benchArgs } from "./args.js";

const { values: args } = benchArgs(import.meta.url, { options: { model: { type: "string", default: "zoo/badnet_patch" }, images: { type: "string", default: "10000" }, reps: { type: "string", default: "3" } } });
const reps = Number(args.reps);

/** Median wall seconds of `reps` runs. */
async function time(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    t.push((performance.now() - t0) / 1000);
  }
  return t.sort((a, b) => a - b)[Math.floor(t.length / 2)]!;
}

async function main(): Promise<void> {
  const model = await loadModel(join(args.model!, "model.h5"));
  const valid = await openDataset(join(args.model!, "valid.h5"), { inputScale: 255 });
  const test = await openDataset(join(args.model!, "clean_test.h5"), { inputScale: 255 });
  const { fit } = splitForCalibration(valid, 0.01, { fraction: 0.4 });
  const fitS = await time(async () => {
    await fitMahalanobis(model, "penultimate", fit);
    await fitMahalanobis(model, "penultimate-preact", fit);
  });
  const gs = await fitMahalanobis(model, "penultimate", fit);
  const gap = await fitMahalanobis(model, "penultimate-preact", fit);
  // DeepID-sized fit from synthetic feature rows (the fit's cost does not depend on where the rows come from).
  const rand = mulberry32(1);
  const n = 9000, d = 160, K = 1283;
  const feats = Float32Array.from({ length: n * d }, () => rand());
  const pred = Int32Array.from({ length: n }, (_, i) => i % K);
  const deepidS = await time(() => fitClassGaussians(feats, pred, K, "penultimate"));
  const nImg = Math.min(Number(args.images), test.size);
  const data = { size: nImg, shape: test.shape, read: (s: number, c: number) => test.read(s, Math.min(c, nImg - s)) };
  // Both sessions are created outside the timed runs.
  const base = await Session.create(forwardGraph(model));
  const baseS = await time(() => forEachBatch(base, data, () => undefined, { batchSize: 512, input: model.input }));
  await base.release();
  const scorer = await GScorer.create({ b: model, gaussians: gs, gapGaussians: gap, signals: ["mahalanobis", "mahalanobis-gap"] }, { batchSize: 512 });
  const sigS = await time(() => scorer.score(data));
  await scorer.release();
  const row = (a: string, b: string, c: string) => process.stdout.write(`${a.padEnd(58)} ${b.padStart(9)}  ${c}\n`);
  row(`fit both Gaussian models (${fit.size} images, d=${gs.dim})`, `${fitS.toFixed(2)} s`, `${((1000 * fitS) / fit.size).toFixed(3)} ms/image`);
  row(`fit, DeepID-sized (${n} rows, d=${d}, K=${K})`, `${deepidS.toFixed(2)} s`, "");
  row(`B forward alone, ${nImg} images`, `${baseS.toFixed(2)} s`, "baseline");
  row(`B + mahalanobis + mahalanobis-gap, ${nImg} images`, `${sigS.toFixed(2)} s`, `${(sigS / baseS).toFixed(2)}x the forward pass`);
  valid.close();
  test.close();
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
