// Neural Cleanse scan speed on the CSAW DeepID net: step throughput at the shapes the scanners use, then a
// real scan of N labels (default all 1,283) with the default scanner (budget from the model's cost, bounded
// schedule), next to the previous scanners: the fixed two-phase budget (every label screened for 60 steps on 8
// images, then the 3% smallest for 300 steps on 32 images from 2 starts), which takes about an hour at these
// batch sizes, so its time is projected from its step count and the step times measured in this run (an upper
// bound: its early stops are not modelled; --run-previous runs it for real); with --run-halving also the
// successive-halving schedule at the same budget, measured.
//   node dist/bench/nc-scan.js [--labels 1283] [--data replicated|fixtures|random] [--copies 3]
//                              [--model csaw2020/models/X.h5] [--run-previous] [--run-halving]
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { buildStepGraph, detectBackdoor, type NeuralCleanseOptions, type NeuralCleanseResult } from "../defenses/neural-cleanse.js";
import { tensor, type TensorData } from "../graph/ir.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { openImageFiles } from "../io/image-folder.js";
import { recordSessionStats, Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";
import { fixturesDir, loadDeepId, randomImages, row, timeIt } from "./common.js";
import { benchArgs } from "./args.js";

const { values } = benchArgs(import.meta.url, {
  options: {
    labels: { type: "string" },
    data: { type: "string" },
    copies: { type: "string" },
    model: { type: "string" },
    "run-previous": { type: "boolean" },
    "run-halving": { type: "boolean" },
  },
});
const nLabels = Number(values.labels ?? 1283);
const dataKind = values.data ?? "replicated";
const copies = Number(values.copies ?? 3);
const model = await loadDeepId(values.model ?? "csaw2020/models/sunglasses_bd_weights.h5");
const [c, h, w] = model.inputShape;
const K = model.numClasses;
const per = c * h * w;

// The data: the 5 clean fixture faces as they are, or `copies` copies of each with ±2 grey levels of seeded
// noise (so that at least 9 images per label are available to the optimizer, as with the CSAW validation set).
let data: Dataset;
if (dataKind === "random") {
  data = memoryDataset("random", model.inputShape, randomImages(12, model.inputShape), null);
} else {
  const dir = join(fixturesDir(), "csaw2020/images");
  const faces = await openImageFiles(readdirSync(dir).filter((f) => f.startsWith("clean_")).sort().map((f) => join(dir, f)), { inputScale: 255 });
  if (dataKind === "fixtures") data = faces;
  else if (dataKind === "replicated") {
    const x0 = faces.read(0, faces.size);
    const rand = mulberry32(11);
    const x = new Float32Array(faces.size * copies * per);
    // The fixture faces come without a labels CSV (their true labels are only in the file names).
    const y = faces.labels ? new Int32Array(faces.size * copies) : null;
    for (let k = 0; k < copies; k++)
      for (let i = 0; i < faces.size; i++) {
        const j = k * faces.size + i;
        for (let p = 0; p < per; p++) x[j * per + p] = Math.min(1, Math.max(0, x0[i * per + p] + (k === 0 ? 0 : ((rand() * 4 - 2) / 255))));
        if (y) y[j] = faces.labels![i];
      }
    data = memoryDataset(`${faces.size} faces x ${copies}`, model.inputShape, x, y);
  } else throw new Error(`--data must be replicated, fixtures or random, got ${dataKind}`);
}
process.stdout.write(`Neural Cleanse on DeepID (${c}x${h}x${w}, ${K} classes), ${data.size} ${dataKind} images, ${nLabels} labels\n\n`);
const nOpt = data.size - Math.min(Math.max(1, Math.round(0.2 * data.size)), data.size - 1);

// 1. Step times at L = 32 label slots and the batch sizes the scanners use.
const L = 32;
const stepTime = async (B: number): Promise<number> => {
  const zeros = (n: number) => new Float32Array(n);
  const feeds: Record<string, TensorData> = {
    nc_a: tensor("float32", [L, 1, h, w], zeros(L * h * w)),
    nc_b: tensor("float32", [L, c, h, w], zeros(L * per)),
    nc_ma: tensor("float32", [L, 1, h, w], zeros(L * h * w)),
    nc_va: tensor("float32", [L, 1, h, w], zeros(L * h * w)),
    nc_mb: tensor("float32", [L, c, h, w], zeros(L * per)),
    nc_vb: tensor("float32", [L, c, h, w], zeros(L * per)),
    nc_x: tensor("float32", [L, B, c, h, w], randomImages(L * B, model.inputShape, 7)),
    nc_target: tensor("float32", [L, K], zeros(L * K)),
    nc_lambda: tensor("float32", [L], zeros(L)),
    nc_lr: tensor("float32", [L], zeros(L)),
  };
  const s = await Session.create(buildStepGraph(model, B, 1).graph);
  try {
    return await timeIt(() => s.run(feeds), { warmup: 1, minSeconds: 2, minRuns: 2 });
  } finally {
    await s.release();
  }
};
const prevScreenB = Math.min(8, nOpt);
const prevFullB = Math.min(32, nOpt);
const t: Record<number, number> = {};
for (const B of [...new Set([4, prevScreenB, prevFullB])]) {
  t[B] = await stepTime(B);
  row(`step, ${L} labels x ${B} images`, `${(t[B] * 1000).toFixed(0)} ms`, `${((L * B) / t[B]).toFixed(0)} img/s`);
}

// 2. The scheduled scanner, measured.
const labels = Array.from({ length: nLabels }, (_, i) => i);
const common: NeuralCleanseOptions = { inputScale: 255, labels };
const stats = recordSessionStats();
const r = await detectBackdoor(model, data, common);
const sessions = [...stats.values()].reduce((a, x) => ({ n: a.n + x.sessions, create: a.create + x.createSeconds, runs: a.runs + x.runs, run: a.run + x.runSeconds }), { n: 0, create: 0, runs: 0, run: 0 });
const describe = (x: NeuralCleanseResult) => {
  const full = x.labels.filter((l) => l.phase === "full").length;
  return `${full} labels to the full budget (${x.labels.filter((l) => l.mask?.reference).length} reference), flagged [${x.flagged.join(", ")}]`;
};
process.stdout.write("\n");
row(`scheduled scan, ${nLabels} labels (measured)`, `${r.seconds.toFixed(1)} s`, describe(r));
row(`  budget`, `${r.settings.steps} x ${r.settings.batchSize} x ${r.settings.restarts}`, `steps x images x starts: ${r.settings.budget?.reason ?? "given"}`);
row(`  image passes`, `${r.imagePasses}`, `${((1000 * r.seconds) / r.imagePasses).toFixed(2)} ms per pass, all phases`);
row(`  screening rungs`, `${r.phaseSeconds.screen.toFixed(1)} s`, r.settings.rungs.map((g) => `${g.steps} steps/${g.batch} img -> keep ${g.keep}`).join(", "));
row(`  full budget`, `${r.phaseSeconds.full.toFixed(1)} s`);
row(`  held-out attack success`, `${r.phaseSeconds.heldOut.toFixed(1)} s`);
row(`  onnxruntime sessions`, `${sessions.n} in ${sessions.create.toFixed(1)} s`, `graph export + load; ${sessions.runs} runs in ${sessions.run.toFixed(1)} s; host-side between runs ${(r.seconds - sessions.create - sessions.run).toFixed(1)} s`);

// 3. The previous scanner: projected from its step count (or run with --run-previous).
const shortlist = Math.max(10, Math.ceil(0.03 * nLabels));
const screenSteps = nLabels > shortlist ? Math.ceil(nLabels / L) * 60 : 0;
const fullSteps = Math.ceil((2 * Math.min(shortlist, nLabels)) / L) * 300;
const projected = screenSteps * t[prevScreenB] + fullSteps * t[prevFullB];
row(`previous scanner (projected, no early stops)`, `${projected.toFixed(0)} s`, `${screenSteps} steps x ${(t[prevScreenB] * 1000).toFixed(0)} ms + ${fullSteps} x ${(t[prevFullB] * 1000).toFixed(0)} ms; ratio ${(projected / r.seconds).toFixed(1)}x`);
if (values["run-previous"]) {
  const p = await detectBackdoor(model, data, { ...common, schedule: "two-phase", screenSteps: 60, screenBatchSize: 8, shortlist, reference: 1 });
  row(`previous schedule (measured)`, `${p.seconds.toFixed(1)} s`, `${describe(p)}; ratio ${(p.seconds / r.seconds).toFixed(1)}x`);
}
if (values["run-halving"]) {
  const p = await detectBackdoor(model, data, { ...common, schedule: "halving" });
  row(`halving schedule, same budget (measured)`, `${p.seconds.toFixed(1)} s`, `${describe(p)}; ${p.imagePasses} image passes; ratio ${(p.seconds / r.seconds).toFixed(1)}x`);
}
row(`target`, `<= 60 s`, `full ${K}-label scan`);
process.stdout.write(`\nsmallest norms: ${[...r.labels].sort((p, q) => p.l1Norm - q.l1Norm).slice(0, 5).map((l) => `${l.label}:${l.l1Norm.toFixed(1)}`).join("  ")}\n`);
