// Translation evidence on the zoo, in auto's setting: G's calibration part and the selection split held out
// (seeded as `repair --fpr 0.01 --seed S` does), Neural Cleanse on the rest, then each flagged label's reversed
// trigger stamped on the selection split at its found position and at a random position per image
// (src/defenses/shift-evidence.ts). The poisoned files are not read.
//   node dist/bench/shift-evidence.js [--zoo zoo] [--only a,b] [--seeds 0,1,2] [--save DIR | --load DIR]
// --save writes each detection's flagged triggers (mask, pattern) as JSON; --load reads them instead of detecting.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { splitForSelection } from "../defenses/auto-select.js";
import { splitForCalibration } from "../defenses/g-calibrate.js";
import { detectBackdoor, flaggedTriggers } from "../defenses/neural-cleanse.js";
import { shiftEvidence } from "../defenses/shift-evidence.js";
import { openDataset } from "../io/open-dataset.js";
import { loadModel } from "../io/load-model.js";
import type { ZooManifest } from "../zoo/build.js";

const { values } = parseArgs({ options: { zoo: { type: "string", default: "zoo" }, only: { type: "string" }, seeds: { type: "string", default: "0" }, save: { type: "string" }, load: { type: "string" } } });
const names = values.only ? values.only.split(",") : ["badnet_patch", "blend", "multi_trigger", "large_checker_tr", "sig", "wanet", "low_rate_patch", "random_pos", "lf"];
const seeds = values.seeds!.split(",").map(Number);
const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
if (values.save) mkdirSync(values.save, { recursive: true });

for (const name of names) {
  const dir = join(values.zoo!, name);
  const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ZooManifest;
  const model = await loadModel(join(dir, manifest.files.model));
  const valid = await openDataset(join(dir, manifest.files.valid), { inputScale: manifest.inputScale });
  for (const seed of seeds) {
    const { fit } = splitForCalibration(valid, 0.01);
    const { fit: part, selection } = splitForSelection(fit, 0.2, seed);
    const file = values.load && join(values.load, `${name}-${seed}.json`);
    const nc = file
      ? { flagged: [] as number[], seconds: 0 }
      : await detectBackdoor(model, part, { inputScale: manifest.inputScale, seed });
    const triggers = file
      ? (JSON.parse(readFileSync(file, "utf8")) as { label: number; l1Norm: number; mask: number[]; pattern: number[] }[]).map((t) => ({ label: t.label, l1Norm: t.l1Norm, mask: Float32Array.from(t.mask), pattern: Float32Array.from(t.pattern) }))
      : flaggedTriggers(nc as Awaited<ReturnType<typeof detectBackdoor>>);
    if (file) nc.flagged = triggers.map((t) => t.label);
    const ev = await shiftEvidence(model, selection, triggers, { seed });
    const line = ev.map((e, i) => `${e.label} (L1 ${triggers[i].l1Norm.toFixed(1)}): found ${pct(e.atFound)}, moved ${pct(e.translated)}, ratio ${e.ratio.toFixed(2)}, rolls off itself ${pct(e.offShare)}${e.positionFree ? " POSITION-FREE" : ""}`);
    process.stdout.write(`${new Date().toISOString()} load ${os.loadavg()[0].toFixed(1)} ${name} seed ${seed} targets [${manifest.targets}] flagged [${nc.flagged}] ${nc.seconds.toFixed(0)} s: ${line.join("; ") || "—"}\n`);
    if (values.save) {
      const out = triggers.map((t) => ({ label: t.label, l1Norm: t.l1Norm, mask: Array.from(t.mask), pattern: Array.from(t.pattern) }));
      writeFileSync(join(values.save, `${name}-${seed}.json`), JSON.stringify(out));
    }
  }
  valid.close();
}
