// npm run bench:g — the calibrated G on every zoo model: detection of poisoned inputs at a false-alarm rate set
// in advance. Same repair, same run: the old G (reject when B and B′ disagree on the top-1 class, no
// calibration), main's calibrated signal set ("before": disagreement, STRIP, trigger, confidence) and the set
// with the Mahalanobis signal added ("after").
//   node dist/bench/g-calibrate.js [--zoo DIR[,DIR2]] [--only a,b] [--fpr 0.01] [--calibration 2000] [--out FILE]
//        [--nc-cache DIR]
// Per model: valid.h5 is split (seeded) into the part the repairs, Neural Cleanse and the Mahalanobis fit use
// and a held-out part G is calibrated on (never seen by any of them). Repairs: Fine-Pruning (always) and
// Neural-Cleanse unlearning (when a label is flagged). The false-alarm rate is measured on clean_test.h5 with
// its exact 95% interval; detection on each poisoned test file, both of all its inputs and of those B sends to
// the target (an input the backdoor does not fire on is no successful attack). Each single signal, calibrated
// alone to the same rate, is shown too (from the same scores), with the Mahalanobis statistic on three feature
// sources: B's penultimate layer (the one G uses), B's last conv block averaged over space, and B′'s
// penultimate layer. Nothing here chooses anything from the poisoned files: they are only measured.
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { calibrate, decide, GScorer, selectSignalSet, rateWithInterval, splitForCalibration, type GScores, type SignalName } from "../defenses/g-calibrate.js";
import { extractFeatures, fitClassGaussians, fitMahalanobis, type ClassGaussians } from "../defenses/g-mahalanobis.js";
import { finePrune } from "../defenses/fine-pruning.js";
import { ncUnlearn } from "../defenses/nc-mitigation.js";
import { detectBackdoor, flaggedTriggers, type ReversedTrigger } from "../defenses/neural-cleanse.js";
import { pickOverlays } from "../defenses/strip.js";
import { pickRows, type Dataset } from "../io/dataset.js";
import { openDataset } from "../io/open-dataset.js";
import { loadModel } from "../io/load-model.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { shuffled } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import type { ZooManifest } from "../zoo/build.js";
import { benchArgs } from "./args.js";

