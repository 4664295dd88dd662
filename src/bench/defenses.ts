// npm run bench:defenses — every registered defense, plus `repair --defense auto` and Neural Cleanse detection,
// on every model of the ground-truth zoo (src/zoo/build.ts), once per seed, with the library's default settings.
//   node dist/bench/defenses.js [--zoo DIR] [--only a,b] [--defenses auto,prune,...] [--seeds 0,1,2]
//                               [--results FILE] [--force] [--table-only] [--out FILE] [--no-readme]
// Each (model, defense, seed) run is appended as one JSON line to --results (default docs/data/defenses-runs.jsonl)
// as soon as it ends. A rerun skips the runs already recorded for the same library code and model file (unless
// --force), so a long bench can stop and resume, or be split over processes (--only, --defenses, --seeds) that
// append to the same file. The markdown table (--out, and README between its markers) is rebuilt from the whole
// file after every run; --table-only rebuilds it without running anything.
//
// Seeds: seed s runs Neural Cleanse with seed s (its reversed triggers feed nc-prune, unlearn, prune-unlearn and
// feature-unlearn of seed s) and passes seed s to every defense with a seed option; "auto" gets it as
// `repair --seed s` does (its own detection, splits and candidates). Defenses without a seed option (prune,
// nc-prune given the same triggers) repeat. The repairs report their own G, as `repair --fpr off`; auto reports
// the G calibrated to 1% false alarms that `repair` builds by default.
//
// Data per model: valid.h5 (clean validation, what every defense works on), clean_test.h5 (final clean numbers),
// the poisoned test set(s). The library functions take one poisoned dataset: for a model with several targets
// its poisoned sets are concatenated, and the per-target numbers are recomputed per set (defense-row.ts).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import type { AnyDefense } from "../defenses/defense.js";
import { detectBackdoor, type NeuralCleanseResult } from "../defenses/neural-cleanse.js";
import { DEFENSES, findDefense } from "../defenses/registry.js";
import { UserError } from "../errors.js";
import { accuracyOf, evaluate } from "../eval/evaluate.js";
import { concatDatasets } from "../io/dataset.js";
import { openDataset } from "../io/open-dataset.js";
import { loadModel } from "../io/load-model.js";
import { predictLabels } from "../model/forward.js";
import { defenseRow, type DefenseRow, type PoisonSet } from "./defense-row.js";
import { floorsTable, isDue, parseRuns, runsSummary, runsTable, summarize, withinFloor, type CleanFloor, type RunRecord } from "./defense-runs.js";
import type { ZooIndex, ZooManifest } from "../zoo/build.js";
import { benchArgs } from "./args.js";

/** Markers around the copy of the table in README.md. */
const README_START = "<!-- bench:defenses table start -->";
const README_END = "<!-- bench:defenses table end -->";
/** Names of the bench's rows besides the registered defenses. */
const DETECT = "nc-detect";
const AUTO = "auto";
/** auto's G false-alarm rate: `repair`'s default. */
const AUTO_FPR = 0.01;

const log = (s: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);

