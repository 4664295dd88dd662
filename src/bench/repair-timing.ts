// npm run bench:repair-timing — wall time of the training-loop repairs (SAU, FT-SAM, i-BAU, FST) at their defaults,
// each next to one forward pass over the same images in the same run (the baseline: a repair is a few dozen
// forward-equivalents per image; the ratio says how many).
//   1. a zoo model (--model-dir, default zoo/badnet_patch, else the bundled example) on its valid.h5;
//   2. the DeepID net (CSAW sunglasses model) on --deepid-images (default 10,000) clean fixture faces, replicated
//      with ±2 grey levels of noise (timing only: the faces' content does not matter for the cost).
// Targets: ≤ 60 s on the zoo model, ≤ 5 min on DeepID.
//   node dist/bench/repair-timing.js [--model-dir DIR] [--deepid-images N] [--repairs sau,ft-sam,ibau,fst] [--sau-rounds R]
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fst } from "../defenses/fst.js";
import { ftSam } from "../defenses/ft-sam.js";
import { ibau } from "../defenses/ibau.js";
import { sau } from "../defenses/sau.js";
import { tensor } from "../graph/ir.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { openImageFolder } from "../io/image-folder.js";
import { loadModel } from "../io/load-model.js";
import { openDataset } from "../io/open-dataset.js";
import { forwardGraph } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";
import type { ZooManifest } from "../zoo/build.js";
import { fixturesDir, loadDeepId, row } from "./common.js";
import { benchArgs } from "./args.js";

const REPAIRS = ["sau", "ft-sam", "ibau", "fst"] as const;
type RepairName = (typeof REPAIRS)[number];

const { values } = benchArgs(import.meta.url, {
  options: { "model-dir": { type: "string" }, "deepid-images": { type: "string" }, repairs: { type: "string" }, "sau-rounds": { type: "string" } },
});
const repairs = (values.repairs?.split(",") ?? [...REPAIRS]) as RepairName[];
for (const r of repairs) if (!REPAIRS.includes(r)) throw new Error(`unknown repair ${r} (known: ${REPAIRS.join(", ")})`);
const deepidImages = Number(values["deepid-images"] ?? 10_000);
const sauRounds = values["sau-rounds"] === undefined ? undefined : Number(values["sau-rounds"]);

/** Seconds of one forward pass over the whole dataset (batch 256, session built before the clock starts). */
async function forwardSeconds(model: Model, data: Dataset): Promise<number> {
  const s = await Session.create(forwardGraph(model));
  try {
    const [c, h, w] = data.shape;
    const t0 = performance.now();
    for (let start = 0; start < data.size; start += 256) {
      const n = Math.min(256, data.size - start);
      await s.run({ [model.input]: tensor("float32", [n, c, h, w], data.read(start, n)) });
    }
    return (performance.now() - t0) / 1000;
  } finally {
    await s.release();
  }
}

async function timeRepairs(label: string, model: Model, data: Dataset, inputScale: number, target: number): Promise<void> {
  const fwd = await forwardSeconds(model, data);
  row(`${label}: forward pass (baseline)`, `${fwd.toFixed(2)} s`, `${data.size} images`);
  for (const name of repairs) {
    const t0 = performance.now();
    let note = "";
    if (name === "sau") {
      const r = await sau(model, { clean: data }, { inputScale, ...(sauRounds ? { rounds: sauRounds } : {}) });
      note = `${r.settings.rounds} rounds × ${r.settings.pgdSteps} PGD steps; per round ${(r.history.slice(1).reduce((a, h) => a + h.seconds, 0) / r.settings.rounds).toFixed(1)} s`;
    } else if (name === "ft-sam") {
      const r = await ftSam(model, { clean: data });
      note = `${r.settings.epochs} epochs`;
    } else if (name === "fst") {
      const r = await fst(model, { clean: data });
      note = `${r.settings.epochs} epochs, --tune ${r.settings.tune}`;
    } else {
      const r = await ibau(model, { clean: data }, { inputScale });
      note = `${r.settings.rounds} rounds`;
    }
    const sec = (performance.now() - t0) / 1000;
    row(`${label}: ${name}`, `${sec.toFixed(1)} s`, `${(sec / fwd).toFixed(0)}× the forward pass; target ≤ ${target} s${sec <= target ? "" : " (missed)"}; ${note}`);
  }
}

function zooDir(): string {
  if (values["model-dir"]) return resolve(values["model-dir"]);
  if (existsSync("zoo/badnet_patch/manifest.json")) return resolve("zoo/badnet_patch");
  const first = existsSync("zoo") ? readdirSync("zoo").sort().find((d) => existsSync(join("zoo", d, "manifest.json"))) : undefined;
  return first ? resolve("zoo", first) : resolve("examples/badnet-fmnist");
}

/** `n` labelled faces: the fixture's clean faces over and over, each copy with ±2 grey levels of noise. */
async function replicatedFaces(n: number): Promise<Dataset> {
  const faces = await openImageFolder(join(fixturesDir(), "csaw2020/images"), { inputScale: 255 });
  const files = readdirSync(join(fixturesDir(), "csaw2020/images")).filter((f) => f.endsWith(".png")).sort();
  const clean = files.map((f, i) => ({ i, m: /^clean_\d+_label(\d+)\.png$/.exec(f) })).filter((e) => e.m);
  const src = faces.read(0, faces.size);
  const [c, h, w] = faces.shape;
  const per = c * h * w;
  const x = new Float32Array(n * per);
  const y = new Int32Array(n);
  const rand = mulberry32(5);
  for (let k = 0; k < n; k++) {
    const e = clean[k % clean.length];
    y[k] = Number(e.m![1]);
    for (let j = 0; j < per; j++) x[k * per + j] = Math.min(1, Math.max(0, src[e.i * per + j] + Math.round((rand() - 0.5) * 4) / 255));
  }
  faces.close();
  return memoryDataset(`${n} replicated fixture faces`, [c, h, w], x, y);
}

const dir = zooDir();
const man = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ZooManifest;
const model = await loadModel(join(dir, man.files.model));
const valid = await openDataset(join(dir, man.files.valid), { inputScale: man.inputScale });
process.stdout.write(`\nRepair timing: ${man.name} (${valid.size} images of valid.h5), defaults\n`);
await timeRepairs(man.name, model, valid, man.inputScale, 60);
valid.close();

process.stdout.write(`\nRepair timing: DeepID (1283 classes), ${deepidImages} replicated fixture faces, defaults\n`);
await timeRepairs("DeepID", await loadDeepId(), await replicatedFaces(deepidImages), 255, 300);
