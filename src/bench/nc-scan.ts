// Neural Cleanse scan speed on the CSAW DeepID net: raw step throughput (with and without the step graph's
// faster pool/relu rewrites), then a real scan of N labels with the default two-phase budgets, and the time a
// full 1,283-label scan would take at the measured rates.
//   node dist/bench/nc-scan.js [--labels 64] [--data fixtures|random] [--model csaw2020/models/X.h5]
//                              [--screen-steps N] [--steps N] [--labels-per-run L]
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { buildStepGraph, detectBackdoor, type NeuralCleanseOptions } from "../defenses/neural-cleanse.js";
import { tensor, type TensorData } from "../graph/ir.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { openImageFiles } from "../io/image-folder.js";
import { Session } from "../runtime/session.js";
import { fixturesDir, loadDeepId, randomImages, row, timeIt } from "./common.js";

const { values } = parseArgs({
  options: {
    labels: { type: "string" },
    data: { type: "string" },
    model: { type: "string" },
    "screen-steps": { type: "string" },
    steps: { type: "string" },
    "labels-per-run": { type: "string" },
  },
});
const intOpt = (k: keyof typeof values): number | undefined => (values[k] === undefined ? undefined : Number(values[k]));
const nLabels = intOpt("labels") ?? 64;
const dataKind = values.data ?? "fixtures";
const model = await loadDeepId(values.model ?? "csaw2020/models/sunglasses_bd_weights.h5");
const [c, h, w] = model.inputShape;
const K = model.numClasses;

let data: Dataset;
if (dataKind === "random") {
  data = memoryDataset("random", model.inputShape, randomImages(5, model.inputShape), null);
} else if (dataKind === "fixtures") {
  const dir = join(fixturesDir(), "csaw2020/images");
  data = await openImageFiles(readdirSync(dir).filter((f) => f.startsWith("clean_")).sort().map((f) => join(dir, f)), { inputScale: 255 });
} else throw new Error(`--data must be fixtures or random, got ${dataKind}`);

const opts: NeuralCleanseOptions = {
  inputScale: 255,
  screenSteps: intOpt("screen-steps"),
  steps: intOpt("steps"),
  labelsPerRun: intOpt("labels-per-run"),
};
process.stdout.write(`Neural Cleanse on DeepID (${c}x${h}x${w}, ${K} classes), ${data.size} ${dataKind} images\n\n`);

// 1. Raw step throughput at the screening shape (L label slots x B images).
const L = opts.labelsPerRun ?? 32;
const B = Math.min(8, data.size - 1);
const zeros = (n: number) => new Float32Array(n);
const feeds: Record<string, TensorData> = {
  nc_a: tensor("float32", [L, 1, h, w], zeros(L * h * w)),
  nc_b: tensor("float32", [L, c, h, w], zeros(L * c * h * w)),
  nc_ma: tensor("float32", [L, 1, h, w], zeros(L * h * w)),
  nc_va: tensor("float32", [L, 1, h, w], zeros(L * h * w)),
  nc_mb: tensor("float32", [L, c, h, w], zeros(L * c * h * w)),
  nc_vb: tensor("float32", [L, c, h, w], zeros(L * c * h * w)),
  nc_x: tensor("float32", [L, B, c, h, w], randomImages(L * B, model.inputShape, 7)),
  nc_target: tensor("float32", [L, K], zeros(L * K)),
  nc_lambda: tensor("float32", [L], zeros(L)),
  nc_lr: tensor("float32", [L], zeros(L)),
};
const stepTime = async (fast: boolean): Promise<number> => {
  const s = await Session.create(buildStepGraph(model, B, 1, { fast }).graph);
  const t = await timeIt(() => s.run(feeds), { warmup: 1, minSeconds: 3 });
  await s.release();
  return t;
};
const tFast = await stepTime(true);
const tPlain = await stepTime(false);
row(`step, ${L} labels x ${B} images`, `${(tFast * 1000).toFixed(0)} ms`, `${((L * B) / tFast).toFixed(0)} img/s, ${(L / tFast).toFixed(0)} label-steps/s`);
row(`step, plain autodiff (no pool/relu rewrite)`, `${(tPlain * 1000).toFixed(0)} ms`, `rewrite speedup ${(tPlain / tFast).toFixed(2)}x`);

// 2. A real scan of nLabels labels with the default two-phase budgets.
const labels = Array.from({ length: nLabels }, (_, i) => i);
const r = await detectBackdoor(model, data, { ...opts, labels });
const screened = r.labels.filter((l) => l.phase === "screen").length;
const fullCount = r.labels.length - screened;
const perScreen = r.phaseSeconds.screen / r.labels.length;
const perFull = fullCount ? r.phaseSeconds.full / fullCount : 0;
process.stdout.write("\n");
row(`scan of ${nLabels} labels`, `${r.seconds.toFixed(1)} s`, `${(nLabels / r.seconds).toFixed(2)} labels/s`);
row(`  screening (${r.settings.screenSteps} steps, every label)`, `${r.phaseSeconds.screen.toFixed(1)} s`, `${(perScreen * 1000).toFixed(0)} ms/label`);
row(`  full budget (${r.settings.steps} steps, ${fullCount} labels)`, `${r.phaseSeconds.full.toFixed(1)} s`, `${perFull.toFixed(2)} s/label`);
row(`  held-out attack success`, `${r.phaseSeconds.heldOut.toFixed(1)} s`);

// 3. Projection: every label screened, the default shortlist (max(10, 3%)) on the full budget.
const shortlist = Math.max(10, Math.ceil(0.03 * K));
const projected = K * perScreen + shortlist * perFull + (r.phaseSeconds.heldOut * K) / nLabels;
row(`projected full scan (${K} labels, ${shortlist} shortlisted)`, `${(projected / 60).toFixed(1)} min`, `target <= 10 min`);
process.stdout.write(`\nsmallest norms: ${[...r.labels].sort((p, q) => p.l1Norm - q.l1Norm).slice(0, 5).map((l) => `${l.label}:${l.l1Norm.toFixed(1)}`).join("  ")}\n`);