function usageExit(msg: string): never {
  process.stderr.write(`${msg}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------------------
// Arguments

function parseCli() {
  return benchArgs(import.meta.url, {
    options: {
      zoo: { type: "string" },
      only: { type: "string" },
      defenses: { type: "string" },
      seeds: { type: "string" },
      results: { type: "string" },
      force: { type: "boolean" },
      "table-only": { type: "boolean" },
      out: { type: "string" },
      "no-readme": { type: "boolean" },
    },
  }).values;
}

const values = parseCli();
const zooDir = resolve(values.zoo ?? "zoo");
const outFile = values.out ?? "docs/defenses-table.md";
const resultsFile = values.results ?? "docs/data/defenses-runs.jsonl";
/** The clean models' rates on every poisoned set, beside the results file. */
const floorsFile = join(dirname(resultsFile), "defenses-clean-floors.json");

/** "0,1,2" → [0, 1, 2]: non-negative integers, no repeats. */
function parseSeeds(s: string | undefined): number[] {
  const parts = (s ?? "0,1,2").split(",").map((x) => x.trim());
  const seeds = parts.map((x) => (/^\d+$/.test(x) ? Number(x) : usageExit(`--seeds: "${x}" is not a non-negative integer (e.g. --seeds 0,1,2)`)));
  if (new Set(seeds).size !== seeds.length) usageExit(`--seeds: a seed is repeated in "${s}"`);
  return seeds;
}

/** Bench rows in table order: detection, every registered defense, auto. */
const ALL_ROWS = [DETECT, ...DEFENSES.map((d) => d.name), AUTO];

function parseDefenses(s: string | undefined): string[] {
  if (s === undefined) return ALL_ROWS;
  const names = s.split(",").map((x) => x.trim()).filter(Boolean);
  for (const n of names) if (!ALL_ROWS.includes(n)) usageExit(`--defenses: unknown defense "${n}" (known: ${ALL_ROWS.join(", ")})`);
  return ALL_ROWS.filter((n) => names.includes(n));
}

// ---------------------------------------------------------------------------------------------------------
// The zoo

function listModels(dir: string): { dirs: string[]; note: string } {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    usageExit(
      `no zoo at ${dir}. Build it first (about 3 minutes per model on 2 cores):\n` +
        `  node dist/cli/main.js zoo build --dataset fashion-mnist --out ${values.zoo ?? "zoo"}\n` +
        `then: npm run bench:defenses -- --zoo ${values.zoo ?? "zoo"}`,
    );
  }
  const indexPath = join(dir, "zoo.json");
  if (existsSync(indexPath)) {
    const index = JSON.parse(readFileSync(indexPath, "utf8")) as ZooIndex;
    const listed = index.models.map((m) => m.dir);
    // A later `zoo build --only` run may have added models that the index of an earlier run does not list.
    const extra = scanModels(dir).filter((d) => !listed.includes(d));
    return { dirs: [...listed, ...extra], note: extra.length ? `zoo.json plus ${extra.join(", ")} (not in zoo.json)` : "zoo.json" };
  }
  const dirs = scanModels(dir);
  return { dirs, note: `no zoo.json (build incomplete?): ${dirs.length} model folder(s) with a manifest.json` };
}

function scanModels(dir: string): string[] {
  return readdirSync(dir)
    .filter((d) => !d.startsWith(".") && statSync(join(dir, d)).isDirectory() && existsSync(join(dir, d, "manifest.json")))
    .sort();
}

/** Flags against the truth in words. */
function verdict(targets: number[], flagged: number[]): string {
  const missed = targets.filter((x) => !flagged.includes(x));
  const extra = flagged.filter((x) => !targets.includes(x));
  if (targets.length === 0) return extra.length === 0 ? "clean, nothing flagged" : `clean model, false alarm on ${extra.join(", ")}`;
  if (missed.length === 0 && extra.length === 0) return "exactly the targets";
  return [missed.length ? `missed ${missed.join(", ")}` : "", extra.length ? `false alarm on ${extra.join(", ")}` : ""].filter(Boolean).join("; ");
}

// ---------------------------------------------------------------------------------------------------------
// Versions: a recorded run counts as done only for the same library code and the same model file

/**
 * Hash of the library sources (src/ without src/bench/ and the tests) in git's HEAD, "+dirty" when the working
 * tree changes them: the table's presentation can change without invalidating the recorded runs.
 */
function codeVersion(): string {
  try {
    const files = execFileSync("git", ["ls-tree", "-r", "HEAD", "--", "src"], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l && !/\tsrc\/bench\//.test(l) && !/\.test\.ts$/.test(l));
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src"], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l && !/ src\/bench\//.test(l) && !/\.test\.ts$/.test(l));
    return createHash("sha1").update(files.join("\n")).digest("hex").slice(0, 10) + (dirty.length ? "+dirty" : "");
  } catch {
    return "unknown";
  }
}

const fileHash = (f: string): string => createHash("sha1").update(readFileSync(f)).digest("hex").slice(0, 10);

// ---------------------------------------------------------------------------------------------------------
// Running one model at one seed

const frac = (k: number, n: number): number => (n ? k / n : 0);

interface ModelInfo {
  dirName: string;
  manifest: ZooManifest;
  modelHash: string;
}

function readModelInfo(dirName: string): ModelInfo {
  const dir = join(zooDir, dirName);
  const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ZooManifest;
  return { dirName, manifest, modelHash: fileHash(join(dir, manifest.files.model)) };
}

/** A defense row as a run record (rates per target). */
function recordOf(row: DefenseRow, base: Omit<RunRecord, "status" | "notes" | "warnings" | "at" | "load">, perTargetBefore: Record<string, number>): RunRecord {
  const r: RunRecord = { ...base, at: new Date().toISOString(), load: os.loadavg()[0]!, status: row.status, notes: row.notes, warnings: row.warnings };
  if (row.reason) r.reason = row.reason;
  r.seconds = row.seconds;
  if (row.status !== "ok") return r;
  r.cleanBefore = row.cleanBefore;
  r.cleanAfter = row.cleanAfter;
  r.gFalseAlarm = row.gFalsePositive;
  if (base.targets.length) {
    r.asrBefore = perTargetBefore;
    const pt = row.perTarget ?? [];
    r.asrAfter = Object.fromEntries(pt.map((t) => [String(t.target), t.asrAfter]));
    r.gDetection = Object.fromEntries(pt.map((t) => [String(t.target), frac(t.gFlagged, t.n)]));
    r.gAsr = Object.fromEntries(pt.map((t) => [String(t.target), frac(t.gAttack, t.n)]));
  }
  if (row.triggersFrom) r.flagged = row.triggersFrom;
  if (row.autoFlagged) r.flagged = row.autoFlagged;
  if (row.chosen) r.chosen = row.chosen;
  if (row.selection) r.selection = row.selection;
  return r;
}

async function runModelSeed(info: ModelInfo, seed: number, due: string[], code: string, append: (r: RunRecord) => void): Promise<void> {
  const t0 = performance.now();
  const { manifest } = info;
  const dir = join(zooDir, info.dirName);
  const scale = manifest.inputScale;
  log(`${manifest.name} seed ${seed}: loading (${manifest.attack}, targets [${manifest.targets.join(", ")}]); due: ${due.join(", ")}`);
  const model = await loadModel(join(dir, manifest.files.model));
  const valid = await openDataset(join(dir, manifest.files.valid), { inputScale: scale });
  const test = await openDataset(join(dir, manifest.files.cleanTest), { inputScale: scale });
  const sets: PoisonSet[] = [];
  for (const t of manifest.triggers) {
    const ds = await openDataset(join(dir, t.poisonedTest), { inputScale: scale });
    sets.push({ target: t.target, file: t.poisonedTest, ds, bPred: await predictLabels(model, ds) });
  }
  // All poisoned sets read as one (the manifest's order), or the single set itself; the parts are closed below.
  const poisoned = sets.length ? concatDatasets(sets.map((s) => s.ds), `${manifest.name} poisoned (${sets.map((s) => s.file).join(" + ")})`) : undefined;
  const base = await evaluate(model, test);
  const asrBefore = Object.fromEntries(sets.map((p) => [String(p.target), frac(accuracyOf(p.bPred, p.ds.labels!).correct, p.ds.size)]));
  const common = { model: manifest.name, seed, code, modelHash: info.modelHash, attack: manifest.attack, targets: manifest.targets };

  try {
    // Detection runs when its row is due or when a defense of this seed needs its reversed triggers.
    const needTriggers = due.some((n) => findDefense(n)?.needs?.includes("triggers"));
    let nc: NeuralCleanseResult | undefined;
    let detectionError: string | undefined;
    if (due.includes(DETECT) || needTriggers) {
      log(`${manifest.name} seed ${seed}: Neural Cleanse detection`);
      try {
        nc = await detectBackdoor(model, valid, { inputScale: scale, seed });
        const v = verdict(manifest.targets, nc.flagged);
        log(`${manifest.name} seed ${seed}: flagged [${nc.flagged.join(", ")}] (${v}) in ${nc.seconds.toFixed(1)} s`);
        if (due.includes(DETECT)) {
          const smallest = [...nc.labels].sort((a, b) => a.l1Norm - b.l1Norm).slice(0, 3).map((l) => `${l.label}: L1 ${l.l1Norm.toFixed(1)} (index ${l.anomalyIndex.toFixed(2)})`);
          append({
            ...common,
            defense: DETECT,
            seeded: true,
            at: new Date().toISOString(),
            load: os.loadavg()[0]!,
            status: "ok",
            seconds: nc.seconds,
            flagged: [...nc.flagged],
            notes: `${v}; smallest masks ${smallest.join(", ")}`,
            warnings: [],
          });
        }
      } catch (e) {
        detectionError = e instanceof Error ? e.message : String(e);
        log(`${manifest.name} seed ${seed}: Neural Cleanse FAILED: ${detectionError}`);
        if (due.includes(DETECT)) append({ ...common, defense: DETECT, seeded: true, at: new Date().toISOString(), load: os.loadavg()[0]!, status: "failed", reason: detectionError, notes: "", warnings: [] });
      }
    }

    for (const name of due.filter((n) => n !== DETECT)) {
      const d: AnyDefense | "auto" = name === AUTO ? AUTO : findDefense(name)!;
      log(`${manifest.name} seed ${seed}: ${name}`);
      const row = await defenseRow(model, { clean: valid, test, poisoned }, d, {
        inputScale: scale,
        detected: nc,
        detectionError,
        sets,
        cleanBefore: base.clean.accuracy,
        seed,
        fpr: name === AUTO ? AUTO_FPR : undefined,
      });
      const seeded = d === AUTO || "seed" in d.options;
      const rec = recordOf(row, { ...common, defense: name, seeded, ...(name === AUTO ? { fpr: AUTO_FPR } : {}) }, asrBefore);
      // The trigger-based defenses get every flagged label's triggers (some do not list them in their sections).
      if (rec.flagged === undefined && d !== AUTO && d.needs?.includes("triggers") && nc) rec.flagged = [...nc.flagged];
      append(rec);
      if (row.status === "failed") log(`${manifest.name} seed ${seed}: ${name} FAILED: ${row.reason}`);
      else if (row.status === "ok") {
        const asr = Object.values(rec.asrAfter ?? {}).map((x) => `${(100 * x).toFixed(2)}%`).join(" / ");
        log(`${manifest.name} seed ${seed}: ${name} done in ${row.seconds!.toFixed(1)} s: clean ${(100 * row.cleanBefore!).toFixed(2)}% → ${(100 * row.cleanAfter!).toFixed(2)}%${asr ? `, ASR after ${asr}` : ""}${row.chosen ? ` (chose ${row.chosen})` : ""}`);
      } else log(`${manifest.name} seed ${seed}: ${name} not applied: ${row.reason}`);
      for (const w of row.warnings) log(`${manifest.name} seed ${seed}: ${name} WARNING: ${w}`);
    }
  } finally {
    for (const p of sets) p.ds.close();
    valid.close();
    test.close();
  }
  log(`${manifest.name} seed ${seed}: done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}

// ---------------------------------------------------------------------------------------------------------
// The table from the results file

/**
 * Every clean zoo model (no targets) on every backdoored model's poisoned test sets: the share sent to the set's
 * target. Seed-free and cheap (forward passes only), so it is measured again on every bench run.
 */
async function measureFloors(infos: readonly ModelInfo[]): Promise<CleanFloor[]> {
  const clean = infos.filter((i) => i.manifest.targets.length === 0);
  const floors: CleanFloor[] = [];
  if (clean.length === 0) return floors;
  const models = await Promise.all(clean.map((c) => loadModel(join(zooDir, c.dirName, c.manifest.files.model))));
  for (const info of infos.filter((i) => i.manifest.targets.length > 0)) {
    for (const t of info.manifest.triggers) {
      const ds = await openDataset(join(zooDir, info.dirName, t.poisonedTest), { inputScale: info.manifest.inputScale });
      try {
        const rates: Record<string, number> = {};
        for (const [k, m] of models.entries()) rates[clean[k]!.manifest.name] = frac(accuracyOf(await predictLabels(m, ds), ds.labels!).correct, ds.size);
        floors.push({ model: info.manifest.name, target: t.target, rates });
      } finally {
        ds.close();
      }
    }
  }
  return floors;
}

function readFloors(): CleanFloor[] {
  return existsSync(floorsFile) ? (JSON.parse(readFileSync(floorsFile, "utf8")) as CleanFloor[]) : [];
}

function readRuns(): RunRecord[] {
  if (!existsSync(resultsFile)) return [];
  const { records, bad } = parseRuns(readFileSync(resultsFile, "utf8"));
  if (bad.length) log(`${resultsFile}: ignored unreadable line(s) ${bad.join(", ")}`);
  return records;
}

/** "2026-12-03T17:58:44.931Z" → "2026-12-03 17:58". */
const when = (iso: string | undefined): string => (iso ? `${iso.slice(0, 10)} ${iso.slice(11, 16)}` : "—");

function writeTable(command: string): void {
  const records = readRuns();
  // Rows in zoo order, then the bench's row order; models no longer in the zoo keep their place at the end.
  const order = existsSync(zooDir) ? listModels(zooDir).dirs.map((d) => (existsSync(join(zooDir, d, "manifest.json")) ? (JSON.parse(readFileSync(join(zooDir, d, "manifest.json"), "utf8")) as ZooManifest).name : d)) : [];
  const rank = (m: string) => (order.includes(m) ? order.indexOf(m) : order.length);
  const summaries = summarize(records).sort((a, b) => rank(a.model) - rank(b.model) || a.model.localeCompare(b.model) || ALL_ROWS.indexOf(a.defense) - ALL_ROWS.indexOf(b.defense));
  const rows = [...new Set(summaries.map((s) => s.defense))];
  const summary = runsSummary(summaries, ALL_ROWS.filter((r) => rows.includes(r)));
  const table = runsTable(summaries);
  const latest = summaries.flatMap((s) => s.runs);
  const codes = [...new Set(latest.map((r) => r.code))];
  const times = latest.map((r) => r.at).sort();
  const loads = latest.map((r) => r.load);
  const meta =
    `Runs ${when(times[0])} to ${when(times[times.length - 1])} UTC (${os.availableParallelism()} CPU cores, onnxruntime-node; 1-minute load average ${loads.length ? `${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}` : "—"} as the runs ended), ` +
    `library code ${codes.join(", ") || "—"}, results in \`${resultsFile}\` (${records.length} line(s), the latest per model, defense and seed shown). Table written by \`${command}\`.`;
  const how = [
    "How to read it: each cell is the mean over the seeds listed, with the range in parentheses when the seeds differ. " +
      "Clean accuracy is on `clean_test.h5`, ASR on each poisoned test set (several targets: per trigger, joined with \" / \"); the defenses work on `valid.h5`. " +
      "`auto` is `badnet repair` (detection with the seed, candidates scored on a held-out split, G calibrated to 1% false alarms on a held-out clean part); " +
      "every other row is the defense alone with its library defaults (`repair --defense NAME --fpr off`: the defense's own G, all of `valid.h5` used), " +
      "the trigger-based ones with the reversed triggers of that seed's Neural Cleanse detection. STRIP repairs nothing: its \"after\" is G (a rejected clean input counts as wrong). " +
      "\"meets goal\": runs with every trigger's ASR ≤ 2% at ≤ 1 point of clean accuracy and G ≥ 99% detection at ≤ 1% false alarms (clean models: clean accuracy within 0.5 point, G ≤ 1%). " +
      "Wall time: the defense's library call (auto: its detection, candidates and G calibration), on a shared 2-core machine.",
  ].join("\n");
  const floors = readFloors();
  const floorText = floors.length ? floorsSection(floors, summaries.filter((s) => s.defense === AUTO).flatMap((s) => s.runs)) : "";
  const doc = ["# Every defense on every zoo model", "", meta, "", `**${summary}.**`, "", how, "", table, "", ...(floorText ? [floorText, ""] : [])].join("\n");
  mkdirSync(dirname(resolve(outFile)), { recursive: true });
  writeFileSync(outFile, doc);
  if (values["no-readme"]) return;
  const readme = "README.md";
  if (!existsSync(readme)) return;
  const text = readFileSync(readme, "utf8");
  const start = text.indexOf(README_START);
  const end = text.indexOf(README_END);
  if (start >= 0 && end > start) writeFileSync(readme, `${text.slice(0, start + README_START.length)}\n${meta}\n\n**${summary}.**\n\n${how}\n\n${table}\n${floorText ? `\n${floorText}\n` : ""}${text.slice(end)}`);
}

/** The clean models' rates, and how many auto runs are within them (a measure beside the goal, not the goal). */
function floorsSection(floors: readonly CleanFloor[], autoRuns: readonly RunRecord[]): string {
  const judged = autoRuns.map((r) => withinFloor(r, floors)).filter((x): x is boolean => x !== undefined);
  return [
    `**What a model trained without any trigger does on the same poisoned inputs** (the clean zoo models; \`${floorsFile}\`, measured on every bench run). ` +
      "ASR counts every non-target test image that the network sends to the target once stamped, so natural confusions count too: " +
      "a repair cannot be expected to go below these rates, and where they exceed 2% the goal's ASR bound is below what a never-poisoned network reaches. " +
      `auto's runs with every trigger's ASR at or below max(2%, the highest clean-model rate): ${judged.filter(Boolean).length}/${judged.length} (a second measure, not the goal).`,
    "",
    floorsTable(floors),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const seeds = parseSeeds(values.seeds);
  const which = parseDefenses(values.defenses);
  const command = `npm run bench:defenses${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`;
  if (values["table-only"]) {
    writeTable(command);
    log(`wrote ${outFile}${values["no-readme"] ? "" : " and the README table"} from ${resultsFile}`);
    return;
  }
  const t0 = performance.now();
  const { dirs, note } = listModels(zooDir);
  const only = values.only?.split(",").map((s) => s.trim()).filter(Boolean);
  for (const o of only ?? []) if (!dirs.includes(o)) usageExit(`--only: no model "${o}" in ${zooDir} (have: ${dirs.join(", ") || "none"})`);
  const chosen = only ? dirs.filter((d) => only.includes(d)) : dirs;
  if (chosen.length === 0) usageExit(`no models in ${zooDir} (${note}); build the zoo with: node dist/cli/main.js zoo build --dataset fashion-mnist --out ${values.zoo ?? "zoo"}`);
  const code = codeVersion();
  log(`zoo ${zooDir} (${note}): ${chosen.join(", ")}; defenses: ${which.join(", ")}; seeds ${seeds.join(", ")}; code ${code}; results ${resultsFile}`);
  mkdirSync(dirname(resolve(resultsFile)), { recursive: true });
  // Every model's manifest and file hash once: the floors need the whole zoo, whatever --only chose.
  const all = dirs.map(readModelInfo);
  const infos = all.filter((i) => chosen.includes(i.dirName));
  const floors = await measureFloors(all);
  if (floors.length) writeFileSync(floorsFile, `${JSON.stringify(floors, null, 1)}\n`);
  log(`clean-model floors: ${floors.map((f) => `${f.model} →${f.target} ${Object.values(f.rates).map((r) => (100 * r).toFixed(2)).join("/")}%`).join(", ") || "no clean model in the zoo"}`);
  let failed = 0;
  // Seed by seed over the whole zoo: seed 0 everywhere first, so a partial run still covers every model.
  for (const seed of seeds) {
    for (const info of infos) {
      const records = readRuns();
      const due = which.filter((d) => isDue(records, { model: info.manifest.name, defense: d, seed, code, modelHash: info.modelHash }, values.force === true));
      if (due.length === 0) {
        log(`${info.manifest.name} seed ${seed}: every run already recorded for code ${code}`);
        continue;
      }
      await runModelSeed(info, seed, due, code, (r) => {
        appendFileSync(resultsFile, `${JSON.stringify(r)}\n`);
        if (r.status === "failed") failed++;
      });
      writeTable(command);
    }
  }
  writeTable(command);
  process.stdout.write(`total ${((performance.now() - t0) / 60000).toFixed(1)} min; results in ${resultsFile}; table in ${outFile}\n`);
  if (failed) {
    process.stderr.write(`${failed} run(s) failed (see ${resultsFile})\n`);
    process.exitCode = 1;
  }
}

try {
  await main();
} catch (e) {
  if (e instanceof UserError) usageExit(`error: ${e.message}`);
  throw e;
}