const { values: args } = benchArgs(import.meta.url, {
  options: {
    zoo: { type: "string", default: "zoo" },
    only: { type: "string" },
    fpr: { type: "string", default: "0.01" },
    calibration: { type: "string", default: "2000" },
    out: { type: "string", default: "docs/g-calibrate-table.md" },
    "max-test": { type: "string", default: "10000" },
    "max-poisoned": { type: "string", default: "10000" },
    restarts: { type: "string", default: "2" },
    "nc-cache": { type: "string" },
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

/** One calibrated signal set measured on the test files. */
interface Measured {
  signals: string;
  det: number[];
  /** Detection among the poisoned inputs B sends to the target. */
  detHit: number[];
  fa: ReturnType<typeof rateWithInterval>;
  heldOut: string;
}

interface Row {
  model: string;
  attack: string;
  repair: string;
  flagged: string;
  /** Share of each poisoned file B sends to the target. */
  asr: number[];
  baseDet: number[];
  baseFa: number;
  before: Measured;
  after: Measured;
  /** The subset chosen on reversed-trigger proxies. */
  selected: Measured;
  choice: string;
  single: string;
  mahalanobis: string;
  seconds: number;
}

const disagree = (a: Int32Array, b: Int32Array) => a.reduce((n, v, i) => n + (v !== b[i] ? 1 : 0), 0);
const count = (f: Uint8Array) => f.reduce((n, v) => n + v, 0);

/** Neural Cleanse on the repair part, or its cached result (same model, split and restarts). */
async function detect(name: string, model: Model, fit: Dataset, scale: number): Promise<{ flagged: number[]; triggers: ReversedTrigger[] }> {
  const file = args["nc-cache"] ? join(args["nc-cache"], `${name}-r${args.restarts}-fpr${fpr}-cal${calSize}.json`) : undefined;
  if (file && existsSync(file)) {
    const j = JSON.parse(readFileSync(file, "utf8")) as { flagged: number[]; triggers: (Omit<ReversedTrigger, "mask" | "pattern"> & { mask: number[]; pattern: number[] })[] };
    return { flagged: j.flagged, triggers: j.triggers.map((t) => ({ ...t, mask: Float32Array.from(t.mask), pattern: Float32Array.from(t.pattern) })) };
  }
  const nc = await detectBackdoor(model, fit, { inputScale: scale, seed: 0, restarts: Number(args.restarts) });
  const r = { flagged: nc.flagged, triggers: flaggedTriggers(nc) };
  if (file) {
    mkdirSync(args["nc-cache"]!, { recursive: true });
    writeFileSync(file, JSON.stringify({ flagged: r.flagged, triggers: r.triggers.map((t) => ({ ...t, mask: Array.from(t.mask), pattern: Array.from(t.pattern) })) }));
  }
  return r;
}

/** Scores of one data set: B's top-1 and each named signal. */
type Named = { pred: Int32Array; by: Map<string, Float32Array> };
const named = (s: GScores, names: readonly string[], into?: Named): Named => {
  const out = into ?? { pred: s.pred, by: new Map<string, Float32Array>() };
  names.forEach((n, j) => out.by.set(n, s.scores[j]!));
  return out;
};

async function benchModel(dir: string, rows: Row[]): Promise<void> {
  const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ZooManifest;
  const scale = manifest.inputScale;
  const model = await loadModel(join(dir, "model.h5"));
  const valid = await openDataset(join(dir, "valid.h5"), { inputScale: scale });
  const test = await openDataset(join(dir, "clean_test.h5"), { inputScale: scale });
  const poisoned = await Promise.all(manifest.triggers.map((t) => openDataset(join(dir, t.poisonedTest), { inputScale: scale })));
  const { fit, calibration } = splitForCalibration(valid, fpr, { fraction: calSize / valid.size });
  log(`${manifest.name}: ${fit.size} images for the repairs and the Mahalanobis fit, ${calibration.size} held out for G`);

  const t0 = performance.now();
  const nc = await detect(manifest.name, model, fit, scale);
  const triggers = nc.triggers;
  log(`${manifest.name}: Neural Cleanse flagged [${nc.flagged.join(", ")}] (truth [${manifest.targets.join(", ")}]) in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  const overlays = pickOverlays(fit, 32, 0);

  const repairs: { name: string; make: () => Promise<Model> }[] = [{ name: "fine-prune", make: async () => (await finePrune(model, { valid: fit })).repaired }];
  if (triggers.length) repairs.push({ name: "unlearn", make: async () => (await ncUnlearn(model, { clean: fit }, triggers)).model });

  const limit = (d: Dataset, n: number) => (d.size > n ? pickRows(d, Int32Array.from(shuffled(d.size, mulberry32(11)).slice(0, n)).sort(), d.name) : d);
  const testS = limit(test, maxTest);
  const poisS = poisoned.map((p) => limit(p, maxPoisoned));
  const sets = [calibration, testS, ...poisS];

  // Signals of B alone (independent of the repair): scored once per model and shared by the repairs' rows.
  const gPen = await fitMahalanobis(model, "penultimate", fit);
  const gConv = await fitMahalanobis(model, "conv-pooled", fit);
  const gGap = await fitMahalanobis(model, "penultimate-preact", fit);
  const bOnly: SignalName[] = triggers.length ? ["strip", "trigger", "mahalanobis", "mahalanobis-gap"] : ["strip", "mahalanobis", "mahalanobis-gap"];
  const shared: Named[] = [];
  const sB = await GScorer.create({ b: model, overlays, gaussians: gPen, gapGaussians: gGap, triggers: triggers.map((t) => ({ mask: t.mask, pattern: t.pattern })), signals: bOnly });
  for (const d of sets) shared.push(named(await sB.score(d), bOnly));
  await sB.release();
  const sC = await GScorer.create({ b: model, gaussians: gConv, signals: ["mahalanobis"] });
  for (let i = 0; i < sets.length; i++) named(await sC.score(sets[i]!), ["mahalanobis (conv-pooled)"], shared[i]);
  await sC.release();
  const bTest = shared[1]!.pred;
  const bPois = shared.slice(2).map((s) => s.pred);
  const { pred: bFit } = await extractFeatures(model, "penultimate", fit);

  for (const r of repairs) {
    const ts = performance.now();
    const repaired = await r.make();
    // B′'s penultimate features, grouped (like B's) by B's top-1, fitted on the same repair part.
    const rf = await extractFeatures(repaired, "penultimate", fit);
    const gR: ClassGaussians = fitClassGaussians(rf.features, bFit, model.numClasses, "penultimate");
    const own: SignalName[] = ["disagreement", "confidence", "mahalanobis"];
    const scorer = await GScorer.create({ b: model, repaired, gaussians: gR, gaussiansOf: "repaired", signals: own });
    try {
      const all: Named[] = [];
      for (let i = 0; i < sets.length; i++) {
        const s = named(await scorer.score(sets[i]!), ["disagreement", "confidence", "mahalanobis (B′)"]);
        for (const [k, v] of shared[i]!.by) s.by.set(k, v);
        all.push(s);
      }
      const [sCal, sTest, ...sPois] = all as [Named, Named, ...Named[]];
      const measure = (names: string[]): Measured => {
        const cal = calibrate(names.map((n) => sCal.by.get(n)!), fpr, names.map(() => "mahalanobis" as SignalName));
        const flags = (s: Named) => decide(names.map((n) => s.by.get(n)!), cal.thresholds);
        const det: number[] = [], detHit: number[] = [];
        sPois.forEach((s, i) => {
          const f = flags(s);
          const labels = poisS[i]!.labels!;
          let n = 0, k = 0;
          for (let q = 0; q < f.length; q++) if (s.pred[q] === labels[q]) (n++, (k += f[q]!));
          det.push(count(f) / f.length);
          detHit.push(n ? k / n : 0);
        });
        return { signals: names.join(", "), det, detHit, fa: rateWithInterval(count(flags(sTest)), testS.size), heldOut: `${cal.heldOutFlagged}/${cal.n}` };
      };
      const before = ["disagreement", "strip", ...(triggers.length ? ["trigger"] : []), "confidence"];
      // "after": the set `repair --fpr` builds, chosen on the repair part and reversed-trigger proxies only.
      const parts = { b: model, repaired, overlays, gaussians: gPen, gapGaussians: gGap, triggers: triggers.map((t) => ({ mask: t.mask, pattern: t.pattern })) };
      const after = [...before, "mahalanobis", "mahalanobis-gap"];
      // Measured alternative: the subset chosen on reversed-trigger proxies (g-select.ts, `selectSignals`).
      const choice = await selectSignalSet(parts, { fit, triggers, fpr, repairUsedTriggers: r.name === "unlearn", selectSignals: true });
      const selected: string[] = choice?.signals ?? after;
      const singles = after;
      const fmt = (m: Measured) => `${m.signals.split(", ").length === 1 ? m.signals : ""} ${pcts(m.det)} @ ${pct(m.fa.rate)}`.trim();
      const rTest = await predictLabels(repaired, testS);
      const rPois: Int32Array[] = [];
      for (const p of poisS) rPois.push(await predictLabels(repaired, p));
      const row: Row = {
        model: manifest.name,
        attack: manifest.attack,
        repair: r.name,
        flagged: nc.flagged.join(", ") || "none",
        asr: sPois.map((s, i) => s.pred.reduce((n, v, q) => n + (v === poisS[i]!.labels![q] ? 1 : 0), 0) / s.pred.length),
        baseDet: rPois.map((rp, i) => disagree(rp, bPois[i]!) / poisS[i]!.size),
        baseFa: disagree(rTest, bTest) / testS.size,
        before: measure(before),
        after: measure(after),
        selected: measure(selected),
        choice: choice ? choice.tried.map((t) => `${t.signals.join("+")} ${pct(t.proxyDetection)}`).join("; ") + ` (${choice.proxies} proxies)` : "no proxies: every signal",
        single: singles.map((n) => fmt(measure([n]))).join("; "),
        mahalanobis: ["mahalanobis", "mahalanobis (conv-pooled)", "mahalanobis (B′)"].map((n) => `${n.replace("mahalanobis", "").replace(/[()]/g, "").trim() || "B penultimate"} ${pcts(measure([n]).det)}`).join("; "),
        seconds: (performance.now() - ts) / 1000,
      };
      rows.push(row);
      log(`${manifest.name} ${r.name}: old G ${pcts(row.baseDet)} at ${pct(row.baseFa)}; before ${pcts(row.before.det)} at ${pct(row.before.fa.rate)}; after ${pcts(row.after.det)} (of B→target ${pcts(row.after.detHit)}) at ${pct(row.after.fa.rate)} (${row.seconds.toFixed(0)} s)`);
      writeFileSync(args.out!, render(rows, (performance.now() - t0All) / 1000));
    } finally {
      await scorer.release();
    }
  }
  valid.close();
  test.close();
  for (const p of poisoned) p.close();
}

const fa = (m: Measured) => `${pct(m.fa.rate)} (${m.fa.count}/${m.fa.n}; ${pct(m.fa.ci95[0])}–${pct(m.fa.ci95[1])})`;

function table(rows: Row[]): string {
  const head =
    "| model | attack | repair | NC flagged | B's ASR on the poisoned sample | old G detection @ false alarms | before: detection (of B→target) | before: false alarms (95% CI) | after: signals | after: detection (of B→target) | after: false alarms (95% CI) | after: held-out flagged | chosen on proxies: signals: detection @ false alarms | each signal alone (detection @ false alarms) | Mahalanobis alone by features: B penultimate; B conv-pooled; B′ penultimate | selection: proxy detection per subset | time |";
  const lines = [head, head.replace(/[^|]+/g, "---")];
  for (const r of rows)
    lines.push(
      `| ${r.model} | ${r.attack} | ${r.repair} | ${r.flagged} | ${pcts(r.asr)} | ${pcts(r.baseDet)} @ ${pct(r.baseFa)} | ${pcts(r.before.det)} (${pcts(r.before.detHit)}) | ${fa(r.before)} | ${r.after.signals} | **${pcts(r.after.det)}** (${pcts(r.after.detHit)}) | ${fa(r.after)} | ${r.after.heldOut} | ${r.selected.signals}: ${pcts(r.selected.det)} @ ${pct(r.selected.fa.rate)} | ${r.single} | ${r.mahalanobis} | ${r.choice} | ${r.seconds.toFixed(0)} s |`,
    );
  return lines.join("\n");
}

function render(rows: Row[], seconds: number): string {
  return [
    `# Calibrated G (target false-alarm rate ${pct(fpr)}, ${calSize} held-out clean images per model)`,
    "",
    `Run: \`node dist/bench/g-calibrate.js --zoo ${args.zoo} --fpr ${fpr} --calibration ${calSize} --max-test ${maxTest} --max-poisoned ${maxPoisoned} --restarts ${args.restarts}\`, ${seconds.toFixed(0)} s so far.`,
    "Old G = reject when B and the repaired B′ disagree on the top-1 class (no calibration). Before = main's signals (disagreement, STRIP, trigger, confidence);",
    "after = what `repair --fpr` now builds: the same plus two feature-space signals, the Mahalanobis distance of B's penultimate features to B's class (mahalanobis) and that distance minus the distance to the closest class, on the features before the ReLU (mahalanobis-gap). \"chosen on proxies\": the subset picked per model on",
    "repair-part clean images and reversed-trigger proxies (src/defenses/g-select.ts, not the default). Same repair, same run, same held-out split.",
    "Calibrated G: the default guarantee (false-alarm rate ≤ target with 90% probability over the held-out draw). \"of B→target\": detection among the",
    "poisoned inputs B classifies as the target (the successful attacks).",
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
