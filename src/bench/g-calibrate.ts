// npm run bench:g — the calibrated G on every zoo model: detection of poisoned inputs at a false-alarm rate set
// in advance, against the baseline G of the same repair in the same run (reject when B and B′ disagree on the
// top-1 class, no calibration).
//   node dist/bench/g-calibrate.js [--zoo DIR[,DIR2]] [--only a,b] [--fpr 0.01] [--calibration 2000] [--out FILE]
// Per model: valid.h5 is split (seeded) into the part the repairs and Neural Cleanse use and a held-out part G
// is calibrated on (never seen by a repair). Repairs: Fine-Pruning (always) and Neural-Cleanse unlearning
// (when a label is flagged). Signals: disagreement, STRIP entropy (overlays from the repair part), closeness
// to the flagged labels' reversed triggers, B′'s confidence. The false-alarm rate is measured on clean_test.h5
// (10,000 images) with its exact 95% interval; detection on each poisoned test file. Each single signal,
// calibrated alone to the same rate, is shown too (from the same scores).
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { calibrate, decide, GScorer, pickRows, rateWithInterval, splitForCalibration, type GScores, type SignalName } from "../defenses/g-calibrate.js";
import { finePrune } from "../defenses/fine-pruning.js";
import { ncUnlearn } from "../defenses/nc-mitigation.js";
import { detectBackdoor, flaggedTriggers } from "../defenses/neural-cleanse.js";
import { pickOverlays } from "../defenses/strip.js";
import { type Dataset } from "../io/dataset.js";
import { openDataset } from "../io/open-dataset.js";
import { loadModel } from "../io/load-model.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { shuffled } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import type { ZooManifest } from "../zoo/build.js";

const { values: args } = parseArgs({
  options: {
    zoo: { type: "string", default: "zoo" },
    only: { type: "string" },
    fpr: { type: "string", default: "0.01" },
    calibration: { type: "string", default: "2000" },
    out: { type: "string", default: "docs/g-calibrate-table.md" },
    "max-test": { type: "string", default: "10000" },
    "max-poisoned": { type: "string", default: "10000" },
    restarts: { type: "string", default: "2" },
    wait: { type: "boolean", default: false },
  },
});
const maxTest = Number(args["max-test"]);
const maxPoisoned = Number(args["max-poisoned"]);
const t0All = performance.now();
const fpr = Number(args.fpr);
const calSize = Number(args.calibration);
const log = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
const pcts = (xs: number[]) => (xs.length ? xs.map(pct).join(" / ") : "— (clean model)");

interface Row {
  model: string;
  attack: string;
  repair: string;
  flagged: string;
  signals: string;
  baseDet: number[];
  baseFa: number;
  det: number[];
  fa: ReturnType<typeof rateWithInterval>;
  heldOut: string;
  single: string;
  seconds: number;
}


const disagree = (a: Int32Array, b: Int32Array) => a.reduce((n, v, i) => n + (v !== b[i] ? 1 : 0), 0);

async function benchModel(dir: string, rows: Row[]): Promise<void> {
  const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ZooManifest;
  const scale = manifest.inputScale;
  const model = await loadModel(join(dir, "model.h5"));
  const valid = await openDataset(join(dir, "valid.h5"), { inputScale: scale });
  const test = await openDataset(join(dir, "clean_test.h5"), { inputScale: scale });
  const poisoned = await Promise.all(manifest.triggers.map((t) => openDataset(join(dir, t.poisonedTest), { inputScale: scale })));
  const { fit, calibration } = splitForCalibration(valid, fpr, { fraction: calSize / valid.size });
  log(`${manifest.name}: ${fit.size} images for the repairs, ${calibration.size} held out for G`);

  const t0 = performance.now();
  const nc = await detectBackdoor(model, fit, { inputScale: scale, seed: 0, restarts: Number(args.restarts) });
  const triggers = flaggedTriggers(nc);
  log(`${manifest.name}: Neural Cleanse flagged [${nc.flagged.join(", ")}] (truth [${manifest.targets.join(", ")}]) in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  const overlays = pickOverlays(fit, 32, 0);

  const repairs: { name: string; make: () => Promise<Model> }[] = [
    { name: "fine-prune", make: async () => (await finePrune(model, { valid: fit })).repaired },
  ];
  if (triggers.length) repairs.push({ name: "unlearn", make: async () => (await ncUnlearn(model, { clean: fit }, triggers)).model });

  // STRIP's entropy does not depend on the repair: scored once per model and shared by the repairs' rows.
  const limit = (d: Dataset, n: number) => (d.size > n ? pickRows(d, Int32Array.from(shuffled(d.size, mulberry32(11)).slice(0, n)).sort(), d.name) : d);
  const testS = limit(test, maxTest);
  const poisS = poisoned.map((p) => limit(p, maxPoisoned));
  const strip = await GScorer.create({ b: model, overlays, signals: ["strip"] });
  const stripScores = { cal: await strip.score(calibration), test: await strip.score(testS), pois: [] as GScores[] };
  for (const p of poisS) stripScores.pois.push(await strip.score(p));
  await strip.release();
  const bTest = stripScores.test.pred;
  const bPois = stripScores.pois.map((s) => s.pred);

  for (const r of repairs) {
    const ts = performance.now();
    const repaired = await r.make();
    const own: SignalName[] = triggers.length ? ["disagreement", "trigger", "confidence"] : ["disagreement", "confidence"];
    const scorer = await GScorer.create({ b: model, repaired, triggers: triggers.map((t) => ({ mask: t.mask, pattern: t.pattern })), signals: own });
    try {
      const merge = (a: GScores, st: GScores): GScores => ({ pred: a.pred, scores: [a.scores[0]!, st.scores[0]!, ...a.scores.slice(1)] });
      const signals: SignalName[] = [own[0]!, "strip", ...own.slice(1)];
      const sCal = merge(await scorer.score(calibration), stripScores.cal);
      const sTest = merge(await scorer.score(testS), stripScores.test);
      const sPois: GScores[] = [];
      for (let i = 0; i < poisS.length; i++) sPois.push(merge(await scorer.score(poisS[i]!), stripScores.pois[i]!));
      // Baseline G: reject when B and B′ disagree on the top-1 class.
      const rTest = await predictLabels(repaired, testS);
      const rPois: Int32Array[] = [];
      for (const p of poisS) rPois.push(await predictLabels(repaired, p));
      const cal = calibrate(sCal.scores, fpr, signals);
      const count = (f: Uint8Array) => f.reduce((n, v) => n + v, 0);
      const det = sPois.map((s, i) => count(decide(s.scores, cal.thresholds)) / poisS[i]!.size);
      const single = signals.map((name, j) => {
        const c1 = calibrate([sCal.scores[j]!], fpr, [name]);
        const d = sPois.map((s, i) => count(decide([s.scores[j]!], c1.thresholds)) / poisS[i]!.size);
        const fa = count(decide([sTest.scores[j]!], c1.thresholds)) / testS.size;
        return `${name} ${pcts(d)} @ ${pct(fa)}`;
      });
      const row: Row = {
        model: manifest.name,
        attack: manifest.attack,
        repair: r.name,
        flagged: nc.flagged.join(", ") || "none",
        signals: signals.join(", "),
        baseDet: rPois.map((rp, i) => disagree(rp, bPois[i]!) / poisS[i]!.size),
        baseFa: disagree(rTest, bTest) / testS.size,
        det,
        fa: rateWithInterval(count(decide(sTest.scores, cal.thresholds)), testS.size),
        heldOut: `${cal.heldOutFlagged}/${cal.n}`,
        single: single.join("; "),
        seconds: (performance.now() - ts) / 1000,
      };
      rows.push(row);
      log(`${manifest.name} ${r.name}: baseline G ${pcts(row.baseDet)} at ${pct(row.baseFa)} FA; calibrated G ${pcts(det)} at ${pct(row.fa.rate)} FA [${pct(row.fa.ci95[0])}, ${pct(row.fa.ci95[1])}] (${row.seconds.toFixed(0)} s)`);
      writeFileSync(args.out!, render(rows, (performance.now() - t0All) / 1000));
    } finally {
      await scorer.release();
    }
  }
  valid.close();
  test.close();
  for (const p of poisoned) p.close();
}

function table(rows: Row[]): string {
  const head = "| model | attack | repair | NC flagged | signals | baseline G detection | baseline G false alarms | calibrated G detection | calibrated G false alarms (test, 95% CI) | held-out flagged | each signal alone (detection @ false alarms) | time |";
  const lines = [head, head.replace(/[^|]+/g, "---")];
  for (const r of rows)
    lines.push(
      `| ${r.model} | ${r.attack} | ${r.repair} | ${r.flagged} | ${r.signals} | ${pcts(r.baseDet)} | ${pct(r.baseFa)} | ${pcts(r.det)} | ${pct(r.fa.rate)} (${r.fa.count}/${r.fa.n}; ${pct(r.fa.ci95[0])}–${pct(r.fa.ci95[1])}) | ${r.heldOut} | ${r.single} | ${r.seconds.toFixed(0)} s |`,
    );
  return lines.join("\n");
}

function render(rows: Row[], seconds: number): string {
  return [
    `# Calibrated G (target false-alarm rate ${pct(fpr)}, ${calSize} held-out clean images per model)`,
    "",
    `Run: \`node dist/bench/g-calibrate.js --zoo ${args.zoo} --fpr ${fpr} --calibration ${calSize} --max-test ${maxTest} --max-poisoned ${maxPoisoned} --restarts ${args.restarts}\`, ${seconds.toFixed(0)} s so far.`,
    "Baseline G = reject when B and the repaired B′ disagree on the top-1 class (the previous rule), same repair, same run.",
    "Calibrated G: the default guarantee (false-alarm rate ≤ target with 90% probability over the held-out draw).",
    "",
    table(rows),
    "",
  ].join("\n");
}

/** Model directories of the zoos; with --wait, also those still being built (waits for their manifest). */
function modelDirs(): string[] {
  const dirs: string[] = [];
  for (const z of args.zoo!.split(",")) {
    if (!existsSync(z)) throw new Error(`no zoo at ${z} (build one with: badnet zoo build --out ${z})`);
    for (const d of readdirSync(z).sort()) if (statSync(join(z, d)).isDirectory() && !d.startsWith(".")) dirs.push(join(z, d));
  }
  return dirs;
}

async function main(): Promise<void> {
  const only = args.only?.split(",");
  const pending = only ? only.slice() : [];
  const rows: Row[] = [];
  const done = new Set<string>();
  for (;;) {
    const dirs = modelDirs().filter((d) => !done.has(d) && (!only || only.some((o) => d.endsWith(`/${o}`))));
    const ready = dirs.filter((d) => existsSync(join(d, "manifest.json")));
    if (ready.length === 0) {
      const missing = pending.filter((o) => ![...done].some((d) => d.endsWith(`/${o}`)));
      if (!args.wait || (only ? missing.length === 0 : dirs.length === 0)) break;
      await new Promise((r) => setTimeout(r, 20000));
      continue;
    }
    done.add(ready[0]!);
    await benchModel(ready[0]!, rows);
  }
  const md = render(rows, (performance.now() - t0All) / 1000);
  writeFileSync(args.out!, md);
  process.stdout.write(md);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
